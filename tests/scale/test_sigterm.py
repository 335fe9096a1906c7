"""Graceful shutdown of an ``omsync worker`` process on SIGTERM, on PostgreSQL.

The worker is copying two kinds of keys when it is told to stop: brief ones, whose source
answers after a short delay, and stuck ones, multipart copies whose source GET the proxy holds
after the first part (so a multipart upload is open in the destination). On SIGTERM it must stop
claiming at once (events posted during the drain stay untouched), let the brief copies finish
and record them, cancel the stuck ones at its shutdown deadline (aborting their uploads) and
hand their keys back, then exit 0 within the deadline plus a margin. A second worker then
finishes what was handed back: nothing is lost, every destination object is byte-exact, and no
multipart upload is left open.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from omsync.runtime import WorkerRuntime
from tests import waiting
from tests.scale.cluster import Cluster
from tests.scale.timed_proxy import TimedProxy
from tests.servers import S3Server

MIB = 1024 * 1024
PART = 5 * MIB
HOLD_AFTER = 1 * MIB  # inside the second part's ranged read: the upload exists and holds a part
STUCK = [f"stuck/{i} é" for i in range(3)]
BRIEF = [f"brief/{i}+x" for i in range(4)]
LATE = [f"late/{i}" for i in range(3)]
BRIEF_DELAY = 1.5  # seconds each brief source request waits: still in flight at the SIGTERM
DEADLINE = WorkerRuntime.shutdown_seconds  # how long a stopping worker lets copies finish
EXIT_MARGIN = 10.0  # cancelling, releasing, the final object-list flush, interpreter exit

pytestmark = pytest.mark.timeout(180)


def content(key: str) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    size = 12 * MIB + seed[0] * 1000 if key.startswith("stuck/") else 700 + seed[0]
    return (seed * (size // len(seed) + 1))[:size]


def wait_for(what: str, check: Callable[[], Any], cluster: Cluster, timeout: float = 60.0) -> Any:
    return waiting.wait_for(what, check, timeout, context=cluster.logs)


def ledger_rows(cluster: Cluster, task_id: str) -> dict[str, tuple[Any, ...]]:
    """key -> (state, outcome, lease_owner, attempts, generation, reported_generation)."""
    rows = cluster.sql("SELECT key, state, outcome, lease_owner, attempts, generation, reported_generation "
                       "FROM ledger WHERE task_id = %s", (task_id,))
    return {bytes(r[0]).decode(): tuple(r[1:]) for r in rows}


def test_sigterm_finishes_brief_copies_hands_back_stuck_ones_and_exits_zero(
        moto_s3: S3Server, make_cluster: Callable[..., Cluster]) -> None:
    src, dst = moto_s3.make_bucket("scale-term-src"), moto_s3.make_bucket("scale-term-dst")
    s3 = moto_s3.client()
    for key in STUCK + BRIEF + LATE:
        s3.put_object(Bucket=src, Key=key, Body=content(key))

    def brief_path(path: str) -> bool:
        return path.startswith(f"/{src}/brief/")

    proxy = TimedProxy(moto_s3.endpoint_url, slow=brief_path, delay=BRIEF_DELAY)
    proxy.start()
    try:
        hold = proxy.stall(lambda p: p.startswith(f"/{src}/stuck/"), after_bytes=HOLD_AFTER, pass_first=1)
        cluster = make_cluster(
            {"Aliyun:cn-hangzhou": proxy.url + "#moto", "HuaweiCloud:cn-north-4": moto_s3.endpoint_url + "#moto"},
            multipart_threshold_bytes=str(PART), part_size_bytes=str(PART), part_concurrency="1",
            retry_base_seconds="0.05", retry_max_seconds="0.5", object_list_interval_seconds="3600",
        )
        cluster.start_api()
        first = cluster.start_worker(8)
        task_id = cluster.create_task(
            src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src,
            src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key,
            dst_ak=moto_s3.access_key + "-dst", dst_sk=moto_s3.secret_key,
            dst_region="cn-north-4", dst_bucket=dst,
        )
        cluster.post(task_id, STUCK)
        wait_for("every stuck copy holding an upload with a part", lambda: hold.stalled == len(STUCK) and len(
            [u for u in s3.list_multipart_uploads(Bucket=dst).get("Uploads", [])
             if s3.list_parts(Bucket=dst, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")]) == len(STUCK),
            cluster)
        assert cluster.sql("SELECT count(*) FROM open_uploads") == [(len(STUCK),)]
        cluster.post(task_id, BRIEF)
        wait_for("the brief copies in flight", lambda: sum(
            1 for k, r in ledger_rows(cluster, task_id).items() if k in BRIEF and r[0] == "inflight") == len(BRIEF),
            cluster)
        owner = {r[2] for k, r in ledger_rows(cluster, task_id).items() if k in STUCK + BRIEF}
        assert len(owner) == 1 and None not in owner

        sent = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        # Events arriving while the worker drains must not be claimed by it.
        time.sleep(0.5)
        cluster.post(task_id, LATE)
        try:
            code = first.proc.wait(timeout=DEADLINE + EXIT_MARGIN)
        except Exception as exc:
            raise AssertionError(f"still running {DEADLINE + EXIT_MARGIN} s after SIGTERM\n{first.log()}") from exc
        took = time.monotonic() - sent
        assert code == 0, f"exit code {code}\n{first.log()}"
        # It waited for the stuck copies until the deadline, not less, and not much more.
        assert DEADLINE - 1 <= took <= DEADLINE + EXIT_MARGIN, took
        assert "Traceback" not in first.log(), first.log()

        rows = ledger_rows(cluster, task_id)
        # The brief copies were still reading their source when the signal came, and finished.
        brief_gets = {s.path: s for s in proxy.spans() if s.method == "GET" and brief_path(s.path)}
        assert sorted(brief_gets) == sorted(f"/{src}/{key}" for key in BRIEF)
        assert all(span.end > sent and span.status in (200, 206) for span in brief_gets.values()), brief_gets
        for key in BRIEF:  # finished during the drain, outcome recorded by the stopping worker
            assert rows[key][:3] == ("done", "SUCCESS", None), (key, rows[key])
        for key in STUCK:  # handed back: due again, no owner, no attempt counted, no outcome
            assert rows[key] == ("pending", None, None, 0, 1, 0), (key, rows[key])
        for key in LATE:  # never claimed
            assert rows[key] == ("pending", None, None, 0, 1, 0), (key, rows[key])
        assert not proxy.requests(match=lambda p: p.startswith(f"/{src}/late/"))
        # The cancelled copies aborted their uploads and dropped their records on the way out.
        assert not s3.list_multipart_uploads(Bucket=dst).get("Uploads")
        assert cluster.sql("SELECT count(*) FROM open_uploads") == [(0,)]

        proxy.clear()  # the source answers normally from now on
        cluster.start_worker(8)
        events = len(STUCK) + len(BRIEF) + len(LATE)
        assert cluster.wait_settled(task_id, events, 90) == (events, events, 0, 0)
    finally:
        proxy.stop()
    rows = ledger_rows(cluster, task_id)
    assert {k: r[:2] for k, r in rows.items()} == dict.fromkeys(STUCK + BRIEF + LATE, ("done", "SUCCESS"))
    for key in STUCK + BRIEF + LATE:
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == content(key), key
    assert not s3.list_multipart_uploads(Bucket=dst).get("Uploads")
    assert cluster.sql("SELECT count(*) FROM open_uploads") == [(0,)]
