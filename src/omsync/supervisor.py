"""Copy worker processes that ``omsync serve`` runs beside its API process.

The API process answers requests and commits events; each child is an ``omsync worker`` against
the same database (SQLite file or PostgreSQL), so copying runs on other cores and a busy engine
never delays an answer. Children are woken through a pipe as soon as events are committed (one
byte per wake; a full pipe already holds a wake), and they stop by themselves when the pipe
reaches end-of-file, i.e. when the API process is gone, whatever killed it. A child that dies is
started again (at most once a second). On shutdown the children get SIGTERM and drain within
``shutdown_seconds`` like a standalone worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from omsync import metrics
from omsync.config import Settings

log = logging.getLogger("omsync.supervisor")

WAKE_FD_ENV = "OMSYNC_WAKE_FD"
"""Environment variable naming the read end of a child's wake pipe."""

RESTART_INTERVAL_SECONDS = 1.0


@dataclass
class _Child:
    number: int
    proc: subprocess.Popen[bytes]
    wake: int  # write end of the child's wake pipe
    started: float


class WorkerProcesses:
    """``count`` ``omsync worker`` children sharing ``settings``' database.

    :meth:`start` spawns them, :meth:`notify` wakes them (cheap, never blocks, never raises),
    :meth:`stop` drains them. The API process must have created the data directory and master
    key first (opening the services does), so every child decrypts the same credentials.
    """

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._children: list[_Child] = []
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the running children."""
        return [child.proc.pid for child in self._children]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["OMSYNC_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env["OMSYNC_DATABASE_URL"] = self.settings.resolved_database_url
        env["OMSYNC_WORKERS"] = str(self.settings.workers)
        env["OMSYNC_WORKER_PROCESSES"] = "0"
        return env

    def _spawn(self, number: int) -> _Child:
        read, write = os.pipe()
        os.set_blocking(write, False)
        env = self._environment()
        env[WAKE_FD_ENV] = str(read)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "omsync", "worker"], env=env, pass_fds=(read,),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        log.info("started copy worker process %d (pid %d, %d copy slots)", number, proc.pid, self.settings.workers)
        return _Child(number, proc, write, time.monotonic())

    async def start(self) -> None:
        """Spawn the children and watch them (restarting any that dies)."""
        self._children = [self._spawn(n) for n in range(1, self.count + 1)]
        self._watcher = asyncio.create_task(self._watch(), name="omsync-worker-supervisor")

    def notify(self) -> None:
        """Wake every child now: new events were committed."""
        for child in self._children:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(child.wake, b"\x01")

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RESTART_INTERVAL_SECONDS)
            for index, child in enumerate(self._children):
                code = child.proc.poll()
                if code is None or self._stopping:
                    continue
                log.error("copy worker process %d (pid %d) exited with %s; starting it again",
                          child.number, child.proc.pid, code)
                metrics.process_exited(child.proc.pid)
                with contextlib.suppress(OSError):
                    os.close(child.wake)
                try:
                    self._children[index] = self._spawn(child.number)
                except OSError:
                    log.exception("could not start copy worker process %d again", child.number)

    async def stop(self, deadline: float) -> None:
        """SIGTERM every child, wait up to ``deadline`` (+ a margin) for their drain, then kill
        what is left. Idempotent."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        limit = time.monotonic() + deadline + 10.0
        for child in self._children:
            while child.proc.poll() is None and time.monotonic() < limit:
                await asyncio.sleep(0.05)
            if child.proc.poll() is None:
                log.warning("copy worker process %d did not stop in time; killing it", child.number)
                child.proc.kill()
                await asyncio.to_thread(child.proc.wait)
            with contextlib.suppress(OSError):
                os.close(child.wake)
            metrics.process_exited(child.proc.pid)
        self._children = []


def watch_wake_pipe(loop: asyncio.AbstractEventLoop, on_wake: Callable[[], None],
                    on_parent_gone: Callable[[], None]) -> int | None:
    """In a child: call ``on_wake()`` whenever the API process wakes it and ``on_parent_gone()``
    once its pipe closes. Returns the pipe's fd, or ``None`` when this process has none."""
    raw = os.environ.get(WAKE_FD_ENV)
    if not raw:
        return None
    fd = int(raw)
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            on_wake()
            return
        loop.remove_reader(fd)
        on_parent_gone()

    loop.add_reader(fd, readable)
    return fd
