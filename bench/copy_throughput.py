"""Copy throughput of omsync beside rclone, on one SeaweedFS started here.

    python bench/copy_throughput.py [--small 2000] [--large 4] [--large-mib 64] [--workers 64]
                                    [--variants server-side,streamed] [--repeat 1]

Source objects (``--small`` × 4 KiB, ``--large`` × ``--large-mib`` MiB) are uploaded once; then,
for every variant and size class, omsync and rclone each copy them into a fresh bucket of the
same server:

- omsync: a fresh ``omsync serve`` with its defaults (SQLite ledger in a temporary data dir,
  worker processes beside the API process); every key is posted as a sync event (batches of 100
  keys, 4 SDK client threads); the time runs from the first event sent to the last outcome
  recorded in the ledger. The task migrates metadata (``enable_metadata_migration``), as rclone
  does by default.
- rclone: ``rclone copy --transfers W`` between the same buckets, timed from process start to
  exit, once within one remote (server-side CopyObject) and once between two remotes (streamed);
  ``omsync/best rclone`` compares omsync with the faster of the two in the same repeat. rclone
  lists the source (and destination) itself; omsync is told the keys by events.

omsync variants: ``server-side``: the task's sides are two cloud types (``Aliyun`` →
``HuaweiCloud``) pointed at the same URL with the same credentials, which omsync recognises as
one server and copies with CopyObject; ``streamed``: the same task with
``OMSYNC_SERVER_SIDE_COPY=false``, so every object goes GET → PUT through omsync.

CPU: omsync's own CPU (the API process and its worker processes, from /proc) per object, beside
SeaweedFS's CPU during the same run and rclone's (from its rusage).
The destination is listed afterwards and every object must be there with its size.
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat
from common import (
    MB,
    MIB,
    RssSampler,
    S3Server,
    bucket_contents,
    load,
    machine,
    omsync,
    rclone_copy,
    seaweedfs,
    shown_command,
    table,
    upload,
    wait_settled,
)

SMALL_BYTES = 4096
DEFAULT_WORKERS = 64  # omsync's default OMSYNC_WORKERS


@dataclass
class Result:
    tool: str
    variant: str
    kind: str
    objects: int
    total_bytes: int
    seconds: float
    peak_rss_kib: int
    rss_series: list[tuple[float, int, int]] | None = None
    cpu_seconds: float = 0.0          # the tool's own CPU during the run
    server_cpu_seconds: float = 0.0   # SeaweedFS's CPU during the run

    @property
    def cpu_ms_per_object(self) -> float:
        return self.cpu_seconds * 1000 / self.objects

    @property
    def server_ms_per_object(self) -> float:
        return self.server_cpu_seconds * 1000 / self.objects

    @property
    def objects_per_s(self) -> float:
        return self.objects / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / MB / self.seconds


def verify(server: S3Server, bucket: str, prefix: str, expected: dict[str, int], who: str) -> None:
    got = bucket_contents(server, bucket, prefix)
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        wrong = sorted(k for k in expected if k in got and got[k] != expected[k])[:5]
        raise SystemExit(f"{who}: destination {bucket} differs: {len(got)} of {len(expected)} objects; "
                         f"missing e.g. {missing}, wrong size e.g. {wrong}")


def warm_bucket(server: S3Server, bucket: str) -> None:
    """Create ``bucket`` and write (then delete) one object: SeaweedFS allocates a new bucket's
    volumes on its first write, and the first writes of a copy would wait for that (0.2–1 s)
    however the tool copies. Both tools' destinations get the same treatment."""
    server.make_bucket(bucket)
    client = server.client()
    client.put_object(Bucket=bucket, Key="warm-up", Body=b"")
    client.delete_object(Bucket=bucket, Key="warm-up")


def server_pid(server: S3Server) -> int:
    return int(server.process.pid)


