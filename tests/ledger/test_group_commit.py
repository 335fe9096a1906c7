"""Group commit of accepts: concurrent callers share one write transaction, each keeps its own
checks and its own answer, and none is answered before the commit (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from omsync.ledger import queue as queue_module
from omsync.ledger.queue import BacklogFull, TaskNotFound
from omsync.services import Services
from tests.ledger.test_ledger import PROJECT, invariant, new_task


class Gate:
    """Holds every write transaction of ``services`` until opened; counts them."""

    def __init__(self, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = asyncio.Event()
        self.transactions = 0
        self.committed = 0
        original = services.db.run_write

        async def gated(fn: Callable[[Any], Any]) -> Any:
            self.transactions += 1
            await self.opened.wait()
            result = await original(fn)
            self.committed += 1
            return result

        monkeypatch.setattr(services.db, "run_write", gated)

    async def queued(self, transactions: int = 1) -> None:
        """Wait until ``transactions`` are held at the gate and the other callers have queued."""
        for _ in range(200):
            if self.transactions >= transactions:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)


async def test_concurrent_accepts_of_several_tasks_share_a_transaction_and_refusals_stay_their_own(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = await new_task(services), await new_task(services)
    gate = Gate(services, monkeypatch)
    ledger = services.ledger
    calls = [
        ledger.accept(first, ["a", "b"]),
        ledger.accept(second, ["a"], project_id=PROJECT),
        ledger.accept("no-such-task", ["x"]),
        ledger.accept(second, ["b", "b"], project_id="another-project"),  # not its task: 404
        ledger.accept(first, ["b", "c"], project_id=PROJECT),
        ledger.accept(second, ["c"]),
    ]
    waiting = [asyncio.ensure_future(c) for c in calls]
    await gate.queued()
    assert not any(w.done() for w in waiting)  # nobody is answered before the commit
    gate.opened.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "NoneType", "NoneType", "TaskNotFound", "TaskNotFound", "NoneType", "NoneType"]
    assert gate.committed == gate.transactions < len(calls)  # grouped: the first alone, the rest together
    one, two = await invariant(services, first), await invariant(services, second)
    assert (one["request"], one["pending"]) == (4, 4)
    assert (two["request"], two["pending"]) == (2, 2)
    claims = await ledger.claim("w", 100, 30)
    assert sorted((c.task_id == first, c.key, c.generation) for c in claims) == [
        (False, "a", 1), (False, "c", 1), (True, "a", 1), (True, "b", 2), (True, "c", 1)]


async def test_backlog_bound_applies_to_each_caller_in_arrival_order(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_pending_per_task is 50 here: in one group, callers are admitted as if one after the
    other, so the third sees the first two's keys pending."""
    task_id, other = await new_task(services), await new_task(services)
    await services.ledger.accept(task_id, ["warm"])
    gate = Gate(services, monkeypatch)
    held = asyncio.ensure_future(services.ledger.accept(other, ["held"]))  # holds the gate
    await gate.queued()
    waiting = [
        asyncio.ensure_future(services.ledger.accept(task_id, [f"one-{i}" for i in range(30)])),
        asyncio.ensure_future(services.ledger.accept(task_id, [f"two-{i}" for i in range(30)] + ["warm"])),
        asyncio.ensure_future(services.ledger.accept(task_id, ["three"])),
        asyncio.ensure_future(services.ledger.accept(other, ["fine"])),
    ]
    await asyncio.sleep(0.05)
    gate.opened.set()
    results = await asyncio.gather(held, *waiting, return_exceptions=True)
    assert results[:3] == [None, None, None]
    assert isinstance(results[3], BacklogFull) and results[3].pending == 61 and results[3].retry_after == 5
    assert results[4] is None
    assert gate.transactions == 2
    counts = await invariant(services, task_id)
    assert (counts["request"], counts["pending"]) == (62, 62)
    with pytest.raises(BacklogFull):
        await services.ledger.accept(task_id, ["four"])
    assert (await invariant(services, other))["request"] == 2


async def test_a_failing_group_is_retried_caller_by_caller(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error in a group's transaction does not fail everyone: each caller is then
    written alone, and only one whose own transaction fails gets the error."""
    task_id = await new_task(services)
    gate = Gate(services, monkeypatch)
    original = services.ledger._accept_tx

    def poisoned(conn: Any, batch: Any, at: int) -> Any:
        if any(b"poison" in item.occurrences for item in batch):
            raise RuntimeError("simulated database error")
        return original(conn, batch, at)

    monkeypatch.setattr(services.ledger, "_accept_tx", poisoned)
    held = asyncio.ensure_future(services.ledger.accept(task_id, ["first"]))
    await gate.queued()
    waiting = [asyncio.ensure_future(services.ledger.accept(task_id, keys))
               for keys in (["a"], ["poison"], ["b", "c"])]
    await asyncio.sleep(0.05)
    gate.opened.set()
    results = await asyncio.gather(held, *waiting, return_exceptions=True)
    assert results[0] is None and results[1] is None and results[3] is None
    assert isinstance(results[2], RuntimeError)
    counts = await invariant(services, task_id)
    assert (counts["request"], counts["pending"]) == (4, 4)


async def test_a_caller_that_gives_up_before_its_group_is_not_written(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = await new_task(services)
    gate = Gate(services, monkeypatch)
    held = asyncio.ensure_future(services.ledger.accept(task_id, ["first"]))
    await gate.queued()
    gone = asyncio.ensure_future(services.ledger.accept(task_id, ["gone"]))
    kept = asyncio.ensure_future(services.ledger.accept(task_id, ["kept"]))
    await asyncio.sleep(0.02)
    gone.cancel()
    gate.opened.set()
    await asyncio.gather(held, kept)
    with pytest.raises(asyncio.CancelledError):
        await gone
    claims = await services.ledger.claim("w", 10, 30)
    assert sorted(c.key for c in claims) == ["first", "kept"]
    assert (await invariant(services, task_id))["request"] == 2


async def test_unknown_task_alone_still_raises(services: Services) -> None:
    with pytest.raises(TaskNotFound):
        await services.ledger.accept("missing", ["k"])
    assert queue_module.INTAKE_MAX_KEYS >= 100
