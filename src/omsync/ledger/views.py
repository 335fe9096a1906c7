"""Read models over the ledger's tables for the dashboard and the metrics: named queries that
answer plain values, so that nothing outside :mod:`omsync.ledger` writes SQL.

Every query of ``sync_tasks`` selects explicit columns: the encrypted credentials never leave
the database through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select

from omsync.db import Database
from omsync.domain.lifecycle import KeyState
from omsync.domain.stats import LATENCY_COLUMNS
from omsync.ledger.migration_tasks import is_sync_task
from omsync.ledger.tables import ledger, stat_buckets, sync_tasks

__all__ = [
    "COUNTERS",
    "Backlog",
    "backlog",
    "failed_count",
    "failed_key_of_row",
    "latency_counts",
    "list_tasks",
    "load_task",
    "pending_keys_by_task",
    "totals_by_task",
]

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
    where = [is_sync_task()]  # a migration task's engine row is shown with the migrations
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
    query = select(*TASK_COLUMNS).where(sync_tasks.c.id == task_id, is_sync_task())
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
    open_states = ledger.c.state.in_([KeyState.PENDING.value, KeyState.INFLIGHT.value])
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
            select(func.count()).select_from(ledger)
            .where(ledger.c.task_id == task_id, ledger.c.state == KeyState.FAILED.value)
        )
    return int(value or 0)


async def failed_key_of_row(db: Database, task_id: str, row_id: int) -> str | None:
    """The key of ledger row ``row_id`` when it is a FAILED key of ``task_id``, else None.

    Forms name a failed key by its row id: an object key may hold characters (line breaks,
    control characters) that an HTML form would not carry back byte-exact.
    """
    async with db.read() as conn:
        raw = await conn.scalar(
            select(ledger.c.key).where(ledger.c.id == row_id, ledger.c.task_id == task_id,
                                       ledger.c.state == KeyState.FAILED.value)
        )
    return bytes(raw).decode("utf-8") if raw is not None else None


async def latency_counts(db: Database, task_id: str, start_ms: int, end_ms: int) -> list[int] | None:
    """The task's event-to-outcome latency histogram summed over the 5-minute buckets starting
    in ``[start_ms, end_ms]`` (one count per bin of ``LATENCY_BOUNDS_MS``, the last one above
    all), or None when the schema does not record it."""
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
    return [int(v) for v in row]


async def pending_keys_by_task(db: Database) -> dict[str, int]:
    """Every task's count of keys accepted and without a final outcome yet (in flight included)."""
    async with db.read() as conn:
        rows = (await conn.execute(select(sync_tasks.c.id, sync_tasks.c.pending_keys))).all()
    return {str(r.id): int(r.pending_keys) for r in rows}
