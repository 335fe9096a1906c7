"""``omsync kms``: data keys on a data directory, as an operator runs the commands."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.omsync_server import omsync_cli

PROJECT = "0123456789abcdef0123456789abcdef"


def test_create_list_rotate_encrypt_and_refusals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = omsync_cli(data, "kms", "create", "--project-id", PROJECT, "--alias", "prod", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert (key["project_id"], key["alias"], key["version"]) == (PROJECT, "prod", 1) and len(key["key_id"]) == 36
    taken = omsync_cli(data, "kms", "create", "--project-id", PROJECT, "--alias", "prod")
    assert taken.returncode == 1 and "alias" in taken.stderr
    # The same alias in another project is another key.
    assert omsync_cli(data, "kms", "create", "--project-id", "other", "--alias", "prod").returncode == 0

    # From standard input (the secret stays out of the process list) or as an argument.
    import subprocess
    import sys

    piped = subprocess.run([sys.executable, "-m", "omsync", "kms", "encrypt", "--key-id", key["key_id"],
                            "--data-dir", str(data)], input="s3cr3t-value\n", capture_output=True, text=True,
                           timeout=60, check=False)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("okms1:1:") and "s3cr3t" not in piped.stdout
    rotated = omsync_cli(data, "kms", "rotate", key["key_id"], "--json")
    assert json.loads(rotated.stdout)["version"] == 2
    assert omsync_cli(data, "kms", "encrypt", "--key-id", key["key_id"], "x").stdout.startswith("okms1:2:")

    listed = json.loads(omsync_cli(data, "kms", "list", "--project-id", PROJECT, "--json").stdout)
    assert [(k["key_id"], k["version"]) for k in listed] == [(key["key_id"], 2)]
    assert len(json.loads(omsync_cli(data, "kms", "list", "--json").stdout)) == 2
    table = omsync_cli(data, "kms", "list")
    assert key["key_id"] in table.stdout and "prod" in table.stdout

    for args in (("rotate", "no-such-key"), ("encrypt", "--key-id", "no-such-key", "x")):
        refused = omsync_cli(data, "kms", *args)
        assert refused.returncode == 1 and "no data key" in refused.stderr
    assert omsync_cli(data, "kms", "encrypt", "--key-id", key["key_id"], "").returncode == 2

    # The material is stored encrypted under the master key: nothing in the database decodes
    # to a 32-byte key, and no version's row is readable without the master key.
    with sqlite3.connect(data / "omsync.db") as conn:
        rows = conn.execute("SELECT key_id, version, material_enc FROM kms_key_versions ORDER BY version").fetchall()
    assert [(r[0], r[1]) for r in rows if r[0] == key["key_id"]] == [(key["key_id"], 1), (key["key_id"], 2)]
    assert all(r[2].startswith("gAAAA") for r in rows)  # Fernet tokens