def run_omsync(server: S3Server, src: str, dst: str, keys: list[str], sizes: dict[str, int], workers: int,
               variant: str, kind: str, timeout: float) -> Result:
    warm_bucket(server, dst)
    env: dict[str, str] = {}
    if variant == "streamed":
        env["server_side_copy"] = "false"
    with omsync(server, workers, **env) as om:
        task_id = om.create_task(server, src, dst, server_side=False, metadata=True)
        done = [0]
        peak_tree = [0]

        def progress() -> int:
            peak_tree[0] = max(peak_tree[0], procstat.tree_kib(om.pid, "VmRSS"))
            return done[0]

        with RssSampler(om.pid, interval=0.5, progress=progress) as sampler:
            cpu0 = procstat.tree_cpu_seconds(om.pid)
            api0 = procstat.cpu_seconds(om.pid)
            weed0 = procstat.tree_cpu_seconds(server_pid(server))
            start = time.time()
            om.post_all(task_id, keys)
            # The time is read from the ledger afterwards, so a slow poll costs no accuracy and
            # keeps the client's requests from weighing on omsync's CPU.
            counters = wait_settled(om, task_id, len(keys), timeout, poll=0.5,
                                    on_poll=lambda n: done.__setitem__(0, n))
            cpu = procstat.tree_cpu_seconds(om.pid) - cpu0
            api_cpu = procstat.cpu_seconds(om.pid) - api0
            weed = procstat.tree_cpu_seconds(server_pid(server)) - weed0
        rows = om.ledger_rows(task_id)
        peak = max(procstat.tree_kib(om.pid, "VmHWM"), peak_tree[0])
        om.stop()
    if counters[1] != len(keys):
        raise SystemExit(f"omsync {variant} {kind}: counters {counters}, expected {len(keys)} successes")
    seconds = max(r[2] for r in rows) / 1000 - start
    verify(server, dst, kind + "/", sizes, f"omsync {variant}")
    print(f"  omsync {variant} {kind}: CPU {cpu * 1000 / len(keys):.2f} ms per object, of which the API process "
          f"{api_cpu * 1000 / len(keys):.2f} ms and the worker processes {(cpu - api_cpu) * 1000 / len(keys):.2f} ms")
    return Result("omsync", variant, kind, len(keys), sum(sizes.values()), seconds, peak, sampler.samples,
                  cpu_seconds=cpu, server_cpu_seconds=weed)


def run_rclone(server: S3Server, src: str, dst: str, sizes: dict[str, int], workers: int, variant: str,
               kind: str, timeout: float, commands: list[str]) -> Result:
    warm_bucket(server, dst)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    weed0 = procstat.tree_cpu_seconds(server_pid(server))
    run = rclone_copy(server, src, dst, workers, server_side=variant == "server-side", timeout=timeout)
    weed = procstat.tree_cpu_seconds(server_pid(server)) - weed0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    commands.append(shown_command(run.argv))
    verify(server, dst, kind + "/", sizes, f"rclone {variant}")
    return Result("rclone", variant, kind, len(sizes), sum(sizes.values()), run.seconds, run.peak_rss_kib,
                  cpu_seconds=cpu, server_cpu_seconds=weed)


