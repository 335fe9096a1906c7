"""Shape detection: which cloud's notification a parsed JSON body is, and its records.

Envelopes (SNS, SMN, MNS, CloudEvents) are unwrapped to the notification inside, at most
:data:`MAX_DEPTH` levels deep. An SNS or SMN envelope is returned as it is (``Parsed.envelope``)
for the caller, who must check its signature or answer its confirmation before reading its
``Message`` with :func:`parse_notification` again.
"""

from __future__ import annotations

import json
from typing import Any

from omsync.notifications import aliyun, azure, s3, sns, tencent
from omsync.notifications.model import MAX_RECORDS, BadRecord, Ignore, Parsed, obj

__all__ = ["MAX_DEPTH", "UnknownFormat", "parse_message", "parse_notification"]

MAX_DEPTH = 4


class UnknownFormat(ValueError):
    """The body is JSON but not a notification format omsync reads."""


def _records_format(body: dict[str, Any], records: list[Any]) -> str:
    if "EventName" in body and "Key" in body:
        return "minio"
    first = obj(records[0]) if records else {}
    source = str(first.get("eventSource", ""))
    if source.startswith("minio"):
        return "minio"
    if source.startswith("ceph"):
        return "ceph"
    if "obs" in first or source.upper() == "OBS":
        return "huawei-obs"
    return "s3"


def _kind_from_type(type_name: str) -> str | None:
    if "ObjectCreated" in type_name:
        return "ObjectCreated:" + type_name.rsplit(":", 1)[-1]
    if "ObjectRemoved" in type_name or "ObjectDeleted" in type_name:
        return "ObjectRemoved:" + type_name.rsplit(":", 1)[-1]
    return None


def _cloud_event(event: dict[str, Any], depth: int) -> Parsed:
    type_name = str(event.get("type", ""))
    if azure.is_event_grid_event(event):
        parsed = azure.parse_event_grid([event])
        parsed.format = "cloudevents-azure"
        return parsed
    data = event.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            data = None
    record = obj(data)
    if not record:
        parsed = Parsed(format="cloudevents")
        parsed.ignore(Ignore.MALFORMED if data is None else Ignore.UNSUPPORTED_EVENT)
        return parsed
    if aliyun.is_oss_event(record):
        if "eventName" not in record:
            record = {**record, "eventName": type_name}
        return aliyun.parse_oss_events([record], fmt="cloudevents-aliyun-oss")
    if "obs" in record or "s3" in record:
        if "eventName" not in record:
            record = {**record, "eventName": _kind_from_type(type_name)}
        return s3.parse_records([record], fmt="cloudevents-huawei-obs" if "obs" in record else "cloudevents-s3")
    inner = _dict_body(record, depth + 1)
    inner.format = f"cloudevents-{inner.format}"
    return inner


def _list_body(items: list[Any], depth: int) -> Parsed:
    if not items:
        raise UnknownFormat("an empty list")
    first = obj(items[0])
    if azure.is_event_grid_event(first) and "specversion" not in first:
        return azure.parse_event_grid(items)
    if "specversion" in first:
        parsed = Parsed(format="cloudevents")
        for item in items:
            if isinstance(item, dict):
                one = _cloud_event(item, depth)
                parsed.format = one.format
                parsed.merge(one)
                parsed.validation_code = parsed.validation_code or one.validation_code
            else:
                parsed.ignore(Ignore.MALFORMED)
        return parsed
    raise UnknownFormat("a list of unknown events")


def _dict_body(body: dict[str, Any], depth: int) -> Parsed:
    if depth > MAX_DEPTH:
        raise UnknownFormat("envelopes nested too deeply")
    if sns.is_sns_envelope(body) or sns.is_smn_envelope(body):
        envelope = sns.read_envelope(body)
        return Parsed(format=envelope.service, envelope=envelope)
    if aliyun.is_mns_envelope(body):
        try:
            inner = aliyun.unwrap_mns(body)
        except BadRecord as exc:
            parsed = Parsed(format="aliyun-mns")
            parsed.ignore(exc.reason)
            return parsed
        found = parse_notification(inner, depth + 1)
        found.format = f"aliyun-mns-{found.format}"
        return found
    if "specversion" in body:
        return _cloud_event(body, depth)
    if azure.is_event_grid_event(body):
        return azure.parse_event_grid([body])
    records = body.get("Records")
    if isinstance(records, list):
        if records and tencent.is_cos_record(records[0]):
            return tencent.parse_cos_records(records)
        return s3.parse_records(records, fmt=_records_format(body, records))
    events = body.get("events")
    if isinstance(events, list):
        return aliyun.parse_oss_events(events)
    if s3.is_s3_test_event(body):
        parsed = Parsed(format="s3")
        parsed.ignore(Ignore.TEST_EVENT)
        return parsed
    if s3.is_eventbridge(body):
        return s3.parse_eventbridge(body)
    if aliyun.is_oss_event(body):
        return aliyun.parse_oss_events([body])
    raise UnknownFormat("no known notification shape")


def parse_notification(payload: Any, depth: int = 0) -> Parsed:
    """Detect the format of the JSON document ``payload`` and read its records.

    Raises :class:`UnknownFormat` for a document that is no notification omsync knows. A
    record that cannot be read is counted in ``ignored`` and never raises. At most
    :data:`~omsync.notifications.model.MAX_RECORDS` records are kept (the rest counted as
    ``too_many_records``).
    """
    if depth > MAX_DEPTH:
        raise UnknownFormat("envelopes nested too deeply")
    if isinstance(payload, list):
        parsed = _list_body(payload, depth)
    elif isinstance(payload, dict):
        parsed = _dict_body(payload, depth)
    else:
        raise UnknownFormat("not a JSON object or array")
    if len(parsed.records) > MAX_RECORDS:
        parsed.ignore(Ignore.TOO_MANY, len(parsed.records) - MAX_RECORDS)
        del parsed.records[MAX_RECORDS:]
    return parsed


def parse_message(message: str, depth: int = 1) -> Parsed:
    """Read the ``Message`` string of an envelope (itself a JSON notification)."""
    try:
        inner = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise UnknownFormat("the envelope's message is not JSON") from exc
    return parse_notification(inner, depth)
