"""A destination store seen through a key prefix: what a migration task's ``save_prefix`` does.

The engine and the copier work with source keys; :func:`with_key_prefix` wraps the destination
store so that every key it is given becomes ``prefix + key`` (bytes exact: plain string
concatenation, no separator added or removed), and keys it lists come back without the prefix.
Source keys passed through it (``server_copy``, ``upload_part_copy``) are left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from omsync.stores.base import Capabilities, ListPage, ObjectInfo, ObjectStore, PutOptions


def with_key_prefix(store: ObjectStore, prefix: str) -> ObjectStore:
    """``store`` itself when ``prefix`` is empty, else a :class:`PrefixedStore` over it."""
    return PrefixedStore(store, prefix) if prefix else store


class PrefixedStore:
    """An :class:`~omsync.stores.base.ObjectStore` that prepends ``prefix`` to every
    destination key. Its capabilities allow keys ``len(prefix)`` bytes shorter, so a key too
    long once prefixed is refused up front as ``unsupported_key``."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix
        room = inner.capabilities.max_key_bytes - len(prefix.encode("utf-8"))
        self.capabilities: Capabilities = dataclasses.replace(inner.capabilities, max_key_bytes=max(0, room))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _strip(self, info: ObjectInfo) -> ObjectInfo:
        if info.key.startswith(self.prefix):
            return dataclasses.replace(info, key=info.key[len(self.prefix):])
        return info

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        return self._strip(await self.inner.head(bucket, self.prefix + key))

    def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
            chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        return self.inner.get(bucket, self.prefix + key, start=start, end=end, chunk_size=chunk_size)

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        return self._strip(await self.inner.put(bucket, self.prefix + key, data, options))

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        return await self.inner.create_multipart(bucket, self.prefix + key, options)

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        return await self.inner.upload_part(bucket, self.prefix + key, upload_id, part_number, data)

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        return await self.inner.upload_part_copy(bucket, self.prefix + key, upload_id, part_number,
                                                 src_bucket, src_key, start, end)

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        return self._strip(await self.inner.complete_multipart(bucket, self.prefix + key, upload_id, parts))

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        await self.inner.abort_multipart(bucket, self.prefix + key, upload_id)

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        found = await self.inner.list_multipart_uploads(bucket, self.prefix + prefix)
        return [(key[len(self.prefix):], upload) for key, upload in found if key.startswith(self.prefix)]

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        return self._strip(await self.inner.server_copy(src_bucket, src_key, bucket, self.prefix + key, options))

    async def delete(self, bucket: str, key: str) -> None:
        await self.inner.delete(bucket, self.prefix + key)

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000, start_after: str | None = None) -> ListPage:
        page = await self.inner.list(bucket, self.prefix + prefix, token, limit,
                                     self.prefix + start_after if start_after is not None else None)
        return dataclasses.replace(page, keys=[self._strip(info) for info in page.keys])

    async def close(self) -> None:
        """The inner store belongs to its factory: nothing to release here."""
