"""Fair claims across tasks, claim caps and per-task concurrency caps, on both backends."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omsync.config import Settings
from omsync.db import Database
from omsync.domain.model import Outcome, OutcomeKind, TaskLimits
from omsync.ledger.queue import Claim, Ledger, TaskNotFound
from omsync.services import Services
from tests.ledger.test_ledger import CREDS, FIELDS, PROJECT

LEASE = 120.0


@pytest.fixture()
async def roomy(tmp_path: Path, database_url: str) -> AsyncIterator[Services]:
    """Services with the default (large) backlog bound."""
    opened = await Services.open(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    await opened.close()


async def task_with_keys(services: Services, prefix: str, count: int) -> str:
    task_id = await services.tasks.create(PROJECT, FIELDS, CREDS)
    for start in range(0, count, 1000):
        await services.ledger.accept(task_id, [f"{prefix}/{i:05d}" for i in range(start, min(count, start + 1000))])
    return task_id


def per_task(claims: list[Claim]) -> Counter[str]:
    return Counter(c.task_id for c in claims)


async def test_fresh_events_are_served_beside_a_large_backlog(roomy: Services) -> None:
    backlog = await task_with_keys(roomy, "old", 3000)
    await asyncio.sleep(0.01)  # every backlog key is due before the fresh ones
    fresh = await task_with_keys(roomy, "new", 10)

    rounds = [await roomy.ledger.claim("w", 8, LEASE) for _ in range(3)]
    counts = [per_task(r) for r in rounds]
    # Served side by side, not after 3,000 older keys: four each, the fresh task done in round 3.
    assert counts[0] == {backlog: 4, fresh: 4}
    assert counts[1] == {backlog: 4, fresh: 4}
    assert counts[2] == {backlog: 6, fresh: 2}  # the share the fresh task cannot use goes on
    assert sorted(c.key for r in rounds for c in r if c.task_id == fresh) == [f"new/{i:05d}" for i in range(10)]
    # Within a task, keys go in due order.
    assert sorted(c.key for r in rounds for c in r if c.task_id == backlog) == [f"old/{i:05d}" for i in range(14)]
    assert per_task(await roomy.ledger.claim("w", 8, LEASE)) == {backlog: 8}


async def test_the_first_task_served_rotates(roomy: Services) -> None:
    tasks = [await task_with_keys(roomy, f"t{n}", 4) for n in range(3)]
    order = [c.task_id for _ in range(12) for c in await roomy.ledger.claim("w", 1, LEASE)]
    assert len(order) == 12
    for start in range(0, 12, 3):
        assert sorted(order[start:start + 3]) == sorted(tasks), order
    # A share of two keys among three tasks goes to two different tasks.
    more = [await task_with_keys(roomy, f"u{n}", 2) for n in range(3)]
    taken = [per_task(await roomy.ledger.claim("w", 2, LEASE)) for _ in range(3)]
    assert all(sorted(t.values()) == [1, 1] for t in taken), taken
    assert sum(taken, Counter()) == dict.fromkeys(more, 2)


async def test_shares_a_task_cannot_use_go_to_the_others(roomy: Services) -> None:
    small = await task_with_keys(roomy, "small", 2)
    large = await task_with_keys(roomy, "large", 50)
    assert per_task(await roomy.ledger.claim("w", 10, LEASE)) == {small: 2, large: 8}
    assert per_task(await roomy.ledger.claim("w", 10, LEASE)) == {large: 10}


async def test_caps_bound_or_skip_a_task(roomy: Services) -> None:
    a = await task_with_keys(roomy, "a", 20)
    b = await task_with_keys(roomy, "b", 20)
    assert per_task(await roomy.ledger.claim("w", 6, LEASE, caps={a: 0})) == {b: 6}
    assert per_task(await roomy.ledger.claim("w", 6, LEASE, caps={a: 1})) == {a: 1, b: 5}
    assert await roomy.ledger.claim("w", 6, LEASE, caps={a: 0, b: 0}) == []


async def test_max_concurrency_counts_live_leases_of_every_claimer(roomy: Services) -> None:
    capped = await task_with_keys(roomy, "capped", 30)
    other = await task_with_keys(roomy, "other", 30)
    await roomy.tasks.set_limits(PROJECT, capped, TaskLimits(max_concurrency=3))
    first = await roomy.ledger.claim("w1", 10, LEASE)
    assert per_task(first) == {capped: 3, other: 7}
    assert per_task(await roomy.ledger.claim("w2", 10, LEASE)) == {other: 10}  # another owner: still capped
    done = next(c for c in first if c.task_id == capped)
    await roomy.ledger.finish("w1", done, Outcome(OutcomeKind.SUCCESS, size=1))
    assert per_task(await roomy.ledger.claim("w2", 10, LEASE)) == {capped: 1, other: 9}

    # Expired leases belong to dead workers: they do not count, and their keys are due again.
    lone = await task_with_keys(roomy, "lone", 2)
    await roomy.tasks.set_limits(PROJECT, lone, TaskLimits(max_concurrency=2))
    await roomy.tasks.set_limits(PROJECT, capped, TaskLimits())
    await roomy.tasks.set_limits(PROJECT, other, TaskLimits(max_concurrency=1))  # it has 27 live leases
    dead = await roomy.ledger.claim("dead", 10, 0.05, caps={capped: 0})
    assert per_task(dead) == {lone: 2}
    await asyncio.sleep(0.1)
    again = await roomy.ledger.claim("w3", 10, LEASE, caps={capped: 0})
    assert per_task(again) == {lone: 2}
    assert {c.row_id for c in again} == {c.row_id for c in dead}


async def test_concurrent_claimers_never_exceed_the_cap(tmp_path: Path, database_url: str) -> None:
    """On PostgreSQL the claimers run in parallel on their own connections: without the
    advisory lock each would count the same free room and the cap would be overshot."""
    services = await Services.open(Settings(data_dir=tmp_path, database_url=database_url))
    claimers = [Database(database_url, pool_size=1) for _ in range(4)]
    try:
        capped = await task_with_keys(services, "capped", 200)
        await services.tasks.set_limits(PROJECT, capped, TaskLimits(max_concurrency=5))
        await asyncio.gather(*(db.ping() for db in claimers))  # connections open: the claims race
        ledgers = [Ledger(db) for db in claimers]
        held: list[tuple[str, Claim]] = []
        for round_ in range(10):
            got = await asyncio.gather(*(ledger.claim(f"c{n}", 5, LEASE) for n, ledger in enumerate(ledgers)))
            held.extend((f"c{n}", c) for n, claims in enumerate(got) for c in claims)
            assert len(held) <= 5, (round_, [len(g) for g in got])
            assert len({c.row_id for _, c in held}) == len(held)
            if round_ < 9:
                # Finish two: the room they free must again go to one claimer's share only.
                for owner, claim in held[:2]:
                    assert (await services.ledger.finish(owner, claim, Outcome(OutcomeKind.SUCCESS))).recorded
                del held[:2]
        assert len(held) == 5
    finally:
        for db in claimers:
            await db.close()
        await services.close()


async def test_limits_are_stored_per_task_and_project(roomy: Services) -> None:
    task_id = await task_with_keys(roomy, "k", 1)
    assert await roomy.tasks.limits(PROJECT, task_id) == TaskLimits()
    assert await roomy.tasks.running_limits() == {}
    limits = TaskLimits(max_concurrency=4, max_objects_per_second=2.5, max_bytes_per_second=1 << 40)
    await roomy.tasks.set_limits(PROJECT, task_id, limits)
    assert await roomy.tasks.limits(PROJECT, task_id) == limits
    assert await roomy.tasks.running_limits() == {task_id: limits}
    await roomy.tasks.stop(PROJECT, task_id)
    assert await roomy.tasks.running_limits() == {}  # stopped tasks are nobody's business
    with pytest.raises(TaskNotFound):
        await roomy.tasks.limits("another-project", task_id)
    with pytest.raises(TaskNotFound):
        await roomy.tasks.set_limits("another-project", task_id, TaskLimits())
    with pytest.raises(TaskNotFound):
        await roomy.tasks.set_limits(PROJECT, "no-such-task", TaskLimits())
    assert await roomy.tasks.limits(PROJECT, task_id) == limits


async def test_a_claim_over_many_tasks_stays_cheap(roomy: Services) -> None:
    """Forty tasks with due keys, claimed one key at a time: every task is reached within one
    rotation and no claim takes long."""
    tasks = [await task_with_keys(roomy, f"t{n}", 3) for n in range(40)]
    seen: list[str] = []
    slowest = 0.0
    for _ in range(40):
        started = time.monotonic()
        seen.extend(c.task_id for c in await roomy.ledger.claim("w", 1, LEASE))
        slowest = max(slowest, time.monotonic() - started)
    assert sorted(seen) == sorted(tasks)
    assert slowest < 1.0, slowest
