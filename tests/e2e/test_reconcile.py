"""Reconciliation of a sync task end to end: a real ``omsync serve`` with worker processes,
moto and SeaweedFS, the official SDK for the task and signed HTTP for omsync's own
reconciliation resource.

* a destination with missing, stale and extra objects is repaired exactly (counts checked),
  extras untouched, the awkward-key corpus byte-exact, the drift report in the destination;
* SeaweedFS, which does not list in key order, is joined correctly all the same;
* a run killed with SIGKILL mid-listing continues from its checkpoint in a new process;
* another project's task is the OMS not-found error.
"""

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
from urllib.parse import unquote_plus

import pytest
from huaweicloudsdkoms.v2 import StartSyncTaskReq, StartSyncTaskRequest, StopSyncTaskRequest

from omsync.stores.profiles import resolve_endpoint
from tests.e2e.conftest import PROJECT, Sync
from tests.key_corpus import holdable
from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request
from tests.servers import S3Server

SRC_REGION, DST_REGION = "cn-hangzhou", "cn-north-4"


def body_for(key: str, version: int = 0) -> bytes:
    seed = hashlib.sha256(f"{version}:{key}".encode()).digest()
    return seed * (1 + seed[0] % 20 + version)


def put_objects(server: S3Server, bucket: str, items: dict[str, bytes]) -> None:
    s3 = server.client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))


def bucket_objects(server: S3Server, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix`` with its bytes (keys decoded byte-exact)."""
    s3 = server.client()
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, EncodingType="url"):
        for item in page.get("Contents", []):
            key = unquote_plus(item["Key"])
            found[key] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return found


class Reconcile:
    """omsync's reconciliation resource over signed HTTP."""

    def __init__(self, sync: Sync) -> None:
        self.sync = sync

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, key: dict[str, Any] | None = None,
             project: str = PROJECT) -> Any:
        key = key or self.sync.key
        return signed_request(self.sync.server.url, method, f"/v2/{project}/sync-tasks/{path}",
                              ak=key["access_key"], sk=key["secret_key"], project_id=project,
                              body=json.dumps(body).encode() if body is not None else b"")

    def start(self, task_id: str, prefix: str | None = None) -> str:
        response = self.call("POST", f"{task_id}/reconciliations", {"prefix": prefix} if prefix is not None else None)
        assert response.status_code == 200, response.text
        return str(response.json()["reconciliation_id"])

    def show(self, task_id: str, run_id: str) -> dict[str, Any]:
        response = self.call("GET", f"{task_id}/reconciliations/{run_id}")
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def wait(self, task_id: str, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.show(task_id, run_id)
            if run["status"] != "RUNNING":
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"still running: {run}\n{self.sync.server.log()[-3000:]}")
            time.sleep(0.2)


def task_fields(server: S3Server, src: str, dst: str) -> dict[str, Any]:
    return dict(src_cloud_type="Aliyun", src_region=SRC_REGION, src_bucket=src, src_ak=server.access_key,
                src_sk=server.secret_key, dst_ak=server.access_key, dst_sk=server.secret_key, dst_region=DST_REGION,
                dst_bucket=dst)


def wait_copied(sync: Sync, task_id: str, count: int, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        task = sync.show(task_id)
        if task.monthly_success_object + task.monthly_failure_object + task.monthly_skip_object >= count:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"not copied: {task}\n{sync.server.log()[-3000:]}")
        time.sleep(0.2)


def drift_report(server: S3Server, dst: str, task_id: str, run_id: str) -> tuple[list[list[str]], dict[str, Any]]:
    folder = f"oms/sync_task/{task_id}/reconciliation_reports/{run_id}/"
    files = bucket_objects(server, dst, folder)
    summary = json.loads(files.pop(folder + "summary.json"))
    lines = [line.split("\t") for name in sorted(files) for line in files[name].decode().splitlines()]
    return lines, summary


