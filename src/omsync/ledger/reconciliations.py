"""Reconciliation runs of sync tasks: one row per run with its status, counters, listing
checkpoint and lease.

A run is driven by exactly one worker process at a time: the one holding its lease
(``owner``/``lease_until``). The driver renews the lease while it works and moves the
checkpoint (``position``: every key up to it, in UTF-8 byte order, has been compared and its
repair enqueued) together with the counters in one transaction, only while it still holds the
lease. A process that dies keeps the lease until it runs out; then another claims the run and
continues after ``position`` (``takeovers`` counts those resumptions).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from omsync.db import Database
from omsync.domain.errors import TaskNotFound
from omsync.ledger.queue import now_ms
from omsync.ledger.tables import metadata, sync_tasks

RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAILED = "FAILED"
STATUSES = (RUNNING, SUCCESS, FAILED)

COUNTERS = ("source_listed", "destination_listed", "missing", "differing", "extra", "enqueued")

reconciliations = Table(
    "reconciliations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", String(1024), nullable=False),
    Column("prefix", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("position", LargeBinary, nullable=True),  # last key settled, UTF-8 (surrogatepass)
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in COUNTERS),
    Column("report_parts", BigInteger, nullable=False, server_default="0"),
    Column("takeovers", BigInteger, nullable=False, server_default="0"),
    Column("owner", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=False, server_default="0"),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_reconciliations_task", "task_id", "started_at"),
    Index("ix_reconciliations_status", "status"),
)


reconciliation_schedules = Table(
    "reconciliation_schedules",
    metadata,
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("project_id", String(1024), nullable=False),
    Column("prefix", Text, nullable=False),
    Column("interval_seconds", BigInteger, nullable=False),
    Column("next_at", BigInteger, nullable=False),
    Index("ix_reconciliation_schedules_next", "next_at"),
)


@dataclass(frozen=True)
class Schedule:
    """A task's recurring reconciliation: a run under ``prefix`` every ``interval_seconds``,
    the next one due at ``next_at`` (epoch ms)."""

    task_id: str
    prefix: str
    interval_seconds: int
    next_at: int

    def as_dict(self) -> dict[str, Any]:
        return {"sync_task_id": self.task_id, "prefix": self.prefix, "interval_seconds": self.interval_seconds,
                "next_run_at": self.next_at}


class ReconciliationRunning(Exception):
    """A run of the task is already RUNNING (its id in ``run_id``)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"reconciliation {run_id} of this task is still running")
        self.run_id = run_id


