"""The engine against a real SQLite ledger and in-memory stores: events in, outcomes out."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from omsync.composition import build_engine
from omsync.config import Settings
from omsync.domain.model import TaskSpec
from omsync.engine.copier import Copier
from omsync.engine.object_lists import list_key
from omsync.engine.worker import Engine
from omsync.ledger.queue import Ledger
from omsync.ledger.tables import ledger as ledger_table
from omsync.ledger.tables import open_uploads, outcome_log
from omsync.services import Services
from omsync.stores.base import ErrorKind, ObjectStore, PutOptions, StoreError
from omsync.stores.memory import MemoryStore
from tests.engine.helpers import KIB, SMALL_CAPS, SMALL_LIMITS, FixedStores, eventually, payload

PROJECT = "p-engine"
CREDS = {"src_ak": "src-ak", "src_sk": "src-sk", "dst_ak": "dst-ak", "dst_sk": "dst-sk"}


def task_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "src_cloud_type": "S3", "src_region": "r", "src_bucket": "src", "dst_cloud_type": "S3",
        "dst_region": "r", "dst_bucket": "dst", "description": None, "enable_metadata_migration": False,
        "enable_restore": False, "enable_kms": False, "dst_storage_policy": None, "app_id": None,
        "source_cdn": None, "options": "{}", "consistency_check": "size_last_modified",
        "object_overwrite_mode": "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE",
    }
    fields.update(overrides)
    return fields


@dataclasses.dataclass
class Env:
    services: Services
    src: MemoryStore
    dst: MemoryStore
    engines: list[Engine] = dataclasses.field(default_factory=list)

    @property
    def ledger(self) -> Ledger:
        return self.services.ledger

    def engine(self, stores: Any = None, **settings: Any) -> Engine:
        merged = self.services.settings.model_copy(update=settings)
        engine = build_engine(merged, self.services, stores or FixedStores(self.src, self.dst),
                              copier=Copier(SMALL_LIMITS))
        self.engines.append(engine)
        return engine

    async def task(self, **overrides: Any) -> str:
        return await self.services.tasks.create(PROJECT, task_fields(**overrides), CREDS)

    async def counts(self, task_id: str) -> dict[str, int]:
        """Totals, checking REQUEST = SUCCESS + FAILURE + SKIP + pending on the way."""
        totals = await self.ledger.totals(task_id)
        pending = await self.ledger.pending_occurrences(task_id)
        assert totals["request"] == totals["success"] + totals["failure"] + totals["skip"] + pending
        return {**totals, "pending": pending}

    async def settled(self, task_id: str, timeout: float = 10.0) -> dict[str, int]:
        async def done() -> bool:
            return await self.ledger.pending_occurrences(task_id) == 0

        await eventually(done, timeout, "every occurrence to have an outcome")
        return await self.counts(task_id)

    async def row(self, task_id: str, key: str) -> Any:
        async with self.services.db.read() as conn:
            return (await conn.execute(
                select(ledger_table).where(ledger_table.c.task_id == task_id,
                                           ledger_table.c.key == key.encode())
            )).mappings().one()


@pytest.fixture()
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = Settings(
        data_dir=tmp_path, workers=4, lease_seconds=5.0, poll_interval_seconds=0.05, max_attempts=4,
        retry_base_seconds=0.01, retry_max_seconds=0.05, object_list_interval_seconds=3600,
    )
    services = await Services.open(settings)
    environment = Env(services, MemoryStore(capabilities=SMALL_CAPS, buckets=["src"]),
                      MemoryStore(capabilities=SMALL_CAPS, buckets=["dst"]))
    try:
        yield environment
    finally:
        for engine in environment.engines:
            await engine.stop(1.0)
        await services.close()


async def put(store: MemoryStore, bucket: str, key: str, data: bytes) -> None:
    await store.put(bucket, key, data, PutOptions())


# -- the normal flow ---------------------------------------------------------------------------


async def test_accepted_events_are_copied_and_counted(env: Env) -> None:
    task_id = await env.task()
    keys = [f"k/{i:03d}" for i in range(20)] + ["a b+c%20?#.txt", "ünï/cødé", "x//y", "dir/"]
    for i, key in enumerate(keys):
        await put(env.src, "src", key, payload(100 + i, seed=i))
    await env.ledger.accept(task_id, keys)
    engine = env.engine()
    await engine.start()
    engine.notify()
    counts = await env.settled(task_id)
    assert counts["request"] == len(keys)
    assert counts["success"] == len(keys) and counts["failure"] == 0 and counts["skip"] == 0
    assert counts["size"] == sum(100 + i for i in range(len(keys)))
    for i, key in enumerate(keys):
        assert env.dst.object_bytes("dst", key) == payload(100 + i, seed=i)


async def test_notify_wakes_an_idle_engine_at_once(env: Env) -> None:
    task_id = await env.task()
    engine = env.engine(poll_interval_seconds=30.0)
    await engine.start()
    await asyncio.sleep(0.1)  # the claimer found nothing and is now waiting
    await put(env.src, "src", "k", b"data")
    await env.ledger.accept(task_id, ["k"])
    started = time.monotonic()
    engine.notify()
    await env.settled(task_id, timeout=5.0)
    assert time.monotonic() - started < 2.0  # far below the 30 s poll interval


async def test_work_of_other_processes_is_found_by_polling(env: Env) -> None:
    task_id = await env.task()
    engine = env.engine(poll_interval_seconds=0.05)
    await engine.start()
    await asyncio.sleep(0.1)
    await put(env.src, "src", "k", b"data")
    await env.ledger.accept(task_id, ["k"])  # no notify: as if another process accepted it
    counts = await env.settled(task_id, timeout=5.0)
    assert counts["success"] == 1


# -- coalescing --------------------------------------------------------------------------------


class GatedSource(MemoryStore):
    """The first GET waits for ``gate``: a slow copy to pile events up behind."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.reading = asyncio.Event()
        self.gets = 0

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        self.gets += 1
        if self.gets == 1:
            self.reading.set()
            await self.gate.wait()
        async for chunk in super().get(bucket, key, start=start, end=end, chunk_size=chunk_size):
            yield chunk


