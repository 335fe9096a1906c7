"""A real ``omsync serve`` (API only) and a way to run the operator CLI against it as a user would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.omsync_server import OmsyncServer

PROJECT = "0123456789abcdef0123456789abcdef"
OTHER_PROJECT = "fedcba9876543210fedcba9876543210"
ENDPOINTS = {"HuaweiCloud:cn-north-4": "http://127.0.0.1:9", "Aliyun:cn-hangzhou": "http://127.0.0.1:9"}
TASK_FLAGS = [
    "--src-region", "cn-hangzhou", "--src-bucket", "src-bkt", "--dst-region", "cn-north-4", "--dst-bucket", "dst-bkt",
]
TASK_SECRETS = {"OMSYNC_SRC_AK": "SRC-AK-VALUE", "OMSYNC_SRC_SK": "SRC-SK-VALUE",
                "OMSYNC_DST_AK": "DST-AK-VALUE", "OMSYNC_DST_SK": "DST-SK-VALUE"}


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        """The ``--json`` error document printed on stderr."""
        doc: dict[str, Any] = json.loads(self.stderr.strip().splitlines()[-1])
        return doc


@dataclass
class Cli:
    """Runs ``python -m omsync ...`` in a clean environment (no user profile, no stray OMSYNC_*)."""

    home: Path
    env: dict[str, str]
    secrets: tuple[str, ...] = ()

    def __call__(self, *args: str, input: bytes | None = None, extra_env: dict[str, str] | None = None,
                 timeout: float = 120) -> Result:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OMSYNC_")}
        env = {**base, "HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
               "PYTHONIOENCODING": "utf-8", "COLUMNS": "200", **self.env, **(extra_env or {})}
        done = subprocess.run([sys.executable, "-m", "omsync", *args], input=input, capture_output=True,
                              env=env, timeout=timeout, check=False)
        result = Result(done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8"))
        for secret in self.secrets:
            assert secret not in result.stdout and secret not in result.stderr, "a secret key was printed"
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture(scope="session")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OmsyncServer]:
    server = OmsyncServer(data_dir=tmp_path_factory.mktemp("cli") / "data",
                          env={"OMSYNC_ENDPOINTS": json.dumps(ENDPOINTS),
                               "OMSYNC_CHECK_BUCKETS_ON_CREATE": "false"})  # fake endpoints
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cli_keys(cli_server: OmsyncServer) -> dict[str, dict[str, Any]]:
    return {"main": cli_server.create_key(PROJECT), "other": cli_server.create_key(OTHER_PROJECT)}


def connection_env(server: OmsyncServer, key: dict[str, Any]) -> dict[str, str]:
    return {"OMSYNC_ENDPOINT": server.url, "OMSYNC_AK": key["access_key"], "OMSYNC_SK": key["secret_key"],
            "OMSYNC_PROJECT_ID": key["project_id"]}


@pytest.fixture(scope="session")
def cli(cli_server: OmsyncServer, cli_keys: dict[str, dict[str, Any]],
        tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """The CLI with the main project's credentials in the environment."""
    secrets = (cli_keys["main"]["secret_key"], cli_keys["other"]["secret_key"], *TASK_SECRETS.values())
    return Cli(tmp_path_factory.mktemp("home"), {**connection_env(cli_server, cli_keys["main"]), **TASK_SECRETS},
               secrets)


@pytest.fixture()
def bare_cli(cli: Cli, tmp_path: Path) -> Cli:
    """The CLI with no connection settings at all (own empty home directory)."""
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home, {}, cli.secrets)


def create_task(cli: Cli) -> str:
    result = cli("task", "create", *TASK_FLAGS, "--json")
    assert result.code == 0, result.stderr
    task_id: str = result.json()["sync_task_id"]
    return task_id


def ledger_rows(server: OmsyncServer, task_id: str) -> list[tuple[bytes, int]]:
    """(key bytes, generation) of every ledger row of the task, read from the server's SQLite file."""
    with sqlite3.connect(server.data_dir / "omsync.db") as db:
        return [(bytes(k), int(g)) for k, g in db.execute("SELECT key, generation FROM ledger WHERE task_id = ?",
                                                          (task_id,))]
