"""Migration-task API behaviour through the official SDK and raw signed HTTP, workers off: what
is stored and shown, status transitions, filters, malformed input, and the sync-task API never
showing a migration task's engine row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkoms.v2 import (
    BandwidthPolicyDto,
    CreateTaskReq,
    CreateTaskRequest,
    DeleteTaskRequest,
    DstNodeReq,
    ListSyncTasksRequest,
    ListTasksRequest,
    ShowSyncTaskRequest,
    ShowTaskRequest,
    SrcNodeReq,
    StartTaskReq,
    StartTaskRequest,
    StopSyncTaskRequest,
    StopTaskRequest,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import PROJECT
from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request


def create(client: Any, **overrides: Any) -> Any:
    fields: dict[str, Any] = dict(
        task_type="prefix",
        src_node=SrcNodeReq(cloud_type="Aliyun", region="cn-hangzhou", ak="SRC-AK", sk="SRC-SK", bucket="src-bkt",
                            object_key=["photos/", ""]),
        dst_node=DstNodeReq(ak="DST-AK", sk="DST-SK", region="cn-north-4", bucket="dst-bkt", save_prefix="copy/"),
    )
    fields.update(overrides)
    return client.create_task(CreateTaskRequest(body=CreateTaskReq(**fields)))


def engine_row(data_dir: Path, task_id: int) -> str:
    database = sqlite3.connect(data_dir / "omsync.db")
    try:
        [(sync_task_id,)] = database.execute("SELECT sync_task_id FROM migration_tasks WHERE id = ?", (task_id,))
    finally:
        database.close()
    return str(sync_task_id)


def raw(server: OmsyncServer, keys: dict[str, Any], method: str, path: str, body: bytes = b"",
        query: list[tuple[str, Any]] | None = None) -> Any:
    key = keys["main"]
    return signed_request(server.url, method, f"/v2/{PROJECT}{path}", ak=key["access_key"], sk=key["secret_key"],
                          project_id=PROJECT, body=body, query=query)


def test_create_and_show_echo_the_fields(client: Any) -> None:
    created = create(client, description="nightly backfill", migrate_since=1_700_000_000,
                     enable_metadata_migration=True, enable_failed_object_recording=False,
                     object_overwrite_mode="NO_OVERWRITE", consistency_check="crc64", dst_storage_policy="IA",
                     bandwidth_policy=[BandwidthPolicyDto(start="22:00", end="06:00", max_bandwidth=5_242_880)])
    task = client.show_task(ShowTaskRequest(task_id=created.id))
    assert task.id == created.id and task.name == created.task_name
    assert (task.task_type, task.status, task.description) == ("prefix", 2, "nightly backfill")
    assert (task.src_node.bucket, task.src_node.cloud_type, task.src_node.region) == ("src-bkt", "Aliyun", "cn-hangzhou")
    assert task.src_node.object_key == ["photos/", ""]
    assert (task.dst_node.bucket, task.dst_node.region, task.dst_node.save_prefix) == ("dst-bkt", "cn-north-4", "copy/")
    assert task.migrate_since == 1_700_000_000
    assert [(w.start, w.end, w.max_bandwidth) for w in task.bandwidth_policy] == [("22:00", "06:00", 5_242_880)]
    assert task.enable_metadata_migration is True and task.enable_failed_object_recording is False
    assert (task.object_overwrite_mode, task.consistency_check, task.dst_storage_policy) == (
        "NO_OVERWRITE", "crc64", "IA")
    assert (task.total_num, task.successful_num, task.progress, task.is_query_over) == (0, 0, 0.0, False)
    assert task.failed_object_record is None and task.error_reason is None
    assert task.start_time > 0


def test_stop_start_delete_transitions(client: Any) -> None:
    task_id = create(client).id
    with pytest.raises(ClientRequestException) as caught:
        client.delete_task(DeleteTaskRequest(task_id=task_id))
    assert (caught.value.status_code, caught.value.error_code) == (400, "OMSYNC.0409")
    client.stop_task(StopTaskRequest(task_id=task_id))
    assert client.show_task(ShowTaskRequest(task_id=task_id)).status == 3  # nothing in flight: stopped at once
    with pytest.raises(ClientRequestException) as caught:
        client.stop_task(StopTaskRequest(task_id=task_id))
    assert caught.value.error_code == "OMSYNC.0409"
    client.start_task(StartTaskRequest(task_id=task_id, body=StartTaskReq(
        src_ak="SRC-AK-2", src_sk="SRC-SK-2", dst_ak="DST-AK-2", dst_sk="DST-SK-2")))
    assert client.show_task(ShowTaskRequest(task_id=task_id)).status == 2
    client.stop_task(StopTaskRequest(task_id=task_id))
    client.delete_task(DeleteTaskRequest(task_id=task_id))
    with pytest.raises(ClientRequestException) as caught:
        client.show_task(ShowTaskRequest(task_id=task_id))
    assert (caught.value.status_code, caught.value.error_code) == (404, "OMS.1009")


def test_list_filters_and_pages(client: Any) -> None:
    ids = [create(client).id for _ in range(3)]
    client.stop_task(StopTaskRequest(task_id=ids[0]))
    stopped = client.list_tasks(ListTasksRequest(status=3, limit=100))
    assert ids[0] in {t.id for t in stopped.tasks} and all(t.status == 3 for t in stopped.tasks)
    page = client.list_tasks(ListTasksRequest(limit=2, offset=0))
    assert len(page.tasks) == 2 and page.count >= 3
    assert [t.id for t in page.tasks] == sorted((t.id for t in page.tasks), reverse=True)  # newest first
    assert client.list_tasks(ListTasksRequest(group_id="no-such-group")).count == 0
    name = client.show_task(ShowTaskRequest(task_id=ids[1])).name
    named = client.list_tasks(ListTasksRequest(task_name=name))
    assert [t.id for t in named.tasks] == [ids[1]]


def test_the_sync_task_api_never_shows_a_migration_task(client: Any, data_dir: Path, api_server: OmsyncServer,
                                                         keys: dict[str, Any]) -> None:
    task_id = create(client).id
    hidden = engine_row(data_dir, task_id)
    listed = client.list_sync_tasks(ListSyncTasksRequest(limit=100))
    assert hidden not in {t.sync_task_id for t in listed.tasks}
    with pytest.raises(ClientRequestException) as caught:
        client.show_sync_task(ShowSyncTaskRequest(sync_task_id=hidden, query_time="1700000000000"))
    assert caught.value.status_code == 404
    with pytest.raises(ClientRequestException) as caught:
        client.stop_sync_task(StopSyncTaskRequest(sync_task_id=hidden))
    assert (caught.value.status_code, caught.value.error_code) == (400, "OMS.1009")
    assert raw(api_server, keys, "GET", f"/sync-tasks/{hidden}/limits").status_code == 404
    assert raw(api_server, keys, "GET", f"/sync-tasks/{hidden}/failed-objects").status_code == 404
    # Nothing can be posted to it either: events, notifications, reconciliations.
    for path, body in ((f"/sync-tasks/{hidden}/events", b'{"object_keys": ["photos/a"]}'),
                       (f"/sync-tasks/{hidden}/notifications", b'{"Records": []}'),
                       (f"/sync-tasks/{hidden}/reconciliations", b"{}")):
        answer = raw(api_server, keys, "POST", path, body)
        assert (answer.status_code, answer.json()["error_code"]) == (404, "OMS.1009"), (path, answer.text)


def test_other_project_cannot_see_or_change_it(client: Any, other_client: Any) -> None:
    task_id = create(client).id
    with pytest.raises(ClientRequestException) as caught:
        other_client.show_task(ShowTaskRequest(task_id=task_id))
    assert caught.value.status_code == 404
    with pytest.raises(ClientRequestException) as caught:
        other_client.stop_task(StopTaskRequest(task_id=task_id))
    assert caught.value.status_code == 400
    assert task_id not in {t.id for t in other_client.list_tasks(ListTasksRequest(limit=100)).tasks}
    assert client.show_task(ShowTaskRequest(task_id=task_id)).status == 2


SRC: dict[str, Any] = {"region": "cn-hangzhou", "ak": "a", "sk": "s", "bucket": "b", "object_key": [""]}
DST: dict[str, Any] = {"region": "cn-north-4", "ak": "a", "sk": "s", "bucket": "d"}
VALID: dict[str, Any] = {"task_type": "prefix", "src_node": SRC, "dst_node": DST}


@pytest.mark.parametrize(("change", "field"), [
    ({"task_type": "bogus"}, "task_type"),
    ({"src_node": None}, "src_node"),
    ({"src_node": {**SRC, "object_key": "not-a-list"}}, "src_node.object_key"),
    ({"src_node": {**SRC, "object_key": [1]}}, "src_node.object_key.0"),
    ({"src_node": {**SRC, "ak": "x" * 101}}, "src_node.ak"),
    ({"src_node": {**SRC, "cloud_type": "Nowhere"}}, "src_node.cloud_type"),
    ({"task_type": "object", "src_node": {**SRC, "object_key": [""]}}, "src_node.object_key[0]"),
    ({"task_type": "list"}, "src_node.list_file"),
    ({"src_node": {**SRC, "list_file": {"list_file_key": "l", "obs_bucket": "b"}}}, "src_node.list_file"),
    ({"migrate_since": -1}, "migrate_since"),
    ({"migrate_since": 2**70}, "migrate_since"),
    ({"bandwidth_policy": [{"start": "25:00", "end": "01:00", "max_bandwidth": 2_000_000}]}, "bandwidth_policy[0]"),
    ({"bandwidth_policy": [{"start": "01:00", "end": "02:00", "max_bandwidth": 2_000_000}] * 6}, "bandwidth_policy"),
    ({"source_cdn": {"domain": "cdn.example.com", "protocol": "https"}}, "source_cdn"),
    ({"enable_restore": True}, "enable_restore"),
    ({"enable_requester_pays": True}, "enable_requester_pays"),
    ({"task_priority": "HIGH"}, "task_priority"),
    ({"src_node": {**SRC, "security_token": "t"}}, "src_node.security_token"),
    ({"dst_node": {**DST, "crypto_type": "KMS"}}, "dst_node.crypto_type"),
    ({"dst_node": {**DST, "region": "nowhere-1"}}, "dst_node.region"),
])
def test_malformed_create_is_refused_naming_the_field(api_server: OmsyncServer, keys: dict[str, Any],
                                                      change: dict[str, Any], field: str) -> None:
    body = {**VALID, **change}
    response = raw(api_server, keys, "POST", "/tasks", json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "OMS.0064"
    assert field in response.json()["error_msg"], response.json()


@pytest.mark.parametrize(("method", "path", "body", "query"), [
    ("POST", "/tasks", b"not json", None),
    ("POST", "/tasks", b"[]", None),
    ("GET", "/tasks", b"", [("limit", "0")]),
    ("GET", "/tasks", b"", [("status", "x")]),
    ("GET", "/tasks/99999999999999999999", b"", None),
    ("POST", "/tasks/1/start", b"{}", None),
    ("POST", "/tasks/1/start", b"{\"src_ak\": 1}", None),
])
def test_malformed_requests_get_400_never_500(api_server: OmsyncServer, keys: dict[str, Any], method: str,
                                              path: str, body: bytes, query: list[tuple[str, Any]] | None) -> None:
    response = raw(api_server, keys, method, path, body, query)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "OMS.0064"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=15), children, max_size=3),
    max_leaves=10,
)
node_fields = st.sampled_from(["cloud_type", "region", "ak", "sk", "bucket", "object_key", "list_file", "save_prefix",
                               "crypto_type", "security_token", "app_id"])
bodies = st.fixed_dictionaries({}, optional={
    "task_type": st.sampled_from(["object", "prefix", "list", "url_list", "x"]) | json_values,
    "src_node": st.dictionaries(node_fields, json_values, max_size=6) | json_values,
    "dst_node": st.dictionaries(node_fields, json_values, max_size=6) | json_values,
    "migrate_since": json_values, "bandwidth_policy": json_values, "description": json_values,
    "object_overwrite_mode": json_values, "consistency_check": json_values, "enable_restore": json_values,
})


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "DELETE"]),
       path=st.sampled_from(["/tasks", "/tasks/{id}", "/tasks/{id}/start", "/tasks/{id}/stop"]),
       task=st.text(min_size=1, max_size=25).filter(lambda t: "/" not in t) | st.integers(0, 2**70).map(str),
       body=bodies,
       query=st.lists(st.tuples(st.sampled_from(["limit", "offset", "status", "group_id", "task_name"]),
                                st.text(max_size=12)), max_size=3))
def test_random_signed_requests_never_500(api_server: OmsyncServer, keys: dict[str, Any], method: str, path: str,
                                          task: str, body: dict[str, Any], query: list[tuple[str, str]]) -> None:
    response = raw(api_server, keys, method, path.replace("{id}", quote(task, safe="")),
                   json.dumps(body).encode(), query)
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        assert response.json()["error_code"] and response.json()["error_msg"]
