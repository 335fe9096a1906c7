"""Shared pieces of the engine tests: task specs, test stores built on ``MemoryStore``, waiting."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from omsync.domain.model import (
    CloudType,
    ConsistencyCheck,
    Credentials,
    OverwriteMode,
    TaskSpec,
)
from omsync.engine.copier import CopyLimits
from omsync.stores.base import ObjectInfo, ObjectStore, PutOptions
from omsync.stores.memory import MEMORY_CAPABILITIES, MemoryStore

KIB = 1024
MIB = 1024 * 1024

# Small parts so multipart paths run on kilobytes; the memory store is told the same minimum.
SMALL_CAPS = dataclasses.replace(MEMORY_CAPABILITIES, min_part_size=4 * KIB)
SMALL_LIMITS = CopyLimits(multipart_threshold=32 * KIB, part_size=8 * KIB, part_concurrency=2,
                          read_chunk=3 * KIB)


def make_spec(**overrides: object) -> TaskSpec:
    fields: dict[str, object] = dict(
        task_id="t1",
        src_cloud_type=CloudType.S3,
        src_region="r",
        src_bucket="src",
        src=Credentials("src-ak", "src-sk"),
        dst_region="r",
        dst_bucket="dst",
        dst=Credentials("dst-ak", "dst-sk"),
        dst_cloud_type=CloudType.S3,
        overwrite_mode=OverwriteMode.SIZE_LAST_MODIFIED,
        consistency_check=ConsistencyCheck.SIZE_LAST_MODIFIED,
        enable_metadata_migration=False,
        dst_storage_policy=None,
    )
    fields.update(overrides)
    return TaskSpec(**fields)  # type: ignore[arg-type]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic non-repeating bytes (so a misplaced part changes the checksum)."""
    return random.Random(seed).randbytes(size)


def set_mtime(store: MemoryStore, bucket: str, key: str, when: float) -> None:
    """Pretend an object was last modified at ``when`` (epoch seconds)."""
    stored = store._buckets[bucket][key]
    stored.info = dataclasses.replace(stored.info, last_modified=when)


class NoCrcStore(MemoryStore):
    """A memory store that, like plain S3, exposes no CRC-64."""

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        info = await super().head(bucket, key)
        return dataclasses.replace(info, crc64ecma=None)


class TruncatingStore(MemoryStore):
    """Loses the last byte of every single-part PUT and ignores Content-MD5 (a broken
    destination that does not check digests)."""

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        return await super().put(bucket, key, data[:-1], PutOptions(
            content_type=options.content_type, metadata=options.metadata, storage_class=options.storage_class))


class BitFlipStore(MemoryStore):
    """Stores single-part PUTs with one byte changed but the same size."""

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        bad = bytes([data[0] ^ 0xFF]) + data[1:]
        return await super().put(bucket, key, bad, PutOptions(
            content_type=options.content_type, metadata=options.metadata, storage_class=options.storage_class))


class RacedStore(TruncatingStore):
    """A broken PUT after which another writer replaces the object at once."""

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        info = await super().put(bucket, key, data, options)
        await MemoryStore.put(self, bucket, key, b"another writer", PutOptions())
        return info


class MeteredSource(MemoryStore):
    """Counts the bytes its ``get`` has handed out, to measure how far a reader runs ahead."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.yielded = 0

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = MIB) -> AsyncIterator[bytes]:
        async for chunk in super().get(bucket, key, start=start, end=end, chunk_size=chunk_size):
            self.yielded += len(chunk)
            yield chunk


class FailingMidStream(MemoryStore):
    """A source whose GET breaks (TRANSIENT) when it reaches byte ``fail_after`` of the object
    (whatever range was asked for)."""

    def __init__(self, fail_after: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.fail_after = fail_after

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = MIB) -> AsyncIterator[bytes]:
        from omsync.stores.base import ErrorKind, StoreError

        sent = 0
        async for chunk in super().get(bucket, key, start=start, end=end, chunk_size=chunk_size):
            if start + sent + len(chunk) > self.fail_after:
                raise StoreError(ErrorKind.TRANSIENT, "connection reset by peer", code="ConnectionError")
            sent += len(chunk)
            yield chunk


class FixedStores:
    """A store provider returning the same two stores for every task."""

    def __init__(self, source: ObjectStore, destination: ObjectStore) -> None:
        self.src = source
        self.dst = destination

    async def source(self, spec: TaskSpec) -> ObjectStore:
        return self.src

    async def destination(self, spec: TaskSpec) -> ObjectStore:
        return self.dst

    def server_side(self, spec: TaskSpec) -> bool:
        return self.src is self.dst


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
