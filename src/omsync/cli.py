"""Command line: ``omsync serve``, ``omsync worker``, ``omsync migrate``, ``omsync keys ...``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from omsync.cli_events import register as register_event_commands
from omsync.cli_kms import register as register_kms_commands
from omsync.cli_migration import register as register_migration_commands
from omsync.cli_notifications import register as register_notification_commands
from omsync.cli_reconcile import register as register_reconcile_commands
from omsync.cli_stats import register as register_stats_commands
from omsync.cli_tasks import register as register_task_commands

if TYPE_CHECKING:  # pydantic-settings costs ~0.1 s to import: only commands that need it pay
    from omsync.config import Settings

T = TypeVar("T")

app = typer.Typer(help="omsync: object-storage synchronization, OMS v2 sync-task API compatible.",
                  no_args_is_help=True)
keys_app = typer.Typer(help="API access keys (AK/SK) and X-Auth-Token values per project.", no_args_is_help=True)
console = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default $OMSYNC_DATA_DIR or ./omsync-data).")]
DbUrl = Annotated[str | None, typer.Option("--database-url", help="Database URL (default SQLite in the data directory).")]


def _settings(data_dir: Path | None = None, database_url: str | None = None, **extra: Any) -> Settings:
    from omsync.config import Settings

    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic names the field; show it without a traceback
        console.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from exc


def _with_services(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from omsync.services import Services

    async def run() -> T:
        services = await Services.open(settings)
        try:
            return await action(services)
        finally:
            await services.close()

    return asyncio.run(run())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    workers: Annotated[int | None, typer.Option(help="Concurrent copies per worker process; 0 = API only.")] = None,
    worker_processes: Annotated[int | None, typer.Option(
        help="Copy worker processes beside the API (default: one per CPU core beyond the first); "
             "0 = copy inside the API process.")] = None,
) -> None:
    """Run the API and the sync workers (migrates the database first)."""
    settings = _settings(data_dir, database_url, host=host, port=port, workers=workers,
                         worker_processes=worker_processes)
    if settings.copy_processes > 0:
        # Before anything imports the metrics: the worker processes record into files that the
        # API process adds up at /metrics.
        import atexit
        import shutil
        import tempfile

        shared = tempfile.mkdtemp(prefix="omsync-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
        atexit.register(shutil.rmtree, shared, ignore_errors=True)

    from omsync.app import create_app
    from omsync.logs import configure_logging

    configure_logging(settings)
    logging.getLogger("omsync").info(
        "omsync serving on http://%s:%s (database %s)", settings.host, settings.port,
        settings.resolved_database_url.split("@")[-1],
    )
    from omsync.serving import serve as serve_app

    serve_app(settings, create_app(settings))  # hardened uvicorn options (omsync.serving)


@app.command()
def worker(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    workers: Annotated[int | None, typer.Option(help="Concurrent copies in this process.")] = None,
) -> None:
    """Run sync workers only, against the same database as the API (SIGTERM stops gracefully)."""
    from omsync.logs import configure_logging
    from omsync.runtime import run_worker_until_signalled

    settings = _settings(data_dir, database_url, workers=workers)
    configure_logging(settings)
    asyncio.run(run_worker_until_signalled(settings, (signal.SIGTERM, signal.SIGINT)))


@app.command()
def migrate(data_dir: DataDir = None, database_url: DbUrl = None) -> None:
    """Bring the database schema up to date (SQLite or PostgreSQL)."""
    from omsync.ledger.migrate import current, upgrade

    settings = _settings(data_dir, database_url)
    upgrade(settings.resolved_database_url)
    console.print(f"database at revision {current(settings.resolved_database_url)}")


@keys_app.command("create")
def keys_create(
    project_id: Annotated[str, typer.Option("--project-id", help="Project the key may act for.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly {project_id, access_key, secret_key}.")] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """Create an AK/SK pair for a project. The secret key is shown once only."""
    if not 1 <= len(project_id) <= 1024:
        console.print("[red]--project-id must be 1 to 1024 characters[/red]")
        raise typer.Exit(2)
    ak, sk = _with_services(_settings(data_dir, database_url), lambda s: s.keys.create_key(project_id))
    if as_json:
        typer.echo(json.dumps({"project_id": project_id, "access_key": ak, "secret_key": sk}))
        return
    console.print(f"project_id: {project_id}\naccess_key: {ak}\nsecret_key: {sk}")
    console.print("[yellow]Store the secret key now: it cannot be shown again.[/yellow]")


@keys_app.command("list")
def keys_list(
    project_id: Annotated[str | None, typer.Option("--project-id")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """List access keys (never their secrets)."""
    found = _with_services(_settings(data_dir, database_url), lambda s: s.keys.list_keys(project_id))
    if as_json:
        typer.echo(json.dumps([{"access_key": k.access_key, "project_id": k.project_id, "created_at": k.created_at,
                                "revoked": k.revoked_at is not None} for k in found]))
        return
    table = Table("access key", "project", "created (ms)", "state")
    for k in found:
        table.add_row(k.access_key, k.project_id, str(k.created_at), "revoked" if k.revoked_at else "active")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    access_key: Annotated[str, typer.Argument(help="The access key to revoke.")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """Revoke an access key; requests signed with it are refused from now on."""
    if not _with_services(_settings(data_dir, database_url), lambda s: s.keys.revoke_key(access_key)):
        console.print(f"[red]no active key {access_key}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {access_key}")


@keys_app.command("token")
def keys_token(
    project_id: Annotated[str, typer.Option("--project-id")],
    revoke: Annotated[str | None, typer.Option("--revoke", help="Revoke this token instead of issuing one.")] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
) -> None:
    """Issue (or revoke) an X-Auth-Token accepted for the project instead of a signature."""
    settings = _settings(data_dir, database_url)
    if revoke is not None:
        if not _with_services(settings, lambda s: s.keys.revoke_token(revoke)):
            console.print("[red]no such active token[/red]")
            raise typer.Exit(1)
        console.print("token revoked")
        return
    typer.echo(_with_services(settings, lambda s: s.keys.create_token(project_id)))


# Registered after serve, worker and migrate, so that --help lists the service's own commands
# first, then the operator commands that drive a running service.
register_task_commands(app)
register_event_commands(app)
register_stats_commands(app)
app.add_typer(keys_app, name="keys")
register_kms_commands(app)
register_migration_commands(app)
register_notification_commands(app)
register_reconcile_commands(app)


def main() -> None:
    app()
