"""``omsync migrate`` on both backends, and the migrated schema against the table definitions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from omsync.ledger.migrate import alembic_config, current, sync_url, upgrade
from omsync.ledger.tables import metadata


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def omsync_migrate(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "omsync", "migrate", "--database-url", url],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_migrate_command_brings_an_empty_database_to_head(tmp_path: Path, database_url: str) -> None:
    assert current(database_url) is None
    head = head_revision(database_url)
    for _ in range(2):  # a second run finds nothing to do
        done = omsync_migrate(database_url, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"database at revision {head}" in done.stdout
    assert current(database_url) == head
    engine = create_engine(sync_url(database_url))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(metadata.tables) <= tables


def test_migrated_schema_matches_the_table_definitions(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert differences == []
