"""OMS migration tasks: their rows, their listing checkpoints and their progress.

A migration task is a ``sync_tasks`` row (internal id ``migration-<hex>``, never shown by the
sync-task API) copied by the same ledger and engine as sync tasks, plus one ``migration_tasks``
row with the OMS numeric id and what only migrations have. The ``sync_tasks`` row is
SYNCHRONIZING exactly while the migration runs (status 2), so claims, limits and fairness need
nothing new.

Listing is exactly-once: a page's new keys enter the ledger in the same transaction that moves
the checkpoint (:meth:`MigrationRepository.record_page`), under a lease (``list_owner``,
``list_lease_until``) so that one process lists a task at a time and another resumes from the
checkpoint when the lease of a dead one runs out.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from omsync.db import Database
from omsync.domain.errors import TaskNotFound
from omsync.domain.model import TaskSpec, TaskStatus
from omsync.domain.stats import bucket_start
from omsync.ledger.queue import now_ms
from omsync.ledger.tables import Id, ledger, metadata, stat_buckets, sync_tasks
from omsync.secrets import SecretBox

WAITING, RUNNING, STOPPED, FAILED, SUCCEEDED, PAUSING = 1, 2, 3, 4, 5, 7
STATUSES = (WAITING, RUNNING, STOPPED, FAILED, SUCCEEDED, PAUSING)
SYNC_ID_PREFIX = "migration-"

# error_reason codes (omsync's own: OMS does not document its migration error codes).
OBJECTS_FAILED = "OMSYNC.0601"
LISTING_FAILED = "OMSYNC.0602"

migration_tasks = Table(
    "migration_tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sync_task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("project_id", String(1024), nullable=False),
    Column("name", String(255), nullable=False),
    Column("task_type", String(16), nullable=False),  # object | prefix | list
    Column("status", Integer, nullable=False),  # 1 waiting 2 running 3 stopped 4 failed 5 succeeded 7 pausing
    Column("sources", Text, nullable=False),  # JSON list: object keys / prefixes as given
    Column("list_file", Text, nullable=True),  # JSON {list_file_key, obs_bucket} of a list task
    Column("save_prefix", Text, nullable=False, server_default=""),
    Column("migrate_since", BigInteger, nullable=True),  # epoch seconds, as CreateTaskReq sends it
    Column("bandwidth_policy", Text, nullable=False, server_default="[]"),  # JSON [{start, end, max_bandwidth}]
    Column("enable_failed_object_recording", Boolean, nullable=False),
    Column("group_id", String(64), nullable=True),
    # The listing checkpoint: source number, last key recorded (prefix/object) or byte offset
    # of the next line (list files); list_done once every source is exhausted.
    Column("list_index", Integer, nullable=False, server_default="0"),
    Column("list_after", LargeBinary, nullable=True),
    Column("list_offset", BigInteger, nullable=False, server_default="0"),
    Column("list_done", Boolean, nullable=False, server_default="0"),
    Column("list_owner", String(64), nullable=True),
    Column("list_lease_until", BigInteger, nullable=False, server_default="0"),
    Column("listed_num", BigInteger, nullable=False, server_default="0"),
    Column("listed_size", BigInteger, nullable=False, server_default="0"),
    Column("since_skipped_num", BigInteger, nullable=False, server_default="0"),  # older than migrate_since
    Column("error_code", String(64), nullable=True),
    Column("error_msg", Text, nullable=True),
    Column("create_time", BigInteger, nullable=False),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=True),
    Column("run_ms", BigInteger, nullable=False, server_default="0"),  # running time of finished runs
    Column("run_started", BigInteger, nullable=True),  # when the current run started (status 2)
    Index("ix_migration_tasks_project", "project_id", "create_time"),
    Index("ix_migration_tasks_status", "status"),
)


class MigrationBusy(RuntimeError):
    """The operation is not allowed in the migration task's current status."""