def encode_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def decode_key(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Run:
    """One run as stored. ``position`` is the last key settled (None: nothing yet)."""

    id: str
    task_id: str
    project_id: str
    prefix: str
    status: str
    position: str | None
    counters: Mapping[str, int]
    report_parts: int
    takeovers: int
    started_at: int
    finished_at: int | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """The API's view (no lease fields)."""
        return {"reconciliation_id": self.id, "sync_task_id": self.task_id, "prefix": self.prefix,
                "status": self.status, **self.counters, "report_parts": self.report_parts,
                "takeovers": self.takeovers, "started_at": self.started_at, "finished_at": self.finished_at,
                "error_reason": self.error}


def _run(row: Any) -> Run:
    return Run(
        id=row.id, task_id=row.task_id, project_id=row.project_id, prefix=row.prefix, status=row.status,
        position=decode_key(bytes(row.position)) if row.position is not None else None,
        counters={name: int(getattr(row, name)) for name in COUNTERS}, report_parts=int(row.report_parts),
        takeovers=int(row.takeovers), started_at=int(row.started_at),
        finished_at=int(row.finished_at) if row.finished_at is not None else None, error=row.error,
    )


class Reconciliations:
    """Queries over ``reconciliations``; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, project_id: str, task_id: str, prefix: str) -> str:
        """A new RUNNING run of ``task_id`` (unleased: a worker claims it). Raises
        :class:`TaskNotFound` for a task not of ``project_id`` and
        :class:`ReconciliationRunning` when one of the task is still running."""
        at = now_ms()
        run_id = uuid.uuid4().hex

        def create_tx(conn: Connection) -> str:
            owner = conn.execute(select(sync_tasks.c.project_id).where(sync_tasks.c.id == task_id)).first()
            if owner is None or owner.project_id != project_id:
                raise TaskNotFound(task_id)
            running = conn.execute(select(reconciliations.c.id).where(
                reconciliations.c.task_id == task_id, reconciliations.c.status == RUNNING).limit(1)).first()
            if running is not None:
                raise ReconciliationRunning(running.id)
            conn.execute(reconciliations.insert().values(
                id=run_id, task_id=task_id, project_id=project_id, prefix=prefix, status=RUNNING, started_at=at))
            return run_id

        return await self.db.run_write(create_tx)

    async def get(self, project_id: str, task_id: str, run_id: str) -> Run | None:
        """The run, or None when it is not a run of that task of that project."""
        def get_tx(conn: Connection) -> Run | None:
            row = conn.execute(select(reconciliations).where(
                reconciliations.c.id == run_id, reconciliations.c.task_id == task_id,
                reconciliations.c.project_id == project_id)).first()
            return None if row is None else _run(row)

        return await self.db.run_read(get_tx)

    async def recent(self, project_id: str, task_id: str, limit: int = 20) -> list[Run]:
        """The task's latest runs, newest first."""
        def recent_tx(conn: Connection) -> list[Run]:
            rows = conn.execute(select(reconciliations).where(
                reconciliations.c.task_id == task_id, reconciliations.c.project_id == project_id,
            ).order_by(reconciliations.c.started_at.desc(), reconciliations.c.id).limit(limit))
            return [_run(row) for row in rows]

        return await self.db.run_read(recent_tx)

    async def latest(self, task_ids: Sequence[str]) -> dict[str, Run]:
        """The newest run of each of ``task_ids`` that has one (the dashboard)."""
        if not task_ids:
            return {}

        def latest_tx(conn: Connection) -> dict[str, Run]:
            found: dict[str, Run] = {}
            ids = list(task_ids)
            for start in range(0, len(ids), 500):
                rows = conn.execute(select(reconciliations).where(
                    reconciliations.c.task_id.in_(ids[start:start + 500])).order_by(reconciliations.c.started_at))
                for row in rows:
                    found[row.task_id] = _run(row)  # ascending: the newest wins
            return found

        return await self.db.run_read(latest_tx)

    async def claim(self, owner: str, lease_seconds: float) -> Run | None:
        """Lease one RUNNING run nobody holds (or whose lease ran out); None when there is none.
        Taking over a run another owner held counts a takeover."""
        at = now_ms()
        r = reconciliations.c
        free = and_(r.status == RUNNING, or_(r.owner.is_(None), r.lease_until < at))

        def claim_tx(conn: Connection) -> Run | None:
            row = conn.execute(select(reconciliations).where(free).order_by(r.started_at).limit(1)).first()
            if row is None:
                return None
            takeover = 1 if row.owner is not None and row.owner != owner else 0
            taken = conn.execute(update(reconciliations).where(r.id == row.id, free).values(
                owner=owner, lease_until=at + int(lease_seconds * 1000), takeovers=r.takeovers + takeover))
            if not taken.rowcount:
                return None
            fresh = conn.execute(select(reconciliations).where(r.id == row.id)).first()
            return _run(fresh)

        return await self.db.run_write(claim_tx)

    async def renew(self, run_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend the lease; False when ``owner`` no longer holds a RUNNING run."""
        r = reconciliations.c

        def renew_tx(conn: Connection) -> bool:
            done = conn.execute(update(reconciliations).where(
                r.id == run_id, r.owner == owner, r.status == RUNNING,
            ).values(lease_until=now_ms() + int(lease_seconds * 1000)))
            return bool(done.rowcount)

        return await self.db.run_write(renew_tx)

    async def checkpoint(self, run_id: str, owner: str, lease_seconds: float, position: str | None,
                         deltas: Mapping[str, int], report_parts: int) -> bool:
        """Move the checkpoint to ``position``, add ``deltas`` to the counters and renew the
        lease, in one transaction; False (nothing written) when the lease is lost."""
        r = reconciliations.c
        values: dict[str, Any] = {name: r[name] + int(deltas.get(name, 0)) for name in COUNTERS}
        values["report_parts"] = report_parts
        if position is not None:
            values["position"] = encode_key(position)

        def checkpoint_tx(conn: Connection) -> bool:
            done = conn.execute(update(reconciliations).where(
                r.id == run_id, r.owner == owner, r.status == RUNNING,
            ).values(lease_until=now_ms() + int(lease_seconds * 1000), **values))
            return bool(done.rowcount)

        return await self.db.run_write(checkpoint_tx)

    async def finish(self, run_id: str, owner: str, status: str, error: str | None = None) -> bool:
        """End the run (SUCCESS or FAILED with ``error``); False when the lease is lost."""
        r = reconciliations.c

        def finish_tx(conn: Connection) -> bool:
            done = conn.execute(update(reconciliations).where(
                r.id == run_id, r.owner == owner, r.status == RUNNING,
            ).values(status=status, error=error, finished_at=now_ms(), owner=None, lease_until=0))
            return bool(done.rowcount)

        return await self.db.run_write(finish_tx)

    # -- schedules ------------------------------------------------------------------------------

    async def set_schedule(self, project_id: str, task_id: str, interval_seconds: int, prefix: str,
                           next_at: int | None = None) -> Schedule:
        """Run the task's reconciliation every ``interval_seconds``, the first due at
        ``next_at`` (default: now), replacing any schedule it had. Raises
        :class:`TaskNotFound` for a task not of ``project_id``."""
        first = now_ms() if next_at is None else next_at
        s = reconciliation_schedules.c

        def set_tx(conn: Connection) -> Schedule:
            owner = conn.execute(select(sync_tasks.c.project_id).where(sync_tasks.c.id == task_id)).first()
            if owner is None or owner.project_id != project_id:
                raise TaskNotFound(task_id)
            values = {"prefix": prefix, "interval_seconds": interval_seconds, "next_at": first}
            changed = conn.execute(update(reconciliation_schedules).where(s.task_id == task_id).values(**values))
            if not changed.rowcount:
                conn.execute(reconciliation_schedules.insert().values(task_id=task_id, project_id=project_id,
                                                                      **values))
            return Schedule(task_id, prefix, interval_seconds, first)

        return await self.db.run_write(set_tx)

    async def schedule(self, project_id: str, task_id: str) -> Schedule | None:
        """The task's schedule, or None."""
        s = reconciliation_schedules.c

        def get_tx(conn: Connection) -> Schedule | None:
            row = conn.execute(select(reconciliation_schedules).where(
                s.task_id == task_id, s.project_id == project_id)).first()
            return None if row is None else Schedule(row.task_id, row.prefix, int(row.interval_seconds),
                                                     int(row.next_at))

        return await self.db.run_read(get_tx)

    async def clear_schedule(self, project_id: str, task_id: str) -> bool:
        """Remove the task's schedule; False when it had none."""
        s = reconciliation_schedules.c

        def clear_tx(conn: Connection) -> bool:
            done = conn.execute(reconciliation_schedules.delete().where(
                s.task_id == task_id, s.project_id == project_id))
            return bool(done.rowcount)

        return await self.db.run_write(clear_tx)

    async def start_due(self, limit: int = 100) -> list[str]:
        """Start a run for every schedule that is due (at most ``limit``), moving each one's
        ``next_at`` on by whole intervals past now; a task whose previous run is still RUNNING
        gets no second one. Safe to call from many processes: each due schedule is taken by
        one. Returns the ids of the runs started."""
        at = now_ms()
        s = reconciliation_schedules.c
        r = reconciliations.c

        def due_tx(conn: Connection) -> list[str]:
            started: list[str] = []
            rows = conn.execute(select(reconciliation_schedules).where(s.next_at <= at)
                                .order_by(s.next_at).limit(limit)).all()
            for row in rows:
                interval = max(1, int(row.interval_seconds)) * 1000
                following = int(row.next_at) + ((at - int(row.next_at)) // interval + 1) * interval
                taken = conn.execute(update(reconciliation_schedules).where(
                    s.task_id == row.task_id, s.next_at == row.next_at).values(next_at=following))
                if not taken.rowcount:
                    continue  # another process took it
                running = conn.execute(select(r.id).where(r.task_id == row.task_id, r.status == RUNNING)
                                       .limit(1)).first()
                if running is not None:
                    continue
                run_id = uuid.uuid4().hex
                conn.execute(reconciliations.insert().values(
                    id=run_id, task_id=row.task_id, project_id=row.project_id, prefix=row.prefix, status=RUNNING,
                    started_at=at))
                started.append(run_id)
            return started

        return await self.db.run_write(due_tx)

    async def release(self, run_id: str, owner: str) -> None:
        """Give the lease back (shutdown): another process may continue at once."""
        r = reconciliations.c

        def release_tx(conn: Connection) -> None:
            conn.execute(update(reconciliations).where(r.id == run_id, r.owner == owner).values(lease_until=0))

        await self.db.run_write(release_tx)


__all__ = ["COUNTERS", "FAILED", "RUNNING", "SUCCESS", "ReconciliationRunning", "Reconciliations", "Run", "Schedule",
           "reconciliation_schedules", "reconciliations"]
