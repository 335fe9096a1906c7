"""Ledger tests run on both backends: the embedded SQLite default and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omsync.config import Settings
from omsync.services import Services

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend: SQLite in ``tmp_path``, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'omsync.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture()
async def services(tmp_path: Path, database_url: str) -> AsyncIterator[Services]:
    """Services over a migrated, empty database, with a small backlog bound (50 keys)."""
    opened = await Services.open(Settings(data_dir=tmp_path, database_url=database_url, max_pending_per_task=50))
    yield opened
    await opened.close()
