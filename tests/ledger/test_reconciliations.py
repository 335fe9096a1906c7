"""Reconciliation runs in the ledger (SQLite and PostgreSQL): one RUNNING run per task, project
scope, one lease holder at a time, takeover after the lease runs out, checkpoints and ends only
by the holder, rows gone with their task."""

from __future__ import annotations

import asyncio

import pytest

from omsync.domain.errors import TaskNotFound
from omsync.ledger.queue import now_ms
from omsync.ledger.reconciliations import FAILED, SUCCESS, ReconciliationRunning, Reconciliations
from omsync.services import Services
from tests.ledger.test_ledger import PROJECT, new_task


async def test_runs_are_scoped_and_one_runs_at_a_time(services: Services) -> None:
    runs = Reconciliations(services.db)
    task = await new_task(services)
    with pytest.raises(TaskNotFound):
        await runs.create("another-project", task, "")
    with pytest.raises(TaskNotFound):
        await runs.create(PROJECT, "no-such-task", "")
    first = await runs.create(PROJECT, task, "a\x01b/")
    with pytest.raises(ReconciliationRunning):
        await runs.create(PROJECT, task, "")
    assert await runs.get("another-project", task, first) is None
    shown = await runs.get(PROJECT, task, first)
    assert shown is not None and (shown.status, shown.prefix, shown.position) == ("RUNNING", "a\x01b/", None)
    claimed = await runs.claim("w1", 60)
    assert claimed is not None and claimed.id == first
    assert await runs.finish(first, "w1", FAILED, "bucket gone")
    second = await runs.create(PROJECT, task, "")
    assert [run.id for run in await runs.recent(PROJECT, task)] == [second, first]
    assert (await runs.latest([task]))[task].id == second
    await services.tasks.stop(PROJECT, task)
    await services.tasks.delete(PROJECT, task)
    assert await runs.recent(PROJECT, task) == []


async def test_one_holder_and_takeover_after_the_lease(services: Services) -> None:
    runs = Reconciliations(services.db)
    task = await new_task(services)
    run_id = await runs.create(PROJECT, task, "")
    held = await runs.claim("w1", 0.3)
    assert held is not None and held.takeovers == 0
    assert await runs.claim("w2", 60) is None  # leased by w1
    key = "k/\udcff\U0001f600"  # any key, even one that is not valid UTF-8 once encoded
    assert await runs.checkpoint(run_id, "w1", 0.3, key, {"source_listed": 5, "missing": 2, "enqueued": 2}, 1)
    await asyncio.sleep(0.4)  # w1 died: its lease runs out
    taken = await runs.claim("w2", 60)
    assert taken is not None and taken.takeovers == 1 and taken.position == key
    assert (taken.counters["source_listed"], taken.counters["missing"], taken.report_parts) == (5, 2, 1)
    # The old holder can neither move the checkpoint nor end the run any more.
    assert not await runs.checkpoint(run_id, "w1", 60, "z", {"source_listed": 99}, 2)
    assert not await runs.renew(run_id, "w1", 60)
    assert not await runs.finish(run_id, "w1", SUCCESS)
    assert await runs.checkpoint(run_id, "w2", 60, "z", {"source_listed": 1}, 2)
    assert await runs.finish(run_id, "w2", SUCCESS)
    done = await runs.get(PROJECT, task, run_id)
    assert done is not None and done.status == SUCCESS and done.counters["source_listed"] == 6
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert await runs.claim("w3", 60) is None  # ended runs are not claimed


async def test_a_released_run_is_continued_at_once(services: Services) -> None:
    runs = Reconciliations(services.db)
    task = await new_task(services)
    run_id = await runs.create(PROJECT, task, "")
    assert await runs.claim("w1", 60) is not None
    await runs.release(run_id, "w1")
    again = await runs.claim("w2", 60)
    assert again is not None and again.id == run_id


async def test_schedules_start_one_run_when_due(services: Services) -> None:
    runs = Reconciliations(services.db)
    task = await new_task(services)
    with pytest.raises(TaskNotFound):
        await runs.set_schedule("another-project", task, 3600, "")
    future = await runs.set_schedule(PROJECT, task, 3600, "p/", next_at=now_ms() + 60_000)
    assert await runs.start_due() == []  # not due yet
    assert await runs.schedule("another-project", task) is None
    await runs.set_schedule(PROJECT, task, 3600, "p/", next_at=now_ms() - 10)  # replaces it
    # Two processes looking at once: one run.
    started = await asyncio.gather(runs.start_due(), runs.start_due())
    [run_id] = [*started[0], *started[1]]
    run = await runs.get(PROJECT, task, run_id)
    assert run is not None and (run.status, run.prefix) == ("RUNNING", "p/")
    schedule = await runs.schedule(PROJECT, task)
    assert schedule is not None and schedule.next_at > now_ms() + 3500_000 and schedule != future
    # Due again while the run is still RUNNING: skipped, the schedule moves on.
    await runs.set_schedule(PROJECT, task, 3600, "p/", next_at=now_ms() - 10)
    assert await runs.start_due() == []
    assert [r.id for r in await runs.recent(PROJECT, task)] == [run_id]
    assert await runs.clear_schedule(PROJECT, task)
    assert not await runs.clear_schedule(PROJECT, task)
    assert await runs.schedule(PROJECT, task) is None
