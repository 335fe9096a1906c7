"""Azure Event Grid: ``Microsoft.Storage.BlobCreated`` / ``BlobDeleted`` in the Event Grid schema
or the CloudEvents schema, and the subscription validation handshake.

The blob is named by ``data.url`` (``https://account.blob.core.windows.net/container/name``,
percent-encoded: ``+`` is a plus). Without a URL the ``subject``
(``/blobServices/default/containers/<container>/blobs/<name>``) gives it unencoded. The
task's bucket is the container. ``data.sequencer`` orders events of one blob.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from omsync.notifications.model import (
    BadRecord,
    EventKind,
    Ignore,
    Parsed,
    Record,
    normalise_sequencer,
    obj,
    percent_key,
    plain_key,
    text,
)

__all__ = ["VALIDATION_EVENT", "is_event_grid_event", "parse_event_grid"]

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
_KINDS = {"Microsoft.Storage.BlobCreated": EventKind.CREATED, "Microsoft.Storage.BlobDeleted": EventKind.DELETED}
_SUBJECT_PREFIX = "/blobServices/default/containers/"


def is_event_grid_event(item: dict[str, Any]) -> bool:
    name = item.get("eventType", item.get("type"))
    return isinstance(name, str) and name.startswith(("Microsoft.Storage.", "Microsoft.EventGrid."))


def _from_url(url: str) -> tuple[str, str, str | None]:
    path = urlsplit(url).path
    # Azurite and other emulators put the account first: /account/container/blob.
    parts = path.lstrip("/").split("/", 1)
    host = urlsplit(url).hostname or ""
    if not host.endswith(".core.windows.net") and not host.endswith(".core.chinacloudapi.cn") and \
            not host.endswith(".core.usgovcloudapi.net") and len(parts) == 2:
        parts = parts[1].split("/", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise BadRecord(Ignore.MALFORMED, "blob URL has no container and name")
    container, encoded = parts
    key, sent = percent_key(encoded)
    return container, key, sent


def _from_subject(subject: str) -> tuple[str, str, str | None]:
    if not subject.startswith(_SUBJECT_PREFIX) or "/blobs/" not in subject[len(_SUBJECT_PREFIX):]:
        raise BadRecord(Ignore.MALFORMED, "subject does not name a blob")
    container, name = subject[len(_SUBJECT_PREFIX):].split("/blobs/", 1)
    key, _ = plain_key(name)
    return container, key, None


def _event(item: dict[str, Any], parsed: Parsed) -> None:
    name = item.get("eventType", item.get("type"))
    data = obj(item.get("data"))
    if name == VALIDATION_EVENT:
        code = text(data.get("validationCode"))
        if code is None:
            raise BadRecord(Ignore.MALFORMED, "validation event without a code")
        parsed.validation_code = code
        return
    kind = _KINDS.get(str(name))
    if kind is None:
        raise BadRecord(Ignore.UNSUPPORTED_EVENT, str(name)[:100])
    url = text(data.get("url"))
    subject = text(item.get("subject"))
    if url is not None:
        container, key, sent = _from_url(url)
    elif subject is not None:
        container, key, sent = _from_subject(subject)
    else:
        raise BadRecord(Ignore.MALFORMED, "event names no blob")
    parsed.records.append(Record(bucket=container, key=key, kind=kind, sequencer=normalise_sequencer(data.get("sequencer")),
                                 time=text(item.get("eventTime", item.get("time"))), sent=sent))


def parse_event_grid(events: list[Any]) -> Parsed:
    """A list of Event Grid events (either schema). A validation event sets
    ``validation_code``: the caller answers ``{"validationResponse": code}``."""
    parsed = Parsed(format="azure-event-grid")
    for item in events:
        try:
            if not isinstance(item, dict):
                raise BadRecord(Ignore.MALFORMED, "event is not an object")
            _event(item, parsed)
        except BadRecord as exc:
            parsed.ignore(exc.reason)
    return parsed
