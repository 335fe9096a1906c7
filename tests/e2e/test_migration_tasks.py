"""Migration tasks end to end through the official SDK against a real ``omsync serve`` and moto:
listing, copying, counts, save_prefix byte-exact, stop/resume, failures and their list, list
files, bandwidth windows, SIGKILL mid-listing, project isolation and the SDK-visible errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
    ListFile,
    ListSyncTasksRequest,
    ListTasksRequest,
    ShowTaskRequest,
    SrcNodeReq,
    StartTaskReq,
    StartTaskRequest,
    StopTaskRequest,
)

from omsync.stores.profiles import resolve_endpoint
from tests.e2e.conftest import PROJECT, Sync
from tests.key_corpus import holdable
from tests.omsync_server import OmsyncServer, sdk_client
from tests.rawhttp import signed_request
from tests.servers import S3Server

SRC_REGION, DST_REGION = "cn-hangzhou", "cn-north-4"


def endpoints(server: S3Server) -> dict[str, str]:
    url = server.endpoint_url + "#moto"
    return {f"Aliyun:{SRC_REGION}": url, f"HuaweiCloud:{DST_REGION}": url}


def body_for(key: str) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return seed * (1 + seed[0] % 20)


def put_objects(server: S3Server, bucket: str, keys: list[str], body: Any = body_for) -> None:
    s3 = server.client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=body(key)), keys))


def bucket_keys(server: S3Server, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every key under ``prefix`` (decoded byte-exact from a url-encoded listing: servers encode a
    space as ``+`` and a ``+`` as ``%2B``) and its size."""
    from urllib.parse import unquote_plus

    found: dict[str, int] = {}
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, EncodingType="url")
    for page in pages:
        for item in page.get("Contents", []):
            found[unquote_plus(item["Key"])] = item["Size"]
    return found


class Migrations:
    """The SDK client of a serve process for migration tasks."""

    def __init__(self, sync: Sync, server: S3Server, dst_ak: str | None = None) -> None:
        self.sync = sync
        self.client = sync.client
        self.s3 = server
        # moto takes any key: a different destination key makes the copies streamed.
        self.dst_ak = dst_ak or server.access_key + "-dst"

    def create(self, src: str, dst: str, *, task_type: str = "prefix", object_key: list[str] | None = None,
               save_prefix: str | None = None, list_file: ListFile | None = None, **fields: Any) -> int:
        s3 = self.s3
        body = CreateTaskReq(
            task_type=task_type,
            src_node=SrcNodeReq(cloud_type="Aliyun", region=SRC_REGION, ak=s3.access_key, sk=s3.secret_key,
                                bucket=src, object_key=object_key, list_file=list_file),
            dst_node=DstNodeReq(ak=self.dst_ak, sk=s3.secret_key, region=DST_REGION, bucket=dst,
                                save_prefix=save_prefix),
            **fields,
        )
        created = self.client.create_task(CreateTaskRequest(body=body))
        assert created.task_name
        return int(created.id)

    def show(self, task_id: int) -> Any:
        return self.client.show_task(ShowTaskRequest(task_id=task_id))

    def wait(self, task_id: int, statuses: tuple[int, ...] = (4, 5), timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            task = self.show(task_id)
            if task.status in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} not in {statuses}: {task}\n{self.sync.server.log()[-4000:]}")
            time.sleep(0.2)

    def start(self, task_id: int) -> None:
        s3 = self.s3
        self.client.start_task(StartTaskRequest(task_id=task_id, body=StartTaskReq(
            src_ak=s3.access_key, src_sk=s3.secret_key, dst_ak=self.dst_ak, dst_sk=s3.secret_key)))


@pytest.fixture(scope="module")
def mig(moto_s3: S3Server, make_sync: Any) -> Migrations:
    sync: Sync = make_sync(endpoints(moto_s3))
    return Migrations(sync, moto_s3)


