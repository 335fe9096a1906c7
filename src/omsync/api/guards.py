"""Input guards the API applies before its models see a request: JSON nesting and integer
bounds, and the buckets of a new task (provider bucket-name rules, local directory grants).

Each refusal is the usual 400 ``OMS.0064`` naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from omsync.api.errors import invalid
from omsync.config import Settings
from omsync.domain.model import CloudType
from omsync.local_roots import local_bucket_problem
from omsync.stores.profiles import get_profile

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have (the API's own need is 2)."""

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests arrays/objects deeper than ``limit``.

    A linear scan that skips string contents, so it works before (and instead of) a recursive
    parse; malformed text is left for the parser to refuse."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cannot nest deeper than it has openers (the usual case: no scan)
    depth = 0
    in_string = False
    escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _out_of_range_int(value: Any, path: str) -> str | None:
    """The path of the first integer outside the signed 64-bit range inside ``value``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return path if not INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, dict):
        for name, item in value.items():
            found = _out_of_range_int(item, f"{path}.{name}" if path else str(name))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _out_of_range_int(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def load_json_body(raw: bytes) -> Any:
    """Parse a request body as JSON, refusing (400 naming the field) text that is not JSON,
    nests deeper than :data:`MAX_JSON_DEPTH`, or holds an integer outside 64 bits."""
    if json_depth_exceeds(raw):
        raise invalid("body", f"nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise invalid("body", "is not valid JSON") from exc
    field = _out_of_range_int(payload, "")
    if field is not None:
        raise invalid(field or "body", "is an integer outside the signed 64-bit range")
    return payload


def check_task_buckets(settings: Settings, project_id: str, src_cloud: CloudType, src_bucket: str,
                       dst_cloud: CloudType, dst_bucket: str) -> None:
    """Refuse a new task whose bucket names its provider would not take (an ARN, a URL, a
    name a provider refuses), or whose local directory is not granted to the project."""
    for side, cloud, bucket in (("src", src_cloud, src_bucket), ("dst", dst_cloud, dst_bucket)):
        field = f"{side}_bucket"
        if cloud is CloudType.LOCAL:
            problem = local_bucket_problem(settings, project_id, bucket)
        else:
            try:
                problem = get_profile(cloud.value).bucket_problem(bucket)
            except KeyError:
                problem = None  # an unknown cloud type is refused by the endpoint check
        if problem is not None:
            raise invalid(field, problem)


__all__ = ["INT64_MAX", "MAX_JSON_DEPTH", "check_task_buckets", "json_depth_exceeds", "load_json_body"]
