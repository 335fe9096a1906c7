"""``omsync kms ...``: omsync's data keys for credentials sent encrypted (crypto type ``KMS``).

Like ``omsync keys``, these commands work on the data directory / database directly (they need
the master key), not through the API: run them where the service's data lives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

if TYPE_CHECKING:
    from omsync.ledger.kms_keys import DataKeyInfo

kms_app = typer.Typer(
    help="Data keys for credentials sent encrypted (src_crypto_type / dst_crypto_type = KMS).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

# The options of ``omsync keys`` (omsync.cli imports this module, so they are spelt out here).
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Data directory (default $OMSYNC_DATA_DIR or ./omsync-data).")]
DbUrl = Annotated[str | None, typer.Option("--database-url", help="Database URL (default SQLite in the data directory).")]


def _run(data_dir: Any, database_url: Any, action: Any) -> Any:
    from omsync.cli import _settings, _with_services
    from omsync.ledger.kms_keys import DataKeys

    return _with_services(_settings(data_dir, database_url), lambda s: action(DataKeys(s.db, s.box)))


def _info(key: DataKeyInfo) -> dict[str, Any]:
    return {"key_id": key.key_id, "project_id": key.project_id, "alias": key.alias,
            "version": key.current_version, "created_at": key.created_at, "rotated_at": key.rotated_at}


@kms_app.command("create")
def kms_create(
    project_id: Annotated[str, typer.Option("--project-id", help="Project whose tasks may use the key.")],
    alias: Annotated[str | None, typer.Option("--alias", help="A name for the key, unique in the project.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """Create a data key (version 1); prints its id, the value for *_kms_key_id."""
    from omsync.ledger.kms_keys import AliasTaken

    if not 1 <= len(project_id) <= 1024 or (alias is not None and not 1 <= len(alias) <= 255):
        err.print("[red]--project-id must be 1 to 1024 characters, --alias 1 to 255[/red]")
        raise typer.Exit(2)
    try:
        key = _run(data_dir, database_url, lambda keys: keys.create(project_id, alias))
    except AliasTaken:
        err.print(f"[red]the project already has a data key with alias {alias!r}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(_info(key)))
        return
    typer.echo(key.key_id)


@kms_app.command("list")
def kms_list(
    project_id: Annotated[str | None, typer.Option("--project-id")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """List data keys (never their material)."""
    found = _run(data_dir, database_url, lambda keys: keys.list(project_id))
    if as_json:
        typer.echo(json.dumps([_info(k) for k in found]))
        return
    # The key id is what the other commands and the API take: never wrapped or cut.
    table = Table(Column("key id", no_wrap=True, min_width=36), "project", "alias", "version", "created (ms)",
                  "rotated (ms)")
    for k in found:
        table.add_row(k.key_id, k.project_id, k.alias or "", str(k.current_version), str(k.created_at),
                      str(k.rotated_at or ""))
    console.print(table)


@kms_app.command("rotate")
def kms_rotate(
    key_id: Annotated[str, typer.Argument(help="The data key to rotate.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """Add a new version and make it current; ciphertexts of older versions still decrypt."""
    from omsync.kms import UnknownDataKey

    try:
        key = _run(data_dir, database_url, lambda keys: keys.rotate(key_id))
    except UnknownDataKey:
        err.print(f"[red]no data key {key_id}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(_info(key)))
        return
    typer.echo(f"{key.key_id} is now at version {key.current_version}")


@kms_app.command("encrypt")
def kms_encrypt(
    key_id: Annotated[str, typer.Option("--key-id", help="The data key to encrypt for.")],
    plaintext: Annotated[str | None, typer.Argument(
        help="The value to encrypt; omit it to read one line from standard input "
             "(keeps the secret out of the shell history and the process list).")] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """Print the ciphertext of a credential for src_ak/src_sk/dst_ak/dst_sk or
    source_cdn.authentication_key (with the crypto type KMS and this key id)."""
    from omsync import kms

    value = plaintext if plaintext is not None else sys.stdin.readline().rstrip("\r\n")
    if not value:
        err.print("[red]nothing to encrypt[/red]")
        raise typer.Exit(2)

    async def seal(keys: Any) -> str:
        return kms.encrypt(await keys.load(key_id), value)

    try:
        typer.echo(_run(data_dir, database_url, seal))
    except kms.UnknownDataKey:
        err.print(f"[red]no data key {key_id}[/red]")
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add ``omsync kms`` to the main command line."""
    app.add_typer(kms_app, name="kms")
