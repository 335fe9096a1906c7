"""The dashboard lists migration tasks with their progress, to their project (and the operator)
only, never among the sync tasks, and never with their credentials."""

from __future__ import annotations

import re
from urllib.parse import quote

from omsync.domain.model import Outcome, OutcomeKind
from omsync.ledger.migration_tasks import Listed, MigrationRepository
from tests.web.conftest import OTHER_PROJECT, PROJECT, Dashboard, logged_in, task_credentials, task_fields


async def make_migration(dashboard: Dashboard) -> tuple[int, str, dict[str, str]]:
    """A prefix migration of 4 listed keys: 2 copied (3,000 bytes), 1 failed, 1 still waiting."""
    services = dashboard.services
    repository = MigrationRepository(services.db, services.box)
    creds = task_credentials("migration")
    sync_fields = {k: v for k, v in task_fields("mig-src", "mig-dst").items()
                   if k not in ("enable_kms", "source_cdn", "options")}
    task_id, name = await repository.create(PROJECT, sync_fields, creds, {
        "task_type": "prefix", "sources": '["logs/"]', "list_file": None, "save_prefix": "archive/",
        "migrate_since": None, "bandwidth_policy": "[]", "enable_failed_object_recording": True,
    })
    job = await repository.claim_listing("dash-test", 60)
    assert job is not None and job.id == task_id
    pending = await repository.record_page(
        job, "dash-test", 60, [Listed(f"logs/{i}", 1000 + i) for i in range(4)], index=1, after=None, offset=0,
        done=True)
    assert pending == 4
    claimed = await services.ledger.claim("dash-test", limit=20, lease_seconds=60)
    claims = [c for c in claimed if c.task_id == job.sync_task_id][:3]
    await services.ledger.release("dash-test", [c for c in claimed if c not in claims])
    outcomes = [Outcome(OutcomeKind.SUCCESS, size=1000), Outcome(OutcomeKind.SUCCESS, size=2000),
                Outcome(OutcomeKind.FAILURE, reason="access_denied", message="403")]
    for claim, outcome in zip(claims, outcomes, strict=True):
        assert (await services.ledger.finish("dash-test", claim, outcome)).recorded
    return task_id, name, creds


async def test_migration_tasks_are_listed_with_progress(dashboard: Dashboard) -> None:
    task_id, name, creds = await make_migration(dashboard)
    sync_task_id = (await MigrationRepository(dashboard.services.db, dashboard.services.box).get(PROJECT, task_id))[
        "sync_task_id"]
    async with logged_in(dashboard) as (client, _):
        page = (await client.get("/ui/tasks")).text
        row = re.search(rf'<tr data-migration-id="{task_id}">(.*?)</tr>', page, re.S)
        assert row is not None, page
        cells = row.group(1)
        assert name in cells and "running" in cells and "75.0%" in cells  # 3 of 4 keys have an outcome
        assert "archive/" in cells and "mig-src" in cells
        assert sync_task_id not in page  # the engine row is not a sync task of the list
        assert not any(secret in page for secret in creds.values())
        assert (await client.get(f"/ui/tasks/{quote(sync_task_id, safe='')}")).status_code == 404
    async with logged_in(dashboard, OTHER_PROJECT) as (client, _):
        page = (await client.get("/ui/tasks")).text
        assert f'data-migration-id="{task_id}"' not in page and "No migration tasks" in page
    async with logged_in(dashboard, None) as (client, _):
        page = (await client.get("/ui/tasks")).text
        assert f'data-migration-id="{task_id}"' in page and PROJECT in page
