"""Durable event intake: how many keys per second one ``omsync serve --workers 0`` accepts.

    python bench/ingest.py [--clients 8] [--duration 15] [--keys-per-call 100] [--tasks 1]

One ``omsync serve --workers 0`` is started (API only, SQLite ledger in a temporary data dir,
default settings except ``OMSYNC_LOG_LEVEL=WARNING``). A key and ``--tasks`` sync tasks are
created with the official SDK. Then ``--clients`` client processes each send signed
``CreateSyncEvents`` calls of ``--keys-per-call`` unique keys, one after the other over one
keep-alive HTTP connection, for ``--duration`` seconds (the tasks taken in turn). A call counts
only when answered 200, which omsync sends after the keys are committed to the ledger.

The clients sign with omsync's own ``SDK-HMAC-SHA256`` code (:mod:`omsync.api.signing`, what
:mod:`omsync.client` uses; the server verifies the official SDK's requests with the same code,
and the tasks here are created through the SDK), so a client costs little CPU next to omsync.

Printed: keys/s accepted, answer time p50/p99, omsync's CPU time per 1,000 keys accepted (user
+ system of the whole process from ``/proc/<pid>/stat`` over the measured window), its peak RSS
(``VmHWM``), the load average at start and end and ``git describe --dirty``. At the end every
task's REQUEST counter (ShowSyncTask) and its ledger rows (the SQLite file, read-only) are
checked against the keys the clients got a 200 for.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PROJECT,
    load,
    machine,
    omsync_api,
    percentile,
    proc_cpu_seconds,
    proc_status_kib,
    table,
)
from omsync.api.signing import (
    ALGORITHM,
    DATE_FORMAT,
    canonical_request,
    compute_signature,
    string_to_sign,
)

SIGNED_HEADERS = ("content-type", "host", "x-sdk-date")
CONTENT_TYPE = "application/json;charset=UTF-8"


def signed_headers(ak: str, sk: str, host: str, path: str, body: bytes, date: str) -> dict[str, str]:
    """Headers of one request signed as the SDK (and ``omsync.client``) signs it."""
    headers = {"Content-Type": CONTENT_TYPE, "Host": host, "X-Sdk-Date": date}
    canonical = canonical_request("POST", path.encode("ascii"), b"", headers, SIGNED_HEADERS, body)
    signature = compute_signature(sk, string_to_sign(canonical, date))
    headers["Authorization"] = f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(SIGNED_HEADERS)}, Signature={signature}"
    return headers


def client_process(index: int, port: int, ak: str, sk: str, task_ids: list[str], keys_per_call: int,
                   go: Any, duration: float, results: Any) -> None:
    """One client: once ready, waits for ``go`` (holding the start time), then sends signed
    CreateSyncEvents calls back to back for ``duration`` seconds; puts ``("ready", index)`` and
    then ``(index, accepted keys, calls, errors, latencies, last error)``."""
    host = f"127.0.0.1:{port}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    paths = [f"/v2/{PROJECT}/sync-tasks/{t}/events" for t in task_ids]
    latencies: list[float] = []
    accepted = calls = errors = 0
    last_error = ""
    sequence = 0
    results.put(("ready", index))
    start_at = go.get()
    end = start_at + duration
    while time.time() < end:
        task = sequence % len(task_ids)
        keys = [f"ingest/c{index:02d}/{sequence:09d}/{n:03d}" for n in range(keys_per_call)]
        sequence += 1
        body = json.dumps({"object_keys": keys}).encode()
        date = datetime.now(UTC).strftime(DATE_FORMAT)
        headers = signed_headers(ak, sk, host, paths[task], body, date)
        started = time.perf_counter()
        try:
            conn.request("POST", paths[task], body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            errors += 1
            last_error = f"{type(exc).__name__}: {exc}"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        calls += 1
        if response.status == 200:
            accepted += keys_per_call
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
            last_error = f"HTTP {response.status}: {answer[:300]!r}"
    conn.close()
    results.put((index, accepted, calls, errors, latencies, last_error))


def ledger_totals(data_dir: Path, task_id: str) -> tuple[int, int]:
    """``(rows, sum of generations)`` of the task's ledger, read from the SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'omsync.db'}?mode=ro", uri=True)) as conn:
        rows, generations = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(generation), 0) FROM ledger WHERE task_id = ?", (task_id,)).fetchone()
    return int(rows), int(generations)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of sending (default 15)")
    parser.add_argument("--keys-per-call", type=int, default=100, help="keys per CreateSyncEvents call (default 100)")
    parser.add_argument("--tasks", type=int, default=1, help="sync tasks the calls go to in turn (default 1)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.tasks < 1 or not 1 <= args.keys_per_call <= 100:
        parser.error("--clients, --duration, --tasks must be positive and --keys-per-call 1 to 100")

    print(f"# ingest: {args.clients} clients x {args.keys_per_call} keys per call for {args.duration:g} s, "
          f"{args.tasks} task(s)")
    print(f"# {machine()}")
    from huaweicloudsdkoms.v2 import CreateSyncTaskReq, CreateSyncTaskRequest

    with omsync_api(workers=0) as om:
        task_ids = []
        for n in range(args.tasks):
            body = CreateSyncTaskReq(
                src_cloud_type="HuaweiCloud", src_region="cn-north-4", src_bucket=f"ingest-src-{n}",
                src_ak="AK", src_sk="SK", dst_ak="AK", dst_sk="SK", dst_region="cn-north-4",
                dst_bucket=f"ingest-dst-{n}",
            )
            task_ids.append(str(om.client().create_sync_task(CreateSyncTaskRequest(body=body)).sync_task_id))
        port = om.server.port
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        go = context.Queue()
        procs = [
            context.Process(target=client_process, name=f"ingest-client-{i}", args=(
                i, port, om.key["access_key"], om.key["secret_key"], task_ids, args.keys_per_call, go,
                args.duration, results))
            for i in range(args.clients)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            results.get(timeout=300)  # every client is ready: imported, connected
        start_at = time.time()
        for _ in procs:
            go.put(start_at)
        load_start = load()
        cpu_start = proc_cpu_seconds(om.pid) or 0.0
        wall_start = time.monotonic()
        gathered = [results.get(timeout=args.duration + 120) for _ in procs]
        wall = time.monotonic() - wall_start
        cpu = (proc_cpu_seconds(om.pid) or 0.0) - cpu_start
        load_end = load()
        for proc in procs:
            proc.join(30)
        peak_kib = proc_status_kib(om.pid, "VmHWM") or 0

        accepted = sum(r[1] for r in gathered)
        calls = sum(r[2] for r in gathered)
        errors = sum(r[3] for r in gathered)
        latencies = [x for r in gathered for x in r[4]]
        last_errors = [r[5] for r in gathered if r[5]]

        # Verification: every key answered 200 is counted once, and stored.
        requests = sum(om.counters(t)[0] for t in task_ids)
        stored = [ledger_totals(om.server.data_dir, t) for t in task_ids]
        rows = sum(s[0] for s in stored)
        generations = sum(s[1] for s in stored)

    rate = accepted / wall if wall > 0 else 0.0
    print()
    print(table(
        ["keys/s accepted", "calls", "errors", "answer p50 ms", "answer p99 ms", "omsync CPU ms / 1,000 keys",
         "omsync CPU %", "peak RSS MiB"],
        [[f"{rate:,.0f}", f"{calls:,}", errors, f"{percentile(latencies, 0.5) * 1000:.1f}",
          f"{percentile(latencies, 0.99) * 1000:.1f}",
          f"{cpu * 1000 / (accepted / 1000):.1f}" if accepted else "-",
          f"{100 * cpu / wall:.0f}", f"{peak_kib / 1024:.0f}"]],
    ))
    print()
    print(f"keys accepted (200): {accepted:,} in {wall:.1f} s; REQUEST counted: {requests:,}; "
          f"ledger rows: {rows:,}, generations: {generations:,}")
    print(f"# {load_start} at start, {load_end} at end")
    if last_errors:
        print(f"# last error of a client: {last_errors[0]}")
    ok = accepted > 0 and requests == accepted and rows == accepted and generations == accepted
    print("verification:", "OK, REQUEST = keys accepted = ledger rows" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
