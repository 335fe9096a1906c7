"""Event-to-copy latency of omsync at a steady event rate, and its memory over the run.

    python bench/latency.py [--rate 100] [--duration 20] [--workers 16]
                            [--variant server-side|streamed] [--keys-per-event 1] [--senders 32]

One SeaweedFS and one ``omsync serve`` are started. For ``rate × duration`` slots spaced
``1/rate`` s apart, a sender thread PUTs a new 4 KiB object into the source bucket and then posts
one sync event naming it (one key per event, through the official SDK). Latency per key is the
time from just before the event was sent (client clock) until omsync recorded the key's outcome
(``updated_at`` of its ledger row, read from the SQLite file afterwards; same machine, same
clock). ``--keys-per-event`` > 1 groups consecutive slots into one event instead.

RSS of the omsync process is sampled every 0.5 s (``VmRSS``) with the number of events sent so
far; the peak is the kernel's high-water mark (``VmHWM``) just before it is stopped.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RssSampler,
    load,
    machine,
    omsync,
    percentile,
    s3_client,
    seaweedfs,
    table,
    wait_settled,
)

SMALL_BYTES = 4096


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="new keys per second, one event each unless --keys-per-event (default 100)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady events (default 20)")
    parser.add_argument("--workers", type=int, default=16, help="omsync copy slots (default 16)")
    parser.add_argument("--variant", choices=["server-side", "streamed"], default="server-side")
    parser.add_argument("--keys-per-event", type=int, default=1, help="keys per event (default 1)")
    parser.add_argument("--senders", type=int, default=32, help="client threads putting objects and posting events")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound for the last outcomes after sending")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.keys_per_event < 1:
        parser.error("--rate, --duration and --keys-per-event must be positive")

    slots = int(args.rate * args.duration)
    per_event = args.keys_per_event
    events = [[f"lat/{i:07d}" for i in range(start, min(slots, start + per_event))]
              for start in range(0, slots, per_event)]
    payload = b"x" * SMALL_BYTES

    print(f"machine: {machine()}")
    with seaweedfs() as server:
        src, dst = server.make_bucket("lat-src"), server.make_bucket("lat-dst")
        s3 = s3_client(server, pool=args.senders + 2)
        with omsync(server, args.workers) as om:
            task_id = om.create_task(server, src, dst, server_side=args.variant == "server-side")
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

            with RssSampler(om.pid, interval=0.5, progress=lambda: sent[0]) as sampler:
                start = time.time() + 0.2
                threads = [threading.Thread(target=sender, args=(start,), daemon=True) for _ in range(args.senders)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                send_seconds = time.time() - start
                counters = wait_settled(om, task_id, slots, args.timeout)
            rows = om.ledger_rows(task_id)
            peak_kib = om.stop()

    if counters[1] != slots:
        print(f"WARNING: {counters[1]} successes of {slots} (failures {counters[2]}, skips {counters[3]})")
    finished = {key.decode(): updated for key, outcome, updated, _ in rows if outcome == "SUCCESS"}
    latency = [finished[k] / 1000 - sent_at[k] for k in sent_at if k in finished]
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
    first, last, peak_sampled = sampler.first_last_peak_mib()
    print()
    print(f"omsync RSS: first {first:.0f} MiB, last {last:.0f} MiB, sampled peak {peak_sampled:.0f} MiB, "
          f"peak (VmHWM) {peak_kib / 1024:.0f} MiB")
    series = sampler.samples
    if series:
        step = max(1, len(series) // 8)
        picks = series[::step] + ([series[-1]] if (len(series) - 1) % step else [])
        print("RSS by keys sent: " + ", ".join(f"{p}:{kib / 1024:.0f}" for _, p, kib in picks))
    print(f"at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
