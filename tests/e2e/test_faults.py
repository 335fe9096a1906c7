"""Faults between omsync and real S3 servers: throttling, vanished sources, refused writes and
connections cut mid-stream, injected by a proxy in front of moto.

Every test ends with the key's outcome and reason checked, the proxy's record showing what
omsync did about the fault (retries, or none), and no partial object and no open multipart
upload left in the destination.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from huaweicloudsdkoms.v2 import StartSyncTaskReq, StartSyncTaskRequest, StopSyncTaskRequest

from tests.e2e.conftest import Sync
from tests.e2e.test_sync_cross import failed_objects
from tests.e2e.test_sync_s3 import body_for, put_sources
from tests.faultproxy import FaultProxy, object_path, running_proxy
from tests.servers import S3Server

MAX_ATTEMPTS = 3
RETRY_MAX_SECONDS = 0.5
MIB = 1024 * 1024
PART = 5 * MIB
LARGE = 12 * MIB  # three parts: 5 + 5 + 2 MiB
# Inside the first ranged GET (the store reads ranges of at least 4 MiB), after the multipart
# upload was opened: an interrupted attempt leaves an upload to abort.
CUT_AFTER = 3 * MIB
SETTLE_SECONDS = 30.0

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with running_proxy(moto_s3.endpoint_url) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_rules_left(proxy: FaultProxy) -> Iterator[None]:
    yield
    proxy.clear()


@pytest.fixture(scope="module")
def fault_sync(moto_s3: S3Server, proxy: FaultProxy, make_sync: Any) -> Sync:
    endpoints = {
        "Aliyun:cn-hangzhou": proxy.url + "#moto",          # every source goes through the proxy
        "HuaweiCloud:direct": moto_s3.endpoint_url + "#moto",  # a destination reached directly
        "HuaweiCloud:proxied": proxy.url + "#moto",         # a destination behind the proxy
    }
    sync: Sync = make_sync(
        endpoints, workers=4, max_attempts=str(MAX_ATTEMPTS), retry_base_seconds="0.05",
        retry_max_seconds=str(RETRY_MAX_SECONDS), multipart_threshold_bytes=str(PART),
        part_size_bytes=str(PART), part_concurrency="2")
    return sync


def dst_credentials(moto_s3: S3Server) -> tuple[str, str]:
    # Other credentials than the source's: the two sides are never one store, so every copy is
    # streamed GET → PUT through the proxy rather than a server-side copy.
    return moto_s3.access_key + "-dst", moto_s3.secret_key


def create_task(sync: Sync, moto_s3: S3Server, src: str, dst: str, dst_region: str) -> str:
    dst_ak, dst_sk = dst_credentials(moto_s3)
    return sync.create_task(
        src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, src_ak=moto_s3.access_key,
        src_sk=moto_s3.secret_key, dst_ak=dst_ak, dst_sk=dst_sk, dst_region=dst_region, dst_bucket=dst)


def outcome(sync: Sync, task_id: str) -> tuple[int, int, int, int]:
    """(REQUEST, SUCCESS, FAILURE, SKIP) once every accepted key has an outcome."""
    task = sync.wait_settled(task_id, timeout=SETTLE_SECONDS)
    return (task.monthly_acceptance_request, task.monthly_success_object, task.monthly_failure_object,
            task.monthly_skip_object)


def only_failure(sync: Sync, task_id: str, key: str) -> dict[str, Any]:
    failed = failed_objects(sync, task_id)
    assert [f["key"] for f in failed] == [key], failed
    return failed[0]


def absent(moto_s3: S3Server, bucket: str, key: str) -> bool:
    try:
        moto_s3.client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


def open_uploads(moto_s3: S3Server, bucket: str) -> list[tuple[str, str]]:
    uploads = moto_s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [(u["Key"], u["UploadId"]) for u in uploads]


def put_large(moto_s3: S3Server, bucket: str, key: str, size: int) -> bytes:
    data = random.Random(key).randbytes(size)
    moto_s3.client().put_object(Bucket=bucket, Key=key, Body=data)
    return data


def upload_calls(proxy: FaultProxy, bucket: str, key: str) -> tuple[int, int]:
    """(CreateMultipartUpload, AbortMultipartUpload) requests the proxy saw for one object."""
    path = object_path(bucket, key)
    created = [s for s in proxy.requests("POST", path) if s.query in ("uploads", "uploads=")]
    aborted = [s for s in proxy.requests("DELETE", path) if "uploadId=" in s.query]
    return len(created), len(aborted)


def test_throttled_source_is_retried_with_backoff(moto_s3: S3Server, proxy: FaultProxy, fault_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("flt-slow-src"), moto_s3.make_bucket("flt-slow-dst")
    key = "throttled/a b+c.txt"
    put_sources(moto_s3, src, [key])
    path = object_path(src, key)
    # Retry-After (1 s) is above the backoff cap, so each retry waits exactly the cap. (429: the
    # S3 client reports a 5xx answer by its status alone, without headers.)
    rule = proxy.error(path, times=2, status=429, retry_after="1")
    task_id = create_task(fault_sync, moto_s3, src, dst, "direct")
    fault_sync.send(task_id, [key])

    assert outcome(fault_sync, task_id) == (1, 1, 0, 0), failed_objects(fault_sync, task_id)
    assert rule.fired == 2
    seen = proxy.requests(match=path)
    assert [s.status for s in seen[:2]] == [429, 429]
    assert [(s.method, s.status in (200, 206)) for s in seen[2:]] == [("HEAD", True), ("GET", True)]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(seen[:3])]
    assert min(gaps) >= RETRY_MAX_SECONDS * 0.9, gaps
    assert moto_s3.client().get_object(Bucket=dst, Key=key)["Body"].read() == body_for(key)


def test_persistent_throttling_exhausts_the_attempts(moto_s3: S3Server, proxy: FaultProxy,
                                                     fault_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("flt-busy-src"), moto_s3.make_bucket("flt-busy-dst")
    key = "busy/object"
    put_sources(moto_s3, src, [key])
    path = object_path(src, key)
    rule = proxy.error(path, methods=("GET",))
    task_id = create_task(fault_sync, moto_s3, src, dst, "direct")
    fault_sync.send(task_id, [key])

    assert outcome(fault_sync, task_id) == (1, 0, 1, 0)
    failed = only_failure(fault_sync, task_id, key)
    assert failed["reason"] == "retries_exhausted"
    assert failed["attempts"] == MAX_ATTEMPTS
    # A 5xx answer reaches omsync as its status only (the S3 client keeps no body): 503 is SlowDown.
    assert "SlowDown" in failed["message"], failed
    assert rule.fired == MAX_ATTEMPTS
    assert proxy.count("GET", path) == MAX_ATTEMPTS
    assert absent(moto_s3, dst, key)


def test_source_deleted_before_the_copy_is_source_not_found(moto_s3: S3Server, proxy: FaultProxy,
                                                            fault_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("flt-gone-src"), moto_s3.make_bucket("flt-gone-dst")
    key = "gone/soon"
    put_sources(moto_s3, src, [key])
    task_id = create_task(fault_sync, moto_s3, src, dst, "direct")
    # Stopped, the task holds the event, so the deletion surely comes between event and copy.
    fault_sync.client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    fault_sync.send(task_id, [key])
    moto_s3.client().delete_object(Bucket=src, Key=key)
    dst_ak, dst_sk = dst_credentials(moto_s3)
    fault_sync.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=StartSyncTaskReq(
        src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key, dst_ak=dst_ak, dst_sk=dst_sk)))

    assert outcome(fault_sync, task_id) == (1, 0, 1, 0)
    failed = only_failure(fault_sync, task_id, key)
    assert failed["reason"] == "source_not_found"
    assert failed["attempts"] == 1
    path = object_path(src, key)
    assert (proxy.count("HEAD", path), proxy.count("GET", path)) == (1, 0)
    assert absent(moto_s3, dst, key)


def test_destination_refusing_writes_is_access_denied_without_retries(moto_s3: S3Server, proxy: FaultProxy,
                                                                      fault_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("flt-deny-src"), moto_s3.make_bucket("flt-deny-dst")
    key = "denied/object"
    put_sources(moto_s3, src, [key])
    proxy.deny_writes(dst)
    task_id = create_task(fault_sync, moto_s3, src, dst, "proxied")
    fault_sync.send(task_id, [key])

    assert outcome(fault_sync, task_id) == (1, 0, 1, 0)
    failed = only_failure(fault_sync, task_id, key)
    assert failed["reason"] == "access_denied"
    assert failed["attempts"] == 1
    assert "AccessDenied" in failed["message"], failed
    assert proxy.count("PUT", object_path(dst, key)) == 1
    assert proxy.count("GET", object_path(src, key)) == 1
    assert absent(moto_s3, dst, key)


def test_connection_cut_mid_stream_is_retried_and_the_upload_aborted(moto_s3: S3Server, proxy: FaultProxy,
                                                                     fault_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("flt-cut-src"), moto_s3.make_bucket("flt-cut-dst")
    key = "large/cut once.bin"
    data = put_large(moto_s3, src, key, LARGE)
    rule = proxy.cut(object_path(src, key), after_bytes=CUT_AFTER, times=1)
    task_id = create_task(fault_sync, moto_s3, src, dst, "proxied")
    fault_sync.send(task_id, [key])

    assert outcome(fault_sync, task_id) == (1, 1, 0, 0), failed_objects(fault_sync, task_id)
    assert rule.fired == 1
    assert proxy.count("GET", object_path(src, key)) >= 2  # the cut range, then the object again
    assert upload_calls(proxy, dst, key) == (2, 1)  # the cut attempt's upload was aborted
    got = moto_s3.client().get_object(Bucket=dst, Key=key)["Body"].read()
    assert len(got) == LARGE and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert open_uploads(moto_s3, dst) == []


def test_connection_cut_on_every_attempt_fails_leaving_nothing(moto_s3: S3Server, proxy: FaultProxy,
                                                               fault_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("flt-cutall-src"), moto_s3.make_bucket("flt-cutall-dst")
    key = "large/always cut.bin"
    put_large(moto_s3, src, key, LARGE)
    rule = proxy.cut(object_path(src, key), after_bytes=CUT_AFTER)
    task_id = create_task(fault_sync, moto_s3, src, dst, "proxied")
    fault_sync.send(task_id, [key])

    assert outcome(fault_sync, task_id) == (1, 0, 1, 0)
    failed = only_failure(fault_sync, task_id, key)
    assert failed["reason"] == "retries_exhausted"
    assert failed["attempts"] == MAX_ATTEMPTS
    assert rule.fired >= MAX_ATTEMPTS  # a range read ahead may be cut too
    assert upload_calls(proxy, dst, key) == (MAX_ATTEMPTS, MAX_ATTEMPTS)
    assert absent(moto_s3, dst, key)
    assert open_uploads(moto_s3, dst) == []
