"""Migration tasks inside each worker process: listing under a lease, and completion.

Two loops run beside the copy engine (:class:`MigrationRunner`):

* the lister leases the listing of one running migration task at a time
  (``MigrationRepository.claim_listing``) and feeds it page by page into the ledger
  (:mod:`omsync.engine.lister`, ``record_page``: the keys and the checkpoint in one
  transaction), waking the engine after each page. A task with more than ``MAX_BACKLOG`` keys
  waiting for a copy gives its listing up (checkpoint kept) until half of them are copied, so a
  huge listing neither runs far ahead of the copies nor holds up the listing of other tasks. A
  retryable store error is retried with backoff; anything else fails the task with the reason.
  On shutdown the lease is given back; a process that dies keeps it until it runs out
  (``lease_seconds``), then another process resumes from the checkpoint.
* the settler ends finished tasks (5, or 4 when keys failed), turns pausing tasks whose copies
  have drained into stopped, and applies bandwidth-policy windows as the tasks' bytes/s limits
  (``MigrationRepository.settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from omsync.config import Settings
from omsync.engine.factory import addressed
from omsync.engine.lister import pages
from omsync.engine.ports import StoreProvider
from omsync.ledger.migration_tasks import LISTING_FAILED, ListingJob, MigrationRepository
from omsync.ledger.tasks import TaskRepository
from omsync.stores.base import StoreError

log = logging.getLogger("omsync.engine.migration")

SETTLE_SECONDS = 1.0
IDLE_SECONDS = 1.0
MAX_BACKLOG = 20_000  # keys waiting for a copy beyond which a task's listing pauses
RETRY_MAX_SECONDS = 30.0


class MigrationRunner:
    """Lists and settles migration tasks for one worker process. ``notify`` wakes the engine
    once keys were committed. Use ``start()`` and ``await stop()``."""

    def __init__(self, settings: Settings, repository: MigrationRepository, tasks: TaskRepository,
                 stores: StoreProvider, owner: str, notify: Callable[[], None]) -> None:
        self.settings = settings
        self.repository = repository
        self.tasks = tasks
        self.stores = stores
        self.owner = owner
        self.notify = notify
        self.lease_seconds = settings.lease_seconds
        self.max_backlog = min(MAX_BACKLOG, settings.max_pending_per_task)
        self._loops: list[asyncio.Task[None]] = []
        self._job: ListingJob | None = None

    def start(self) -> None:
        """Start both loops (idempotent)."""
        if self._loops:
            return
        self._loops = [asyncio.create_task(self._list_loop(), name="omsync-migration-lister"),
                       asyncio.create_task(self._settle_loop(), name="omsync-migration-settler")]

    async def stop(self) -> None:
        """Stop both loops and give the listing lease back (the checkpoint stays)."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        job, self._job = self._job, None
        if job is not None:
            try:
                await self.repository.release_listing(job, self.owner)
            except Exception:
                log.exception("could not release the listing of migration task %d; its lease will expire", job.id)

    async def _settle_loop(self) -> None:
        while True:
            try:
                for task_id, status in await self.repository.settle():
                    log.info("migration task %d ended with status %d", task_id, status)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("settling migration tasks failed")
            await asyncio.sleep(SETTLE_SECONDS)

    async def _list_loop(self) -> None:
        while True:
            try:
                job = await self.repository.claim_listing(self.owner, self.lease_seconds,
                                                          max_pending=self.max_backlog // 2)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for migration listings failed")
                job = None
            if job is None:
                await asyncio.sleep(IDLE_SECONDS)
                continue
            self._job = job
            try:
                await self._list(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("listing migration task %d failed; trying again", job.id)
                await asyncio.sleep(IDLE_SECONDS)
            else:
                self._job = None

    async def _list(self, job: ListingJob) -> None:
        """List ``job`` from its checkpoint to the end, or until the lease is lost or the task
        stops. A retryable store error returns after a pause, the lease kept (the next claim
        takes the task again from its last checkpoint); any other fails the task."""
        try:
            await self._run_pages(job)
        except StoreError as exc:
            if not exc.retryable:
                message = f"listing failed: [{exc.code}] {exc.message}"
                if await self.repository.fail(job.id, LISTING_FAILED, message, owner=self.owner):
                    log.warning("migration task %d failed: %s", job.id, message)
                return
            log.info("listing migration task %d: %s; retrying", job.id, exc.message)
            await asyncio.sleep(min(RETRY_MAX_SECONDS, self.lease_seconds / 3))
            await self.repository.renew_listing(job, self.owner, self.lease_seconds)

    async def _run_pages(self, job: ListingJob) -> None:
        spec = addressed(await self.tasks.spec(job.sync_task_id))
        source = await self.stores.source(spec)
        list_store = await self.stores.destination(spec) if job.task_type == "list" else None
        async for page in pages(
            job.task_type, job.sources, source=source, bucket=spec.src_bucket, index=job.index, after=job.after,
            offset=job.offset, migrate_since=since_seconds(job.migrate_since), list_file=job.list_file,
            list_store=list_store,
            plus_means_space=self.settings.key_plus_means_space,
        ):
            pending = await self.repository.record_page(
                job, self.owner, self.lease_seconds, page.entries, index=page.index, after=page.after,
                offset=page.offset, done=page.done)
            if pending is None:
                log.info("migration task %d: listing stopped (task stopped or lease lost)", job.id)
                return
            if page.entries:
                self.notify()
            if page.done:
                log.info("migration task %d: listing finished", job.id)
                return
            if pending > self.max_backlog:
                # Enough keys wait for copies: give the listing up (the checkpoint stays) and
                # list another task; this one is taken again once half its backlog is copied.
                await self.repository.release_listing(job, self.owner)
                self._job = None
                return


def since_seconds(value: int | None) -> int | None:
    """``migrate_since`` in epoch seconds, as CreateTaskReq documents it; a value too large to be
    seconds (after the year 5138) is taken as milliseconds, as ShowTaskResponse documents it."""
    if not value:
        return None
    return value // 1000 if value > 10**11 else value


async def stop_quietly(runner: MigrationRunner | None) -> None:
    """``runner.stop()`` logging instead of raising (shutdown paths)."""
    if runner is None:
        return
    with contextlib.suppress(Exception):
        await runner.stop()
