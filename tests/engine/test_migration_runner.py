"""The migration runner with a real engine and ledger over in-memory stores: a prefix migrated
into save_prefix to status 5, a listing error retried, a source that cannot be listed failing
the task with the reason, and two tasks listed side by side when one has a large backlog."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omsync.composition import build_engine
from omsync.config import Settings
from omsync.engine.copier import Copier
from omsync.engine.migration import MigrationRunner
from omsync.ledger.migration_tasks import FAILED, SUCCEEDED, MigrationRepository
from omsync.services import Services
from omsync.stores.base import ErrorKind, PutOptions, StoreError
from omsync.stores.memory import MemoryStore
from tests.engine.helpers import SMALL_CAPS, SMALL_LIMITS, FixedStores, eventually

PROJECT = "p1"
CREDS = {"src_ak": "a", "src_sk": "b", "dst_ak": "c", "dst_sk": "d"}
SYNC_FIELDS = {
    "src_cloud_type": "S3", "src_region": "r", "src_bucket": "src", "dst_cloud_type": "S3", "dst_region": "r",
    "dst_bucket": "dst", "description": None, "enable_metadata_migration": False, "enable_restore": False,
    "dst_storage_policy": None, "app_id": None, "consistency_check": "size_last_modified",
    "object_overwrite_mode": "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE",
}


class Env:
    def __init__(self, services: Services, src: MemoryStore, dst: MemoryStore) -> None:
        self.services, self.src, self.dst = services, src, dst
        self.repo = MigrationRepository(services.db, services.box)
        stores = FixedStores(src, dst)
        self.engine = build_engine(services.settings, services, stores, copier=Copier(SMALL_LIMITS))
        self.runner = MigrationRunner(services.settings, self.repo, services.tasks, stores, self.engine.owner,
                                      self.engine.notify)

    async def create(self, prefixes: list[str], save_prefix: str = "", **fields: Any) -> int:
        task_id, _ = await self.repo.create(PROJECT, {**SYNC_FIELDS, **fields}, CREDS, {
            "task_type": "prefix", "sources": json.dumps(prefixes), "list_file": None, "save_prefix": save_prefix,
            "migrate_since": None, "bandwidth_policy": "[]", "enable_failed_object_recording": True})
        return task_id

    async def status(self, task_id: int) -> int:
        return int((await self.repo.get(PROJECT, task_id))["status"])

    async def ended(self, task_id: int, timeout: float = 20.0) -> dict[str, Any]:
        async def done() -> bool:
            return await self.status(task_id) in (FAILED, SUCCEEDED)

        await eventually(done, timeout, f"migration task {task_id} to end")
        return await self.repo.get(PROJECT, task_id)


@pytest.fixture()
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = Settings(data_dir=tmp_path, workers=8, lease_seconds=3.0, poll_interval_seconds=0.05,
                        retry_base_seconds=0.01, retry_max_seconds=0.05, object_list_interval_seconds=3600,
                        max_pending_per_task=40)
    services = await Services.open(settings)
    environment = Env(services, MemoryStore(capabilities=SMALL_CAPS, buckets=["src"]),
                      MemoryStore(capabilities=SMALL_CAPS, buckets=["dst"]))
    await environment.engine.start()
    environment.runner.start()
    try:
        yield environment
    finally:
        await environment.runner.stop()
        await environment.engine.stop(1.0)
        await services.close()


async def test_a_prefix_is_migrated_into_save_prefix(env: Env) -> None:
    keys = [f"logs/{i:04d}" for i in range(2500)] + ["other/x"]
    for key in keys:
        await env.src.put("src", key, key.encode(), PutOptions())
    env.src.fail("list", StoreError(ErrorKind.THROTTLED, "slow down"), bucket="src")  # retried
    task_id = await env.create(["logs/"], save_prefix="copy/")
    row = await env.ended(task_id, timeout=60)
    assert row["status"] == SUCCEEDED and row["listed_num"] == 2500 and row["list_done"]
    assert env.dst.keys("dst") == sorted(f"copy/{k}" for k in keys if k.startswith("logs/"))
    progress = (await env.repo.progress([row["sync_task_id"]]))[row["sync_task_id"]]
    assert (progress.successful, progress.failed, progress.open) == (2500, 0, 0)
    totals = await env.services.ledger.totals(row["sync_task_id"])
    assert totals["request"] == totals["success"] == 2500  # every key listed and copied once


async def test_a_source_that_cannot_be_listed_fails_the_task(env: Env) -> None:
    task_id = await env.create([""], src_bucket="no-such-bucket")
    row = await env.ended(task_id)
    assert row["status"] == FAILED and row["error_code"] == "OMSYNC.0602"
    assert "listing failed" in row["error_msg"] and row["end_time"]


async def test_a_second_task_is_listed_while_the_first_waits_for_its_copies(env: Env) -> None:
    for i in range(3000):
        await env.src.put("src", f"big/{i:05d}", b"x", PutOptions())
    await env.src.put("src", "small/one", b"y", PutOptions())
    env.dst.delay = 0.01  # copies slower than listing: the first task's backlog fills up
    big = await env.create(["big/"])
    small = await env.create(["small/"])
    row = await env.ended(small, timeout=30)
    assert row["status"] == SUCCEEDED
    assert await env.status(big) == 2  # still running: its listing gave way
    env.dst.delay = 0.0
    assert (await env.ended(big, timeout=90))["listed_num"] == 3000
