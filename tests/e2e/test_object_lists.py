"""Object lists as OMS describes them, driven through the official SDK with the three
CreateSyncEvents examples of the OMS page, exactly as the page writes them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from huaweicloudsdkoms.v2 import CreateSyncEventsRequest, SyncObjectReq

from tests.e2e.conftest import Sync
from tests.e2e.test_sync_s3 import body_for, dest_objects, moto_endpoints, put_sources, task_fields
from tests.servers import S3Server

# The three example requests of the OMS CreateSyncEvents page.
OMS_EXAMPLES = [["test%2F001.txt", "test%2F002.txt"], ["test%2B001.txt"], ["test+001.txt"]]


@pytest.fixture(scope="module")
def lists_sync(moto_s3: S3Server, make_sync: Any) -> Sync:
    sync: Sync = make_sync(moto_endpoints(moto_s3))
    return sync


def read_lists(server: S3Server, bucket: str, task_id: str, kinds: set[str]) -> dict[str, list[list[str]]]:
    """Every line of the task's lists of ``kinds``, split into columns, once all are there."""
    prefix = f"oms/sync_task/{task_id}/"
    deadline = time.monotonic() + 20
    while True:
        found = dest_objects(server, bucket, prefix)
        if kinds <= {k.split("/")[3] for k in found}:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"object lists not written: {sorted(found)}")
        time.sleep(0.3)
    s3 = server.client()
    lines: dict[str, list[list[str]]] = {}
    for key in sorted(found):
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        lines.setdefault(key.split("/")[3], []).extend(line.split("\t") for line in text.splitlines())
    return lines


def test_the_oms_examples_land_in_lists_of_the_documented_format(moto_s3: S3Server, lists_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("lists-oms-src"), moto_s3.make_bucket("lists-oms-dst")
    put_sources(moto_s3, src, ["test/001.txt", "test+001.txt"])  # "test/002.txt", "test 001.txt" are missing
    task_id = lists_sync.create_task(**task_fields(moto_s3, src, dst, same_credentials=False))
    for keys in OMS_EXAMPLES:
        lists_sync.client.create_sync_events(CreateSyncEventsRequest(
            sync_task_id=task_id, body=SyncObjectReq(object_keys=keys)))
    task = lists_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (2, 2)
    # The same object again: skipped (not modified), with its size.
    lists_sync.client.create_sync_events(CreateSyncEventsRequest(
        sync_task_id=task_id, body=SyncObjectReq(object_keys=["test%2F001.txt"])))
    assert lists_sync.wait_settled(task_id).monthly_skip_object == 1

    lines = read_lists(moto_s3, dst, task_id, {"success_object_lists", "failed_object_lists", "skip_object_lists"})

    # failed: reason, time, key as sent (not re-encoded), decoded key, the store's code, message
    failed = {columns[3]: columns for columns in lines["failed_object_lists"]}
    assert set(failed) == {"test/002.txt", "test 001.txt"}
    for decoded, sent in (("test/002.txt", "test%2F002.txt"), ("test 001.txt", "test+001.txt")):
        reason, when, encoded, _, code, message = failed[decoded]
        assert reason == "source_not_found"
        assert when.endswith("Z") and when[:4].isdigit()
        assert encoded == sent
        assert code not in ("", "-"), code  # what the source store answered (a bare HEAD 404: "404")
        assert message

    # success: decoded key, time, size in bytes
    success = {columns[0]: columns for columns in lines["success_object_lists"]}
    assert set(success) == {"test/001.txt", "test+001.txt"}
    for key, columns in success.items():
        assert len(columns) == 3
        assert columns[2] == str(len(body_for(key)))

    # skip: decoded key, time, size in bytes, then omsync's reason
    [skip] = lines["skip_object_lists"]
    assert skip[0] == "test/001.txt"
    assert skip[1].endswith("Z")
    assert skip[2] == str(len(body_for("test/001.txt")))
    assert skip[3] == "not_modified"
