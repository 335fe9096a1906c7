"""Read models of the dashboard, and the one write it needs beyond the repositories.

Every query selects explicit columns of ``sync_tasks``: the encrypted credentials never leave
the database through this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update

from omsync.db import Database
from omsync.domain.model import TaskStatus
from omsync.domain.stats import LATENCY_BOUNDS_MS, LATENCY_COLUMNS
from omsync.ledger.queue import FAILED, INFLIGHT, PENDING, now_ms
from omsync.ledger.tables import ledger, stat_buckets, sync_tasks

COUNTERS = ("request", "success", "failure", "skip", "size")

TASK_COLUMNS = (
    sync_tasks.c.id, sync_tasks.c.project_id, sync_tasks.c.status, sync_tasks.c.description,
    sync_tasks.c.src_cloud_type, sync_tasks.c.src_region, sync_tasks.c.src_bucket,
    sync_tasks.c.dst_cloud_type, sync_tasks.c.dst_region, sync_tasks.c.dst_bucket,
    sync_tasks.c.consistency_check, sync_tasks.c.object_overwrite_mode, sync_tasks.c.enable_metadata_migration,
    sync_tasks.c.dst_storage_policy, sync_tasks.c.create_time, sync_tasks.c.last_start_time,
    sync_tasks.c.pending_keys, sync_tasks.c.max_concurrency, sync_tasks.c.max_objects_per_second,
    sync_tasks.c.max_bytes_per_second,
)

# Event-to-outcome latency histogram, per 5-minute bucket: column ``lat_<i>`` of ``stat_buckets``
# counts final outcomes whose latency was at most LATENCY_BOUNDS_MS[i] (the last one: above all;
# both defined in omsync.domain.stats). The dashboard shows percentiles once the ledger records
# these columns, and "n/a" before.


@dataclass(frozen=True)
class Backlog:
    """Keys waiting for a copy: ``keys`` pending or in flight, ``oldest_ms`` when the oldest
    waiting occurrence was accepted (None when nothing waits), ``retrying`` keys whose last
    attempt hit a retryable error and that wait for another."""

    keys: int
    occurrences: int
    oldest_ms: int | None
    retrying: int


async def list_tasks(
    db: Database, project_id: str | None, *, status: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of tasks, newest first, of one project (or of all when ``project_id`` is None),
    and the total number matching."""
    where = []
    if project_id is not None:
        where.append(sync_tasks.c.project_id == project_id)
    if status:
        where.append(sync_tasks.c.status == status)
    async with db.read() as conn:
        total = await conn.scalar(select(func.count()).select_from(sync_tasks).where(*where))
        rows = await conn.execute(
            select(*TASK_COLUMNS).where(*where)
            .order_by(sync_tasks.c.create_time.desc(), sync_tasks.c.id).limit(limit).offset(offset)
        )
        return [dict(r) for r in rows.mappings()], int(total or 0)


async def load_task(db: Database, task_id: str, project_id: str | None) -> dict[str, Any] | None:
    """One task (without credentials), or None when absent or not of ``project_id`` (when given)."""
    query = select(*TASK_COLUMNS).where(sync_tasks.c.id == task_id)
    if project_id is not None:
        query = query.where(sync_tasks.c.project_id == project_id)
    async with db.read() as conn:
        row = (await conn.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def totals_by_task(db: Database, task_ids: Sequence[str], start_ms: int, end_ms: int) -> dict[str, dict[str, int]]:
    """Counters summed over ``[start_ms, end_ms)`` for each of ``task_ids`` (zeros when none)."""
    result = {task_id: dict.fromkeys(COUNTERS, 0) for task_id in task_ids}
    if not task_ids:
        return result
    async with db.read() as conn:
        rows = await conn.execute(
            select(stat_buckets.c.task_id, *(func.sum(stat_buckets.c[c]) for c in COUNTERS))
            .where(stat_buckets.c.task_id.in_(list(task_ids)), stat_buckets.c.bucket_start >= start_ms,
                   stat_buckets.c.bucket_start < end_ms)
            .group_by(stat_buckets.c.task_id)
        )
        for row in rows:
            result[row[0]] = {c: int(v or 0) for c, v in zip(COUNTERS, row[1:], strict=True)}
    return result


async def backlog(db: Database, task_id: str) -> Backlog:
    """What the task still has to copy."""
    open_states = ledger.c.state.in_([PENDING, INFLIGHT])
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(
                    func.count(), func.min(ledger.c.pending_since),
                    func.coalesce(func.sum(ledger.c.generation - ledger.c.reported_generation), 0),
                    func.coalesce(func.sum(case((ledger.c.attempts > 0, 1), else_=0)), 0),
                ).where(ledger.c.task_id == task_id, open_states)
            )
        ).one()
    return Backlog(keys=int(row[0]), oldest_ms=int(row[1]) if row[1] is not None else None,
                   occurrences=int(row[2] or 0), retrying=int(row[3]))


async def failed_count(db: Database, task_id: str) -> int:
    """How many keys of the task are FAILED now."""
    async with db.read() as conn:
        value = await conn.scalar(
            select(func.count()).select_from(ledger).where(ledger.c.task_id == task_id, ledger.c.state == FAILED)
        )
    return int(value or 0)


async def failed_key_of_row(db: Database, task_id: str, row_id: int) -> str | None:
    """The key of ledger row ``row_id`` when it is a FAILED key of ``task_id``, else None.

    Forms name a failed key by its row id: an object key may hold characters (line breaks,
    control characters) that an HTML form would not carry back byte-exact.
    """
    async with db.read() as conn:
        raw = await conn.scalar(
            select(ledger.c.key).where(ledger.c.id == row_id, ledger.c.task_id == task_id, ledger.c.state == FAILED)
        )
    return bytes(raw).decode("utf-8") if raw is not None else None


async def resume_task(db: Database, task_id: str, project_id: str) -> bool:
    """STOPPED → SYNCHRONIZING keeping the task's stored (encrypted) credentials.

    The API's StartSyncTask takes the credentials again; the dashboard never sees them, so it
    re-enables the task with those it already has. Returns False when the task is not STOPPED
    (or not of ``project_id``).
    """
    async with db.write() as conn:
        result = await conn.execute(
            update(sync_tasks)
            .where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id,
                   sync_tasks.c.status == TaskStatus.STOPPED.value)
            .values(status=TaskStatus.SYNCHRONIZING.value, last_start_time=now_ms())
        )
    return bool(result.rowcount)


def histogram_percentile(counts: Sequence[int], q: float) -> int | None:
    """The upper bound (ms) of the latency bin holding quantile ``q`` (0 < q <= 1) of a
    histogram over :data:`LATENCY_BOUNDS_MS`; -1 when it falls in the open last bin; None for
    an empty histogram."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else -1
    return -1


async def latency_percentiles(db: Database, task_id: str, start_ms: int, end_ms: int) -> Mapping[str, int] | None:
    """p50/p90/p99 event-to-outcome latency over the window, or None when not recorded."""
    if not all(name in stat_buckets.c for name in LATENCY_COLUMNS):
        return None
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(*(func.coalesce(func.sum(stat_buckets.c[name]), 0) for name in LATENCY_COLUMNS))
                .where(stat_buckets.c.task_id == task_id, stat_buckets.c.bucket_start >= start_ms,
                       stat_buckets.c.bucket_start <= end_ms)
            )
        ).one()
    counts = [int(v) for v in row]
    found = {name: histogram_percentile(counts, q) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
    if any(v is None for v in found.values()):
        return None
    return {k: v for k, v in found.items() if v is not None}
