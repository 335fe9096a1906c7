"""Fairness across tasks and per-task limits, with the real engine over a SQLite ledger and
in-memory stores whose writes take time (so copies overlap and can be counted)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omsync.composition import build_engine
from omsync.config import Settings
from omsync.domain.model import TaskLimits
from omsync.engine.copier import Copier
from omsync.engine.throttle import TaskThrottle, TokenBucket
from omsync.engine.worker import Engine
from omsync.services import Services
from omsync.stores.base import ObjectInfo, PutOptions
from omsync.stores.memory import MemoryStore
from tests.engine.helpers import KIB, SMALL_CAPS, SMALL_LIMITS, FixedStores, eventually, payload
from tests.engine.test_worker import CREDS, PROJECT, task_fields


class SlowPuts(MemoryStore):
    """A store whose single-part PUTs take ``put_seconds``; counts PUTs in progress per bucket
    (each task writes to its own bucket) and their peak."""

    def __init__(self, put_seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.put_seconds = put_seconds
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        self.active[bucket] += 1
        self.peak[bucket] = max(self.peak[bucket], self.active[bucket])
        try:
            await asyncio.sleep(self.put_seconds)
            return await super().put(bucket, key, data, options)
        finally:
            self.active[bucket] -= 1


class Rig:
    def __init__(self, services: Services, src: MemoryStore, dst: SlowPuts) -> None:
        self.services = services
        self.src = src
        self.dst = dst
        self.engines: list[Engine] = []

    def engine(self, stores: Any = None, **settings: Any) -> Engine:
        merged = self.services.settings.model_copy(update=settings)
        engine = build_engine(merged, self.services, stores or FixedStores(self.src, self.dst),
                              copier=Copier(SMALL_LIMITS), object_lists=False)
        self.engines.append(engine)
        return engine

    async def task(self, name: str, keys: int, size: int = 10, *, store: MemoryStore | None = None,
                   limits: TaskLimits | None = None) -> tuple[str, list[str]]:
        """A task copying ``keys`` new objects from bucket ``src-<name>`` to ``dst-<name>``."""
        source = store or self.src
        source.create_bucket(f"src-{name}")
        (store or self.dst).create_bucket(f"dst-{name}")
        names = [f"{name}/{i:04d}" for i in range(keys)]
        for i, key in enumerate(names):
            await source.put(f"src-{name}", key, payload(size, seed=i), PutOptions())
        task_id = await self.services.tasks.create(
            PROJECT, task_fields(src_bucket=f"src-{name}", dst_bucket=f"dst-{name}"), CREDS)
        if limits is not None:
            await self.services.tasks.set_limits(PROJECT, task_id, limits)
        return task_id, names

    async def pending(self, task_id: str) -> int:
        return await self.services.ledger.pending_occurrences(task_id)

    async def settled(self, task_id: str, timeout: float) -> float:
        """Wait until every occurrence of the task has an outcome; returns the monotonic time."""
        async def done() -> bool:
            return await self.pending(task_id) == 0

        await eventually(done, timeout, f"task {task_id} to settle")
        totals = await self.services.ledger.totals(task_id)
        assert totals["failure"] == 0, totals
        return time.monotonic()


@pytest.fixture()
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = Settings(
        data_dir=tmp_path, workers=4, lease_seconds=10.0, poll_interval_seconds=0.05, max_attempts=2,
        retry_base_seconds=0.01, retry_max_seconds=0.05, object_list_interval_seconds=3600,
    )
    services = await Services.open(settings)
    made = Rig(services, MemoryStore(capabilities=SMALL_CAPS), SlowPuts(capabilities=SMALL_CAPS))
    try:
        yield made
    finally:
        for engine in made.engines:
            await engine.stop(1.0)
        await services.close()


async def test_fresh_events_finish_long_before_another_tasks_backlog(rig: Rig) -> None:
    rig.dst.put_seconds = 0.02
    backlog, old_keys = await rig.task("a", 300)
    fresh, new_keys = await rig.task("b", 10)
    await rig.services.ledger.accept(backlog, old_keys)
    engine = rig.engine()
    await engine.start()
    engine.notify()

    async def busy() -> bool:
        return await rig.pending(backlog) <= 290

    await eventually(busy, 10, "the backlog to be worked on")
    started = time.monotonic()
    await rig.services.ledger.accept(fresh, new_keys)
    engine.notify()
    finished = await rig.settled(fresh, 10)
    left = await rig.pending(backlog)
    # Served beside the backlog, not after it: most of the backlog is still waiting.
    assert left >= 200, left
    assert finished - started < 2.0
    assert sorted(rig.dst.keys("dst-b")) == new_keys


async def test_max_concurrency_bounds_a_tasks_copies_and_leaves_slots_to_others(rig: Rig) -> None:
    rig.dst.put_seconds = 0.15
    capped, capped_keys = await rig.task("a", 12, limits=TaskLimits(max_concurrency=2))
    free, free_keys = await rig.task("b", 12)
    await rig.services.ledger.accept(capped, capped_keys)
    await rig.services.ledger.accept(free, free_keys)
    engine = rig.engine(workers=6)
    await engine.start()
    engine.notify()
    await rig.settled(capped, 15)
    await rig.settled(free, 15)
    assert rig.dst.peak["dst-a"] == 2
    assert rig.dst.peak["dst-b"] >= 3  # the slots the capped task may not use went to the other


async def test_a_capped_task_refills_its_slots_at_once(rig: Rig) -> None:
    """A finished copy of a limited task wakes the claimer: with a slow poll, waiting for the
    next poll after every copy would take 20 s here."""
    capped, keys = await rig.task("a", 40, limits=TaskLimits(max_concurrency=2))
    await rig.services.ledger.accept(capped, keys)
    engine = rig.engine(poll_interval_seconds=1.0)
    await engine.start()
    started = time.monotonic()
    engine.notify()
    assert await rig.settled(capped, 15) - started < 4.0


async def test_objects_per_second_holds_without_holding_slots(rig: Rig) -> None:
    limited, limited_keys = await rig.task("a", 20, limits=TaskLimits(max_objects_per_second=10))
    free, free_keys = await rig.task("b", 20)
    await rig.services.ledger.accept(limited, limited_keys)
    engine = rig.engine()
    await engine.start()
    started = time.monotonic()
    engine.notify()

    async def under_way() -> bool:
        return await rig.pending(limited) <= 18

    await eventually(under_way, 5, "the limited task to start")
    # Keys waiting for the rate limit do not fill the copy slots: another task runs meanwhile.
    await rig.services.ledger.accept(free, free_keys)
    engine.notify()
    free_done = await rig.settled(free, 10)
    limited_done = await rig.settled(limited, 10)
    assert limited_done - started >= 1.5  # 20 keys at 10/s, a burst of one: about 1.9 s
    assert limited_done - started < 6.0
    assert free_done < limited_done - 0.5


async def test_bytes_per_second_paces_streamed_copies(rig: Rig) -> None:
    task_id, keys = await rig.task("a", 4, size=8 * KIB, limits=TaskLimits(max_bytes_per_second=36 * KIB))
    await rig.src.put("src-a", "big", payload(40 * KIB, seed=99), PutOptions())  # multipart (threshold 32 KiB)
    await rig.services.ledger.accept(task_id, [*keys, "big"])
    engine = rig.engine()
    await engine.start()
    started = time.monotonic()
    engine.notify()
    elapsed = await rig.settled(task_id, 15) - started
    assert 1.5 <= elapsed < 6.0, elapsed  # 72 KiB at 36 KiB/s: about 1.9 s
    assert rig.dst.object_bytes("dst-a", "big") == payload(40 * KIB, seed=99)
    assert rig.dst.count("create_multipart") == 1


async def test_bytes_per_second_counts_server_side_copies_before_they_start(rig: Rig) -> None:
    same = MemoryStore(capabilities=SMALL_CAPS)
    task_id, keys = await rig.task("a", 4, size=16 * KIB, store=same,
                                   limits=TaskLimits(max_bytes_per_second=32 * KIB))
    await rig.services.ledger.accept(task_id, keys)
    engine = rig.engine(FixedStores(same, same))
    await engine.start()
    started = time.monotonic()
    engine.notify()
    elapsed = await rig.settled(task_id, 15) - started
    assert same.count("server_copy") == 4
    assert 1.2 <= elapsed < 6.0, elapsed  # 64 KiB at 32 KiB/s, the first 16 KiB at once: about 1.5 s


async def test_limits_changed_while_running_take_effect(rig: Rig) -> None:
    slow, slow_keys = await rig.task("a", 30, limits=TaskLimits(max_objects_per_second=2))
    await rig.services.ledger.accept(slow, slow_keys)
    engine = rig.engine()
    await engine.start()
    engine.notify()
    await asyncio.sleep(0.6)
    assert await rig.pending(slow) >= 26  # 2/s: 30 keys would take 15 s
    lifted = time.monotonic()
    await rig.services.tasks.set_limits(PROJECT, slow, TaskLimits())
    assert await rig.settled(slow, 10) - lifted < 3.0

    # And the other way: a cap set on a running task bounds it once the copies in flight end.
    rig.dst.put_seconds = 0.1
    busy, busy_keys = await rig.task("b", 16)
    await rig.services.ledger.accept(busy, busy_keys)
    engine.notify()

    async def copying() -> bool:
        return rig.dst.active["dst-b"] >= 2

    await eventually(copying, 5, "copies of the running task")
    await rig.services.tasks.set_limits(PROJECT, busy, TaskLimits(max_concurrency=1))
    await asyncio.sleep(0.4)  # the copies started before the change end
    rig.dst.peak["dst-b"] = rig.dst.active["dst-b"]
    assert await rig.pending(busy) >= 4
    await rig.settled(busy, 15)
    assert rig.dst.peak["dst-b"] == 1


async def test_token_bucket_rates_bursts_and_debt() -> None:
    now = [0.0]
    bucket = TokenBucket(10.0, clock=lambda: now[0])
    assert bucket.capacity == 1.0 and bucket.available() == 1.0  # starts full, a burst of one
    await bucket.take(1)
    assert bucket.available() == 0.0
    now[0] += 0.5
    assert bucket.available() == 1.0  # never more than the burst
    bytes_bucket = TokenBucket(1000.0, clock=lambda: now[0])
    await bytes_bucket.take(5000)  # larger than the bucket: passes when full, leaves a debt
    assert bytes_bucket.available() == -4900.0
    bytes_bucket.set_rate(None)
    await asyncio.wait_for(bytes_bucket.take(10**9), 1)  # unlimited: nothing waits
    with pytest.raises(ValueError):
        bucket.set_rate(0)


def test_a_paced_stream_reads_at_most_a_second_of_its_budget_at_once() -> None:
    throttle = TaskThrottle(TaskLimits(max_bytes_per_second=64 * KIB))
    assert throttle.chunk_size(1024 * KIB) == 64 * KIB
    assert throttle.chunk_size(3 * KIB) == 3 * KIB
    assert TaskThrottle(TaskLimits(max_objects_per_second=1)).chunk_size(1024 * KIB) == 1024 * KIB
