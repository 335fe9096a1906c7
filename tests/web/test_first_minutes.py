"""What a first-time user reads on the dashboard: keys failing now apart from the month's
FAILURE counter, the task's limits on its page, and the operator password option at login."""

from __future__ import annotations

import re

from pydantic import SecretStr

from omsync.domain.model import Outcome, OutcomeKind, TaskLimits
from tests.web.conftest import AWKWARD_KEY, OPERATOR_PASSWORD, PROJECT, Dashboard, logged_in
from tests.web.test_dashboard import task_path


async def test_a_fixed_failure_is_no_longer_failing_but_stays_counted(dashboard: Dashboard) -> None:
    services = dashboard.services
    async with logged_in(dashboard) as (client, _):
        before = (await client.get(task_path(dashboard.task))).text
        assert re.search(r'id="failing-now">2<', before)
        assert 'id="month-failure">2<' in before
        assert "Failures (FAILURE counter)" in before and "Keys failing now" in before
        # Both failed keys are re-driven and succeed this time.
        assert await services.redrive(dashboard.task) == 2
        await record_redriven(dashboard)
        after = (await client.get(task_path(dashboard.task))).text
    assert re.search(r'id="failing-now">0<', after)
    assert 'id="failed-total">0<' in after and 'id="no-failures"' in after
    assert 'id="month-failure">2<' in after  # the month's FAILURE counter keeps its history
    assert await services.tasks.failing_keys(dashboard.task) == 0


async def record_redriven(dashboard: Dashboard) -> None:
    ledger = dashboard.services.ledger
    claims = await ledger.claim("web-test", limit=10, lease_seconds=60)
    redriven = {c.key: c for c in claims if c.key in ("gone/missing.txt", AWKWARD_KEY)}
    assert set(redriven) == {"gone/missing.txt", AWKWARD_KEY}
    for claim in claims:
        outcome = Outcome(OutcomeKind.SUCCESS, size=1) if claim.key in redriven else None
        if outcome is not None:
            assert (await ledger.finish("web-test", claim, outcome)).recorded
    await ledger.release("web-test", [c for c in claims if c.key not in redriven])


async def test_the_task_page_shows_its_limits(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, _):
        unlimited = (await client.get(task_path(dashboard.task))).text
        assert re.search(r'id="limit-concurrency">unlimited<', unlimited)
        await dashboard.services.tasks.set_limits(
            PROJECT, dashboard.task,
            TaskLimits(max_concurrency=8, max_objects_per_second=100.0, max_bytes_per_second=50 * 1024 * 1024))
        limited = (await client.get(task_path(dashboard.task))).text
    assert re.search(r'id="limit-concurrency">8<', limited)
    assert re.search(r'id="limit-objects">100.0 per worker process<', limited)
    assert re.search(r'id="limit-bytes">[^<]*MiB per worker process<', limited)


async def test_login_page_mentions_the_operator_password(dashboard: Dashboard) -> None:
    # With the password set, the page offers it; without, it says how an operator enables it.
    async with dashboard.client() as client:
        page = (await client.get("/ui/login")).text
    assert 'id="password"' in page
    dashboard.services.settings.dashboard_password = None
    try:
        async with dashboard.client() as client:
            page = (await client.get("/ui/login")).text
    finally:
        dashboard.services.settings.dashboard_password = SecretStr(OPERATOR_PASSWORD)
    assert 'id="password"' not in page
    assert "OMSYNC_DASHBOARD_PASSWORD" in page

