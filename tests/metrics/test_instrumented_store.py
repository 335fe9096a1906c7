"""``InstrumentedStore`` over the in-memory store: every request timed once, failures counted by
kind, results and errors passed through untouched, cancellations not observed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from omsync import metrics
from omsync.stores.base import ErrorKind, PutOptions, StoreError
from omsync.stores.instrumented import InstrumentedStore
from omsync.stores.memory import MemoryStore


def requests(backend: str, operation: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "omsync_store_request_duration_seconds_count", {"backend": backend, "operation": operation})
    return value or 0.0


def errors(backend: str, operation: str, kind: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "omsync_store_request_errors_total", {"backend": backend, "operation": operation, "kind": kind})
    return value or 0.0


@pytest.fixture()
def backend() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"  # fresh label values: the registry is process-wide


async def test_calls_pass_through_and_are_timed_once(backend: str) -> None:
    inner = MemoryStore(buckets=["b"])
    store = InstrumentedStore(inner, backend)
    assert store.capabilities is inner.capabilities
    data = bytes(range(256)) * 40
    written = await store.put("b", "dir/a b+c", data, PutOptions(content_type="x/y"))
    assert await store.head("b", "dir/a b+c") == written
    chunks = [chunk async for chunk in store.get("b", "dir/a b+c", chunk_size=1000)]
    assert len(chunks) > 3 and b"".join(chunks) == data
    assert [item.key for item in (await store.list("b")).keys] == ["dir/a b+c"]
    assert (requests(backend, "put"), requests(backend, "head"), requests(backend, "get"),
            requests(backend, "list")) == (1, 1, 1, 1)
    assert inner.count("get") == 1 and store.count("get") == 1  # other attributes come from the store
    assert errors(backend, "head", "not_found") == 0


async def test_failures_are_counted_by_kind_and_raised_unchanged(backend: str) -> None:
    inner = MemoryStore(buckets=["b"])
    store = InstrumentedStore(inner, backend)
    with pytest.raises(StoreError) as missing:
        await store.head("b", "absent")
    assert missing.value.kind is ErrorKind.NOT_FOUND
    slow_down = StoreError(ErrorKind.THROTTLED, "slow down", code="SlowDown")
    inner.fail("get", slow_down)
    with pytest.raises(StoreError) as throttled:
        async for _ in store.get("b", "absent"):
            pass
    assert throttled.value is slow_down
    inner.fail("put", RuntimeError("a defect"))
    with pytest.raises(RuntimeError):
        await store.put("b", "k", b"x", PutOptions())
    assert errors(backend, "head", "not_found") == 1
    assert errors(backend, "get", "throttled") == 1
    assert errors(backend, "put", "internal") == 1
    assert (requests(backend, "head"), requests(backend, "get"), requests(backend, "put")) == (1, 1, 1)


async def test_a_stream_closed_early_is_observed_once_and_closes_the_inner_stream(backend: str) -> None:
    inner = MemoryStore(buckets=["b"])
    store = InstrumentedStore(inner, backend)
    await inner.put("b", "big", b"z" * 10_000, PutOptions())
    stream = store.get("b", "big", chunk_size=100)
    assert await anext(stream) == b"z" * 100
    await stream.aclose()
    empty = [chunk async for chunk in store.get("b", "big", start=10_000)]
    assert empty == []
    assert requests(backend, "get") == 2


async def test_a_cancelled_call_is_not_observed(backend: str) -> None:
    store = InstrumentedStore(MemoryStore(buckets=["b"], delay=5.0), backend)
    call = asyncio.create_task(store.head("b", "k"))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert requests(backend, "head") == 0
    assert errors(backend, "head", "internal") == 0
