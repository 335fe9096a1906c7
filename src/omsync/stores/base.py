"""The store port: what the engine needs from any object store, and the one error type it sees.

Keys are ``str`` holding the exact object name (any Unicode, control characters, ``//``,
``./``, ``..``, trailing ``/``); a backend must never normalise them.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class ErrorKind(enum.StrEnum):
    """Why a store call failed; the engine decides on the kind, never on backend details."""

    NOT_FOUND = "not_found"          # object or bucket absent
    PERMISSION = "permission"        # credentials refused / access denied
    THROTTLED = "throttled"          # 429, 503 SlowDown
    TRANSIENT = "transient"          # timeouts, connection resets, 5xx
    CORRUPT = "corrupt"              # checksum or size mismatch
    UNSUPPORTED = "unsupported"      # the backend cannot do this (key too long, feature missing)
    INVALID = "invalid"              # the request itself is wrong (bad key for this store, ...)
    CONFLICT = "conflict"            # precondition failed


RETRYABLE_KINDS = frozenset({ErrorKind.THROTTLED, ErrorKind.TRANSIENT, ErrorKind.CORRUPT})


class StoreError(Exception):
    """The only exception that crosses the store boundary.

    ``retryable`` defaults from the kind; ``retry_after`` carries a server's Retry-After hint in
    seconds when it sent one; ``code`` is the backend's own error code for reports.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.retry_after = retry_after
        self.code = code or kind.value

    def __repr__(self) -> str:
        return f"StoreError({self.kind.value}, {self.message!r}, retryable={self.retryable})"


@dataclass(frozen=True)
class Capabilities:
    """What a store can do; the engine asks these, never the backend's name."""

    server_side_copy: bool = False      # copy between buckets of the same store without streaming
    multipart: bool = False             # create/upload_part/complete/abort
    part_copy: bool = False             # server-side UploadPartCopy
    crc64ecma: bool = False             # exposes a CRC-64/XZ (ECMA-182) of whole objects
    md5_etag: bool = False              # single-part ETag equals the content MD5
    min_part_size: int = 5 * 1024 * 1024
    exact_part_size: int | None = None   # every part but the last must have this size (UCloud US3)
    max_part_count: int = 10_000
    max_single_put: int = 5 * 1024**3
    max_server_copy: int = 5 * 1024**3
    max_key_bytes: int = 1024
    preserves_double_slash: bool = True  # empty segments ('x//y', '/a') stay distinct from 'x/y', 'a'
    allows_dot_segments: bool = True     # './a', 'a/../b' are legal keys
    allows_trailing_slash_object: bool = True  # 'dir/' can hold data
    storage_classes: frozenset[str] = frozenset()
    max_segment_bytes: int | None = None  # longest '/'-separated segment (UTF-8), None = no limit
    unsupported_key_chars: frozenset[str] = frozenset()  # characters no key may contain here
    multipart_unsupported_key_chars: frozenset[str] = frozenset()  # ... for multipart uploads only
    reserved_prefixes: tuple[str, ...] = ()  # key prefixes the store keeps for itself
    keys_are_paths: bool = False         # an object 'a' and an object 'a/b' cannot both exist
    lists_in_key_order: bool = True      # list() pages follow UTF-8 byte order of keys
    # When not in key order: list() walks directories depth-first with each directory's entries
    # in name order, so the keys directly inside one directory still come in key order.
    lists_directories_in_name_order: bool = False
    limitation: str | None = None        # who imposes the key limits above, for error messages

    def key_problem(self, key: str, *, multipart: bool = False) -> str | None:
        """Why this store cannot hold ``key`` as a distinct object (written by a multipart
        upload when ``multipart``), or ``None`` if it can.

        Decided from the fields above only (no I/O), so the engine can refuse a key up front
        with a stable reason instead of letting a backend reject or silently rename it.
        """
        if key == "":
            return "empty key"
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            return "key is not valid Unicode (lone surrogate)"
        if size > self.max_key_bytes:
            return f"key is {size} bytes, longer than the {self.max_key_bytes} this store allows"
        if self.unsupported_key_chars and not self.unsupported_key_chars.isdisjoint(key):
            bad = sorted(self.unsupported_key_chars.intersection(key))
            return f"key contains a character this store cannot hold: {', '.join(map(repr, bad))}"
        if multipart and not self.multipart_unsupported_key_chars.isdisjoint(key):
            bad = sorted(self.multipart_unsupported_key_chars.intersection(key))
            if bad:
                return ("key contains a character this store cannot handle in multipart uploads: "
                        f"{', '.join(map(repr, bad))}")
        if (self.preserves_double_slash and self.allows_trailing_slash_object and self.allows_dot_segments
                and self.max_segment_bytes is None and not self.reserved_prefixes):
            return None  # nothing below can apply: spare splitting every key
        if ("//" not in key and not key.startswith("/") and not key.endswith("/") and "." not in key
                and (self.max_segment_bytes is None or size <= self.max_segment_bytes)
                and not self.reserved_prefixes):
            return None  # no empty, dot or over-long segment and no trailing slash possible
        segments = key.split("/")
        if not self.preserves_double_slash and "" in segments[:-1]:
            return "key has an empty path segment ('//' or a leading '/'), which this store collapses"
        if not self.allows_trailing_slash_object and len(segments) > 1 and segments[-1] == "":
            return "key ends with '/', which this store treats as a directory"
        if not self.allows_dot_segments and any(s in (".", "..") for s in segments):
            return "key has a '.' or '..' segment, which this store does not accept"
        if self.max_segment_bytes is not None:
            for segment in segments:
                if len(segment.encode("utf-8")) > self.max_segment_bytes:
                    return f"a key segment is longer than {self.max_segment_bytes} bytes"
        for prefix in self.reserved_prefixes:
            if key.startswith(prefix) or key == prefix.rstrip("/"):
                return f"keys under {prefix!r} are reserved by this store"
        return None

    def check_key(self, key: str, *, multipart: bool = False) -> None:
        """Raise ``StoreError(INVALID)`` for an empty or non-Unicode key and
        ``StoreError(UNSUPPORTED)`` (not retryable) for a key this store cannot hold."""
        problem = self.key_problem(key, multipart=multipart)
        if problem is None:
            return
        if key == "" or problem.startswith("key is not valid"):
            raise StoreError(ErrorKind.INVALID, problem, code="InvalidKey")
        if self.limitation and not problem.startswith("key is "):
            problem = f"{problem} ({self.limitation})"
        raise StoreError(ErrorKind.UNSUPPORTED, problem, code="UnsupportedKey")


