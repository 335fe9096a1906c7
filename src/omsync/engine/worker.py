"""The engine: copy slots fed from the ledger, leases renewed, outcomes recorded.

One claimer loop leases due keys (``Ledger.claim``) for free copy slots: at once when
:meth:`Engine.notify` says events were committed in this process, when a slot frees up while
there is a backlog, and otherwise every ``poll_interval_seconds`` for work written by other
processes. Claims are fair across tasks and respect each task's ``max_concurrency`` (see
``Ledger.claim``); a task's objects/s and bytes/s limits are token buckets of this process
(:mod:`omsync.engine.throttle`, re-read every ``LIMITS_REFRESH_SECONDS``), and the claimer takes
no more keys of a rate-limited task than its buckets will soon let start, so that waiting keys
do not fill the slots other tasks could use. Each claim runs in its own task: spec (cached
briefly per task) → the task's objects/s bucket → stores → abort the multipart uploads a dead
earlier owner of the key left open (``Claim.orphan_uploads``) → copy (paced by the task's
bytes/s bucket), recording its own multipart uploads in the ledger while they are open →
``Ledger.finish`` or ``Ledger.retry_later`` as the retry policy says (final outcomes that arrive
while a ledger transaction is under way are recorded together by ``Ledger.finish_many``).
Another loop renews the leases of in-flight keys every third of ``lease_seconds``. Nothing a single key does can stop
the loops: unexpected exceptions are logged and retried as ``internal_error``; a failure of the
bookkeeping itself leaves the lease to expire, so another worker takes the key over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from omsync import metrics
from omsync.db import Database
from omsync.domain.errors import TaskNotFound
from omsync.domain.model import ConsistencyCheck, Outcome, OutcomeKind, OverwriteMode, TaskSpec
from omsync.engine.copier import Copier
from omsync.engine.factory import addressed
from omsync.engine.object_lists import ObjectListWriter
from omsync.engine.ports import StoreProvider
from omsync.engine.prefetch import MIN_KEYS, Known, Listing, list_facts
from omsync.engine.prefixed import with_key_prefix
from omsync.engine.restore import RestoreHandler, archived_error
from omsync.engine.retry import CopyError, Final, Retry, RetryPolicy, Side, Verdict
from omsync.engine.throttle import Throttles
from omsync.ledger.queue import Claim, FinishResult, Ledger
from omsync.ledger.tasks import TaskRepository
from omsync.stores.base import ErrorKind, ObjectStore, StoreError

log = logging.getLogger("omsync.engine")

_T = TypeVar("_T")

SPEC_TTL_SECONDS = 5.0
LIMITS_REFRESH_SECONDS = 1.0  # how soon a changed task limit reaches running workers
FINAL_LIST_FLUSH_SECONDS = 10.0
RATE_LIMIT_WAIT_SECONDS = 0.001  # an objects/s wait at least this long counts as a throttle event
FINISH_BATCH = 100  # most outcomes recorded per ledger transaction
# While many copies are in flight, an outcome waits up to FINISH_LINGER_SECONDS for others to
# share its ledger transaction (FINISH_GATHER of them): a SQLite commit costs ~1 ms of CPU, a
# recorded outcome a few tens of microseconds.
FINISH_GATHER = 16
FINISH_LINGER_SECONDS = 0.02


def new_owner_id() -> str:
    """A lease-owner id unique to this process (host, pid and a random part; at most 64 chars)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


async def _complete(call: Awaitable[_T]) -> _T:
    """Await bookkeeping that must not be cut half-way by a cancellation (one short
    transaction): if cancelled, let it finish, then re-raise the cancellation."""
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


@dataclass
class _Sides:
    """What the batch's listings settled (see :mod:`omsync.engine.prefetch`), shared by its keys."""

    server_side: bool | None = None
    source: dict[str, Known] = field(default_factory=dict)
    destination: dict[str, Known] = field(default_factory=dict)


class _LedgerUploads:
    """Records the multipart uploads of one claimed key in the ledger while they are open."""

    def __init__(self, ledger: Ledger, claim: Claim) -> None:
        self._ledger = ledger
        self._claim = claim
        self._records: dict[str, int] = {}

    async def opened(self, bucket: str, upload_id: str) -> None:
        self._records[upload_id] = await self._ledger.record_upload(self._claim, bucket, upload_id)

    async def closed(self, upload_id: str) -> None:
        record = self._records.pop(upload_id, None)
        if record is not None:
            await self._ledger.forget_upload(record)


