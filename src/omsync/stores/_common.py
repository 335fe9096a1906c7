"""Helpers shared by the stores: S3-like checks and ETags (memory, fs), and the mapping of
remote answers to error kinds (s3, azure)."""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import time
from collections.abc import Mapping, Sequence

from omsync.stores.base import Capabilities, ErrorKind, PutOptions, StoreError


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def multipart_etag(part_etags: Sequence[str]) -> str:
    """S3's multipart ETag: MD5 of the concatenated binary part MD5s, then ``-<count>``."""
    joined = b"".join(binascii.unhexlify(etag) for etag in part_etags)
    return f"{md5_hex(joined)}-{len(part_etags)}"


def verify_content_md5(options: PutOptions, digest: bytes) -> None:
    """Raise ``CORRUPT`` (``BadDigest``) when the caller's Content-MD5 disagrees with the data."""
    if options.content_md5 is None:
        return
    try:
        expected = base64.b64decode(options.content_md5, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StoreError(ErrorKind.INVALID, "Content-MD5 is not base64", code="InvalidDigest") from exc
    if expected != digest:
        raise StoreError(
            ErrorKind.CORRUPT, "Content-MD5 does not match the data received", code="BadDigest"
        )


def check_put_size(capabilities: Capabilities, size: int) -> None:
    if size > capabilities.max_single_put:
        raise StoreError(
            ErrorKind.UNSUPPORTED,
            f"object of {size} bytes exceeds the single-put limit {capabilities.max_single_put}",
            code="EntityTooLarge",
        )


def check_part_number(capabilities: Capabilities, part_number: int) -> None:
    if not 1 <= part_number <= capabilities.max_part_count:
        raise StoreError(
            ErrorKind.INVALID,
            f"part number {part_number} outside 1..{capabilities.max_part_count}",
            code="InvalidArgument",
        )


def check_parts_order(parts: Sequence[tuple[int, str]]) -> None:
    if not parts:
        raise StoreError(ErrorKind.INVALID, "no parts to complete", code="MalformedXML")
    numbers = [number for number, _ in parts]
    if numbers != sorted(set(numbers)):
        raise StoreError(ErrorKind.INVALID, "parts must be in ascending order", code="InvalidPartOrder")


def clean_etag(etag: str) -> str:
    return etag.strip().strip('"')


def resolve_range(size: int, start: int, end: int | None) -> tuple[int, int]:
    """Clamp ``[start, end)`` to an object of ``size`` bytes; ``start`` beyond the end → INVALID."""
    if start < 0 or (end is not None and end < start):
        raise StoreError(ErrorKind.INVALID, f"bad range [{start}, {end})", code="InvalidRange")
    if start > size:
        raise StoreError(
            ErrorKind.INVALID, f"range start {start} beyond object size {size}", code="InvalidRange"
        )
    stop = size if end is None else min(end, size)
    return start, stop


def check_copy_range(size: int, start: int, end: int) -> None:
    if not 0 <= start < end <= size:
        raise StoreError(
            ErrorKind.INVALID,
            f"copy range [{start}, {end}) not inside the source of {size} bytes",
            code="InvalidRange",
        )


def check_storage_class(capabilities: Capabilities, options: PutOptions) -> None:
    cls = options.storage_class
    if cls is not None and capabilities.storage_classes and cls not in capabilities.storage_classes:
        raise StoreError(
            ErrorKind.INVALID, f"storage class {cls!r} is not offered by this store",
            code="InvalidStorageClass",
        )


def kind_for(code_kinds: Mapping[str, ErrorKind], code: str, status: int | None) -> ErrorKind:
    """The kind of a remote error: by its code when ``code_kinds`` knows it, else by the HTTP
    status (404 not found, 401/403 permission, 429/503 throttled, 409/412 conflict, 501
    unsupported, 408 and 5xx transient, other 4xx invalid; no status: transient)."""
    if code in code_kinds:
        return code_kinds[code]
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status in (401, 403):
        return ErrorKind.PERMISSION
    if status in (429, 503):
        return ErrorKind.THROTTLED
    if status in (409, 412):
        return ErrorKind.CONFLICT
    if status == 501:
        return ErrorKind.UNSUPPORTED
    if status == 408 or (status is not None and status >= 500):
        return ErrorKind.TRANSIENT
    if status is not None and 400 <= status < 500:
        return ErrorKind.INVALID
    return ErrorKind.TRANSIENT


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a ``Retry-After`` header (delay or HTTP date; any case of the name) asks for."""
    value = None
    if headers is not None:
        value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
