"""S3-style ``Records`` (Amazon S3, MinIO, Ceph RGW, Huawei OBS), the S3 test event and S3
events delivered by Amazon EventBridge.

Key encodings, per sender:

* Amazon S3 (``aws:s3``) and MinIO (``minio:s3``): form-encoded (``red flower.jpg`` is
  ``red+flower.jpg``, a ``+`` is ``%2B``), as the S3 documentation says;
* Huawei OBS (``eventSource`` ``OBS``, record under ``obs``): form-encoded too (its documented
  example: ``TEST/中 文.jpg`` → ``TEST%2F%E4%B8%AD+%E6%96%87.jpg``);
* Ceph RGW (``ceph:s3``): the key as it is (RGW writes the object name without encoding);
* EventBridge (``detail-type`` ``Object Created`` / ``Object Deleted``): form-encoded, as in S3's
  own notifications.

Sequencers (``s3.object.sequencer``, ``detail.object.sequencer``) are hex strings compared
after left-padding to equal length.
"""

from __future__ import annotations

from typing import Any

from omsync.notifications.model import (
    BadRecord,
    EventKind,
    Ignore,
    Parsed,
    Record,
    form_key,
    normalise_sequencer,
    obj,
    plain_key,
    text,
)

__all__ = ["is_eventbridge", "is_s3_test_event", "parse_eventbridge", "parse_records", "s3_event_kind"]

_CREATED_PREFIXES = ("ObjectCreated:",)
_DELETED_PREFIXES = (
    "ObjectRemoved:",
    "LifecycleExpiration:Delete",  # S3 lifecycle expirations (Delete, DeleteMarkerCreated)
    "ObjectLifecycle:Expiration:",  # Ceph RGW lifecycle expirations
)


def s3_event_kind(name: Any) -> EventKind | None:
    """``ObjectCreated:*`` → created, ``ObjectRemoved:*`` and lifecycle expirations → deleted,
    with or without the ``s3:`` (MinIO, Ceph) or ``obs:`` prefix; anything else None."""
    if not isinstance(name, str):
        return None
    for prefix in ("s3:", "obs:", "OBS:"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.startswith(_CREATED_PREFIXES):
        return EventKind.CREATED
    if name.startswith(_DELETED_PREFIXES):
        return EventKind.DELETED
    return None


def is_s3_test_event(body: dict[str, Any]) -> bool:
    """The message S3 sends when a notification configuration is saved (``s3:TestEvent``)."""
    return body.get("Event") == "s3:TestEvent" or (
        "Records" not in body and isinstance(body.get("Event"), str) and body.get("Service") == "Amazon S3"
    )


def _record(item: Any) -> Record:
    record = obj(item)
    if not record:
        raise BadRecord(Ignore.MALFORMED, "record is not an object")
    source = text(record.get("eventSource")) or ""
    kind = s3_event_kind(record.get("eventName"))
    if "obs" in record and "s3" not in record:
        section = obj(record.get("obs"))
        decode = form_key
    else:
        section = obj(record.get("s3"))
        decode = plain_key if source.startswith("ceph") else form_key
    bucket = text(obj(section.get("bucket")).get("name"))
    obj_info = obj(section.get("object"))
    if kind is None:
        raise BadRecord(Ignore.UNSUPPORTED_EVENT, str(record.get("eventName"))[:100])
    if bucket is None:
        raise BadRecord(Ignore.MALFORMED, "bucket name missing")
    key, sent = decode(obj_info.get("key"))
    return Record(bucket=bucket, key=key, kind=kind, sequencer=normalise_sequencer(obj_info.get("sequencer")),
                  time=text(record.get("eventTime")), sent=sent)


def parse_records(records: list[Any], fmt: str = "s3") -> Parsed:
    """Read a ``Records`` list of S3-style records (S3, MinIO, Ceph, OBS)."""
    parsed = Parsed(format=fmt)
    for item in records:
        if isinstance(item, dict) and item.get("Event") == "s3:TestEvent":
            parsed.ignore(Ignore.TEST_EVENT)
            continue
        try:
            parsed.records.append(_record(item))
        except BadRecord as exc:
            parsed.ignore(exc.reason)
    return parsed


def is_eventbridge(body: dict[str, Any]) -> bool:
    return isinstance(body.get("detail-type"), str) and isinstance(body.get("detail"), dict)


def parse_eventbridge(body: dict[str, Any]) -> Parsed:
    """One EventBridge event from S3 (``source`` ``aws.s3``)."""
    parsed = Parsed(format="eventbridge")
    detail_type = body.get("detail-type")
    kind = {"Object Created": EventKind.CREATED, "Object Deleted": EventKind.DELETED}.get(str(detail_type))
    if kind is None or body.get("source") not in (None, "aws.s3"):
        parsed.ignore(Ignore.UNSUPPORTED_EVENT)
        return parsed
    detail = obj(body.get("detail"))
    bucket = text(obj(detail.get("bucket")).get("name"))
    info = obj(detail.get("object"))
    try:
        if bucket is None:
            raise BadRecord(Ignore.MALFORMED, "bucket name missing")
        key, sent = form_key(info.get("key"))
    except BadRecord as exc:
        parsed.ignore(exc.reason)
        return parsed
    parsed.records.append(Record(bucket=bucket, key=key, kind=kind, sequencer=normalise_sequencer(info.get("sequencer")),
                                 time=text(body.get("time")), sent=sent))
    return parsed
