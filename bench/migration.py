"""A migration task of a whole prefix on SeaweedFS, beside ``rclone copy`` of the same prefix.

    python bench/migration.py [--objects 100000] [--size 1024] [--workers 64] [--streamed]

``--objects`` objects of ``--size`` bytes are uploaded under ``mig/`` of one source bucket (with
a few objects beside the prefix, which must not be copied); then, in the same run:

- rclone: ``rclone copy sw:src/mig sw:<dst>/mig --transfers W`` (one remote: server-side
  CopyObject; with ``--streamed`` two remotes, every object through rclone), timed from process
  start to exit. rclone lists the prefix itself, as the migration task does.
- omsync: a fresh ``omsync serve`` with its defaults; one OMS migration task (CreateTask through
  the official SDK, ``task_type=prefix``, ``object_key=["mig/"]``) whose sides are two cloud
  types naming the same server (server-side copies; ``--streamed`` sets
  ``OMSYNC_SERVER_SIDE_COPY=false``); timed from CreateTask to ShowTask reporting status 5.

Checked afterwards: ShowTask ends at 5 with total_num = successful_num = objects and no
failure; every object was copied exactly once (one ledger row per key, generation 1, one
REQUEST each); both destinations hold exactly the source prefix with its sizes. omsync's RSS (API
process and worker processes together) is sampled as the copy progresses and printed at
0/25/50/75/100 % of the objects done: it stays flat whatever the object count, as only one
listing page is held at a time.

Run it on an otherwise idle machine; at the default size it takes several minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from huaweicloudsdkoms.v2 import CreateTaskReq, CreateTaskRequest, DstNodeReq, ShowTaskRequest, SrcNodeReq

import procstat
from common import (
    MB,
    OTHER_SIDE,
    SAME_SIDE,
    Omsync,
    bucket_contents,
    load,
    machine,
    omsync,
    rclone_binary,
    rclone_env,
    run_rclone_command,
    seaweedfs,
    shown_command,
    table,
    upload,
)

if TYPE_CHECKING:
    from tests.servers import S3Server

PREFIX = "mig/"


def warm(server: S3Server, bucket: str) -> None:
    """Create the bucket and write one object first (SeaweedFS allocates volumes on a bucket's
    first write); both tools' destinations get the same."""
    server.make_bucket(bucket)
    client = server.client()
    client.put_object(Bucket=bucket, Key="warm-up", Body=b"")
    client.delete_object(Bucket=bucket, Key="warm-up")


def verify(server: S3Server, bucket: str, expected: dict[str, int], who: str) -> None:
    got = bucket_contents(server, bucket, PREFIX)
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        raise SystemExit(f"{who}: {bucket} holds {len(got)} of {len(expected)} objects under {PREFIX}; "
                         f"missing e.g. {missing}")
    if bucket_contents(server, bucket, "other/"):
        raise SystemExit(f"{who}: objects outside {PREFIX} were copied")


def run_rclone(server: S3Server, src: str, dst: str, workers: int, streamed: bool, timeout: float) -> tuple[float, int, str]:
    warm(server, dst)
    remotes = ("swsrc", "swdst") if streamed else ("sw", "sw")
    argv = [rclone_binary(), "copy", f"{remotes[0]}:{src}/{PREFIX.rstrip('/')}", f"{remotes[1]}:{dst}/{PREFIX.rstrip('/')}",
            "--transfers", str(workers), "--s3-no-check-bucket", "--stats", "0"]
    run = run_rclone_command(argv, rclone_env(server, *dict.fromkeys(remotes)), timeout)
    return run.seconds, run.peak_rss_kib, shown_command(run.argv)


def run_omsync(server: S3Server, src: str, dst: str, objects: int, workers: int, streamed: bool,
               timeout: float) -> tuple[float, int, list[tuple[int, int]], dict[str, object]]:
    warm(server, dst)
    env = {"server_side_copy": "false"} if streamed else {}
    with omsync(server, workers, **env) as om:
        client = om.client()
        body = CreateTaskReq(
            task_type="prefix",
            src_node=SrcNodeReq(cloud_type=OTHER_SIDE[0], region=OTHER_SIDE[1], ak=server.access_key,
                                sk=server.secret_key, bucket=src, object_key=[PREFIX]),
            dst_node=DstNodeReq(ak=server.access_key, sk=server.secret_key, region=SAME_SIDE[1], bucket=dst),
        )
        rss: list[tuple[int, int]] = []  # (objects done, RSS KiB of the process tree)
        peak = 0
        start = time.monotonic()
        task_id = int(client.create_task(CreateTaskRequest(body=body)).id)
        deadline = start + timeout
        while True:
            task = client.show_task(ShowTaskRequest(task_id=task_id))
            tree = procstat.tree_kib(om.pid, "VmRSS")
            peak = max(peak, tree)
            rss.append((int(task.successful_num or 0), tree))
            if task.status in (4, 5):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"omsync: task not done after {timeout} s: {task}")
            # ShowTask counts the task's ledger rows: poll a big task less often.
            time.sleep(0.5 if objects <= 10_000 else 1.0)
        seconds = time.monotonic() - start
        peak = max(peak, procstat.tree_kib(om.pid, "VmHWM"))
        checks = ledger_checks(om, task_id)
        om.stop()
    if task.status != 5 or task.total_num != objects or task.successful_num != objects or task.failed_num:
        raise SystemExit(f"omsync: ShowTask ended {task.status} with total {task.total_num}, "
                         f"successful {task.successful_num}, failed {task.failed_num}, skipped {task.skipped_num}")
    if checks["rows"] != objects or checks["generations"] != objects or checks["requests"] != objects \
            or checks["successes"] != objects:
        raise SystemExit(f"omsync: not every object copied exactly once: {checks}")
    return seconds, peak, rss, {"show_task": (task.status, task.total_num, task.successful_num), **checks}


