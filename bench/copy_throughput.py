"""Copy throughput of omsync beside rclone, on one SeaweedFS started here.

    python bench/copy_throughput.py [--small 2000] [--large 4] [--large-mib 64] [--workers 16]
                                    [--variants server-side,streamed] [--repeat 1]

Source objects (``--small`` × 4 KiB, ``--large`` × ``--large-mib`` MiB) are uploaded once; then,
for every variant and size class, omsync and rclone each copy them into a fresh bucket of the
same server:

- omsync: a fresh ``omsync serve --workers W`` (SQLite ledger in a temporary data dir); every key
  is posted as a sync event (batches of 100 keys, 4 SDK client threads); the time runs from the
  first event sent to the last outcome recorded in the ledger.
- rclone: ``rclone copy --transfers W`` between the same buckets, timed from process start to
  exit. rclone lists the source (and destination) itself; omsync is told the keys by events.

Variants: ``server-side`` (both task sides are one store: CopyObject; rclone within one remote)
and ``streamed`` (source on another cloud type with the same URL and credentials, so omsync
GETs and PUTs every object; rclone between two remotes with the same settings).
The destination is listed afterwards and every object must be there with its size.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
DEFAULT_WORKERS = 16  # omsync's default OMSYNC_WORKERS


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


def run_omsync(server: S3Server, src: str, dst: str, keys: list[str], sizes: dict[str, int], workers: int,
               variant: str, kind: str, timeout: float) -> Result:
    server.make_bucket(dst)
    with omsync(server, workers) as om:
        task_id = om.create_task(server, src, dst, server_side=variant == "server-side")
        done = [0]
        with RssSampler(om.pid, interval=0.5, progress=lambda: done[0]) as sampler:
            start = time.time()
            om.post_all(task_id, keys)
            counters = wait_settled(om, task_id, len(keys), timeout,
                                    on_poll=lambda n: done.__setitem__(0, n))
        rows = om.ledger_rows(task_id)
        peak = om.stop()
    if counters[1] != len(keys):
        raise SystemExit(f"omsync {variant} {kind}: counters {counters}, expected {len(keys)} successes")
    seconds = max(r[2] for r in rows) / 1000 - start
    verify(server, dst, kind + "/", sizes, f"omsync {variant}")
    return Result("omsync", variant, kind, len(keys), sum(sizes.values()), seconds, peak, sampler.samples)


def run_rclone(server: S3Server, src: str, dst: str, sizes: dict[str, int], workers: int, variant: str,
               kind: str, timeout: float, commands: list[str]) -> Result:
    server.make_bucket(dst)
    run = rclone_copy(server, src, dst, workers, server_side=variant == "server-side", timeout=timeout)
    commands.append(shown_command(run.argv))
    verify(server, dst, kind + "/", sizes, f"rclone {variant}")
    return Result("rclone", variant, kind, len(sizes), sum(sizes.values()), run.seconds, run.peak_rss_kib)


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
                        help="omsync copy slots = rclone --transfers (default 16, omsync's default)")
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
    runs: dict[tuple[str, str, str], list[Result]] = {}
    commands: list[str] = []
    with seaweedfs() as server:
        print(f"SeaweedFS S3 at {server.endpoint_url}")
        for kind, keys, size in classes:
            src = server.make_bucket(f"src-{kind}")
            took = upload(server, src, keys, size, threads=16 if kind == "small" else 4)
            print(f"uploaded {len(keys)} x {size} B to {src} in {took:.1f} s")
        for variant in variants:
            for kind, keys, size in classes:
                sizes = dict.fromkeys(keys, size)
                src = f"src-{kind}"
                for rep in range(args.repeat):
                    tag = f"{variant}-{kind}-{rep}"
                    om = run_omsync(server, src, f"om-{tag}", keys, sizes, args.workers, variant, kind,
                                    args.timeout)
                    runs.setdefault(("omsync", variant, kind), []).append(om)
                    rc = run_rclone(server, src, f"rc-{tag}", sizes, args.workers, variant, kind, args.timeout,
                                    commands)
                    runs.setdefault(("rclone", variant, kind), []).append(rc)
                    print(f"{tag}: omsync {om.seconds:.2f} s, rclone {rc.seconds:.2f} s ({load()})")

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
            # Each omsync run against the rclone run right after it, so drifting load cancels.
            paired = sorted(rate(o) / rate(p) for o, p in zip(results, runs[("rclone", variant, kind)], strict=True))
            unit = "obj/s" if kind == "small" else "MB/s"
            ratio = f"{paired[len(paired) // 2]:.2f}x {unit}"
            if len(paired) > 1:
                ratio += f" ({paired[0]:.2f}-{paired[-1]:.2f})"
        rows.append([tool, variant, kind, middle.objects, f"{middle.total_bytes / MB:.1f}", f"{middle.seconds:.2f}",
                     f"{middle.objects_per_s:.1f}", f"{middle.mb_per_s:.1f}", spread, ratio,
                     f"{max(r.peak_rss_kib for r in results) / 1024:.0f}"])
    print()
    print(f"workers / --transfers: {args.workers}; runs per row: {args.repeat} (median shown)")
    print(table(["tool", "variant", "size", "objects", "MB", "seconds", "objects/s", "MB/s",
                 "range (obj/s small, MB/s large)", "omsync/rclone", "peak RSS MiB"], rows))
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
