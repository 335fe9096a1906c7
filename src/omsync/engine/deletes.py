"""Delete propagation: deletes announced by a bucket's notifications, applied to the
destination after a grace delay, and only if the source still lacks the key at that moment.

Runs where copying runs (each worker process). Every ``delete_poll_seconds`` a worker leases
the due deletes of tasks whose breaker is closed (``NotificationLedger.claim_deletes``: a lease
in the database, so several processes never work on one delete), and for each:

1. the task must still propagate deletes (else the delete is dropped as ``discarded``);
2. HEAD the source: present → ``kept`` (a later create won, or the delete was early);
   absent → the source bucket itself is checked with a one-key listing, so that a missing
   bucket or refused credentials can never look like every key being deleted;
3. delete the destination object → ``deleted``. Store errors are retried with backoff up to
   ``max_attempts``, then ``failed``.

Outcomes are counted per task (``notify_delete_state``, ``omsync_deletes_total``) and written
into the destination like OMS's object lists, as
``oms/sync_task/<id>/deleted_object_lists/<ms>.deleted_list.txt`` (key, time, outcome, message,
tab-separated). A task whose breaker is open is skipped until an operator resumes it; the
``omsync_delete_breaker_open`` gauge says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from omsync import metrics
from omsync.config import Settings
from omsync.db import Database
from omsync.domain.model import TaskSpec
from omsync.engine.factory import addressed
from omsync.engine.object_lists import CONTENT_TYPE, printable
from omsync.engine.ports import StoreProvider
from omsync.ledger.notifications import DeleteSettings, NotificationLedger, PendingDelete
from omsync.ledger.queue import TaskNotFound
from omsync.ledger.tasks import TaskRepository
from omsync.stores.base import ErrorKind, PutOptions, StoreError

log = logging.getLogger("omsync.engine.deletes")

CLAIM_LIMIT = 50
LEASE_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 300.0


def deleted_list_key(task_id: str, stamp_ms: int) -> str:
    """Destination key of one deleted-object list."""
    return f"oms/sync_task/{task_id}/deleted_object_lists/{stamp_ms}.deleted_list.txt"


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


class DeletePropagator:
    """The delete loop of one worker process. ``start()`` / ``stop()``; ``run_once()`` does one
    round (tests call it directly)."""

    def __init__(self, settings: Settings, db: Database, tasks: TaskRepository, stores: StoreProvider,
                 owner: str) -> None:
        self.settings = settings
        self.tasks = tasks
        self.stores = stores
        self.owner = owner
        self.notes = NotificationLedger(db)
        self._loop: asyncio.Task[None] | None = None
        self._tripped: set[str] = set()
        self._last_stamp = 0

    async def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="omsync-delete-propagation")

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delete propagation round failed; trying again")
                busy = 0
            if busy < CLAIM_LIMIT:
                await asyncio.sleep(self.settings.delete_poll_seconds)

    async def run_once(self) -> int:
        """One round: publish the breakers, apply the due deletes, write their lists. Returns
        how many deletes were claimed."""
        tripped = await self.notes.tripped_tasks()
        self._publish(tripped)
        claimed = []
        if await self.notes.has_due_deletes():
            claimed = await self.notes.claim_deletes(self.owner, CLAIM_LIMIT, int(LEASE_SECONDS * 1000))
        if claimed:
            # A breaker that tripped after the claim was read: hand those back untouched.
            tripped = await self.notes.tripped_tasks()
            held = [item for item in claimed if item.task_id in tripped]
            await self.notes.release_deletes(self.owner, held)
            work = [item for item in claimed if item.task_id not in tripped]
            settings = await self.notes.task_settings([item.task_id for item in work])
            await asyncio.gather(*(self._one(item, settings.get(item.task_id)) for item in work))
        await self.flush_lists()
        return len(claimed)

    def _publish(self, tripped: dict[str, int]) -> None:
        for task_id in tripped.keys() - self._tripped:
            log.warning("delete propagation of task %s is paused by its breaker (%d deletes in a minute); "
                        "resume with: omsync task deletes resume %s", task_id, tripped[task_id], task_id,
                        extra={"task_id": task_id})
        for task_id in tripped:
            metrics.DELETE_BREAKER_OPEN.labels(task_id).set(1)
        for task_id in self._tripped - tripped.keys():
            metrics.DELETE_BREAKER_OPEN.labels(task_id).set(0)
        self._tripped = set(tripped)

    async def _one(self, item: PendingDelete, settings: DeleteSettings | None) -> None:
        try:
            if settings is None:
                return  # the task is gone, and its pending deletes with it
            if not settings.enabled:
                await self._finish(item, "discarded", "delete propagation was turned off")
                return
            spec = addressed(await self.tasks.spec(item.task_id))
            outcome, message = await self._apply(spec, item.key)
        except TaskNotFound:
            return
        except StoreError as exc:
            await self._retry(item, exc)
            return
        except Exception:
            log.exception("unexpected error propagating the delete of key %r of task %s", item.key, item.task_id)
            await self._retry(item, StoreError(ErrorKind.TRANSIENT, "internal error"))
            return
        await self._finish(item, outcome, message)

    async def _apply(self, spec: TaskSpec, key: str) -> tuple[str, str | None]:
        source = await self.stores.source(spec)
        try:
            await source.head(spec.src_bucket, key)
        except StoreError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
        else:
            return "kept", "the source still has the key"
        # A bare 404 may mean the bucket is gone or misnamed: one listing must succeed before
        # the key is believed deleted (a NOT_FOUND here is raised, retried and finally failed).
        await source.list(spec.src_bucket, prefix=key, limit=1)
        destination = await self.stores.destination(spec)
        await destination.delete(spec.dst_bucket, key)
        return "deleted", None

    async def _finish(self, item: PendingDelete, outcome: str, message: str | None) -> None:
        recorded = await self.notes.finish_delete(self.owner, item, outcome, message)
        if not recorded:
            log.info("delete of key %r of task %s changed meanwhile; not recorded here", item.key, item.task_id)
            return
        metrics.DELETES.labels(item.task_id, outcome).inc()
        log.info("propagated delete of key %r of task %s: %s", item.key, item.task_id, outcome,
                 extra={"task_id": item.task_id, "key": item.key, "outcome": outcome})

    async def _retry(self, item: PendingDelete, error: StoreError) -> None:
        attempts = item.attempts + 1
        if attempts >= self.settings.max_attempts or (not error.retryable and error.kind is not ErrorKind.NOT_FOUND):
            await self._finish(item, "failed", f"{error.kind.value}: {error.message}"[:500])
            return
        delay = min(MAX_BACKOFF_SECONDS, self.settings.retry_base_seconds * 2 ** item.attempts)
        await self.notes.retry_delete(self.owner, item, delay)
        log.info("delete of key %r of task %s retried in %.1f s: %s", item.key, item.task_id, delay, error.message)

    def _stamp(self) -> int:
        self._last_stamp = max(int(time.time() * 1000), self._last_stamp + 1)
        return self._last_stamp

    async def flush_lists(self) -> int:
        """Write logged delete outcomes into each task's destination; rows are dropped only
        after their list was written. Returns how many rows were written."""
        logged = await self.notes.logged_deletes()
        written = 0
        for task_id, rows in logged.items():
            try:
                spec = addressed(await self.tasks.spec(task_id))
                store = await self.stores.destination(spec)
                body = "".join(f"{printable(key)}\t{_utc(at)}\t{outcome}\t{printable(message or '')}\n"
                               for _, key, outcome, message, at in rows).encode("utf-8")
                await store.put(spec.dst_bucket, deleted_list_key(task_id, self._stamp()), body,
                                PutOptions(content_type=CONTENT_TYPE))
            except TaskNotFound:
                continue
            except StoreError as exc:
                log.warning("deleted-object list of task %s not written (kept for the next round): %s",
                            task_id, exc.message)
                continue
            await self.notes.forget_logged([row[0] for row in rows])
            written += len(rows)
        return written
