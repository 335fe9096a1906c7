"""Revoked dashboard sessions (table ``revoked_sessions``, shared by every process on the
database): a logout records the session's digest until the session would have expired anyway."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from omsync.db import Database
from omsync.ledger.tables import revoked_sessions

__all__ = ["is_revoked", "revoke"]


async def revoke(db: Database, digest: str, expires: int, now: int) -> None:
    """Record ``digest`` as revoked until ``expires`` (epoch seconds); drops the records that
    expired before ``now``. Recording a digest twice keeps one record."""
    async with db.write() as conn:
        await conn.execute(delete(revoked_sessions).where(revoked_sessions.c.expires_at < now))
        found = await conn.execute(select(revoked_sessions.c.session_id)
                                   .where(revoked_sessions.c.session_id == digest))
        if found.first() is None:
            await conn.execute(insert(revoked_sessions).values(session_id=digest, expires_at=expires))


async def is_revoked(db: Database, digest: str) -> bool:
    """Whether ``digest`` was recorded by :func:`revoke`."""
    async with db.read() as conn:
        found = await conn.execute(select(revoked_sessions.c.session_id)
                                   .where(revoked_sessions.c.session_id == digest))
        return found.first() is not None
