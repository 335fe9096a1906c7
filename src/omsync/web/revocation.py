"""Server-side revocation of dashboard sessions: logout records the session's id, and a
recorded id is refused until the session would have expired anyway (kept by the ledger in
``revoked_sessions``, shared by every process on the database; only a digest of the id is
stored)."""

from __future__ import annotations

import hashlib
import time

from omsync.db import Database
from omsync.ledger import sessions


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


async def revoke(db: Database, session_id: str, expires: int) -> None:
    """End the session ``session_id`` (expiring at ``expires``, epoch seconds) everywhere."""
    await sessions.revoke(db, _digest(session_id), expires, int(time.time()))


async def is_revoked(db: Database, session_id: str) -> bool:
    """Whether the session ``session_id`` was ended by a logout."""
    return await sessions.is_revoked(db, _digest(session_id))


__all__ = ["is_revoked", "revoke"]
