"""Native change notifications in the ledger: webhook secrets (hashes only), the highest
sequencer seen per (task, key), pending deletes with leases, the per-task delete breaker and
counters, and the deletes waiting to be written into the object lists.

Delete propagation is configured per task in ``sync_tasks.options`` (JSON): ``propagate_deletes``
(bool, off by default), ``delete_grace_seconds`` and ``max_deletes_per_minute``.

Every method is one transaction through ``Database.run_write`` / ``run_read``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from omsync.db import Database
from omsync.domain.model import TaskStatus
from omsync.ledger.queue import TaskNotFound, now_ms
from omsync.ledger.tables import Id, metadata, sync_tasks

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_MAX_DELETES_PER_MINUTE",
    "Change",
    "DeleteSettings",
    "DeleteState",
    "NotificationLedger",
    "PendingDelete",
    "notify_delete_log",
    "notify_delete_state",
    "notify_deletes",
    "notify_sequencers",
    "notify_webhooks",
]

DEFAULT_GRACE_SECONDS = 60.0
DEFAULT_MAX_DELETES_PER_MINUTE = 100
BREAKER_WINDOW_MS = 60_000

notify_webhooks = Table(
    "notify_webhooks",
    metadata,
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("secret_hash", String(64), nullable=False),  # sha256 hex of the secret; the secret is never stored
    Column("created_at", BigInteger, nullable=False),
)

# The highest sequencer seen per key, and whether it was a create or a delete.
notify_sequencers = Table(
    "notify_sequencers",
    metadata,
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("key", LargeBinary, primary_key=True),
    Column("sequencer", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

notify_deletes = Table(
    "notify_deletes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("sequencer", String(64), nullable=True),
    Column("generation", Integer, nullable=False, server_default="1"),  # bumped by a repeated delete
    Column("due_at", BigInteger, nullable=False),  # ms: grace end, next attempt, or lease expiry
    Column("lease_owner", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("task_id", "key", name="uq_notify_deletes_task_key"),
    Index("ix_notify_deletes_due", "due_at"),
)

notify_delete_state = Table(
    "notify_delete_state",
    metadata,
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("window_start", BigInteger, nullable=False, server_default="0"),
    Column("window_count", Integer, nullable=False, server_default="0"),
    Column("tripped_at", BigInteger, nullable=True),  # set: deletes paused until an operator resumes
    Column("tripped_count", Integer, nullable=False, server_default="0"),
    Column("deleted", BigInteger, nullable=False, server_default="0"),
    Column("kept", BigInteger, nullable=False, server_default="0"),  # the source still had the key
    Column("failed", BigInteger, nullable=False, server_default="0"),
    Column("discarded", BigInteger, nullable=False, server_default="0"),
)

# Delete outcomes waiting to be written into the destination's deleted object list.
notify_delete_log = Table(
    "notify_delete_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("outcome", String(16), nullable=False),  # deleted | kept | failed
    Column("message", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
    Index("ix_notify_delete_log_task", "task_id", "id"),
)

@dataclass(frozen=True)
class DeleteSettings:
    """A task's delete propagation: off by default."""

    enabled: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    max_per_minute: int = DEFAULT_MAX_DELETES_PER_MINUTE


@dataclass(frozen=True)
class DeleteState:
    """Counters and breaker of a task's delete propagation."""

    settings: DeleteSettings
    pending: int = 0
    tripped_at: int | None = None
    tripped_count: int = 0
    deleted: int = 0
    kept: int = 0
    failed: int = 0
    discarded: int = 0


@dataclass(frozen=True)
class Change:
    """One accepted record: its key (decoded), kind (created/deleted) and sequencer."""

    key: str
    kind: str
    sequencer: str | None


@dataclass(frozen=True)
class PendingDelete:
    """A delete claimed by a worker until ``due_at`` (its lease)."""

    id: int
    task_id: str
    key: str
    sequencer: str | None
    generation: int
    attempts: int


