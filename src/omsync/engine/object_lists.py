"""Success, failed and skip object lists written into each task's destination bucket.

Final outcomes wait in ``outcome_log`` (written by the ledger in the outcome's transaction).
Periodically, and when the engine stops, they are written as OMS does into

    oms/sync_task/<sync_task_id>/{success,failed,skip}_object_lists/<timestamp>.{success,failed,skip}_list.txt

and only then deleted, by id, in a transaction of their own: a failed PUT loses nothing and the
rows are written again next time. ``<timestamp>`` is the epoch in milliseconds when the list was
made. The lists are PUT straight into the destination store; they are not events, so they never
trigger a sync of their own.

One line per outcome, tab-separated: the reason code (for failures the error code), the time
(UTC, ISO 8601), the URL-encoded key (exact: every byte of the key is recoverable from it), the
key itself with tabs, line breaks, backslashes and other control characters escaped, and the
message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, select

from omsync.db import Database
from omsync.domain.model import OutcomeKind
from omsync.engine.factory import addressed
from omsync.engine.ports import StoreProvider
from omsync.ledger.queue import TaskNotFound
from omsync.ledger.tables import outcome_log
from omsync.ledger.tasks import TaskRepository
from omsync.stores.base import PutOptions, StoreError

log = logging.getLogger("omsync.engine.object_lists")

LIST_NAMES = {OutcomeKind.SUCCESS: "success", OutcomeKind.FAILURE: "failed", OutcomeKind.SKIP: "skip"}
CONTENT_TYPE = "text/plain; charset=utf-8"
_DELETE_BATCH = 500

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def list_key(task_id: str, kind: OutcomeKind, stamp_ms: int) -> str:
    """Destination key of one object list."""
    name = LIST_NAMES[kind]
    return f"oms/sync_task/{task_id}/{name}_object_lists/{stamp_ms}.{name}_list.txt"


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


def format_line(key: str, outcome: str, reason: str | None, message: str | None, at_ms: int) -> str:
    """One list line (without the newline)."""
    code = reason or outcome
    return "\t".join(
        (printable(code), _utc(at_ms), quote(key, safe="/"), printable(key), printable(message or ""))
    )


class ObjectListWriter:
    """Writes pending ``outcome_log`` rows of every task into its destination bucket.

    ``max_lines`` bounds one list file (and the memory of one flush step).
    """

    def __init__(self, db: Database, tasks: TaskRepository, stores: StoreProvider, *,
                 max_lines: int = 50_000) -> None:
        self.db = db
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
        async with self.db.read() as conn:
            task_ids = [r[0] for r in await conn.execute(select(outcome_log.c.task_id).distinct())]
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
            async with self.db.read() as conn:
                rows = (
                    await conn.execute(
                        select(outcome_log.c.id, outcome_log.c.key, outcome_log.c.outcome,
                               outcome_log.c.reason, outcome_log.c.message, outcome_log.c.at)
                        .where(outcome_log.c.task_id == task_id)
                        .order_by(outcome_log.c.id)
                        .limit(self.max_lines)
                    )
                ).all()
            if not rows:
                return written
            try:
                spec = addressed(await self.tasks.spec(task_id))
            except TaskNotFound:
                return written
            store = await self.stores.destination(spec)
            for kind, lines in self._group(rows).items():
                body = ("\n".join(lines) + "\n").encode("utf-8")
                await store.put(spec.dst_bucket, list_key(task_id, kind, self._stamp()), body,
                                PutOptions(content_type=CONTENT_TYPE))
            await self._delete([r.id for r in rows])
            written += len(rows)
            if len(rows) < self.max_lines:
                return written

    @staticmethod
    def _group(rows: Sequence[Any]) -> dict[OutcomeKind, list[str]]:
        grouped: dict[OutcomeKind, list[str]] = defaultdict(list)
        for row in rows:
            kind = OutcomeKind(row.outcome)
            key = bytes(row.key).decode("utf-8")
            grouped[kind].append(format_line(key, row.outcome, row.reason, row.message, row.at))
        return grouped

    async def _delete(self, ids: list[int]) -> None:
        # By id, never by range: on PostgreSQL a row with a lower id may commit after a higher
        # one was read.
        async with self.db.write() as conn:
            for start in range(0, len(ids), _DELETE_BATCH):
                await conn.execute(delete(outcome_log).where(outcome_log.c.id.in_(ids[start:start + _DELETE_BATCH])))

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
