"""Copies per second against the number of worker processes: ``omsync serve`` on SQLite with 0
(copies in the API process), 1 and 2 worker processes beside its API process, and ``omsync
worker`` processes on PostgreSQL, all against one SeaweedFS started here.

    python bench/scaling.py [--objects 3000] [--sqlite-processes 0,1,2] [--processes 1,2,4]
                            [--slots 64] [--variant streamed|server-side] [--repeat 1] [--no-sqlite]

``--objects`` 4 KiB objects are uploaded once; then each configuration copies them into a fresh
bucket of the same server:

- ``sqlite``: a fresh ``omsync serve`` with ``OMSYNC_WORKERS=SLOTS`` and
  ``OMSYNC_WORKER_PROCESSES`` = each of ``--sqlite-processes`` (SQLite ledger in a temporary
  data dir), as in ``copy_throughput.py``;
- ``postgres × P``: a fresh PostgreSQL database, ``omsync serve --workers 0`` (API only) and P
  ``omsync worker --workers SLOTS`` processes, all sharing the database and the master key.

The streamed variant sets ``OMSYNC_SERVER_SIDE_COPY=false`` (both sides name one server, which
omsync would otherwise copy server-side). Every key is posted as a sync event (batches of 100 keys, 4 SDK client threads) while the
workers run; the time runs from the first event sent to the last outcome recorded in the ledger.
The destination is listed afterwards and must hold every object with its size. The CPU time each
component used during a run (omsync processes, PostgreSQL backends, SeaweedFS, this client) is
read from ``/proc`` and shown per copied object: on a machine with few cores that, not the
number of processes, sets the ceiling.

PostgreSQL is a private cluster built from Debian's binaries (see ``tests/postgres.py``), or the
server named by ``OMSYNC_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

# bench/ for ``common``, the repository root for ``tests``.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.postgres import PostgresServer, postgres_server_context
from tests.scale.cluster import Cluster
from tests.servers import S3Server

from common import (
    OTHER_SIDE,
    SAME_SIDE,
    bucket_contents,
    endpoints_for,
    load,
    machine,
    omsync,
    seaweedfs,
    table,
    upload,
    wait_settled,
)

SMALL_BYTES = 4096
BATCH = 100
CLIENT_THREADS = 4
_TICKS = os.sysconf("SC_CLK_TCK")


# -- CPU accounting ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of its children it has waited for (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / _TICKS  # utime stime cutime cstime


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants alive now."""
    found = [pid]
    with contextlib.suppress(OSError):
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/children") as children:
                for child in children.read().split():
                    found += process_tree(int(child))
    return found


@dataclass
class CpuMeter:
    """CPU seconds per component between :meth:`start` and :meth:`stop`. ``groups`` maps a
    component name to a function listing its pids at that moment (process trees are re-read,
    so short-lived PostgreSQL backends count through their postmaster's children time)."""

    groups: dict[str, Callable[[], list[int]]]
    used: dict[str, float] = field(default_factory=dict)
    _start: dict[str, dict[int, float]] = field(default_factory=dict)

    def _read(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        end = self._read()
        for name, pids in end.items():
            before = self._start.get(name, {})
            # A process gone by now (a stopped worker) is not in ``end``: read before it stops.
            self.used[name] = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in pids.items())