def scenario(server: S3Server, src: str, dst: str, corpus: list[str]) -> dict[str, set[str]]:
    """Source: the corpus and plain keys. Destination: some in step, some missing, some stale
    (other bytes, other size), some extra."""
    in_step = {f"same/{i:03d}" for i in range(20)}
    stale = {f"stale/{i:03d}" for i in range(7)}
    missing = {f"gone/{i:03d}" for i in range(11)} | set(corpus)
    extra = {f"extra/{i:03d}" for i in range(5)} | {"extra/x\ty", "zz-only-in-destination"}
    put_objects(server, src, {key: body_for(key) for key in in_step | stale | missing})
    time.sleep(1.1)  # the destination's copies are newer than their sources, whole seconds apart
    put_objects(server, dst, {key: body_for(key) for key in in_step})
    put_objects(server, dst, {key: body_for(key, 1) for key in stale | extra})
    return {"in_step": in_step, "stale": stale, "missing": missing, "extra": extra}


@pytest.fixture(scope="module")
def moto_sync(moto_s3: S3Server, make_sync: Any) -> Sync:
    url = moto_s3.endpoint_url + "#moto"
    sync: Sync = make_sync({f"Aliyun:{SRC_REGION}": url, f"HuaweiCloud:{DST_REGION}": url}, workers=2)
    return sync


def test_drift_is_repaired_exactly_and_extras_are_untouched(moto_s3: S3Server, moto_sync: Sync) -> None:
    capabilities = resolve_endpoint("Aliyun", SRC_REGION, {"Aliyun:*": moto_s3.endpoint_url + "#moto"}).capabilities()
    corpus = [key for _, key in holdable(capabilities)]
    assert len(corpus) > 30
    src, dst = moto_s3.make_bucket("rec-src"), moto_s3.make_bucket("rec-dst")
    sets = scenario(moto_s3, src, dst, corpus)
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst))
    rec = Reconcile(moto_sync)
    run_id = rec.start(task_id)
    run = rec.wait(task_id, run_id)
    sources = len(sets["in_step"]) + len(sets["stale"]) + len(sets["missing"])
    expected = {"status": "SUCCESS", "source_listed": sources,
                "destination_listed": len(sets["in_step"]) + len(sets["stale"]) + len(sets["extra"]),
                "missing": len(sets["missing"]), "differing": len(sets["stale"]), "extra": len(sets["extra"]),
                "enqueued": len(sets["missing"]) + len(sets["stale"]), "error_reason": None}
    assert {k: run[k] for k in expected} == expected, run
    assert run["finished_at"] >= run["started_at"] > 0
    # Enqueued keys are counted like events and copied by the engine.
    task = wait_copied(moto_sync, task_id, run["enqueued"])
    assert task.monthly_acceptance_request == run["enqueued"]
    assert (task.monthly_success_object, task.monthly_failure_object) == (run["enqueued"], 0)
    copied = {k: v for k, v in bucket_objects(moto_s3, dst).items() if not k.startswith("oms/")}
    want = {key: body_for(key) for key in sets["in_step"] | sets["stale"] | sets["missing"]}
    want |= {key: body_for(key, 1) for key in sets["extra"]}  # extras untouched
    assert copied == want
    # The drift report, next to the object lists: one line per drifted key, keys exact.
    lines, summary = drift_report(moto_s3, dst, task_id, run_id)
    assert summary["status"] == "SUCCESS" and summary["missing"] == run["missing"] and summary["finished_at"]
    kinds: dict[str, set[str]] = {"missing": set(), "differing": set(), "extra": set()}
    for kind, exact, *_ in lines:
        kinds[kind].add(unquote_plus(exact))
    assert kinds == {"missing": sets["missing"], "differing": sets["stale"], "extra": sets["extra"]}
    # A second run finds nothing to repair; the extras are still reported, omsync's files are not.
    again = rec.wait(task_id, rec.start(task_id))
    assert (again["missing"], again["differing"], again["extra"], again["enqueued"]) == (0, 0, len(sets["extra"]), 0)
    listed = rec.call("GET", f"{task_id}/reconciliations").json()["reconciliations"]
    assert [r["reconciliation_id"] for r in listed] == [again["reconciliation_id"], run_id]


