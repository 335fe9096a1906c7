"""``/metrics`` of a real ``omsync serve`` with workers, scraped while it syncs between moto buckets.

The source side goes through the fault proxy so that a throttled store request (and its retries)
happens on purpose. Every counter must agree with the statistics API at the end, and never go
down between two scrapes.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huaweicloudsdkoms.v2 import (
    ListSyncTaskStatisticRequest,
    StartSyncTaskReq,
    StartSyncTaskRequest,
    StopSyncTaskRequest,
)
from prometheus_client.parser import text_string_to_metric_families

from tests import waiting
from tests.e2e.conftest import PROJECT, Sync
from tests.faultproxy import FaultProxy, object_path, running_proxy
from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request
from tests.servers import S3Server

pytestmark = pytest.mark.timeout(120)

METRICS_TOKEN = "scrape-token-5b0e7d1c"
PRESENT = [f"m/{i:02d} obj" for i in range(30)]
MISSING = ["missing/one", "missing/two"]
TWICE = PRESENT[1:5]  # sent twice in the first batch
THROTTLED_KEY = PRESENT[0]
WORKERS = 4

EXPECTED_FAMILIES = {
    "omsync_events_accepted", "omsync_keys_redriven", "omsync_outcomes", "omsync_copied_bytes",
    "omsync_event_to_outcome_seconds", "omsync_retries", "omsync_throttled", "omsync_task_keys_pending",
    "omsync_task_keys_inflight", "omsync_worker_slots", "omsync_worker_slots_busy",
    "omsync_worker_utilization_ratio", "omsync_store_request_duration_seconds",
    "omsync_store_request_errors", "omsync_http_request_duration_seconds", "omsync_build_info",
}
MONOTONIC_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def body_for(key: str) -> bytes:
    return (key.encode() * 50)[: 100 + 37 * len(key)]


@dataclass
class Snapshot:
    families: dict[str, str]  # family name -> type
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def label_values(self, name: str, label: str, **labels: str) -> set[str]:
        want = set(labels.items())
        return {dict(ls)[label] for (n, ls), _ in self.samples.items() if n == name and want <= ls and label in dict(ls)}


def scrape(url: str) -> Snapshot:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Snapshot(families, samples)


class Scraper(threading.Thread):
    """Scrapes every 50 ms until stopped; keeps every snapshot (and the first error)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.snapshots: list[Snapshot] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.snapshots.append(scrape(self.url))
            except BaseException as exc:
                self.error = exc
                return
            self._stop_event.wait(0.05)

    def finish(self) -> list[Snapshot]:
        self._stop_event.set()
        self.join(15)
        if self.error is not None:
            raise self.error
        return self.snapshots


@pytest.fixture(scope="module")
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with running_proxy(moto_s3.endpoint_url) as running:
        yield running


@pytest.fixture(scope="module")
def sync(moto_s3: S3Server, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sync]:
    endpoints = {"Aliyun:cn-hangzhou": proxy.url + "#moto", "HuaweiCloud:cn-north-4": moto_s3.endpoint_url + "#moto"}
    env = {
        "OMSYNC_ENDPOINTS": json.dumps(endpoints),
        "OMSYNC_METRICS_TOKEN": METRICS_TOKEN,
        "OMSYNC_MAX_PENDING_PER_TASK": str(len(PRESENT) + len(MISSING)),
        "OMSYNC_RETRY_BASE_SECONDS": "0.05",
        "OMSYNC_RETRY_MAX_SECONDS": "0.2",
        "OMSYNC_OBJECT_LIST_INTERVAL_SECONDS": "3600",
    }
    root: Path = tmp_path_factory.mktemp("metrics")
    server = OmsyncServer(data_dir=root / "data", env=env, workers=WORKERS).start()
    try:
        yield Sync(server)
    finally:
        server.stop()


def statistics(sync: Sync, task_id: str, since_ms: int) -> dict[str, int]:
    stats = sync.client.list_sync_task_statistic(ListSyncTaskStatisticRequest(
        sync_task_id=task_id, data_type="REQUEST,SUCCESS,FAILURE,SKIP,SIZE", start_time=str(since_ms),
        end_time=str(int(time.time() * 1000) + 60_000)))
    return {d.data_type: sum(p.statistic_num for p in d.data) for d in stats.statistic_datas}


def assert_conventions(snapshot: Snapshot) -> None:
    ours = {name: kind for name, kind in snapshot.families.items() if name.startswith("omsync_")}
    assert set(ours) >= EXPECTED_FAMILIES, EXPECTED_FAMILIES - set(ours)
    for name, kind in ours.items():
        assert re.fullmatch(r"omsync_[a-z0-9_]+", name), name
        assert not name.endswith(("_total", "_count", "_sum", "_bucket")), name
        if kind == "histogram":
            assert name.endswith("_seconds"), f"{name}: histograms here measure time, in seconds"
        if kind == "gauge":
            assert "bytes" not in name or name.endswith("_bytes"), name
    counters = {n for n, k in ours.items() if k == "counter"}
    for (sample, _), _value in snapshot.samples.items():
        base = sample.removesuffix("_total")
        if base in counters:
            assert sample.endswith("_total"), f"counter sample {sample} must end in _total"
    assert "omsync_copied_bytes" in counters


