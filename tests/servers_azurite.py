"""Azurite (the Azure Storage emulator, npm package ``azurite``) for tests: the blob service
only, on a free port of 127.0.0.1, its data in memory and its workspace in a temporary directory;
``stop()`` kills it.

The binary is looked up in the project-local ``.ci-node/`` (where ``scripts/test.sh`` installs
it with npm), then in ``OMSYNC_AZURITE`` (a path to ``azurite-blob``), then on ``PATH``. When none
is found, ``azurite_binary()`` returns ``None`` and the Azure tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import READY_TIMEOUT_SECONDS, free_port, log_tail, stop_group

ROOT = Path(__file__).resolve().parent.parent
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str | None:
    """Path of ``azurite-blob`` (project-local install first), or ``None``."""
    local = ROOT / ".ci-node" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    named = os.environ.get("OMSYNC_AZURITE")
    if named and Path(named).exists():
        return named
    return shutil.which("azurite-blob")


@dataclass
class AzuriteServer:
    """A running Azurite blob service: account URL (account in the path), credentials, process."""

    account_url: str
    account: str
    key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def port(self) -> int:
        return int(self.account_url.rsplit(":", 1)[1].split("/", 1)[0])

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.account_url};")

    def make_container(self, name: str) -> str:
        """Create container ``name`` (if absent) with a signed REST call and return the name."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        credential = {"account_name": self.account, "account_key": self.key}
        with BlobServiceClient(self.account_url, credential=credential) as client, \
                contextlib.suppress(ResourceExistsError):
            client.create_container(name)
        return name

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        """Kill Azurite (its whole process group) and remove its workspace."""
        stop_group(self.process, grace=3)
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None


def start_azurite(binary: str | None = None) -> AzuriteServer:
    """Start ``azurite-blob`` in memory on a free port; wait until it answers."""
    binary = binary or azurite_binary()
    if binary is None:
        raise RuntimeError("azurite-blob not found (scripts/test.sh installs it into .ci-node/)")
    workdir = tempfile.TemporaryDirectory(prefix="omsync-azurite-")
    root = Path(workdir.name)
    port = free_port()
    log_path = root / "server.log"
    argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence", "--silent", "--loose", "--disableTelemetry", "--skipApiVersionCheck",
            "--disableProductStyleUrl"]
    env = dict(os.environ)
    env.pop("AZURITE_ACCOUNTS", None)  # the well-known development account
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = AzuriteServer(account_url=f"http://127.0.0.1:{port}/{DEV_ACCOUNT}", account=DEV_ACCOUNT,
                           key=DEV_KEY, process=process, log_path=log_path, workdir=workdir)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_text = server.log_tail()
            server.stop()
            raise RuntimeError(f"azurite exited with {process.returncode}:\n{log_text}")
        try:
            with urllib.request.urlopen(f"{server.account_url}?comp=list", timeout=2):
                return server
        except urllib.error.HTTPError:
            return server  # any HTTP answer (an unsigned request is refused) means it is up
        except OSError:
            time.sleep(0.1)
    log_text = server.log_tail()
    server.stop()
    raise RuntimeError(f"azurite not ready after {READY_TIMEOUT_SECONDS}s:\n{log_text}")


@contextlib.contextmanager
def running_azurite() -> Iterator[AzuriteServer]:
    server = start_azurite()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="azurite")
def azurite_fixture() -> Iterator[AzuriteServer]:
    """An Azurite blob service (skipped when azurite is not installed). Test modules import
    ``azurite_fixture`` to use it as ``azurite``."""
    if azurite_binary() is None:
        pytest.skip("azurite is not installed (scripts/test.sh installs it into .ci-node/)")
    server = start_azurite()
    try:
        yield server
    finally:
        server.stop()