def test_prefix_limits_the_run(moto_s3: S3Server, moto_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("rec-prefix-src"), moto_s3.make_bucket("rec-prefix-dst")
    put_objects(moto_s3, src, {f"{top}/{i}": body_for(f"{top}/{i}") for top in ("a", "b") for i in range(4)})
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst))
    rec = Reconcile(moto_sync)
    run = rec.wait(task_id, rec.start(task_id, prefix="b/"))
    assert (run["prefix"], run["source_listed"], run["missing"], run["enqueued"]) == ("b/", 4, 4, 4)
    wait_copied(moto_sync, task_id, 4)
    assert sorted(k for k in bucket_objects(moto_s3, dst) if not k.startswith("oms/")) == [f"b/{i}" for i in range(4)]


def test_errors_and_project_isolation(moto_s3: S3Server, moto_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("rec-err-src"), moto_s3.make_bucket("rec-err-dst")
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst))
    rec = Reconcile(moto_sync)
    other_project = "0ther0123456789abcdef0123456789a"
    other = moto_sync.server.create_key(other_project)
    refused = rec.call("POST", f"{task_id}/reconciliations", key=other, project=other_project)
    assert refused.status_code == 404 and refused.json()["error_code"] == "OMS.1009"
    unknown = rec.call("POST", "no-such-task/reconciliations")
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "OMS.1009"
    run_id = rec.start(task_id)
    hidden = rec.call("GET", f"{task_id}/reconciliations/{run_id}", key=other, project=other_project)
    assert hidden.status_code == 404 and hidden.json()["error_code"] == "OMS.1009"
    assert rec.call("GET", f"{task_id}/reconciliations/nope").status_code == 404
    for body, field in ((b'{"prefix": 5}', "prefix"), (b'{"prefx": ""}', "prefx"), (b"[", "")):
        response = signed_request(moto_sync.server.url, "POST", f"/v2/{PROJECT}/sync-tasks/{task_id}/reconciliations",
                                  ak=moto_sync.key["access_key"], sk=moto_sync.key["secret_key"],
                                  project_id=PROJECT, body=body)
        assert response.status_code == 400 and response.json()["error_code"] == "OMS.0064", response.text
        assert field in response.json()["error_msg"]
    assert rec.wait(task_id, run_id)["status"] == "SUCCESS"


def test_seaweedfs_listing_order_does_not_mislead_the_join(seaweed_s3: S3Server, make_sync: Any) -> None:
    """SeaweedFS lists 'a/x' before 'a.txt' (directory by directory); a join that trusted its
    order would call keys missing and extra at once."""
    url = seaweed_s3.endpoint_url + "#seaweedfs"
    sync: Sync = make_sync({f"Aliyun:{SRC_REGION}": url, f"HuaweiCloud:{DST_REGION}": url}, workers=2)
    src, dst = seaweed_s3.make_bucket("rec-weed-src"), seaweed_s3.make_bucket("rec-weed-dst")
    keys = ["a/x", "a.txt", "a-b", "a/y/z", "a0", "b", "b/c", "b.d", "中文/x", "中文.txt"]
    put_objects(seaweed_s3, src, {key: body_for(key) for key in keys})
    present = ["a/x", "a.txt", "b/c", "中文.txt"]
    put_objects(seaweed_s3, dst, {key: body_for(key) for key in present})
    put_objects(seaweed_s3, dst, {"a.zzz": b"extra", "a/w": b"extra"})
    task_id = sync.create_task(**task_fields(seaweed_s3, src, dst))
    rec = Reconcile(sync)
    run = rec.wait(task_id, rec.start(task_id))
    assert run["status"] == "SUCCESS", run
    assert (run["source_listed"], run["destination_listed"]) == (len(keys), len(present) + 2)
    assert (run["missing"], run["differing"], run["extra"]) == (len(keys) - len(present), 0, 2)
    wait_copied(sync, task_id, run["enqueued"])
    copied = {k: v for k, v in bucket_objects(seaweed_s3, dst).items() if not k.startswith("oms/")}
    assert copied == {**{key: body_for(key) for key in keys}, "a.zzz": b"extra", "a/w": b"extra"}


