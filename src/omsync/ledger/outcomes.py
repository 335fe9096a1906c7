"""The outcome log (``outcome_log``): final outcomes written by the ledger in the outcome's
transaction, waiting to be written into the tasks' object lists
(:mod:`omsync.engine.object_lists`) and then removed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, func, select

from omsync.db import Database
from omsync.ledger.tables import ledger, outcome_log

__all__ = ["LoggedOutcome", "OutcomeLog"]

_DELETE_BATCH = 500


@dataclass(frozen=True)
class LoggedOutcome:
    """One final outcome waiting for its object list. ``size``: the outcome's, else the size
    omsync last copied of the key (a skip may not carry it); ``raw_key``: the key as the
    latest event sent it, when that differs from the key."""

    id: int
    key: bytes
    outcome: str
    reason: str | None
    message: str | None
    at: int
    size: int | None
    raw_key: str | None


class OutcomeLog:
    """Reads and removes ``outcome_log`` rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def task_ids(self) -> list[str]:
        """The tasks with outcomes waiting."""
        async with self.db.read() as conn:
            return [r[0] for r in await conn.execute(select(outcome_log.c.task_id).distinct())]

    async def oldest(self, task_id: str, limit: int) -> list[LoggedOutcome]:
        """Up to ``limit`` of the task's waiting outcomes, oldest first."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(outcome_log.c.id, outcome_log.c.key, outcome_log.c.outcome,
                           outcome_log.c.reason, outcome_log.c.message, outcome_log.c.at,
                           func.coalesce(outcome_log.c.size, ledger.c.size).label("size"),
                           ledger.c.raw_key)
                    .select_from(outcome_log.outerjoin(
                        ledger, and_(ledger.c.task_id == outcome_log.c.task_id, ledger.c.key == outcome_log.c.key)))
                    .where(outcome_log.c.task_id == task_id)
                    .order_by(outcome_log.c.id)
                    .limit(limit)
                )
            ).all()
        return [LoggedOutcome(id=r.id, key=bytes(r.key), outcome=r.outcome, reason=r.reason, message=r.message,
                              at=r.at, size=r.size, raw_key=r.raw_key) for r in rows]

    async def remove(self, ids: list[int]) -> None:
        """Remove the outcomes ``ids`` (written into their lists)."""
        # By id, never by range: on PostgreSQL a row with a lower id may commit after a higher
        # one was read.
        async with self.db.write() as conn:
            for start in range(0, len(ids), _DELETE_BATCH):
                await conn.execute(delete(outcome_log).where(outcome_log.c.id.in_(ids[start:start + _DELETE_BATCH])))