UNKNOWN_SIZE = -1  # ObjectInfo.size of a write's answer that does not report the object's size


@dataclass(frozen=True)
class ObjectInfo:
    """Result of ``head``: what the engine compares and records."""

    key: str
    size: int
    last_modified: float                  # epoch seconds (UTC)
    etag: str | None = None               # without quotes
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)  # user metadata, lower-case names
    crc64ecma: int | None = None          # whole-object CRC-64/XZ when the store exposes it
    storage_class: str | None = None
    # Restore status of an archived object as the store reports it (S3 ``x-amz-restore``, e.g.
    # ``ongoing-request="true"``); None: no restore was asked for, or the store says nothing.
    restore: str | None = None
    # True when the store read this from the stored object (a HEAD) rather than echoing what a
    # write request sent: a write that returns such an answer needs no read-back of its own to
    # be verified. Not part of equality: it says where the facts came from, not what they are.
    from_head: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class PutOptions:
    """How to write an object. ``metadata`` is user metadata (names without any prefix)."""

    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    content_md5: str | None = None        # base64 MD5 the store should verify, when known
    # server_copy only: keep the source object's Content-Type and user metadata as they are
    # (S3 ``x-amz-metadata-directive: COPY``) instead of replacing them with the fields above;
    # ``storage_class`` still applies. Lets a copy skip the HEAD that would read them.
    copy_metadata: bool = False


@dataclass(frozen=True)
class ListPage:
    keys: list[ObjectInfo]
    next_token: str | None


@runtime_checkable
class ObjectStore(Protocol):
    """One bucket-addressable store (an endpoint with credentials).

    Every method raises ``StoreError`` and nothing else.
    """

    capabilities: Capabilities

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """Metadata of one object. Missing object or bucket → ``StoreError(NOT_FOUND)``."""
        ...

    def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
            chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """Stream the object's bytes ``[start, end)`` in chunks; bounded memory."""
        ...

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        """Write a whole object in one request (at most ``capabilities.max_single_put``)."""
        ...

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        """Start a multipart upload; returns its upload id."""
        ...

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                          data: bytes) -> str:
        """Upload part ``part_number`` (1-based); returns the part's ETag."""
        ...

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        """Server-side copy of source bytes ``[start, end)`` into a part; returns its ETag."""
        ...

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        """Assemble the parts (number, etag) into the object, atomically. Returns the object
        written (``from_head`` when the store read it back after assembling it)."""
        ...

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        """Discard an upload and its parts; an unknown upload is not an error."""
        ...

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        """Open uploads as (key, upload_id)."""
        ...

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        """Copy within this store without streaming (at most ``max_server_copy`` bytes),
        replacing metadata with ``options`` (or keeping the source's when
        ``options.copy_metadata``). Returns the copy: either read back (``from_head``) or the
        copy request's own answer (ETag and last-modified of the new object; ``size`` may then
        be ``UNKNOWN_SIZE``)."""
        ...

    async def delete(self, bucket: str, key: str) -> None:
        """Remove an object; a missing object is not an error."""
        ...

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000, start_after: str | None = None) -> ListPage:
        """One page of objects whose key starts with ``prefix``, in key order.

        ``start_after`` (first page only; ignored with ``token``) starts the listing after that
        key, as S3's ``StartAfter``: only keys greater than it (UTF-8 byte order) are listed."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