def is_sync_task() -> ColumnElement[bool]:
    """Predicate on ``sync_tasks``: the row is a sync task, not the engine row of a migration."""
    return sync_tasks.c.id.not_in(select(migration_tasks.c.sync_task_id))


@dataclass(frozen=True)
class ListingJob:
    """A running migration task whose listing this process leased, with its checkpoint."""

    id: int
    sync_task_id: str
    task_type: str
    sources: tuple[str, ...]
    list_file: Mapping[str, str] | None
    migrate_since: int | None
    index: int
    after: str | None
    offset: int


@dataclass(frozen=True)
class Listed:
    """One listed object: ``size`` None when the listing does not tell (list files);
    ``skip`` when older than ``migrate_since`` (counted, never copied)."""

    key: str
    size: int | None
    skip: bool = False


@dataclass(frozen=True)
class Progress:
    """Counts of one migration task from its ledger rows (one key, one row)."""

    successful: int = 0
    failed: int = 0
    skipped: int = 0
    open: int = 0
    complete_size: int = 0


def _insert(db: Database, table: Any) -> Any:
    return (postgresql.insert if db.is_postgres else sqlite.insert)(table)


def _row(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k != "credentials_enc"}


_COLUMNS = (
    *(c for c in migration_tasks.c if c.name not in ("project_id",)),
    sync_tasks.c.project_id, sync_tasks.c.description, sync_tasks.c.src_cloud_type, sync_tasks.c.src_region,
    sync_tasks.c.src_bucket, sync_tasks.c.dst_cloud_type, sync_tasks.c.dst_region, sync_tasks.c.dst_bucket,
    sync_tasks.c.enable_metadata_migration, sync_tasks.c.enable_restore, sync_tasks.c.dst_storage_policy,
    sync_tasks.c.app_id, sync_tasks.c.consistency_check, sync_tasks.c.object_overwrite_mode,
    sync_tasks.c.pending_keys, sync_tasks.c.max_bytes_per_second,
)
_JOINED = migration_tasks.join(sync_tasks, sync_tasks.c.id == migration_tasks.c.sync_task_id)


