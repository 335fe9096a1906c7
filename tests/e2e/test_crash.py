"""Crash safety: ``omsync serve`` is SIGKILLed in the middle of a batch of multipart copies and
restarted on the same data directory.

The source is reached through a fault proxy that lets the first ranged GET of each object (one
5 MiB part) through and holds the next one after 1 MiB, so at the moment of the kill each copy
has an open multipart upload in the destination with a part in it — exactly what a crash
leaves behind. After the restart every key
must reach SUCCESS with a byte-exact destination object, the counters must add up, and no
multipart upload may stay open in the destination: the orphans of the killed process are
omsync's to clean up, since nobody else knows about them.
"""

from __future__ import annotations

import hashlib
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import waiting
from tests.e2e.conftest import Sync
from tests.e2e.test_sync_cross import failed_objects
from tests.faultproxy import FaultProxy, in_bucket, running_proxy
from tests.servers import S3Server

MIB = 1024 * 1024
PART = 5 * MIB
HOLD_AFTER = 1 * MIB
SIZES = [12 * MIB + i * 700 * 1024 + 13 * i for i in range(6)]  # 12 to 15.4 MiB, three or four parts
LEASE_SECONDS = 2.0
STEP_TIMEOUT = 30.0
CLEANUP_GRACE_SECONDS = 5.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with running_proxy(moto_s3.endpoint_url) as running:
        yield running


@pytest.fixture(scope="module")
def crash_sync(moto_s3: S3Server, proxy: FaultProxy, make_sync: Any) -> Sync:
    endpoints = {
        "Aliyun:cn-hangzhou": proxy.url + "#moto",             # source, through the proxy
        "HuaweiCloud:cn-north-4": moto_s3.endpoint_url + "#moto",  # destination, direct
    }
    # A short lease: keys leased by the killed process become claimable soon after the restart.
    sync: Sync = make_sync(
        endpoints, workers=8, lease_seconds=str(LEASE_SECONDS), multipart_threshold_bytes=str(PART),
        part_size_bytes=str(PART), part_concurrency="2")
    return sync


def wait_for(what: str, check: Any, timeout: float = STEP_TIMEOUT) -> Any:
    return waiting.wait_for(what, check, timeout)


def open_uploads(moto_s3: S3Server, bucket: str) -> list[tuple[str, str]]:
    uploads = moto_s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted((u["Key"], u["UploadId"]) for u in uploads)


def stored_parts(moto_s3: S3Server, bucket: str, key: str, upload_id: str) -> int:
    return len(moto_s3.client().list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []))


def test_sigkill_mid_copy_then_restart_finishes_every_key_and_leaves_no_upload(
        moto_s3: S3Server, proxy: FaultProxy, crash_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("crash-src"), moto_s3.make_bucket("crash-dst")
    s3 = moto_s3.client()
    sources: dict[str, bytes] = {}
    for number, size in enumerate(SIZES):
        key = f"crash/object {number}.bin"
        sources[key] = random.Random(key).randbytes(size)
        s3.put_object(Bucket=src, Key=key, Body=sources[key])
    hold = proxy.stall(in_bucket(src), after_bytes=HOLD_AFTER, times=len(sources), pass_first=1)
    task_id = crash_sync.create_task(
        src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, src_ak=moto_s3.access_key,
        src_sk=moto_s3.secret_key, dst_ak=moto_s3.access_key, dst_sk=moto_s3.secret_key,
        dst_region="cn-north-4", dst_bucket=dst)
    crash_sync.send(task_id, list(sources))

    # Every copy is mid-stream: its source GET held, its upload open with the first part stored.
    wait_for("every source GET to be held", lambda: hold.stalled == len(sources))
    before = wait_for("an open upload per key, each holding a part", lambda: (
        uploads if len(uploads := open_uploads(moto_s3, dst)) == len(sources)
        and all(stored_parts(moto_s3, dst, key, upload) for key, upload in uploads) else None))
    assert {key for key, _ in before} == set(sources)

    server = crash_sync.server
    server.stop(signal.SIGKILL)
    assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
    for key in sources:
        assert not s3.list_objects_v2(Bucket=dst, Prefix=key).get("Contents"), f"{key} copied before the kill"
    assert open_uploads(moto_s3, dst) == before  # the kill left them behind
    proxy.clear()  # the restarted process reads the sources at full speed

    server.start()
    task = crash_sync.wait_settled(task_id, timeout=STEP_TIMEOUT)
    counts = (task.monthly_success_object, task.monthly_failure_object, task.monthly_skip_object)
    assert counts == (len(sources), 0, 0), failed_objects(crash_sync, task_id)
    assert task.monthly_acceptance_request == sum(counts)
    assert task.monthly_size == sum(SIZES)
    for key, data in sources.items():
        got = s3.get_object(Bucket=dst, Key=key)["Body"].read()
        assert len(got) == len(data), f"{key}: {len(got)} of {len(data)} bytes"
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), key

    deadline = time.monotonic() + CLEANUP_GRACE_SECONDS
    while (left := open_uploads(moto_s3, dst)) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = [upload for upload in left if upload in before]
    assert left == [], (
        f"{len(left)} multipart uploads still open in the destination {CLEANUP_GRACE_SECONDS:.0f} s after every "
        f"key settled ({len(orphans)} of them begun by the killed process, which nobody aborted): {left}")
