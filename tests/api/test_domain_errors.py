"""Refusals of the domain answered by the API's one mapping (``api.errors.domain_error``): the
task cap (400 OMSYNC.0410) and the backlog bound (503 OMSYNC.0503 with ``Retry-After``), on a
server of their own with both bounds set low; exact bodies, over raw signed HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import PROJECT, create_task
from tests.omsync_server import OmsyncServer, sdk_client
from tests.rawhttp import signed_request

ENDPOINTS = {"HuaweiCloud:cn-north-4": "http://127.0.0.1:9", "Aliyun:cn-hangzhou": "http://127.0.0.1:9"}


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OmsyncServer, dict[str, Any]]]:
    root: Path = tmp_path_factory.mktemp("bounded")
    server = OmsyncServer(data_dir=root / "data", env={
        "OMSYNC_ENDPOINTS": json.dumps(ENDPOINTS), "OMSYNC_CHECK_BUCKETS_ON_CREATE": "false",
        "OMSYNC_MAX_TASKS_PER_PROJECT": "1", "OMSYNC_MAX_PENDING_PER_TASK": "2"})
    server.start()
    try:
        yield server, server.create_key(PROJECT)
    finally:
        server.stop()


def _call(server: OmsyncServer, key: dict[str, Any], method: str, path: str, body: Any) -> httpx.Response:
    return signed_request(server.url, method, f"/v2/{PROJECT}/sync-tasks{path}", ak=key["access_key"],
                          sk=key["secret_key"], project_id=PROJECT, body=json.dumps(body).encode())


def test_task_cap_and_backlog_bound_answer_their_oms_bodies(bounded: tuple[OmsyncServer, dict[str, Any]]) -> None:
    server, key = bounded
    task_id = create_task(sdk_client(server.url, key["access_key"], key["secret_key"], PROJECT))

    capped = _call(server, key, "POST", "", {
        "src_cloud_type": "Aliyun", "src_region": "cn-hangzhou", "src_bucket": "src-bkt", "src_ak": "a", "src_sk": "b",
        "dst_region": "cn-north-4", "dst_bucket": "dst-bkt", "dst_ak": "c", "dst_sk": "d"})
    assert capped.status_code == 400, capped.text
    body = capped.json()
    assert (body["error_code"], body["error_msg"]) == ("OMSYNC.0410", "The project already owns 1 sync tasks.")
    assert capped.headers["x-request-id"] == body["request_id"]

    # Workers are off: the keys stay pending, and the third distinct key finds the bound reached.
    accepted = _call(server, key, "POST", f"/{task_id}/events", {"object_keys": ["a", "b"]})
    assert accepted.status_code == 200, accepted.text
    full = _call(server, key, "POST", f"/{task_id}/events", {"object_keys": ["c"]})
    assert full.status_code == 503, full.text
    assert full.headers["retry-after"] == "5"
    body = full.json()
    assert (body["error_code"], body["error_msg"]) == ("OMSYNC.0503", "The task has 2 keys pending; retry later.")
    scraped = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'omsync_throttled_total{{cause="backlog",task_id="{task_id}"}} 1.0' in scraped

    # An unknown task: 404 on events, 400 on Stop (its OMS page lists only 400/403); same code.
    for method, path, status in (("POST", "/nope/events", 404), ("POST", "/nope/stop", 400)):
        missing = _call(server, key, method, path, {"object_keys": ["k"]} if path.endswith("events") else {})
        assert missing.status_code == status, missing.text
        assert (missing.json()["error_code"], missing.json()["error_msg"]) == ("OMS.1009", "sync task nope not found")
