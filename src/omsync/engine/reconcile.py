"""Reconciliation of a sync task: find and repair drift between its source and destination.

A run (:mod:`omsync.ledger.reconciliations`) merge-joins the listings of both buckets under its
prefix in UTF-8 byte order of keys, in bounded memory:

* a store that lists in key order (``Capabilities.lists_in_key_order``) is read page by page,
  resuming with ``start-after`` the checkpoint;
* a store that does not (SeaweedFS walks directories depth-first) is sorted externally: its
  listing is cut into runs of at most ``run_size`` entries, each sorted and written to a
  temporary file, and the runs are merged (:func:`heapq.merge`). Memory holds one run while
  listing and one entry per run while merging.

Each joined key is one of: *missing* (only in the source), *differing* (in both, but the
destination copy fails the task's consistency check, :func:`omsync.domain.decisions.verify`,
on the listed size and last-modified, or on CRC-64 read by HEAD when the check is ``crc64``),
*extra* (only in the destination: reported, never deleted) or in step. A missing key, and a
differing key the task's overwrite mode would copy (:func:`~omsync.domain.decisions.decide`),
is enqueued through :meth:`omsync.ledger.queue.Ledger.accept`, the path CreateSyncEvents takes
(so it is counted as an event and copied by the engine like one).

Every ``window`` keys the run writes one part of its drift report into the destination, next
to the object lists (``<task folder>/reconciliation_reports/<run id>/<part>.drift_list.txt``),
then moves its checkpoint and counters in one transaction. A run killed mid-way is continued
after the checkpoint by whichever worker takes its lease next; the window in flight is done
again (its keys accepted again: coalesced by the ledger; its report part rewritten).

Keys under the task's own folder in the destination (object lists, drift reports) are omsync's
files: they are neither listed nor reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omsync.config import Settings
from omsync.domain.decisions import ObjectFacts, decide, verify
from omsync.domain.errors import BacklogFull, TaskNotFound
from omsync.domain.keys import encode_key_for_event
from omsync.domain.model import ConsistencyCheck, TaskSpec
from omsync.engine.copier import CopyLimits
from omsync.engine.factory import addressed
from omsync.engine.object_lists import CONTENT_TYPE, printable
from omsync.engine.ports import StoreProvider
from omsync.ledger.queue import Ledger, now_ms
from omsync.ledger.reconciliations import COUNTERS, FAILED, SUCCESS, Reconciliations, Run
from omsync.ledger.tasks import TaskRepository
from omsync.stores.base import ObjectStore, PutOptions, StoreError

log = logging.getLogger("omsync.engine.reconcile")

PAGE_SIZE = 1000          # keys per listing request
WINDOW = 1000             # joined keys per checkpoint (and per report part at most)
RUN_SIZE = 50_000         # entries per sorted run of a store that does not list in key order
ACCEPT_CHUNK = 1000       # keys per Ledger.accept call
IDLE_SECONDS = 1.0
SCHEDULE_SECONDS = 5.0    # how often each worker process looks for due schedules
MAX_ATTEMPTS = 5          # retryable store errors in a row before a run fails


@dataclass(frozen=True, order=True)
class Entry:
    """One listed object: what the join compares."""

    key: str
    size: int = field(compare=False)
    last_modified: float = field(compare=False)


class OutOfOrder(Exception):
    """A store that declares key order listed a key not after the previous one."""


class LeaseLost(Exception):
    """Another process took the run over: stop without touching it."""


def report_folder(spec: TaskSpec, run_id: str) -> str:
    """Where a run's drift report goes: beside the task's object lists."""
    root = spec.object_list_root or f"oms/sync_task/{spec.task_id}"
    return f"{root}/reconciliation_reports/{run_id}"


async def _ordered(store: ObjectStore, bucket: str, prefix: str, after: str | None,
                   page_size: int) -> AsyncIterator[Entry]:
    token: str | None = None
    last = after
    while True:
        page = await store.list(bucket, prefix, token, page_size, start_after=after if token is None else None)
        for info in page.keys:
            if after is not None and info.key <= after:
                continue
            if last is not None and info.key <= last:
                raise OutOfOrder(f"listing of {bucket!r} went back from {last!r} to {info.key!r}")
            last = info.key
            yield Entry(info.key, info.size, info.last_modified)
        token = page.next_token
        if token is None:
            return


def _spill(entries: list[Entry], directory: Path, number: int) -> Path:
    path = directory / f"run-{number:06d}.jsonl"
    with path.open("w", encoding="ascii") as out:
        for entry in sorted(entries):
            # ensure_ascii: any key (control characters, lone surrogates) is one exact line.
            out.write(json.dumps([entry.key, entry.size, entry.last_modified]) + "\n")
    return path


def _read_run(path: Path) -> Iterator[Entry]:
    with path.open("r", encoding="ascii") as source:
        for line in source:
            key, size, modified = json.loads(line)
            yield Entry(key, int(size), float(modified))


async def _externally_sorted(store: ObjectStore, bucket: str, prefix: str, after: str | None, page_size: int,
                             run_size: int, directory: Path) -> AsyncIterator[Entry]:
    runs: list[Path] = []
    chunk: list[Entry] = []
    token: str | None = None
    while True:
        page = await store.list(bucket, prefix, token, page_size)
        for info in page.keys:
            if after is None or info.key > after:
                chunk.append(Entry(info.key, info.size, info.last_modified))
                if len(chunk) >= run_size:
                    runs.append(await asyncio.to_thread(_spill, chunk, directory, len(runs)))
                    chunk = []
        token = page.next_token
        if token is None:
            break
    if not runs:
        for entry in sorted(chunk):
            yield entry
        return
    if chunk:
        runs.append(await asyncio.to_thread(_spill, chunk, directory, len(runs)))
    chunk = []
    for entry in heapq.merge(*(_read_run(path) for path in runs)):
        yield entry


def sorted_listing(store: ObjectStore, bucket: str, prefix: str, after: str | None, directory: Path, *,
                   page_size: int = PAGE_SIZE, run_size: int = RUN_SIZE) -> AsyncIterator[Entry]:
    """Every object of ``bucket`` under ``prefix`` with a key after ``after``, in key order,
    whatever order the store lists in (see the module docstring). Raises ``StoreError`` from
    the store and :class:`OutOfOrder` when a store breaks the order it declares."""
    if store.capabilities.lists_in_key_order:
        return _ordered(store, bucket, prefix, after, page_size)
    return _externally_sorted(store, bucket, prefix, after, page_size, run_size, directory)


async def merge_join(source: AsyncIterator[Entry],
                     destination: AsyncIterator[Entry]) -> AsyncIterator[tuple[str, Entry | None, Entry | None]]:
    """``(key, source entry, destination entry)`` for every key of either sorted stream, in
    key order; ``None`` on the side that lacks the key."""
    src = await anext(source, None)
    dst = await anext(destination, None)
    while src is not None or dst is not None:
        if dst is None or (src is not None and src.key < dst.key):
            assert src is not None
            yield src.key, src, None
            src = await anext(source, None)
        elif src is None or dst.key < src.key:
            yield dst.key, None, dst
            dst = await anext(destination, None)
        else:
            yield src.key, src, dst
            src = await anext(source, None)
            dst = await anext(destination, None)


@dataclass
class _Window:
    deltas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    enqueue: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    position: str | None = None
    keys: int = 0


def _line(kind: str, key: str, src: Entry | None, dst: Entry | None, reason: str) -> str:
    """One report line: kind, the key URL-encoded (exact), the key readable, both sizes, why."""
    sizes = [str(e.size) if e is not None else "-" for e in (src, dst)]
    try:
        exact = encode_key_for_event(key)
    except ValueError:
        exact = "-"  # not a legal object key of the API (e.g. too long): the readable form only
    return "\t".join((kind, exact, printable(key), *sizes, reason))


class Reconciler:
    """Drives reconciliation runs in one worker process: claims one run at a time under a
    lease, renews it while working, and gives it back on :meth:`stop`; starts the runs that
    tasks' schedules make due. ``notify`` wakes the copy engine once keys were enqueued. Use
    ``start()`` and ``await stop()``."""

    def __init__(self, settings: Settings, runs: Reconciliations, ledger: Ledger, tasks: TaskRepository,
                 stores: StoreProvider, owner: str, notify: Callable[[], None], *, window: int = WINDOW,
                 page_size: int = PAGE_SIZE, run_size: int = RUN_SIZE) -> None:
        self.settings = settings
        self.runs = runs
        self.ledger = ledger
        self.tasks = tasks
        self.stores = stores
        self.owner = owner
        self.notify = notify
        self.lease_seconds = settings.lease_seconds
        self.window = window
        self.page_size = page_size
        self.run_size = run_size
        self._loops: list[asyncio.Task[None]] = []
        self._current: Run | None = None
        self._last_error = ""  # why the last attempt is to be retried

    def start(self) -> None:
        """Start claiming runs and starting scheduled ones (idempotent)."""
        if not self._loops:
            self._loops = [asyncio.create_task(self._claim_loop(), name="omsync-reconciler"),
                           asyncio.create_task(self._schedule_loop(), name="omsync-reconcile-schedules")]

    async def stop(self) -> None:
        """Stop, and give the lease of the run in progress back (its checkpoint stays)."""
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        run, self._current = self._current, None
        if run is not None:
            try:
                await self.runs.release(run.id, self.owner)
            except Exception:
                log.exception("could not release reconciliation %s; its lease will run out", run.id)

    async def _schedule_loop(self) -> None:
        while True:
            try:
                for run_id in await self.runs.start_due():
                    log.info("reconciliation %s started by its task's schedule", run_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("starting scheduled reconciliations failed")
            await asyncio.sleep(SCHEDULE_SECONDS)

    async def _claim_loop(self) -> None:
        failures = 0
        while True:
            try:
                run = await self.runs.claim(self.owner, self.lease_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for reconciliation runs failed")
                run = None
            if run is None:
                await asyncio.sleep(IDLE_SECONDS)
                continue
            self._current = run
            try:
                retry = await self.drive(run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("reconciliation %s stopped by an unexpected error", run.id)
                self._last_error = f"{type(exc).__name__}: {exc}"
                retry = True
            self._current = None
            failures = failures + 1 if retry else 0
            if retry:
                if failures >= MAX_ATTEMPTS:
                    await self._fail(run, f"gave up after {MAX_ATTEMPTS} attempts; last: {self._last_error}")
                    failures = 0
                else:
                    await self.runs.release(run.id, self.owner)
                    await asyncio.sleep(min(30.0, IDLE_SECONDS * 2 ** failures))

    async def drive(self, run: Run) -> bool:
        """Run ``run`` from its checkpoint to its end, holding its lease. Returns True when it
        should be tried again later (a retryable store error; the lease is then still held),
        False when it ended or the lease was lost."""
        if run.takeovers or run.position is not None:
            log.info("reconciliation %s of task %s: continuing after its checkpoint", run.id, run.task_id)
        heartbeat = asyncio.create_task(self._heartbeat(run), name=f"omsync-reconcile-lease-{run.id}")
        work = asyncio.create_task(self._work(run), name=f"omsync-reconcile-{run.id}")
        try:
            done, _ = await asyncio.wait({heartbeat, work}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Shutting down: stop both before the caller gives the lease back, so no checkpoint
            # is written (and the lease renewed) after that.
            for task in (heartbeat, work):
                task.cancel()
            await asyncio.gather(heartbeat, work, return_exceptions=True)
            raise
        if work not in done:  # the lease was lost: someone else drives the run now
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            log.warning("reconciliation %s: lease lost, stopped", run.id)
            return False
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        try:
            work.result()
        except StoreError as exc:
            if exc.retryable:
                log.info("reconciliation %s: %s; will continue from the checkpoint", run.id, exc.message)
                self._last_error = f"[{exc.code}] {exc.message}"
                return True
            await self._fail(run, f"[{exc.code}] {exc.message}")
        except TaskNotFound:
            await self._fail(run, "the sync task was deleted")
        except OutOfOrder as exc:
            await self._fail(run, str(exc))
        except LeaseLost:
            log.warning("reconciliation %s: lease lost, stopped", run.id)
        return False

    async def _fail(self, run: Run, message: str) -> None:
        if await self.runs.finish(run.id, self.owner, FAILED, message):
            log.warning("reconciliation %s of task %s failed: %s", run.id, run.task_id, message)

    async def _heartbeat(self, run: Run) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.lease_seconds / 3))
            if not await self.runs.renew(run.id, self.owner, self.lease_seconds):
                return

    async def _work(self, run: Run) -> None:
        spec = addressed(await self.tasks.spec(run.task_id))
        source = await self.stores.source(spec)
        destination = await self.stores.destination(spec)
        own = (spec.object_list_root or f"oms/sync_task/{spec.task_id}") + "/"
        folder = report_folder(spec, run.id)
        parts = run.report_parts
        with tempfile.TemporaryDirectory(prefix="omsync-reconcile-") as scratch:
            (Path(scratch) / "src").mkdir()
            (Path(scratch) / "dst").mkdir()
            src_entries = sorted_listing(source, spec.src_bucket, run.prefix, run.position, Path(scratch) / "src",
                                         page_size=self.page_size, run_size=self.run_size)
            dst_entries = _without_prefix(
                sorted_listing(destination, spec.dst_bucket, run.prefix, run.position, Path(scratch) / "dst",
                               page_size=self.page_size, run_size=self.run_size), own)
            window = _Window()
            async for key, src, dst in merge_join(src_entries, dst_entries):
                await self._classify(spec, source, destination, window, key, src, dst)
                window.position = key
                window.keys += 1
                if window.keys >= self.window:
                    parts = await self._commit(run, spec, destination, folder, parts, window)
                    window = _Window()
            parts = await self._commit(run, spec, destination, folder, parts, window)
        summary = await self.runs.get(run.project_id, run.task_id, run.id)
        if summary is not None:
            final = {**summary.as_dict(), "status": SUCCESS, "finished_at": now_ms()}
            body = json.dumps(final, indent=1).encode("utf-8")
            await destination.put(spec.dst_bucket, f"{folder}/summary.json", body,
                                  PutOptions(content_type="application/json"))
        if await self.runs.finish(run.id, self.owner, SUCCESS):
            log.info("reconciliation %s of task %s finished: %s", run.id, run.task_id,
                     summary.counters if summary is not None else {})

    async def _classify(self, spec: TaskSpec, source: ObjectStore, destination: ObjectStore, window: _Window,
                        key: str, src: Entry | None, dst: Entry | None) -> None:
        deltas = window.deltas
        if src is not None:
            deltas["source_listed"] += 1
        if dst is not None:
            deltas["destination_listed"] += 1
        if src is None:
            assert dst is not None
            deltas["extra"] += 1
            window.lines.append(_line("extra", key, None, dst, "only in the destination"))
            return
        src_facts = ObjectFacts(src.size, src.last_modified)
        if dst is None:
            deltas["missing"] += 1
            window.enqueue.append(key)
            window.lines.append(_line("missing", key, src, None, "absent"))
            return
        dst_facts = ObjectFacts(dst.size, dst.last_modified)
        if spec.consistency_check is ConsistencyCheck.CRC64 and src.size == dst.size:
            src_facts, dst_facts = await _with_crc(source, spec.src_bucket, destination, spec.dst_bucket, key,
                                                   src_facts, dst_facts)
        check = spec.consistency_check
        if check is ConsistencyCheck.CRC64 and src_facts.crc64 is None and dst_facts.crc64 is None:
            # Neither store exposes a CRC-64: nothing to compare but size and last-modified.
            check = ConsistencyCheck.SIZE_LAST_MODIFIED
        # The copier's tolerance: a copy it verified must not look stale here.
        checked = verify(check, src_facts, dst_facts, clock_skew_seconds=CopyLimits.clock_skew_seconds)
        if checked.ok:
            return
        deltas["differing"] += 1
        decision = decide(spec.overwrite_mode, src_facts, dst_facts)
        if decision.copy:
            window.enqueue.append(key)
        reason = checked.reason or "differs"
        if not decision.copy:
            reason += f" (not copied: overwrite mode says {decision.reason})"
        window.lines.append(_line("differing", key, src, dst, reason))

    async def _commit(self, run: Run, spec: TaskSpec, destination: ObjectStore, folder: str, parts: int,
                      window: _Window) -> int:
        """Enqueue the window's keys, write its report part, then move the checkpoint."""
        for start in range(0, len(window.enqueue), ACCEPT_CHUNK):
            await self._accept(run, window.enqueue[start:start + ACCEPT_CHUNK])
        window.deltas["enqueued"] += len(window.enqueue)
        if window.enqueue:
            self.notify()
        if window.lines:
            parts += 1
            body = ("\n".join(window.lines) + "\n").encode("utf-8", "surrogatepass")
            await destination.put(spec.dst_bucket, f"{folder}/{parts:06d}.drift_list.txt", body,
                                  PutOptions(content_type=CONTENT_TYPE))
        if window.keys == 0 and not window.lines:
            return parts
        if not await self.runs.checkpoint(run.id, self.owner, self.lease_seconds, window.position, window.deltas,
                                          parts):
            raise LeaseLost(run.id)
        return parts

    async def _accept(self, run: Run, keys: list[str]) -> None:
        while True:
            try:
                await self.ledger.accept(run.task_id, keys, project_id=run.project_id)
                return
            except BacklogFull as exc:
                # The task's backlog is full: wait for the copies to drain it (the lease is
                # renewed by the heartbeat meanwhile).
                await asyncio.sleep(max(1.0, float(exc.retry_after)))


async def _without_prefix(entries: AsyncIterator[Entry], prefix: str) -> AsyncIterator[Entry]:
    async for entry in entries:
        if not entry.key.startswith(prefix):
            yield entry


async def _with_crc(source: ObjectStore, src_bucket: str, destination: ObjectStore, dst_bucket: str, key: str,
                    src: ObjectFacts, dst: ObjectFacts) -> tuple[ObjectFacts, ObjectFacts]:
    """The facts with the CRC-64 each side's HEAD reports (stores that expose one)."""
    async def crc(store: ObjectStore, bucket: str) -> int | None:
        if not store.capabilities.crc64ecma:
            return None
        with contextlib.suppress(StoreError):
            return (await store.head(bucket, key)).crc64ecma
        return None

    src_crc, dst_crc = await asyncio.gather(crc(source, src_bucket), crc(destination, dst_bucket))
    return (ObjectFacts(src.size, src.last_modified, src_crc), ObjectFacts(dst.size, dst.last_modified, dst_crc))


__all__ = ["Entry", "OutOfOrder", "Reconciler", "merge_join", "report_folder", "sorted_listing"]
