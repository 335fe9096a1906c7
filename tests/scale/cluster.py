"""Several omsync processes on one PostgreSQL database: an API process and ``omsync worker``s.

A :class:`Cluster` shares one data directory, one database URL and one master key
(``OMSYNC_MASTER_KEY``, generated per cluster) between all its processes, as a deployment with a
separate API and worker fleet would. The API process (``omsync serve --workers 0``) starts first
and migrates the database; every worker is ``python -m omsync worker`` with its own log file and
may get its own settings (e.g. endpoint overrides that route it through its own proxy).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from huaweicloudsdkcore.exceptions.exceptions import ConnectionException
from huaweicloudsdkoms.v2 import (
    CreateSyncEventsRequest,
    CreateSyncTaskReq,
    CreateSyncTaskRequest,
    ShowSyncTaskRequest,
    SyncObjectReq,
)
from sqlalchemy.engine import make_url

from omsync.domain.keys import encode_key_for_event
from omsync.secrets import SecretBox
from tests.omsync_server import OmsyncServer, sdk_client

PROJECT = "scale0123456789abcdef0123456789a"
WORKER_READY_TIMEOUT = 30.0
# What ``omsync worker`` logs once its engine runs (omsync.runtime).
WORKER_READY_LINE = "worker started with"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class WorkerProcess:
    """One ``omsync worker`` process and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process dies at once, leaving its leases and uploads behind."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM and wait up to ``timeout`` s; returns (exit code or None if still running,
        seconds waited). A process still running is left running for the caller to judge."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - start


@dataclass
class Cluster:
    """An API process and any number of worker processes on one PostgreSQL database.

    ``settings`` are ``OMSYNC_*`` values (names without the prefix) for every process;
    ``endpoints`` the endpoint overrides (``OMSYNC_ENDPOINTS``). Call :meth:`start_api` first,
    then :meth:`start_worker` as often as needed, and :meth:`stop` at the end.
    """

    root: Path
    database_url: str
    endpoints: dict[str, str]
    settings: dict[str, str] = field(default_factory=dict)
    master_key: str = field(default_factory=SecretBox.generate_key)
    api: OmsyncServer | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    key: dict[str, Any] = field(default_factory=dict)
    _local: threading.local = field(default_factory=threading.local)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def env(self, endpoints: dict[str, str] | None = None, **settings: str) -> dict[str, str]:
        """The environment of one process: the shared settings plus per-process ones."""
        merged = {**self.settings, **settings}
        return {
            "OMSYNC_DATABASE_URL": self.database_url,
            "OMSYNC_MASTER_KEY": self.master_key,
            "OMSYNC_ENDPOINTS": json.dumps(endpoints if endpoints is not None else self.endpoints),
            **{f"OMSYNC_{name.upper()}": value for name, value in merged.items()},
        }

    # -- processes ------------------------------------------------------------------------------

    def start_api(self) -> OmsyncServer:
        """``omsync serve --workers 0`` (migrates the database), and a project key for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.api = OmsyncServer(data_dir=self.data_dir, env=self.env(), workers=0).start()
        self.key = self.api.create_key(PROJECT)
        return self.api

    def start_worker(self, slots: int, *, endpoints: dict[str, str] | None = None, wait: bool = True,
                     **settings: str) -> WorkerProcess:
        """Start ``omsync worker --workers slots``; with ``wait``, return once its engine runs."""
        name = f"worker-{len(self.workers) + 1}"
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "omsync", "worker", "--data-dir", str(self.data_dir),
                 "--workers", str(slots)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env(endpoints, **settings)},
            )
        worker = WorkerProcess(name, proc, log_path)
        self.workers.append(worker)
        if wait:
            self.wait_worker_ready(worker)
        return worker

    def wait_worker_ready(self, worker: WorkerProcess, timeout: float = WORKER_READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while WORKER_READY_LINE not in worker.log():
            if not worker.running():
                raise RuntimeError(f"{worker.name} exited with {worker.proc.returncode}:\n{worker.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{worker.name} not ready after {timeout} s:\n{worker.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every process still running (workers first, SIGKILL after 30 s)."""
        for worker in self.workers:
            if worker.running():
                code, _ = worker.terminate(30)
                if code is None:
                    worker.kill()
        if self.api is not None:
            self.api.stop()

    def logs(self, tail: int = 3000) -> str:
        """The tail of every process's log, for assertion messages."""
        parts = [f"--- api ---\n{self.api.log()[-tail:]}" if self.api else ""]
        parts += [f"--- {w.name} (pid {w.pid}, rc {w.proc.returncode}) ---\n{w.log()[-tail:]}" for w in self.workers]
        return "\n".join(parts)

    # -- API ------------------------------------------------------------------------------------

    def client(self) -> Any:
        """The calling thread's official SDK client for the project."""
        client = getattr(self._local, "client", None)
        if client is None:
            assert self.api is not None, "start_api() first"
            client = sdk_client(self.api.url, self.key["access_key"], self.key["secret_key"], PROJECT)
            self._local.client = client
        return client

    def create_task(self, **fields: Any) -> str:
        """CreateSyncTask through the SDK; returns the task id."""
        body = CreateSyncTaskReq(**fields)
        return str(self.client().create_sync_task(CreateSyncTaskRequest(body=body)).sync_task_id)

    def post(self, task_id: str, keys: Sequence[str]) -> None:
        """One CreateSyncEvents call (at most 100 keys) from the calling thread's client."""
        encoded = [encode_key_for_event(k) for k in keys]
        self.client().create_sync_events(CreateSyncEventsRequest(
            sync_task_id=task_id, body=SyncObjectReq(object_keys=encoded)))

    def counters(self, task_id: str) -> tuple[int, int, int, int]:
        """Monthly ``(requests, success, failure, skip)`` from ShowSyncTask."""
        request = ShowSyncTaskRequest(sync_task_id=task_id, query_time=now_ms())
        try:
            task = self.client().show_sync_task(request)
        except ConnectionException:
            # A kept-alive connection the server closed just as it was reused; a read is safe to repeat.
            task = self.client().show_sync_task(request)
        return (int(task.monthly_acceptance_request or 0), int(task.monthly_success_object or 0),
                int(task.monthly_failure_object or 0), int(task.monthly_skip_object or 0))

    def wait_settled(self, task_id: str, expected: int, timeout: float) -> tuple[int, int, int, int]:
        """Wait until ``expected`` occurrences were accepted and every one has an outcome."""
        deadline = time.monotonic() + timeout
        while True:
            counters = self.counters(task_id)
            if counters[0] >= expected and sum(counters[1:]) == counters[0]:
                return counters
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled after {timeout} s: (request, success, failure, skip) = "
                                     f"{counters}\n{self.logs()}")
            time.sleep(0.2)

    # -- database -------------------------------------------------------------------------------

    def conninfo(self) -> str:
        """libpq connection string of the cluster's database."""
        return make_url(self.database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query on the database directly and return its rows."""
        with contextlib.closing(psycopg.connect(self.conninfo(), autocommit=True)) as conn:
            return list(conn.execute(query, params or None).fetchall())
