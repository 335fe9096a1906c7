"""Tencent COS event notifications (``Records`` of ``{"cos": ..., "event": ...}``).

The bucket is ``cosBucket.name`` with the ``-<appid>`` suffix the COS API names buckets by
(``examplebucket-1250000000``). The key is ``cosObject.key``, ``/<appid>/<bucket>/<key>``,
percent-encoded (``+`` stays a plus); when it lacks that prefix, the path of
``cosObject.url`` is used. COS events have no sequencer.
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
    obj,
    percent_key,
    text,
)

__all__ = ["cos_event_kind", "is_cos_record", "parse_cos_records"]


def cos_event_kind(name: Any) -> EventKind | None:
    if not isinstance(name, str):
        return None
    if name.startswith("cos:"):
        name = name[4:]
    if name.startswith("ObjectCreated:"):
        return EventKind.CREATED
    if name.startswith(("ObjectRemove:", "ObjectRemoved:")):
        return EventKind.DELETED
    return None


def is_cos_record(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("cos"), dict)


def _record(item: Any) -> Record:
    record = obj(item)
    cos = obj(record.get("cos"))
    event = obj(record.get("event"))
    kind = cos_event_kind(event.get("eventName"))
    if kind is None:
        raise BadRecord(Ignore.UNSUPPORTED_EVENT, str(event.get("eventName"))[:100])
    bucket_info = obj(cos.get("cosBucket"))
    name = text(bucket_info.get("name"))
    appid = text(bucket_info.get("appid")) or text(cos.get("appid"))
    if name is None:
        raise BadRecord(Ignore.MALFORMED, "bucket name missing")
    bucket = name if appid is None or name.endswith(f"-{appid}") else f"{name}-{appid}"
    info = obj(cos.get("cosObject"))
    raw = text(info.get("key"))
    prefix = f"/{appid}/{name}/" if appid else None
    if raw is not None and prefix is not None and raw.startswith(prefix):
        encoded = raw[len(prefix):]
    else:
        url = text(info.get("url"))
        if url is None:
            raise BadRecord(Ignore.MALFORMED, "object key missing")
        encoded = urlsplit(url).path.lstrip("/")
    key, _ = percent_key(encoded)
    time = event.get("eventTime")
    return Record(bucket=bucket, key=key, kind=kind, time=str(time) if time is not None else None,
                  sent=encoded if encoded != key else None)


def parse_cos_records(records: list[Any]) -> Parsed:
    parsed = Parsed(format="tencent-cos")
    for item in records:
        try:
            parsed.records.append(_record(item))
        except BadRecord as exc:
            parsed.ignore(exc.reason)
    return parsed
