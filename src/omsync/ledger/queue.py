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

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from omsync.db import Database
from omsync.domain.errors import BacklogFull as BacklogFull  # re-exported: callers import them from here
from omsync.domain.errors import TaskNotFound as TaskNotFound
from omsync.domain.lifecycle import SETTLED_KEY_STATES, KeyState, final_state
from omsync.domain.model import Outcome, OutcomeKind, TaskStatus
from omsync.domain.stats import LATENCY_COLUMNS, bucket_start, latency_column
from omsync.ledger.tables import ledger, open_uploads, stat_buckets, sync_tasks

# The key states of omsync.domain.lifecycle as stored in ``ledger.state`` (and spelled inline in
# the driver SQL below, which persists the same transitions).
PENDING, INFLIGHT, DONE, FAILED = (s.value for s in (KeyState.PENDING, KeyState.INFLIGHT, KeyState.DONE, KeyState.FAILED))
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


# Columns of stat_buckets a count may name (request/success/failure/skip/size and the histogram).
_STAT_COLUMNS = frozenset(("request", "success", "failure", "skip", "size", *LATENCY_COLUMNS))

# The largest number of keys one statement names in an IN list on SQLite (its default bound on
# host parameters is 32,766; two of them are the task id and spare).
_SQLITE_IN_CHUNK = 5_000

# Group commit of accepts: at most this many keys (and callers) go into one transaction.
INTAKE_MAX_KEYS = 20_000
INTAKE_MAX_CALLERS = 500


