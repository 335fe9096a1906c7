"""Several claimer processes drain the ledger while events keep arriving, on both backends.

Each claimer is a separate process with its own Database and Ledger (its own connections), so
on PostgreSQL the claims really run in parallel and only ``FOR UPDATE SKIP LOCKED`` keeps them
apart; on SQLite they contend for the file lock. Every claimer records, per claim, when it held
the row for sure: from the return of ``claim`` to the call of ``finish``/``retry_later``. The
test then checks that no row was ever held by two owners at once, that every key ends with
exactly one final outcome for its last generation, and that REQUEST = SUCCESS + FAILURE + SKIP
with nothing left pending.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import select, update

from omsync.config import Settings
from omsync.db import Database
from omsync.domain.model import Outcome, OutcomeKind
from omsync.ledger.queue import Ledger
from omsync.ledger.tables import ledger as ledger_table
from omsync.ledger.tables import outcome_log, sync_tasks
from omsync.services import Services
from tests.ledger.test_ledger import CREDS, FIELDS, PROJECT

CLAIMERS = 4
TASKS = 2
KEYS_PER_TASK = 120  # few enough that keys get new events while being copied
EVENTS = 3000
LEASE_SECONDS = 120.0  # never expires during the test: any double hold is a real bug
DEADLINE_SECONDS = 120.0
ODD_KEYS = ["a b+c%20?#", "ключ/ü", "x//y", "./a", "dir/", "tab\there", "k" * 1024]
ALL_KEYS = [f"obj/{i:04d}" for i in range(KEYS_PER_TASK - len(ODD_KEYS))] + ODD_KEYS


class Held(NamedTuple):
    """One claim as a claimer saw it."""

    row_id: int
    key: str
    owner: str
    generation: int
    claimed_ns: int  # after claim() returned: the lease was committed by then
    released_ns: int  # before finish()/retry_later() was called: still held until then
    action: str  # SUCCESS | FAILURE | SKIP | retry
    recorded: bool
    final: bool
    coalesced: int


def claimer_process(url: str, owner: str, task_ids: list[str], workdir: str, seed: int) -> list[Held]:
    """Entry point of a claimer process (spawned: module-level and picklable)."""
    return asyncio.run(_claimer(url, owner, task_ids, Path(workdir), seed))


async def _claimer(url: str, owner: str, task_ids: list[str], workdir: Path, seed: int) -> list[Held]:
    rng = random.Random(seed)
    db = Database(url, pool_size=2)
    ledger = Ledger(db)
    held: list[Held] = []
    (workdir / f"ready-{owner}").touch()
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            claims = await ledger.claim(owner, rng.randint(1, 8), LEASE_SECONDS)
            claimed_ns = time.monotonic_ns()
            if not claims:
                if (workdir / "accepting-done").exists():
                    pending = [await ledger.pending_occurrences(t) for t in task_ids]
                    if sum(pending) == 0:
                        break
                await asyncio.sleep(0.005)
                continue
            await asyncio.sleep(rng.random() * 0.003)  # "copying": widens the windows
            if len(claims) > 1 and rng.random() < 0.3:
                renewed = await ledger.renew(owner, [c.row_id for c in claims], LEASE_SECONDS)
                assert renewed == len(claims), (renewed, len(claims))
            for claim in claims:
                roll = rng.random()
                released_ns = time.monotonic_ns()
                if roll < 0.1:
                    kept = await ledger.retry_later(owner, claim, 0, "throttled", "slow down")
                    held.append(Held(claim.row_id, claim.key, owner, claim.generation, claimed_ns, released_ns,
                                     "retry", kept, False, 0))
                    continue
                kind = OutcomeKind.SUCCESS if roll < 0.8 else OutcomeKind.FAILURE if roll < 0.9 else OutcomeKind.SKIP
                outcome = Outcome(kind, reason=None if kind is OutcomeKind.SUCCESS else "test", size=len(claim.key))
                result = await ledger.finish(owner, claim, outcome)
                held.append(Held(claim.row_id, claim.key, owner, claim.generation, claimed_ns, released_ns,
                                 kind.value, result.recorded, result.final, result.coalesced))
        else:
            raise TimeoutError(f"{owner} still had work after {DEADLINE_SECONDS}s")
    finally:
        await db.close()
    return held


async def _accept_events(services: Services, task_ids: list[str], seed: int, count: int) -> tuple[int, int]:
    """Post ``count`` events in small batches, re-driving failed keys now and then.
    Returns (events posted, keys re-driven)."""
    rng = random.Random(seed)
    posted = redriven = 0
    while posted < count:
        task_id = rng.choice(task_ids)
        batch = [rng.choice(ALL_KEYS) for _ in range(min(rng.randint(1, 20), count - posted))]
        await services.ledger.accept(task_id, batch)
        posted += len(batch)
        if rng.random() < 0.05:
            redriven += await services.ledger.retry_failed(task_id)
        await asyncio.sleep(rng.random() * 0.004)
    return posted, redriven


def assert_no_double_holds(held: list[Held]) -> None:
    by_row: dict[int, list[Held]] = defaultdict(list)
    for h in held:
        by_row[h.row_id].append(h)
    for row_id, holds in by_row.items():
        holds.sort(key=lambda h: h.claimed_ns)
        for before, after in pairwise(holds):
            assert after.claimed_ns > before.released_ns, (
                f"row {row_id} held by {before.owner} and {after.owner} at once: {before} {after}"
            )


async def test_parallel_claimers_never_share_a_row_and_lose_nothing(tmp_path: Path, database_url: str) -> None:
    services = await Services.open(Settings(data_dir=tmp_path, database_url=database_url))
    try:
        task_ids = [await services.tasks.create(PROJECT, FIELDS, CREDS) for _ in range(TASKS)]
        loop = asyncio.get_running_loop()
        owners = [f"claimer-{n}" for n in range(CLAIMERS)]
        with ProcessPoolExecutor(max_workers=CLAIMERS, mp_context=get_context("spawn")) as pool:
            futures = [
                loop.run_in_executor(pool, claimer_process, database_url, owner, task_ids, str(tmp_path), n)
                for n, owner in enumerate(owners)
            ]
            started = time.monotonic()
            while not all((tmp_path / f"ready-{o}").exists() for o in owners):
                assert time.monotonic() - started < 60, "claimer processes did not start"
                await asyncio.sleep(0.02)
            # Two posting clients at once: on PostgreSQL they also contend for the task rows.
            accepted = await asyncio.gather(
                _accept_events(services, task_ids, 1000, EVENTS // 2),
                _accept_events(services, task_ids, 1001, EVENTS - EVENTS // 2),
            )
            (tmp_path / "accepting-done").touch()
            results = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE_SECONDS + 30)
        held = [h for result in results for h in result]
        posted = sum(p for p, _ in accepted)
        redriven = sum(r for _, r in accepted)
        assert posted == EVENTS

        assert all(h.recorded for h in held), [h for h in held if not h.recorded][:5]
        assert all(any(h.owner == o for h in held) for o in owners), Counter(h.owner for h in held)
        assert_no_double_holds(held)

        # Every key ends settled, with exactly one final outcome for its last generation.
        finals = Counter((h.row_id, h.generation) for h in held if h.final)
        assert max(finals.values()) == 1, [k for k, n in finals.items() if n > 1][:5]
        last_final = {(h.row_id, h.generation): h for h in held if h.final}
        async with services.db.read() as conn:
            rows = (await conn.execute(select(ledger_table))).mappings().all()
            log_count = len((await conn.execute(select(outcome_log.c.id))).all())
            pending_keys = (await conn.execute(select(sync_tasks.c.pending_keys))).scalars().all()
        assert {r["key"].decode() for r in rows} <= set(ALL_KEYS)
        for row in rows:
            assert row["state"] in ("done", "failed"), dict(row)
            assert row["reported_generation"] == row["generation"], dict(row)
            assert row["lease_owner"] is None
            final = last_final.get((row["id"], row["generation"]))
            assert final is not None, f"no final outcome for {row['key']!r} generation {row['generation']}"
            assert final.action == row["outcome"] and final.key == row["key"].decode()
        assert log_count == sum(finals.values())
        assert list(pending_keys) == [0] * TASKS

        totals = [await services.ledger.totals(t) for t in task_ids]
        total = {c: sum(t[c] for t in totals) for c in ("request", "success", "failure", "skip")}
        assert total["request"] == EVENTS + redriven
        assert total["request"] == total["success"] + total["failure"] + total["skip"], total
        assert sum([await services.ledger.pending_occurrences(t) for t in task_ids]) == 0
        kinds = Counter(h.action for h in held if h.final)
        assert (total["success"], total["failure"]) == (kinds["SUCCESS"], kinds["FAILURE"])
        assert total["skip"] == kinds["SKIP"] + sum(h.coalesced for h in held if h.recorded)
    finally:
        await services.close()


@pytest.mark.parametrize("operation", ["renew", "release"])
async def test_multi_row_lease_updates_queue_behind_accept_instead_of_deadlocking(
    tmp_path: Path, postgres_url: str, operation: str
) -> None:
    """PostgreSQL: an accept locks the task row, then its keys' rows in the order it was given.
    A renew or release of the same rows must not lock some of them and wait for the others."""
    services = await Services.open(Settings(data_dir=tmp_path, database_url=postgres_url))
    accepting = Database(postgres_url)
    try:
        task_id = await services.tasks.create(PROJECT, FIELDS, CREDS)
        await services.ledger.accept(task_id, ["k1", "k2"])
        claims = sorted(await services.ledger.claim("w", 10, LEASE_SECONDS), key=lambda c: c.row_id)
        assert len(claims) == 2
        first, second = (c.row_id for c in claims)
        async with accepting.write() as conn:
            # What accept(["k2", "k1"]) does, paused half-way: task row, then k2's row.
            await conn.execute(
                select(sync_tasks.c.id).where(sync_tasks.c.id == task_id).with_for_update(key_share=True)
            )
            await conn.execute(update(ledger_table).where(ledger_table.c.id == second).values(updated_at=1))
            if operation == "renew":
                waiting = asyncio.ensure_future(services.ledger.renew("w", [first, second], LEASE_SECONDS))
            else:
                waiting = asyncio.ensure_future(services.ledger.release("w", claims))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # it queues behind the accept...
            # ...without holding k1's row, which the accept needs next (else: deadlock detected).
            await asyncio.wait_for(
                conn.execute(update(ledger_table).where(ledger_table.c.id == first).values(updated_at=1)), 5
            )
        result = await asyncio.wait_for(waiting, 10)
        if operation == "renew":
            assert result == 2
        else:
            assert await services.ledger.claim("w2", 10, LEASE_SECONDS) != []
    finally:
        await accepting.close()
        await services.close()
