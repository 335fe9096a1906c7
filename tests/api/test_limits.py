"""The per-task limits extension (``GET``/``PUT .../sync-tasks/{id}/limits``) over raw signed HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api.conftest import OTHER_PROJECT, PROJECT, create_task
from tests.api.test_raw_http import assert_oms_error
from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request

UNLIMITED = {"max_concurrency": None, "max_objects_per_second": None, "max_bytes_per_second": None}


@pytest.fixture()
def call(api_server: OmsyncServer, keys: dict[str, dict[str, Any]]) -> Any:
    def _call(method: str, task_id: str, body: Any = None, *, raw: bytes | None = None,
              project: str = PROJECT, key: str = "main") -> httpx.Response:
        k = keys[key]
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        response = signed_request(api_server.url, method, f"/v2/{project}/sync-tasks/{task_id}/limits",
                                  ak=k["access_key"], sk=k["secret_key"], project_id=project, body=data)
        assert response.headers.get("x-request-id")
        assert response.status_code < 500, response.text
        return response
    return _call


def test_limits_start_unlimited_and_are_replaced_by_put(call: Any, client: Any) -> None:
    task_id = create_task(client)
    shown = call("GET", task_id)
    assert shown.status_code == 200, shown.text
    assert shown.json() == {"sync_task_id": task_id, **UNLIMITED}

    wanted = {"max_concurrency": 4, "max_objects_per_second": 2.5, "max_bytes_per_second": 10 * 1024 * 1024}
    put = call("PUT", task_id, wanted)
    assert put.status_code == 200, put.text
    assert put.json() == {"sync_task_id": task_id, **wanted}
    assert call("GET", task_id).json() == {"sync_task_id": task_id, **wanted}

    # The body is the complete set: an omitted field is unlimited, null too; integers are fine as rates.
    assert call("PUT", task_id, {"max_objects_per_second": 100}).json() == {
        "sync_task_id": task_id, **UNLIMITED, "max_objects_per_second": 100.0}
    assert call("PUT", task_id, {"max_concurrency": None}).json() == {"sync_task_id": task_id, **UNLIMITED}
    assert call("GET", task_id).json() == {"sync_task_id": task_id, **UNLIMITED}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrency", 0), ("max_concurrency", -1), ("max_concurrency", "4"), ("max_concurrency", 1.5),
        ("max_concurrency", True), ("max_concurrency", 100_001),
        ("max_objects_per_second", 0), ("max_objects_per_second", -2.5), ("max_objects_per_second", "10"),
        ("max_objects_per_second", False), ("max_objects_per_second", 1e7),
        ("max_bytes_per_second", 1023), ("max_bytes_per_second", 2048.5), ("max_bytes_per_second", "1M"),
        ("max_bytes_per_second", 10**16),
        ("max_concurency", 4),  # misspelt: refused rather than silently unlimited
    ],
)
def test_invalid_limits_name_the_field(call: Any, client: Any, field: str, value: Any) -> None:
    task_id = create_task(client)
    assert call("PUT", task_id, {"max_concurrency": 2}).status_code == 200
    assert_oms_error(call("PUT", task_id, {field: value}), 400, "OMS.0064", field)
    assert call("GET", task_id).json()["max_concurrency"] == 2  # nothing changed


def test_malformed_bodies(call: Any, client: Any) -> None:
    task_id = create_task(client)
    assert_oms_error(call("PUT", task_id, raw=b""), 400, "OMS.0064", "body")
    assert_oms_error(call("PUT", task_id, raw=b"[4]"), 400, "OMS.0064", "body")
    assert_oms_error(call("PUT", task_id, raw=b'{"max_concurrency": '), 400, "OMS.0064", "body")
    assert_oms_error(call("PUT", task_id, raw=b'{"max_objects_per_second": NaN}'), 400, "OMS.0064",
                     "max_objects_per_second")


def test_unknown_task_other_project_and_no_signature(
    call: Any, client: Any, api_server: OmsyncServer
) -> None:
    assert_oms_error(call("GET", "no-such-task"), 404, "OMS.1009")
    assert_oms_error(call("PUT", "no-such-task", {"max_concurrency": 1}), 404, "OMS.1009")
    task_id = create_task(client)
    # Another project's key cannot see or change the task, neither on its own path nor on ours.
    assert_oms_error(call("GET", task_id, project=OTHER_PROJECT, key="other"), 404, "OMS.1009")
    assert_oms_error(call("PUT", task_id, {"max_concurrency": 1}, project=OTHER_PROJECT, key="other"), 404,
                     "OMS.1009")
    assert_oms_error(call("PUT", task_id, {"max_concurrency": 1}, key="other"), 403, "APIGW.0302")
    unsigned = httpx.put(f"{api_server.url}/v2/{PROJECT}/sync-tasks/{task_id}/limits", json={"max_concurrency": 1})
    assert_oms_error(unsigned, 401, "APIGW.0301")
    assert call("GET", task_id).json() == {"sync_task_id": task_id, **UNLIMITED}