def settings_of(options: str | None) -> DeleteSettings:
    """The delete settings stored in a task's ``options`` JSON (defaults for anything absent)."""
    try:
        data = json.loads(options or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    grace = data.get("delete_grace_seconds", DEFAULT_GRACE_SECONDS)
    limit = data.get("max_deletes_per_minute", DEFAULT_MAX_DELETES_PER_MINUTE)
    return DeleteSettings(
        enabled=data.get("propagate_deletes") is True,
        grace_seconds=float(grace) if isinstance(grace, int | float) and not isinstance(grace, bool) else DEFAULT_GRACE_SECONDS,
        max_per_minute=int(limit) if isinstance(limit, int) and not isinstance(limit, bool) else DEFAULT_MAX_DELETES_PER_MINUTE,
    )


def _insert(db: Database, table: Table) -> Any:
    return (postgresql.insert if db.is_postgres else sqlite.insert)(table)


class NotificationLedger:
    """Queries of the notification tables. Every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- webhook secrets ------------------------------------------------------------------------

    async def set_webhook(self, project_id: str, task_id: str, secret_hash: str) -> None:
        """Store (or replace) the hash of the task's webhook secret. Raises :class:`TaskNotFound`."""
        at = now_ms()

        def tx(conn: Connection) -> None:
            _owned(conn, project_id, task_id)
            conn.execute(delete(notify_webhooks).where(notify_webhooks.c.task_id == task_id))
            conn.execute(notify_webhooks.insert().values(task_id=task_id, secret_hash=secret_hash, created_at=at))

        await self.db.run_write(tx)

    async def webhook(self, task_id: str) -> tuple[str, str, str | None] | None:
        """``(project_id, src_bucket, secret_hash or None)`` of a task, or None when it does not exist."""

        def tx(conn: Connection) -> tuple[str, str, str | None] | None:
            row = conn.execute(
                select(sync_tasks.c.project_id, sync_tasks.c.src_bucket, notify_webhooks.c.secret_hash)
                .select_from(sync_tasks.outerjoin(notify_webhooks, notify_webhooks.c.task_id == sync_tasks.c.id))
                .where(sync_tasks.c.id == task_id)
            ).first()
            return None if row is None else (str(row[0]), str(row[1]), row[2])

        return await self.db.run_read(tx)

    async def has_webhook(self, project_id: str, task_id: str) -> int | None:
        """When the task's webhook secret was made (ms), or None. Raises :class:`TaskNotFound`."""

        def tx(conn: Connection) -> int | None:
            _owned(conn, project_id, task_id)
            value = conn.execute(
                select(notify_webhooks.c.created_at).where(notify_webhooks.c.task_id == task_id)
            ).scalar()
            return None if value is None else int(value)

        return await self.db.run_read(tx)

    # -- delete settings and state ------------------------------------------------------------

    async def delete_state(self, project_id: str | None, task_id: str) -> DeleteState:
        """Settings, pending deletes, breaker and counters. Raises :class:`TaskNotFound`
        (``project_id`` None: any project, for the operator)."""

        def tx(conn: Connection) -> DeleteState:
            query = select(sync_tasks.c.options).where(sync_tasks.c.id == task_id)
            if project_id is not None:
                query = query.where(sync_tasks.c.project_id == project_id)
            options = conn.execute(query).first()
            if options is None:
                raise TaskNotFound(task_id)
            settings = settings_of(options[0])
            pending = conn.execute(
                select(func.count()).select_from(notify_deletes).where(notify_deletes.c.task_id == task_id)
            ).scalar()
            row = conn.execute(select(notify_delete_state).where(notify_delete_state.c.task_id == task_id)).first()
            if row is None:
                return DeleteState(settings=settings, pending=int(pending or 0))
            return DeleteState(
                settings=settings, pending=int(pending or 0), tripped_at=row.tripped_at,
                tripped_count=int(row.tripped_count), deleted=int(row.deleted), kept=int(row.kept),
                failed=int(row.failed), discarded=int(row.discarded),
            )

        return await self.db.run_read(tx)

    async def set_delete_settings(self, project_id: str, task_id: str, settings: DeleteSettings) -> None:
        """Store the task's delete settings in its options. Raises :class:`TaskNotFound`."""

        def tx(conn: Connection) -> None:
            row = conn.execute(
                select(sync_tasks.c.options).where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id)
            ).first()
            if row is None:
                raise TaskNotFound(task_id)
            try:
                options = json.loads(row[0] or "{}")
            except ValueError:
                options = {}
            if not isinstance(options, dict):
                options = {}
            options.update(propagate_deletes=settings.enabled, delete_grace_seconds=settings.grace_seconds,
                           max_deletes_per_minute=settings.max_per_minute)
            conn.execute(update(sync_tasks).where(sync_tasks.c.id == task_id)
                         .values(options=json.dumps(options, separators=(",", ":"), sort_keys=True)))

        await self.db.run_write(tx)

    async def resume_deletes(self, project_id: str, task_id: str, *, discard: bool = False) -> int:
        """Close the task's breaker (deletes run again). With ``discard`` the deletes that
        waited are dropped instead (counted as discarded; those a worker holds now finish). Returns how many were dropped.
        Raises :class:`TaskNotFound`."""
        at = now_ms()

        def tx(conn: Connection) -> int:
            _owned(conn, project_id, task_id)
            dropped = 0
            if discard:
                # Deletes a worker holds right now are left to finish (their outcome is counted).
                dropped = int(conn.execute(delete(notify_deletes).where(
                    notify_deletes.c.task_id == task_id,
                    or_(notify_deletes.c.lease_owner.is_(None), notify_deletes.c.due_at <= at),
                )).rowcount or 0)
            _ensure_state(self.db, conn, task_id)
            conn.execute(
                update(notify_delete_state).where(notify_delete_state.c.task_id == task_id).values(
                    tripped_at=None, tripped_count=0, window_start=at, window_count=0,
                    discarded=notify_delete_state.c.discarded + dropped,
                )
            )
            return dropped

        return await self.db.run_write(tx)

    async def tripped_tasks(self) -> dict[str, int]:
        """Tasks whose breaker is open now: task id → deletes counted when it tripped."""

        def tx(conn: Connection) -> dict[str, int]:
            rows = conn.execute(
                select(notify_delete_state.c.task_id, notify_delete_state.c.tripped_count)
                .where(notify_delete_state.c.tripped_at.is_not(None))
            )
            return {str(r[0]): int(r[1]) for r in rows}

        return await self.db.run_read(tx)

    # -- ordering and recording ---------------------------------------------------------------

    async def sequencers(self, task_id: str, keys: Sequence[str]) -> dict[str, str]:
        """The highest sequencer seen so far for each of ``keys`` that has one."""
        encoded = sorted({k.encode("utf-8") for k in keys})
        if not encoded:
            return {}

        def tx(conn: Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(encoded), 500):
                rows = conn.execute(
                    select(notify_sequencers.c.key, notify_sequencers.c.sequencer).where(
                        notify_sequencers.c.task_id == task_id,
                        notify_sequencers.c.key.in_(encoded[start:start + 500]),
                    )
                )
                for row in rows:
                    found[bytes(row[0]).decode("utf-8")] = str(row[1])
            return found

        return await self.db.run_read(tx)

    async def record(self, project_id: str, task_id: str, changes: Sequence[Change],
                     settings: DeleteSettings) -> tuple[int, int, bool]:
        """Record the sequencers of accepted ``changes`` (keeping the highest per key) and, when
        ``settings.enabled``, schedule each delete after the grace delay; counts the deletes
        into the breaker's one-minute window and trips it above ``settings.max_per_minute``.

        A delete whose sequencer is lower than one already recorded (a newer create committed
        meanwhile) is not scheduled. Returns ``(scheduled, stale, tripped_now)``.
        Raises :class:`TaskNotFound`."""
        at = now_ms()
        due = at + int(settings.grace_seconds * 1000)

        def tx(conn: Connection) -> tuple[int, int, bool]:
            if self.db.is_postgres:
                conn.execute(select(sync_tasks.c.id).where(sync_tasks.c.id == task_id).with_for_update(key_share=True))
            _owned(conn, project_id, task_id)
            ordered = [c for c in changes if c.sequencer is not None]
            known: dict[bytes, str] = {}
            keys = sorted({c.key.encode("utf-8") for c in ordered})
            for start in range(0, len(keys), 500):
                for row in conn.execute(
                    select(notify_sequencers.c.key, notify_sequencers.c.sequencer).where(
                        notify_sequencers.c.task_id == task_id, notify_sequencers.c.key.in_(keys[start:start + 500])
                    )
                ):
                    known[bytes(row[0])] = str(row[1])
            scheduled = stale = 0
            highest: dict[bytes, tuple[str, str]] = {}
            deletes: list[Change] = []
            for change in changes:
                key = change.key.encode("utf-8")
                if change.sequencer is not None:
                    before = known.get(key)
                    if change.kind == "deleted" and before is not None and before > change.sequencer:
                        stale += 1
                        continue
                    best = highest.get(key)
                    if best is None or change.sequencer > best[0]:
                        highest[key] = (change.sequencer, change.kind)
                if change.kind == "deleted" and settings.enabled:
                    deletes.append(change)
            if highest:
                stmt = _insert(self.db, notify_sequencers)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[notify_sequencers.c.task_id, notify_sequencers.c.key],
                    set_={"sequencer": stmt.excluded.sequencer, "kind": stmt.excluded.kind,
                          "updated_at": stmt.excluded.updated_at},
                    where=notify_sequencers.c.sequencer < stmt.excluded.sequencer,
                )
                conn.execute(stmt, [{"task_id": task_id, "key": k, "sequencer": s, "kind": kind, "updated_at": at}
                                    for k, (s, kind) in highest.items()])
            tripped_now = False
            if deletes:
                stmt = _insert(self.db, notify_deletes)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[notify_deletes.c.task_id, notify_deletes.c.key],
                    set_={"sequencer": stmt.excluded.sequencer, "due_at": stmt.excluded.due_at,
                          "generation": notify_deletes.c.generation + 1, "attempts": 0,
                          "lease_owner": None},
                )
                conn.execute(stmt, [{"task_id": task_id, "key": c.key.encode("utf-8"), "sequencer": c.sequencer,
                                     "due_at": due, "created_at": at, "generation": 1, "attempts": 0}
                                    for c in deletes])
                scheduled = len(deletes)
                tripped_now = _count_breaker(self.db, conn, task_id, scheduled, settings.max_per_minute, at)
            return scheduled, stale, tripped_now

        return await self.db.run_write(tx)

    # -- the delete loop ------------------------------------------------------------------------

    async def claim_deletes(self, owner: str, limit: int, lease_ms: int) -> list[PendingDelete]:
        """Lease up to ``limit`` due deletes of running tasks whose breaker is closed (SKIP LOCKED on
        PostgreSQL; SQLite's single writer on SQLite)."""
        at = now_ms()

        def tx(conn: Connection) -> list[PendingDelete]:
            tripped = select(notify_delete_state.c.task_id).where(notify_delete_state.c.tripped_at.is_not(None))
            # A stopped task changes nothing in its destination: its deletes wait for a start.
            running = select(sync_tasks.c.id).where(sync_tasks.c.status == TaskStatus.SYNCHRONIZING.value)
            due = (
                select(notify_deletes.c.id)
                .where(notify_deletes.c.due_at <= at, notify_deletes.c.task_id.not_in(tripped),
                       notify_deletes.c.task_id.in_(running))
                .order_by(notify_deletes.c.due_at)
                .limit(limit)
            )
            if self.db.is_postgres:
                picked = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
                target = update(notify_deletes).where(notify_deletes.c.id == picked.c.id)
            else:
                target = update(notify_deletes).where(notify_deletes.c.id.in_(due.scalar_subquery()))
            rows = conn.execute(
                target.values(lease_owner=owner, due_at=at + lease_ms).returning(
                    notify_deletes.c.id, notify_deletes.c.task_id, notify_deletes.c.key, notify_deletes.c.sequencer,
                    notify_deletes.c.generation, notify_deletes.c.attempts,
                )
            ).all()
            return [PendingDelete(int(r[0]), str(r[1]), bytes(r[2]).decode("utf-8"), r[3], int(r[4]), int(r[5]))
                    for r in rows]

        return await self.db.run_write(tx)

    async def has_due_deletes(self) -> bool:
        """Whether any delete is due now (a cheap read that spares idle workers a write)."""
        at = now_ms()

        def tx(conn: Connection) -> bool:
            return conn.execute(select(notify_deletes.c.id).where(notify_deletes.c.due_at <= at).limit(1)).first() \
                is not None

        return await self.db.run_read(tx)

    async def finish_delete(self, owner: str, item: PendingDelete, outcome: str, message: str | None) -> bool:
        """Record the final ``outcome`` (deleted / kept / failed) of a claimed delete: counted,
        logged for the object list, and the pending row removed. Returns False (nothing
        written) when the lease was lost or a newer delete of the key arrived meanwhile."""
        at = now_ms()

        def tx(conn: Connection) -> bool:
            gone = conn.execute(
                delete(notify_deletes).where(
                    notify_deletes.c.id == item.id, notify_deletes.c.lease_owner == owner,
                    notify_deletes.c.generation == item.generation,
                )
            )
            if not gone.rowcount:
                return False
            _ensure_state(self.db, conn, item.task_id)
            column = notify_delete_state.c[outcome]
            conn.execute(update(notify_delete_state).where(notify_delete_state.c.task_id == item.task_id)
                         .values({column: column + 1}))
            conn.execute(notify_delete_log.insert().values(
                task_id=item.task_id, key=item.key.encode("utf-8"), outcome=outcome, message=message, at=at))
            return True

        return await self.db.run_write(tx)

    async def retry_delete(self, owner: str, item: PendingDelete, delay_seconds: float) -> bool:
        """Give a claimed delete back for another attempt after ``delay_seconds``."""
        at = now_ms()

        def tx(conn: Connection) -> bool:
            result = conn.execute(
                update(notify_deletes)
                .where(notify_deletes.c.id == item.id, notify_deletes.c.lease_owner == owner,
                       notify_deletes.c.generation == item.generation)
                .values(lease_owner=None, due_at=at + int(delay_seconds * 1000), attempts=item.attempts + 1)
            )
            return bool(result.rowcount)

        return await self.db.run_write(tx)

    async def release_deletes(self, owner: str, items: Sequence[PendingDelete]) -> None:
        """Hand claimed deletes back untouched (the breaker tripped or the process stops)."""
        if not items:
            return
        at = now_ms()
        ids = [i.id for i in items]

        def tx(conn: Connection) -> None:
            conn.execute(update(notify_deletes)
                         .where(notify_deletes.c.id.in_(ids), notify_deletes.c.lease_owner == owner)
                         .values(lease_owner=None, due_at=at))

        await self.db.run_write(tx)

    async def logged_deletes(self, limit: int = 10_000) -> dict[str, list[tuple[int, str, str, str | None, int]]]:
        """Delete outcomes not yet written to object lists, per task: ``(id, key, outcome, message, at)``."""

        def tx(conn: Connection) -> dict[str, list[tuple[int, str, str, str | None, int]]]:
            out: dict[str, list[tuple[int, str, str, str | None, int]]] = {}
            for row in conn.execute(select(notify_delete_log).order_by(notify_delete_log.c.id).limit(limit)):
                out.setdefault(str(row.task_id), []).append(
                    (int(row.id), bytes(row.key).decode("utf-8"), str(row.outcome), row.message, int(row.at)))
            return out

        return await self.db.run_read(tx)

    async def forget_logged(self, ids: Sequence[int]) -> None:
        """Drop delete-log rows written to an object list (by id)."""
        batch = list(ids)

        def tx(conn: Connection) -> None:
            for start in range(0, len(batch), 500):
                conn.execute(delete(notify_delete_log).where(notify_delete_log.c.id.in_(batch[start:start + 500])))

        await self.db.run_write(tx)

    async def task_settings(self, task_ids: Sequence[str]) -> dict[str, DeleteSettings]:
        """Delete settings of existing tasks among ``task_ids``."""
        ids = sorted(set(task_ids))

        def tx(conn: Connection) -> dict[str, DeleteSettings]:
            rows = conn.execute(select(sync_tasks.c.id, sync_tasks.c.options).where(sync_tasks.c.id.in_(ids)))
            return {str(r[0]): settings_of(r[1]) for r in rows}

        return await self.db.run_read(tx)


