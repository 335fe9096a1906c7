"""Migration tasks in the ledger on both backends: exactly-once listing under a lease, the
checkpoint, completion, pausing, restart of a failed task, bandwidth windows, and engine rows
hidden from the sync-task repository."""

from __future__ import annotations

import calendar
import time

import pytest

from omsync.domain.errors import TaskNotFound
from omsync.domain.model import Outcome, OutcomeKind
from omsync.ledger.migration_tasks import (
    FAILED,
    PAUSING,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    Listed,
    MigrationBusy,
    MigrationRepository,
    bandwidth_cap,
)
from omsync.services import Services

PROJECT = "p1"
SYNC_FIELDS = {
    "src_cloud_type": "S3", "src_region": "r", "src_bucket": "a", "dst_cloud_type": "S3", "dst_region": "r",
    "dst_bucket": "b", "description": None, "enable_metadata_migration": False, "enable_restore": False,
    "dst_storage_policy": None, "app_id": None, "consistency_check": "size_last_modified",
    "object_overwrite_mode": "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE",
}
CREDS = {"src_ak": "a", "src_sk": "b", "dst_ak": "c", "dst_sk": "d"}
POLICY = '[{"start": "22:00", "end": "06:00", "max_bandwidth": 2097152}]'


async def new_migration(repo: MigrationRepository, policy: str = "[]") -> int:
    task_id, name = await repo.create(PROJECT, SYNC_FIELDS, CREDS, {
        "task_type": "prefix", "sources": '["x/"]', "list_file": None, "save_prefix": "s/", "migrate_since": None,
        "bandwidth_policy": policy, "enable_failed_object_recording": True})
    assert name == f"oms_task_{task_id}"
    return task_id