class MigrationRepository:
    """Migration tasks scoped by project (another project's task is :class:`TaskNotFound`),
    their listing leases and checkpoints, and their completion."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    # -- API side -------------------------------------------------------------------------------

    async def create(self, project_id: str, sync_fields: Mapping[str, Any], credentials: Mapping[str, str],
                     fields: Mapping[str, Any]) -> tuple[int, str]:
        """Store a new migration task, running at once (OMS starts a task on creation), with its
        engine row; returns ``(id, name)``. ``credentials`` (src_ak, src_sk, dst_ak, dst_sk) are
        stored encrypted only."""
        at = now_ms()
        sync_id = SYNC_ID_PREFIX + uuid.uuid4().hex
        sealed = self.box.encrypt_json(dict(credentials))

        def create_tx(conn: Connection) -> tuple[int, str]:
            conn.execute(sync_tasks.insert().values(
                id=sync_id, project_id=project_id, status=TaskStatus.SYNCHRONIZING.value,
                credentials_enc=sealed, create_time=at, last_start_time=at, enable_kms=False,
                **sync_fields,
            ))
            task_id = int(conn.execute(migration_tasks.insert().values(
                sync_task_id=sync_id, project_id=project_id, name="", status=RUNNING, create_time=at,
                start_time=at, run_started=at, **fields,
            ).returning(migration_tasks.c.id)).scalar_one())
            name = fields.get("name") or f"oms_task_{task_id}"
            conn.execute(update(migration_tasks).where(migration_tasks.c.id == task_id).values(name=name))
            return task_id, name

        return await self.db.run_write(create_tx)

    async def get(self, project_id: str, task_id: int) -> dict[str, Any]:
        """The task joined with its engine row (no credentials). Raises :class:`TaskNotFound`."""
        query = select(*_COLUMNS).select_from(_JOINED).where(
            migration_tasks.c.id == task_id, migration_tasks.c.project_id == project_id)
        row = await self.db.run_read(lambda conn: conn.execute(query).mappings().first())
        if row is None:
            raise TaskNotFound(str(task_id))
        return _row(row)

    async def page(self, project_id: str | None, *, limit: int, offset: int, status: int | None = None,
                   group_id: str | None = None, name: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of tasks, newest first, of one project (all with None), and the count matching
        (``status``, ``group_id`` and ``name`` narrow it)."""
        where: list[ColumnElement[bool]] = []
        if project_id is not None:
            where.append(migration_tasks.c.project_id == project_id)
        if status is not None:
            where.append(migration_tasks.c.status == status)
        if group_id is not None:
            where.append(migration_tasks.c.group_id == group_id)
        if name is not None:
            where.append(migration_tasks.c.name == name)

        def page_tx(conn: Connection) -> tuple[list[dict[str, Any]], int]:
            total = conn.scalar(select(func.count()).select_from(migration_tasks).where(*where))
            rows = conn.execute(
                select(*_COLUMNS).select_from(_JOINED).where(*where)
                .order_by(migration_tasks.c.create_time.desc(), migration_tasks.c.id.desc())
                .limit(limit).offset(offset)
            ).mappings().all()
            return [_row(r) for r in rows], int(total or 0)

        return await self.db.run_read(page_tx)

    async def progress(self, sync_task_ids: Sequence[str]) -> dict[str, Progress]:
        """Counts per engine row id, from the ledger: SUCCESS, failing, SKIP, still open, and
        bytes copied (a key is counted once, by its latest outcome)."""
        if not sync_task_ids:
            return {}
        ids = list(sync_task_ids)
        success = and_(ledger.c.state == "done", ledger.c.outcome == "SUCCESS")
        query = select(
            ledger.c.task_id,
            func.sum(case((success, 1), else_=0)),
            func.sum(case((ledger.c.state == "failed", 1), else_=0)),
            func.sum(case((and_(ledger.c.state == "done", ledger.c.outcome == "SKIP"), 1), else_=0)),
            func.sum(case((ledger.c.state.in_(("pending", "inflight")), 1), else_=0)),
            func.coalesce(func.sum(case((success, ledger.c.size), else_=0)), 0),
        ).where(ledger.c.task_id.in_(ids)).group_by(ledger.c.task_id)
        rows = await self.db.run_read(lambda conn: conn.execute(query).all())
        return {r[0]: Progress(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0), int(r[5] or 0))
                for r in rows}

    async def stop(self, project_id: str, task_id: int) -> int:
        """Running (or waiting) → pausing, or stopped at once when no key is being copied; the
        engine row stops, so no new key is claimed and the listing stops at its next page.
        Returns the new status. Raises :class:`TaskNotFound`, :class:`MigrationBusy`."""
        at = now_ms()

        def stop_tx(conn: Connection) -> int:
            row = self._locked(conn, project_id, task_id)
            if row.status not in (WAITING, RUNNING):
                raise MigrationBusy(f"the task's status is {row.status}; only a waiting or running task can be stopped")
            copying = conn.scalar(select(func.count()).select_from(ledger).where(
                ledger.c.task_id == row.sync_task_id, ledger.c.state == "inflight", ledger.c.due_at > at))
            status = PAUSING if copying else STOPPED
            conn.execute(update(sync_tasks).where(sync_tasks.c.id == row.sync_task_id)
                         .values(status=TaskStatus.STOPPED.value))
            # The listing lease is dropped: its holder stops at its next page (nothing written),
            # and whichever process lists after a start resumes from the checkpoint at once.
            conn.execute(update(migration_tasks).where(migration_tasks.c.id == task_id).values(
                status=status, run_ms=migration_tasks.c.run_ms + (at - (row.run_started or at)), run_started=None,
                list_owner=None, list_lease_until=0))
            return status

        return await self.db.run_write(stop_tx)

    async def start(self, project_id: str, task_id: int, credentials: Mapping[str, str]) -> int:
        """Stopped or failed → running with fresh credentials, resuming where it stopped; a failed
        task's failing keys are tried again (each a new REQUEST). Returns how many keys were
        re-driven. Raises :class:`TaskNotFound`, :class:`MigrationBusy`."""
        at = now_ms()
        sealed = self.box.encrypt_json(dict(credentials))

        def start_tx(conn: Connection) -> int:
            row = self._locked(conn, project_id, task_id)
            if row.status not in (STOPPED, FAILED):
                raise MigrationBusy(f"the task's status is {row.status}; only a stopped or failed task can be started")
            redriven = 0
            if row.status == FAILED:
                redriven = int(conn.execute(update(ledger).where(
                    ledger.c.task_id == row.sync_task_id, ledger.c.state == "failed").values(
                    state="pending", generation=ledger.c.generation + 1, due_at=at, attempts=0,
                    pending_since=at, updated_at=at)).rowcount or 0)
                if redriven:
                    self._count_requests(conn, row.sync_task_id, at, redriven)
            conn.execute(update(sync_tasks).where(sync_tasks.c.id == row.sync_task_id).values(
                status=TaskStatus.SYNCHRONIZING.value, credentials_enc=sealed, last_start_time=at,
                pending_keys=sync_tasks.c.pending_keys + redriven))
            conn.execute(update(migration_tasks).where(migration_tasks.c.id == task_id).values(
                status=RUNNING, run_started=at, start_time=at, end_time=None, error_code=None, error_msg=None))
            return redriven

        return await self.db.run_write(start_tx)

    async def delete(self, project_id: str, task_id: int) -> str:
        """Delete a task that is not running or pausing, with its ledger and statistics;
        returns its engine row id. Raises :class:`TaskNotFound`, :class:`MigrationBusy`."""

        def delete_tx(conn: Connection) -> str:
            row = self._locked(conn, project_id, task_id)
            if row.status in (RUNNING, PAUSING, WAITING):
                raise MigrationBusy(f"the task's status is {row.status}; stop it before deleting it")
            conn.execute(delete(sync_tasks).where(sync_tasks.c.id == row.sync_task_id))
            return str(row.sync_task_id)

        return await self.db.run_write(delete_tx)

    def _locked(self, conn: Connection, project_id: str, task_id: int) -> Any:
        query = select(migration_tasks.c.status, migration_tasks.c.sync_task_id, migration_tasks.c.run_started).where(
            migration_tasks.c.id == task_id, migration_tasks.c.project_id == project_id)
        if self.db.is_postgres:
            # The engine row first (the ledger's lock order), then the migration row.
            conn.execute(select(sync_tasks.c.id).where(
                sync_tasks.c.id == select(migration_tasks.c.sync_task_id)
                .where(migration_tasks.c.id == task_id).scalar_subquery()).with_for_update(key_share=True))
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise TaskNotFound(str(task_id))
        return row

    def _count_requests(self, conn: Connection, sync_task_id: str, at: int, count: int) -> None:
        stmt = _insert(self.db, stat_buckets).values(task_id=sync_task_id, bucket_start=bucket_start(at), request=count)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[stat_buckets.c.task_id, stat_buckets.c.bucket_start],
            set_={"request": stat_buckets.c.request + stmt.excluded.request}))

    # -- engine side: spec ------------------------------------------------------------------------

    async def overlay(self, spec: TaskSpec) -> TaskSpec:
        """``spec`` of an engine row with its migration's destination key prefix, object-list
        folder and failed-object recording; unchanged for a sync task."""
        if not spec.task_id.startswith(SYNC_ID_PREFIX):
            return spec
        query = select(migration_tasks.c.save_prefix, migration_tasks.c.name,
                       migration_tasks.c.enable_failed_object_recording).where(
            migration_tasks.c.sync_task_id == spec.task_id)
        row = await self.db.run_read(lambda conn: conn.execute(query).first())
        if row is None:
            return spec
        return dataclasses.replace(spec, dst_key_prefix=row.save_prefix or "",
                                   object_list_root=f"oms/task/{row.name}",
                                   record_failed_objects=bool(row.enable_failed_object_recording))

    # -- engine side: listing -----------------------------------------------------------------------

    async def claim_listing(self, owner: str, lease_seconds: float, *, max_pending: int | None = None
                            ) -> ListingJob | None:
        """Lease the listing of one running task whose listing is not finished and not leased
        by a live owner (or leased by ``owner`` already), and (with ``max_pending``) whose keys
        waiting for a copy are at most that many; None when there is none."""
        at = now_ms()
        free = and_(migration_tasks.c.status == RUNNING, migration_tasks.c.list_done.is_(False),
                    or_(migration_tasks.c.list_owner.is_(None), migration_tasks.c.list_lease_until < at,
                        migration_tasks.c.list_owner == owner))
        candidates = select(migration_tasks).where(free)
        if max_pending is not None:
            candidates = candidates.where(migration_tasks.c.sync_task_id.in_(
                select(sync_tasks.c.id).where(sync_tasks.c.pending_keys <= max_pending)))

        def claim_tx(conn: Connection) -> ListingJob | None:
            row = conn.execute(candidates.order_by(migration_tasks.c.id).limit(1)).first()
            if row is None:
                return None
            taken = conn.execute(update(migration_tasks).where(migration_tasks.c.id == row.id, free).values(
                list_owner=owner, list_lease_until=at + int(lease_seconds * 1000)))
            if not taken.rowcount:
                return None
            return ListingJob(
                id=int(row.id), sync_task_id=row.sync_task_id, task_type=row.task_type,
                sources=tuple(json.loads(row.sources)),
                list_file=json.loads(row.list_file) if row.list_file else None,
                migrate_since=row.migrate_since, index=int(row.list_index),
                after=bytes(row.list_after).decode("utf-8") if row.list_after is not None else None,
                offset=int(row.list_offset),
            )

        return await self.db.run_write(claim_tx)

    async def record_page(self, job: ListingJob, owner: str, lease_seconds: float, entries: Sequence[Listed], *,
                          index: int, after: str | None, offset: int, done: bool) -> int | None:
        """Put the page's keys not yet in the task's ledger into it (pending, one REQUEST each)
        and move the checkpoint, in one transaction, renewing the lease. Returns the task's
        pending keys afterwards, or None when the lease is lost or the task no longer runs
        (nothing written)."""
        at = now_ms()

        def page_tx(conn: Connection) -> int | None:
            if self.db.is_postgres:
                conn.execute(select(sync_tasks.c.id).where(sync_tasks.c.id == job.sync_task_id)
                             .with_for_update(key_share=True))
            held = conn.execute(select(migration_tasks.c.status).where(
                migration_tasks.c.id == job.id, migration_tasks.c.list_owner == owner)).first()
            if held is None or held.status != RUNNING:
                return None
            fresh: dict[bytes, Listed] = {}
            skipped = 0
            for entry in entries:
                if entry.skip:
                    skipped += 1
                else:
                    fresh.setdefault(entry.key.encode("utf-8"), entry)
            keys = list(fresh)
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                for (known,) in conn.execute(select(ledger.c.key).where(
                        ledger.c.task_id == job.sync_task_id, ledger.c.key.in_(chunk))):
                    fresh.pop(bytes(known), None)
            if fresh:
                conn.execute(ledger.insert(), [
                    {"task_id": job.sync_task_id, "key": key, "generation": 1, "reported_generation": 0,
                     "state": "pending", "due_at": at, "attempts": 0, "pending_since": at, "updated_at": at}
                    for key in fresh])
                self._count_requests(conn, job.sync_task_id, at, len(fresh))
            pending = conn.execute(update(sync_tasks).where(sync_tasks.c.id == job.sync_task_id).values(
                pending_keys=sync_tasks.c.pending_keys + len(fresh)).returning(sync_tasks.c.pending_keys)).scalar_one()
            conn.execute(update(migration_tasks).where(migration_tasks.c.id == job.id).values(
                list_index=index, list_after=after.encode("utf-8") if after is not None else None,
                list_offset=offset, list_done=done, list_lease_until=at + int(lease_seconds * 1000),
                list_owner=None if done else owner,
                listed_num=migration_tasks.c.listed_num + len(fresh) + skipped,
                listed_size=migration_tasks.c.listed_size + sum(e.size or 0 for e in fresh.values()),
                since_skipped_num=migration_tasks.c.since_skipped_num + skipped,
            ))
            return int(pending)

        return await self.db.run_write(page_tx)

    async def renew_listing(self, job: ListingJob, owner: str, lease_seconds: float) -> int | None:
        """Keep the lease while the listing waits (backlog); returns the task's pending keys, or
        None when the lease is lost or the task no longer runs."""
        at = now_ms()

        def renew_tx(conn: Connection) -> int | None:
            renewed = conn.execute(update(migration_tasks).where(
                migration_tasks.c.id == job.id, migration_tasks.c.list_owner == owner,
                migration_tasks.c.status == RUNNING).values(list_lease_until=at + int(lease_seconds * 1000)))
            if not renewed.rowcount:
                return None
            return int(conn.scalar(select(sync_tasks.c.pending_keys).where(sync_tasks.c.id == job.sync_task_id)) or 0)

        return await self.db.run_write(renew_tx)

    async def release_listing(self, job: ListingJob, owner: str) -> None:
        """Give the lease up (this process stops): another process resumes at once."""
        stmt = update(migration_tasks).where(migration_tasks.c.id == job.id, migration_tasks.c.list_owner == owner)
        await self.db.run_write(lambda conn: conn.execute(stmt.values(list_owner=None, list_lease_until=0)))

    async def fail(self, task_id: int, code: str, message: str, *, owner: str | None = None) -> bool:
        """Running → failed with ``error_reason`` (e.g. the source cannot be listed); the engine
        row stops. With ``owner``, only while that process holds the listing lease."""
        at = now_ms()
        where = [migration_tasks.c.id == task_id, migration_tasks.c.status == RUNNING]
        if owner is not None:
            where.append(migration_tasks.c.list_owner == owner)

        def fail_tx(conn: Connection) -> bool:
            row = conn.execute(select(migration_tasks.c.sync_task_id, migration_tasks.c.run_started).where(*where)).first()
            if row is None:
                return False
            self._end(conn, task_id, row.sync_task_id, row.run_started, FAILED, at, code, message)
            return True

        return await self.db.run_write(fail_tx)

    @staticmethod
    def _end(conn: Connection, task_id: int, sync_task_id: str, run_started: int | None, status: int, at: int,
             code: str | None, message: str | None) -> None:
        conn.execute(update(sync_tasks).where(sync_tasks.c.id == sync_task_id).values(status=TaskStatus.STOPPED.value))
        conn.execute(update(migration_tasks).where(migration_tasks.c.id == task_id).values(
            status=status, end_time=at, run_started=None, run_ms=migration_tasks.c.run_ms + (at - (run_started or at)),
            error_code=code, error_msg=message, list_owner=None, list_lease_until=0))

    # -- engine side: completion, pausing, bandwidth ------------------------------------------------

    async def settle(self, bandwidth_at: float | None = None) -> list[tuple[int, int]]:
        """Finish what is finished: a running task whose listing is done and whose keys all have
        an outcome ends succeeded (5) or, when any key failed, failed (4) with the reason; a
        pausing task with no live copy becomes stopped (3). Sets each running task's bytes/s
        limit from its bandwidth policy at ``bandwidth_at`` (epoch seconds; now by default).
        Returns ``(id, new status)`` of the tasks it ended. Reads first; writes only when
        something changes (so idle workers do not contend for the database)."""
        at = now_ms()
        moment = time.time() if bandwidth_at is None else bandwidth_at
        candidates = select(
            migration_tasks.c.id, migration_tasks.c.sync_task_id, migration_tasks.c.status,
            migration_tasks.c.list_done, migration_tasks.c.bandwidth_policy, migration_tasks.c.run_started,
            sync_tasks.c.pending_keys, sync_tasks.c.max_bytes_per_second,
        ).select_from(_JOINED).where(migration_tasks.c.status.in_((RUNNING, PAUSING)))
        rows = await self.db.run_read(lambda conn: conn.execute(candidates).all())
        work = []
        for row in rows:
            if row.status == PAUSING or (row.list_done and row.pending_keys == 0):
                work.append(row)
                continue
            policy = json.loads(row.bandwidth_policy or "[]")
            if policy and bandwidth_cap(policy, moment) != row.max_bytes_per_second:
                work.append(row)
        if not work:
            return []

        def settle_tx(conn: Connection) -> list[tuple[int, int]]:
            ended: list[tuple[int, int]] = []
            for row in work:
                current = conn.execute(select(migration_tasks.c.status, migration_tasks.c.list_done,
                                              migration_tasks.c.run_started)
                                       .where(migration_tasks.c.id == row.id)).first()
                if current is None or current.status != row.status:
                    continue
                # Pausing: copies still leased (an expired lease belongs to a dead worker).
                # Running: keys without a final outcome.
                waiting = (and_(ledger.c.state == "inflight", ledger.c.due_at > at) if row.status == PAUSING
                           else ledger.c.state.in_(("pending", "inflight")))
                open_rows = conn.scalar(select(func.count()).select_from(ledger).where(
                    ledger.c.task_id == row.sync_task_id, waiting))
                if row.status == PAUSING:
                    if not open_rows:
                        conn.execute(update(migration_tasks).where(migration_tasks.c.id == row.id,
                                                                   migration_tasks.c.status == PAUSING)
                                     .values(status=STOPPED))
                        ended.append((row.id, STOPPED))
                    continue
                if current.list_done and not open_rows:
                    failed = int(conn.scalar(select(func.count()).select_from(ledger).where(
                        ledger.c.task_id == row.sync_task_id, ledger.c.state == "failed")) or 0)
                    if failed:
                        self._end(conn, row.id, row.sync_task_id, current.run_started, FAILED, at, OBJECTS_FAILED,
                                  f"{failed} objects failed to migrate; see the failed object list")
                        ended.append((row.id, FAILED))
                    else:
                        self._end(conn, row.id, row.sync_task_id, current.run_started, SUCCEEDED, at, None, None)
                        ended.append((row.id, SUCCEEDED))
                    continue
                policy = json.loads(row.bandwidth_policy or "[]")
                if policy:
                    conn.execute(update(sync_tasks).where(sync_tasks.c.id == row.sync_task_id)
                                 .values(max_bytes_per_second=bandwidth_cap(policy, moment)))
            return ended

        return await self.db.run_write(settle_tx)


def bandwidth_cap(policy: Sequence[Mapping[str, Any]], moment: float) -> int | None:
    """The ``max_bandwidth`` of the window of ``policy`` containing ``moment`` (UTC ``hh:mm``
    windows, ``start`` inclusive, ``end`` exclusive; a window whose end is not after its start
    runs past midnight), or None (unlimited) outside every window."""
    tm = time.gmtime(moment)
    minute = tm.tm_hour * 60 + tm.tm_min
    for window in policy:
        start, end = clock_minutes(str(window["start"])), clock_minutes(str(window["end"]))
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if inside:
            return int(window["max_bandwidth"])
    return None


def clock_minutes(text: str) -> int:
    """Minutes after midnight of ``hh:mm``; raises ValueError otherwise."""
    hours, sep, minutes = text.partition(":")
    if not sep or len(minutes) != 2 or not hours.isdigit() or not minutes.isdigit() or len(hours) > 2:
        raise ValueError(f"{text!r} is not hh:mm")
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return h * 60 + m