@pytest.fixture
def killable(moto_s3: S3Server, tmp_path: Path) -> Iterator[OmsyncServer]:
    url = moto_s3.endpoint_url + "#moto"
    env = {
        "OMSYNC_ENDPOINTS": json.dumps({f"Aliyun:{SRC_REGION}": url, f"HuaweiCloud:{DST_REGION}": url}),
        "OMSYNC_LEASE_SECONDS": "2",
        "OMSYNC_MAX_PENDING_PER_TASK": "300",
    }
    server = OmsyncServer(data_dir=tmp_path / "data", env=env, workers=8)
    yield server
    server.stop()


def _kill_group(server: OmsyncServer) -> None:
    """SIGKILL the serve process and its worker children: nothing gets to clean up."""
    assert server.proc is not None
    children = [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
    for pid in [server.proc.pid, *children]:
        os.kill(pid, signal.SIGKILL)
    server.proc.wait()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_sigkill_mid_listing_continues_from_the_checkpoint(moto_s3: S3Server, killable: OmsyncServer,
                                                           how: str) -> None:
    server = killable.start()
    src, dst = moto_s3.make_bucket(f"rec-{how.lower()}-src"), moto_s3.make_bucket(f"rec-{how.lower()}-dst")
    keys = [f"k/{i:05d}" for i in range(1500)]
    put_objects(moto_s3, src, {key: key.encode() for key in keys})
    sync = Sync(server)
    fields = task_fields(moto_s3, src, dst)
    task_id = sync.create_task(**fields)
    # Stopped: the enqueued keys wait, so the backlog bound (300) holds the run after its first
    # window of 1,000 keys.
    sync.client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    rec = Reconcile(sync)
    run_id = rec.start(task_id)
    deadline = time.monotonic() + 30
    while rec.show(task_id, run_id)["source_listed"] < 1000:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)
    busy = rec.call("POST", f"{task_id}/reconciliations")  # one run of a task at a time
    assert busy.status_code == 400 and busy.json()["error_code"] == "OMSYNC.0409", busy.text
    assert run_id in busy.json()["error_msg"]
    time.sleep(0.5)
    if how == "SIGKILL":
        _kill_group(server)
    else:
        server.stop()  # SIGTERM: the worker gives the lease back, the checkpoint stays
    database = sqlite3.connect(server.data_dir / "omsync.db")
    status, listed, position, lease_until = database.execute(
        "SELECT status, source_listed, position, lease_until FROM reconciliations WHERE id = ?", (run_id,)).fetchone()
    database.close()
    assert (status, listed, bytes(position).decode()) == ("RUNNING", 1000, "k/00999")
    assert (lease_until == 0) == (how == "SIGTERM")
    log_mark = moto_s3.log_path.stat().st_size
    server.start()
    sync = Sync(server)
    sync.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=StartSyncTaskReq(
        src_ak=fields["src_ak"], src_sk=fields["src_sk"], dst_ak=fields["dst_ak"], dst_sk=fields["dst_sk"])))
    run = rec.wait(task_id, run_id, timeout=120)
    assert (run["status"], run["source_listed"], run["missing"], run["enqueued"], run["extra"]) == (
        "SUCCESS", 1500, 1500, 1500, 0), run
    assert run["takeovers"] >= 1
    wait_copied(sync, task_id, 1500, timeout=120)
    assert set(bucket_objects(moto_s3, dst, "k/")) == set(keys)
    # The new process listed the source after the checkpoint, not from its start.
    with open(moto_s3.log_path, "rb") as log:
        log.seek(log_mark)
        after_restart = log.read().decode(errors="replace")
    # (StartSyncTask's bucket check lists one object: max-keys=1)
    listings = [line for line in after_restart.splitlines() if f"/{src}?" in line and "max-keys=1000" in line]
    assert listings and all("start-after=" in line or "continuation-token=" in line for line in listings), listings


