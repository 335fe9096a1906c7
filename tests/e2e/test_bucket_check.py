"""CreateSyncTask and StartSyncTask refuse, through the official SDK, a task whose source bucket
cannot be read or destination bucket cannot be reached with the given credentials: 400 naming
the side and the reason, one cheap request per side against the real stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkoms.v2 import (
    ShowSyncTaskRequest,
    StartSyncTaskReq,
    StartSyncTaskRequest,
    StopSyncTaskRequest,
)

from tests.e2e.conftest import Sync, now_ms
from tests.servers import S3Server


@pytest.fixture(scope="module")
def checked(moto_s3: S3Server, seaweed_s3: S3Server, make_sync: Any) -> Sync:
    endpoints = {
        "Aliyun:cn-hangzhou": moto_s3.endpoint_url + "#moto",
        "HuaweiCloud:cn-north-4": seaweed_s3.endpoint_url + "#seaweedfs",
        "HuaweiCloud:moto": moto_s3.endpoint_url + "#moto",
        "Tencent:ap-guangzhou": "http://127.0.0.1:9",  # nothing listens there
    }
    sync: Sync = make_sync(endpoints, workers=0)
    return sync


def fields(moto_s3: S3Server, seaweed_s3: S3Server, src: str, dst: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src,
        src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key,
        dst_ak=seaweed_s3.access_key, dst_sk=seaweed_s3.secret_key, dst_region="cn-north-4", dst_bucket=dst,
    )
    base.update(overrides)
    return base


def refused(call: Callable[[], Any]) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as info:
        call()
    assert info.value.status_code == 400, (info.value.status_code, info.value.error_msg)
    assert info.value.error_code == "OMS.0064"
    return info.value


def test_reachable_buckets_are_accepted(moto_s3: S3Server, seaweed_s3: S3Server, checked: Sync) -> None:
    src, dst = moto_s3.make_bucket("check-ok-src"), seaweed_s3.make_bucket("check-ok-dst")
    task_id = checked.create_task(**fields(moto_s3, seaweed_s3, src, dst))
    assert checked.show(task_id).status == "SYNCHRONIZING"


def test_missing_source_bucket_is_refused_naming_the_source(moto_s3: S3Server, seaweed_s3: S3Server,
                                                            checked: Sync) -> None:
    dst = seaweed_s3.make_bucket("check-nosrc-dst")
    exc = refused(lambda: checked.create_task(**fields(moto_s3, seaweed_s3, "check-no-such-src", dst)))
    assert "[src_bucket]" in exc.error_msg
    assert "source bucket 'check-no-such-src'" in exc.error_msg
    assert "bucket not found" in exc.error_msg


def test_missing_destination_bucket_is_refused_naming_the_destination(moto_s3: S3Server, seaweed_s3: S3Server,
                                                                      checked: Sync) -> None:
    src = moto_s3.make_bucket("check-nodst-src")
    exc = refused(lambda: checked.create_task(**fields(moto_s3, seaweed_s3, src, "check-no-such-dst")))
    assert "[dst_bucket]" in exc.error_msg
    assert "destination bucket 'check-no-such-dst'" in exc.error_msg
    assert "bucket not found" in exc.error_msg


def test_wrong_destination_secret_is_access_denied(moto_s3: S3Server, seaweed_s3: S3Server, checked: Sync) -> None:
    src, dst = moto_s3.make_bucket("check-deny-src"), seaweed_s3.make_bucket("check-deny-dst")
    exc = refused(lambda: checked.create_task(**fields(moto_s3, seaweed_s3, src, dst, dst_sk="wrong-secret")))
    assert "[dst_bucket]" in exc.error_msg
    assert "access denied" in exc.error_msg
    assert "wrong-secret" not in exc.error_msg


def test_unreachable_endpoint_is_refused(moto_s3: S3Server, seaweed_s3: S3Server, checked: Sync) -> None:
    dst = seaweed_s3.make_bucket("check-unreach-dst")
    exc = refused(lambda: checked.create_task(**fields(
        moto_s3, seaweed_s3, "somewhere-1250000000", dst, src_cloud_type="Tencent", src_region="ap-guangzhou")))
    assert "[src_bucket]" in exc.error_msg
    assert "endpoint unreachable" in exc.error_msg


def test_start_checks_the_new_credentials(moto_s3: S3Server, seaweed_s3: S3Server, checked: Sync) -> None:
    src, dst = moto_s3.make_bucket("check-start-src"), seaweed_s3.make_bucket("check-start-dst")
    task_id = checked.create_task(**fields(moto_s3, seaweed_s3, src, dst))
    checked.client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    bad = StartSyncTaskReq(src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key,
                           dst_ak=seaweed_s3.access_key, dst_sk="wrong-secret")
    exc = refused(lambda: checked.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=bad)))
    assert "[dst_bucket]" in exc.error_msg and "access denied" in exc.error_msg
    shown = checked.client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=now_ms()))
    assert shown.status == "STOPPED"
    good = StartSyncTaskReq(src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key,
                            dst_ak=seaweed_s3.access_key, dst_sk=seaweed_s3.secret_key)
    checked.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=good))
    assert checked.show(task_id).status == "SYNCHRONIZING"


def test_the_check_can_be_turned_off(moto_s3: S3Server, seaweed_s3: S3Server, make_sync: Any) -> None:
    url = moto_s3.endpoint_url + "#moto"
    unchecked: Sync = make_sync({"Aliyun:cn-hangzhou": url, "HuaweiCloud:cn-north-4": url}, workers=0,
                                check_buckets_on_create="false")
    task_id = unchecked.create_task(**fields(moto_s3, seaweed_s3, "not-there-yet", "not-there-either"))
    assert unchecked.show(task_id).status == "SYNCHRONIZING"
