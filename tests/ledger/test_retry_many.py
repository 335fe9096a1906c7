"""retry_many (several retry_later in one transaction), and writes of the sync path waiting for
another connection's write lock without blocking the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from sqlalchemy import select

from omsync.config import Settings
from omsync.ledger.tables import ledger as ledger_table
from omsync.services import Services
from tests.ledger.test_ledger import invariant, new_task


async def rows_by_key(services: Services, task_id: str) -> dict[str, tuple[str, int, int, str | None]]:
    async with services.db.read() as conn:
        found = await conn.execute(
            select(ledger_table.c.key, ledger_table.c.state, ledger_table.c.attempts, ledger_table.c.due_at,
                   ledger_table.c.reason).where(ledger_table.c.task_id == task_id))
        return {r.key.decode(): (r.state, r.attempts, r.due_at, r.reason) for r in found}


async def test_retry_many_gives_each_key_back_as_retry_later_would(services: Services) -> None:
    task_id = await new_task(services)
    await services.ledger.accept(task_id, ["a", "b", "c", "d"])
    claims = {c.key: c for c in await services.ledger.claim("w", 10, 30)}
    await services.ledger.accept(task_id, ["c"])  # c moves on while in flight
    stale = claims["d"]
    [taken] = await services.ledger.retry_many("w", [(stale, 0, "x", "y")])
    assert taken
    [again] = await services.ledger.claim("w2", 10, 30)  # d, now held by w2
    assert again.key == "d"
    before = int(time.time() * 1000)
    kept = await services.ledger.retry_many("w", [
        (claims["a"], 60, "throttled", "slow down"),
        (claims["b"], 0.5, "network", "reset"),
        (claims["a"], 60, "throttled", "twice"),  # named twice: the lease is gone by then
        (claims["c"], 60, "throttled", "moved"),
        (stale, 60, "throttled", "lost"),  # w lost d to w2
    ])
    assert kept == [True, True, False, True, False]
    rows = await rows_by_key(services, task_id)
    assert rows["a"][0] == "pending" and rows["a"][1] == 1 and rows["a"][2] >= before + 60_000
    assert rows["a"][3] == "throttled"
    assert rows["b"][1] == 1 and before + 500 <= rows["b"][2] < before + 60_000
    assert rows["c"][1] == 0 and rows["c"][2] <= int(time.time() * 1000)  # a newer generation: due now
    assert rows["d"][0] == "inflight"
    assert await services.ledger.retry_many("w", []) == []
    counts = await invariant(services, task_id)
    assert (counts["request"], counts["pending"]) == (5, 5)


async def test_sync_writes_wait_for_another_connections_lock_off_the_event_loop(tmp_path: Path) -> None:
    services = await Services.open(Settings(data_dir=tmp_path))
    try:
        task_id = await new_task(services)
        other = sqlite3.connect(tmp_path / "omsync.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the database
        accepting = asyncio.ensure_future(services.ledger.accept(task_id, ["k"]))
        ticks = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.5:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 20  # the loop kept running while the accept waited
        assert not accepting.done()
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(accepting, 10)
        async with services.db.write() as conn:  # the async path still works beside it
            await conn.exec_driver_sql("UPDATE ledger SET updated_at = 1")
        assert (await invariant(services, task_id))["request"] == 1
    finally:
        await services.close()
