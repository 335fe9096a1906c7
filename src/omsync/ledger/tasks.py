"""Sync tasks, access keys and operator tokens: the rows behind the API's resources."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update

from omsync.db import Database
from omsync.domain.errors import TaskBusy as TaskBusy  # re-exported: callers import it from here
from omsync.domain.errors import TaskLimitReached as TaskLimitReached
from omsync.domain.errors import TaskNotFound
from omsync.domain.lifecycle import TaskOperation, check_task_operation
from omsync.domain.model import (
    CdnAuthentication,
    CloudType,
    ConsistencyCheck,
    Credentials,
    OverwriteMode,
    SourceCdn,
    StoragePolicy,
    TaskLimits,
    TaskSpec,
    TaskStatus,
)
from omsync.ledger.migration_tasks import MigrationRepository, is_sync_task
from omsync.ledger.queue import now_ms
from omsync.ledger.tables import access_keys, auth_tokens, ledger, sync_tasks
from omsync.secrets import SecretBox, hash_token


@dataclass(frozen=True)
class AccessKey:
    access_key: str
    project_id: str
    created_at: int
    revoked_at: int | None


CREDENTIAL_FIELDS = ("src_ak", "src_sk", "dst_ak", "dst_sk")
# Stored with them when present: the CDN's authentication key, and for every field sent
# encrypted for a data key (crypto type KMS) the key's id in ``<field>_kms_key_id`` (the field
# then holds the ciphertext, decrypted only in spec()).
OPTIONAL_SECRET_FIELDS = ("cdn_key", *(f"{name}_kms_key_id" for name in (*CREDENTIAL_FIELDS, "cdn_key")))


def _sealed(credentials: Mapping[str, str | None]) -> dict[str, str | None]:
    return {**{k: credentials[k] for k in CREDENTIAL_FIELDS},
            **{k: credentials[k] for k in OPTIONAL_SECRET_FIELDS if credentials.get(k)}}


class TaskRepository:
    """CRUD of sync tasks, scoped by project: a task of another project is :class:`TaskNotFound`."""

    def __init__(self, db: Database, box: SecretBox, *, max_tasks_per_project: int = 0) -> None:
        self.db = db
        self.box = box
        self.max_tasks_per_project = max_tasks_per_project

    async def create(self, project_id: str, fields: Mapping[str, Any], credentials: Mapping[str, str]) -> str:
        """Store a new task, SYNCHRONIZING at once (OMS starts tasks on creation); returns its id.

        ``credentials`` holds src_ak/src_sk/dst_ak/dst_sk; they are stored encrypted only.
        Raises :class:`TaskLimitReached` when the project's task cap is reached.
        """
        task_id = str(uuid.uuid4())
        at = now_ms()
        async with self.db.write() as conn:
            if self.max_tasks_per_project:
                owned = await conn.scalar(
                    select(func.count()).select_from(sync_tasks).where(sync_tasks.c.project_id == project_id, is_sync_task())
                )
                if (owned or 0) >= self.max_tasks_per_project:
                    raise TaskLimitReached(project_id, self.max_tasks_per_project)
            await conn.execute(
                sync_tasks.insert().values(
                    id=task_id, project_id=project_id, status=TaskStatus.SYNCHRONIZING.value,
                    credentials_enc=self.box.encrypt_json(_sealed(credentials)),
                    create_time=at, last_start_time=at, **fields,
                )
            )
        return task_id

    async def get(self, project_id: str, task_id: str) -> Mapping[str, Any]:
        """The task's row (without credentials). Raises :class:`TaskNotFound`."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(sync_tasks).where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id, is_sync_task())
                )
            ).mappings().first()
        if row is None:
            raise TaskNotFound(task_id)
        return {k: v for k, v in row.items() if k != "credentials_enc"}

    async def page(
        self, project_id: str, *, limit: int, offset: int, status: str | None
    ) -> tuple[list[Mapping[str, Any]], int]:
        """One page of the project's tasks, newest first, and the total count matching."""
        where = [sync_tasks.c.project_id == project_id, is_sync_task()]
        if status:
            where.append(sync_tasks.c.status == status)
        async with self.db.read() as conn:
            total = await conn.scalar(select(func.count()).select_from(sync_tasks).where(*where))
            rows = (
                await conn.execute(
                    select(sync_tasks).where(*where)
                    .order_by(sync_tasks.c.create_time.desc(), sync_tasks.c.id).limit(limit).offset(offset)
                )
            ).mappings().all()
        return [{k: v for k, v in r.items() if k != "credentials_enc"} for r in rows], int(total or 0)

    async def delete(self, project_id: str, task_id: str) -> None:
        """Delete a stopped task with its ledger and statistics. Raises :class:`TaskNotFound`,
        :class:`TaskBusy` while SYNCHRONIZING."""
        async with self.db.write() as conn:
            status = await conn.scalar(
                select(sync_tasks.c.status).where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id, is_sync_task())
            )
            if status is None:
                raise TaskNotFound(task_id)
            check_task_operation(status, TaskOperation.DELETE)
            await conn.execute(delete(sync_tasks).where(sync_tasks.c.id == task_id))

    async def start(self, project_id: str, task_id: str, credentials: Mapping[str, str]) -> None:
        """STOPPED → SYNCHRONIZING with fresh credentials; updates ``last_start_time``.
        Raises :class:`TaskNotFound`, :class:`TaskBusy` when already synchronizing."""
        await self._transition(
            project_id, task_id, TaskOperation.START,
            credentials_enc=self.box.encrypt_json(_sealed(credentials)),
            last_start_time=now_ms(),
        )

    async def resume(self, project_id: str, task_id: str) -> None:
        """STOPPED → SYNCHRONIZING keeping the task's stored (encrypted) credentials: the
        dashboard never sees them, so it starts a task with those it already has.
        Raises :class:`TaskNotFound`, :class:`TaskBusy` when already synchronizing."""
        await self._transition(project_id, task_id, TaskOperation.START, last_start_time=now_ms())

    async def stop(self, project_id: str, task_id: str) -> None:
        """SYNCHRONIZING → STOPPED. Pending keys stay in the ledger and resume on start.
        Raises :class:`TaskNotFound`, :class:`TaskBusy` when already stopped."""
        await self._transition(project_id, task_id, TaskOperation.STOP)

    async def _transition(self, project_id: str, task_id: str, operation: TaskOperation, **values: Any) -> None:
        async with self.db.write() as conn:
            status = await conn.scalar(
                select(sync_tasks.c.status).where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id, is_sync_task())
            )
            if status is None:
                raise TaskNotFound(task_id)
            target = check_task_operation(status, operation)
            assert target is not None  # start and stop keep the task
            await conn.execute(
                update(sync_tasks).where(sync_tasks.c.id == task_id).values(status=target.value, **values)
            )

    async def spec(self, task_id: str) -> TaskSpec:
        """Everything the engine needs for a task, credentials decrypted. Raises :class:`TaskNotFound`."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(sync_tasks).where(sync_tasks.c.id == task_id))).mappings().first()
        if row is None:
            raise TaskNotFound(task_id)
        creds = self.box.decrypt_json(row["credentials_enc"])
        if any(name.endswith("_kms_key_id") for name in creds):
            from omsync.ledger.kms_keys import DataKeys

            creds = await DataKeys(self.db, self.box).open(row["project_id"], creds)
        cdn = json.loads(row["source_cdn"]) if row["source_cdn"] else None
        spec = TaskSpec(
            task_id=task_id,
            src_cloud_type=CloudType(row["src_cloud_type"]),
            src_region=row["src_region"],
            src_bucket=row["src_bucket"],
            src=Credentials(creds["src_ak"], creds["src_sk"]),
            dst_cloud_type=CloudType(row["dst_cloud_type"]),
            dst_region=row["dst_region"],
            dst_bucket=row["dst_bucket"],
            dst=Credentials(creds["dst_ak"], creds["dst_sk"]),
            overwrite_mode=OverwriteMode(row["object_overwrite_mode"]),
            consistency_check=ConsistencyCheck(row["consistency_check"]),
            enable_metadata_migration=bool(row["enable_metadata_migration"]),
            dst_storage_policy=StoragePolicy(row["dst_storage_policy"]) if row["dst_storage_policy"] else None,
            app_id=row["app_id"],
            enable_restore=bool(row["enable_restore"]),
            source_cdn=SourceCdn(cdn["domain"], cdn["protocol"], CdnAuthentication(cdn["authentication_type"]),
                                 creds.get("cdn_key")) if cdn else None,
        )
        # A migration task's engine row: its save_prefix and object-list folder.
        return await MigrationRepository(self.db, self.box).overlay(spec)

    async def credentials(self, project_id: str, task_id: str) -> dict[str, Any]:
        """The task's stored credential mapping as stored (fields sent encrypted for a data key
        stay ciphertexts). Raises :class:`TaskNotFound`."""
        async with self.db.read() as conn:
            value = await conn.scalar(select(sync_tasks.c.credentials_enc).where(
                sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id, is_sync_task()))
        if value is None:
            raise TaskNotFound(task_id)
        return self.box.decrypt_json(value)

    async def failing_keys(self, task_id: str) -> int:
        """How many keys of the task are failing now (their last attempt ended in FAILURE and
        no later event or retry has succeeded)."""
        async with self.db.read() as conn:
            value = await conn.scalar(
                select(func.count()).select_from(ledger).where(ledger.c.task_id == task_id, ledger.c.state == "failed")
            )
        return int(value or 0)

    async def limits(self, project_id: str, task_id: str) -> TaskLimits:
        """The task's throttles. Raises :class:`TaskNotFound`."""
        async with self.db.read() as conn:
            row = (await conn.execute(
                select(*_LIMIT_COLUMNS).where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id, is_sync_task())
            )).first()
        if row is None:
            raise TaskNotFound(task_id)
        return _limits(row)

    async def set_limits(self, project_id: str, task_id: str, limits: TaskLimits) -> None:
        """Replace the task's throttles (``None`` fields: unlimited); running workers apply them
        within about a second. Raises :class:`TaskNotFound`."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(sync_tasks)
                .where(sync_tasks.c.id == task_id, sync_tasks.c.project_id == project_id, is_sync_task())
                .values(
                    max_concurrency=limits.max_concurrency,
                    max_objects_per_second=limits.max_objects_per_second,
                    max_bytes_per_second=limits.max_bytes_per_second,
                )
            )
            if not result.rowcount:
                raise TaskNotFound(task_id)

    async def running_limits(self) -> dict[str, TaskLimits]:
        """Throttles of the running tasks that have any (the engine polls this)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(sync_tasks.c.id, *_LIMIT_COLUMNS).where(
                    sync_tasks.c.status == TaskStatus.SYNCHRONIZING.value,
                    or_(*(column.is_not(None) for column in _LIMIT_COLUMNS)),
                )
            )
            return {row.id: _limits(row) for row in rows}

    async def running_task_ids(self) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(sync_tasks.c.id).where(sync_tasks.c.status == TaskStatus.SYNCHRONIZING.value)
            )
            return [r.id for r in rows]


