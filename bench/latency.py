"""Event-to-copy latency of omsync at a steady event rate, and its memory over the run.

    python bench/latency.py [--rate 100] [--duration 10] [--workers 64]
                            [--variant server-side|streamed] [--keys-per-event 1] [--senders 8]
                            [--put-inline]

One SeaweedFS and one ``omsync serve`` (defaults: worker processes beside the API process) are
started; the destination bucket gets one write first, since SeaweedFS allocates a new bucket's
volumes on its first write. ``rate × duration`` new 4 KiB objects are written into the source bucket first (the
source cloud's work, not omsync's: with ``--put-inline`` each sender writes its object just
before its event instead, on the same two cores). Then, for ``rate × duration`` slots spaced
``1/rate`` s apart, ``--senders`` threads post one sync event per slot naming the key (through
the official SDK). ``--keys-per-event`` > 1 groups consecutive slots into one event.

Latency per key is the time from just before its event was sent (client clock) until omsync
recorded the key's outcome (``updated_at`` of its ledger row, read from the SQLite file
afterwards; same machine, same clock): the object is in the destination, verified, by then.
"sent -> answered" is the CreateSyncEvents round trip; "later than its slot" says whether slow
answers held the senders back.

RSS of omsync (the API process and its worker processes) is sampled every 0.5 s with the
number of events sent so far; the peak also takes each process's ``VmHWM`` before it stops.
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat
from common import (
    RssSampler,
    load,
    machine,
    omsync,
    percentile,
    s3_client,
    seaweedfs,
    table,
    upload,
    wait_settled,
)

SMALL_BYTES = 4096


def served_seconds(url: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound in s, count) of omsync's own CreateSyncEvents durations."""
    route = "/v2/{project_id}/sync-tasks/{sync_task_id}/events"
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "omsync_http_request_duration_seconds_bucket" and sample.labels.get("route") == route
                    and sample.labels.get("status") == "200"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return sorted(buckets.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="new keys per second, one event each unless --keys-per-event (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of steady events (default 10)")
    parser.add_argument("--workers", type=int, default=64, help="omsync copy slots per worker process (default 64)")
    parser.add_argument("--variant", choices=["server-side", "streamed"], default="server-side")
    parser.add_argument("--keys-per-event", type=int, default=1, help="keys per event (default 1)")
    parser.add_argument("--senders", type=int, default=8, help="client threads posting events (default 8)")
    parser.add_argument("--put-inline", action="store_true",
                        help="each sender writes its object just before its event instead of all beforehand")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound for the last outcomes after sending")
    parser.add_argument("--dump", type=Path, help="write key, sent, answered, recorded (epoch s) per key to this CSV")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.keys_per_event < 1:
        parser.error("--rate, --duration and --keys-per-event must be positive")

    slots = int(args.rate * args.duration)
    per_event = args.keys_per_event
    events = [[f"lat/{i:07d}" for i in range(start, min(slots, start + per_event))]
              for start in range(0, slots, per_event)]
    payload = b"x" * SMALL_BYTES

    print(f"machine: {machine()}")
    print(f"at the start: {load()}")
    with seaweedfs() as server:
        src, dst = server.make_bucket("lat-src"), server.make_bucket("lat-dst")
        s3 = s3_client(server, pool=max(args.senders, 16) + 2)
        # SeaweedFS allocates a new bucket's volumes on its first write (~0.2-1 s): take that
        # cold start out of the measurement, as any bucket in use has its volumes.
        s3.put_object(Bucket=dst, Key="warm-up", Body=b"")
        s3.delete_object(Bucket=dst, Key="warm-up")
        if not args.put_inline:
            took = upload(server, src, [k for keys in events for k in keys], SMALL_BYTES, threads=16)
            print(f"wrote {slots} source objects beforehand in {took:.1f} s")
        env: dict[str, str] = {}
        if args.variant == "streamed":
            env["server_side_copy"] = "false"
        with omsync(server, args.workers, **env) as om:
            task_id = om.create_task(server, src, dst, server_side=False, metadata=True)
            om.counters(task_id)  # warm the first SDK client and the API
            sent_at: dict[str, float] = {}
            answered_at: dict[str, float] = {}
            lag: list[float] = []
            lock = threading.Lock()
            next_event = [0]
            sent = [0]

            def sender(start: float) -> None:
                while True:
                    with lock:
                        index = next_event[0]
                        next_event[0] += 1
                    if index >= len(events):
                        return
                    keys = events[index]
                    # The event is due when its last key's slot comes.
                    due = start + (index * per_event + len(keys) - 1) / args.rate
                    delay = due - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    if args.put_inline:
                        for key in keys:
                            s3.put_object(Bucket=src, Key=key, Body=payload)
                    before = time.time()
                    om.post(task_id, keys)
                    after = time.time()
                    with lock:
                        lag.append(max(0.0, before - due))
                        for key in keys:
                            sent_at[key] = before
                            answered_at[key] = after
                        sent[0] += len(keys)

            peak_tree = [0]

            def progress() -> int:
                peak_tree[0] = max(peak_tree[0], procstat.tree_kib(om.pid, "VmRSS"))
                return sent[0]

            cpu0 = procstat.tree_cpu_seconds(om.pid)
            with RssSampler(om.pid, interval=0.5, progress=progress) as sampler:
                start = time.time() + 0.2
                threads = [threading.Thread(target=sender, args=(start,), daemon=True) for _ in range(args.senders)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                send_seconds = time.time() - start
                counters = wait_settled(om, task_id, slots, args.timeout)
            cpu = procstat.tree_cpu_seconds(om.pid) - cpu0
            rows = om.ledger_rows(task_id)
            served = served_seconds(om.server.url)
            peak_kib = max(procstat.tree_kib(om.pid, "VmHWM"), peak_tree[0])
            om.stop()

    if counters[1] != slots:
        print(f"WARNING: {counters[1]} successes of {slots} (failures {counters[2]}, skips {counters[3]})")
    finished = {key.decode(): updated for key, outcome, updated, _ in rows if outcome == "SUCCESS"}
    latency = [finished[k] / 1000 - sent_at[k] for k in sent_at if k in finished]
    if args.dump is not None:
        with args.dump.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["key", "sent", "answered", "recorded"])
            for key in sorted(sent_at, key=sent_at.__getitem__):
                writer.writerow([key, f"{sent_at[key]:.3f}", f"{answered_at[key]:.3f}",
                                 f"{finished[key] / 1000:.3f}" if key in finished else ""])
    after_answer = [finished[k] / 1000 - answered_at[k] for k in answered_at if k in finished]
    answer = [answered_at[k] - sent_at[k] for k in sent_at]

    def row(name: str, values: list[float]) -> list[str]:
        return [name, str(len(values)), *(f"{percentile(values, p) * 1000:.0f}" for p in (0.5, 0.95, 0.99, 1.0))]

    print()
    print(f"variant {args.variant}, workers {args.workers}, {per_event} key(s) per event, "
          f"{slots} keys at {args.rate:g}/s for {args.duration:g} s")
    print(f"achieved send rate: {slots / send_seconds:.1f} keys/s; sends later than their slot: "
          f"p50 {percentile(lag, 0.5) * 1000:.0f} ms, max {max(lag) * 1000:.0f} ms")
    print(table(["measure (ms)", "keys", "p50", "p95", "p99", "max"], [
        row("event sent -> outcome recorded", latency),
        row("event answered (200) -> outcome recorded", after_answer),
        row("event sent -> answered", answer),
    ]))
    if served:
        print("CreateSyncEvents answered by omsync within (server side, from its /metrics): " + ", ".join(
            f"{bound * 1000:g} ms: {count / served[-1][1] * 100:.1f} %" for bound, count in served
            if bound <= 0.25 or bound == float("inf")))
    first, last, peak_sampled = sampler.first_last_peak_mib()
    print()
    print(f"omsync RSS (API process): first {first:.0f} MiB, last {last:.0f} MiB, sampled peak "
          f"{peak_sampled:.0f} MiB; all omsync processes together: peak {peak_kib / 1024:.0f} MiB")
    print(f"omsync CPU: {cpu:.1f} s in all, {cpu * 1000 / max(1, slots):.2f} ms per key")
    series = sampler.samples
    if series:
        step = max(1, len(series) // 8)
        picks = series[::step] + ([series[-1]] if (len(series) - 1) % step else [])
        print("RSS by keys sent: " + ", ".join(f"{p}:{kib / 1024:.0f}" for _, p, kib in picks))
    print(f"at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