async def test_a_thousand_events_for_one_key_during_a_slow_copy_cause_few_copies(env: Env) -> None:
    src = GatedSource(capabilities=SMALL_CAPS, buckets=["src"])
    task_id = await env.task()
    await put(src, "src", "hot", b"version-0000")
    await env.ledger.accept(task_id, ["hot"])
    engine = env.engine(FixedStores(src, env.dst))
    await engine.start()
    engine.notify()
    await asyncio.wait_for(src.reading.wait(), 5)
    for version in range(1, 101):
        await put(src, "src", "hot", f"version-{version:04d}".encode())
        await env.ledger.accept(task_id, ["hot"] * 10)
        engine.notify()
    src.gate.set()
    counts = await env.settled(task_id)
    assert counts["request"] == 1001
    assert counts["success"] + counts["skip"] == 1001 and counts["failure"] == 0
    assert 1 <= env.dst.count("put") <= 3
    assert env.dst.object_bytes("dst", "hot") == b"version-0100"


# -- failures and retries ----------------------------------------------------------------------


async def test_throttled_source_is_retried_until_it_answers(env: Env) -> None:
    task_id = await env.task()
    await put(env.src, "src", "k", b"data")
    env.src.fail("head", StoreError(ErrorKind.THROTTLED, "SlowDown", code="SlowDown"), key="k", times=3)
    await env.ledger.accept(task_id, ["k"])
    engine = env.engine()
    await engine.start()
    engine.notify()
    counts = await env.settled(task_id)
    assert (counts["success"], counts["failure"]) == (1, 0)
    row = await env.row(task_id, "k")
    assert row["attempts"] == 4 and row["state"] == "done"
    assert env.dst.object_bytes("dst", "k") == b"data"


async def test_retries_run_out_into_a_failure_with_the_last_error(env: Env) -> None:
    task_id = await env.task()
    await put(env.src, "src", "k", b"data")
    env.src.fail("get", StoreError(ErrorKind.TRANSIENT, "connection reset", code="ConnectionError"),
                 key="k", times=None)
    await env.ledger.accept(task_id, ["k"])
    engine = env.engine()
    await engine.start()
    engine.notify()
    counts = await env.settled(task_id)
    assert (counts["success"], counts["failure"]) == (0, 1)
    [failed] = await env.ledger.failed_keys(task_id)
    assert failed["key"] == "k" and failed["reason"] == "retries_exhausted"
    assert "connection reset" in failed["message"] and failed["attempts"] == 4
    assert env.src.count("get") == 4


