"""The notification tables and the delete loop on both real databases (SQLite, PostgreSQL):
ordering by sequencer, leases of deletes across concurrent claimers, the breaker, and the
delete loop's source check against in-memory stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from omsync.config import Settings
from omsync.domain.model import TaskSpec
from omsync.engine.deletes import DeletePropagator
from omsync.ledger.notifications import Change, DeleteSettings, NotificationLedger
from omsync.ledger.queue import TaskNotFound
from omsync.notifications.model import normalise_sequencer
from omsync.services import Services
from omsync.stores.base import PutOptions
from omsync.stores.memory import MemoryStore
from tests.ledger.test_ledger import CREDS, FIELDS, PROJECT

ON = DeleteSettings(enabled=True, grace_seconds=0, max_per_minute=100)


def seq(value: str) -> str:
    normalised = normalise_sequencer(value)
    assert normalised is not None
    return normalised


async def new_task(services: Services, src: str = "a", dst: str = "b") -> str:
    return await services.tasks.create(PROJECT, {**FIELDS, "src_bucket": src, "dst_bucket": dst}, CREDS)


async def test_sequencers_keep_the_highest_and_stale_deletes_are_not_scheduled(services: Services) -> None:
    notes = NotificationLedger(services.db)
    task = await new_task(services)
    await notes.record(PROJECT, task, [Change("k", "created", seq("0F"))], ON)
    assert await notes.sequencers(task, ["k", "other"]) == {"k": seq("0F")}
    # An older delete after a newer create: recorded as stale, nothing scheduled.
    assert await notes.record(PROJECT, task, [Change("k", "deleted", seq("0E"))], ON) == (0, 1, False)
    # An older create never lowers the sequencer kept.
    await notes.record(PROJECT, task, [Change("k", "created", seq("0A"))], ON)
    assert await notes.sequencers(task, ["k"]) == {"k": seq("0F")}
    assert await notes.record(PROJECT, task, [Change("k", "deleted", seq("10"))], ON) == (1, 0, False)
    assert (await notes.delete_state(PROJECT, task)).pending == 1
    with pytest.raises(TaskNotFound):
        await notes.record("another-project", task, [Change("k", "deleted", None)], ON)


async def test_concurrent_claimers_never_share_a_delete(services: Services) -> None:
    notes = NotificationLedger(services.db)
    task = await new_task(services)
    keys = [f"k{i}" for i in range(60)]
    await notes.record(PROJECT, task, [Change(k, "deleted", None) for k in keys], DeleteSettings(True, 0, 1000))
    claims = await asyncio.gather(*(notes.claim_deletes(f"owner-{i}", 7, 60_000) for i in range(12)))
    claimed = [item.key for batch in claims for item in batch]
    assert sorted(claimed) == sorted(keys)  # each delete exactly once
    # Leased: nothing more to claim until the leases run out.
    assert await notes.claim_deletes("late", 100, 60_000) == []
    # A stopped task's deletes wait for its start.
    stopped = await new_task(services)
    await notes.record(PROJECT, stopped, [Change("s", "deleted", None)], ON)
    await services.tasks.stop(PROJECT, stopped)
    assert await notes.claim_deletes("late", 100, 60_000) == []
    await services.tasks.start(PROJECT, stopped, CREDS)
    assert [item.key for item in await notes.claim_deletes("late", 100, 60_000)] == ["s"]
    # A finish by someone who does not hold the lease writes nothing.
    first = claims[0][0]
    assert await notes.finish_delete("intruder", first, "deleted", None) is False
    assert await notes.finish_delete("owner-0", first, "deleted", None) is True
    assert (await notes.delete_state(PROJECT, task)).deleted == 1


async def test_breaker_trips_above_the_limit_pauses_claims_and_resumes(services: Services) -> None:
    notes = NotificationLedger(services.db)
    task, other = await new_task(services), await new_task(services)
    limit = DeleteSettings(enabled=True, grace_seconds=0, max_per_minute=3)
    assert await notes.record(PROJECT, task, [Change(f"k{i}", "deleted", None) for i in range(3)], limit) == (3, 0, False)
    assert (await notes.delete_state(PROJECT, task)).tripped_at is None
    assert await notes.record(PROJECT, task, [Change("k3", "deleted", None)], limit) == (1, 0, True)
    await notes.record(PROJECT, other, [Change("x", "deleted", None)], limit)
    assert await notes.tripped_tasks() == {task: 4}
    assert [item.task_id for item in await notes.claim_deletes("w", 100, 60_000)] == [other]
    assert await notes.resume_deletes(PROJECT, task) == 0
    assert len(await notes.claim_deletes("w", 100, 60_000)) == 4
    # Trip again, then resume dropping what waited.
    await notes.record(PROJECT, task, [Change(f"n{i}", "deleted", None) for i in range(5)], limit)
    assert await notes.resume_deletes(PROJECT, task, discard=True) == 5
    state = await notes.delete_state(PROJECT, task)
    assert (state.pending, state.discarded, state.tripped_at) == (4, 5, None)  # the 4 leased remain


class Stores:
    """Both sides of every task in one in-memory store."""

    def __init__(self) -> None:
        self.store = MemoryStore(buckets=("a", "b"))

    async def source(self, spec: TaskSpec) -> MemoryStore:
        return self.store

    async def destination(self, spec: TaskSpec) -> MemoryStore:
        return self.store

    def server_side(self, spec: TaskSpec) -> bool:
        return True


@pytest.fixture()
def stores() -> Iterator[Stores]:
    yield Stores()


async def test_delete_loop_checks_the_source_then_deletes_and_lists(services: Services, stores: Stores,
                                                                    tmp_path: Path) -> None:
    store = stores.store
    task = await new_task(services)
    await NotificationLedger(services.db).set_delete_settings(PROJECT, task, ON)
    for key in ("kept", "gone a+b%c"):
        await store.put("b", key, b"x", PutOptions())
    await store.put("a", "kept", b"x", PutOptions())
    notes = NotificationLedger(services.db)
    await notes.record(PROJECT, task, [Change("kept", "deleted", None), Change("gone a+b%c", "deleted", None)], ON)
    loop = DeletePropagator(Settings(data_dir=tmp_path), services.db, services.tasks, stores, "w1")
    assert await loop.run_once() == 2
    assert [key async for key in _keys(store, "b") if not key.startswith("oms/")] == ["kept"]
    state = await notes.delete_state(PROJECT, task)
    assert (state.deleted, state.kept, state.pending) == (1, 1, 0)
    lists = [key async for key in _keys(store, "b") if key.startswith(f"oms/sync_task/{task}/deleted_object_lists/")]
    assert len(lists) == 1
    lines = sorted(b"".join([chunk async for chunk in store.get("b", lists[0])]).decode().splitlines())
    assert [line.split("\t")[0::2] for line in lines] == [["gone a+b%c", "deleted"], ["kept", "kept"]]


async def test_missing_source_bucket_never_deletes(services: Services, stores: Stores, tmp_path: Path) -> None:
    store = stores.store
    task = await new_task(services, src="no-such-bucket")
    await store.put("b", "k", b"x", PutOptions())
    notes = NotificationLedger(services.db)
    await notes.set_delete_settings(PROJECT, task, ON)
    await notes.record(PROJECT, task, [Change("k", "deleted", None)], ON)
    settings = Settings(data_dir=tmp_path, max_attempts=2, retry_base_seconds=0.01)
    loop = DeletePropagator(settings, services.db, services.tasks, stores, "w1")
    for _ in range(20):
        await loop.run_once()
        if (await notes.delete_state(PROJECT, task)).failed:
            break
        await asyncio.sleep(0.05)
    state = await notes.delete_state(PROJECT, task)
    assert (state.failed, state.deleted, state.pending) == (1, 0, 0)
    assert [key async for key in _keys(store, "b") if not key.startswith("oms/")] == ["k"]


async def test_deletes_of_a_task_that_turned_propagation_off_are_discarded(services: Services, stores: Stores,
                                                                          tmp_path: Path) -> None:
    task = await new_task(services)
    await stores.store.put("b", "k", b"x", PutOptions())
    notes = NotificationLedger(services.db)
    await notes.record(PROJECT, task, [Change("k", "deleted", None)], ON)
    await notes.set_delete_settings(PROJECT, task, DeleteSettings(enabled=False))
    await DeletePropagator(Settings(data_dir=tmp_path), services.db, services.tasks, stores, "w1").run_once()
    state = await notes.delete_state(PROJECT, task)
    assert (state.discarded, state.deleted, state.pending) == (1, 0, 0)
    assert [key async for key in _keys(stores.store, "b") if not key.startswith("oms/")] == ["k"]


async def _keys(store: MemoryStore, bucket: str) -> AsyncIterator[str]:
    page = await store.list(bucket)
    for item in page.keys:
        yield item.key