def assert_monotonic(earlier: Snapshot, later: Snapshot) -> None:
    for key, value in earlier.samples.items():
        name = key[0]
        if not name.startswith("omsync_") or not name.endswith(MONOTONIC_SUFFIXES):
            continue
        assert key in later.samples, f"series {key} vanished"
        assert later.samples[key] >= value, f"{key} went down: {value} -> {later.samples[key]}"


def assert_consistent(snapshot: Snapshot, task_id: str, *, settled: bool = False) -> None:
    """Invariants that hold at every instant, not just at the end. The copies run in worker
    processes, whose metric files are read while they write: an outcome's counter is written
    before its latency, so a scrape can fall between the two (equal once settled)."""
    accepted = snapshot.value("omsync_events_accepted_total", task_id=task_id)
    outcomes = snapshot.value("omsync_outcomes_total", task_id=task_id)
    coalesced = snapshot.value("omsync_outcomes_total", task_id=task_id, reason="coalesced")
    assert outcomes <= accepted
    observed = snapshot.value("omsync_event_to_outcome_seconds_count", task_id=task_id)
    if settled:
        assert observed == outcomes - coalesced
    else:
        assert observed <= outcomes - coalesced
    busy = snapshot.value("omsync_worker_slots_busy")
    assert snapshot.value("omsync_worker_slots") == WORKERS
    assert 0 <= busy <= WORKERS
    assert snapshot.value("omsync_worker_utilization_ratio") == pytest.approx(busy / WORKERS)
    assert busy == snapshot.value("omsync_task_keys_inflight")


