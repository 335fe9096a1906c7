"""A task's source read through a CDN domain (``source_cdn``): metadata from the bucket, bytes
from the CDN.

:class:`CdnSourceStore` wraps the source bucket's store: ``head`` and ``list`` (size,
last-modified, ETag, class, metadata) go to the bucket with the task's credentials, ``get``
fetches the bytes with an HTTP GET of the object's URL on the CDN domain, signed by the
configured scheme (:mod:`omsync.stores.cdn_signing`) at every request.

What the CDN sends is checked against the bucket's metadata before omsync writes anything:
the total size (Content-Range / Content-Length) and the ETag when the CDN passes one on must
equal the bucket's, and a whole-object read whose bucket ETag is an MD5 must hash to it. A CDN
serving an older copy (or a 404 for an object the bucket has) is therefore a retryable
``CORRUPT`` error with code ``cdn_stale``, never a wrong object. A 401/403 from the CDN
(wrong key, expired signature) is ``PERMISSION`` (reason ``access_denied``).

Copies from such a source are never server-side (the factory says so), and writes to it are
not expected: they go to the bucket's store unchanged.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator

import httpx

from omsync.domain.model import SourceCdn
from omsync.stores.base import ErrorKind, ListPage, ObjectInfo, ObjectStore, PutOptions, StoreError
from omsync.stores.cdn_signing import signed_url

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_KNOWN_LIMIT = 4096  # bucket HEADs remembered for the GETs that follow them


def _etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"').lower() or None


class CdnSourceStore:
    """``bucket_store`` with its reads served by ``cdn`` (see the module docstring).
    Implements :class:`~omsync.stores.base.ObjectStore`; ``close`` closes the HTTP client only
    (the bucket store belongs to whoever built it)."""

    def __init__(self, bucket_store: ObjectStore, cdn: SourceCdn, *, timeout: float = 60.0) -> None:
        self.inner = bucket_store
        self.cdn = cdn
        self.timeout = timeout
        self.capabilities = dataclasses.replace(bucket_store.capabilities, server_side_copy=False, part_copy=False)
        self._client: httpx.AsyncClient | None = None
        self._known: collections.OrderedDict[tuple[str, str], ObjectInfo] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"CdnSourceStore({self.cdn!r} over {self.inner!r})"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    # -- metadata: the bucket -----------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        info = await self.inner.head(bucket, key)
        self._known[(bucket, key)] = info
        self._known.move_to_end((bucket, key))
        while len(self._known) > _KNOWN_LIMIT:
            self._known.popitem(last=False)
        return info

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000, start_after: str | None = None) -> ListPage:
        return await self.inner.list(bucket, prefix, token, limit, start_after)

    # -- bytes: the CDN -----------------------------------------------------------------------

    def _refused(self, key: str, status: int) -> StoreError:
        where = f"CDN {self.cdn.domain} GET {key!r}"
        if status in (401, 403):
            return StoreError(ErrorKind.PERMISSION, f"{where}: HTTP {status} (key or signature refused, or expired)",
                              code="CdnAccessDenied")
        if status == 404:
            return StoreError(ErrorKind.CORRUPT, f"{where}: HTTP 404 for an object the bucket has", code="cdn_stale")
        if status == 429:
            return StoreError(ErrorKind.THROTTLED, f"{where}: HTTP 429", code="CdnThrottled")
        if status == 416:
            return StoreError(ErrorKind.INVALID, f"{where}: HTTP 416", code="InvalidRange")
        return StoreError(ErrorKind.TRANSIENT, f"{where}: HTTP {status}", code=f"Cdn{status}")

    @staticmethod
    def _stale(key: str, why: str) -> StoreError:
        return StoreError(ErrorKind.CORRUPT, f"CDN copy of {key!r} differs from the bucket's object: {why}",
                          code="cdn_stale")

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """Stream ``[start, end)`` from the CDN, checked against the bucket's metadata (the last
        :meth:`head` of the key, or a HEAD now). Raises ``StoreError`` as the module says."""
        self.capabilities.check_key(key)
        if start < 0 or (end is not None and end < start):
            raise StoreError(ErrorKind.INVALID, f"bad range [{start}, {end})", code="InvalidRange")
        expected = self._known.get((bucket, key)) or await self.head(bucket, key)
        stop = expected.size if end is None else min(end, expected.size)
        if stop <= start:
            return
        whole = start == 0 and stop == expected.size
        md5 = hashlib.md5(usedforsecurity=False) if whole and _MD5_ETAG.match(expected.etag or "") else None
        headers = {} if whole else {"Range": f"bytes={start}-{stop - 1}"}
        piece = max(1, chunk_size)
        got = 0
        try:
            async with self._http().stream("GET", signed_url(self.cdn, key), headers=headers) as response:
                if response.status_code not in (200, 206):
                    raise self._refused(key, response.status_code)
                etag = _etag(response.headers.get("etag"))
                if etag and expected.etag and etag != _etag(expected.etag):
                    raise self._stale(key, f"ETag {etag} instead of {expected.etag}")
                skip = 0
                if response.status_code == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                    if match is None or int(match.group(1)) != start:
                        raise self._stale(key, f"unexpected Content-Range {response.headers.get('content-range')!r}")
                    if match.group(3) != "*" and int(match.group(3)) != expected.size:
                        raise self._stale(key, f"{match.group(3)} bytes instead of {expected.size}")
                else:
                    length = response.headers.get("content-length")
                    if length is not None and length.isdigit() and int(length) != expected.size:
                        raise self._stale(key, f"{length} bytes instead of {expected.size}")
                    skip = start  # the whole object came: drop what precedes the range
                want = stop - start
                async for data in response.aiter_bytes(piece):
                    if skip:
                        cut = min(skip, len(data))
                        data, skip = data[cut:], skip - cut
                        if not data:
                            continue
                    if md5 is not None:
                        md5.update(data)
                    data = data[: want - got]
                    got += len(data)
                    if data:
                        if md5 is not None and got == want and md5.hexdigest() != _etag(expected.etag):
                            raise self._stale(key, "MD5 of the bytes differs from the bucket's ETag")
                        yield data
                    if got >= want:
                        break
        except StoreError:
            raise
        except httpx.TimeoutException as exc:
            raise StoreError(ErrorKind.TRANSIENT, f"CDN {self.cdn.domain} GET {key!r}: timed out",
                             code="Timeout") from exc
        except httpx.HTTPError as exc:
            raise StoreError(ErrorKind.TRANSIENT, f"CDN {self.cdn.domain} GET {key!r}: {type(exc).__name__}",
                             code="ConnectionError") from exc
        if got != stop - start:
            raise self._stale(key, f"{got} bytes sent for a range of {stop - start}")

    # -- everything else: the bucket's store, unchanged ------------------------------------------

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        return await self.inner.put(bucket, key, data, options)

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        return await self.inner.create_multipart(bucket, key, options)

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        return await self.inner.upload_part(bucket, key, upload_id, part_number, data)

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        return await self.inner.upload_part_copy(bucket, key, upload_id, part_number, src_bucket, src_key, start, end)

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: builtins.list[tuple[int, str]]) -> ObjectInfo:
        return await self.inner.complete_multipart(bucket, key, upload_id, parts)

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        await self.inner.abort_multipart(bucket, key, upload_id)

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> builtins.list[tuple[str, str]]:
        return await self.inner.list_multipart_uploads(bucket, prefix)

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        return await self.inner.server_copy(src_bucket, src_key, bucket, key, options)

    async def delete(self, bucket: str, key: str) -> None:
        await self.inner.delete(bucket, key)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
