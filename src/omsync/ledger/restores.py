"""Restores of archived source objects (``enable_restore``) in the database.

``restores`` remembers, per task and key, that a RestoreObject was requested, how often the
object has been looked at since and when it is looked at next: the key itself waits in the
ledger as a pending row due at that time, so a long restore survives restarts of every process.
A row stays after its key was copied (one small row per restored key, dropped with its task);
a later restore of the same key starts it afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    delete,
    select,
    update,
)

from omsync.db import Database
from omsync.ledger.queue import now_ms
from omsync.ledger.tables import ledger, metadata

restores = Table(
    "restores",
    metadata,
    Column("task_id", String(64), ForeignKey("sync_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("key", LargeBinary, primary_key=True),  # UTF-8 bytes of the object key, exact
    Column("requested_at", BigInteger, nullable=False),
    Column("checks", Integer, nullable=False, server_default="0"),  # looks at the object since
    Column("next_check_at", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class RestoreState:
    requested_at: int
    checks: int


class Restores:
    """The restores a task has asked for, and the deferral of their keys in the ledger."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def state(self, task_id: str, key: str) -> RestoreState | None:
        """The restore requested for ``key``, or None."""
        stmt = select(restores.c.requested_at, restores.c.checks).where(
            restores.c.task_id == task_id, restores.c.key == key.encode("utf-8"))

        def tx(conn: Connection) -> RestoreState | None:
            row = conn.execute(stmt).first()
            return None if row is None else RestoreState(int(row.requested_at), int(row.checks))

        return await self.db.run_read(tx)

    async def defer(self, owner: str, row_id: int, task_id: str, key: str, delay_seconds: float,
                    message: str, *, checks: int) -> bool:
        """Give a leased ledger row back, due after ``delay_seconds``, WITHOUT counting an
        attempt (the object is being restored: nothing failed), and record the restore:
        ``checks`` looks at the object since it was requested (0: requested now). Returns False
        when the lease was lost (nothing changed)."""
        at = now_ms()
        due = at + int(delay_seconds * 1000)
        raw = key.encode("utf-8")

        def tx(conn: Connection) -> bool:
            moved = conn.execute(
                update(ledger)
                .where(ledger.c.id == row_id, ledger.c.lease_owner == owner, ledger.c.state == "inflight")
                .values(state="pending", lease_owner=None, due_at=due, reason="restoring",
                        message=message[:2000], updated_at=at)
            ).rowcount
            if not moved:
                return False
            where = (restores.c.task_id == task_id, restores.c.key == raw)
            if checks and conn.execute(update(restores).where(*where)
                                       .values(checks=checks, next_check_at=due)).rowcount:
                return True
            conn.execute(delete(restores).where(*where))
            conn.execute(restores.insert().values(task_id=task_id, key=raw, requested_at=at, checks=checks,
                                                  next_check_at=due))
            return True

        return bool(await self.db.run_write(tx))