def test_metrics_follow_a_sync_and_agree_with_the_statistics(
        moto_s3: S3Server, proxy: FaultProxy, sync: Sync) -> None:
    url = sync.server.url
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401

    src, dst = moto_s3.make_bucket("metrics-src"), moto_s3.make_bucket("metrics-dst")
    s3 = moto_s3.client()
    for key in PRESENT:
        s3.put_object(Bucket=src, Key=key, Body=body_for(key))
    credentials = {"src_ak": moto_s3.access_key, "src_sk": moto_s3.secret_key,
                   "dst_ak": moto_s3.access_key, "dst_sk": moto_s3.secret_key}
    since = int(time.time() * 1000) - 60_000
    task_id = sync.create_task(src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src,
                               dst_region="cn-north-4", dst_bucket=dst, **credentials)
    sync.client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    before = scrape(url)
    assert_conventions(before)
    assert before.value("omsync_events_accepted_total", task_id=task_id) == 0

    # While the task is stopped its events wait: the backlog is exactly the distinct keys, and
    # it is full, so one more event is refused and counted as throttling.
    sync.send(task_id, PRESENT + MISSING + TWICE)
    key = sync.key
    refused = signed_request(url, "POST", f"/v2/{PROJECT}/sync-tasks/{task_id}/events", ak=key["access_key"],
                             sk=key["secret_key"], project_id=PROJECT,
                             body=json.dumps({"object_keys": ["late"]}).encode())
    assert refused.status_code == 503, refused.text
    held = scrape(url)
    assert held.value("omsync_events_accepted_total", task_id=task_id) == len(PRESENT + MISSING + TWICE)
    assert held.value("omsync_task_keys_pending", task_id=task_id) == len(PRESENT + MISSING)
    assert held.value("omsync_throttled_total", task_id=task_id, cause="backlog") == 1
    assert held.value("omsync_outcomes_total", task_id=task_id) == 0
    assert_monotonic(before, held)

    rule = proxy.error(object_path(src, THROTTLED_KEY), methods=("HEAD",), times=2)
    scraper = Scraper(url)
    scraper.start()
    try:
        sync.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=StartSyncTaskReq(**credentials)))
        sync.wait_settled(task_id)
        sync.send(task_id, PRESENT[5:7])  # unchanged: SKIP not_modified
        sync.wait_settled(task_id)
    finally:
        during = scraper.finish()
        proxy.clear()
    assert rule.fired == 2
    # Worker processes publish their in-flight keys every second: wait for the last copies to show.
    after = waiting.wait_for("the workers to publish that nothing is in flight", lambda: (
        snapshot if (snapshot := scrape(url)).value("omsync_worker_slots_busy") == 0 else None), 10)

    assert len(during) >= 3, "the sync should have been scraped while it ran"
    snapshots = [before, held, *during, after]
    for earlier, later in itertools.pairwise(snapshots):
        assert_monotonic(earlier, later)
    for snapshot in snapshots:
        assert_consistent(snapshot, task_id)
    assert_consistent(after, task_id, settled=True)
    assert_conventions(after)

    stats = statistics(sync, task_id, since)
    assert stats["REQUEST"] == len(PRESENT + MISSING + TWICE) + 2
    assert stats["FAILURE"] == len(MISSING)
    accepted = after.value("omsync_events_accepted_total", task_id=task_id)
    redriven = after.value("omsync_keys_redriven_total", task_id=task_id)
    assert accepted + redriven == stats["REQUEST"]
    for kind in ("SUCCESS", "FAILURE", "SKIP"):
        assert after.value("omsync_outcomes_total", task_id=task_id, kind=kind) == stats[kind], kind
    assert after.value("omsync_outcomes_total", task_id=task_id, kind="FAILURE", reason="source_not_found") == 2
    assert after.value("omsync_outcomes_total", task_id=task_id, kind="SKIP", reason="not_modified") == 2
    assert after.value("omsync_copied_bytes_total", task_id=task_id) == stats["SIZE"]
    assert stats["SIZE"] == sum(len(body_for(k)) for k in PRESENT)
    finals = stats["SUCCESS"] + stats["FAILURE"] + stats["SKIP"] - after.value(
        "omsync_outcomes_total", task_id=task_id, reason="coalesced")
    assert after.value("omsync_event_to_outcome_seconds_count", task_id=task_id) == finals
    assert after.value("omsync_event_to_outcome_seconds_sum", task_id=task_id) > 0
    # The S3 client reports a 503 as SlowDown, body or not: the retries' reason is its code.
    assert after.value("omsync_retries_total", task_id=task_id, reason="slow_down") == 2
    assert after.value("omsync_throttled_total", task_id=task_id, cause="store") == 2

    # Store requests, by backend (the cloud type) and operation.
    source_ops = after.label_values("omsync_store_request_duration_seconds_count", "operation", backend="Aliyun")
    assert {"head", "get"} <= source_ops, source_ops
    dest_ops = after.label_values("omsync_store_request_duration_seconds_count", "operation", backend="HuaweiCloud")
    assert {"head", "put"} <= dest_ops, dest_ops
    assert after.value("omsync_store_request_errors_total", backend="Aliyun", operation="head", kind="throttled") == 2
    assert after.value("omsync_store_request_errors_total", backend="Aliyun", operation="head",
                       kind="not_found") >= len(MISSING)
    assert after.value("omsync_store_request_duration_seconds_count", backend="Aliyun", operation="get") == len(PRESENT)

    # Settled: nothing pending or in flight; the route template, not the path, labels requests.
    assert after.value("omsync_task_keys_pending", task_id=task_id) == 0
    assert after.value("omsync_task_keys_inflight", task_id=task_id) == 0
    routes = after.label_values("omsync_http_request_duration_seconds_count", "route")
    assert "/v2/{project_id}/sync-tasks/{sync_task_id}/events" in routes
    assert not any(task_id in route for route in routes)
    assert after.value("omsync_http_request_duration_seconds_count", method="POST",
                       route="/v2/{project_id}/sync-tasks/{sync_task_id}/events", status="503") == 1


def test_requests_and_failed_keys_are_logged(sync: Sync, moto_s3: S3Server) -> None:
    src, dst = moto_s3.make_bucket("metrics-log-src"), moto_s3.make_bucket("metrics-log-dst")
    credentials = {"src_ak": moto_s3.access_key, "src_sk": moto_s3.secret_key,
                   "dst_ak": moto_s3.access_key, "dst_sk": moto_s3.secret_key}
    task_id = sync.create_task(src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src,
                               dst_region="cn-north-4", dst_bucket=dst, **credentials)
    awkward = "gone\nforged line"
    sync.send(task_id, ["gone/plain", awkward])
    sync.wait_settled(task_id)
    key = sync.key
    response = signed_request(sync.server.url, "GET", f"/v2/{PROJECT}/sync-tasks/{task_id}/failed-objects",
                              ak=key["access_key"], sk=key["secret_key"], project_id=PROJECT)
    assert response.status_code == 200
    request_id = response.headers["X-Request-Id"]
    deadline = time.monotonic() + 5
    while request_id not in sync.server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = sync.server.log().splitlines()
    [request_line] = [line for line in lines if request_id in line]
    assert f"GET /v2/{PROJECT}/sync-tasks/{task_id}/failed-objects 200" in request_line
    failed = [line for line in lines if f"of task {task_id} failed" in line]
    assert len(failed) == 2, failed
    assert any("'gone/plain'" in line and "source_not_found" in line for line in failed)
    # The key is escaped: its line break cannot start a log line of its own.
    assert any(repr(awkward) in line for line in failed)
    assert not any(line.startswith("forged line") for line in lines)