@dataclass
class _Intake:
    """One caller of :meth:`Ledger.accept` waiting for the group commit."""

    task_id: str
    occurrences: Counter[bytes]
    count: int
    project_id: str | None
    future: asyncio.Future[None]
    raw: dict[bytes, str | None] | None = None  # key -> its form as sent, when it differs


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Answer a waiting accept (unless its caller gave up)."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class _Sql:
    """The hot statements as driver SQL for one dialect (``?`` placeholders on SQLite, ``%s`` on
    PostgreSQL): SQLAlchemy's per-execute compilation and parameter processing is a large part of
    a small transaction's cost."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self._stats: dict[tuple[str, ...], str] = {}
        self._in_lists: dict[tuple[str, int], str] = {}
        for_update = " FOR NO KEY UPDATE" if postgres else ""
        self.accept_tasks = self._p(
            "SELECT id, pending_keys, project_id FROM sync_tasks WHERE id IN ({ids}) ORDER BY id" + for_update
        )
        self.accept_upsert = self._p(
            'INSERT INTO ledger (task_id, "key", generation, reported_generation, state, due_at, attempts, '
            "pending_since, updated_at, raw_key) VALUES (?, ?, ?, 0, 'pending', ?, 0, ?, ?, ?) "
            'ON CONFLICT (task_id, "key") DO UPDATE SET '
            "generation = ledger.generation + excluded.generation, "
            "raw_key = excluded.raw_key, "
            "state = CASE WHEN ledger.state = 'inflight' THEN 'inflight' ELSE 'pending' END, "
            "due_at = CASE WHEN ledger.state = 'inflight' THEN ledger.due_at ELSE excluded.due_at END, "
            "attempts = CASE WHEN ledger.state = 'inflight' THEN ledger.attempts ELSE 0 END, "
            "pending_since = CASE WHEN ledger.state = 'done' OR ledger.state = 'failed' "
            "THEN excluded.pending_since ELSE ledger.pending_since END, "
            "updated_at = excluded.updated_at"
        )
        self.add_pending = self._p("UPDATE sync_tasks SET pending_keys = pending_keys + ? WHERE id = ?")
        self.lock_tasks = "SELECT id FROM sync_tasks WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"
        self.share_tasks = (
            "SELECT id FROM sync_tasks WHERE id IN (SELECT task_id FROM ledger WHERE id = ANY(%s)) "
            "ORDER BY id FOR SHARE"
        )
        self.owned_rows = self._p(
            "SELECT id, generation, reported_generation FROM ledger WHERE id IN ({ids}) AND lease_owner = ? "
            "AND state = 'inflight' ORDER BY id" + for_update
        )
        self.moved = self._p(
            "UPDATE ledger SET state = 'pending', due_at = ?, attempts = 0, lease_owner = NULL, "
            "reported_generation = ?, pending_since = ?, updated_at = ? WHERE id = ?"
        )
        self.final = self._p(
            "UPDATE ledger SET state = ?, lease_owner = NULL, reported_generation = ?, "
            "copied_generation = COALESCE(?, copied_generation), outcome = ?, reason = ?, message = ?, "
            "size = COALESCE(?, size), attempts = ?, pending_since = NULL, updated_at = ? WHERE id = ?"
        )
        self.log_outcome = self._p(
            'INSERT INTO outcome_log (task_id, "key", outcome, reason, message, size, at) VALUES (?, ?, ?, ?, ?, ?, ?)'
        )
        self.retry = self._p(
            "UPDATE ledger SET state = 'pending', lease_owner = NULL, due_at = ?, attempts = ?, reason = ?, "
            "message = ?, updated_at = ? WHERE id = ?"
        )
        # Claims: the running tasks with due keys (each EXISTS one probe of ix_ledger_task_due,
        # whose predicate is spelled out so the index applies), then one task's due keys leased.
        self.claim_candidates = self._p(
            "SELECT id, max_concurrency FROM sync_tasks WHERE status = 'SYNCHRONIZING' AND pending_keys > 0 "
            "AND EXISTS (SELECT 1 FROM ledger WHERE ledger.task_id = sync_tasks.id "
            "AND ledger.state IN ('pending', 'inflight') AND ledger.due_at <= ?) ORDER BY id"
        )
        # SQLite only (BEGIN IMMEDIATE makes the claimer the only writer); PostgreSQL keeps its
        # SKIP LOCKED statement.
        self.claim_task = (
            "UPDATE ledger SET state = 'inflight', lease_owner = ?, due_at = ?, updated_at = ? "
            "WHERE id IN (SELECT ledger.id FROM ledger JOIN sync_tasks ON sync_tasks.id = ledger.task_id "
            "WHERE ledger.task_id = ? AND ledger.state IN ('pending', 'inflight') AND ledger.due_at <= ? "
            "AND sync_tasks.status = 'SYNCHRONIZING' ORDER BY ledger.due_at LIMIT ?) "
            'RETURNING id, task_id, "key", generation, attempts, pending_since'
        )

    def _p(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def in_list(self, template: str, count: int) -> str:
        """``template`` with ``{ids}`` expanded for ``count`` values: one array parameter on
        PostgreSQL (``= ANY``), ``count`` placeholders on SQLite."""
        cache_key = (template, count)
        found = self._in_lists.get(cache_key)
        if found is None:
            if self.postgres:
                found = template.replace("IN ({ids})", "= ANY(%s)")
            else:
                found = template.replace("{ids}", ",".join("?" * count))
            if len(self._in_lists) < 256:
                self._in_lists[cache_key] = found
        return found

    def in_params(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return (list(values),) if self.postgres else tuple(values)

    def existing_states(self, count: int) -> str:
        return self.in_list(self._p('SELECT "key", state FROM ledger WHERE task_id = ? AND "key" IN ({ids})'), count)

    def count(self, columns: tuple[str, ...]) -> str:
        """Upsert adding one value per column of ``columns`` to a statistics bucket."""
        sql = self._stats.get(columns)
        if sql is None:
            if not _STAT_COLUMNS.issuperset(columns):
                raise ValueError(f"unknown statistics columns {columns!r}")
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" * len(columns))
            sets = ", ".join(f'"{c}" = stat_buckets."{c}" + excluded."{c}"' for c in columns)
            sql = self._p(
                f"INSERT INTO stat_buckets (task_id, bucket_start, {names}) VALUES (?, ?, {marks}) "
                f"ON CONFLICT (task_id, bucket_start) DO UPDATE SET {sets}"
            )
            self._stats[columns] = sql
        return sql


class Ledger:
    """Queries over the ledger tables. Every method is one transaction.

    The hot methods (accept, claim, finish, finish_many, retry_later, retry_many, release,
    renew, record_upload, forget_upload) run each transaction as one plain function on a
    database thread (:meth:`Database.run_write`); concurrent accepts are committed together
    (group commit, see :meth:`accept`).
    """

    def __init__(self, db: Database, *, max_pending_per_task: int = 5_000_000) -> None:
        self.db = db
        self.max_pending_per_task = max_pending_per_task
        self._turn = 0  # rotates which task a claim serves first
        self._sql = _Sql(db.is_postgres)
        self._intake: list[_Intake] = []
        self._committer: asyncio.Task[None] | None = None

    def _share_tasks_sync(self, conn: Connection, row_ids: Sequence[int]) -> None:
        """PostgreSQL: lock the tasks of ``row_ids`` ``FOR SHARE`` (in id order) before their
        rows, so that a multi-row update cannot deadlock with an accept holding some of them."""
        if self.db.is_postgres:
            conn.exec_driver_sql(self._sql.share_tasks, (list(row_ids),))

    def _count_sync(self, conn: Connection, task_id: str, at: int, deltas: Mapping[str, int]) -> None:
        """Add ``deltas`` (request/success/failure/skip/size/latency) to the task's bucket for ``at``."""
        columns = tuple(sorted(k for k, v in deltas.items() if v))
        if not columns:
            return
        conn.exec_driver_sql(
            self._sql.count(columns), (task_id, bucket_start(at), *(deltas[c] for c in columns))
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

    async def _lock_task(self, conn: AsyncConnection, task_id: str) -> Any:
        query = select(sync_tasks.c.id, sync_tasks.c.status, sync_tasks.c.pending_keys).where(
            sync_tasks.c.id == task_id
        )
        if self.db.is_postgres:
            query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE
        return (await conn.execute(query)).first()

    # -- accept ---------------------------------------------------------------------------------

    async def accept(self, task_id: str, keys: Sequence[str], *, project_id: str | None = None,
                     raw_keys: Sequence[str | None] | None = None) -> None:
        """Record one occurrence per element of ``keys`` (duplicates count separately).

        ``raw_keys`` (parallel to ``keys``) are the keys as the event sent them, ``None`` where
        that is the key itself; each key's row keeps the form its latest occurrence carried
        (for the failed object list).

        Raises :class:`TaskNotFound` for an unknown task (or one of another project) and
        :class:`BacklogFull` when the task already has ``max_pending_per_task`` keys pending.
        Returns only after the commit: an accepted event survives any crash after this.

        Group commit: concurrent calls (of any tasks) are written in one transaction by one
        committer task. Each call is checked on its own, in arrival order, as if it ran alone
        after the calls before it; a refused call does not affect the others.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        raw: dict[bytes, str | None] | None = None
        if raw_keys is not None and any(r is not None for r in raw_keys):
            raw = {key.encode("utf-8"): sent for key, sent in zip(keys, raw_keys, strict=True)}
        self._intake.append(_Intake(task_id, Counter(k.encode("utf-8") for k in keys), len(keys), project_id,
                                    future, raw))
        committer = self._committer
        if committer is None or committer.done() or committer.get_loop() is not loop:
            self._committer = loop.create_task(self._commit_intake(), name="omsync-ledger-intake")
        await future

    def _next_intake(self) -> list[_Intake]:
        """Take the callers of the next transaction off the queue (those still waiting)."""
        taken = 0
        keys = 0
        while taken < len(self._intake) and taken < INTAKE_MAX_CALLERS:
            item = self._intake[taken]
            if taken and keys + item.count > INTAKE_MAX_KEYS:
                break
            keys += item.count
            taken += 1
        batch = self._intake[:taken]
        del self._intake[:taken]
        return [item for item in batch if not item.future.done()]

    async def _commit_intake(self) -> None:
        """The committer: writes queued accepts, as many per transaction as have arrived."""
        batch: list[_Intake] = []
        try:
            while self._intake:
                batch = self._next_intake()
                if not batch:
                    continue
                try:
                    errors = await self._accept_batch(batch)
                except Exception as exc:
                    if len(batch) == 1:
                        _resolve(batch[0].future, exc)
                        continue
                    # A database error: run each caller alone, so that one cannot fail another.
                    for item in batch:
                        if item.future.done():
                            continue
                        try:
                            [error] = await self._accept_batch([item])
                        except Exception as single:
                            _resolve(item.future, single)
                        else:
                            _resolve(item.future, error)
                    continue
                for item, error in zip(batch, errors, strict=True):
                    _resolve(item.future, error)
                batch = []
        finally:
            # Only reached with callers left when the committer itself is cancelled.
            stopped = RuntimeError("the ledger's intake stopped before the commit")
            for item in [*batch, *self._intake]:
                _resolve(item.future, stopped)
            self._intake.clear()

    async def _accept_batch(self, batch: Sequence[_Intake]) -> list[Exception | None]:
        at = now_ms()
        return await self.db.run_write(lambda conn: self._accept_tx(conn, batch, at))

    def _accept_tx(self, conn: Connection, batch: Sequence[_Intake], at: int) -> list[Exception | None]:
        sql = self._sql
        results: list[Exception | None] = [None] * len(batch)
        by_task: dict[str, list[int]] = {}
        for index, item in enumerate(batch):
            by_task.setdefault(item.task_id, []).append(index)
        task_ids = sorted(by_task)
        tasks = {
            row[0]: (int(row[1]), row[2])
            for row in conn.exec_driver_sql(sql.in_list(sql.accept_tasks, len(task_ids)), sql.in_params(task_ids))
        }
        for task_id in task_ids:
            indexes = by_task[task_id]
            found = tasks.get(task_id)
            if found is None:
                for index in indexes:
                    results[index] = TaskNotFound(task_id)
                continue
            pending, owner = found
            admitted = []
            for index in indexes:
                project_id = batch[index].project_id
                if project_id is not None and project_id != owner:
                    results[index] = TaskNotFound(task_id)
                else:
                    admitted.append(index)
            if not admitted:
                continue
            keys = list(set().union(*(batch[i].occurrences for i in admitted)))
            states: dict[bytes, str] = {}
            for start in range(0, len(keys), _SQLITE_IN_CHUNK):
                chunk = keys[start:start + _SQLITE_IN_CHUNK]
                for row in conn.exec_driver_sql(
                    sql.existing_states(len(chunk)), (task_id, *sql.in_params(chunk))
                ):
                    states[bytes(row[0])] = row[1]
            merged: Counter[bytes] = Counter()
            raw: dict[bytes, str | None] = {}
            requests = 0
            newly_pending = 0
            # In arrival order, as if each ran alone: the backlog bound sees the earlier ones.
            for index in admitted:
                item = batch[index]
                if pending >= self.max_pending_per_task:
                    results[index] = BacklogFull(pending, retry_after=5, task_id=task_id)
                    continue
                newly = 0
                for key in item.occurrences:
                    state = states.get(key, DONE)
                    if state in SETTLED_KEY_STATES:  # lifecycle.accepted_state, inline: once per key
                        newly += 1
                        states[key] = PENDING
                pending += newly
                newly_pending += newly
                merged.update(item.occurrences)
                if item.raw is not None:
                    raw.update(item.raw)
                elif raw:
                    for key in raw.keys() & item.occurrences.keys():
                        raw[key] = None  # sent as it is this time
                requests += item.count
            if merged:
                conn.exec_driver_sql(
                    sql.accept_upsert, [(task_id, key, n, at, at, at, raw.get(key)) for key, n in merged.items()]
                )
            if newly_pending:
                conn.exec_driver_sql(sql.add_pending, (newly_pending, task_id))
            if requests:
                self._count_sync(conn, task_id, at, {"request": requests})
        return results

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
        caps = dict(caps) if caps else None
        return await self.db.run_write(lambda conn: self._claim_tx(conn, owner, limit, at, lease_ms, caps))

    def _claim_tx(
        self, conn: Connection, owner: str, limit: int, at: int, lease_ms: int, caps: Mapping[str, int] | None
    ) -> list[Claim]:
        # The tasks table is small and each EXISTS is one probe of ix_ledger_task_due.
        candidates = conn.exec_driver_sql(self._sql.claim_candidates, (at,)).all()
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
                    room[task_id] = self._room(conn, task_id, caps, concurrency[task_id], at)
                cap = room[task_id]
                if cap is not None:
                    want = min(want, cap)
                if want == 0:
                    continue
                got = self._claim_task(conn, task_id, owner, want, at, lease_ms)
                rows.extend(got)
                left -= len(got)
                if cap is not None:
                    room[task_id] = cap - len(got)
                if len(got) == want and room[task_id] != 0:
                    full.append(task_id)
            queue = untried + full
        orphans: dict[tuple[str, bytes], list[OpenUpload]] = {}
        if rows:
            found = conn.execute(
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

    def _room(
        self, conn: Connection, task_id: str, caps: Mapping[str, int] | None, max_concurrency: int | None,
        at: int,
    ) -> int | None:
        """How many keys of the task one claim may take: the caller's cap and the room under the
        task's concurrency cap, whichever is smaller; None when neither bounds it."""
        cap = caps.get(task_id) if caps else None
        if max_concurrency is not None:
            free = self._free_concurrency(conn, task_id, max_concurrency, at)
            cap = free if cap is None else min(cap, free)
        return cap

    def _free_concurrency(self, conn: Connection, task_id: str, maximum: int, at: int) -> int:
        """How many more keys of the task may be leased under its ``max_concurrency``: the
        maximum minus its live leases (expired ones belong to dead workers and are due again).

        On PostgreSQL claimers of one capped task take turns on a transaction-scoped advisory
        lock, so that two of them cannot both count the same free room; one that does not get
        it at once skips the task this time (a claim never waits)."""
        if self.db.is_postgres:
            got = conn.scalar(
                select(func.pg_try_advisory_xact_lock(ADVISORY_CLAIM_CLASS, func.hashtext(task_id)))
            )
            if not got:
                return 0
        leased = conn.scalar(
            select(func.count()).select_from(ledger).where(
                ledger.c.task_id == task_id, ledger.c.state == INFLIGHT, ledger.c.due_at > at
            )
        )
        return max(0, maximum - int(leased or 0))

    def _claim_task(
        self, conn: Connection, task_id: str, owner: str, limit: int, at: int, lease_ms: int
    ) -> Sequence[Any]:
        """Lease up to ``limit`` due keys of one task, oldest due first."""
        if not self.db.is_postgres:
            return conn.exec_driver_sql(
                self._sql.claim_task, (owner, at + lease_ms, at, task_id, at, limit)).all()
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
        return conn.execute(stmt).all()

    async def renew(self, owner: str, row_ids: Sequence[int], lease_seconds: float) -> int:
        """Extend the leases ``owner`` still holds; returns how many were extended."""
        if not row_ids:
            return 0
        at = now_ms()
        ids = list(row_ids)

        def renew_tx(conn: Connection) -> int:
            self._share_tasks_sync(conn, ids)
            result = conn.execute(
                update(ledger)
                .where(ledger.c.id.in_(ids), ledger.c.lease_owner == owner, ledger.c.state == INFLIGHT)
                .values(due_at=at + int(lease_seconds * 1000))
            )
            return int(result.rowcount or 0)

        return await self.db.run_write(renew_tx)

    # -- finish ---------------------------------------------------------------------------------

    async def finish(self, owner: str, claim: Claim, outcome: Outcome) -> FinishResult:
        """Record ``outcome`` for the claimed generation.

        If ``owner`` no longer holds the lease nothing is written (``recorded=False``). If newer
        occurrences arrived meanwhile, the served ones count as SKIP ``coalesced`` and the key
        stays pending for another copy; otherwise the outcome is final and every older
        occurrence it absorbed counts as SKIP ``coalesced``.
        """
        [result] = await self.finish_many(owner, [(claim, outcome)])
        return result

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
        batch = list(items)
        return await self.db.run_write(lambda conn: self._finish_tx(conn, owner, batch, at))

    def _owned_rows(self, conn: Connection, owner: str, row_ids: Sequence[int]) -> dict[int, Any]:
        """The rows of ``row_ids`` that ``owner`` holds in flight (locked on PostgreSQL), by id."""
        sql = self._sql
        ids = sorted(set(row_ids))
        return {
            int(row[0]): row
            for row in conn.exec_driver_sql(sql.in_list(sql.owned_rows, len(ids)), (*sql.in_params(ids), owner))
        }

    def _finish_tx(
        self, conn: Connection, owner: str, items: Sequence[tuple[Claim, Outcome]], at: int
    ) -> list[FinishResult]:
        sql = self._sql
        task_ids = sorted({claim.task_id for claim, _ in items})
        if self.db.is_postgres:
            conn.exec_driver_sql(sql.lock_tasks, (task_ids,))  # FOR NO KEY UPDATE, in id order
        owned = self._owned_rows(conn, owner, [claim.row_id for claim, _ in items])
        results: list[FinishResult] = []
        moved: list[tuple[Any, ...]] = []
        final: list[tuple[Any, ...]] = []
        logged: list[tuple[Any, ...]] = []
        finished: Counter[str] = Counter()
        counts: dict[str, Counter[str]] = {}
        for claim, outcome in items:
            row = owned.pop(claim.row_id, None)
            if row is None:
                results.append(FinishResult(recorded=False))
                continue
            generation, reported = int(row[1]), int(row[2])
            served = claim.generation - reported
            tally = counts.setdefault(claim.task_id, Counter())
            if generation != claim.generation:
                moved.append((at, claim.generation, at, at, claim.row_id))
                tally["skip"] += served
                results.append(FinishResult(recorded=True, final=False, coalesced=served))
                continue
            kind = outcome.kind
            success = kind is OutcomeKind.SUCCESS
            final.append((
                final_state(kind).value, claim.generation,
                claim.generation if success else None, kind.value, outcome.reason, outcome.message,
                outcome.size if success else None, claim.attempts + 1, at, claim.row_id,
            ))
            # The object's size for the lists: a SUCCESS's bytes, a SKIP's when the copier knew it.
            logged.append((claim.task_id, claim.key.encode("utf-8"), kind.value, outcome.reason, outcome.message,
                           outcome.size if success or outcome.size else None, at))
            finished[claim.task_id] += 1
            tally["skip"] += served - 1
            tally[kind.value.lower()] += 1
            if success:
                tally["size"] += outcome.size
            tally[latency_column(at - claim.pending_since)] += 1
            results.append(FinishResult(recorded=True, final=True, coalesced=served - 1))
        if moved:
            conn.exec_driver_sql(sql.moved, moved)
        if final:
            conn.exec_driver_sql(sql.final, final)
        for task_id in task_ids:
            if finished[task_id]:
                conn.exec_driver_sql(sql.add_pending, (-finished[task_id], task_id))
            if task_id in counts:
                self._count_sync(conn, task_id, at, counts[task_id])
        if logged:
            conn.exec_driver_sql(sql.log_outcome, logged)
        return results

    async def retry_later(self, owner: str, claim: Claim, delay_seconds: float, reason: str, message: str) -> bool:
        """Give the key back for another attempt after ``delay_seconds`` (no outcome yet).

        Returns False when the lease was lost. A newer generation makes it due at once.
        """
        [kept] = await self.retry_many(owner, [(claim, delay_seconds, reason, message)])
        return kept

    async def retry_many(self, owner: str, items: Sequence[tuple[Claim, float, str, str]]) -> list[bool]:
        """:meth:`retry_later` for each ``(claim, delay_seconds, reason, message)`` in one
        transaction, in order (one timestamp); returns whether each lease was still held. A row
        named twice is given back once; the later item finds its lease gone.

        On PostgreSQL a batch of several rows locks their tasks ``FOR SHARE`` first (the module's
        lock order); a single row is locked alone, as before."""
        if not items:
            return []
        at = now_ms()
        batch = list(items)
        return await self.db.run_write(lambda conn: self._retry_tx(conn, owner, batch, at))

    def _retry_tx(
        self, conn: Connection, owner: str, items: Sequence[tuple[Claim, float, str, str]], at: int
    ) -> list[bool]:
        ids = [claim.row_id for claim, *_ in items]
        if len(set(ids)) > 1:
            self._share_tasks_sync(conn, ids)
        owned = self._owned_rows(conn, owner, ids)
        kept: list[bool] = []
        updates: list[tuple[Any, ...]] = []
        for claim, delay_seconds, reason, message in items:
            row = owned.pop(claim.row_id, None)
            if row is None:
                kept.append(False)
                continue
            moved = int(row[1]) != claim.generation
            updates.append((
                at if moved else at + int(delay_seconds * 1000), 0 if moved else claim.attempts + 1,
                reason, message, at, claim.row_id,
            ))
            kept.append(True)
        if updates:
            conn.exec_driver_sql(self._sql.retry, updates)
        return kept

    async def release(self, owner: str, claims: Sequence[Claim]) -> None:
        """Hand keys back untouched (graceful shutdown): due now, attempt not counted."""
        if not claims:
            return
        at = now_ms()
        ids = [c.row_id for c in claims]

        def release_tx(conn: Connection) -> None:
            self._share_tasks_sync(conn, ids)
            conn.execute(
                update(ledger)
                .where(ledger.c.id.in_(ids), ledger.c.lease_owner == owner, ledger.c.state == INFLIGHT)
                .values(state=PENDING, lease_owner=None, due_at=at, updated_at=at)
            )

        await self.db.run_write(release_tx)

    # -- multipart uploads in flight ---------------------------------------------------------

    async def record_upload(self, claim: Claim, bucket: str, upload_id: str) -> int:
        """Remember a started multipart upload (committed before any part is sent), so that a
        crash cannot orphan it unnoticed. Returns the record's id for :meth:`forget_upload`."""
        stmt = open_uploads.insert().values(
            task_id=claim.task_id, key=claim.key.encode("utf-8"), bucket=bucket,
            upload_id=upload_id, created_at=now_ms(),
        ).returning(open_uploads.c.id)
        return await self.db.run_write(lambda conn: int(conn.execute(stmt).scalar_one()))

    async def forget_upload(self, record_id: int) -> None:
        """The upload was completed or aborted: drop its record."""
        stmt = open_uploads.delete().where(open_uploads.c.id == record_id)
        await self.db.run_write(lambda conn: conn.execute(stmt))

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

