"""Aliyun OSS event notifications: ``{"events": [...]}`` as OSS publishes them, delivered by
MNS (an HTTP subscription's JSON envelope whose ``Message`` holds the event, Base64-encoded or
not) or by EventBridge (a CloudEvent whose ``data`` is one event, ``type``
``oss:ObjectCreated:PutObject``).

OSS events carry the object key as it is (``oss.object.key``, not URL-encoded). OSS events
have no sequencer: they are not ordered per key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

from omsync.notifications.model import (
    BadRecord,
    EventKind,
    Ignore,
    Parsed,
    Record,
    obj,
    plain_key,
    text,
)

__all__ = ["is_mns_envelope", "is_oss_event", "oss_event_kind", "parse_oss_events", "unwrap_mns"]

_DELETED = ("ObjectRemoved:",)
_CREATED = ("ObjectCreated:", "ObjectReplication:ObjectCreated", "ObjectReplication:ObjectModified",
            "ObjectModified:")


def oss_event_kind(name: Any) -> EventKind | None:
    if not isinstance(name, str):
        return None
    if name.startswith("oss:"):
        name = name[4:]
    if name.startswith(_CREATED):
        return EventKind.CREATED
    if name.startswith(_DELETED) or name == "ObjectReplication:ObjectRemoved":
        return EventKind.DELETED
    return None


def is_oss_event(item: dict[str, Any]) -> bool:
    return "oss" in item and isinstance(item.get("oss"), dict)


def _event(item: Any) -> Record:
    event = obj(item)
    kind = oss_event_kind(event.get("eventName"))
    if kind is None:
        raise BadRecord(Ignore.UNSUPPORTED_EVENT, str(event.get("eventName"))[:100])
    oss = obj(event.get("oss"))
    bucket = text(obj(oss.get("bucket")).get("name"))
    if bucket is None:
        raise BadRecord(Ignore.MALFORMED, "bucket name missing")
    key, sent = plain_key(obj(oss.get("object")).get("key"))
    return Record(bucket=bucket, key=key, kind=kind, time=text(event.get("eventTime")), sent=sent)


def parse_oss_events(events: list[Any], fmt: str = "aliyun-oss") -> Parsed:
    parsed = Parsed(format=fmt)
    for item in events:
        try:
            parsed.records.append(_event(item))
        except BadRecord as exc:
            parsed.ignore(exc.reason)
    return parsed


def is_mns_envelope(body: dict[str, Any]) -> bool:
    return isinstance(body.get("Message"), str) and ("TopicName" in body or "TopicOwner" in body)


def unwrap_mns(body: dict[str, Any]) -> Any:
    """The JSON document inside an MNS message (Base64-encoded as OSS publishes it, or plain).
    Raises :class:`BadRecord` when it is neither."""
    message = str(body.get("Message"))
    candidates = [message]
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.insert(0, base64.b64decode(message, validate=True).decode("utf-8"))
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    raise BadRecord(Ignore.MALFORMED, "MNS message is not JSON")
