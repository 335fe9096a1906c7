"""Every OMS v2 sync-task operation driven by the official SDK against a real ``omsync serve``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkoms.v2 import (
    CreateSyncEventsRequest,
    CreateSyncTaskRequest,
    DeleteSyncTaskRequest,
    ListApiVersionsRequest,
    ListSyncTasksRequest,
    ListSyncTaskStatisticRequest,
    ShowApiInfoRequest,
    ShowSyncTaskRequest,
    StartSyncTaskReq,
    StartSyncTaskRequest,
    StopSyncTaskRequest,
    SyncObjectReq,
)

from tests.api.conftest import PROJECT, create_task, task_body
from tests.omsync_server import sdk_client


def now_ms() -> int:
    return int(time.time() * 1000)


def show(client: Any, task_id: str) -> Any:
    return client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=str(now_ms())))


def start_body() -> StartSyncTaskReq:
    return StartSyncTaskReq(src_ak="SRC-AK-2", src_sk="SRC-SK-2", dst_ak="DST-AK-2", dst_sk="DST-SK-2")


def expect_error(call: Any, status: int, code: str) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as info:
        call()
    exc = info.value
    assert exc.status_code == status, (exc.status_code, exc.error_code, exc.error_msg)
    assert exc.error_code == code, (exc.error_code, exc.error_msg)
    assert exc.request_id, "every error carries X-Request-Id"
    return exc


def test_create_then_show_returns_every_field(client: Any) -> None:
    before = now_ms()
    task_id = create_task(client, description="nightly mirror", enable_metadata_migration=True)
    task = show(client, task_id)
    assert task.status_code == 200
    assert task.sync_task_id == task_id
    assert task.status == "SYNCHRONIZING"  # created tasks start at once
    assert task.src_cloud_type == "Aliyun"
    assert (task.src_region, task.src_bucket) == ("cn-hangzhou", "src-bkt")
    assert (task.dst_region, task.dst_bucket) == ("cn-north-4", "dst-bkt")
    assert task.description == "nightly mirror"
    assert task.enable_metadata_migration is True
    assert task.enable_restore is False
    assert before - 1000 <= task.create_time <= now_ms()
    assert task.last_start_time == task.create_time
    assert task.object_overwrite_mode == "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE"
    assert task.consistency_check == "size_last_modified"
    assert task.dst_storage_policy is None
    assert (task.monthly_acceptance_request, task.monthly_success_object, task.monthly_failure_object,
            task.monthly_skip_object, task.monthly_size) == (0, 0, 0, 0, 0)


def test_secrets_are_never_returned(client: Any) -> None:
    task_id = create_task(client)
    raw = show(client, task_id).raw_content
    listed = client.list_sync_tasks(ListSyncTasksRequest(limit=100)).raw_content
    for blob in (raw, listed):
        text = blob.decode() if isinstance(blob, bytes) else str(blob)
        for secret in ("SRC-AK-VALUE", "SRC-SK-VALUE", "DST-AK-VALUE", "DST-SK-VALUE"):
            assert secret not in text


def test_transmission_check_is_reported_as_no_check(client: Any) -> None:
    task_id = create_task(client, consistency_check="transmission", dst_storage_policy="IA")
    task = show(client, task_id)
    assert task.consistency_check == "no_check"
    assert task.dst_storage_policy == "IA"


def test_list_counts_all_and_pages(client: Any) -> None:
    ids = {create_task(client) for _ in range(3)}
    first = client.list_sync_tasks(ListSyncTasksRequest(limit=2, offset=0))
    assert len(first.tasks) == 2
    assert first.count >= 3
    everything = client.list_sync_tasks(ListSyncTasksRequest(limit=100))
    assert everything.count == len(everything.tasks)
    assert ids <= {t.sync_task_id for t in everything.tasks}
    listed = {t.sync_task_id: t for t in everything.tasks}
    for task_id in ids:
        item = listed[task_id]
        assert item.create_time and item.last_start_time and item.status and item.object_overwrite_mode
    second = client.list_sync_tasks(ListSyncTasksRequest(limit=2, offset=2))
    assert not {t.sync_task_id for t in first.tasks} & {t.sync_task_id for t in second.tasks}


def test_list_filters_by_status(client: Any) -> None:
    stopped = create_task(client)
    client.stop_sync_task(StopSyncTaskRequest(sync_task_id=stopped))
    only_stopped = client.list_sync_tasks(ListSyncTasksRequest(limit=100, status="STOPPED"))
    assert stopped in {t.sync_task_id for t in only_stopped.tasks}
    assert {t.status for t in only_stopped.tasks} == {"STOPPED"}
    running = client.list_sync_tasks(ListSyncTasksRequest(limit=100, status="SYNCHRONIZING"))
    assert stopped not in {t.sync_task_id for t in running.tasks}


def test_list_rejects_out_of_range_limit(client: Any) -> None:
    exc = expect_error(lambda: client.list_sync_tasks(ListSyncTasksRequest(limit=101)), 400, "OMS.0064")
    assert "limit" in exc.error_msg or "limit" in str(exc)


def test_stop_start_delete_lifecycle(client: Any) -> None:
    task_id = create_task(client)
    created = show(client, task_id)
    expect_error(lambda: client.delete_sync_task(DeleteSyncTaskRequest(sync_task_id=task_id)), 400, "OMSYNC.0409")
    assert client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id)).status_code == 200
    assert show(client, task_id).status == "STOPPED"
    expect_error(lambda: client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id)), 400, "OMSYNC.0409")
    time.sleep(0.01)
    started = client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=start_body()))
    assert started.status_code == 200
    after = show(client, task_id)
    assert after.status == "SYNCHRONIZING"
    assert after.last_start_time > created.last_start_time
    assert after.create_time == created.create_time
    expect_error(lambda: client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=start_body())),
                 400, "OMSYNC.0409")
    client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    assert client.delete_sync_task(DeleteSyncTaskRequest(sync_task_id=task_id)).status_code == 200
    expect_error(lambda: show(client, task_id), 404, "OMS.1009")


def test_start_without_credentials_names_the_field(client: Any) -> None:
    task_id = create_task(client)
    client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    exc = expect_error(lambda: client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id)), 400, "OMS.0064")
    assert "src_ak" in exc.error_msg + str(exc)


def test_events_are_counted_and_show_in_statistics(client: Any) -> None:
    task_id = create_task(client)
    start = now_ms()
    body = SyncObjectReq(object_keys=["test%2F001.txt", "test%2F002.txt", "a b+c"])
    assert client.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id, body=body)).status_code == 200
    client.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id, body=SyncObjectReq(object_keys=["x"])))
    assert show(client, task_id).monthly_acceptance_request == 4
    stats = client.list_sync_task_statistic(ListSyncTaskStatisticRequest(
        sync_task_id=task_id, data_type="REQUEST,SUCCESS", start_time=str(start - 3600_000),
        end_time=str(now_ms() + 60_000)))
    assert stats.sync_task_id == task_id
    assert stats.statistic_time_type == "FIVE_MINUTES"
    by_type = {d.data_type: d.data for d in stats.statistic_datas}
    assert set(by_type) == {"REQUEST", "SUCCESS"}
    assert sum(p.statistic_num for p in by_type["REQUEST"]) == 4
    assert all(p.time_stamp % 300_000 == 0 for p in by_type["REQUEST"])
    assert by_type["SUCCESS"] == []  # nothing copied yet (workers off): empty buckets are omitted


def test_events_on_a_stopped_task_are_accepted_and_held(client: Any) -> None:
    task_id = create_task(client)
    client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    client.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id, body=SyncObjectReq(object_keys=["k"])))
    assert show(client, task_id).monthly_acceptance_request == 1


def test_event_key_count_limits(client: Any) -> None:
    task_id = create_task(client)
    for keys in ([], [f"k{i}" for i in range(101)]):
        exc = expect_error(lambda keys=keys: client.create_sync_events(
            CreateSyncEventsRequest(sync_task_id=task_id, body=SyncObjectReq(object_keys=keys))), 400, "OMS.0064")
        assert "object_keys" in exc.error_msg + str(exc)
    hundred = SyncObjectReq(object_keys=[f"k{i}" for i in range(100)])
    assert client.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id, body=hundred)).status_code == 200


def test_badly_encoded_key_is_refused_naming_it(client: Any) -> None:
    task_id = create_task(client)
    exc = expect_error(lambda: client.create_sync_events(CreateSyncEventsRequest(
        sync_task_id=task_id, body=SyncObjectReq(object_keys=["good", "bad%ZZkey"]))), 400, "OMS.0064")
    assert "object_keys[1]" in str(exc.error_msg) + str(exc)
    # nothing of a refused event is recorded
    assert show(client, task_id).monthly_acceptance_request == 0


def test_description_with_forbidden_characters(client: Any) -> None:
    for bad in ("<b>", "a&b", "it's", 'say "hi"', "(x)"):
        expect_error(lambda bad=bad: client.create_sync_task(CreateSyncTaskRequest(body=task_body(description=bad))),
                     400, "OMS.0078")


def test_invalid_enum_names_the_field(client: Any) -> None:
    for field, value in (("src_cloud_type", "Nowhere"), ("dst_storage_policy", "COLDEST"),
                         ("consistency_check", "md5")):
        exc = expect_error(lambda f=field, v=value: client.create_sync_task(
            CreateSyncTaskRequest(body=task_body(**{f: v}))), 400, "OMS.0064")
        assert field in str(exc)


def test_unknown_region_without_endpoint_is_refused(client: Any) -> None:
    exc = expect_error(lambda: client.create_sync_task(CreateSyncTaskRequest(
        body=task_body(src_cloud_type="AWS", src_region="mars-north-1"))), 400, "OMS.0064")
    assert "src_region" in str(exc)


def test_unknown_task_answers_with_the_status_each_oms_page_lists(client: Any) -> None:
    """404 where the operation's OMS page lists 404 (show, events, statistics); 400 where it
    lists only 400/403 (Start, Stop, Delete). The code is OMS.1009 either way."""
    missing = "00000000-0000-0000-0000-000000000000"
    expect_error(lambda: show(client, missing), 404, "OMS.1009")
    expect_error(lambda: client.create_sync_events(CreateSyncEventsRequest(
        sync_task_id=missing, body=SyncObjectReq(object_keys=["k"]))), 404, "OMS.1009")
    expect_error(lambda: client.list_sync_task_statistic(ListSyncTaskStatisticRequest(
        sync_task_id=missing, data_type="REQUEST", start_time="0", end_time="1")), 404, "OMS.1009")
    expect_error(lambda: client.stop_sync_task(StopSyncTaskRequest(sync_task_id=missing)), 400, "OMS.1009")
    expect_error(lambda: client.delete_sync_task(DeleteSyncTaskRequest(sync_task_id=missing)), 400, "OMS.1009")
    expect_error(lambda: client.start_sync_task(StartSyncTaskRequest(sync_task_id=missing, body=StartSyncTaskReq(
        src_ak="a", src_sk="b", dst_ak="c", dst_sk="d"))), 400, "OMS.1009")


def test_a_project_never_sees_another_projects_tasks(client: Any, other_client: Any) -> None:
    mine = create_task(client)
    expect_error(lambda: show(other_client, mine), 404, "OMS.1009")
    expect_error(lambda: other_client.stop_sync_task(StopSyncTaskRequest(sync_task_id=mine)), 400, "OMS.1009")
    listed = other_client.list_sync_tasks(ListSyncTasksRequest(limit=100))
    assert mine not in {t.sync_task_id for t in listed.tasks}


def test_a_key_cannot_act_for_another_project(api_server: Any, keys: dict[str, dict[str, Any]]) -> None:
    k = keys["other"]
    intruder = sdk_client(api_server.url, k["access_key"], k["secret_key"], PROJECT)
    expect_error(lambda: intruder.list_sync_tasks(ListSyncTasksRequest()), 403, "APIGW.0302")


def test_wrong_secret_key_is_401(api_server: Any, keys: dict[str, dict[str, Any]]) -> None:
    bad = sdk_client(api_server.url, keys["main"]["access_key"], "not-the-secret", PROJECT)
    expect_error(lambda: bad.list_sync_tasks(ListSyncTasksRequest()), 401, "APIGW.0301")
    unknown = sdk_client(api_server.url, "NOSUCHKEY", "whatever", PROJECT)
    expect_error(lambda: unknown.list_sync_tasks(ListSyncTasksRequest()), 401, "APIGW.0301")


def test_show_requires_query_time(client: Any) -> None:
    task_id = create_task(client)
    exc = expect_error(lambda: client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id)), 400, "OMS.0064")
    assert "query_time" in str(exc)


def test_monthly_counters_follow_query_time(client: Any) -> None:
    task_id = create_task(client)
    client.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id, body=SyncObjectReq(object_keys=["a"])))
    last_year = client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=now_ms() - 400 * 86400_000))
    assert last_year.monthly_acceptance_request == 0
    assert show(client, task_id).monthly_acceptance_request == 1


def test_statistics_validation(client: Any) -> None:
    task_id = create_task(client)
    for kwargs, field in (
        ({"data_type": "BOGUS", "start_time": "0", "end_time": "1"}, "data_type"),
        ({"data_type": "REQUEST", "start_time": "abc", "end_time": "1"}, "start_time"),
        ({"data_type": "REQUEST", "start_time": "10", "end_time": "1"}, "end_time"),
    ):
        exc = expect_error(lambda kw=kwargs: client.list_sync_task_statistic(
            ListSyncTaskStatisticRequest(sync_task_id=task_id, **kw)), 400, "OMS.0064")
        assert field in str(exc)


def test_api_versions(client: Any) -> None:
    versions = client.list_api_versions(ListApiVersionsRequest())
    assert [v.id for v in versions.versions] == ["v2"]
    assert versions.versions[0].status == "CURRENT"
    info = client.show_api_info(ShowApiInfoRequest(version="v2"))
    assert info.id == "v2"
    assert info.status == "CURRENT"
    assert info.links[0].rel == "self"
    expect_error(lambda: client.show_api_info(ShowApiInfoRequest(version="v9")), 404, "APIGW.0101")