def postgres_pids(server: PostgresServer) -> Callable[[], list[int]]:
    """The private cluster's postmaster and backends (nothing for an external server)."""

    def pids() -> list[int]:
        if server.workdir is None:
            return []
        try:
            postmaster = int((server.workdir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return process_tree(postmaster)

    return pids


# -- runs --------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    processes: int
    slots: int
    objects: int
    seconds: float
    cpu: dict[str, float]
    load_start: str
    load_end: str
    lock_waits: tuple[float, float] | None = None  # mean sessions waiting: any lock, the task row

    @property
    def per_second(self) -> float:
        return self.objects / self.seconds


def task_fields(server: S3Server, src: str, dst: str, server_side: bool) -> dict[str, str]:
    """The same task as ``common.Omsync.create_task`` builds."""
    src_cloud, src_region = SAME_SIDE if server_side else OTHER_SIDE
    return dict(src_cloud_type=src_cloud, src_region=src_region, src_bucket=src,
                src_ak=server.access_key, src_sk=server.secret_key,
                dst_ak=server.access_key, dst_sk=server.secret_key,
                dst_region=SAME_SIDE[1], dst_bucket=dst)


def check_destination(server: S3Server, bucket: str, keys: list[str], who: str) -> None:
    got = bucket_contents(server, bucket)
    got = {k: v for k, v in got.items() if not k.startswith("oms/")}
    if got != dict.fromkeys(keys, SMALL_BYTES):
        missing = sorted(set(keys) - set(got))[:5]
        raise SystemExit(f"{who}: destination {bucket} holds {len(got)} of {len(keys)} objects; missing e.g. {missing}")


def split(keys: list[str], tasks: int, dst: str) -> dict[str, list[str]]:
    """Destination bucket -> its share of the keys (round robin over ``tasks`` tasks)."""
    return {f"{dst}-t{t}": keys[t::tasks] for t in range(tasks)}


def post_interleaved(post: Callable[[str, list[str]], None], shares: dict[str, list[str]]) -> None:
    """Post every task's keys in batches of 100 from 4 client threads, the tasks' batches
    interleaved; ``shares`` maps task id -> keys."""
    per_task = [[(task, keys[i:i + BATCH]) for i in range(0, len(keys), BATCH)] for task, keys in shares.items()]
    batches = [b for group in itertools.zip_longest(*per_task) for b in group if b is not None]
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(lambda tb: post(tb[0], tb[1]), batches))


def run_sqlite(server: S3Server, src: str, dst: str, keys: list[str], slots: int, tasks: int, server_side: bool,
               timeout: float, processes: int = 0) -> Result:
    buckets = split(keys, tasks, dst)
    for bucket in buckets:
        server.make_bucket(bucket)
    load_start = load()
    env = {"worker_processes": str(processes)}
    if not server_side:
        env["server_side_copy"] = "false"
    with omsync(server, slots, **env) as om:
        meter = CpuMeter({"omsync": lambda: process_tree(om.pid), "SeaweedFS": lambda: process_tree(server.process.pid),
                          "client": lambda: [os.getpid()]})
        shares = {om.create_task(server, src, bucket, server_side=server_side): share
                  for bucket, share in buckets.items()}
        meter.start()
        start = time.time()
        post_interleaved(om.post, shares)
        for task_id, share in shares.items():
            counters = wait_settled(om, task_id, len(share), timeout)
            if counters[1] != len(share):
                raise SystemExit(f"sqlite: counters {counters}, expected {len(share)} successes")
        meter.stop()
        last_ms = max(r[2] for task_id in shares for r in om.ledger_rows(task_id))
    for bucket, share in buckets.items():
        check_destination(server, bucket, share, "sqlite")
    name = "sqlite, serve (copies in the API process)" if processes == 0 else f"sqlite, serve + {processes} worker processes"
    return Result(name, max(1, processes), slots, len(keys), last_ms / 1000 - start,
                  meter.used, load_start, load())


@contextlib.contextmanager
def postgres_cluster(pg: PostgresServer, server: S3Server, processes: int, slots: int) -> Iterator[Cluster]:
    """A fresh database, an API process and ``processes`` workers; all stopped afterwards."""
    url = pg.create_database()
    with tempfile.TemporaryDirectory(prefix="omsync-scaling-") as tmp:
        cluster = Cluster(root=Path(tmp), database_url=url, endpoints=endpoints_for(server),
                          settings={"object_list_interval_seconds": "3600"})
        try:
            cluster.start_api()
            workers = [cluster.start_worker(slots, wait=False) for _ in range(processes)]
            for worker in workers:
                cluster.wait_worker_ready(worker)
            yield cluster
        finally:
            cluster.stop()
            pg.drop_database(url)


class LockSampler:
    """Samples ``pg_stat_activity`` of one database every ``interval`` s in a thread: how many
    sessions wait for a lock, and how many of those wait in a statement locking the task row
    (``SELECT sync_tasks… FOR NO KEY UPDATE / FOR SHARE``, the ledger's per-task lock)."""

    QUERY = (
        "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), "
        "count(*) FILTER (WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT sync_tasks.%%') "
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def __init__(self, conninfo: str, interval: float = 0.25) -> None:
        self.conninfo = conninfo
        self.interval = interval
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-locks", daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with contextlib.closing(psycopg.connect(self.conninfo, autocommit=True)) as conn:
            while not self._stop.wait(self.interval):
                row = conn.execute(self.QUERY).fetchone()
                if row is not None:
                    self.samples.append((int(row[0]), int(row[1])))

    def means(self) -> tuple[float, float]:
        """Mean sessions waiting for any lock, and for the task row's lock."""
        if not self.samples:
            return (0.0, 0.0)
        return (statistics.mean(s[0] for s in self.samples), statistics.mean(s[1] for s in self.samples))


def run_postgres(pg: PostgresServer, server: S3Server, src: str, dst: str, keys: list[str], processes: int,
                 slots: int, tasks: int, server_side: bool, timeout: float) -> Result:
    buckets = split(keys, tasks, dst)
    for bucket in buckets:
        server.make_bucket(bucket)
    load_start = load()
    # The workers take the rest of their environment from this process's.
    os.environ["OMSYNC_SERVER_SIDE_COPY"] = "true" if server_side else "false"
    with postgres_cluster(pg, server, processes, slots) as cluster:
        assert cluster.api is not None and cluster.api.proc is not None
        api_pid = cluster.api.proc.pid
        meter = CpuMeter({
            "omsync": lambda: [api_pid, *(w.pid for w in cluster.workers)],
            "PostgreSQL": postgres_pids(pg),
            "SeaweedFS": lambda: process_tree(server.process.pid),
            "client": lambda: [os.getpid()],
        })
        shares = {cluster.create_task(**task_fields(server, src, bucket, server_side)): share
                  for bucket, share in buckets.items()}
        meter.start()
        start = time.time()
        with LockSampler(cluster.conninfo()) as locks:
            post_interleaved(cluster.post, shares)
            for task_id, share in shares.items():
                counters = cluster.wait_settled(task_id, len(share), timeout)
                if counters[1] != len(share):
                    raise SystemExit(f"postgres x{processes}: counters {counters}, expected {len(share)} successes")
        meter.stop()
        [(last_ms,)] = cluster.sql("SELECT max(updated_at) FROM ledger")
    for bucket, share in buckets.items():
        check_destination(server, bucket, share, f"postgres x{processes}")
    name = f"postgres, {processes} omsync worker{'s' if processes > 1 else ''}"
    return Result(name, processes, slots, len(keys), int(last_ms) / 1000 - start, meter.used, load_start, load(),
                  locks.means())


# -- report ------------------------------------------------------------------------------------


def summary(results: list[Result], components: list[str]) -> str:
    """One row per configuration: medians over repeats, with the range."""
    by_name: dict[str, list[Result]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result)
    baseline = statistics.median(r.per_second for r in by_name.get("sqlite, serve (copies in the API process)",
                                                                 results[:1]))
    rows = []
    for name, runs in by_name.items():
        rates = [r.per_second for r in runs]
        median = statistics.median(rates)
        spread = f"{min(rates):.1f}–{max(rates):.1f}" if len(runs) > 1 else ""
        cpu_ms = [statistics.median(1000 * r.cpu.get(c, 0.0) / r.objects for r in runs) for c in components]
        waits = [r.lock_waits for r in runs if r.lock_waits is not None]
        waiting = (f"{statistics.median(w[0] for w in waits):.1f} / {statistics.median(w[1] for w in waits):.1f}"
                   if waits else "-")
        loads = ", ".join(f"{r.load_start.split()[-1]}→{r.load_end.split()[-1]}" for r in runs)
        rows.append([name, runs[0].processes * runs[0].slots, runs[0].objects,
                     f"{statistics.median(r.seconds for r in runs):.1f}", f"{median:.1f}", spread,
                     f"{median / baseline:.2f}×", *(f"{v:.1f}" for v in cpu_ms), f"{sum(cpu_ms):.1f}", waiting, loads])
    headers = ["configuration", "copy slots", "objects", "seconds", "copies/s", "range", "vs sqlite",
               *(f"CPU ms/copy {c}" for c in components), "CPU ms/copy total",
               "sessions waiting: any lock / task row", "load avg start→end"]
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=3000, help="number of 4 KiB objects (default 3000)")
    parser.add_argument("--processes", default="1,2,4", help="worker process counts on PostgreSQL (default 1,2,4)")
    parser.add_argument("--slots", type=int, default=64, help="copy slots per process, OMSYNC_WORKERS (default 64)")
    parser.add_argument("--variant", choices=["streamed", "server-side"], default="streamed",
                        help="streamed: every object goes GET -> PUT through a worker (default); "
                             "server-side: CopyObject")
    parser.add_argument("--tasks", type=int, default=1,
                        help="spread the objects over this many sync tasks (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="run every configuration this many times (default 1)")
    parser.add_argument("--sqlite-processes", default="0,1,2",
                        help="worker processes of `omsync serve` on SQLite, 0 = copies in the API process (default 0,1,2)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite runs")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound of one copy run in seconds")
    args = parser.parse_args(argv)
    counts = [int(p) for p in args.processes.split(",") if p.strip()]
    sqlite_counts = [int(p) for p in args.sqlite_processes.split(",") if p.strip()]
    if args.objects < 1 or args.slots < 1 or args.repeat < 1 or args.tasks < 1 or not counts or min(counts) < 1:
        parser.error("--objects, --slots, --tasks, --repeat and --processes must be positive")

    keys = [f"scale/{i:07d}" for i in range(args.objects)]
    server_side = args.variant == "server-side"
    print(f"machine: {machine()}", flush=True)
    results: list[Result] = []
    with seaweedfs() as server, postgres_server_context() as pg:
        print(f"SeaweedFS S3 at {server.endpoint_url}; PostgreSQL at {pg.url.host}:{pg.url.port}", flush=True)
        src = server.make_bucket("scale-src")
        took = upload(server, src, keys, SMALL_BYTES)
        print(f"uploaded {len(keys)} x {SMALL_BYTES} B in {took:.1f} s", flush=True)
        for repeat in range(args.repeat):
            for processes in ([] if args.no_sqlite else sqlite_counts):
                result = run_sqlite(server, src, f"scale-sqlite{processes}-{repeat}", keys, args.slots, args.tasks,
                                    server_side, args.timeout, processes)
                results.append(result)
                print(f"{result.name}: {result.seconds:.1f} s, {result.per_second:.1f} copies/s "
                      f"({result.load_start} → {result.load_end})", flush=True)
            for processes in counts:
                result = run_postgres(pg, server, src, f"scale-pg{processes}-{repeat}", keys, processes, args.slots,
                                      args.tasks, server_side, args.timeout)
                results.append(result)
                print(f"{result.name}: {result.seconds:.1f} s, {result.per_second:.1f} copies/s "
                      f"({result.load_start} → {result.load_end})", flush=True)

    components = ["omsync", "PostgreSQL", "SeaweedFS", "client"]
    print()
    print(f"{args.objects} x 4 KiB in {args.tasks} task(s), {args.variant}, {args.slots} copy slots per process, "
          f"{args.repeat} run(s) per configuration (medians)")
    print(summary(results, components))
    print(f"\nmachine at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
