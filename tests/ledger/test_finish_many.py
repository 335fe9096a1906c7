"""One accounting path on real databases (SQLite and PostgreSQL): ``Ledger.finish`` is
``finish_many`` with a batch of one, so a batch recorded in one transaction must leave the same
results, rows and counters as the same items recorded one transaction each (items of one batch
see each other's effects: a row named twice, coalesced occurrences, counters per task)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from omsync.domain.model import Outcome, OutcomeKind
from omsync.ledger.queue import Claim, FinishResult, Ledger
from omsync.ledger.tables import ledger as ledger_table
from omsync.ledger.tables import outcome_log, sync_tasks
from omsync.services import Services
from tests.ledger.test_ledger import invariant, new_task

KEYS_A = ["ok", "bad", "skip", "moved", "dup", "dup", "dup", "lost"]
KEYS_B = ["ok", "moved", "lost"]
OUTCOMES = {
    "ok": Outcome(OutcomeKind.SUCCESS, reason="new", message="copied", size=11),
    "bad": Outcome(OutcomeKind.FAILURE, reason="access_denied", message="no"),
    "skip": Outcome(OutcomeKind.SKIP, reason="not_modified", message="same"),
    "moved": Outcome(OutcomeKind.SUCCESS, reason="new", size=5),
    "dup": Outcome(OutcomeKind.SUCCESS, reason="new", size=3),
    "lost": Outcome(OutcomeKind.SUCCESS, reason="new", size=1),
}


def _world(tasks: list[str], claims: list[Claim]) -> tuple[list[str], list[tuple[Claim, Outcome]]]:
    """The batch of one world (``tasks`` = its task A and task B): every claim of its tasks with
    its outcome, the first one repeated at the end (already recorded by then, so not again)."""
    mine = sorted((c for c in claims if c.task_id in tasks), key=lambda c: (tasks.index(c.task_id), c.key))
    items = [(c, OUTCOMES[c.key]) for c in mine]
    return tasks, [*items, items[0]]


async def _state(services: Services, task_ids: list[str]) -> list[Any]:
    async with services.db.read() as conn:
        rows = [
            [tuple(r) for r in await conn.execute(
                select(ledger_table.c.key, ledger_table.c.state, ledger_table.c.generation,
                       ledger_table.c.reported_generation, ledger_table.c.copied_generation,
                       ledger_table.c.outcome, ledger_table.c.reason, ledger_table.c.message,
                       ledger_table.c.size, ledger_table.c.attempts, ledger_table.c.lease_owner)
                .where(ledger_table.c.task_id == t)
                .order_by(ledger_table.c.key))]
            for t in task_ids
        ]
        logged = [
            tuple(r) for r in await conn.execute(
                select(outcome_log.c.task_id, outcome_log.c.key, outcome_log.c.outcome, outcome_log.c.reason,
                       outcome_log.c.message).where(outcome_log.c.task_id.in_(task_ids)))
        ]
        pending = [
            await conn.scalar(select(sync_tasks.c.pending_keys).where(sync_tasks.c.id == t)) for t in task_ids
        ]
    rank = {t: i for i, t in enumerate(task_ids)}
    counters = [await invariant(services, t) for t in task_ids]
    return [rows, sorted((rank[t], *rest) for t, *rest in logged), pending, counters]


async def test_batch_matches_sequential_finish(services: Services) -> None:
    ledger = services.ledger
    seq = [await new_task(services), await new_task(services)]
    bat = [await new_task(services), await new_task(services)]
    for a, b in (seq, bat):
        await ledger.accept(a, KEYS_A)
        await ledger.accept(b, KEYS_B)
    claims = await ledger.claim("w1", 100, 30)
    assert len(claims) == 2 * (len(set(KEYS_A)) + len(set(KEYS_B)))
    # Lost leases: handed back and taken by another worker before w1 reports.
    lost = [c for c in claims if c.key == "lost"]
    await ledger.release("w1", lost)
    assert len(await ledger.claim("w2", 100, 30)) == len(lost)
    # New data while copying: the generation moves.
    for task_id in (*seq, *bat):
        await ledger.accept(task_id, ["moved"])

    seq_tasks, seq_items = _world(seq, claims)
    bat_tasks, bat_items = _world(bat, claims)
    sequential = [await ledger.finish("w1", c, o) for c, o in seq_items]
    batched = await ledger.finish_many("w1", bat_items)
    assert batched == sequential
    assert FinishResult(recorded=False) in batched  # lost leases and the repeated item
    assert FinishResult(recorded=True, final=False, coalesced=1) in batched  # moved generation
    assert FinishResult(recorded=True, final=True, coalesced=2) in batched  # dup x3
    assert await _state(services, bat_tasks) == await _state(services, seq_tasks)
    # The moved keys stay pending; once copied again, they settle in both worlds alike.
    again = [c for c in await ledger.claim("w3", 100, 30) if c.key == "moved"]
    assert len(again) == 4
    for c in again:
        if c.task_id in seq:
            await ledger.finish("w3", c, OUTCOMES["moved"])
    finals = await ledger.finish_many("w3", [(c, OUTCOMES["moved"]) for c in again if c.task_id in bat])
    assert finals == [FinishResult(recorded=True, final=True, coalesced=0)] * 2
    assert await _state(services, bat_tasks) == await _state(services, seq_tasks)
    counters = (await _state(services, bat_tasks))[3]
    assert sorted((c["success"], c["failure"], c["skip"], c["pending"]) for c in counters) == [(2, 0, 1, 1), (3, 1, 4, 1)]


async def test_empty_batch_writes_nothing(services: Services) -> None:
    assert await services.ledger.finish_many("w1", []) == []


async def test_engine_records_concurrent_outcomes_in_few_transactions(services: Services) -> None:
    """The engine's batcher: outcomes that arrive together share transactions, each caller still
    gets its own result, and the counters add up."""
    from omsync.engine.worker import _FinishBatcher

    batches: list[int] = []

    class CountingLedger(Ledger):
        async def finish_many(self, owner: str, items: Sequence[tuple[Claim, Outcome]]) -> list[FinishResult]:
            batches.append(len(items))
            return await super().finish_many(owner, items)

    task_id = await new_task(services)
    await services.ledger.accept(task_id, [f"k{i}" for i in range(30)])
    claims = await services.ledger.claim("w1", 100, 30)
    batcher = _FinishBatcher(CountingLedger(services.db), "w1", limit=20)
    results = await asyncio.gather(*(batcher.finish(c, OUTCOMES["ok"]) for c in claims))
    assert results == [FinishResult(recorded=True, final=True, coalesced=0)] * 30
    assert sum(batches) == 30 and len(batches) < 30 and max(batches) <= 20, batches
    counts = await invariant(services, task_id)
    assert (counts["success"], counts["size"], counts["pending"]) == (30, 330, 0)