def rss_progress(series: list[tuple[float, int, int]], objects: int) -> str:
    """RSS at about 0, 25, 50, 75 and 100 % of the objects done."""
    if not series:
        return "-"
    points = []
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        target = fraction * objects
        sample = min(series, key=lambda s: abs(s[1] - target))
        points.append(f"{sample[1]}:{sample[2] / 1024:.0f}")
    return " ".join(points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2000, help="number of 4 KiB objects (default 2000)")
    parser.add_argument("--large", type=int, default=4, help="number of large objects (default 4)")
    parser.add_argument("--large-mib", type=int, default=64, help="size of a large object in MiB (default 64)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="omsync copy slots per worker process = rclone --transfers (default 64, omsync's default)")
    parser.add_argument("--variants", default="server-side,streamed",
                        help="comma-separated: server-side, streamed (default both)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each measurement, omsync and rclone alternating; medians are shown (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of one copy run in seconds")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(variants) <= {"server-side", "streamed"}:
        parser.error("--variants takes server-side and/or streamed")
    if args.repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")

    classes = []
    if args.small > 0:
        classes.append(("small", [f"small/{i:07d}" for i in range(args.small)], SMALL_BYTES))
    if args.large > 0:
        classes.append(("large", [f"large/{i:04d}" for i in range(args.large)], args.large_mib * MIB))

    print(f"machine: {machine()}")
    print(f"at the start: {load()}")
    runs: dict[tuple[str, str, str], list[Result]] = {}
    commands: list[str] = []
    with seaweedfs() as server:
        print(f"SeaweedFS S3 at {server.endpoint_url}")
        for kind, keys, size in classes:
            src = server.make_bucket(f"src-{kind}")
            took = upload(server, src, keys, size, threads=16 if kind == "small" else 4)
            print(f"uploaded {len(keys)} x {size} B to {src} in {took:.1f} s")
        for kind, keys, size in classes:
            sizes = dict.fromkeys(keys, size)
            src = f"src-{kind}"
            for rep in range(args.repeat):
                for variant in ("server-side", "streamed"):
                    tag = f"{variant}-{kind}-{rep}"
                    rc = run_rclone(server, src, f"rc-{tag}", sizes, args.workers, variant, kind, args.timeout,
                                    commands)
                    runs.setdefault(("rclone", variant, kind), []).append(rc)
                    print(f"{tag}: rclone {rc.seconds:.2f} s ({load()})")
                for variant in variants:
                    tag = f"{variant}-{kind}-{rep}"
                    om = run_omsync(server, src, f"om-{tag}", keys, sizes, args.workers, variant, kind,
                                    args.timeout)
                    runs.setdefault(("omsync", variant, kind), []).append(om)
                    print(f"{tag}: omsync {om.seconds:.2f} s ({load()})")

    def rate(r: Result) -> float:
        return r.objects_per_s if r.kind == "small" else r.mb_per_s

    rows = []
    for (tool, variant, kind), results in runs.items():
        middle = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
        spread = ""
        if len(results) > 1:
            spread = f"{min(rate(r) for r in results):.1f}-{max(rate(r) for r in results):.1f}"
        ratio = ""
        if tool == "omsync":
            # Each omsync run against the better rclone run of the same repeat, so drifting load cancels.
            best = [max(a, b, key=rate) for a, b in zip(runs[("rclone", "server-side", kind)],
                                                        runs[("rclone", "streamed", kind)], strict=True)]
            paired = sorted(rate(o) / rate(p) for o, p in zip(results, best, strict=True))
            unit = "obj/s" if kind == "small" else "MB/s"
            ratio = f"{paired[len(paired) // 2]:.2f}x {unit}"
            if len(paired) > 1:
                ratio += f" ({paired[0]:.2f}-{paired[-1]:.2f})"
        rows.append([tool, variant, kind, middle.objects, f"{middle.total_bytes / MB:.1f}", f"{middle.seconds:.2f}",
                     f"{middle.objects_per_s:.1f}", f"{middle.mb_per_s:.1f}", spread, ratio,
                     f"{middle.cpu_ms_per_object:.2f}", f"{middle.server_ms_per_object:.2f}",
                     f"{max(r.peak_rss_kib for r in results) / 1024:.0f}"])
    print()
    print(f"workers / --transfers: {args.workers}; runs per row: {args.repeat} (median shown)")
    print(table(["tool", "variant", "size", "objects", "MB", "seconds", "objects/s", "MB/s",
                 "range (obj/s small, MB/s large)", "omsync/best rclone", "own CPU ms/object",
                 "SeaweedFS CPU ms/object", "peak RSS MiB"], rows))
    print()
    print("omsync RSS (MiB) by objects done, as done:MiB at 0/25/50/75/100 % (first run):")
    for (tool, variant, kind), results in runs.items():
        if tool == "omsync":
            print(f"  {variant} {kind}: {rss_progress(results[0].rss_series or [], results[0].objects)}")
    print()
    print("rclone commands (remotes configured by RCLONE_CONFIG_<NAME>_* variables; <run> numbers the runs):")
    for command in dict.fromkeys(re.sub(r"-\d+(?= )", "-<run>", c) for c in commands):
        print(f"  {command}")
    print(f"at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
