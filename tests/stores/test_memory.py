"""MemoryStore test hooks: injected faults, delays, call records, narrowed capabilities."""

from __future__ import annotations

import dataclasses
import time

import pytest

from omsync.stores import MEMORY_CAPABILITIES, ErrorKind, MemoryStore, PutOptions, StoreError


async def test_fault_fires_the_given_number_of_times_for_matching_calls() -> None:
    store = MemoryStore(buckets=["b"])
    throttled = StoreError(ErrorKind.THROTTLED, "slow down", retry_after=2)
    store.fail("put", throttled, key="hot", times=2)
    await store.put("b", "cold", b"x", PutOptions())  # other key: unaffected
    for _ in range(2):
        with pytest.raises(StoreError) as error:
            await store.put("b", "hot", b"x", PutOptions())
        assert error.value is throttled
    await store.put("b", "hot", b"x", PutOptions())
    assert store.count("put") == 4
    assert store.keys("b") == ["cold", "hot"]


async def test_permanent_fault_and_any_operation() -> None:
    store = MemoryStore(buckets=["b"])
    store.fail("*", StoreError(ErrorKind.TRANSIENT, "down"), bucket="b", times=None)
    for _ in range(3):
        with pytest.raises(StoreError):
            await store.head("b", "k")
    with pytest.raises(StoreError):
        await store.list("b")
    store.faults.clear()
    assert (await store.list("b")).keys == []


async def test_delay_slows_every_call() -> None:
    store = MemoryStore(buckets=["b"], delay=0.05)
    started = time.monotonic()
    await store.put("b", "k", b"x", PutOptions())
    await store.head("b", "k")
    assert time.monotonic() - started >= 0.1


async def test_narrowed_capabilities_are_enforced() -> None:
    caps = dataclasses.replace(MEMORY_CAPABILITIES, server_side_copy=False, max_single_put=10,
                               max_key_bytes=8, min_part_size=4)
    store = MemoryStore(capabilities=caps, buckets=["b"])
    with pytest.raises(StoreError) as too_big:
        await store.put("b", "k", b"x" * 11, PutOptions())
    with pytest.raises(StoreError) as too_long:
        await store.put("b", "k" * 9, b"x", PutOptions())
    with pytest.raises(StoreError) as no_copy:
        await store.server_copy("b", "k", "b", "k2", PutOptions())
    for error in (too_big.value, too_long.value, no_copy.value):
        assert error.kind is ErrorKind.UNSUPPORTED
    upload = await store.create_multipart("b", "m", PutOptions())
    first = await store.upload_part("b", "m", upload, 1, b"abc")
    last = await store.upload_part("b", "m", upload, 2, b"z")
    with pytest.raises(StoreError) as small:
        await store.complete_multipart("b", "m", upload, [(1, first), (2, last)])
    assert small.value.code == "EntityTooSmall"


async def test_content_md5_is_verified() -> None:
    store = MemoryStore(buckets=["b"])
    with pytest.raises(StoreError) as error:
        await store.put("b", "k", b"data", PutOptions(content_md5="AAAAAAAAAAAAAAAAAAAAAA=="))
    assert (error.value.kind, error.value.retryable) == (ErrorKind.CORRUPT, True)
