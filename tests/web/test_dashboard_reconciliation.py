"""The task page shows the task's last reconciliation run, to its project only."""

from __future__ import annotations

import re
from urllib.parse import quote

from omsync.ledger.reconciliations import SUCCESS, Reconciliations
from tests.web.conftest import OTHER_PROJECT, PROJECT, Dashboard, logged_in


def section(page: str) -> str:
    found = re.search(r'<section class="reconciliation" id="reconciliation">(.*?)</section>', page, re.S)
    assert found is not None, page
    return found.group(1)


async def test_task_page_shows_the_last_run(dashboard: Dashboard) -> None:
    runs = Reconciliations(dashboard.services.db)
    async with logged_in(dashboard) as (client, _):
        page = (await client.get(f"/ui/tasks/{quote(dashboard.task, safe='')}")).text
        assert "Never reconciled" in section(page)
    first = await runs.create(PROJECT, dashboard.task, "")
    run = await runs.claim("dash-test", 60)
    assert run is not None and run.id == first
    counts = {"source_listed": 12, "destination_listed": 9, "missing": 4, "differing": 2, "extra": 1, "enqueued": 6}
    assert await runs.checkpoint(first, "dash-test", 60, "photos/z", counts, 1)
    assert await runs.finish(first, "dash-test", SUCCESS)
    latest = await runs.create(PROJECT, dashboard.task, "photos/")  # the newest run is the one shown
    async with logged_in(dashboard) as (client, _):
        shown = section((await client.get(f"/ui/tasks/{quote(dashboard.task, safe='')}")).text)
        assert latest in shown and first not in shown and "RUNNING" in shown and "photos/" in shown
    run = await runs.claim("dash-test", 60)
    assert run is not None
    assert await runs.checkpoint(latest, "dash-test", 60, None, counts, 0)
    assert await runs.finish(latest, "dash-test", SUCCESS)
    async with logged_in(dashboard) as (client, _):
        shown = section((await client.get(f"/ui/tasks/{quote(dashboard.task, safe='')}")).text)
        assert "SUCCESS" in shown
        drift = re.search(r'id="reconciliation-drift">(.*?)</dd>', shown, re.S)
        assert drift is not None
        assert re.sub(r"\s+", " ", drift.group(1)) == "4 missing · 2 differing · 1 extra (kept) · 6 enqueued"
        assert "12 source · 9 destination" in shown
    async with logged_in(dashboard, OTHER_PROJECT) as (client, _):
        other = (await client.get(f"/ui/tasks/{quote(dashboard.task, safe='')}"))
        assert other.status_code == 404 and latest not in other.text
        assert "Never reconciled" in section((await client.get(
            f"/ui/tasks/{quote(dashboard.other_task, safe='')}")).text)


async def test_task_page_shows_the_schedule(dashboard: Dashboard) -> None:
    runs = Reconciliations(dashboard.services.db)
    page_url = f"/ui/tasks/{quote(dashboard.task, safe='')}"
    async with logged_in(dashboard) as (client, _):
        assert "No schedule." in section((await client.get(page_url)).text)
    await runs.set_schedule(PROJECT, dashboard.task, 86_400, "logs/", next_at=1_900_000_000_000)
    async with logged_in(dashboard, None) as (client, _):  # the operator sees it too
        shown = section((await client.get(page_url)).text)
        assert "Scheduled every 24h 00m" in shown and "logs/" in shown and "2030-03-17 17:46:40 UTC" in shown
