"""Copy one key of a task from its source store to its destination store, verified.

The steps, per key: refuse keys a side cannot hold; HEAD source and destination; decide by the
task's ``object_overwrite_mode``; write (server-side copy when both sides are the same store
object, else stream GET → PUT; multipart above the threshold); read the destination back (a
HEAD, or the write's answer when the store already HEADed the object for it) and verify by
``consistency_check``; a copy that fails verification is deleted (when it is still
ours) and reported as a retryable CORRUPT error.

Memory: a streamed multipart copy holds at most ``part_concurrency`` parts (plus one read chunk)
whatever the object size; a single-part copy holds the object, which is at most the threshold.
A multipart upload registers its abort as soon as it exists, so a failure or a cancellation at
any point leaves neither a partial object nor orphaned parts behind.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from omsync.config import Settings
from omsync.domain.decisions import Action, Decision, ObjectFacts, decide, verify
from omsync.domain.model import ConsistencyCheck, Outcome, OutcomeKind, OverwriteMode, TaskSpec
from omsync.engine.prefetch import Absent, Known
from omsync.engine.retry import CopyError, Side
from omsync.stores.base import ErrorKind, ObjectInfo, ObjectStore, PutOptions, StoreError
from omsync.stores.crc64 import crc64_combine, crc64ecma
from omsync.stores.profiles import destination_storage_class, get_profile

log = logging.getLogger("omsync.engine.copier")

SRC_ETAG_META = "omsync-src-etag"
SRC_MTIME_META = "omsync-src-mtime"
OWN_META_PREFIX = "omsync-"
_MD5_HEX = re.compile(r"[0-9a-f]{32}")

_T = TypeVar("_T")

# Abort calls still running after their copy was cancelled; kept so they are not collected.
_pending_aborts: set[asyncio.Task[None]] = set()


class UploadTracker(Protocol):
    """Told when a copy opens and ends a multipart upload (see :meth:`Copier.copy`)."""

    async def opened(self, bucket: str, upload_id: str) -> None:
        """The upload exists; must be durable before returning (parts follow)."""

    async def closed(self, upload_id: str) -> None:
        """The upload was completed or aborted."""


class Bandwidth(Protocol):
    """A byte budget the copy draws on (a task's bytes/s limit, see :mod:`omsync.engine.throttle`)."""

    def chunk_size(self, preferred: int) -> int:
        """The read size to use instead of ``preferred``: small enough that a paced stream is
        never left unread for long (a source may drop an idle connection)."""

    async def take(self, amount: int) -> None:
        """Wait until ``amount`` more bytes may be moved."""


@dataclass(frozen=True)
class CopyLimits:
    """Sizes that shape a copy.

    Objects larger than ``multipart_threshold`` bytes go multipart in parts of ``part_size``
    (raised when the destination's minimum part size or part-count limit demands), at most
    ``part_concurrency`` parts in flight. ``clock_skew_seconds`` is how far the two stores'
    clocks may disagree when a copy is verified by last-modified time. ``stream_memory`` bounds
    the object bytes all streamed copies of a copier hold at once (see :class:`MemoryBudget`).
    """

    multipart_threshold: int = 16 * 1024 * 1024
    part_size: int = 16 * 1024 * 1024
    part_concurrency: int = 4
    read_chunk: int = 1024 * 1024
    clock_skew_seconds: float = 2.0
    stream_memory: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.part_size < 1 or self.part_concurrency < 1 or self.read_chunk < 1:
            raise ValueError("part_size, part_concurrency and read_chunk must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> CopyLimits:
        return cls(
            multipart_threshold=settings.multipart_threshold_bytes,
            part_size=settings.part_size_bytes,
            part_concurrency=settings.part_concurrency,
            stream_memory=settings.stream_memory_bytes,
        )


OFFLOAD_HASH_BYTES = 1024 * 1024  # bodies above this are hashed on a thread


def _digests(body: bytes) -> tuple[bytes, int]:
    """MD5 and CRC-64/XZ of ``body``."""
    return hashlib.md5(body, usedforsecurity=False).digest(), crc64ecma(body)


class MemoryBudget:
    """Bytes of object data that all streamed copies of a process may hold at once.

    :meth:`acquire` waits, first come first served, until the bytes are free; a request above
    the whole budget is granted the budget (one such copy at a time rather than none).
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, amount: int) -> int:
        """Wait until ``amount`` bytes (at most the whole budget) are free and take them;
        returns what was taken, to hand back to :meth:`release`."""
        amount = min(max(0, amount), self.limit)
        if not self._waiters and self.used + amount <= self.limit:
            self.used += amount
            return amount
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(amount)  # granted just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._grant()
            raise
        return amount

    def release(self, amount: int) -> None:
        """Hand back bytes taken by :meth:`acquire`."""
        self.used -= amount
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            amount, future = self._waiters.popleft()
            if future.done():
                continue
            self.used += amount
            future.set_result(None)


@dataclass(frozen=True)
class _Written:
    """What a write produced: the store's answer and, when streamed, the bytes' CRC and size."""

    info: ObjectInfo
    crc64: int | None
    size: int | None
    how: str
    md5: str | None = None  # hex MD5 of the bytes streamed in one PUT


async def _on(side: Side, call: Awaitable[_T]) -> _T:
    """Await a store call, tagging its StoreError with the side it was made against."""
    try:
        return await call
    except CopyError:
        raise
    except StoreError as exc:
        raise CopyError(side, exc) from exc


def _facts(info: ObjectInfo) -> ObjectFacts:
    return ObjectFacts(size=info.size, last_modified=info.last_modified, crc64=info.crc64ecma)


def _storage_class(spec: TaskSpec, src: ObjectInfo) -> str | None:
    """The class to write for the task's ``dst_storage_policy`` (see the provider profiles).

    A destination whose profile names no classes at all (a local directory) takes none. A tier
    the destination does not offer fails the key (``unsupported_storage_class``) rather than
    silently landing in another class.
    """
    policy = spec.dst_storage_policy
    if policy is None:
        return None
    try:
        destination = get_profile(spec.dst_cloud_type.value)
    except KeyError:
        return None
    if not destination.storage_policy:
        return None
    try:
        source = get_profile(spec.src_cloud_type.value)
    except KeyError:
        source = None
    try:
        return destination_storage_class(policy.value, destination, source, src.storage_class)
    except ValueError as exc:
        raise CopyError(Side.DESTINATION, StoreError(
            ErrorKind.UNSUPPORTED, str(exc), retryable=False, code="unsupported_storage_class")) from exc


def _http_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to surface from a failed task group: a store error first, the first
    exception otherwise (a task group raises cancellations only as a plain CancelledError)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, StoreError):
            return exc
    return leaves[0]


class Copier:
    """Copies single keys; stateless apart from its limits, so one instance serves all slots."""

    def __init__(self, limits: CopyLimits) -> None:
        self.limits = limits
        self.memory = MemoryBudget(limits.stream_memory)

    # -- public ---------------------------------------------------------------------------------

    async def copy(self, spec: TaskSpec, key: str, source: ObjectStore, destination: ObjectStore,
                   *, uploads: UploadTracker | None = None, bandwidth: Bandwidth | None = None,
                   server_side: bool = False, listed_source: Known | None = None,
                   listed_destination: Known | None = None) -> Outcome:
        """Copy ``key`` from ``spec.src_bucket`` in ``source`` to ``spec.dst_bucket`` in
        ``destination``.

        ``uploads`` is told about every multipart upload this copy starts (before any part is
        sent) and ends (completed or aborted), so that one orphaned by a crash can be aborted
        later by whoever copies the key next.

        ``bandwidth`` paces the bytes: a streamed copy draws each chunk it reads from it before
        passing the chunk on, a server-side copy draws the object's size before asking for it.

        ``server_side`` says whether the destination store can read the source bucket itself
        (same endpoint and credentials), as the composition root's store factory decides it
        (``StoreProvider.server_side``); otherwise the bytes are streamed.
        ``listed_source`` / ``listed_destination`` are what a listing already settled about the
        key (:mod:`omsync.engine.prefetch`): a listed object or ``ABSENT``; ``None`` = unknown,
        HEAD it. A listed source lacks Content-Type and user metadata, so it is HEADed anyway
        when the write needs them (every write except a server-side copy that keeps the
        source's metadata, i.e. ``enable_metadata_migration``).

        Returns SUCCESS (``size`` = bytes copied, ``message`` = how it was copied and verified)
        or SKIP (``reason`` from the overwrite decision, e.g. ``not_modified``, ``exists``,
        ``crc64_equal``; ``same_object`` when source and destination are the same object).
        Raises :class:`~omsync.engine.retry.CopyError` (a ``StoreError`` naming the side) for
        every store failure, including ``unsupported_key`` for a key a side cannot hold and a
        retryable CORRUPT ``verify_failed`` after a bad copy was removed; the caller classifies
        it with the retry policy. Cancellation propagates after cleanup.
        """
        if server_side and spec.src_bucket == spec.dst_bucket:
            return Outcome(OutcomeKind.SKIP, reason="same_object",
                           message="source and destination are the same object")
        self._check_key(key, source, Side.SOURCE)
        self._check_key(key, destination, Side.DESTINATION)

        if isinstance(listed_source, Absent):
            raise CopyError(Side.SOURCE, StoreError(ErrorKind.NOT_FOUND, "source object not found (listed)",
                                                    code="NoSuchKey"))
        src = (listed_source if isinstance(listed_source, ObjectInfo)
               else await self._head_source(source, spec.src_bucket, key))
        if listed_destination is None and spec.overwrite_mode is OverwriteMode.FULL:
            # Whatever is at the destination gets overwritten: no need to look.
            decision = Decision(Action.COPY, "full_overwrite")
        else:
            if listed_destination is not None:
                before = None if isinstance(listed_destination, Absent) else listed_destination
            else:
                before = await self._head_destination(destination, spec.dst_bucket, key)
            decision = decide(spec.overwrite_mode, _facts(src), _facts(before) if before is not None else None)
        if not decision.copy:
            return Outcome(OutcomeKind.SKIP, reason=decision.reason, message=decision.note, size=src.size)

        keep_metadata = (server_side and spec.enable_metadata_migration
                         and src.size <= self.limits.multipart_threshold
                         and destination.capabilities.server_side_copy)
        if listed_source is not None and not keep_metadata:
            src = await self._head_source(source, spec.src_bucket, key)
        if keep_metadata:
            options = PutOptions(storage_class=_storage_class(spec, src), copy_metadata=True)
        else:
            options = self._options(spec, src, destination)
        written = await self._write(spec, key, src, source, destination, options, server_side, uploads, bandwidth)
        note = await self._verify(spec, key, src, destination, written)
        message = f"{decision.reason}; {written.how}; {note}"
        if decision.note:
            message = f"{message}; overwrite decision: {decision.note}"
        return Outcome(OutcomeKind.SUCCESS, reason=decision.reason, message=message, size=src.size)

    # -- steps ----------------------------------------------------------------------------------

    @staticmethod
    def _check_key(key: str, store: ObjectStore, side: Side) -> None:
        problem = store.capabilities.key_problem(key)
        if problem is not None:
            kind = ErrorKind.INVALID if key == "" else ErrorKind.UNSUPPORTED
            raise CopyError(side, StoreError(kind, f"{side.value} cannot hold this key: {problem}",
                                             retryable=False, code="unsupported_key"))

    @staticmethod
    async def _head_source(store: ObjectStore, bucket: str, key: str) -> ObjectInfo:
        """HEAD of the source object. A HEAD answers a missing bucket like a missing key (404,
        no body): then one listing tells which it was, so that the reason says
        ``source_bucket_not_found`` rather than blaming the key."""
        try:
            return await store.head(bucket, key)
        except StoreError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND or exc.code == "NoSuchBucket":
                raise CopyError(Side.SOURCE, exc) from exc
            try:
                await store.list(bucket, limit=1)
            except StoreError as listing:
                if listing.kind is ErrorKind.NOT_FOUND:
                    raise CopyError(Side.SOURCE, StoreError(
                        ErrorKind.NOT_FOUND, f"source bucket {bucket!r} not found", code="NoSuchBucket")) from exc
            raise CopyError(Side.SOURCE, exc) from exc

    @staticmethod
    async def _head_destination(store: ObjectStore, bucket: str, key: str) -> ObjectInfo | None:
        try:
            return await _on(Side.DESTINATION, store.head(bucket, key))
        except CopyError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return None
            raise

    @staticmethod
    def _options(spec: TaskSpec, src: ObjectInfo, destination: ObjectStore) -> PutOptions:
        metadata: dict[str, str] = {}
        if spec.enable_metadata_migration:
            metadata.update(
                (name, value) for name, value in src.metadata.items()
                if not name.lower().startswith(OWN_META_PREFIX)
            )
        if src.etag:
            metadata[SRC_ETAG_META] = src.etag
        metadata[SRC_MTIME_META] = _http_time(src.last_modified)
        return PutOptions(
            content_type=src.content_type,
            metadata=metadata,
            storage_class=_storage_class(spec, src),
        )

    async def _write(self, spec: TaskSpec, key: str, src: ObjectInfo, source: ObjectStore,
                     destination: ObjectStore, options: PutOptions, same_store: bool,
                     uploads: UploadTracker | None, bandwidth: Bandwidth | None) -> _Written:
        caps = destination.capabilities
        large = src.size > self.limits.multipart_threshold
        multipart_key = caps.key_problem(key, multipart=True) is None
        if same_store and caps.server_side_copy:
            if large and caps.multipart and caps.part_copy and multipart_key:
                if bandwidth is not None:
                    await bandwidth.take(src.size)
                info = await self._multipart_server_copy(spec, key, src, destination, options, uploads)
                return _Written(info, None, None, "server-side multipart copy")
            if src.size <= caps.max_server_copy:
                if bandwidth is not None:
                    await bandwidth.take(src.size)
                info = await _on(Side.SOURCE, destination.server_copy(
                    spec.src_bucket, key, spec.dst_bucket, key, options))
                return _Written(info, None, None, "server-side copy")
        if (large or src.size > caps.max_single_put) and caps.multipart:
            problem = caps.key_problem(key, multipart=True)
            if problem is not None:
                # Reading the whole object into memory for one PUT is not an option above the
                # threshold, so such a key cannot be copied to this destination.
                raise CopyError(Side.DESTINATION, StoreError(
                    ErrorKind.UNSUPPORTED, f"destination cannot hold this key in a multipart upload, "
                    f"needed for {src.size} bytes: {problem}", retryable=False, code="unsupported_key"))
            return await self._multipart_stream(spec, key, src, source, destination, options, uploads, bandwidth)
        if large or src.size > caps.max_single_put:
            # Without multipart the whole object would have to sit in memory for one PUT.
            raise CopyError(Side.DESTINATION, StoreError(
                ErrorKind.UNSUPPORTED,
                f"object of {src.size} bytes is above the multipart threshold and the destination "
                "offers no multipart upload", retryable=False, code="object_too_large"))
        return await self._single_stream(spec, key, src, source, destination, options, bandwidth)

    def _part_size(self, size: int, destination: ObjectStore) -> int:
        caps = destination.capabilities
        by_count = -(-size // max(1, caps.max_part_count))
        if caps.exact_part_size:
            if caps.exact_part_size < by_count:
                raise CopyError(Side.DESTINATION, StoreError(
                    ErrorKind.UNSUPPORTED,
                    f"object of {size} bytes needs more than {caps.max_part_count} parts of the "
                    f"destination's fixed part size {caps.exact_part_size}",
                    retryable=False, code="object_too_large"))
            return caps.exact_part_size
        return max(self.limits.part_size, caps.min_part_size, by_count)

    async def _read(self, source: ObjectStore, bucket: str, key: str, chunk: int,
                    bandwidth: Bandwidth | None = None, *, start: int = 0,
                    end: int | None = None) -> AsyncGenerator[bytes]:
        """The source's bytes ``[start, end)``, with its StoreErrors tagged as source errors,
        each chunk paced by ``bandwidth``."""
        if bandwidth is not None:
            chunk = bandwidth.chunk_size(chunk)
        stream = source.get(bucket, key, start=start, end=end, chunk_size=chunk)
        try:
            while True:
                try:
                    data = await anext(stream)
                except StopAsyncIteration:
                    return
                except StoreError as exc:
                    raise CopyError(Side.SOURCE, exc) from exc
                if bandwidth is not None:
                    await bandwidth.take(len(data))
                yield data
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(StoreError):
                    await aclose()

    @staticmethod
    def _changed(src: ObjectInfo, got: int) -> CopyError:
        return CopyError(Side.SOURCE, StoreError(
            ErrorKind.CORRUPT,
            f"source changed while copying: expected {src.size} bytes, read {got}",
            code="source_changed"))

    async def _single_stream(self, spec: TaskSpec, key: str, src: ObjectInfo, source: ObjectStore,
                             destination: ObjectStore, options: PutOptions,
                             bandwidth: Bandwidth | None = None) -> _Written:
        held = await self.memory.acquire(src.size)
        try:
            return await self._single_stream_held(spec, key, src, source, destination, options, bandwidth)
        finally:
            self.memory.release(held)

    async def _single_stream_held(self, spec: TaskSpec, key: str, src: ObjectInfo, source: ObjectStore,
                                  destination: ObjectStore, options: PutOptions,
                                  bandwidth: Bandwidth | None) -> _Written:
        chunks: list[bytes] = []
        got = 0
        chunk = min(self.limits.read_chunk, max(1, src.size))
        reader = self._read(source, spec.src_bucket, key, chunk, bandwidth)
        try:
            async for data in reader:
                got += len(data)
                if got > src.size:
                    raise self._changed(src, got)
                chunks.append(data)
        finally:
            await reader.aclose()
        if got != src.size:
            raise self._changed(src, got)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        del chunks
        # A large body is hashed on a thread (hashlib lets go of the GIL): the loop goes on.
        if len(body) > OFFLOAD_HASH_BYTES:
            digest, crc = await asyncio.to_thread(_digests, body)
        else:
            digest, crc = _digests(body)
        options = PutOptions(content_type=options.content_type, metadata=options.metadata,
                             storage_class=options.storage_class,
                             content_md5=base64.b64encode(digest).decode("ascii"))
        info = await _on(Side.DESTINATION, destination.put(spec.dst_bucket, key, body, options))
        return _Written(info, crc, len(body), "streamed", md5=digest.hex())

    async def _multipart_stream(self, spec: TaskSpec, key: str, src: ObjectInfo, source: ObjectStore,
                                destination: ObjectStore, options: PutOptions,
                                uploads: UploadTracker | None, bandwidth: Bandwidth | None = None) -> _Written:
        """Each part is its own ranged read of the source, ``part_concurrency`` of them in flight
        (and within the process's memory budget), each uploaded as soon as it is read. The
        parts' CRCs are combined in order; the source is looked at once more before the upload
        is completed, so that parts read from two versions of a changing object never become
        one object."""
        part_size = self._part_size(src.size, destination)
        bucket = spec.dst_bucket
        ranges = [(start, min(start + part_size, src.size)) for start in range(0, src.size, part_size)] or [(0, 0)]
        etags: dict[int, str] = {}
        crcs: dict[int, int] = {}
        permits = asyncio.Semaphore(self.limits.part_concurrency)

        async def move(upload_id: str, number: int, start: int, end: int, held: int) -> None:
            try:
                chunks: list[bytes] = []
                got = 0
                async for data in self._read(source, spec.src_bucket, key, max(1, end - start), bandwidth,
                                             start=start, end=end):
                    got += len(data)
                    if got > end - start:
                        raise self._changed(src, start + got)
                    chunks.append(data)
                if got != end - start:
                    raise self._changed(src, start + got)
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                del chunks
                crcs[number] = await asyncio.to_thread(crc64ecma, body) if len(body) > OFFLOAD_HASH_BYTES \
                    else crc64ecma(body)
                etags[number] = await _on(Side.DESTINATION, destination.upload_part(
                    bucket, key, upload_id, number, body))
            finally:
                permits.release()
                self.memory.release(held)

        async with self._upload(destination, bucket, key, options, uploads) as upload_id:
            try:
                async with asyncio.TaskGroup() as group:
                    for number, (start, end) in enumerate(ranges, start=1):
                        await permits.acquire()
                        try:
                            held = await self.memory.acquire(end - start)
                        except BaseException:
                            permits.release()
                            raise
                        group.create_task(move(upload_id, number, start, end, held))
            except BaseExceptionGroup as group_error:
                raise _unwrap(group_error) from None
            now = await _on(Side.SOURCE, source.head(spec.src_bucket, key))
            if (now.size, now.etag, int(now.last_modified)) != (src.size, src.etag, int(src.last_modified)):
                raise CopyError(Side.SOURCE, StoreError(
                    ErrorKind.CORRUPT, "source changed while copying (a newer version was written)",
                    code="source_changed"))
            crc = crcs[1]
            for number in range(2, len(ranges) + 1):
                start, end = ranges[number - 1]
                crc = crc64_combine(crc, crcs[number], end - start)
            parts = [(n, etags[n]) for n in range(1, len(ranges) + 1)]
            info = await _on(Side.DESTINATION, destination.complete_multipart(bucket, key, upload_id, parts))
        return _Written(info, crc, src.size,
                        f"streamed in {len(ranges)} parts of up to {part_size} bytes, read as parallel ranges")

    async def _multipart_server_copy(self, spec: TaskSpec, key: str, src: ObjectInfo,
                                     destination: ObjectStore, options: PutOptions,
                                     uploads: UploadTracker | None) -> ObjectInfo:
        part_size = self._part_size(src.size, destination)
        bucket = spec.dst_bucket
        etags: dict[int, str] = {}
        permits = asyncio.Semaphore(self.limits.part_concurrency)
        ranges = [(start, min(start + part_size, src.size)) for start in range(0, src.size, part_size)]

        async def copy_part(upload_id: str, number: int, start: int, end: int) -> None:
            async with permits:
                etags[number] = await _on(Side.SOURCE, destination.upload_part_copy(
                    bucket, key, upload_id, number, spec.src_bucket, key, start, end))

        async with self._upload(destination, bucket, key, options, uploads) as upload_id:
            try:
                async with asyncio.TaskGroup() as group:
                    for number, (start, end) in enumerate(ranges, start=1):
                        group.create_task(copy_part(upload_id, number, start, end))
            except BaseExceptionGroup as group_error:
                raise _unwrap(group_error) from None
            parts = [(n, etags[n]) for n in range(1, len(ranges) + 1)]
            info = await _on(Side.DESTINATION, destination.complete_multipart(bucket, key, upload_id, parts))
        return info

    @contextlib.asynccontextmanager
    async def _upload(self, destination: ObjectStore, bucket: str, key: str, options: PutOptions,
                      uploads: UploadTracker | None) -> AsyncIterator[str]:
        """A multipart upload for the body to fill and complete. Its abort is registered as soon
        as it exists: if the body (or recording the upload) fails or is cancelled, the upload is
        aborted; either way its record is dropped once it is no longer open."""
        upload_id = await _on(Side.DESTINATION, destination.create_multipart(bucket, key, options))
        try:
            if uploads is not None:
                await uploads.opened(bucket, upload_id)
            yield upload_id
        except BaseException:
            await _abort(destination, bucket, key, upload_id, uploads)
            raise
        if uploads is not None:
            await _closed(uploads, upload_id)

    async def _verify(self, spec: TaskSpec, key: str, src: ObjectInfo, destination: ObjectStore,
                      written: _Written) -> str:
        """Read the destination back and check it; returns how it was verified (for the outcome
        message). A failed check removes the copy when it is still ours and raises CORRUPT.

        The destination is read back by a HEAD, unless the write's own answer already is one
        (``from_head``: a store that HEADs the object after a server-side copy or a multipart
        completion): a second HEAD would read the same stored object again."""
        after = self._answered(spec, src, destination, written)
        if after is None:
            after = await self._head_destination(destination, spec.dst_bucket, key)
        facts = _facts(after) if after is not None else None
        skew = self.limits.clock_skew_seconds
        result = verify(spec.consistency_check, _facts(src), facts, written.crc64, written.size,
                        clock_skew_seconds=skew)
        note = result.note
        if not result.ok and result.reason == "unverifiable":
            # Nothing to compare CRC64 with (a server-side copy between stores that expose none):
            # check what can be checked and say so in the outcome rather than pass silently.
            fallback = verify(ConsistencyCheck.SIZE_LAST_MODIFIED, _facts(src), facts,
                              clock_skew_seconds=skew)
            note = f"unverifiable by CRC64 ({result.note}); compared size and last-modified"
            result = fallback
        if result.ok:
            text = f"verified by {result.method.value}"
            if spec.consistency_check is ConsistencyCheck.TRANSMISSION:
                text = f"transmission check; {text}"
            return f"{text} ({note})" if note else text
        detail = f"{result.reason}" + (f": {note}" if note else "")
        if after is not None and self._ours(written.info, after):
            await _on(Side.DESTINATION, destination.delete(spec.dst_bucket, key))
            detail += "; the bad copy was deleted"
        else:
            detail += "; the destination object was left alone (not written by this copy)"
        raise CopyError(Side.DESTINATION, StoreError(
            ErrorKind.CORRUPT, f"verification failed: {detail}", code="verify_failed"))

    @staticmethod
    def _answered(spec: TaskSpec, src: ObjectInfo, destination: ObjectStore, written: _Written) -> ObjectInfo | None:
        """The destination object as the write's own answer proves it to be, or ``None`` when
        only a read-back can tell.

        An answer read back by the store (``from_head``) is the object. Otherwise the answer's
        ETag is the MD5 of what the server stored (single-part writes): equal to the MD5 of the
        bytes streamed through omsync, or to the source's single-part ETag for a server-side
        copy, it proves the content, hence the size. A CRC-64 check against a destination that
        exposes CRC-64 still reads the object back."""
        info = written.info
        if info.from_head:
            return info
        if spec.consistency_check is ConsistencyCheck.CRC64 and destination.capabilities.crc64ecma:
            return None
        etag = (info.etag or "").lower()
        if not _MD5_HEX.fullmatch(etag):
            return None
        proven = (written.md5 is not None and etag == written.md5) or (
            written.md5 is None and src.etag is not None and etag == src.etag.lower())
        if not proven:
            return None
        return dataclasses.replace(info, size=src.size if written.size is None else written.size)

    @staticmethod
    def _ours(written: ObjectInfo, current: ObjectInfo) -> bool:
        """Whether the object now at the destination is the one this copy wrote: ETags decide
        when both are known; otherwise sizes and timestamps must match the write's answer."""
        if written.etag and current.etag:
            return written.etag == current.etag
        return written.size == current.size and int(current.last_modified) >= int(written.last_modified) - 1


async def _closed(uploads: UploadTracker, upload_id: str) -> None:
    try:
        await uploads.closed(upload_id)
    except Exception:
        # A stale record only costs a harmless abort of a finished upload later.
        log.warning("could not drop the record of multipart upload %s", upload_id, exc_info=True)


async def _abort(store: ObjectStore, bucket: str, key: str, upload_id: str,
                 uploads: UploadTracker | None) -> None:
    """Abort a multipart upload even when the copy is being cancelled, then drop its record. A
    failing abort is logged (the original error matters more) and its record kept, so the
    key's next copy tries again."""

    async def run() -> None:
        try:
            await store.abort_multipart(bucket, key, upload_id)
        except StoreError as exc:
            log.warning("could not abort multipart upload of %r in bucket %r: %s", key, bucket, exc.message)
            return
        if uploads is not None:
            await _closed(uploads, upload_id)

    task = asyncio.ensure_future(run())
    _pending_aborts.add(task)
    task.add_done_callback(_pending_aborts.discard)
    # Shielded: a second cancellation leaves the abort running on its own.
    await asyncio.shield(task)
