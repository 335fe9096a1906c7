"""An :class:`~omsync.stores.base.ObjectStore` wrapper that times every request for the metrics.

Each call of the wrapped store is observed once in ``omsync_store_request_duration_seconds``
under the wrapper's ``backend`` label and the operation's name (the protocol method's name);
a call that raises ``StoreError`` also counts in ``omsync_store_request_errors_total`` under the
error's kind (``internal`` for any other exception, which is a defect). A cancelled call is not
observed: it tells nothing about the store. ``get`` is observed until its first chunk arrives
(or the stream ends or fails before one), because the rest of a stream runs at the pace of its
consumer; a failure later in the stream is counted as an error only.

The wrapper changes nothing else: arguments, results and exceptions pass through untouched,
and attributes it does not define are read from the wrapped store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from omsync import metrics
from omsync.stores.base import Capabilities, ListPage, ObjectInfo, ObjectStore, PutOptions, StoreError

_T = TypeVar("_T")


def _error_kind(exc: BaseException) -> str:
    return exc.kind.value if isinstance(exc, StoreError) else "internal"


class InstrumentedStore:
    """``inner`` with its requests timed and its failures counted under ``backend`` (e.g. the
    cloud type). Implements :class:`~omsync.stores.base.ObjectStore`; ``close`` closes ``inner``."""

    def __init__(self, inner: ObjectStore, backend: str) -> None:
        self.inner = inner
        self.backend = backend
        self.capabilities: Capabilities = inner.capabilities

    def __repr__(self) -> str:
        return f"InstrumentedStore({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not defined here (e.g. a backend's own settings).
        return getattr(self.inner, name)

    async def _timed(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        started = time.perf_counter()
        try:
            result = await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.store_call(self.backend, operation, time.perf_counter() - started, _error_kind(exc))
            raise
        metrics.store_call(self.backend, operation, time.perf_counter() - started)
        return result

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        return await self._timed("head", lambda: self.inner.head(bucket, key))

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        observed = False
        stream = self.inner.get(bucket, key, start=start, end=end, chunk_size=chunk_size)
        try:
            while True:
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    seconds = None if observed else time.perf_counter() - started
                    observed = True
                    metrics.store_call(self.backend, "get", seconds, _error_kind(exc))
                    raise
                if not observed:
                    observed = True
                    metrics.store_call(self.backend, "get", time.perf_counter() - started)
                yield chunk
            if not observed:
                metrics.store_call(self.backend, "get", time.perf_counter() - started)
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        return await self._timed("put", lambda: self.inner.put(bucket, key, data, options))

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        return await self._timed("create_multipart", lambda: self.inner.create_multipart(bucket, key, options))

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        return await self._timed(
            "upload_part", lambda: self.inner.upload_part(bucket, key, upload_id, part_number, data))

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        return await self._timed("upload_part_copy", lambda: self.inner.upload_part_copy(
            bucket, key, upload_id, part_number, src_bucket, src_key, start, end))

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        return await self._timed(
            "complete_multipart", lambda: self.inner.complete_multipart(bucket, key, upload_id, parts))

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        await self._timed("abort_multipart", lambda: self.inner.abort_multipart(bucket, key, upload_id))

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        return await self._timed("list_multipart_uploads", lambda: self.inner.list_multipart_uploads(bucket, prefix))

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        return await self._timed(
            "server_copy", lambda: self.inner.server_copy(src_bucket, src_key, bucket, key, options))

    async def delete(self, bucket: str, key: str) -> None:
        await self._timed("delete", lambda: self.inner.delete(bucket, key))

    async def list(self, bucket: str, prefix: str = "", token: str | None = None, limit: int = 1000,
                   start_after: str | None = None) -> ListPage:
        if start_after is None:  # the call every backend has always accepted
            return await self._timed("list", lambda: self.inner.list(bucket, prefix, token, limit))
        return await self._timed(
            "list", lambda: self.inner.list(bucket, prefix, token, limit, start_after=start_after))

    async def close(self) -> None:
        await self.inner.close()