def ledger_checks(om: Omsync, task_id: int) -> dict[str, object]:
    """Rows, generations, SUCCESS outcomes and REQUESTs of the task's engine row in the ledger."""
    path = om.server.data_dir / "omsync.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        [sync_id] = conn.execute("SELECT sync_task_id FROM migration_tasks WHERE id = ?", (task_id,)).fetchone()
        rows, generations, successes = conn.execute(
            "SELECT COUNT(*), SUM(generation), SUM(outcome = 'SUCCESS') FROM ledger WHERE task_id = ?",
            (sync_id,)).fetchone()
        [requests] = conn.execute("SELECT SUM(request) FROM stat_buckets WHERE task_id = ?", (sync_id,)).fetchone()
    return {"rows": rows, "generations": generations, "successes": successes, "requests": requests}


def rss_points(series: list[tuple[int, int]], objects: int) -> str:
    points = []
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        target = fraction * objects
        done, kib = min(series, key=lambda s: abs(s[0] - target))
        points.append(f"{done}:{kib / 1024:.0f}")
    return " ".join(points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000, help="objects under the prefix (default 100000)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per object (default 1024)")
    parser.add_argument("--workers", type=int, default=64, help="omsync copy slots = rclone --transfers (default 64)")
    parser.add_argument("--streamed", action="store_true", help="both tools stream every object (no CopyObject)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="bound of one copy run in seconds")
    args = parser.parse_args(argv)
    if args.objects < 1 or args.size < 1 or args.workers < 1:
        parser.error("--objects, --size and --workers must be at least 1")

    keys = [f"{PREFIX}{i // 1000:04d}/object-{i:07d}" for i in range(args.objects)]
    expected = dict.fromkeys(keys, args.size)
    variant = "streamed" if args.streamed else "server-side"
    print(f"machine: {machine()}")
    print(f"at the start: {load()}")
    with seaweedfs() as server:
        src = server.make_bucket("mig-src")
        took = upload(server, src, keys, args.size, threads=16)
        upload(server, src, [f"other/{i}" for i in range(10)], args.size, threads=2)
        print(f"SeaweedFS S3 at {server.endpoint_url}; uploaded {len(keys)} x {args.size} B under {PREFIX} "
              f"in {took:.1f} s")
        rc_seconds, rc_peak, command = run_rclone(server, src, "mig-rclone", args.workers, args.streamed, args.timeout)
        verify(server, "mig-rclone", expected, "rclone")
        print(f"rclone: {rc_seconds:.1f} s ({load()})")
        om_seconds, om_peak, rss, checks = run_omsync(server, src, "mig-omsync", args.objects, args.workers,
                                                      args.streamed, args.timeout)
        verify(server, "mig-omsync", expected, "omsync")
        print(f"omsync: {om_seconds:.1f} s ({load()}); checks: {checks}")

    total_mb = args.objects * args.size / MB
    rows = [
        ["rclone copy", variant, args.objects, f"{rc_seconds:.1f}", f"{args.objects / rc_seconds:.0f}",
         f"{total_mb / rc_seconds:.1f}", f"{rc_peak / 1024:.0f}", "1.00x"],
        ["omsync migration", variant, args.objects, f"{om_seconds:.1f}", f"{args.objects / om_seconds:.0f}",
         f"{total_mb / om_seconds:.1f}", f"{om_peak / 1024:.0f}", f"{rc_seconds / om_seconds:.2f}x"],
    ]
    print()
    print(f"{args.objects} objects x {args.size} B under {PREFIX}; workers / --transfers {args.workers}")
    print(table(["tool", "variant", "objects", "seconds", "objects/s", "MB/s", "peak RSS MiB", "speed vs rclone"],
                rows))
    print()
    print(f"omsync RSS (API + worker processes, MiB) by objects done, done:MiB at 0/25/50/75/100 %: "
          f"{rss_points(rss, args.objects)}")
    print(f"rclone command: {command}")
    print(f"at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