async def test_deleted_source_fails_at_once_as_source_not_found(env: Env) -> None:
    task_id = await env.task()
    await env.ledger.accept(task_id, ["gone"])
    engine = env.engine()
    await engine.start()
    engine.notify()
    counts = await env.settled(task_id)
    assert counts["failure"] == 1
    [failed] = await env.ledger.failed_keys(task_id)
    assert failed["reason"] == "source_not_found" and failed["attempts"] == 1
    assert env.src.count("head") == 1


async def test_permission_denied_is_not_retried(env: Env) -> None:
    task_id = await env.task()
    await put(env.src, "src", "k", b"data")
    env.dst.fail("put", StoreError(ErrorKind.PERMISSION, "AccessDenied", code="AccessDenied"), times=None)
    await env.ledger.accept(task_id, ["k"])
    engine = env.engine()
    await engine.start()
    engine.notify()
    await env.settled(task_id)
    [failed] = await env.ledger.failed_keys(task_id)
    assert failed["reason"] == "access_denied" and failed["attempts"] == 1


class FlakyStores(FixedStores):
    """Raises a programming error on the first lookup, as a defect would."""

    def __init__(self, source: ObjectStore, destination: ObjectStore) -> None:
        super().__init__(source, destination)
        self.calls = 0

    async def source(self, spec: TaskSpec) -> ObjectStore:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("unexpected defect")
        return self.src


async def test_unexpected_exception_is_retried_as_internal_error_and_the_loop_survives(env: Env) -> None:
    task_id = await env.task()
    await put(env.src, "src", "k", b"data")
    await env.ledger.accept(task_id, ["k"])
    engine = env.engine(FlakyStores(env.src, env.dst))
    await engine.start()
    engine.notify()
    counts = await env.settled(task_id)
    assert counts["success"] == 1
    row = await env.row(task_id, "k")
    assert row["attempts"] == 2
    assert engine.running


# -- leases ------------------------------------------------------------------------------------


async def test_key_of_a_dead_worker_is_taken_over_when_its_lease_expires(env: Env) -> None:
    task_id = await env.task()
    await put(env.src, "src", "k", b"data")
    await env.ledger.accept(task_id, ["k"])
    [claim] = await env.ledger.claim("dead-worker", 10, 0.3)  # then the worker "dies"
    engine = env.engine()
    await engine.start()
    engine.notify()
    await asyncio.sleep(0.1)
    assert (await env.row(task_id, "k"))["lease_owner"] == "dead-worker"
    counts = await env.settled(task_id)
    assert counts["success"] == 1
    assert env.dst.object_bytes("dst", "k") == b"data"
    # The dead worker waking up cannot record anything any more.
    from omsync.domain.model import Outcome, OutcomeKind

    late = await env.ledger.finish("dead-worker", claim, Outcome(OutcomeKind.SUCCESS, size=4))
    assert not late.recorded
    assert (await env.counts(task_id))["success"] == 1


