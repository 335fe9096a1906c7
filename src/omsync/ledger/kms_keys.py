"""Data keys (:mod:`omsync.kms`) in the database.

``kms_keys`` holds one row per data key (scoped by project), ``kms_key_versions`` the material
of every version, encrypted under the master key (:class:`~omsync.secrets.SecretBox`).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    update,
)

from omsync import kms
from omsync.db import Database
from omsync.ledger.queue import now_ms
from omsync.ledger.tables import metadata
from omsync.secrets import SecretBox

kms_keys = Table(
    "kms_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),  # a UUID: the 36 characters OMS key ids have
    Column("project_id", String(1024), nullable=False, index=True),
    Column("alias", String(255), nullable=True),
    Column("current_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("rotated_at", BigInteger, nullable=True),
    UniqueConstraint("project_id", "alias", name="uq_kms_keys_project_alias"),
)

kms_key_versions = Table(
    "kms_key_versions",
    metadata,
    Column("key_id", String(36), ForeignKey("kms_keys.key_id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("material_enc", Text, nullable=False),  # base64 material, encrypted under the master key
    Column("created_at", BigInteger, nullable=False),
)

class AliasTaken(ValueError):
    """The project already has a data key with this alias."""


@dataclass(frozen=True)
class DataKeyInfo:
    """A data key as listed (no material)."""

    key_id: str
    project_id: str
    alias: str | None
    current_version: int
    created_at: int
    rotated_at: int | None


class DataKeys:
    """Create, list, rotate and load data keys; material is encrypted with ``box``."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def _seal(self, material: bytes) -> str:
        return self.box.encrypt(base64.b64encode(material).decode("ascii"))

    async def create(self, project_id: str, alias: str | None = None) -> DataKeyInfo:
        """A new data key (version 1) for ``project_id``. Raises :class:`AliasTaken`."""
        key_id = str(uuid.uuid4())
        at = now_ms()
        sealed = self._seal(kms.new_material())

        def tx(conn: Connection) -> None:
            if alias is not None and conn.execute(
                select(kms_keys.c.key_id).where(kms_keys.c.project_id == project_id, kms_keys.c.alias == alias)
            ).first():
                raise AliasTaken(alias)
            conn.execute(kms_keys.insert().values(key_id=key_id, project_id=project_id, alias=alias,
                                                  current_version=1, created_at=at))
            conn.execute(kms_key_versions.insert().values(key_id=key_id, version=1, material_enc=sealed, created_at=at))

        await self.db.run_write(tx)
        return DataKeyInfo(key_id, project_id, alias, 1, at, None)

    async def list(self, project_id: str | None = None) -> list[DataKeyInfo]:
        """Data keys (of one project, or all), oldest first."""
        query = select(kms_keys).order_by(kms_keys.c.created_at, kms_keys.c.key_id)
        if project_id is not None:
            query = query.where(kms_keys.c.project_id == project_id)

        def tx(conn: Connection) -> list[DataKeyInfo]:
            return [DataKeyInfo(r.key_id, r.project_id, r.alias, r.current_version, r.created_at, r.rotated_at)
                    for r in conn.execute(query)]

        return await self.db.run_read(tx)

    async def rotate(self, key_id: str, project_id: str | None = None) -> DataKeyInfo:
        """Add a version and make it current; older versions still decrypt. Raises
        :class:`~omsync.kms.UnknownDataKey`."""
        at = now_ms()
        sealed = self._seal(kms.new_material())

        def tx(conn: Connection) -> DataKeyInfo:
            where = [kms_keys.c.key_id == key_id]
            if project_id is not None:
                where.append(kms_keys.c.project_id == project_id)
            row = conn.execute(select(kms_keys).where(*where)).first()
            if row is None:
                raise kms.UnknownDataKey(key_id)
            version = int(row.current_version) + 1
            conn.execute(kms_key_versions.insert().values(key_id=key_id, version=version, material_enc=sealed,
                                                          created_at=at))
            conn.execute(update(kms_keys).where(kms_keys.c.key_id == key_id)
                         .values(current_version=version, rotated_at=at))
            return DataKeyInfo(key_id, row.project_id, row.alias, version, row.created_at, at)

        return await self.db.run_write(tx)

    async def load(self, key_id: str, project_id: str | None = None) -> kms.DataKey:
        """The key with every version's material, decrypted. ``project_id`` (when given) must
        own it. Raises :class:`~omsync.kms.UnknownDataKey`."""
        def tx(conn: Connection) -> tuple[Any, list[Any]]:
            where = [kms_keys.c.key_id == key_id]
            if project_id is not None:
                where.append(kms_keys.c.project_id == project_id)
            row = conn.execute(select(kms_keys).where(*where)).first()
            if row is None:
                return None, []
            versions = conn.execute(select(kms_key_versions.c.version, kms_key_versions.c.material_enc)
                                    .where(kms_key_versions.c.key_id == key_id)).all()
            return row, list(versions)

        row, versions = await self.db.run_read(tx)
        if row is None:
            raise kms.UnknownDataKey(f"no data key {key_id!r} in this project")
        material = {int(v.version): base64.b64decode(self.box.decrypt(v.material_enc)) for v in versions}
        return kms.DataKey(row.key_id, row.project_id, row.alias, int(row.current_version), material, row.created_at)

    async def open(self, project_id: str, secrets: Mapping[str, Any]) -> dict[str, Any]:
        """``secrets`` (a task's stored credential mapping) with every field that names a data
        key in ``<field>_kms_key_id`` decrypted with that key. Raises
        :class:`~omsync.kms.KmsError` (naming the field) when one does not decrypt."""
        opened = dict(secrets)
        keys: dict[str, kms.DataKey] = {}
        for name, value in secrets.items():
            key_id = secrets.get(f"{name}_kms_key_id")
            if not key_id or not isinstance(value, str):
                continue
            if key_id not in keys:
                keys[key_id] = await self.load(key_id, project_id)
            try:
                opened[name] = kms.decrypt(keys[key_id], value)
            except kms.KmsError as exc:
                raise kms.KmsError(f"{name} {exc}") from None
        return opened