_LIMIT_COLUMNS = (sync_tasks.c.max_concurrency, sync_tasks.c.max_objects_per_second, sync_tasks.c.max_bytes_per_second)


def _limits(row: Any) -> TaskLimits:
    return TaskLimits(
        max_concurrency=row.max_concurrency,
        max_objects_per_second=float(row.max_objects_per_second) if row.max_objects_per_second is not None else None,
        max_bytes_per_second=row.max_bytes_per_second,
    )


class KeyRepository:
    """API access keys (AK/SK per project) and operator-issued X-Auth-Token values."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box
        # Every signed request looks its key up: driver SQL, no thread hop on SQLite, and the secret
        # decrypted once per stored ciphertext (a re-created key has a new one).
        mark = "%s" if db.is_postgres else "?"
        self._lookup_sql = (
            f"SELECT secret_enc, project_id FROM access_keys WHERE access_key = {mark} AND revoked_at IS NULL"
        )
        self._decrypted: dict[str, str] = {}

    async def create_key(self, project_id: str) -> tuple[str, str]:
        """Create an AK/SK pair for ``project_id``; the SK is returned once and stored encrypted."""
        access_key = secrets.token_hex(10).upper()
        secret_key = secrets.token_urlsafe(30)
        async with self.db.write() as conn:
            await conn.execute(
                access_keys.insert().values(
                    access_key=access_key, project_id=project_id,
                    secret_enc=self.box.encrypt(secret_key), created_at=now_ms(),
                )
            )
        return access_key, secret_key

    async def list_keys(self, project_id: str | None = None) -> list[AccessKey]:
        query = select(access_keys.c.access_key, access_keys.c.project_id, access_keys.c.created_at,
                       access_keys.c.revoked_at).order_by(access_keys.c.created_at)
        if project_id is not None:
            query = query.where(access_keys.c.project_id == project_id)
        async with self.db.read() as conn:
            return [AccessKey(*r) for r in await conn.execute(query)]

    async def revoke_key(self, access_key: str) -> bool:
        """Revoke a key; False when no active key has that id."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(access_keys)
                .where(access_keys.c.access_key == access_key, access_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
        return bool(result.rowcount)

    async def lookup_key(self, access_key: str) -> tuple[str, str] | None:
        """(secret_key, project_id) of an active key, or None."""
        row = await self.db.read_one(self._lookup_sql, (access_key,))
        if row is None:
            return None
        secret_enc, project_id = str(row[0]), str(row[1])
        secret = self._decrypted.get(secret_enc)
        if secret is None:
            secret = self.box.decrypt(secret_enc)
            if len(self._decrypted) >= 1024:
                self._decrypted.clear()
            self._decrypted[secret_enc] = secret
        return secret, project_id

    async def create_token(self, project_id: str) -> str:
        """Issue an X-Auth-Token for ``project_id``; only its hash is stored."""
        token = "omsync-" + secrets.token_urlsafe(32)
        async with self.db.write() as conn:
            await conn.execute(
                auth_tokens.insert().values(token_hash=hash_token(token), project_id=project_id, created_at=now_ms())
            )
        return token

    async def revoke_token(self, token: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(auth_tokens)
                .where(auth_tokens.c.token_hash == hash_token(token), auth_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
        return bool(result.rowcount)

    async def project_for_token(self, token: str) -> str | None:
        async with self.db.read() as conn:
            value = await conn.scalar(
                select(auth_tokens.c.project_id).where(
                    auth_tokens.c.token_hash == hash_token(token), auth_tokens.c.revoked_at.is_(None)
                )
            )
        return str(value) if value is not None else None


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
