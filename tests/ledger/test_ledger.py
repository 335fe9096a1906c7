"""The ledger tested directly on real databases (SQLite and PostgreSQL, see conftest.py): accept,
claim, finish, accounting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from omsync.config import Settings
from omsync.domain.model import Outcome, OutcomeKind
from omsync.ledger import queue as queue_module
from omsync.ledger.queue import BacklogFull, TaskNotFound
from omsync.ledger.tables import ledger as ledger_table
from omsync.services import Services

PROJECT = "p1"
FIELDS = {
    "src_cloud_type": "S3", "src_region": "r", "src_bucket": "a", "dst_cloud_type": "S3", "dst_region": "r",
    "dst_bucket": "b", "description": None, "enable_metadata_migration": False, "enable_restore": False,
    "enable_kms": False, "dst_storage_policy": None, "app_id": None, "source_cdn": None, "options": "{}",
    "consistency_check": "size_last_modified", "object_overwrite_mode": "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE",
}
CREDS = {"src_ak": "a", "src_sk": "b", "dst_ak": "c", "dst_sk": "d"}


async def new_task(services: Services) -> str:
    return await services.tasks.create(PROJECT, FIELDS, CREDS)


async def invariant(services: Services, task_id: str) -> dict[str, int]:
    totals = await services.ledger.totals(task_id)
    pending = await services.ledger.pending_occurrences(task_id)
    assert totals["request"] == totals["success"] + totals["failure"] + totals["skip"] + pending, (totals, pending)
    return {**totals, "pending": pending}


async def test_thousand_events_for_one_key_leave_one_row(services: Services) -> None:
    task_id = await new_task(services)
    for _ in range(100):
        await services.ledger.accept(task_id, ["same/key"] * 10)
    async with services.db.read() as conn:
        rows = (await conn.execute(select(ledger_table).where(ledger_table.c.task_id == task_id))).mappings().all()
    assert len(rows) == 1
    assert rows[0]["generation"] == 1000
    assert rows[0]["state"] == "pending"
    assert rows[0]["key"] == b"same/key"
    counts = await invariant(services, task_id)
    assert counts["request"] == 1000
    assert counts["pending"] == 1000


async def test_one_copy_absorbs_earlier_occurrences(services: Services) -> None:
    task_id = await new_task(services)
    await services.ledger.accept(task_id, ["k"] * 5)
    [claim] = await services.ledger.claim("w1", 10, 30)
    assert claim.generation == 5
    result = await services.ledger.finish("w1", claim, Outcome(OutcomeKind.SUCCESS, size=7))
    assert result.final and result.coalesced == 4
    counts = await invariant(services, task_id)
    assert (counts["success"], counts["skip"], counts["size"], counts["pending"]) == (1, 4, 7, 0)


async def test_generation_moving_during_copy_keeps_key_pending(services: Services) -> None:
    task_id = await new_task(services)
    await services.ledger.accept(task_id, ["k"])
    [claim] = await services.ledger.claim("w1", 10, 30)
    await services.ledger.accept(task_id, ["k", "k"])  # new data while copying
    assert await services.ledger.claim("w2", 10, 30) == []  # still leased by w1
    result = await services.ledger.finish("w1", claim, Outcome(OutcomeKind.SUCCESS, size=1))
    assert result.recorded and not result.final
    await invariant(services, task_id)
    [again] = await services.ledger.claim("w2", 10, 30)
    assert again.generation == 3
    await services.ledger.finish("w2", again, Outcome(OutcomeKind.SUCCESS, size=1))
    counts = await invariant(services, task_id)
    assert (counts["success"], counts["skip"], counts["pending"], counts["size"]) == (1, 2, 0, 1)


async def test_lost_lease_records_nothing(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = await new_task(services)
    await services.ledger.accept(task_id, ["k"])
    [stale] = await services.ledger.claim("dead-worker", 10, 0.001)
    await asyncio.sleep(0.01)
    [taken] = await services.ledger.claim("w2", 10, 30)  # expired lease is taken over
    assert taken.row_id == stale.row_id
    assert not (await services.ledger.finish("dead-worker", stale, Outcome(OutcomeKind.FAILURE, "x"))).recorded
    assert not await services.ledger.retry_later("dead-worker", stale, 1, "x", "y")
    assert (await services.ledger.finish("w2", taken, Outcome(OutcomeKind.SUCCESS, size=3))).recorded
    counts = await invariant(services, task_id)
    assert (counts["success"], counts["failure"]) == (1, 0)


async def test_retry_later_then_failure_then_redrive(services: Services) -> None:
    task_id = await new_task(services)
    await services.ledger.accept(task_id, ["k"])
    [claim] = await services.ledger.claim("w", 10, 30)
    assert await services.ledger.retry_later("w", claim, 60, "throttled", "slow down")
    assert await services.ledger.claim("w", 10, 30) == []  # not due for a minute
    async with services.db.write() as conn:
        await conn.execute(ledger_table.update().values(due_at=0))
    [claim] = await services.ledger.claim("w", 10, 30)
    assert claim.attempts == 1
    await services.ledger.finish("w", claim, Outcome(OutcomeKind.FAILURE, "retries_exhausted", "slow down"))
    failed = await services.ledger.failed_keys(task_id)
    assert [(f["key"], f["reason"]) for f in failed] == [("k", "retries_exhausted")]
    assert await services.ledger.retry_failed(task_id) == 1
    counts = await invariant(services, task_id)
    assert (counts["request"], counts["failure"], counts["pending"]) == (2, 1, 1)
    assert await services.ledger.failed_keys(task_id) == []


async def test_stopped_tasks_are_not_claimed(services: Services) -> None:
    task_id = await new_task(services)
    await services.tasks.stop(PROJECT, task_id)
    await services.ledger.accept(task_id, ["held"])
    assert await services.ledger.claim("w", 10, 30) == []
    await services.tasks.start(PROJECT, task_id, CREDS)
    assert [c.key for c in await services.ledger.claim("w", 10, 30)] == ["held"]


async def test_backlog_bound_refuses_with_retry_after(services: Services) -> None:
    task_id = await new_task(services)
    await services.ledger.accept(task_id, [f"k{i}" for i in range(50)])
    with pytest.raises(BacklogFull) as info:
        await services.ledger.accept(task_id, ["one-more"])
    assert info.value.retry_after > 0
    counts = await invariant(services, task_id)
    assert counts["request"] == 50  # a refused event records nothing
    [claim] = await services.ledger.claim("w", 1, 30)
    await services.ledger.finish("w", claim, Outcome(OutcomeKind.SUCCESS))
    await services.ledger.accept(task_id, ["one-more"])  # room again


async def test_unknown_task_and_other_project(services: Services) -> None:
    task_id = await new_task(services)
    with pytest.raises(TaskNotFound):
        await services.ledger.accept("nope", ["k"])
    with pytest.raises(TaskNotFound):
        await services.ledger.accept(task_id, ["k"], project_id="someone-else")


async def test_concurrent_posts_lose_nothing(tmp_path: Path, database_url: str) -> None:
    services = await Services.open(Settings(data_dir=tmp_path, database_url=database_url))
    try:
        task_id = await new_task(services)
        keys = [f"key-{i % 37}" for i in range(2000)]

        async def client(n: int) -> None:
            for start in range(n * 10, len(keys), 200):
                await services.ledger.accept(task_id, keys[start:start + 10])

        await asyncio.gather(*(client(n) for n in range(20)))
        async with services.db.read() as conn:
            rows = await conn.scalar(select(func.count()).select_from(ledger_table))
            generations = await conn.scalar(select(func.sum(ledger_table.c.generation)))
        assert rows == 37
        assert generations == 2000
        counts = await invariant(services, task_id)
        assert counts["request"] == 2000
    finally:
        await services.close()


async def test_counts_land_in_the_five_minute_bucket_of_their_time(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = await new_task(services)
    base = 1_700_150_400_000  # aligned to 5 minutes
    for offset, n in ((0, 2), (299_999, 1), (300_000, 4), (3_600_000 + 5, 3)):
        monkeypatch.setattr(queue_module, "now_ms", lambda offset=offset: base + offset)
        await services.ledger.accept(task_id, [f"k{offset}"] * n)
    buckets = await services.ledger.buckets(task_id, base, base + 7_200_000, "request")
    assert buckets == [(base, 3), (base + 300_000, 4), (base + 3_600_000, 3)]
    totals: Any = await services.ledger.totals(task_id, base, base + 300_000)
    assert totals["request"] == 3
