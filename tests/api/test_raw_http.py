"""Input the SDK cannot send: malformed bodies, wrong types, bad signatures, huge bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import OTHER_PROJECT, PROJECT, create_task
from tests.omsync_server import OmsyncServer, omsync_cli
from tests.rawhttp import signed_request

GOOD_TASK = {
    "src_cloud_type": "Aliyun", "src_region": "cn-hangzhou", "src_bucket": "src-s", "src_ak": "a", "src_sk": "b",
    "dst_ak": "c", "dst_sk": "d", "dst_region": "cn-north-4", "dst_bucket": "dst-t",
}


@pytest.fixture()
def send(api_server: OmsyncServer, keys: dict[str, dict[str, Any]]) -> Any:
    def _send(method: str, path: str, body: bytes = b"", **kwargs: Any) -> httpx.Response:
        k = keys["main"]
        response = signed_request(api_server.url, method, path, ak=k["access_key"], sk=k["secret_key"],
                                  project_id=PROJECT, body=body, **kwargs)
        assert response.headers.get("x-request-id"), "every response carries X-Request-Id"
        assert response.status_code < 500, response.text
        assert "Traceback" not in response.text
        return response
    return _send


def assert_oms_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error_code"] == code, body
    assert body["error_msg"]
    if field is not None:
        assert f"[{field}]" in body["error_detail"], body
    return body


TASKS = f"/v2/{PROJECT}/sync-tasks"


def test_malformed_json(send: Any) -> None:
    assert_oms_error(send("POST", TASKS, b'{"src_region": '), 400, "OMS.0064", "body")
    assert_oms_error(send("POST", TASKS, b"\xff\xfe not json"), 400, "OMS.0064", "body")
    assert_oms_error(send("POST", TASKS, b"[1, 2]"), 400, "OMS.0064", "body")
    assert_oms_error(send("POST", TASKS, b""), 400, "OMS.0064", "body")


@pytest.mark.parametrize(
    ("field", "value"),
    [("enable_metadata_migration", "yes"), ("src_region", 5), ("src_bucket", None), ("enable_restore", "false"),
     ("src_bucket", "b" * 1025), ("description", "d" * 256), ("src_ak", ""), ("dst_region", "r" * 101),
     ("consistency_check", 3)],
)
def test_wrong_types_and_limits_name_the_field(send: Any, field: str, value: Any) -> None:
    body = {**GOOD_TASK, field: value}
    assert_oms_error(send("POST", TASKS, json.dumps(body).encode()), 400, "OMS.0064", field)


@pytest.mark.parametrize("field", ["src_region", "src_bucket", "src_ak", "src_sk", "dst_ak", "dst_sk",
                                   "dst_region", "dst_bucket"])
def test_missing_required_field(send: Any, field: str) -> None:
    body = {k: v for k, v in GOOD_TASK.items() if k != field}
    assert_oms_error(send("POST", TASKS, json.dumps(body).encode()), 400, "OMS.0064", field)


def test_event_key_too_long_and_wrong_type(send: Any, client: Any) -> None:
    task_id = create_task(client)
    path = f"{TASKS}/{task_id}/events"
    assert_oms_error(send("POST", path, json.dumps({"object_keys": ["k" * 16385]}).encode()), 400, "OMS.0064",
                     "object_keys.0")
    assert_oms_error(send("POST", path, json.dumps({"object_keys": "k"}).encode()), 400, "OMS.0064", "object_keys")
    assert_oms_error(send("POST", path, json.dumps({"object_keys": [1]}).encode()), 400, "OMS.0064", "object_keys.0")
    # a key that decodes to more than 1,024 bytes is no S3 key
    assert_oms_error(send("POST", path, json.dumps({"object_keys": ["%C3%A9" * 513]}).encode()), 400,
                     "OMS.0064", "object_keys[0]")
    assert send("POST", path, json.dumps({"object_keys": ["k" * 1024]}).encode()).status_code == 200


def test_huge_body_is_413(send: Any) -> None:
    response = send("POST", TASKS, b'{"x": "' + b"a" * (13 * 1024 * 1024) + b'"}')
    assert_oms_error(response, 413, "APIGW.0201")


def test_unknown_route_and_method(send: Any) -> None:
    assert_oms_error(send("GET", f"/v2/{PROJECT}/nothing-here"), 404, "APIGW.0101")
    assert_oms_error(send("PUT", TASKS), 405, "APIGW.0101")


def test_missing_signature_is_401(api_server: OmsyncServer) -> None:
    response = httpx.get(api_server.url + TASKS)
    assert_oms_error(response, 401, "APIGW.0301")
    assert response.headers["x-request-id"]


def test_tampered_body_is_401(api_server: OmsyncServer, keys: dict[str, dict[str, Any]]) -> None:
    k = keys["main"]
    body = json.dumps(GOOD_TASK).encode()
    signed = signed_request(api_server.url, "POST", TASKS, ak=k["access_key"], sk=k["secret_key"],
                            project_id=PROJECT, body=body)
    assert signed.status_code == 200
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    request = SdkRequest(method="POST", schema="http", host=api_server.url.split("//")[1], resource_path=TASKS,
                         query_params=[], header_params={"Content-Type": "application/json", "X-Project-Id": PROJECT},
                         body=body)
    Signer(BasicCredentials(k["access_key"], k["secret_key"], PROJECT)).sign(request)
    tampered = body.replace(b'"dst-t"', b'"dst-u"')
    response = httpx.post(api_server.url + TASKS, headers=request.header_params, content=tampered)
    assert_oms_error(response, 401, "APIGW.0301")


@pytest.mark.parametrize("minutes", [-20, 20])
def test_skewed_date_is_401(send: Any, minutes: int) -> None:
    date = (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y%m%dT%H%M%SZ")
    assert_oms_error(send("GET", TASKS, sdk_date=date), 401, "APIGW.0301")


def test_date_within_skew_is_accepted(send: Any) -> None:
    date = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y%m%dT%H%M%SZ")
    assert send("GET", TASKS, sdk_date=date).status_code == 200


def test_other_projects_path_is_403(send: Any) -> None:
    assert_oms_error(send("GET", f"/v2/{OTHER_PROJECT}/sync-tasks"), 403, "APIGW.0302")


def test_unsigned_garbage_authorization_is_401(api_server: OmsyncServer) -> None:
    for header in ("garbage", "SDK-HMAC-SHA256 nothing", "SDK-HMAC-SM3 Access=a, SignedHeaders=host, Signature=00"):
        response = httpx.get(api_server.url + TASKS, headers={"Authorization": header})
        assert_oms_error(response, 401, "APIGW.0301")


def test_query_parameters_with_wrong_types(send: Any, client: Any) -> None:
    assert_oms_error(send("GET", TASKS, query=[("limit", "ten")]), 400, "OMS.0064", "limit")
    assert_oms_error(send("GET", TASKS, query=[("offset", "10001")]), 400, "OMS.0064", "offset")
    assert_oms_error(send("GET", TASKS, query=[("status", "RUNNING")]), 400, "OMS.0064", "status")
    task_id = create_task(client)
    assert_oms_error(send("GET", f"{TASKS}/{task_id}", query=[("query_time", "-5")]), 400, "OMS.0064", "query_time")


def test_auth_token_issued_by_operator(api_server: OmsyncServer) -> None:
    done = omsync_cli(api_server.data_dir, "keys", "token", "--project-id", PROJECT)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    ok = httpx.get(api_server.url + TASKS, headers={"X-Auth-Token": token})
    assert ok.status_code == 200, ok.text
    assert "count" in ok.json()
    assert_oms_error(httpx.get(api_server.url + TASKS, headers={"X-Auth-Token": token + "x"}), 401, "APIGW.0301")
    assert_oms_error(httpx.get(api_server.url + f"/v2/{OTHER_PROJECT}/sync-tasks", headers={"X-Auth-Token": token}),
                     403, "APIGW.0302")


def test_revoked_key_is_refused(api_server: OmsyncServer) -> None:
    k = api_server.create_key(PROJECT)
    assert signed_request(api_server.url, "GET", TASKS, ak=k["access_key"], sk=k["secret_key"],
                          project_id=PROJECT).status_code == 200
    assert omsync_cli(api_server.data_dir, "keys", "revoke", k["access_key"]).returncode == 0
    response = signed_request(api_server.url, "GET", TASKS, ak=k["access_key"], sk=k["secret_key"], project_id=PROJECT)
    assert_oms_error(response, 401, "APIGW.0301")


def test_keys_list_never_shows_secrets(api_server: OmsyncServer, keys: dict[str, dict[str, Any]]) -> None:
    done = omsync_cli(api_server.data_dir, "keys", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert keys["main"]["access_key"] in {k["access_key"] for k in listed}
    assert keys["main"]["secret_key"] not in done.stdout


def test_versions_are_public_and_health_endpoints(api_server: OmsyncServer) -> None:
    assert httpx.get(api_server.url + "/").json()["versions"][0]["id"] == "v2"
    assert httpx.get(api_server.url + "/v2").json()["id"] == "v2"
    assert httpx.get(api_server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(api_server.url + "/readyz").json() == {"status": "ok"}