class _FinishBatcher:
    """Records final outcomes through ``Ledger.finish_many``, many per transaction.

    :meth:`finish` queues one outcome and returns its :class:`FinishResult` once committed.
    A flusher task records whatever is queued (up to ``limit`` per transaction) and runs again at
    once while more has arrived, so an outcome waits at most for the transaction in progress:
    under load the batches grow by themselves, when idle each outcome goes alone without delay.
    While ``busy()`` says that at least ``gather`` more outcomes are on their way, a batch
    smaller than ``gather`` waits up to ``linger`` seconds for them.
    A failed batch is retried one outcome at a time with ``Ledger.finish``, so that one bad
    outcome cannot take the others down with it; each caller gets its own outcome's error.
    """

    def __init__(self, ledger: Ledger, owner: str, limit: int = FINISH_BATCH, *,
                 busy: Callable[[], int] = lambda: 0, gather: int = FINISH_GATHER,
                 linger: float = FINISH_LINGER_SECONDS) -> None:
        self._ledger = ledger
        self._owner = owner
        self._limit = max(1, limit)
        self._busy = busy
        self._gather = min(max(1, gather), self._limit)
        self._linger = linger
        self._gathered = asyncio.Event()
        self._queue: list[tuple[Claim, Outcome, asyncio.Future[FinishResult]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def finish(self, claim: Claim, outcome: Outcome) -> FinishResult:
        """Same contract as ``Ledger.finish`` for this batcher's owner."""
        future: asyncio.Future[FinishResult] = asyncio.get_running_loop().create_future()
        self._queue.append((claim, outcome, future))
        if len(self._queue) >= self._gather:
            self._gathered.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="omsync-finish-batcher")
        return await future

    async def _flush(self) -> None:
        while self._queue:
            if len(self._queue) < self._gather and self._busy() >= self._gather:
                self._gathered.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger):
                        await self._gathered.wait()
            batch, self._queue = self._queue[:self._limit], self._queue[self._limit:]
            try:
                results = await self._ledger.finish_many(self._owner, [(c, o) for c, o, _ in batch])
            except asyncio.CancelledError:
                for _, _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][2], error=exc)
                    continue
                log.warning("recording %d outcomes in one transaction failed (%s); recording them one by one",
                            len(batch), exc)
                for claim, outcome, future in batch:
                    try:
                        _settle(future, await self._ledger.finish(self._owner, claim, outcome))
                    except asyncio.CancelledError:
                        future.cancel()
                        raise
                    except Exception as one:
                        _settle(future, error=one)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                _settle(future, result)


