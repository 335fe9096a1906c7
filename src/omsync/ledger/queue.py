"""Accept, claim and finish: the ledger is the work queue (design §3).

Accounting invariant, per task and at every commit:
``REQUEST = SUCCESS + FAILURE + SKIP + sum(generation - reported_generation)``.
Every accepted key occurrence bumps a row's ``generation`` and counts one REQUEST; every
occurrence later gets exactly one outcome. Occurrences absorbed by a copy of a later generation
count as SKIP with reason ``coalesced``.

Lock order, to stay free of deadlocks on PostgreSQL: the task row first, then ledger rows. A
transaction that may wait for several ledger rows holds the lock of their task(s) first (accept,
finish, retry_failed take it ``FOR NO KEY UPDATE``; renew and release ``FOR SHARE``, which
conflicts with that but not with itself); claim never waits (``SKIP LOCKED`` on ledger rows, and
only *try*-advisory locks for tasks with a concurrency cap) and retry_later locks one row. Neither
lock blocks the foreign-key checks of inserts referencing the task.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from omsync.db import Database
from omsync.domain.model import Outcome, OutcomeKind, TaskStatus
from omsync.domain.stats import bucket_start, latency_column
from omsync.ledger.tables import ledger, open_uploads, outcome_log, stat_buckets, sync_tasks

PENDING, INFLIGHT, DONE, FAILED = "pending", "inflight", "done", "failed"
COALESCED = "coalesced"

# The predicate of the partial index ``ix_ledger_task_due`` with its values inline in the SQL:
# neither SQLite nor a generic PostgreSQL plan can match the index against bound parameters, and
# without it every claim would scan the task's whole ledger, settled rows included.
OPEN_STATES = ledger.c.state.in_([literal(PENDING, literal_execute=True), literal(INFLIGHT, literal_execute=True)])

# First key of the PostgreSQL advisory locks that serialise claims of a task with a concurrency
# cap (the second is the hash of the task id); any constant no other user of the database takes.
ADVISORY_CLAIM_CLASS = 0x6F6D73  # "oms"


def now_ms() -> int:
    return int(time.time() * 1000)


class TaskNotFound(LookupError):
    """The task does not exist (or belongs to another project)."""


class BacklogFull(RuntimeError):
    """The task's pending backlog is at its configured bound; retry after ``retry_after`` s."""

    def __init__(self, pending: int, retry_after: int) -> None:
        super().__init__(f"{pending} keys pending")
        self.pending = pending
        self.retry_after = retry_after


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload recorded by :meth:`Ledger.record_upload` and not yet forgotten."""

    id: int
    bucket: str
    upload_id: str


@dataclass(frozen=True)
class Claim:
    """A key a worker owns until its lease runs out.

    ``generation`` is the generation read at claim time: the outcome is recorded for it.
    ``pending_since`` is when the oldest occurrence being served was accepted (ms).
    ``orphan_uploads`` are multipart uploads of this key left by an earlier copy that never
    finished (its process died): the new owner aborts them before copying.
    """

    row_id: int
    task_id: str
    key: str
    generation: int
    attempts: int
    pending_since: int
    orphan_uploads: tuple[OpenUpload, ...] = ()


@dataclass(frozen=True)
class FinishResult:
    """What :meth:`Ledger.finish` recorded. ``recorded`` is False when the lease was lost."""

    recorded: bool
    final: bool = False  # False: a newer generation arrived, the key stays pending
    coalesced: int = 0


def _insert(db: Database, table: Any) -> Any:
    return (postgresql.insert if db.is_postgres else sqlite.insert)(table)


class Ledger:
    """Queries over the ledger tables. Every method is one transaction."""

    def __init__(self, db: Database, *, max_pending_per_task: int = 5_000_000) -> None:
        self.db = db
        self.max_pending_per_task = max_pending_per_task
        self._turn = 0  # rotates which task a claim serves first

    async def _lock_task(self, conn: AsyncConnection, task_id: str) -> Any:
        query = select(sync_tasks.c.id, sync_tasks.c.status, sync_tasks.c.pending_keys).where(
            sync_tasks.c.id == task_id
        )
        if self.db.is_postgres:
            query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE
        return (await conn.execute(query)).first()

    async def _share_tasks_of(self, conn: AsyncConnection, row_ids: Sequence[int]) -> None:
        """PostgreSQL: lock the tasks of ``row_ids`` ``FOR SHARE`` (in id order) before their
        rows, so that a multi-row update cannot deadlock with an accept holding some of them."""
        if not self.db.is_postgres:
            return
        await conn.execute(
            select(sync_tasks.c.id)
            .where(sync_tasks.c.id.in_(select(ledger.c.task_id).where(ledger.c.id.in_(list(row_ids)))))
            .order_by(sync_tasks.c.id)
            .with_for_update(read=True)  # FOR SHARE
        )

    async def _count(self, conn: AsyncConnection, task_id: str, at: int, **deltas: int) -> None:
        """Add ``deltas`` (request/success/failure/skip/size) to the task's bucket for ``at``."""
        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            return
        stmt = _insert(self.db, stat_buckets).values(task_id=task_id, bucket_start=bucket_start(at), **deltas)
        stmt = stmt.on_conflict_do_update(
            index_elements=[stat_buckets.c.task_id, stat_buckets.c.bucket_start],
            set_={k: stat_buckets.c[k] + stmt.excluded[k] for k in deltas},
        )
        await conn.execute(stmt)

    # -- accept ---------------------------------------------------------------------------------

    async def accept(self, task_id: str, keys: Sequence[str], *, project_id: str | None = None) -> None:
        """Record one occurrence per element of ``keys`` (duplicates count separately).

        Raises :class:`TaskNotFound` for an unknown task (or one of another project) and
        :class:`BacklogFull` when the task already has ``max_pending_per_task`` keys pending.
        Returns only after the commit: an accepted event survives any crash after this.
        """
        at = now_ms()
        occurrences = Counter(k.encode("utf-8") for k in keys)
        async with self.db.write() as conn:
            task = await self._lock_task(conn, task_id)
            if task is None:
                raise TaskNotFound(task_id)
            if project_id is not None:
                owner = await conn.scalar(select(sync_tasks.c.project_id).where(sync_tasks.c.id == task_id))
                if owner != project_id:
                    raise TaskNotFound(task_id)
            if task.pending_keys >= self.max_pending_per_task:
                raise BacklogFull(task.pending_keys, retry_after=5)
            existing = {
                row.key: row.state
                for row in await conn.execute(
                    select(ledger.c.key, ledger.c.state).where(
                        ledger.c.task_id == task_id, ledger.c.key.in_(list(occurrences))
                    )
                )
            }
            newly_pending = sum(1 for k in occurrences if existing.get(k, DONE) in (DONE, FAILED))
            stmt = _insert(self.db, ledger)
            reopened = or_(ledger.c.state == DONE, ledger.c.state == FAILED)  # no IN: executemany
            stmt = stmt.on_conflict_do_update(
                index_elements=[ledger.c.task_id, ledger.c.key],
                set_={
                    "generation": ledger.c.generation + stmt.excluded.generation,
                    # New data makes a waiting retry due now with a fresh attempt budget;
                    # an in-flight copy keeps its lease and will see the generation move.
                    "state": case((ledger.c.state == INFLIGHT, INFLIGHT), else_=PENDING),
                    "due_at": case((ledger.c.state == INFLIGHT, ledger.c.due_at), else_=stmt.excluded.due_at),
                    "attempts": case((ledger.c.state == INFLIGHT, ledger.c.attempts), else_=0),
                    "pending_since": case(
                        (reopened, stmt.excluded.pending_since), else_=ledger.c.pending_since
                    ),
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            await conn.execute(
                stmt,
                [
                    {
                        "task_id": task_id,
                        "key": key,
                        "generation": n,
                        "reported_generation": 0,
                        "state": PENDING,
                        "due_at": at,
                        "attempts": 0,
                        "pending_since": at,
                        "updated_at": at,
                    }
                    for key, n in occurrences.items()
                ],
            )
            if newly_pending:
                await conn.execute(
                    update(sync_tasks)
                    .where(sync_tasks.c.id == task_id)
                    .values(pending_keys=sync_tasks.c.pending_keys + newly_pending)
                )
            await self._count(conn, task_id, at, request=len(keys))

    # -- claim ----------------------------------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, lease_seconds: float, *, caps: Mapping[str, int] | None = None
    ) -> list[Claim]:
        """Lease up to ``limit`` due keys of running tasks: pending ones whose time has come and
        in-flight ones whose lease expired (their worker died).

        Fair across tasks: the running tasks with due keys share ``limit`` round-robin (an equal
        share each, the first task of the rotation changing from call to call, shares a task
        cannot use going to the others), so a task with a huge backlog cannot starve another
        task's fresh events. Within a task, keys go in due order. ``caps`` bounds how many keys
        of a task this call may take (0 skips the task: the caller is throttling it). A task's
        ``max_concurrency`` bounds its live leases across all claimers.
        """
        if limit <= 0:
            return []
        at = now_ms()
        lease_ms = int(lease_seconds * 1000)
        async with self.db.write() as conn:
            # The tasks table is small and each EXISTS is one probe of ix_ledger_task_due.
            candidates = (await conn.execute(
                select(sync_tasks.c.id, sync_tasks.c.max_concurrency)
                .where(
                    sync_tasks.c.status == TaskStatus.SYNCHRONIZING.value,
                    sync_tasks.c.pending_keys > 0,
                    exists().where(ledger.c.task_id == sync_tasks.c.id, OPEN_STATES, ledger.c.due_at <= at),
                )
                .order_by(sync_tasks.c.id)
            )).all()
            order = [c for c in candidates if not caps or caps.get(c.id, 1) > 0]
            if not order:
                return []
            start = self._turn % len(order)
            self._turn += 1
            order = order[start:] + order[:start]
            concurrency = {t.id: t.max_concurrency for t in order}
            room: dict[str, int | None] = {}  # keys a task may still take in this call; None: any
            rows: list[Any] = []
            # Rounds of equal shares: a task that takes less than its share (nothing more due,
            # rows locked by another claimer, at its cap) drops out and the rest share what is left.
            queue = [t.id for t in order]
            left = limit
            while left > 0 and queue:
                base, extra = divmod(left, len(queue))
                untried: list[str] = []
                full: list[str] = []
                for index, task_id in enumerate(queue):
                    want = base + (1 if index < extra else 0)
                    if want == 0:
                        untried.append(task_id)
                        continue
                    if task_id not in room:
                        room[task_id] = await self._room(conn, task_id, caps, concurrency[task_id], at)
                    cap = room[task_id]
                    if cap is not None:
                        want = min(want, cap)
                    if want == 0:
                        continue
                    got = await self._claim_task(conn, task_id, owner, want, at, lease_ms)
                    rows.extend(got)
                    left -= len(got)
                    if cap is not None:
                        room[task_id] = cap - len(got)
                    if len(got) == want and room[task_id] != 0:
                        full.append(task_id)
                queue = untried + full
        orphans: dict[tuple[str, bytes], list[OpenUpload]] = {}
        if rows:
            async with self.db.read() as conn:
                found = await conn.execute(
                    select(open_uploads).where(
                        open_uploads.c.task_id.in_({r.task_id for r in rows}),
                        open_uploads.c.key.in_([r.key for r in rows]),
                    )
                )
                for u in found:
                    orphans.setdefault((u.task_id, u.key), []).append(OpenUpload(u.id, u.bucket, u.upload_id))
        return [
            Claim(
                row_id=r.id, task_id=r.task_id, key=r.key.decode("utf-8"), generation=r.generation,
                attempts=r.attempts, pending_since=r.pending_since or at,
                orphan_uploads=tuple(orphans.get((r.task_id, r.key), ())),
            )
            for r in rows
        ]

    async def _room(
        self, conn: AsyncConnection, task_id: str, caps: Mapping[str, int] | None, max_concurrency: int | None,
        at: int,
    ) -> int | None:
        """How many keys of the task one claim may take: the caller's cap and the room under the
        task's concurrency cap, whichever is smaller; None when neither bounds it."""
        cap = caps.get(task_id) if caps else None
        if max_concurrency is not None:
            free = await self._free_concurrency(conn, task_id, max_concurrency, at)
            cap = free if cap is None else min(cap, free)
        return cap

    async def _free_concurrency(self, conn: AsyncConnection, task_id: str, maximum: int, at: int) -> int:
        """How many more keys of the task may be leased under its ``max_concurrency``: the
        maximum minus its live leases (expired ones belong to dead workers and are due again).

        On PostgreSQL claimers of one capped task take turns on a transaction-scoped advisory
        lock, so that two of them cannot both count the same free room; one that does not get
        it at once skips the task this time (a claim never waits)."""
        if self.db.is_postgres:
            got = await conn.scalar(
                select(func.pg_try_advisory_xact_lock(ADVISORY_CLAIM_CLASS, func.hashtext(task_id)))
            )
            if not got:
                return 0
        leased = await conn.scalar(
            select(func.count()).select_from(ledger).where(
                ledger.c.task_id == task_id, ledger.c.state == INFLIGHT, ledger.c.due_at > at
            )
        )
        return max(0, maximum - int(leased or 0))

    async def _claim_task(
        self, conn: AsyncConnection, task_id: str, owner: str, limit: int, at: int, lease_ms: int
    ) -> Sequence[Any]:
        """Lease up to ``limit`` due keys of one task, oldest due first."""
        due = (
            select(ledger.c.id)
            .join(sync_tasks, sync_tasks.c.id == ledger.c.task_id)
            .where(
                ledger.c.task_id == task_id, OPEN_STATES, ledger.c.due_at <= at,
                sync_tasks.c.status == TaskStatus.SYNCHRONIZING.value,
            )
            .order_by(ledger.c.due_at)
            .limit(limit)
        )
        if self.db.is_postgres:
            # Rows another claimer is locking are skipped, never waited for. The pick is a
            # MATERIALIZED CTE so it runs exactly once: as an IN (subquery) the planner may
            # re-run it, and a re-run that skips different rows would update rows never locked.
            picked = due.with_for_update(of=ledger, skip_locked=True).cte("due").prefix_with("MATERIALIZED")
            target = update(ledger).where(ledger.c.id == picked.c.id)
        else:
            # BEGIN IMMEDIATE already makes this the only writer of the database.
            target = update(ledger).where(ledger.c.id.in_(due.scalar_subquery()))
        stmt = (
            target
            .values(state=INFLIGHT, lease_owner=owner, due_at=at + lease_ms, updated_at=at)
            .returning(
                ledger.c.id, ledger.c.task_id, ledger.c.key, ledger.c.generation,
                ledger.c.attempts, ledger.c.pending_since,
            )
        )
        return (await conn.execute(stmt)).all()

    async def renew(self, owner: str, row_ids: Sequence[int], lease_seconds: float) -> int:
        """Extend the leases ``owner`` still holds; returns how many were extended."""
        if not row_ids:
            return 0
        at = now_ms()
        async with self.db.write() as conn:
            await self._share_tasks_of(conn, row_ids)
            result = await conn.execute(
                update(ledger)
                .where(ledger.c.id.in_(list(row_ids)), ledger.c.lease_owner == owner, ledger.c.state == INFLIGHT)
                .values(due_at=at + int(lease_seconds * 1000))
            )
        return int(result.rowcount or 0)

    # -- finish ---------------------------------------------------------------------------------

    async def _owned_row(self, conn: AsyncConnection, owner: str, claim: Claim) -> Any:
        query = select(ledger.c.generation, ledger.c.reported_generation).where(
            ledger.c.id == claim.row_id, ledger.c.lease_owner == owner, ledger.c.state == INFLIGHT
        )
        if self.db.is_postgres:
            query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE
        return (await conn.execute(query)).first()

    async def finish(self, owner: str, claim: Claim, outcome: Outcome) -> FinishResult:
        """Record ``outcome`` for the claimed generation.

        If ``owner`` no longer holds the lease nothing is written (``recorded=False``). If newer
        occurrences arrived meanwhile, the served ones count as SKIP ``coalesced`` and the key
        stays pending for another copy; otherwise the outcome is final and every older
        occurrence it absorbed counts as SKIP ``coalesced``.
        """
        at = now_ms()
        async with self.db.write() as conn:
            await self._lock_task(conn, claim.task_id)
            row = await self._owned_row(conn, owner, claim)
            if row is None:
                return FinishResult(recorded=False)
            served = claim.generation - row.reported_generation
            if row.generation != claim.generation:
                await conn.execute(
                    update(ledger).where(ledger.c.id == claim.row_id).values(
                        state=PENDING, due_at=at, attempts=0, lease_owner=None, reported_generation=claim.generation,
                        pending_since=at, updated_at=at,
                    )
                )
                await self._count(conn, claim.task_id, at, skip=served)
                return FinishResult(recorded=True, final=False, coalesced=served)
            kind = outcome.kind
            await conn.execute(
                update(ledger).where(ledger.c.id == claim.row_id).values(
                    state=FAILED if kind is OutcomeKind.FAILURE else DONE,
                    lease_owner=None, reported_generation=claim.generation,
                    copied_generation=claim.generation if kind is OutcomeKind.SUCCESS else ledger.c.copied_generation,
                    outcome=kind.value, reason=outcome.reason, message=outcome.message,
                    size=outcome.size if kind is OutcomeKind.SUCCESS else ledger.c.size,
                    attempts=claim.attempts + 1, pending_since=None, updated_at=at,
                )
            )
            await conn.execute(
                update(sync_tasks).where(sync_tasks.c.id == claim.task_id)
                .values(pending_keys=sync_tasks.c.pending_keys - 1)
            )
            counts = {"success": 0, "failure": 0, "skip": served - 1, "size": 0}
            counts[kind.value.lower()] += 1
            if kind is OutcomeKind.SUCCESS:
                counts["size"] = outcome.size
            counts[latency_column(at - claim.pending_since)] = 1
            await self._count(conn, claim.task_id, at, **counts)
            await conn.execute(
                outcome_log.insert().values(
                    task_id=claim.task_id, key=claim.key.encode("utf-8"), outcome=kind.value,
                    reason=outcome.reason, message=outcome.message, at=at,
                )
            )
        return FinishResult(recorded=True, final=True, coalesced=served - 1)

    async def finish_many(self, owner: str, items: Sequence[tuple[Claim, Outcome]]) -> list[FinishResult]:
        """Record a batch of outcomes in one transaction: the same effect and the same results,
        in order, as calling :meth:`finish` for each ``(claim, outcome)`` in turn (all at one
        timestamp). A row named twice is recorded once; the later item finds its lease gone.

        Set-based: one read of the owned rows, one executemany per kind of row update, one
        ``pending_keys`` update and one statistics upsert per task, one executemany into
        ``outcome_log``. On PostgreSQL the batch's task rows are locked in id order before its
        ledger rows (the module's lock order). Any database error rolls the whole batch back.
        """
        if not items:
            return []
        at = now_ms()
        async with self.db.write() as conn:
            task_ids = sorted({claim.task_id for claim, _ in items})
            if self.db.is_postgres:
                await conn.execute(
                    select(sync_tasks.c.id).where(sync_tasks.c.id.in_(task_ids))
                    .order_by(sync_tasks.c.id).with_for_update(key_share=True)  # FOR NO KEY UPDATE
                )
            query = (
                select(ledger.c.id, ledger.c.generation, ledger.c.reported_generation)
                .where(ledger.c.id.in_(sorted({claim.row_id for claim, _ in items})),
                       ledger.c.lease_owner == owner, ledger.c.state == INFLIGHT)
                .order_by(ledger.c.id)
            )
            if self.db.is_postgres:
                query = query.with_for_update(key_share=True)
            owned = {row.id: row for row in await conn.execute(query)}
            results: list[FinishResult] = []
            moved: list[dict[str, Any]] = []
            final: list[dict[str, Any]] = []
            logged: list[dict[str, Any]] = []
            finished: Counter[str] = Counter()
            counts: dict[str, Counter[str]] = {}
            for claim, outcome in items:
                row = owned.pop(claim.row_id, None)
                if row is None:
                    results.append(FinishResult(recorded=False))
                    continue
                served = claim.generation - row.reported_generation
                tally = counts.setdefault(claim.task_id, Counter())
                if row.generation != claim.generation:
                    moved.append({"b_id": claim.row_id, "b_reported": claim.generation})
                    tally["skip"] += served
                    results.append(FinishResult(recorded=True, final=False, coalesced=served))
                    continue
                kind = outcome.kind
                success = kind is OutcomeKind.SUCCESS
                final.append({
                    "b_id": claim.row_id, "b_state": FAILED if kind is OutcomeKind.FAILURE else DONE,
                    "b_reported": claim.generation, "b_copied": claim.generation if success else None,
                    "b_outcome": kind.value, "b_reason": outcome.reason, "b_message": outcome.message,
                    "b_size": outcome.size if success else None, "b_attempts": claim.attempts + 1,
                })
                logged.append({
                    "task_id": claim.task_id, "key": claim.key.encode("utf-8"), "outcome": kind.value,
                    "reason": outcome.reason, "message": outcome.message, "at": at,
                })
                finished[claim.task_id] += 1
                tally["skip"] += served - 1
                tally[kind.value.lower()] += 1
                if success:
                    tally["size"] += outcome.size
                tally[latency_column(at - claim.pending_since)] += 1
                results.append(FinishResult(recorded=True, final=True, coalesced=served - 1))
            if moved:
                await conn.execute(
                    update(ledger).where(ledger.c.id == bindparam("b_id")).values(
                        state=PENDING, due_at=at, attempts=0, lease_owner=None,
                        reported_generation=bindparam("b_reported"), pending_since=at, updated_at=at,
                    ),
                    moved,
                )
            if final:
                await conn.execute(
                    update(ledger).where(ledger.c.id == bindparam("b_id")).values(
                        state=bindparam("b_state"), lease_owner=None,
                        reported_generation=bindparam("b_reported"),
                        copied_generation=func.coalesce(
                            bindparam("b_copied", type_=ledger.c.copied_generation.type),
                            ledger.c.copied_generation),
                        outcome=bindparam("b_outcome"), reason=bindparam("b_reason"),
                        message=bindparam("b_message"),
                        size=func.coalesce(bindparam("b_size", type_=ledger.c.size.type), ledger.c.size),
                        attempts=bindparam("b_attempts"), pending_since=None, updated_at=at,
                    ),
                    final,
                )
            for task_id in task_ids:
                if finished[task_id]:
                    await conn.execute(
                        update(sync_tasks).where(sync_tasks.c.id == task_id)
                        .values(pending_keys=sync_tasks.c.pending_keys - finished[task_id])
                    )
                if task_id in counts:
                    await self._count(conn, task_id, at, **counts[task_id])
            if logged:
                await conn.execute(outcome_log.insert(), logged)
        return results

    async def retry_later(self, owner: str, claim: Claim, delay_seconds: float, reason: str, message: str) -> bool:
        """Give the key back for another attempt after ``delay_seconds`` (no outcome yet).

        Returns False when the lease was lost. A newer generation makes it due at once.
        """
        at = now_ms()
        async with self.db.write() as conn:
            row = await self._owned_row(conn, owner, claim)
            if row is None:
                return False
            moved = row.generation != claim.generation
            await conn.execute(
                update(ledger).where(ledger.c.id == claim.row_id).values(
                    state=PENDING, lease_owner=None,
                    due_at=at if moved else at + int(delay_seconds * 1000),
                    attempts=0 if moved else claim.attempts + 1,
                    reason=reason, message=message, updated_at=at,
                )
            )
        return True

    async def release(self, owner: str, claims: Sequence[Claim]) -> None:
        """Hand keys back untouched (graceful shutdown): due now, attempt not counted."""
        if not claims:
            return
        at = now_ms()
        async with self.db.write() as conn:
            await self._share_tasks_of(conn, [c.row_id for c in claims])
            await conn.execute(
                update(ledger)
                .where(ledger.c.id.in_([c.row_id for c in claims]), ledger.c.lease_owner == owner,
                       ledger.c.state == INFLIGHT)
                .values(state=PENDING, lease_owner=None, due_at=at, updated_at=at)
            )

    # -- multipart uploads in flight ---------------------------------------------------------

    async def record_upload(self, claim: Claim, bucket: str, upload_id: str) -> int:
        """Remember a started multipart upload (committed before any part is sent), so that a
        crash cannot orphan it unnoticed. Returns the record's id for :meth:`forget_upload`."""
        async with self.db.write() as conn:
            result = await conn.execute(
                open_uploads.insert().values(
                    task_id=claim.task_id, key=claim.key.encode("utf-8"), bucket=bucket,
                    upload_id=upload_id, created_at=now_ms(),
                ).returning(open_uploads.c.id)
            )
            return int(result.scalar_one())

    async def forget_upload(self, record_id: int) -> None:
        """The upload was completed or aborted: drop its record."""
        async with self.db.write() as conn:
            await conn.execute(open_uploads.delete().where(open_uploads.c.id == record_id))

    # -- re-drive and inspection ---------------------------------------------------------------

    async def retry_failed(self, task_id: str, keys: Sequence[str] | None = None) -> int:
        """Re-drive failed keys (all, or those named): each becomes a new accepted occurrence
        (REQUEST + 1) so the accounting invariant holds. Returns how many keys were re-driven."""
        at = now_ms()
        where = and_(ledger.c.task_id == task_id, ledger.c.state == FAILED)
        if keys is not None:
            where = and_(where, ledger.c.key.in_([k.encode("utf-8") for k in keys]))
        async with self.db.write() as conn:
            if await self._lock_task(conn, task_id) is None:
                raise TaskNotFound(task_id)
            result = await conn.execute(
                update(ledger).where(where).values(
                    state=PENDING, generation=ledger.c.generation + 1, due_at=at, attempts=0,
                    pending_since=at, updated_at=at,
                )
            )
            count = int(result.rowcount or 0)
            if count:
                await conn.execute(
                    update(sync_tasks).where(sync_tasks.c.id == task_id)
                    .values(pending_keys=sync_tasks.c.pending_keys + count)
                )
                await self._count(conn, task_id, at, request=count)
        return count

    async def failed_keys(self, task_id: str, *, limit: int = 100, after_id: int = 0) -> list[dict[str, Any]]:
        """Failed keys with their reasons, in row order, ``limit`` per page after ``after_id``."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(ledger.c.id, ledger.c.key, ledger.c.reason, ledger.c.message, ledger.c.attempts,
                       ledger.c.updated_at)
                .where(ledger.c.task_id == task_id, ledger.c.state == FAILED, ledger.c.id > after_id)
                .order_by(ledger.c.id).limit(limit)
            )
            return [
                {"id": r.id, "key": r.key.decode("utf-8"), "reason": r.reason, "message": r.message,
                 "attempts": r.attempts, "time": r.updated_at}
                for r in rows
            ]

    async def pending_occurrences(self, task_id: str) -> int:
        """Occurrences accepted but not yet given an outcome."""
        async with self.db.read() as conn:
            value = await conn.scalar(
                select(func.coalesce(func.sum(ledger.c.generation - ledger.c.reported_generation), 0))
                .where(ledger.c.task_id == task_id)
            )
        return int(value or 0)

    async def totals(self, task_id: str, start_ms: int | None = None, end_ms: int | None = None) -> dict[str, int]:
        """Sum of the counters of the task over ``[start_ms, end_ms)`` (all time by default)."""
        cols = ("request", "success", "failure", "skip", "size")
        query = select(*(func.coalesce(func.sum(stat_buckets.c[c]), 0) for c in cols)).where(
            stat_buckets.c.task_id == task_id
        )
        if start_ms is not None:
            query = query.where(stat_buckets.c.bucket_start >= start_ms)
        if end_ms is not None:
            query = query.where(stat_buckets.c.bucket_start < end_ms)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one()
        return {c: int(v) for c, v in zip(cols, row, strict=True)}

    async def buckets(self, task_id: str, start_ms: int, end_ms: int, column: str) -> list[tuple[int, int]]:
        """Raw 5-minute buckets ``(bucket_start, value)`` of one counter with a non-zero value
        whose bucket overlaps ``[start_ms, end_ms]``."""
        col = stat_buckets.c[column]
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(stat_buckets.c.bucket_start, col)
                .where(
                    stat_buckets.c.task_id == task_id,
                    stat_buckets.c.bucket_start >= bucket_start(start_ms),
                    stat_buckets.c.bucket_start <= end_ms,
                    col != 0,
                )
                .order_by(stat_buckets.c.bucket_start)
            )
            return [(int(r[0]), int(r[1])) for r in rows]

