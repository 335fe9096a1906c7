"""``MemoryStore``: the in-process fake of the store port, for unit tests of the engine.

It behaves like S3 where the contract is concerned (buckets must exist, missing objects are
NOT_FOUND, multipart parts are checked, ETags are MD5 / multipart style, CRC-64 is exposed) and
offers hooks for tests: ``faults`` to make chosen calls fail, ``delay`` to slow every call, and
``calls`` recording every operation.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from omsync.stores import _common as common
from omsync.stores.base import Capabilities, ErrorKind, ListPage, ObjectInfo, PutOptions, StoreError
from omsync.stores.crc64 import crc64_combine, crc64ecma

MEMORY_CAPABILITIES = Capabilities(
    server_side_copy=True,
    multipart=True,
    part_copy=True,
    crc64ecma=True,
    md5_etag=True,
)


@dataclass
class Fault:
    """Make the next ``times`` calls of ``operation`` (``"*"`` = any) raise ``error``.

    ``key`` / ``bucket`` narrow the match; ``times=None`` keeps failing forever. Operation names
    are the method names: head, get, put, create_multipart, upload_part, upload_part_copy,
    complete_multipart, abort_multipart, list_multipart_uploads, server_copy, delete, list.
    """

    operation: str
    error: BaseException
    key: str | None = None
    bucket: str | None = None
    times: int | None = 1

    def matches(self, operation: str, bucket: str, key: str) -> bool:
        return (
            self.operation in ("*", operation)
            and (self.key is None or self.key == key)
            and (self.bucket is None or self.bucket == bucket)
            and (self.times is None or self.times > 0)
        )


@dataclass
class _Object:
    data: bytes
    info: ObjectInfo


@dataclass
class _Upload:
    bucket: str
    key: str
    options: PutOptions
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)


class MemoryStore:
    """An S3-like store in a dict. Buckets must be created first (``create_bucket``).

    ``capabilities`` can be narrowed to exercise engine paths (no server copy, small parts,
    key limits); the store enforces whatever it declares.
    """

    def __init__(
        self,
        *,
        capabilities: Capabilities = MEMORY_CAPABILITIES,
        buckets: Iterable[str] = (),
        delay: float = 0.0,
    ) -> None:
        self.capabilities = capabilities
        self.delay = delay
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str, str]] = []
        self._buckets: dict[str, dict[str, _Object]] = {name: {} for name in buckets}
        self._uploads: dict[str, _Upload] = {}
        self._ids = itertools.count(1)

    # -- test helpers -----------------------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        self._buckets.setdefault(name, {})

    def fail(self, operation: str, error: BaseException, *, key: str | None = None,
             bucket: str | None = None, times: int | None = 1) -> Fault:
        """Register a fault (see ``Fault``) and return it."""
        fault = Fault(operation, error, key=key, bucket=bucket, times=times)
        self.faults.append(fault)
        return fault

    def object_bytes(self, bucket: str, key: str) -> bytes:
        """The stored bytes, for assertions (KeyError if absent)."""
        return self._buckets[bucket][key].data

    def keys(self, bucket: str) -> list[str]:
        return sorted(self._buckets[bucket])

    def count(self, operation: str) -> int:
        return sum(1 for op, _, _ in self.calls if op == operation)

    # -- internals --------------------------------------------------------------------------

    async def _enter(self, operation: str, bucket: str, key: str = "") -> None:
        self.calls.append((operation, bucket, key))
        if self.delay:
            await asyncio.sleep(self.delay)
        for fault in self.faults:
            if fault.matches(operation, bucket, key):
                if fault.times is not None:
                    fault.times -= 1
                raise fault.error

    def _bucket(self, bucket: str) -> dict[str, _Object]:
        try:
            return self._buckets[bucket]
        except KeyError:
            raise StoreError(ErrorKind.NOT_FOUND, f"no bucket {bucket!r}", code="NoSuchBucket") from None

    def _object(self, bucket: str, key: str) -> _Object:
        objects = self._bucket(bucket)
        try:
            return objects[key]
        except KeyError:
            raise StoreError(ErrorKind.NOT_FOUND, f"no object {key!r}", code="NoSuchKey") from None

    def _upload(self, bucket: str, key: str, upload_id: str) -> _Upload:
        self._bucket(bucket)
        upload = self._uploads.get(upload_id)
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise StoreError(ErrorKind.NOT_FOUND, f"no upload {upload_id!r}", code="NoSuchUpload")
        return upload

    def _store(self, bucket: str, key: str, data: bytes, etag: str, crc: int,
               options: PutOptions) -> ObjectInfo:
        info = ObjectInfo(
            key=key,
            size=len(data),
            last_modified=time.time(),
            etag=etag,
            content_type=options.content_type or "binary/octet-stream",
            metadata={name.lower(): value for name, value in options.metadata.items()},
            crc64ecma=crc,
            storage_class=options.storage_class,
        )
        self._bucket(bucket)[key] = _Object(data, info)
        return info

    def _require(self, flag: bool, what: str) -> None:
        if not flag:
            raise StoreError(ErrorKind.UNSUPPORTED, f"this store does not offer {what}",
                             code="NotImplemented")

    # -- the port ---------------------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        await self._enter("head", bucket, key)
        self.capabilities.check_key(key)
        return self._object(bucket, key).info

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        await self._enter("get", bucket, key)
        self.capabilities.check_key(key)
        data = self._object(bucket, key).data
        first, stop = common.resolve_range(len(data), start, end)
        size = max(1, chunk_size)
        for offset in range(first, stop, size):
            yield data[offset:min(offset + size, stop)]
            await asyncio.sleep(0)

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        await self._enter("put", bucket, key)
        self.capabilities.check_key(key)
        self._bucket(bucket)
        common.check_put_size(self.capabilities, len(data))
        common.check_storage_class(self.capabilities, options)
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        common.verify_content_md5(options, digest)
        return self._store(bucket, key, bytes(data), digest.hex(), crc64ecma(data), options)

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        await self._enter("create_multipart", bucket, key)
        self._require(self.capabilities.multipart, "multipart uploads")
        self.capabilities.check_key(key, multipart=True)
        self._bucket(bucket)
        common.check_storage_class(self.capabilities, options)
        upload_id = f"mem-upload-{next(self._ids)}"
        self._uploads[upload_id] = _Upload(bucket, key, options)
        return upload_id

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                          data: bytes) -> str:
        await self._enter("upload_part", bucket, key)
        upload = self._upload(bucket, key, upload_id)
        common.check_part_number(self.capabilities, part_number)
        etag = common.md5_hex(data)
        upload.parts[part_number] = (bytes(data), etag)
        return etag

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        await self._enter("upload_part_copy", bucket, key)
        self._require(self.capabilities.part_copy, "server-side part copy")
        upload = self._upload(bucket, key, upload_id)
        common.check_part_number(self.capabilities, part_number)
        self.capabilities.check_key(src_key)
        source = self._object(src_bucket, src_key).data
        common.check_copy_range(len(source), start, end)
        data = source[start:end]
        etag = common.md5_hex(data)
        upload.parts[part_number] = (data, etag)
        return etag

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        await self._enter("complete_multipart", bucket, key)
        upload = self._upload(bucket, key, upload_id)
        common.check_parts_order(parts)
        chunks: list[bytes] = []
        crc = 0
        for index, (number, etag) in enumerate(parts):
            stored = upload.parts.get(number)
            if stored is None or stored[1] != common.clean_etag(etag):
                raise StoreError(ErrorKind.INVALID, f"part {number} was not uploaded with that ETag",
                                 code="InvalidPart")
            if index < len(parts) - 1 and len(stored[0]) < self.capabilities.min_part_size:
                raise StoreError(ErrorKind.INVALID, f"part {number} is smaller than the minimum",
                                 code="EntityTooSmall")
            chunks.append(stored[0])
            crc = crc64_combine(crc, crc64ecma(stored[0]), len(stored[0]))
        data = b"".join(chunks)
        etag = common.multipart_etag([common.clean_etag(e) for _, e in parts])
        del self._uploads[upload_id]
        return self._store(bucket, key, data, etag, crc, upload.options)

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        await self._enter("abort_multipart", bucket, key)
        self._bucket(bucket)
        upload = self._uploads.get(upload_id)
        if upload is not None and upload.bucket == bucket and upload.key == key:
            del self._uploads[upload_id]

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        await self._enter("list_multipart_uploads", bucket, prefix)
        self._bucket(bucket)
        return sorted(
            (u.key, upload_id) for upload_id, u in self._uploads.items()
            if u.bucket == bucket and u.key.startswith(prefix)
        )

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        await self._enter("server_copy", bucket, key)
        self._require(self.capabilities.server_side_copy, "server-side copy")
        self.capabilities.check_key(src_key)
        self.capabilities.check_key(key)
        source = self._object(src_bucket, src_key)
        self._bucket(bucket)
        if source.info.size > self.capabilities.max_server_copy:
            raise StoreError(ErrorKind.UNSUPPORTED, "source larger than the server-copy limit",
                             code="InvalidRequest")
        common.check_storage_class(self.capabilities, options)
        if options.copy_metadata:
            options = PutOptions(content_type=source.info.content_type, metadata=source.info.metadata,
                                 storage_class=options.storage_class or source.info.storage_class)
        return self._store(bucket, key, source.data, common.md5_hex(source.data),
                           crc64ecma(source.data), options)

    async def delete(self, bucket: str, key: str) -> None:
        await self._enter("delete", bucket, key)
        self.capabilities.check_key(key)
        self._bucket(bucket).pop(key, None)

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000, start_after: str | None = None) -> ListPage:
        await self._enter("list", bucket, prefix)
        objects = self._bucket(bucket)
        names = sorted(k for k in objects if k.startswith(prefix))
        after = token if token is not None else start_after
        first = bisect.bisect_right(names, after) if after is not None else 0
        chosen = names[first:first + max(1, limit)]
        more = first + len(chosen) < len(names)
        return ListPage(
            keys=[_listing_info(objects[name].info) for name in chosen],
            next_token=chosen[-1] if more and chosen else None,
        )

    async def close(self) -> None:
        return None


def _listing_info(info: ObjectInfo) -> ObjectInfo:
    """What an S3 listing returns: no content type, metadata or CRC, so callers cannot come to
    rely on fields only this fake would give them."""
    return ObjectInfo(key=info.key, size=info.size, last_modified=info.last_modified,
                      etag=info.etag, storage_class=info.storage_class)
