"""The dashboard over plain HTTP (the real app and ledger), and in a real browser against a real
``omsync serve`` with workers copying between buckets of a moto server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from huaweicloudsdkoms.v2 import (
    CreateSyncEventsRequest,
    CreateSyncTaskReq,
    CreateSyncTaskRequest,
    ShowSyncTaskRequest,
    SyncObjectReq,
)
from sqlalchemy import select

from omsync.domain.keys import encode_key_for_event
from omsync.domain.stats import LATENCY_BOUNDS_MS
from omsync.ledger.tables import ledger, sync_tasks
from omsync.web.charts import build_chart, window
from omsync.web.data import histogram_percentile
from omsync.web.routes import _show_key
from omsync.web.session import SESSION_COOKIE, SessionSigner
from tests.omsync_server import OmsyncServer, sdk_client
from tests.servers import S3Server
from tests.web.conftest import (
    AWKWARD_KEY,
    OPERATOR_PASSWORD,
    OTHER_PROJECT,
    PROJECT,
    Dashboard,
    logged_in,
    login,
    task_credentials,
)


def task_path(task_id: str, action: str = "") -> str:
    return f"/ui/tasks/{quote(task_id, safe='')}" + (f"/{action}" if action else "")


async def ledger_state(dashboard: Dashboard, key: str) -> str:
    async with dashboard.services.db.read() as conn:
        state = await conn.scalar(select(ledger.c.state).where(ledger.c.task_id == dashboard.task,
                                                                ledger.c.key == key.encode()))
    return str(state)


async def task_status(dashboard: Dashboard, task_id: str) -> str:
    async with dashboard.services.db.read() as conn:
        return str(await conn.scalar(select(sync_tasks.c.status).where(sync_tasks.c.id == task_id)))


def failed_rows(html: str) -> dict[str, str]:
    """Ledger row id -> reason of the failed keys listed on a task page."""
    rows = re.findall(r'data-row="(\d+)">.*?<td class="reason"><code>([^<]*)</code>', html, re.S)
    return {row: reason for row, reason in rows}


def chart_totals(html: str) -> dict[str, int]:
    return {s: int(t) for s, t in re.findall(r'data-series="([A-Z]+)" data-total="(\d+)"', html)}


# -- login and access ---------------------------------------------------------------------------


async def test_every_page_and_action_requires_a_login(dashboard: Dashboard) -> None:
    async with dashboard.client() as client:
        for path in ("/ui", "/ui/tasks", task_path(dashboard.task)):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] in ("/ui/login", "/ui/tasks"), path
        assert (await client.get("/ui/tasks")).headers["location"] == "/ui/login"
        for action in ("retry", "stop", "start"):
            response = await client.post(task_path(dashboard.task, action), data={"all": "1"})
            assert (response.status_code, response.headers["location"]) == (303, "/ui/login"), action
    assert await dashboard.services.ledger.failed_keys(dashboard.task) != []
    assert await task_status(dashboard, dashboard.task) == "SYNCHRONIZING"


async def test_wrong_credentials_are_refused(dashboard: Dashboard) -> None:
    access_key, secret_key = dashboard.keys[PROJECT]
    other_ak, _ = dashboard.keys[OTHER_PROJECT]
    attempts = [
        {"access_key": access_key, "secret_key": secret_key + "x"},
        {"access_key": access_key, "secret_key": dashboard.keys[OTHER_PROJECT][1]},  # another key's secret
        {"access_key": other_ak, "secret_key": secret_key},
        {"access_key": "NOSUCHKEY", "secret_key": secret_key},
        {"access_key": access_key, "secret_key": ""},
        {"password": OPERATOR_PASSWORD + "x"},
        {"password": secret_key},
    ]
    for form in attempts:
        async with dashboard.client() as client:
            response = await login(client, **form)
            assert response.status_code == 401, form
            assert "Wrong credentials." in response.text
            assert SESSION_COOKIE not in response.cookies
            assert (await client.get("/ui/tasks")).status_code == 303
    async with dashboard.client() as client:  # the right key, but without the form's token
        response = await client.post("/ui/login", data={"access_key": access_key, "secret_key": secret_key})
        assert response.status_code == 400
        assert SESSION_COOKIE not in response.cookies


async def test_session_cookie_is_httponly_strict_and_unforgeable(dashboard: Dashboard) -> None:
    access_key, secret_key = dashboard.keys[PROJECT]
    async with dashboard.client() as client:
        response = await login(client, access_key=access_key, secret_key=secret_key)
        assert response.status_code == 303
        header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
        assert "HttpOnly" in header and "SameSite=strict" in header.replace("Strict", "strict")
        assert "Path=/ui" in header
        cookie = client.cookies[SESSION_COOKIE]
        assert secret_key not in cookie
    body, signature = cookie.split(".")
    forged_operator = SessionSigner(b"a guessed key").issue(project_id=None, access_key=None, operator=True,
                                                           password_fingerprint="x")[1]
    for value in (f"{body}.{signature[:-2]}AA", f"{body[:-2]}xx.{signature}", forged_operator, "garbage"):
        async with dashboard.client() as client:
            client.cookies.set(SESSION_COOKIE, value, domain="dashboard.test", path="/ui")
            assert (await client.get("/ui/tasks")).status_code == 303, value


async def test_revoking_the_key_ends_its_sessions(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, _):
        assert await dashboard.services.keys.revoke_key(dashboard.keys[PROJECT][0])
        response = await client.get("/ui/tasks")
        assert (response.status_code, response.headers["location"]) == (303, "/ui/login")


async def test_a_project_sees_only_its_own_tasks(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, csrf):
        listing = (await client.get("/ui/tasks")).text
        assert dashboard.task in listing
        assert dashboard.other_task not in listing
        assert OTHER_PROJECT not in listing
        assert (await client.get(task_path(dashboard.other_task))).status_code == 404
        for action in ("stop", "retry"):
            response = await client.post(task_path(dashboard.other_task, action), data={"csrf": csrf, "all": "1"})
            assert response.status_code == 404, action
    assert await task_status(dashboard, dashboard.other_task) == "SYNCHRONIZING"


async def test_the_operator_sees_every_project(dashboard: Dashboard) -> None:
    async with logged_in(dashboard, project=None) as (client, _):
        listing = (await client.get("/ui/tasks")).text
        assert dashboard.task in listing and dashboard.other_task in listing
        assert PROJECT in listing and OTHER_PROJECT in listing
        page = await client.get(task_path(dashboard.other_task))
        assert page.status_code == 200
        assert "operator (all projects)" in page.text


async def test_no_secret_appears_on_any_page(dashboard: Dashboard) -> None:
    secrets = dashboard.secrets()
    pages: list[str] = []
    async with dashboard.client() as anonymous:
        pages.append((await anonymous.get("/ui/login")).text)
        pages.append((await login(anonymous, access_key=dashboard.keys[PROJECT][0], secret_key="wrong")).text)
    for project in (PROJECT, None):
        async with logged_in(dashboard, project) as (client, _):
            for path in ("/ui/tasks", task_path(dashboard.task), task_path(dashboard.task) + "?hours=24",
                         task_path(dashboard.other_task), "/ui/tasks?status=SYNCHRONIZING"):
                response = await client.get(path)
                pages.append(response.text)
                assert response.headers["content-security-policy"].startswith("default-src 'none'")
                assert response.headers["cache-control"] == "no-store"
    for html in pages:
        text = unescape(html)
        for secret in secrets:
            assert secret not in text
    task_page = unescape(pages[3])
    assert "404 for key; signed by *** with ***" in task_page  # a message quoting credentials is redacted


# -- the task page ------------------------------------------------------------------------------


async def test_task_page_shows_counters_charts_backlog_and_failures(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, _):
        listing = (await client.get("/ui/tasks")).text
        row = re.search(rf'<tr data-task-id="{dashboard.task}">(.*?)</tr>', listing, re.S)
        assert row is not None
        cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row.group(1))
        assert cells == ["2", "7", "2", "2", "1", "3.0 KiB"]  # backlog, then this month's counters
        html = (await client.get(task_path(dashboard.task))).text
    assert chart_totals(html) == {"REQUEST": 7, "SUCCESS": 2, "FAILURE": 2, "SKIP": 1, "SIZE": 3048}
    heights = [float(h) for h in re.findall(r'<rect class="bar" [^>]*height="([\d.]+)"', html)]
    assert len(heights) == 5 and all(h > 0 for h in heights)
    assert re.search(r'id="pending-keys">2<', html)
    assert 'id="month-request">7<' in html and 'id="month-size">3.0 KiB<' in html
    # four final outcomes in the window: percentiles from the ledger's latency histogram
    assert re.search(r'id="latency">p50 [^<]+ · p90 [^<]+ · p99 [^<]+<', html), html
    reasons = sorted(failed_rows(html).values())
    assert reasons == ["access_denied", "source_not_found"]
    # Keys are text, never markup; control characters are shown, not swallowed.
    assert "<b>bold</b>" not in html
    assert '&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quoted&#34;<span class="esc">\\x01</span>line' in html
    assert '<span class="esc">\\x0a</span>break' in html


async def test_retry_needs_the_session_csrf_token(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, csrf):
        html = (await client.get(task_path(dashboard.task))).text
        rows = failed_rows(html)
        async with logged_in(dashboard, OTHER_PROJECT) as (_, other_csrf):
            pass
        for form in ({"all": "1"}, {"all": "1", "csrf": ""}, {"all": "1", "csrf": other_csrf},
                     {"row": next(iter(rows)), "csrf": csrf[:-1]}):
            response = await client.post(task_path(dashboard.task, "retry"), data=form)
            assert response.status_code == 403, form
        response = await client.post(task_path(dashboard.task, "retry"), content=f"all=1&csrf={csrf}".encode(),
                                     headers={"content-type": "text/plain"})
        assert response.status_code == 403
    assert len(await dashboard.services.ledger.failed_keys(dashboard.task)) == 2


async def test_retry_one_key_redrives_exactly_that_key(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, csrf):
        html = (await client.get(task_path(dashboard.task))).text
        row = next(r for r, reason in failed_rows(html).items() if reason == "access_denied")
        response = await client.post(task_path(dashboard.task, "retry"), data={"row": row, "csrf": csrf})
        assert response.status_code == 303
        assert response.headers["location"] == task_path(dashboard.task) + "?retried=1"
        after = (await client.get(response.headers["location"])).text
        assert "1 failed key(s) re-driven" in after
        assert list(failed_rows(after).values()) == ["source_not_found"]
        # A row that is no longer failed, or of no failed key, re-drives nothing.
        again = await client.post(task_path(dashboard.task, "retry"), data={"row": row, "csrf": csrf})
        assert again.headers["location"].endswith("?retried=0")
    assert await ledger_state(dashboard, AWKWARD_KEY) == "pending"  # the exact bytes of the key
    assert await ledger_state(dashboard, "gone/missing.txt") == "failed"
    assert (await dashboard.services.ledger.totals(dashboard.task))["request"] == 8


async def test_retry_all(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, csrf):
        response = await client.post(task_path(dashboard.task, "retry"), data={"all": "1", "csrf": csrf})
        assert response.headers["location"].endswith("?retried=2")
        html = (await client.get(task_path(dashboard.task))).text
    assert 'id="no-failures"' in html
    assert re.search(r'id="pending-keys">4<', html)


async def test_stop_and_start_keep_the_stored_credentials(dashboard: Dashboard) -> None:
    before = await dashboard.services.tasks.spec(dashboard.task)
    async with logged_in(dashboard) as (client, csrf):
        response = await client.post(task_path(dashboard.task, "stop"), data={"csrf": csrf})
        assert response.headers["location"].endswith("?msg=stopped")
        assert await task_status(dashboard, dashboard.task) == "STOPPED"
        page = (await client.get(task_path(dashboard.task))).text
        assert 'id="start-task"' in page and 'id="stop-task"' not in page
        again = await client.post(task_path(dashboard.task, "stop"), data={"csrf": csrf})
        assert again.headers["location"].endswith("?msg=conflict")
        response = await client.post(task_path(dashboard.task, "start"), data={"csrf": csrf})
        assert response.headers["location"].endswith("?msg=started")
    assert await task_status(dashboard, dashboard.task) == "SYNCHRONIZING"
    after = await dashboard.services.tasks.spec(dashboard.task)
    assert (after.src, after.dst) == (before.src, before.dst)
    assert after.src.access_key == dashboard.credentials[dashboard.task]["src_ak"]


async def test_logout_ends_the_session(dashboard: Dashboard) -> None:
    async with logged_in(dashboard) as (client, csrf):
        assert (await client.post("/ui/logout", data={"csrf": "nope"})).status_code == 403
        response = await client.post("/ui/logout", data={"csrf": csrf})
        assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
        assert SESSION_COOKIE not in client.cookies
        assert (await client.get("/ui/tasks")).status_code == 303


async def test_static_files_are_served_and_nothing_else() -> None:
    import omsync.web

    root = Path(omsync.web.__file__).parent
    for template in (root / "templates").glob("*.html"):
        text = template.read_text()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    from omsync.web.routes import static

    css = await static("style.css")
    assert css.status_code == 200 and css.body.startswith(b"/*")
    for name in ("../routes.py", "routes.py", "", "..%2Froutes.py"):
        assert (await static(name)).status_code == 404


# -- pieces ---------------------------------------------------------------------------------------


def test_chart_layout() -> None:
    first, end = window(now_ms := 1_700_000_123_456, 6)
    assert (end - first) // 300_000 == 71  # 72 buckets, the current one included
    chart = build_chart("REQUEST", "Requests", [(first, 1), (first + 300_000 * 10, 5000), (first - 300_000, 9)],
                        first, now_ms)
    assert [b.value for b in chart.bars] == [1, 5000]
    assert chart.bars[0].height >= 1 and chart.bars[1].height > chart.bars[0].height
    assert chart.total == 5001 and len(chart.ticks) == 6
    assert build_chart("SIZE", "Bytes", [], first, now_ms, as_bytes=True).bars == []


def test_latency_percentiles_from_a_histogram() -> None:
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    assert histogram_percentile(counts, 0.5) is None
    counts[0], counts[3], counts[-1] = 50, 45, 5
    assert histogram_percentile(counts, 0.5) == 100
    assert histogram_percentile(counts, 0.9) == 1000
    assert histogram_percentile(counts, 0.99) == -1


def test_keys_are_shown_escaped_with_visible_control_characters() -> None:
    assert str(_show_key("a<b>&\"")) == "a&lt;b&gt;&amp;&#34;"
    assert str(_show_key("x\ty\u200bz")) == 'x<span class="esc">\\x09</span>y<span class="esc">\\u200b</span>z'


# -- a real browser ------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; the test command installs it
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MISSING = "reports/2024 Q3 summary.csv"


@pytest.fixture(scope="module")
def live(moto_s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real ``omsync serve`` with workers, a project key and a task that copied real objects
    between two moto buckets: five keys copied, one failed because its source is missing."""
    endpoint = moto_s3.endpoint_url + "#moto"
    server = OmsyncServer(
        data_dir=tmp_path_factory.mktemp("web-live") / "data", workers=4,
        env={"OMSYNC_ENDPOINTS": json.dumps({"Aliyun:cn-hangzhou": endpoint, "HuaweiCloud:cn-north-4": endpoint}),
             "OMSYNC_RETRY_BASE_SECONDS": "0.05", "OMSYNC_RETRY_MAX_SECONDS": "0.2"},
    ).start()
    try:
        key = server.create_key(PROJECT)
        client = sdk_client(server.url, key["access_key"], key["secret_key"], PROJECT)
        src, dst = moto_s3.make_bucket("web-live-src"), moto_s3.make_bucket("web-live-dst")
        present = [f"photos/{i:02d} holiday.jpg" for i in range(5)]
        for name in present:
            moto_s3.client().put_object(Bucket=src, Key=name, Body=name.encode() * 200)
        creds = task_credentials("live")
        task_id = client.create_sync_task(CreateSyncTaskRequest(body=CreateSyncTaskReq(
            src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, dst_region="cn-north-4",
            dst_bucket=dst, **creds))).sync_task_id
        client.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id, body=SyncObjectReq(
            object_keys=[encode_key_for_event(k) for k in [*present, MISSING]])))
        deadline = time.monotonic() + 30
        while True:
            task = client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=int(time.time() * 1000)))
            if (task.monthly_success_object, task.monthly_failure_object) == (5, 1):
                break
            assert time.monotonic() < deadline, f"not settled: {task}\n{server.log()[-3000:]}"
            time.sleep(0.1)
        yield {"server": server, "key": key, "task_id": task_id, "src": src, "dst": dst, "creds": creds}
    finally:
        server.stop()


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: `apt-get install -y chromium` provides it")
def test_dashboard_in_a_browser(live: dict[str, Any], moto_s3: S3Server) -> None:
    from playwright.sync_api import sync_playwright

    server: OmsyncServer = live["server"]
    task_id: str = live["task_id"]
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(15_000)
            # Blocked resources and script errors (a CSP violation among them) show up here.
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))

            page.goto(f"{server.url}/ui/tasks/{task_id}")
            page.wait_for_url("**/ui/login")
            page.fill("#access_key", live["key"]["access_key"])
            page.fill("#secret_key", live["key"]["secret_key"])
            page.click("#login-submit")
            page.wait_for_url("**/ui/tasks")
            row = page.locator(f'tr[data-task-id="{task_id}"]')
            assert "SYNCHRONIZING" in row.inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-tasks.png"), full_page=True)

            row.locator("a.task-link").click()
            page.wait_for_url(f"**/ui/tasks/{task_id}")
            assert page.inner_text("#month-success") == "5"
            for series, total in (("REQUEST", 6), ("SUCCESS", 5), ("FAILURE", 1)):
                chart = page.locator(f'svg[data-series="{series}"]')
                assert chart.get_attribute("data-total") == str(total)
                bar = chart.locator("rect.bar").first
                box = bar.bounding_box()
                assert box is not None and box["height"] > 0 and box["width"] > 0, series
                assert int(bar.get_attribute("data-v") or 0) > 0
            assert page.locator('svg[data-series="SIZE"] rect.bar').count() >= 1
            # The stylesheet applied: bars are filled with the dashboard's colours, not black.
            fill = page.locator('svg[data-series="SUCCESS"] rect.bar').first.evaluate("e => getComputedStyle(e).fill")
            assert fill not in ("rgb(0, 0, 0)", ""), fill

            failed = page.locator("tr.failed-key", has_text=MISSING)
            assert failed.locator("td.reason").inner_text() == "source_not_found"
            assert page.locator("tr.failed-key").count() == 1
            page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"), full_page=True)

            moto_s3.client().put_object(Bucket=live["src"], Key=MISSING, Body=b"now it exists")
            failed.locator("button.retry").click()
            page.wait_for_url("**retried=1")
            assert "1 failed key(s) re-driven" in page.inner_text("#notice")
            deadline = time.monotonic() + 30
            while page.inner_text("#month-success") != "6":
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.3)
                page.goto(f"{server.url}/ui/tasks/{task_id}")
            assert page.locator("#no-failures").is_visible()
            assert page.locator("tr.failed-key").count() == 0
            assert page.locator('svg[data-series="REQUEST"]').get_attribute("data-total") == "7"
            html = page.content()
            for secret in [*live["creds"].values(), live["key"]["secret_key"]]:
                assert secret not in html
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    got = moto_s3.client().get_object(Bucket=live["dst"], Key=MISSING)["Body"].read()
    assert got == b"now it exists"