def _settle(future: asyncio.Future[FinishResult], result: FinishResult | None = None, *,
            error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


@dataclass(frozen=True)
class EngineConfig:
    """What the engine's loops need to know: ``workers`` copy slots (0: the engine does not
    run), the lease of a claimed key, how often to look for work written by other processes,
    and how often to write object lists."""

    workers: int
    lease_seconds: float
    poll_interval_seconds: float
    object_list_interval_seconds: float


class Engine:
    """``config.workers`` concurrent copies of ledger keys, for as long as it runs.

    Use: ``await engine.start()``, call ``engine.notify()`` after committing events, and
    ``await engine.stop(deadline)`` to drain. Every part is given, built by the composition
    root (:mod:`omsync.composition`): ``stores`` provides each task's stores (the engine does
    not close it), ``copier`` copies one key, ``retry`` decides after a failure, ``throttles``
    holds the tasks' rate limits, ``restorer`` handles archived sources, ``gauges`` (when
    given) reports the engine's slots to the metrics while it runs; ``owner`` names its
    leases; ``object_lists`` turns the writing of object lists into destination buckets on or off.
    """

    def __init__(
        self,
        config: EngineConfig,
        db: Database,
        ledger: Ledger,
        tasks: TaskRepository,
        stores: StoreProvider,
        *,
        copier: Copier,
        retry: RetryPolicy,
        restorer: RestoreHandler,
        owner: str,
        throttles: Throttles | None = None,
        gauges: metrics.ProcessGauges | None = None,
        object_lists: bool = True,
    ) -> None:
        self.config = config
        self.db = db
        self.ledger = ledger
        self.tasks = tasks
        self.stores = stores
        self.copier = copier
        self.retry = retry
        self.owner = owner
        self.gauges = gauges
        self.lists = ObjectListWriter(db, tasks, stores) if object_lists else None
        # Copies in flight beyond those whose outcomes are queued: outcomes still to come.
        self._finisher = _FinishBatcher(ledger, self.owner, busy=lambda: len(self._inflight))
        self.restorer = restorer
        self._wake = asyncio.Event()
        self._inflight: dict[int, Claim] = {}  # row id -> claim, for every key being copied
        self._jobs: dict[asyncio.Task[None], list[Claim]] = {}  # one job per claimed batch of a task
        self._specs: dict[str, tuple[float, TaskSpec]] = {}
        self.throttles = throttles if throttles is not None else Throttles()
        self._limited: set[str] = set()  # tasks with any limit: a claim may have held keys back
        self._limits_due = 0.0
        self._backlog = False
        # With a backlog, claim again once this many slots are free rather than for every
        # slot that frees up: a bigger batch shares one listing and one ledger transaction.
        self._refill = max(1, config.workers // 2)
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._claimer: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._claimer is not None and not self._stopping

    @property
    def inflight(self) -> int:
        """Keys being copied right now."""
        return len(self._inflight)

    def slot_usage(self) -> tuple[int, dict[str, int]]:
        """(copy slots, keys being copied per task id), read by the metrics at scrape time."""
        per_task: dict[str, int] = {}
        for claim in list(self._inflight.values()):
            per_task[claim.task_id] = per_task.get(claim.task_id, 0) + 1
        return self.config.workers, per_task

    async def start(self) -> None:
        """Start claiming and copying (nothing when ``config.workers`` is 0). Idempotent."""
        if self._claimer is not None or self.config.workers <= 0:
            return
        self._stopping = False
        self._claimer = asyncio.create_task(self._claim_loop(), name="omsync-claimer")
        self._loops = [asyncio.create_task(self._renew_loop(), name="omsync-lease-renewer")]
        if self.lists is not None:
            self._loops.append(asyncio.create_task(
                self.lists.run(self.config.object_list_interval_seconds), name="omsync-object-lists"))
        if self.gauges is not None:
            self.gauges.track(self)

    def notify(self) -> None:
        """Wake the claimer now: new events were committed (cheap; safe to call often)."""
        self._wake.set()

    async def stop(self, deadline: float = 20.0) -> None:
        """Stop claiming, let in-flight copies finish for up to ``deadline`` seconds, then cancel
        the rest (their multipart uploads are aborted) and hand their keys back to the ledger
        (``Ledger.release``: due at once, no attempt counted). Finally writes pending object
        lists (bounded in time). Idempotent."""
        if self._claimer is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._claimer
        running = dict(self._jobs)
        if running:
            _, pending = await asyncio.wait(running, timeout=max(0.0, deadline))
            # Keys of the jobs about to be cancelled go back to the ledger (a key whose outcome
            # gets recorded meanwhile is no longer in flight, and release leaves it alone).
            leftover = [claim for task in pending for claim in running[task] if claim.row_id in self._inflight]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if leftover:
                try:
                    await self.ledger.release(self.owner, leftover)
                except Exception:
                    log.exception("could not release %d keys; their leases will expire", len(leftover))
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        self._claimer = None
        if self.gauges is not None:
            self.gauges.untrack(self)
        if self.lists is not None:
            try:
                await asyncio.wait_for(self.lists.flush(), FINAL_LIST_FLUSH_SECONDS)
            except Exception:
                log.exception("final object-list flush failed; the rows stay for the next run")

    # -- loops ----------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        lease = self.config.lease_seconds
        poll = self.config.poll_interval_seconds
        wait = poll
        while not self._stopping:
            free = self.config.workers - len(self._inflight)
            if free > 0 and (free >= self._refill or not self._backlog):
                try:
                    await self._refresh_limits()
                    claims = await self.ledger.claim(self.owner, free, lease,
                                                     caps=self.throttles.caps(max(poll, 0.25)))
                    wait = poll
                except Exception:
                    # The database is unreachable or failing: back off instead of spinning.
                    wait = min(max(wait * 2, poll), 5.0)
                    log.exception("claiming keys failed; trying again in %.1f s", wait)
                    claims = []
                if self._stopping:
                    await self._release_quietly(claims)
                    return
                batches: dict[str, list[Claim]] = {}
                for claim in claims:
                    if claim.row_id in self._inflight:
                        # Our own lease ran out (a stalled renewal) and we re-claimed the key:
                        # the copy already running keeps it; the claim just renewed the lease.
                        continue
                    self._inflight[claim.row_id] = claim
                    batches.setdefault(claim.task_id, []).append(claim)
                for task_id, batch in batches.items():
                    job = asyncio.create_task(self._run_batch(task_id, batch), name=f"omsync-copy-{task_id}")
                    self._jobs[job] = batch
                    job.add_done_callback(self._jobs.pop)
                self._backlog = len(claims) == free
                if self._backlog and self.config.workers - len(self._inflight) >= self._refill:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def _refresh_limits(self) -> None:
        """Re-read the running tasks' rate limits when the last read is over a second old."""
        now = time.monotonic()
        if now < self._limits_due:
            return
        self._limits_due = now + LIMITS_REFRESH_SECONDS
        try:
            limits = await self.tasks.running_limits()
            self.throttles.update(limits)
            self._limited = set(limits)
        except Exception:
            log.exception("reading the tasks' limits failed; keeping the last ones read")

    async def _release_quietly(self, claims: list[Claim]) -> None:
        try:
            await self.ledger.release(self.owner, claims)
        except Exception:
            log.exception("could not release %d keys; their leases will expire", len(claims))

    async def _renew_loop(self) -> None:
        lease = self.config.lease_seconds
        interval = max(0.05, lease / 3)
        while True:
            await asyncio.sleep(interval)
            rows = [claim.row_id for claim in self._inflight.values()]
            if not rows:
                continue
            try:
                renewed = await self.ledger.renew(self.owner, rows, lease)
            except Exception:
                log.exception("renewing %d leases failed", len(rows))
                continue
            # Copies that finished while the renewal waited are no longer leased: not lost.
            asked = set(rows)
            still = sum(1 for claim in self._inflight.values() if claim.row_id in asked)
            if renewed < still:
                log.info("%d of %d in-flight keys lost their lease (taken over or released); "
                         "their outcomes will not be recorded here", still - renewed, still)

    # -- one key --------------------------------------------------------------------------------

    async def _run_batch(self, task_id: str, claims: list[Claim]) -> None:
        """Copy a claimed batch of one task's keys, each in its own task; what a listing can
        tell about many keys at once is read first (:mod:`omsync.engine.prefetch`)."""
        try:
            spec = await self._spec(task_id)
        except Exception:
            log.exception("reading task %s failed; its keys' leases will expire", task_id)
            for claim in claims:
                self._inflight.pop(claim.row_id, None)
            return
        if spec is None:
            for claim in claims:  # the task was deleted, and its ledger rows with it
                self._inflight.pop(claim.row_id, None)
            return
        try:
            sides = await self._prefetch(spec, claims)
        except Exception:
            log.exception("listing keys of task %s failed; each key is looked up on its own", task_id)
            sides = _Sides()
        await asyncio.gather(*(self._run(claim, spec, sides) for claim in claims))

    async def _prefetch(self, spec: TaskSpec, claims: list[Claim]) -> _Sides:
        """Settle source and destination facts of the batch by listing, where that pays."""
        sides = _Sides()
        if len(claims) < MIN_KEYS:
            return sides
        try:
            source = await self.stores.source(spec)
            destination = with_key_prefix(await self.stores.destination(spec), spec.dst_key_prefix)
            sides.server_side = self.stores.server_side(spec)
        except StoreError:
            return sides  # each key meets (and reports) the error itself
        keys = [claim.key for claim in claims if not claim.orphan_uploads]
        wants_source = (sides.server_side and spec.enable_metadata_migration
                        and spec.consistency_check is not ConsistencyCheck.CRC64)
        wants_destination = spec.overwrite_mode in (OverwriteMode.NO_OVERWRITE, OverwriteMode.SIZE_LAST_MODIFIED)
        lookups: list[Awaitable[Listing]] = []
        if wants_source:
            lookups.append(list_facts(source, spec.src_bucket, keys, absence=False))
        if wants_destination:
            lookups.append(list_facts(destination, spec.dst_bucket, keys))
        found = await asyncio.gather(*lookups)
        if wants_source:
            sides.source = found.pop(0).known
        if wants_destination:
            sides.destination = found.pop(0).known
        return sides

    async def _run(self, claim: Claim, spec: TaskSpec, sides: _Sides) -> None:
        try:
            await self._process(claim, spec, sides)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording the outcome of key %r of task %s failed; its lease will expire",
                          claim.key, claim.task_id)
        finally:
            self._inflight.pop(claim.row_id, None)
            # A limited task's keys may have been held back by the last claim: claim again now
            # rather than at the next poll, or the limit would cost throughput.
            if (self._backlog or claim.task_id in self._limited) and not self._stopping:
                self._wake.set()

    async def _spec(self, task_id: str) -> TaskSpec | None:
        now = time.monotonic()
        cached = self._specs.get(task_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            spec = addressed(await self.tasks.spec(task_id))
        except TaskNotFound:
            return None
        if len(self._specs) > 1024:
            self._specs = {k: v for k, v in self._specs.items() if v[0] > now}
        self._specs[task_id] = (now + SPEC_TTL_SECONDS, spec)
        return spec

    async def _process(self, claim: Claim, spec: TaskSpec, sides: _Sides) -> None:
        verdict: Verdict
        source: ObjectStore | None = None
        try:
            throttle = self.throttles.get(claim.task_id)
            if throttle is not None:
                admitting = time.monotonic()
                await throttle.admit()
                if time.monotonic() - admitting >= RATE_LIMIT_WAIT_SECONDS:
                    metrics.throttled(claim.task_id, "rate_limit")
            source = await self.stores.source(spec)
            destination = with_key_prefix(await self.stores.destination(spec), spec.dst_key_prefix)
            await self._abort_orphans(claim, destination)
            server_side = sides.server_side if sides.server_side is not None else self.stores.server_side(spec)
            outcome = await self.copier.copy(
                spec, claim.key, source, destination, uploads=_LedgerUploads(self.ledger, claim),
                bandwidth=throttle, server_side=server_side,
                listed_source=sides.source.get(claim.key), listed_destination=sides.destination.get(claim.key))
        except StoreError as exc:
            if exc.kind is ErrorKind.THROTTLED:
                metrics.throttled(claim.task_id, "store")
            if source is not None and archived_error(exc):
                archived = await self._archived(claim, spec, source, exc)
                if archived is None:
                    return  # handed back to the ledger until its restore completes: nothing to record
                verdict = archived
            else:
                verdict = self.retry.decide(exc, claim.attempts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("unexpected error copying key %r of task %s", claim.key, claim.task_id)
            verdict = self.retry.decide_internal(exc, claim.attempts)
        else:
            verdict = Final(outcome)
        await self._record(claim, verdict)

    async def _archived(self, claim: Claim, spec: TaskSpec, source: ObjectStore, error: StoreError) -> Verdict | None:
        """A copy met an archived source object: restore it (``None``: the key waits in the
        ledger, no attempt counted) or fail it (:mod:`omsync.engine.restore`)."""
        try:
            return await self.restorer.handle(claim, spec, source, error)
        except StoreError as exc:
            return self.retry.decide(exc, claim.attempts)

    async def _abort_orphans(self, claim: Claim, destination: ObjectStore) -> None:
        """Abort the multipart uploads an earlier owner of this key left open (it died before
        completing or aborting them); a failing abort fails this attempt, to be retried."""
        for orphan in claim.orphan_uploads:
            try:
                await destination.abort_multipart(orphan.bucket, claim.key, orphan.upload_id)
            except StoreError as exc:
                raise CopyError(Side.DESTINATION, exc) from exc
            await self.ledger.forget_upload(orphan.id)
            log.info("aborted multipart upload %s of key %r of task %s left by an earlier copy",
                     orphan.upload_id, claim.key, claim.task_id)

    async def _record(self, claim: Claim, verdict: Verdict) -> None:
        if isinstance(verdict, Retry):
            kept = await _complete(self.ledger.retry_later(
                self.owner, claim, verdict.delay, verdict.reason, verdict.message))
            if kept:
                metrics.retry(claim.task_id, verdict.reason)
                log.info("retrying key %r of task %s in %.1f s (attempt %d failed: %s)",
                         claim.key, claim.task_id, verdict.delay, claim.attempts + 1, verdict.message)
            else:
                log.info("lease of key %r of task %s was lost; not recording its retry",
                         claim.key, claim.task_id)
            return
        outcome: Outcome = verdict.outcome
        result = await _complete(self._finisher.finish(claim, outcome))
        if not result.recorded:
            log.info("lease of key %r of task %s was lost; its %s outcome is not recorded",
                     claim.key, claim.task_id, outcome.kind.value)
            return
        # The same counts the ledger just committed to the task's statistics.
        metrics.coalesced(claim.task_id, result.coalesced)
        if not result.final:
            return
        metrics.outcome(claim.task_id, outcome.kind.value, outcome.reason, outcome.size,
                        max(0.0, time.time() - claim.pending_since / 1000))
        if outcome.kind is OutcomeKind.FAILURE:
            # The one log line per failed key (its reason also goes to the failed-object list).
            log.warning("key %r of task %s failed after %d attempts: %s: %s", claim.key, claim.task_id,
                        claim.attempts + 1, outcome.reason, outcome.message,
                        extra={"task_id": claim.task_id, "key": claim.key, "reason": outcome.reason,
                               "attempts": claim.attempts + 1})