def test_cli_reconcile_waits_lists_and_shows(moto_s3: S3Server, moto_sync: Sync, tmp_path: Path) -> None:
    from tests.cli.conftest import Cli, connection_env

    src, dst = moto_s3.make_bucket("rec-cli-src"), moto_s3.make_bucket("rec-cli-dst")
    put_objects(moto_s3, src, {f"p/{i}": body_for(f"p/{i}") for i in range(3)} | {"q/1": b"q"})
    put_objects(moto_s3, dst, {"p/extra": b"x"})
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst))
    cli = Cli(tmp_path, connection_env(moto_sync.server, moto_sync.key), (moto_sync.key["secret_key"],))
    done = cli("reconcile", task_id, "--prefix", "p/", "--wait", "--json")
    assert done.code == 0, done.stderr
    run = done.json()
    assert (run["status"], run["prefix"], run["missing"], run["extra"], run["enqueued"]) == ("SUCCESS", "p/", 3, 1, 3)
    shown = cli("reconcile", task_id, "--show", run["reconciliation_id"])
    assert shown.code == 0 and "SUCCESS" in shown.stdout and "missing" in shown.stdout, shown.stdout
    listed = cli("reconcile", task_id, "--list", "--json")
    assert [r["reconciliation_id"] for r in listed.json()["reconciliations"]] == [run["reconciliation_id"]]
    unknown = cli("reconcile", "no-such-task", "--json")
    assert unknown.code != 0 and unknown.error()["error"]["error_code"] == "OMS.1009"
    wait_copied(moto_sync, task_id, 3)


def test_schedule_starts_runs_by_itself(moto_s3: S3Server, moto_sync: Sync, tmp_path: Path) -> None:
    from tests.cli.conftest import Cli, connection_env

    src, dst = moto_s3.make_bucket("rec-sched-src"), moto_s3.make_bucket("rec-sched-dst")
    put_objects(moto_s3, src, {"s/1": b"one", "s/2": b"two"})
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst))
    cli = Cli(tmp_path, connection_env(moto_sync.server, moto_sync.key), (moto_sync.key["secret_key"],))
    refused = cli("reconcile", task_id, "--every", "30s", "--json")
    assert refused.code != 0 and "interval_seconds" in refused.error()["error"]["error_msg"]
    assert cli("reconcile", task_id, "--every", "soon").code != 0
    before = int(time.time() * 1000)
    scheduled = cli("reconcile", task_id, "--every", "1h", "--prefix", "s/", "--json")
    assert scheduled.code == 0, scheduled.stderr
    assert (scheduled.json()["interval_seconds"], scheduled.json()["prefix"]) == (3600, "s/")
    rec = Reconcile(moto_sync)
    deadline = time.monotonic() + 30
    while not (runs := rec.call("GET", f"{task_id}/reconciliations").json()["reconciliations"]):
        assert time.monotonic() < deadline, moto_sync.server.log()[-3000:]
        time.sleep(0.5)
    [run] = runs
    done = rec.wait(task_id, run["reconciliation_id"])
    assert (done["status"], done["prefix"], done["missing"], done["enqueued"]) == ("SUCCESS", "s/", 2, 2)
    shown = rec.call("GET", f"{task_id}/reconciliation-schedule").json()
    assert shown["next_run_at"] >= before + 3600_000
    cleared = cli("reconcile", task_id, "--no-schedule")
    assert cleared.code == 0, cleared.stderr
    assert rec.call("GET", f"{task_id}/reconciliation-schedule").status_code == 404
    wait_copied(moto_sync, task_id, 2)


def test_a_run_whose_source_is_gone_fails_with_the_reason(moto_s3: S3Server, moto_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("rec-gone-src"), moto_s3.make_bucket("rec-gone-dst")
    task_id = moto_sync.create_task(**task_fields(moto_s3, src, dst))
    moto_s3.client().delete_bucket(Bucket=src)
    rec = Reconcile(moto_sync)
    run = rec.wait(task_id, rec.start(task_id))
    assert run["status"] == "FAILED" and "NoSuchBucket" in run["error_reason"], run
    assert run["finished_at"] is not None and run["enqueued"] == 0