def _owned(conn: Connection, project_id: str, task_id: str) -> None:
    found = conn.execute(
        select(sync_tasks.c.id).where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id)
    ).first()
    if found is None:
        raise TaskNotFound(task_id)


def _ensure_state(db: Database, conn: Connection, task_id: str) -> None:
    conn.execute(_insert(db, notify_delete_state).values(task_id=task_id).on_conflict_do_nothing())


def _count_breaker(db: Database, conn: Connection, task_id: str, count: int, limit: int, at: int) -> bool:
    """Add ``count`` deletes to the task's one-minute window; trip the breaker when the window
    holds more than ``limit``. Returns True when this call tripped it."""
    _ensure_state(db, conn, task_id)
    row = conn.execute(
        select(notify_delete_state.c.window_start, notify_delete_state.c.window_count, notify_delete_state.c.tripped_at)
        .where(notify_delete_state.c.task_id == task_id)
    ).one()
    start, current = int(row[0]), int(row[1])
    if at - start >= BREAKER_WINDOW_MS:
        start, current = at, 0
    current += count
    values: dict[str, Any] = {"window_start": start, "window_count": current}
    tripped_now = row[2] is None and current > limit
    if tripped_now:
        values.update(tripped_at=at, tripped_count=current)
    conn.execute(update(notify_delete_state).where(notify_delete_state.c.task_id == task_id).values(**values))
    return tripped_now


def counts_view(state: DeleteState) -> Mapping[str, Any]:
    """A JSON-ready view of a task's delete state (API answer and dashboard)."""
    return {
        "propagate_deletes": state.settings.enabled,
        "delete_grace_seconds": state.settings.grace_seconds,
        "max_deletes_per_minute": state.settings.max_per_minute,
        "pending_deletes": state.pending,
        "breaker_tripped": state.tripped_at is not None,
        "breaker_tripped_at": state.tripped_at,
        "breaker_tripped_count": state.tripped_count,
        "deleted": state.deleted,
        "kept": state.kept,
        "failed": state.failed,
        "discarded": state.discarded,
    }
