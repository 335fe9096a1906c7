"""End to end through the official SDK: events in, objects byte-exact in the destination."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from omsync.stores.profiles import resolve_endpoint
from tests.e2e.conftest import PROJECT, Sync
from tests.key_corpus import holdable, refused
from tests.rawhttp import signed_request
from tests.servers import S3Server


def body_for(key: str) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return seed * (1 + seed[0] % 40)


def put_sources(server: S3Server, bucket: str, keys: list[str]) -> None:
    s3 = server.client()
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=body_for(key), ContentType="application/x-omsync-test",
                      Metadata={"origin": "e2e", "key-sha": hashlib.sha1(key.encode()).hexdigest()})


def dest_objects(server: S3Server, bucket: str, prefix: str = "") -> dict[str, Any]:
    s3 = server.client()
    found: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, EncodingType="url"):
        from urllib.parse import unquote_plus

        for item in page.get("Contents", []):
            found[unquote_plus(item["Key"])] = item
    return found


def task_fields(server: S3Server, src: str, dst: str, *, same_credentials: bool) -> dict[str, Any]:
    return dict(
        src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src,
        src_ak=server.access_key, src_sk=server.secret_key,
        dst_ak=server.access_key if same_credentials else server.access_key + "-dst",
        dst_sk=server.secret_key, dst_region="cn-north-4", dst_bucket=dst,
        enable_metadata_migration=True,
    )


def moto_endpoints(server: S3Server) -> dict[str, str]:
    # '#moto' declares the test server's key limits, as an operator would for their server.
    url = server.endpoint_url + "#moto"
    return {"Aliyun:cn-hangzhou": url, "HuaweiCloud:cn-north-4": url}


@pytest.fixture(scope="module")
def moto_sync(moto_s3: S3Server, make_sync: Any) -> Sync:
    sync: Sync = make_sync(moto_endpoints(moto_s3))
    return sync


@pytest.mark.parametrize("same_credentials", [True, False], ids=["server-side-copy", "streamed"])
def test_awkward_keys_arrive_byte_exact_with_metadata(moto_s3: S3Server, moto_sync: Sync,
                                                      same_credentials: bool) -> None:
    tag = "same" if same_credentials else "stream"
    src, dst = moto_s3.make_bucket(f"e2e-src-{tag}"), moto_s3.make_bucket(f"e2e-dst-{tag}")
    capabilities = resolve_endpoint("Aliyun", "cn-hangzhou", moto_endpoints(moto_s3)).capabilities()
    keys = [key for _, key in holdable(capabilities)]
    assert len(keys) >= 30
    put_sources(moto_s3, src, keys)
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst, same_credentials=same_credentials))
    moto_sync.send(task_id, keys)
    task = moto_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object, task.monthly_skip_object) == (len(keys), 0, 0)
    assert task.monthly_size == sum(len(body_for(k)) for k in keys)
    s3 = moto_s3.client()
    for key in keys:
        got = s3.get_object(Bucket=dst, Key=key)
        assert got["Body"].read() == body_for(key), key
        assert got["ContentType"] == "application/x-omsync-test"
        assert got["Metadata"]["origin"] == "e2e"
        assert got["Metadata"]["key-sha"] == hashlib.sha1(key.encode()).hexdigest()
    copied = {k for k in dest_objects(moto_s3, dst) if not k.startswith("oms/")}
    assert copied == set(keys)


def test_keys_the_server_cannot_hold_fail_with_a_reason(moto_s3: S3Server, moto_sync: Sync) -> None:
    capabilities = resolve_endpoint("Aliyun", "cn-hangzhou", moto_endpoints(moto_s3)).capabilities()
    from tests.key_corpus import KEY_CORPUS

    unholdable = [key for kid, key in KEY_CORPUS if kid in refused(capabilities)]
    assert unholdable, "the moto quirks declare at least one key it cannot route"
    src, dst = moto_s3.make_bucket("e2e-refused-src"), moto_s3.make_bucket("e2e-refused-dst")
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst, same_credentials=False))
    moto_sync.send(task_id, unholdable)
    task = moto_sync.wait_settled(task_id)
    assert task.monthly_failure_object == len(unholdable)
    key = moto_sync.key
    listed = signed_request(moto_sync.server.url, "GET", f"/v2/{PROJECT}/sync-tasks/{task_id}/failed-objects",
                            ak=key["access_key"], sk=key["secret_key"], project_id=PROJECT).json()
    assert {o["key"] for o in listed["objects"]} == set(unholdable)
    assert {o["reason"] for o in listed["objects"]} == {"unsupported_key"}


def test_statistics_match_the_outcomes(moto_s3: S3Server, moto_sync: Sync) -> None:
    from huaweicloudsdkoms.v2 import ListSyncTaskStatisticRequest

    src, dst = moto_s3.make_bucket("e2e-stats-src"), moto_s3.make_bucket("e2e-stats-dst")
    keys = [f"stats/{i}" for i in range(30)]
    put_sources(moto_s3, src, keys)
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst, same_credentials=False))
    start = int(time.time() * 1000) - 1000
    moto_sync.send(task_id, keys + keys[:5])  # 5 keys twice
    task = moto_sync.wait_settled(task_id)
    assert task.monthly_acceptance_request == 35
    assert task.monthly_success_object + task.monthly_skip_object == 35
    assert task.monthly_success_object >= 30
    stats = moto_sync.client.list_sync_task_statistic(ListSyncTaskStatisticRequest(
        sync_task_id=task_id, data_type="REQUEST,SUCCESS,SKIP,FAILURE,SIZE", start_time=str(start),
        end_time=str(int(time.time() * 1000) + 1000)))
    sums = {d.data_type: sum(p.statistic_num for p in d.data) for d in stats.statistic_datas}
    assert sums["REQUEST"] == 35
    assert sums["SUCCESS"] == task.monthly_success_object
    assert sums["SKIP"] == task.monthly_skip_object
    assert sums["FAILURE"] == 0
    assert sums["SIZE"] == task.monthly_size


def test_unchanged_objects_are_skipped_on_resend(moto_s3: S3Server, moto_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("e2e-skip-src"), moto_s3.make_bucket("e2e-skip-dst")
    put_sources(moto_s3, src, ["a", "b"])
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst, same_credentials=False))
    moto_sync.send(task_id, ["a", "b"])
    moto_sync.wait_settled(task_id)
    moto_sync.send(task_id, ["a", "b"])
    task = moto_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_skip_object) == (2, 2)


def test_missing_source_fails_with_reason_and_can_be_redriven(moto_s3: S3Server, moto_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("e2e-missing-src"), moto_s3.make_bucket("e2e-missing-dst")
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst, same_credentials=False))
    moto_sync.send(task_id, ["not/there yet"])
    task = moto_sync.wait_settled(task_id)
    assert task.monthly_failure_object == 1
    key = moto_sync.key
    base = f"/v2/{PROJECT}/sync-tasks/{task_id}/failed-objects"
    listed = signed_request(moto_sync.server.url, "GET", base, ak=key["access_key"], sk=key["secret_key"],
                            project_id=PROJECT)
    assert listed.status_code == 200, listed.text
    [failed] = listed.json()["objects"]
    assert (failed["key"], failed["reason"]) == ("not/there yet", "source_not_found")
    put_sources(moto_s3, src, ["not/there yet"])
    retried = signed_request(moto_sync.server.url, "POST", base + "/retry", ak=key["access_key"],
                             sk=key["secret_key"], project_id=PROJECT, body=json.dumps({}).encode())
    assert retried.json() == {"retried": 1}
    task = moto_sync.wait_settled(task_id)
    assert (task.monthly_acceptance_request, task.monthly_success_object, task.monthly_failure_object) == (2, 1, 1)
    assert moto_s3.client().get_object(Bucket=dst, Key="not/there yet")["Body"].read() == body_for("not/there yet")


def test_object_lists_are_written_to_the_destination(moto_s3: S3Server, moto_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("e2e-lists-src"), moto_s3.make_bucket("e2e-lists-dst")
    put_sources(moto_s3, src, ["ok one", "ok+two"])
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst, same_credentials=False))
    moto_sync.send(task_id, ["ok one", "ok+two", "gone"])
    moto_sync.wait_settled(task_id)
    prefix = f"oms/sync_task/{task_id}/"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lists = dest_objects(moto_s3, dst, prefix)
        kinds = {k.split("/")[3] for k in lists}
        if {"success_object_lists", "failed_object_lists"} <= kinds:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"object lists not written: {sorted(dest_objects(moto_s3, dst, prefix))}")
    s3 = moto_s3.client()
    text = {kind: "".join(s3.get_object(Bucket=dst, Key=k)["Body"].read().decode()
                          for k in lists if k.split("/")[3] == kind) for kind in kinds}
    assert "ok one" in text["success_object_lists"] and "ok+two" in text["success_object_lists"]
    assert "gone" in text["failed_object_lists"]
    assert "source_not_found" in text["failed_object_lists"]
