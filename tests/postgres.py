"""A real PostgreSQL server for tests, and a fresh database per test.

``OMSYNC_TEST_POSTGRES_URL`` (a ``postgresql+psycopg://`` URL of a role allowed to create
databases) points the tests at an existing server. Otherwise a private cluster is built from
Debian's binaries (``/usr/lib/postgresql/<version>/bin``), installing the ``postgresql`` package
with apt-get first when they are missing: ``initdb`` into a temporary directory, listening on
127.0.0.1 only on a free port, trust authentication, its unix socket inside that directory, and
durability switched off because the data is thrown away. PostgreSQL refuses to run as root, so
as root the cluster belongs to the ``postgres`` system user the package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from tests.servers import free_port

URL_ENV = "OMSYNC_TEST_POSTGRES_URL"
SYSTEM_USER = "postgres"
START_TIMEOUT_SECONDS = 30
INSTALL_TIMEOUT_SECONDS = 600


@dataclass
class PostgresServer:
    """A PostgreSQL server tests may create databases on; ``stop()`` ends a private one."""

    url: URL  # SQLAlchemy URL of the maintenance database, driver postgresql+psycopg
    workdir: Path | None = None  # the private cluster's directory, None for an external server
    pg_ctl: list[str] | None = None  # command prefix running pg_ctl as the cluster's owner
    watchdog: subprocess.Popen[bytes] | None = None  # stops the cluster if this process dies

    def conninfo(self, database: str | None = None) -> str:
        """libpq connection string for ``database`` (default: the maintenance database)."""
        url = self.url.set(database=database) if database else self.url
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def create_database(self) -> str:
        """Create an empty database; returns its ``postgresql+psycopg://`` URL."""
        name = f"omsync_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database`, closing what is still connected."""
        name = make_url(url).database
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()
        if self.workdir is None or self.pg_ctl is None:
            return
        subprocess.run(
            [*self.pg_ctl, "stop", "-D", str(self.workdir / "data"), "-m", "immediate", "-w"],
            cwd=self.workdir, capture_output=True, timeout=START_TIMEOUT_SECONDS, check=False,
        )
        shutil.rmtree(self.workdir, ignore_errors=True)


def _installed_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl, if any."""
    found = [
        Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
        if Path(p).with_name("initdb").exists()
    ]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


def install_postgres() -> Path:
    """Debian's PostgreSQL binaries directory, installing the package with apt-get if needed.

    Raises RuntimeError when the binaries are missing and cannot be installed here (no apt-get,
    or not root); ``OMSYNC_TEST_POSTGRES_URL`` then names a server to use instead.
    """
    bindir = _installed_bindir()
    if bindir is not None:
        return bindir
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(
            "PostgreSQL is not installed and cannot be installed here (needs apt-get as root); "
            f"install Debian's 'postgresql' package or set {URL_ENV}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
        done = subprocess.run(command, env=env, capture_output=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    bindir = _installed_bindir()
    if bindir is None:
        raise RuntimeError("apt-get installed 'postgresql' but no /usr/lib/postgresql/*/bin/pg_ctl appeared")
    return bindir


def start_postgres() -> PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1 (see the module docstring). Raises RuntimeError
    with the server log when it does not come up."""
    bindir = install_postgres()
    workdir = Path(tempfile.mkdtemp(prefix="omsync-pg-"))
    as_owner: list[str] = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SYSTEM_USER)
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", SYSTEM_USER, "--"]
        user = SYSTEM_USER
    data = workdir / "data"
    try:
        initdb = subprocess.run(
            [*as_owner, str(bindir / "initdb"), "-D", str(data), "--username", user, "--auth", "trust",
             "--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions"],
            cwd=workdir, capture_output=True, timeout=START_TIMEOUT_SECONDS, check=False,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.decode(errors='replace')[-4000:]}")
        pg_ctl = [*as_owner, str(bindir / "pg_ctl")]
        for _ in range(3):  # the free port may be taken between probing and binding
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={workdir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
                "-c shared_buffers=32MB"
            )
            started = subprocess.run(
                [*pg_ctl, "start", "-D", str(data), "-l", str(workdir / "server.log"), "-w",
                 "-t", str(START_TIMEOUT_SECONDS), "-o", options],
                cwd=workdir, capture_output=True, timeout=START_TIMEOUT_SECONDS + 5, check=False,
            )
            if started.returncode == 0:
                url = URL.create("postgresql+psycopg", username=user, host="127.0.0.1", port=port, database="postgres")
                return PostgresServer(url=url, workdir=workdir, pg_ctl=pg_ctl, watchdog=_watchdog(pg_ctl, workdir))
        log = (workdir / "server.log").read_text(errors="replace")[-4000:]
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr.decode(errors='replace')}\n{log}")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _watchdog(pg_ctl: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    """A shell loop that stops the cluster and removes its directory once this process is gone:
    a test run killed before its teardown must not leave a server behind."""
    data = workdir / "data"
    stop = shlex.join([*pg_ctl, "stop", "-D", str(data), "-m", "immediate", "-w"])
    script = (
        f"while kill -0 {os.getpid()} 2>/dev/null && [ -d {shlex.quote(str(data))} ]; do sleep 1; done; "
        f"if [ -d {shlex.quote(str(data))} ]; then {stop}; rm -rf {shlex.quote(str(workdir))}; fi"
    )
    return subprocess.Popen(
        ["sh", "-c", script], cwd=workdir, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def postgres_server_context() -> Iterator[PostgresServer]:
    """The server named by ``OMSYNC_TEST_POSTGRES_URL``, else a private one stopped on exit."""
    external = os.environ.get(URL_ENV)
    if external:
        yield PostgresServer(url=make_url(external).set(drivername="postgresql+psycopg"))
        return
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session."""
    with postgres_server_context() as server:
        yield server


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database for one test: its ``postgresql+psycopg://`` URL."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