class BlockingSource(MemoryStore):
    """HEAD waits for ``gate``, so a copy stays in flight as long as a test needs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.heads = 0

    async def head(self, bucket: str, key: str) -> Any:
        self.heads += 1
        self.entered.set()
        await self.gate.wait()
        return await super().head(bucket, key)


async def test_leases_of_slow_copies_are_renewed(env: Env) -> None:
    src = BlockingSource(capabilities=SMALL_CAPS, buckets=["src"])
    task_id = await env.task()
    await put(src, "src", "k", b"data")
    await env.ledger.accept(task_id, ["k"])
    # A long poll interval: the engine's own claimer must not be what keeps the key.
    engine = env.engine(FixedStores(src, env.dst), lease_seconds=0.3, poll_interval_seconds=30.0)
    await engine.start()
    engine.notify()
    await asyncio.wait_for(src.entered.wait(), 5)
    await asyncio.sleep(1.0)  # more than three leases long
    assert await env.ledger.claim("intruder", 10, 5) == []
    assert src.heads == 1  # one copy only: the key never looked abandoned
    src.gate.set()
    engine.notify()
    counts = await env.settled(task_id)
    assert counts["success"] == 1


async def test_a_worker_that_lost_its_lease_does_not_record(env: Env) -> None:
    src = BlockingSource(capabilities=SMALL_CAPS, buckets=["src"])
    task_id = await env.task()
    await put(src, "src", "k", b"data")
    await env.ledger.accept(task_id, ["k"])
    engine = env.engine(FixedStores(src, env.dst))
    await engine.start()
    engine.notify()
    await asyncio.wait_for(src.entered.wait(), 5)
    async with env.services.db.write() as conn:  # another worker took the key over
        await conn.execute(update(ledger_table).where(ledger_table.c.task_id == task_id)
                           .values(lease_owner="other-worker"))
    src.gate.set()

    async def idle() -> bool:
        return engine.inflight == 0

    await eventually(idle, 5, "the copy to end")
    counts = await env.counts(task_id)
    assert counts["success"] == 0 and counts["pending"] == 1
    row = await env.row(task_id, "k")
    assert row["state"] == "inflight" and row["lease_owner"] == "other-worker"


# -- multipart uploads left by a crash ----------------------------------------------------------


async def open_upload_records(env: Env) -> list[Any]:
    async with env.services.db.read() as conn:
        return list((await conn.execute(select(open_uploads))).all())


async def test_upload_left_open_by_a_dead_worker_is_aborted_by_the_next_owner(env: Env) -> None:
    task_id = await env.task()
    data = payload(64 * KIB, seed=13)
    await put(env.src, "src", "big", data)
    await env.ledger.accept(task_id, ["big"])
    [claim] = await env.ledger.claim("dead-worker", 10, 0.2)
    orphan = await env.dst.create_multipart("dst", "big", PutOptions())
    await env.dst.upload_part("dst", "big", orphan, 1, b"x" * 4096)
    await env.ledger.record_upload(claim, "dst", orphan)  # then the worker "dies"
    engine = env.engine()
    await engine.start()
    engine.notify()
    counts = await env.settled(task_id)
    assert counts["success"] == 1
    assert env.dst.object_bytes("dst", "big") == data
    assert await env.dst.list_multipart_uploads("dst") == []
    assert await open_upload_records(env) == []


async def test_open_uploads_are_recorded_while_a_copy_runs(env: Env) -> None:
    task_id = await env.task()
    await put(env.src, "src", "big", payload(64 * KIB, seed=14))
    await env.ledger.accept(task_id, ["big"])
    seen: list[list[Any]] = []
    original = env.dst.upload_part

    async def watched(bucket: str, key: str, upload_id: str, number: int, part: bytes) -> str:
        if number == 1:
            seen.append(await open_upload_records(env))
        return await original(bucket, key, upload_id, number, part)

    env.dst.upload_part = watched  # type: ignore[method-assign,assignment]
    engine = env.engine()
    await engine.start()
    engine.notify()
    await env.settled(task_id)
    [[record]] = seen
    assert record.bucket == "dst" and record.key == b"big"
    assert await open_upload_records(env) == []


# -- shutdown ----------------------------------------------------------------------------------


async def test_stop_cancels_slow_copies_aborts_uploads_and_hands_keys_back(env: Env) -> None:
    task_id = await env.task()
    data = payload(64 * KIB, seed=9)
    await put(env.src, "src", "big", data)
    await env.ledger.accept(task_id, ["big"])
    uploading = asyncio.Event()
    original = env.dst.upload_part

    async def slow_part(bucket: str, key: str, upload_id: str, number: int, part: bytes) -> str:
        uploading.set()
        await asyncio.sleep(60)
        return await original(bucket, key, upload_id, number, part)

    env.dst.upload_part = slow_part  # type: ignore[method-assign,assignment]
    engine = env.engine()
    await engine.start()
    engine.notify()
    await asyncio.wait_for(uploading.wait(), 5)
    started = time.monotonic()
    await engine.stop(0.2)
    assert time.monotonic() - started < 3
    assert await env.dst.list_multipart_uploads("dst") == []
    assert await open_upload_records(env) == []
    assert env.dst.keys("dst") == []
    row = await env.row(task_id, "big")
    assert row["state"] == "pending" and row["lease_owner"] is None and row["attempts"] == 0
    counts = await env.counts(task_id)
    assert counts["pending"] == 1 and counts["success"] == 0

    env.dst.upload_part = original  # type: ignore[method-assign]
    again = env.engine()
    await again.start()
    again.notify()
    counts = await env.settled(task_id)
    assert counts["success"] == 1
    assert env.dst.object_bytes("dst", "big") == data


async def test_stop_lets_quick_copies_finish(env: Env) -> None:
    task_id = await env.task()
    for i in range(8):
        await put(env.src, "src", f"k{i}", b"x" * i)
    await env.ledger.accept(task_id, [f"k{i}" for i in range(8)])
    slow = MemoryStore(capabilities=SMALL_CAPS, buckets=["dst"], delay=0.05)
    engine = env.engine(FixedStores(env.src, slow))
    await engine.start()
    engine.notify()

    async def busy() -> bool:
        return engine.inflight > 0

    await eventually(busy, 5, "copies to start")
    await engine.stop(10.0)
    counts = await env.counts(task_id)
    assert counts["success"] >= 1  # the in-flight copies completed during the grace period
    assert counts["success"] + counts["pending"] == 8


# -- object lists ------------------------------------------------------------------------------


async def test_outcomes_are_written_as_object_lists_into_the_destination(env: Env) -> None:
    task_id = await env.task(object_overwrite_mode="NO_OVERWRITE")
    await put(env.src, "src", "ok key+%.txt", b"1")
    await put(env.src, "src", "exists", b"2")
    await put(env.dst, "dst", "exists", b"old")
    await env.ledger.accept(task_id, ["ok key+%.txt", "exists", "tab\there"],
                            raw_keys=["ok%20key%2B%25.txt", None, "tab%09here"])
    engine = env.engine()
    await engine.start()
    engine.notify()
    counts = await env.settled(task_id)
    assert (counts["success"], counts["skip"], counts["failure"]) == (1, 1, 1)

    env.dst.fail("put", StoreError(ErrorKind.TRANSIENT, "reset", code="ConnectionError"), bucket="dst")
    assert engine.lists is not None
    assert await engine.lists.flush() == 0  # the PUT failed: nothing is lost
    assert await engine.lists.flush() == 3

    lists = [k for k in env.dst.keys("dst") if k.startswith(f"oms/sync_task/{task_id}/")]
    assert len(lists) == 3
    by_kind = {k.split("/")[3]: k for k in lists}
    assert set(by_kind) == {"success_object_lists", "skip_object_lists", "failed_object_lists"}
    failed = by_kind["failed_object_lists"]
    assert failed.endswith(".failed_list.txt")
    stamp = failed.rsplit("/", 1)[1].split(".")[0]
    from omsync.domain.model import OutcomeKind

    assert failed == list_key(task_id, OutcomeKind.FAILURE, int(stamp))
    [line] = env.dst.object_bytes("dst", failed).decode().splitlines()
    code, when, encoded, decoded, store_code, message = line.split("\t")
    assert code == "source_not_found"
    assert when.endswith("Z")
    assert encoded == "tab%09here" and decoded == "tab\\there"  # as sent; decoded with the tab escaped
    assert store_code != "" and message
    [line] = env.dst.object_bytes("dst", by_kind["success_object_lists"]).decode().splitlines()
    assert line.split("\t")[0] == "ok key+%.txt" and line.split("\t")[2] == "1"
    [line] = env.dst.object_bytes("dst", by_kind["skip_object_lists"]).decode().splitlines()
    assert line.split("\t")[0] == "exists" and line.split("\t")[3] == "exists"

    async with env.services.db.read() as conn:
        assert (await conn.execute(select(outcome_log))).all() == []
    # The lists did not become events of their own.
    assert (await env.counts(task_id))["request"] == 3


def test_the_engine_does_not_depend_on_the_http_api() -> None:
    import subprocess
    import sys

    code = ("import sys, omsync.engine.worker, omsync.engine.factory, omsync.engine.object_lists; "
            "bad = sorted(m for m in sys.modules if m.startswith(('fastapi', 'starlette', 'omsync.api'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
