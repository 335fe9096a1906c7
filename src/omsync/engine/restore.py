"""Archived source objects: restore them first (``enable_restore``) or fail as ``source_archived``.

An object in an archive or cold-archive class cannot be read (S3 answers GetObject with
``InvalidObjectState`` and CopyObject with ``ObjectNotInActiveTierError``). Nothing is looked
up on the ordinary path: only when a copy fails with one of those answers is the source HEADed,
and its class checked against the provider profile's tiers (``ARCHIVE``/``DEEP_ARCHIVE``).

With ``enable_restore`` the object is restored (RestoreObject, ``restore_days``) and its key is
given back to the ledger due later, WITHOUT counting an attempt (nothing failed): after
``restore_poll_seconds``, then twice as long at each further look while the restore is under
way, up to ``restore_poll_max_seconds``. The restore's record (:mod:`omsync.ledger.restores`)
and the pending key are in the database, so a restore of hours survives restarts. Once the
object is readable the key is copied like any other (its attempts untouched). Without
``enable_restore`` the key fails at once with reason ``source_archived``.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from omsync.config import Settings
from omsync.domain.model import Outcome, OutcomeKind, TaskSpec
from omsync.engine.retry import CopyError, Final, Side
from omsync.ledger.queue import Claim
from omsync.ledger.restores import Restores
from omsync.stores.base import ObjectInfo, ObjectStore, StoreError
from omsync.stores.profiles import get_profile

log = logging.getLogger("omsync.engine.restore")

SOURCE_ARCHIVED = "source_archived"
ARCHIVE_TIERS = frozenset({"ARCHIVE", "DEEP_ARCHIVE"})
S3_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# What stores answer when an archived object is read or copied: S3-compatible ones, and Azure
# for a blob in the Archive tier (which omsync does not rehydrate: it fails as source_archived).
_ARCHIVED_CODES = frozenset({"InvalidObjectState", "ObjectNotInActiveTierError", "BlobArchived"})
# A store that says an object is restored and still refuses to read it: after this many looks
# at it since its restore was requested, the read's error is classified as usual.
MAX_LOOKS_WHEN_DONE = 64


@runtime_checkable
class Restorable(Protocol):
    """A store that can restore archived objects (S3's RestoreObject)."""

    async def restore(self, bucket: str, key: str, days: int = 1, tier: str = "Standard") -> bool: ...


def archived_error(error: StoreError) -> bool:
    """Whether a failed copy may have met an archived source object."""
    if isinstance(error, CopyError) and error.side is not Side.SOURCE:
        return False
    return error.code in _ARCHIVED_CODES


def is_archived(spec: TaskSpec, info: ObjectInfo) -> bool:
    """Whether the source object's class is an archive tier of the source provider's profile,
    or one of S3's archive class names (GLACIER, DEEP_ARCHIVE), which S3-compatible servers
    report whatever their own names are."""
    if (info.storage_class or "").upper() in S3_ARCHIVE_CLASSES:
        return True
    try:
        return get_profile(spec.src_cloud_type.value).tier_of(info.storage_class) in ARCHIVE_TIERS
    except KeyError:
        return False


def restore_state(info: ObjectInfo) -> str:
    """``none`` (no restore asked for), ``ongoing`` or ``done``, from the store's report."""
    value = (info.restore or "").replace(" ", "").lower()
    if not value:
        return "none"
    if 'ongoing-request="true"' in value:
        return "ongoing"
    return "done"


class RestoreHandler:
    """Decides, for a copy that met an archived source, between restoring and failing."""

    def __init__(self, settings: Settings, restores: Restores, owner: str) -> None:
        self.settings = settings
        self.restores = restores
        self.owner = owner

    def delay(self, checks: int) -> float:
        """Seconds until the next look, after ``checks`` looks since the restore was asked for."""
        first = self.settings.restore_poll_seconds
        return min(self.settings.restore_poll_max_seconds, first * 2.0 ** min(checks, 32))

    async def handle(self, claim: Claim, spec: TaskSpec, source: ObjectStore, error: StoreError) -> Final | None:
        """What to do about ``error``, which :func:`archived_error` flagged.

        Returns a final FAILURE ``source_archived`` (no ``enable_restore``; or the store cannot
        restore), ``None`` when the key was handed back to the ledger to wait for its restore
        (nothing more to record; a restore that completed since the failed read counts as a
        look too), and raises the ``StoreError`` to classify as usual when the source turns out
        not to be archived, when HEAD or RestoreObject fail, or after MAX_LOOKS_WHEN_DONE looks
        found it restored yet unreadable.
        """
        try:
            info = await source.head(spec.src_bucket, claim.key)
        except StoreError as exc:
            raise CopyError(Side.SOURCE, exc) from exc
        if not is_archived(spec, info):
            raise error
        where = f"source object is in archive class {info.storage_class}"
        if not spec.enable_restore:
            return Final(Outcome(OutcomeKind.FAILURE, reason=SOURCE_ARCHIVED,
                                 message=f"{where}; the task does not restore archived objects (enable_restore)"))
        state = restore_state(info)
        if not isinstance(source, Restorable):
            return Final(Outcome(OutcomeKind.FAILURE, reason=SOURCE_ARCHIVED,
                                 message=f"{where}; this source cannot restore objects"))
        requested = state == "none"
        if requested:
            try:
                await source.restore(spec.src_bucket, claim.key, days=self.settings.restore_days)
            except StoreError as exc:
                raise CopyError(Side.SOURCE, exc) from exc
        known = None if requested else await self.restores.state(claim.task_id, claim.key)
        checks = 0 if known is None else known.checks + 1
        if state == "done" and checks > MAX_LOOKS_WHEN_DONE:
            raise error  # reported restored look after look, yet never readable: a failure
        delay = self.delay(checks)
        if state == "done":
            # The restore completed between the failed read and this look: copy again soon.
            delay = min(delay, self.settings.restore_poll_seconds)
        message = (f"{where}; restore requested, next look in {delay:.0f} s" if requested
                   else f"{where}; restore under way (look {checks + 1}), next look in {delay:.0f} s"
                   if state == "ongoing" else f"{where}; restore completed, copying again in {delay:.0f} s")
        kept = await self.restores.defer(self.owner, claim.row_id, claim.task_id, claim.key, delay, message,
                                         checks=checks)
        if kept:
            log.info("key %r of task %s: %s", claim.key, claim.task_id, message,
                     extra={"task_id": claim.task_id, "key": claim.key})
        return None
