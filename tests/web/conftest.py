"""Fixtures of the dashboard tests: the real app over a real SQLite ledger, logged-in clients."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from omsync.app import create_app
from omsync.config import Settings
from omsync.domain.model import Outcome, OutcomeKind
from omsync.services import Services

PROJECT = "web0123456789abcdef0123456789ab"
OTHER_PROJECT = "webfedcba9876543210fedcba98765"
OPERATOR_PASSWORD = "operator-pass-9f2c41d7"
AWKWARD_KEY = "<b>bold</b> & \"quoted\"\x01line\nbreak"


class DashboardSettings(Settings):
    """Settings with the operator password field the dashboard reads."""

    dashboard_password: SecretStr | None = None


def task_credentials(tag: str) -> dict[str, str]:
    """Distinctive credentials, so a page quoting any of them is caught."""
    return {name: f"{tag}-{name}-c7e1b2a9d4" for name in ("src_ak", "src_sk", "dst_ak", "dst_sk")}


def task_fields(src: str, dst: str) -> dict[str, object]:
    return {
        "src_cloud_type": "Aliyun", "src_region": "cn-hangzhou", "src_bucket": src,
        "dst_cloud_type": "HuaweiCloud", "dst_region": "cn-north-4", "dst_bucket": dst,
        "description": None, "enable_metadata_migration": False, "enable_restore": False, "enable_kms": False,
        "dst_storage_policy": None, "app_id": None, "source_cdn": None, "options": "{}",
        "consistency_check": "size_last_modified", "object_overwrite_mode": "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE",
    }


@dataclass
class Dashboard:
    """An app with two projects, one task each; the first task has real ledger traffic."""

    services: Services
    app: object
    keys: dict[str, tuple[str, str]]  # project -> (access key, secret key)
    task: str
    other_task: str
    credentials: dict[str, dict[str, str]]  # task id -> its credentials

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
                                 base_url="http://dashboard.test", follow_redirects=False)

    def secrets(self) -> list[str]:
        """Every string that must never appear on a page."""
        found = [OPERATOR_PASSWORD, self.services.settings.master_key.get_secret_value()]  # type: ignore[union-attr]
        found += [sk for _, sk in self.keys.values()]
        for creds in self.credentials.values():
            found += list(creds.values())
        return found


async def record(services: Services, task_id: str, outcomes: dict[str, Outcome]) -> None:
    """Accept one event per key and give each the outcome named, through the real ledger."""
    await services.ledger.accept(task_id, list(outcomes))
    claims = await services.ledger.claim("web-test", limit=len(outcomes), lease_seconds=60)
    assert {c.key for c in claims} == set(outcomes)
    for claim in claims:
        assert (await services.ledger.finish("web-test", claim, outcomes[claim.key])).recorded


@pytest.fixture()
async def dashboard(tmp_path: Path) -> AsyncIterator[Dashboard]:
    from cryptography.fernet import Fernet

    settings = DashboardSettings(data_dir=tmp_path, dashboard_password=SecretStr(OPERATOR_PASSWORD),
                                 master_key=SecretStr(Fernet.generate_key().decode()))
    services = await Services.open(settings)
    try:
        keys = {PROJECT: await services.keys.create_key(PROJECT),
                OTHER_PROJECT: await services.keys.create_key(OTHER_PROJECT)}
        main_creds, other_creds = task_credentials("main"), task_credentials("other")
        task = await services.tasks.create(PROJECT, task_fields("src-main", "dst-main"), main_creds)
        other = await services.tasks.create(OTHER_PROJECT, task_fields("src-other", "dst-other"), other_creds)
        await record(services, task, {
            "photos/a.jpg": Outcome(OutcomeKind.SUCCESS, size=1000),
            "photos/b.jpg": Outcome(OutcomeKind.SUCCESS, size=2048),
            "photos/c.jpg": Outcome(OutcomeKind.SKIP, reason="not_modified"),
            "gone/missing.txt": Outcome(OutcomeKind.FAILURE, reason="source_not_found",
                                        message=f"404 for key; signed by {main_creds['src_ak']} with {main_creds['src_sk']}"),
            AWKWARD_KEY: Outcome(OutcomeKind.FAILURE, reason="access_denied", message="403"),
        })
        await services.ledger.accept(task, ["waiting/one", "waiting/two"])  # a backlog of 2 keys
        yield Dashboard(services=services, app=create_app(settings, services), keys=keys, task=task,
                        other_task=other, credentials={task: main_creds, other: other_creds})
    finally:
        await services.close()


LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def login(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    """Load the login form (for its token and cookie), then post ``form``."""
    page = await client.get("/ui/login")
    assert page.status_code == 200
    match = LOGIN_TOKEN.search(page.text)
    assert match is not None
    return await client.post("/ui/login", data={"login_token": match.group(1), **form})


@contextlib.asynccontextmanager
async def logged_in(dashboard: Dashboard, project: str | None = PROJECT) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client with a session (of ``project``, or the operator's when None) and its CSRF token."""
    async with dashboard.client() as client:
        yield client, await _log_in(client, dashboard, project)


async def _log_in(client: httpx.AsyncClient, dashboard: Dashboard, project: str | None) -> str:
    if project is None:
        response = await login(client, password=OPERATOR_PASSWORD)
    else:
        access_key, secret_key = dashboard.keys[project]
        response = await login(client, access_key=access_key, secret_key=secret_key)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/tasks"
    tasks = await client.get("/ui/tasks")
    assert tasks.status_code == 200
    match = CSRF.search(tasks.text)
    assert match is not None
    return match.group(1)
