"""Server-side revocation of dashboard sessions: logout records the session's id, and a
recorded id is refused until the session would have expired anyway (table ``revoked_sessions``,
shared by every process on the database)."""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import delete, insert, select

from omsync.db import Database
from omsync.ledger.tables import revoked_sessions


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


async def revoke(db: Database, session_id: str, expires: int) -> None:
    """End the session ``session_id`` (expiring at ``expires``, epoch seconds) everywhere."""
    digest = _digest(session_id)
    now = int(time.time())
    async with db.write() as conn:
        await conn.execute(delete(revoked_sessions).where(revoked_sessions.c.expires_at < now))
        found = await conn.execute(select(revoked_sessions.c.session_id)
                                   .where(revoked_sessions.c.session_id == digest))
        if found.first() is None:
            await conn.execute(insert(revoked_sessions).values(session_id=digest, expires_at=expires))


async def is_revoked(db: Database, session_id: str) -> bool:
    """Whether the session ``session_id`` was ended by a logout."""
    async with db.read() as conn:
        found = await conn.execute(select(revoked_sessions.c.session_id)
                                   .where(revoked_sessions.c.session_id == _digest(session_id)))
        return found.first() is not None


__all__ = ["is_revoked", "revoke"]