def test_prefix_migration_keeps_the_key_corpus_byte_exact_under_save_prefix(moto_s3: S3Server,
                                                                             mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-corpus-src"), moto_s3.make_bucket("mig-corpus-dst")
    save_prefix = "backup/2024 é+%/"
    capabilities = resolve_endpoint("Aliyun", SRC_REGION, endpoints(moto_s3)).capabilities()
    keys = [key for _, key in holdable(capabilities)]
    fits = [k for k in keys if capabilities.key_problem(save_prefix + k) is None]
    too_long = [k for k in keys if k not in fits]
    assert len(fits) >= 30
    put_objects(moto_s3, src, keys)
    task_id = mig.create(src, dst, object_key=[""], save_prefix=save_prefix)
    task = mig.wait(task_id)
    assert (task.total_num, task.successful_num, task.failed_num, task.skipped_num) == (len(keys), len(fits),
                                                                                       len(too_long), 0)
    if too_long:  # keys the destination cannot hold once prefixed fail, and so does the task
        assert task.status == 4 and task.error_reason.error_code == "OMSYNC.0601"
    else:
        assert task.status == 5 and task.error_reason is None
    assert task.complete_size == sum(len(body_for(k)) for k in fits)
    assert task.dst_node.save_prefix == save_prefix and task.is_query_over
    copied = {k: v for k, v in bucket_keys(moto_s3, dst).items() if not k.startswith("oms/")}
    assert set(copied) == {save_prefix + k for k in fits}
    s3 = moto_s3.client()
    for key in fits:
        assert s3.get_object(Bucket=dst, Key=save_prefix + key)["Body"].read() == body_for(key), key


def test_a_few_thousand_objects_migrate_once_with_matching_counts(moto_s3: S3Server, mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-bulk-src"), moto_s3.make_bucket("mig-bulk-dst")
    keys = [f"data/{i // 100:03d}/object-{i:05d}" for i in range(2000)]
    outside = [f"other/{i}" for i in range(20)]
    uploading = time.monotonic()
    put_objects(moto_s3, src, keys + outside, body=lambda key: key.encode())
    print(f"uploaded in {time.monotonic() - uploading:.1f} s")
    events_dst = moto_s3.make_bucket("mig-bulk-events-dst")
    started = time.monotonic()
    task_id = mig.create(src, dst, object_key=["data/"], description="bulk")
    # Fair against sync tasks: a sync task's events are copied while the migration's backlog waits.
    while mig.show(task_id).total_num < 1000:
        time.sleep(0.1)
    sync_task = mig.sync.create_task(
        src_cloud_type="Aliyun", src_region=SRC_REGION, src_bucket=src, src_ak=moto_s3.access_key,
        src_sk=moto_s3.secret_key, dst_ak=moto_s3.access_key, dst_sk=moto_s3.secret_key, dst_region=DST_REGION,
        dst_bucket=events_dst)
    mig.sync.send(sync_task, outside)
    shown = mig.sync.wait_settled(sync_task, timeout=30)
    assert shown.monthly_success_object == len(outside)
    during = mig.show(task_id)
    assert during.status == 2 and during.successful_num < 2000  # the events did not wait for the migration
    task = mig.wait(task_id, timeout=90)
    elapsed = time.monotonic() - started
    assert task.status == 5, task
    assert (task.total_num, task.successful_num, task.failed_num, task.skipped_num) == (2000, 2000, 0, 0)
    assert task.total_size == task.complete_size == sum(len(k) for k in keys)
    assert task.progress == 1.0 and task.left_time == 0 and task.error_reason is None
    assert task.total_time > 0 and task.start_time > 0 and task.migrate_speed > 0
    assert set(bucket_keys(moto_s3, dst, "data/")) == set(keys)
    assert not bucket_keys(moto_s3, dst, "other/")
    # Object lists of the task under oms/task/<name>/, not under the sync-task folder.
    lists = bucket_keys(moto_s3, dst, "oms/")
    deadline = time.monotonic() + 10
    while not lists and time.monotonic() < deadline:
        time.sleep(0.5)
        lists = bucket_keys(moto_s3, dst, "oms/")
    assert lists and all(k.startswith(f"oms/task/{task.name}/success_object_lists/") for k in lists)
    # ListTasks shows it; the sync-task API never does.
    listed = mig.client.list_tasks(ListTasksRequest(limit=100, offset=0))
    assert task_id in {t.id for t in listed.tasks}
    mine = next(t for t in listed.tasks if t.id == task_id)
    assert mine.successful_num == 2000 and mine.status == 5
    assert mig.client.list_tasks(ListTasksRequest(status=5, limit=100)).count >= 1
    assert all(t.status == 2 for t in mig.client.list_tasks(ListTasksRequest(status=2, limit=100)).tasks)
    sync_tasks = mig.client.list_sync_tasks(ListSyncTasksRequest(limit=100, offset=0))
    assert not any(str(t.sync_task_id).startswith("migration-") for t in sync_tasks.tasks)
    print(f"2,000 objects migrated in {elapsed:.1f} s")


def test_object_task_fails_on_a_missing_key_records_it_and_start_retries_it(moto_s3: S3Server,
                                                                         mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-object-src"), moto_s3.make_bucket("mig-object-dst")
    put_objects(moto_s3, src, ["dir/a", "dir/sub/b", "single.txt", "dirx/not-this", "single.txt.bak"])
    task_id = mig.create(src, dst, task_type="object", object_key=["dir/", "single.txt", "missing one.txt"])
    task = mig.wait(task_id)
    assert task.status == 4
    assert (task.total_num, task.successful_num, task.failed_num) == (4, 3, 1)
    assert "1 objects failed" in task.error_reason.error_msg
    assert task.failed_object_record.result is True
    assert set(bucket_keys(moto_s3, dst)) >= {"dir/a", "dir/sub/b", "single.txt"}
    assert not {"dirx/not-this", "single.txt.bak"} & set(bucket_keys(moto_s3, dst))
    folder = task.failed_object_record.list_file_key
    deadline = time.monotonic() + 15
    while not bucket_keys(moto_s3, dst, folder) and time.monotonic() < deadline:
        time.sleep(0.5)
    [failed_list] = bucket_keys(moto_s3, dst, folder)
    text = moto_s3.client().get_object(Bucket=dst, Key=failed_list)["Body"].read().decode()
    assert "missing one.txt" in text and "source_not_found" in text
    # The object appears; starting the failed task tries the failing key again.
    put_objects(moto_s3, src, ["missing one.txt"])
    mig.start(task_id)
    task = mig.wait(task_id)
    assert task.status == 5 and task.error_reason is None
    assert (task.total_num, task.successful_num, task.failed_num) == (4, 4, 0)


def test_migrate_since_skips_older_objects(moto_s3: S3Server, mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-since-src"), moto_s3.make_bucket("mig-since-dst")
    put_objects(moto_s3, src, ["old/1", "old/2"])
    time.sleep(1.1)
    since = int(time.time()) + 1
    time.sleep(2.1)
    put_objects(moto_s3, src, ["new/1"])
    task = mig.wait(mig.create(src, dst, object_key=[""], migrate_since=since))
    assert task.status == 5 and task.migrate_since == since
    assert (task.total_num, task.successful_num, task.skipped_num) == (3, 1, 2)
    assert {k for k in bucket_keys(moto_s3, dst) if not k.startswith("oms/")} == {"new/1"}


def test_list_task_copies_the_url_encoded_keys_of_its_list_files(moto_s3: S3Server, mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-list-src"), moto_s3.make_bucket("mig-list-dst")
    lists = moto_s3.make_bucket("mig-list-files")
    keys = ["plain.txt", "with space/é中.txt", "a+b", "100%", "line\tbreak"]
    put_objects(moto_s3, src, [*keys, "not-listed"])
    s3 = moto_s3.client()
    s3.put_object(Bucket=lists, Key="lists/one.txt",
                  Body=("\n".join(quote(k, safe="/") for k in keys[:3]) + "\n\n").encode())
    s3.put_object(Bucket=lists, Key="lists/two.txt", Body="\r\n".join(quote(k, safe="") for k in keys[3:]).encode())
    task_id = mig.create(src, dst, task_type="list", list_file=ListFile(list_file_key="lists/", obs_bucket=lists))
    task = mig.wait(task_id)
    assert task.status == 5, task
    assert (task.total_num, task.successful_num) == (5, 5)
    assert task.src_node.list_file.obs_bucket == lists
    assert {k for k in bucket_keys(moto_s3, dst) if not k.startswith("oms/")} == set(keys)


def test_stop_pauses_and_start_resumes_under_a_bandwidth_policy(moto_s3: S3Server, mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-stop-src"), moto_s3.make_bucket("mig-stop-dst")
    keys = [f"k/{i:03d}" for i in range(60)]
    put_objects(moto_s3, src, keys, body=lambda key: key.encode() * (65536 // len(key)))
    whole_day = [BandwidthPolicyDto(start="00:00", end="12:00", max_bandwidth=1_048_576),
                 BandwidthPolicyDto(start="12:00", end="00:00", max_bandwidth=1_048_576)]
    task_id = mig.create(src, dst, object_key=["k/"], bandwidth_policy=whole_day)
    deadline = time.monotonic() + 30
    while mig.show(task_id).successful_num < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    mig.client.stop_task(StopTaskRequest(task_id=task_id))
    assert mig.show(task_id).status in (3, 7)
    stopped = mig.wait(task_id, (3,), timeout=30)
    time.sleep(1.5)
    again = mig.show(task_id)
    assert again.status == 3 and again.successful_num == stopped.successful_num < 60
    assert [(w.start, w.end, w.max_bandwidth) for w in again.bandwidth_policy] == [
        ("00:00", "12:00", 1_048_576), ("12:00", "00:00", 1_048_576)]
    mig.start(task_id)
    task = mig.wait(task_id, timeout=60)
    assert task.status == 5 and (task.total_num, task.successful_num) == (60, 60)
    # The windows were applied as the task's bytes/s limit (1 MiB/s per worker process, with
    # up to a second's worth of burst each): the keys left after the stop took their time.
    left = (60 - stopped.successful_num) * 65536
    assert task.total_time >= 1000 * max(0, left - 2 * 1_048_576) // (2 * 1_048_576)
    assert set(bucket_keys(moto_s3, dst, "k/")) == set(keys)


def sdk_error(call: Any) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as caught:
        call()
    return caught.value


def test_sdk_visible_errors(moto_s3: S3Server, mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-err-src"), moto_s3.make_bucket("mig-err-dst")
    error = sdk_error(lambda: mig.show(987654321))
    assert (error.status_code, error.error_code) == (404, "OMS.1009")
    error = sdk_error(lambda: mig.client.stop_task(StopTaskRequest(task_id=987654321)))
    assert (error.status_code, error.error_code) == (400, "OMS.1009")
    error = sdk_error(lambda: mig.create(src, "no-such-bucket-here", object_key=[""]))
    assert (error.status_code, error.error_code) == (400, "OMS.0064") and "dst_bucket" in error.error_msg
    error = sdk_error(lambda: mig.create(src, dst, object_key=[""], smn_config={"topic_urn": "x"}))
    assert error.status_code == 400 and "smn_config" in error.error_msg
    error = sdk_error(lambda: mig.create(src, dst, task_type="url_list", object_key=[""]))
    assert error.status_code == 400 and "task_type" in error.error_msg
    error = sdk_error(lambda: mig.create(src, dst, object_key=None))
    assert error.status_code == 400 and "src_node.object_key" in error.error_msg
    error = sdk_error(lambda: mig.create(src, dst, object_key=[""], bandwidth_policy=[
        BandwidthPolicyDto(start="01:00", end="03:00", max_bandwidth=2_000_000),
        BandwidthPolicyDto(start="02:00", end="04:00", max_bandwidth=2_000_000)]))
    assert error.status_code == 400 and "bandwidth_policy[1]" in error.error_msg
    error = sdk_error(lambda: mig.create(src, dst, object_key=[""], bandwidth_policy=[
        BandwidthPolicyDto(start="01:00", end="03:00", max_bandwidth=1000)]))
    assert error.status_code == 400 and "max_bandwidth" in error.error_msg
    error = sdk_error(lambda: mig.create(src, dst, object_key=[""], description="bad <desc>"))
    assert (error.status_code, error.error_code) == (400, "OMS.0078")
    put_objects(moto_s3, src, [f"e/{i:02d}" for i in range(40)], body=lambda key: b"x" * 65536)
    slow = [BandwidthPolicyDto(start="00:00", end="12:00", max_bandwidth=1_048_576),
            BandwidthPolicyDto(start="12:00", end="00:00", max_bandwidth=1_048_576)]
    task_id = mig.create(src, dst, object_key=[""], bandwidth_policy=slow)
    error = sdk_error(lambda: mig.client.delete_task(DeleteTaskRequest(task_id=task_id)))
    assert (error.status_code, error.error_code) == (400, "OMSYNC.0409")
    task = mig.wait(task_id)
    assert task.status == 5
    error = sdk_error(lambda: mig.client.stop_task(StopTaskRequest(task_id=task_id)))
    assert (error.status_code, error.error_code) == (400, "OMSYNC.0409")
    error = sdk_error(lambda: mig.start(task_id))
    assert (error.status_code, error.error_code) == (400, "OMSYNC.0409")
    mig.client.delete_task(DeleteTaskRequest(task_id=task_id))
    assert sdk_error(lambda: mig.show(task_id)).status_code == 404
    # Raw HTTP: a non-numeric id and a bad status filter name the field.
    key = mig.sync.key
    raw = signed_request(mig.sync.server.url, "GET", f"/v2/{PROJECT}/tasks/abc", ak=key["access_key"],
                         sk=key["secret_key"], project_id=PROJECT)
    assert raw.status_code == 400 and "task_id" in raw.json()["error_msg"]
    raw = signed_request(mig.sync.server.url, "GET", f"/v2/{PROJECT}/tasks", ak=key["access_key"],
                         sk=key["secret_key"], project_id=PROJECT, query=[("status", 6)])
    assert raw.status_code == 400 and "status" in raw.json()["error_msg"]


def test_another_project_never_sees_a_migration_task(moto_s3: S3Server, mig: Migrations) -> None:
    src, dst = moto_s3.make_bucket("mig-iso-src"), moto_s3.make_bucket("mig-iso-dst")
    put_objects(moto_s3, src, ["iso/1"])
    task_id = mig.create(src, dst, object_key=[""])
    server = mig.sync.server
    other_project = "0ther0123456789abcdef0123456789a"
    other_key = server.create_key(other_project)
    other = sdk_client(server.url, other_key["access_key"], other_key["secret_key"], other_project)
    assert sdk_error(lambda: other.show_task(ShowTaskRequest(task_id=task_id))).status_code == 404
    assert sdk_error(lambda: other.stop_task(StopTaskRequest(task_id=task_id))).status_code == 400
    assert sdk_error(lambda: other.delete_task(DeleteTaskRequest(task_id=task_id))).status_code == 400
    assert other.list_tasks(ListTasksRequest()).count == 0
    # The other project's key cannot reach this project's path either.
    raw = signed_request(server.url, "GET", f"/v2/{PROJECT}/tasks/{task_id}", ak=other_key["access_key"],
                         sk=other_key["secret_key"], project_id=PROJECT)
    assert raw.status_code == 403
    assert mig.wait(task_id).status == 5


@pytest.fixture
def killable(moto_s3: S3Server, tmp_path: Path) -> Iterator[tuple[OmsyncServer, Path]]:
    env = {
        "OMSYNC_ENDPOINTS": json.dumps(endpoints(moto_s3)),
        "OMSYNC_LEASE_SECONDS": "2",
        "OMSYNC_MAX_PENDING_PER_TASK": "300",
        "OMSYNC_OBJECT_LIST_INTERVAL_SECONDS": "1",
    }
    server = OmsyncServer(data_dir=tmp_path / "data", env=env, workers=4)
    yield server, tmp_path
    server.stop()


def _kill_group(server: OmsyncServer) -> None:
    """SIGKILL the serve process and its worker children: nothing gets to clean up."""
    assert server.proc is not None
    children = [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
    for pid in [server.proc.pid, *children]:
        os.kill(pid, signal.SIGKILL)
    server.proc.wait()


def test_sigkill_mid_listing_resumes_from_the_checkpoint(moto_s3: S3Server, killable: Any) -> None:
    server, _ = killable
    server.start()
    src, dst = moto_s3.make_bucket("mig-kill-src"), moto_s3.make_bucket("mig-kill-dst")
    keys = [f"k/{i:05d}" for i in range(1300)]
    put_objects(moto_s3, src, keys, body=lambda key: key.encode() * 100)
    mig = Migrations(Sync(server), moto_s3)
    task_id = mig.create(src, dst, object_key=["k/"])
    deadline = time.monotonic() + 30
    # The first page (1,000 keys) is in; the backlog bound (300 pending) holds the next one back.
    while mig.show(task_id).total_num < 1000:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _kill_group(server)
    database = sqlite3.connect(server.data_dir / "omsync.db")
    listed, done, after = database.execute(
        "SELECT listed_num, list_done, list_after FROM migration_tasks WHERE id = ?", (task_id,)).fetchone()
    database.close()
    assert 1000 <= listed < 1300 and not done and after is not None
    log_mark = moto_s3.log_path.stat().st_size
    server.start()
    task = mig.wait(task_id, timeout=120)
    assert task.status == 5, task
    # A key copied when the kill came but whose outcome was not recorded yet is found in the
    # destination by its retry and skipped; at most the 4 copy slots' worth.
    assert (task.total_num, task.successful_num + task.skipped_num, task.failed_num) == (1300, 1300, 0)
    assert task.skipped_num <= 4
    assert set(bucket_keys(moto_s3, dst, "k/")) == set(keys)
    database = sqlite3.connect(server.data_dir / "omsync.db")
    [(requests,)] = database.execute(
        "SELECT SUM(request) FROM stat_buckets WHERE task_id = "
        "(SELECT sync_task_id FROM migration_tasks WHERE id = ?)", (task_id,)).fetchall()
    database.close()
    assert requests == 1300  # every key entered the ledger once
    with open(moto_s3.log_path, "rb") as log:
        log.seek(log_mark)
        after_restart = log.read().decode(errors="replace")
    listings = [line for line in after_restart.splitlines() if "/mig-kill-src?" in line and "list-type=2" in line]
    assert listings and all("start-after=" in line or "continuation-token=" in line for line in listings), listings


def test_seaweedfs_prefix_migration_keeps_the_key_corpus_byte_exact(seaweed_s3: S3Server, make_sync: Any) -> None:
    url = seaweed_s3.endpoint_url + "#seaweedfs"
    sync: Sync = make_sync({f"Aliyun:{SRC_REGION}": url, f"HuaweiCloud:{DST_REGION}": url})
    weed = Migrations(sync, seaweed_s3, dst_ak=seaweed_s3.access_key)  # SeaweedFS checks the keys
    src, dst = seaweed_s3.make_bucket("mig-weed-src"), seaweed_s3.make_bucket("mig-weed-dst")
    save_prefix = "into/here "
    capabilities = resolve_endpoint("Aliyun", SRC_REGION, {f"Aliyun:{SRC_REGION}": url}).capabilities()
    keys = [key for _, key in holdable(capabilities) if capabilities.key_problem(save_prefix + key) is None]
    assert len(keys) >= 20
    put_objects(seaweed_s3, src, keys)
    task = weed.wait(weed.create(src, dst, object_key=[""], save_prefix=save_prefix))
    assert task.status == 5, task
    assert (task.total_num, task.successful_num) == (len(keys), len(keys))
    copied = {k for k in bucket_keys(seaweed_s3, dst) if not k.startswith("oms/")}
    assert copied == {save_prefix + k for k in keys}
    s3 = seaweed_s3.client()
    for key in keys:
        assert s3.get_object(Bucket=dst, Key=save_prefix + key)["Body"].read() == body_for(key), key
