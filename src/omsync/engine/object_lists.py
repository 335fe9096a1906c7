"""Success, failed and skip object lists written into each task's destination bucket.

Final outcomes wait in ``outcome_log`` (written by the ledger in the outcome's transaction).
Periodically, and when the engine stops, they are written as OMS does into

    oms/sync_task/<sync_task_id>/{success,failed,skip}_object_lists/<timestamp>.{success,failed,skip}_list.txt

and only then deleted, by id, in a transaction of their own: a failed PUT loses nothing and the
rows are written again next time. ``<timestamp>`` is the epoch in milliseconds when the list was
made. The lists are PUT straight into the destination store; they are not events, so they never
trigger a sync of their own.

One line per outcome, tab-separated, the columns OMS documents first (README "Object lists"):

* failed: the failure reason, the time, the key URL-encoded as the event sent it (not
  re-encoded), the decoded key, the source store's error code (``NoSuchKey``,
  ``AccessDenied``, ``-`` when the store gave none), then omsync's message;
* skip: the decoded key, the time, the object's size in bytes (``-`` when unknown), then
  omsync's skip reason;
* success: the decoded key, the time, the object's size in bytes.

Times are UTC, ISO 8601 with milliseconds. A decoded key has tabs, line breaks, backslashes and
other control characters written as backslash escapes (tab as backslash-t, byte 0x01 as
backslash-x01, a backslash doubled) so that a line stays one line; the encoded key of the failed
list is exact.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Sequence

from omsync.db import Database
from omsync.domain.errors import TaskNotFound
from omsync.domain.model import OutcomeKind
from omsync.engine.factory import addressed
from omsync.engine.ports import StoreProvider
from omsync.ledger.outcomes import LoggedOutcome, OutcomeLog
from omsync.ledger.tasks import TaskRepository
from omsync.stores.base import PutOptions, StoreError

log = logging.getLogger("omsync.engine.object_lists")

LIST_NAMES = {OutcomeKind.SUCCESS: "success", OutcomeKind.FAILURE: "failed", OutcomeKind.SKIP: "skip"}
CONTENT_TYPE = "text/plain; charset=utf-8"

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
# The store's own error code in a failure message: "source: [NoSuchKey] ..." (see
# omsync.engine.retry.describe), also after "N attempts; last: ".
_STORE_CODE = re.compile(r"(?:^|: )(?:source|destination): \[([A-Za-z0-9_.-]{1,64})\]")
NO_VALUE = "-"


def list_key(task_id: str, kind: OutcomeKind, stamp_ms: int, root: str | None = None) -> str:
    """Destination key of one object list; ``root`` is the task's folder (a migration task's
    ``oms/task/<name>``), ``oms/sync_task/<task_id>`` by default."""
    name = LIST_NAMES[kind]
    return f"{root or f'oms/sync_task/{task_id}'}/{name}_object_lists/{stamp_ms}.{name}_list.txt"


def printable(text: str) -> str:
    """``text`` on one line: backslash, tab, CR, LF and other control characters escaped."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def store_error_code(message: str | None) -> str:
    """The source (or destination) store's error code a failure message names, or ``-``."""
    found = _STORE_CODE.search(message or "")
    return found.group(1) if found else NO_VALUE


def format_line(key: str, outcome: str, reason: str | None, message: str | None, at_ms: int, *,
                sent: str | None = None, size: int | None = None) -> str:
    """One list line (without the newline). ``sent`` is the key as the event carried it
    (``None``: the key itself); ``size`` the object's size when known."""
    kind = OutcomeKind(outcome)
    size_text = NO_VALUE if size is None else str(size)
    if kind is OutcomeKind.FAILURE:
        columns: tuple[str, ...] = (
            reason or outcome, _utc(at_ms), sent if sent is not None else key, key,
            store_error_code(message), message or "",
        )
    elif kind is OutcomeKind.SKIP:
        columns = (key, _utc(at_ms), size_text, reason or "")
    else:
        columns = (key, _utc(at_ms), size_text)
    return "\t".join(printable(c) for c in columns)


class ObjectListWriter:
    """Writes pending ``outcome_log`` rows of every task into its destination bucket.

    ``max_lines`` bounds one list file (and the memory of one flush step).
    """

    def __init__(self, db: Database, tasks: TaskRepository, stores: StoreProvider, *,
                 max_lines: int = 50_000) -> None:
        self.db = db
        self.outcomes = OutcomeLog(db)
        self.tasks = tasks
        self.stores = stores
        self.max_lines = max_lines
        self._last_stamp = 0

    def _stamp(self) -> int:
        # Distinct per list written by this process, so two flushes in one millisecond do not
        # overwrite each other's files.
        self._last_stamp = max(int(time.time() * 1000), self._last_stamp + 1)
        return self._last_stamp

    async def flush(self) -> int:
        """Write every pending outcome; returns how many rows were written and removed.

        A task whose destination refuses the lists keeps its rows for the next flush (logged);
        a deleted task's rows are gone with it. Never raises for store failures.
        """
        task_ids = await self.outcomes.task_ids()
        written = 0
        for task_id in task_ids:
            try:
                written += await self._flush_task(task_id)
            except StoreError as exc:
                log.warning("object lists of task %s not written (kept for the next attempt): %s",
                            task_id, exc.message)
        return written

    async def _flush_task(self, task_id: str) -> int:
        written = 0
        while True:
            rows = await self.outcomes.oldest(task_id, self.max_lines)
            if not rows:
                return written
            try:
                spec = addressed(await self.tasks.spec(task_id))
            except TaskNotFound:
                return written
            store = await self.stores.destination(spec)
            for kind, lines in self._group(rows).items():
                if kind is OutcomeKind.FAILURE and not spec.record_failed_objects:
                    continue  # a migration task created with enable_failed_object_recording false
                body = ("\n".join(lines) + "\n").encode("utf-8")
                await store.put(spec.dst_bucket, list_key(task_id, kind, self._stamp(), spec.object_list_root), body,
                                PutOptions(content_type=CONTENT_TYPE))
            await self.outcomes.remove([r.id for r in rows])
            written += len(rows)
            if len(rows) < self.max_lines:
                return written

    @staticmethod
    def _group(rows: Sequence[LoggedOutcome]) -> dict[OutcomeKind, list[str]]:
        grouped: dict[OutcomeKind, list[str]] = defaultdict(list)
        for row in rows:
            kind = OutcomeKind(row.outcome)
            key = row.key.decode("utf-8")
            grouped[kind].append(format_line(key, row.outcome, row.reason, row.message, row.at,
                                             sent=row.raw_key, size=row.size))
        return grouped

    async def run(self, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled; errors are logged, never raised."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing object lists failed")