async def finish_all(services: Services, sync_task_id: str, failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    claims = await services.ledger.claim("w", 100, 30)
    for claim in claims:
        assert claim.task_id == sync_task_id
        kind = OutcomeKind.FAILURE if claim.key in failing else OutcomeKind.SUCCESS
        await services.ledger.finish("w", claim, Outcome(kind, size=10 if kind is OutcomeKind.SUCCESS else 0,
                                                         reason="access_denied" if failing else None))


async def test_listing_is_exactly_once_under_a_lease(services: Services) -> None:
    repo = MigrationRepository(services.db, services.box)
    task_id = await new_migration(repo)
    job = await repo.claim_listing("owner-1", 30)
    assert job is not None and (job.index, job.after) == (0, None)
    assert await repo.claim_listing("owner-2", 30) is None  # leased by a live owner
    page = [Listed("x/1", 5), Listed("x/2", 7), Listed("x/2", 7), Listed("x/old", 3, skip=True)]
    assert await repo.record_page(job, "owner-1", 30, page, index=0, after="x/old", offset=0, done=False) == 2
    # The same keys again (overlapping sources) are not counted twice.
    assert await repo.record_page(job, "owner-1", 30, [Listed("x/1", 5), Listed("x/3", 1)], index=0, after="x/3",
                                  offset=0, done=False) == 3
    assert await repo.record_page(job, "owner-2", 30, [Listed("x/9", 1)], index=1, after=None, offset=0,
                                  done=True) is None  # not the owner: nothing written
    row = await repo.get(PROJECT, task_id)
    assert (row["listed_num"], row["listed_size"], row["since_skipped_num"]) == (4, 13, 1)
    assert bytes(row["list_after"]) == b"x/3" and not row["list_done"]
    totals = await services.ledger.totals(row["sync_task_id"])
    assert totals["request"] == 3
    # The lease of a dead owner runs out: another process resumes from the checkpoint.
    await repo.renew_listing(job, "owner-1", -1)
    resumed = await repo.claim_listing("owner-2", 30)
    assert resumed is not None and (resumed.index, resumed.after) == (0, "x/3")
    assert await repo.record_page(resumed, "owner-2", 30, [], index=1, after=None, offset=0, done=True) == 3
    assert (await repo.get(PROJECT, task_id))["list_done"]
    assert await repo.claim_listing("owner-3", 30) is None


async def test_completion_failure_restart_and_success(services: Services) -> None:
    repo = MigrationRepository(services.db, services.box)
    task_id = await new_migration(repo)
    job = await repo.claim_listing("o", 30)
    assert job is not None
    await repo.record_page(job, "o", 30, [Listed("x/a", 10), Listed("x/b", 10)], index=1, after=None, offset=0,
                           done=True)
    sync_task_id = job.sync_task_id
    assert await repo.settle() == []  # keys still open
    await finish_all(services, sync_task_id, failing={"x/b"})
    assert await repo.settle() == [(task_id, FAILED)]
    row = await repo.get(PROJECT, task_id)
    assert row["status"] == FAILED and row["error_code"] == "OMSYNC.0601" and row["end_time"]
    progress = (await repo.progress([sync_task_id]))[sync_task_id]
    assert (progress.successful, progress.failed, progress.open, progress.complete_size) == (1, 1, 0, 10)
    with pytest.raises(MigrationBusy):
        await repo.stop(PROJECT, task_id)
    assert await repo.start(PROJECT, task_id, CREDS) == 1  # the failed key is tried again
    assert (await repo.get(PROJECT, task_id))["status"] == RUNNING
    await finish_all(services, sync_task_id)
    assert await repo.settle() == [(task_id, SUCCEEDED)]
    progress = (await repo.progress([sync_task_id]))[sync_task_id]
    assert (progress.successful, progress.failed) == (2, 0)
    with pytest.raises(MigrationBusy):
        await repo.start(PROJECT, task_id, CREDS)
    assert await repo.delete(PROJECT, task_id) == sync_task_id
    with pytest.raises(TaskNotFound):
        await repo.get(PROJECT, task_id)


async def test_stop_pauses_while_copies_are_in_flight(services: Services) -> None:
    repo = MigrationRepository(services.db, services.box)
    task_id = await new_migration(repo)
    job = await repo.claim_listing("o", 30)
    assert job is not None
    await repo.record_page(job, "o", 30, [Listed("x/a", 1), Listed("x/b", 1)], index=0, after="x/b", offset=0,
                           done=False)
    [first, *_] = await services.ledger.claim("w", 1, 30)
    assert await repo.stop(PROJECT, task_id) == PAUSING
    assert await repo.record_page(job, "o", 30, [Listed("x/c", 1)], index=1, after=None, offset=0,
                                  done=True) is None  # the listing stops at its next page
    assert await services.ledger.claim("w", 10, 30) == []  # nothing more is claimed
    assert await repo.settle() == []
    await services.ledger.finish("w", first, Outcome(OutcomeKind.SUCCESS, size=1))
    assert await repo.settle() == [(task_id, STOPPED)]
    with pytest.raises(TaskNotFound):
        await repo.stop("another-project", task_id)
    await repo.start(PROJECT, task_id, CREDS)
    resumed = await repo.claim_listing("o2", 30)
    assert resumed is not None and resumed.after == "x/b"


async def test_engine_rows_are_not_sync_tasks(services: Services) -> None:
    repo = MigrationRepository(services.db, services.box)
    task_id = await new_migration(repo)
    sync_task_id = (await repo.get(PROJECT, task_id))["sync_task_id"]
    rows, count = await services.tasks.page(PROJECT, limit=100, offset=0, status=None)
    assert count == 0 and rows == []
    with pytest.raises(TaskNotFound):
        await services.tasks.get(PROJECT, sync_task_id)
    with pytest.raises(TaskNotFound):
        await services.tasks.stop(PROJECT, sync_task_id)
    spec = await services.tasks.spec(sync_task_id)  # the engine still reads it, with its save_prefix
    assert spec.dst_key_prefix == "s/" and spec.object_list_root == f"oms/task/oms_task_{task_id}"


async def test_bandwidth_windows_become_the_bytes_limit(services: Services) -> None:
    repo = MigrationRepository(services.db, services.box)
    task_id = await new_migration(repo, POLICY)
    sync_task_id = (await repo.get(PROJECT, task_id))["sync_task_id"]
    night = calendar.timegm(time.strptime("2026-01-01 23:30", "%Y-%m-%d %H:%M"))
    await repo.settle(bandwidth_at=night)
    assert (await services.tasks.running_limits())[sync_task_id].max_bytes_per_second == 2097152
    await repo.settle(bandwidth_at=night + 12 * 3600)  # 11:30: outside the window
    assert sync_task_id not in await services.tasks.running_limits()
    assert bandwidth_cap([{"start": "22:00", "end": "06:00", "max_bandwidth": 1}], night + 6 * 3600) == 1
    assert bandwidth_cap([{"start": "22:00", "end": "06:00", "max_bandwidth": 1}], night + 7 * 3600) is None


async def test_a_listing_with_a_large_backlog_waits_for_its_copies(services: Services) -> None:
    repo = MigrationRepository(services.db, services.box)
    first, second = await new_migration(repo), await new_migration(repo)
    job = await repo.claim_listing("o", 30, max_pending=2)
    assert job is not None and job.id == first
    await repo.record_page(job, "o", 30, [Listed(f"x/{i}", 1) for i in range(3)], index=0, after="x/2", offset=0,
                           done=False)
    await repo.release_listing(job, "o")
    other = await repo.claim_listing("o", 30, max_pending=2)  # the first task has 3 keys waiting
    assert other is not None and other.id == second
    await repo.release_listing(other, "o")
    await finish_all(services, job.sync_task_id)
    again = await repo.claim_listing("o", 30, max_pending=2)
    assert again is not None and (again.id, again.after) == (first, "x/2")
