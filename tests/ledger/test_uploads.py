"""Open multipart uploads survive a crash in the ledger and come back to the key's next owner."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from omsync.domain.model import Outcome, OutcomeKind
from omsync.services import Services
from tests.ledger.test_ledger import new_task


async def test_orphan_upload_is_handed_to_the_next_owner(services: Services) -> None:
    task_id = await new_task(services)
    await services.ledger.accept(task_id, ["big/object", "other"])
    claims = {c.key: c for c in await services.ledger.claim("dying", 10, 0.001)}
    assert all(c.orphan_uploads == () for c in claims.values())
    record = await services.ledger.record_upload(claims["big/object"], "dst-bucket", "upload-1")
    assert record > 0
    await asyncio.sleep(0.01)  # "dying" never comes back: its leases expire
    taken = {c.key: c for c in await services.ledger.claim("heir", 10, 30)}
    [orphan] = taken["big/object"].orphan_uploads
    assert (orphan.id, orphan.bucket, orphan.upload_id) == (record, "dst-bucket", "upload-1")
    assert taken["other"].orphan_uploads == ()
    await services.ledger.forget_upload(orphan.id)
    await services.ledger.finish("heir", taken["big/object"], Outcome(OutcomeKind.SUCCESS, size=1))
    await services.ledger.accept(task_id, ["big/object"])
    [again] = await services.ledger.claim("heir", 10, 30)
    assert again.orphan_uploads == ()


async def test_final_outcome_counts_into_the_latency_histogram(services: Services) -> None:
    from omsync.domain.stats import LATENCY_COLUMNS, latency_column

    task_id = await new_task(services)
    await services.ledger.accept(task_id, ["k"])
    [claim] = await services.ledger.claim("w", 1, 30)
    await asyncio.sleep(0.3)
    await services.ledger.finish("w", claim, Outcome(OutcomeKind.SUCCESS, size=1))
    async with services.db.read() as conn:
        row = (await conn.execute(text(f"SELECT {', '.join(LATENCY_COLUMNS)} FROM stat_buckets"))).one()
    counts = dict(zip(LATENCY_COLUMNS, row, strict=True))
    assert sum(counts.values()) == 1
    assert counts[latency_column(300)] == 1 or counts[latency_column(1000)] == 1  # 250 ms < latency ≤ 1 s
    assert latency_column(0) == "lat_0" and latency_column(10**9) == LATENCY_COLUMNS[-1]
