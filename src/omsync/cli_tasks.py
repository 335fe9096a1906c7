"""``omsync task create|list|show|start|stop|delete|limits``: sync tasks over the HTTP API
(the ``task`` group object and the shared plumbing live in :mod:`omsync.cli_ops`)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from omsync.humanize import format_bytes

if TYPE_CHECKING:
    # Imported where used: ``omsync serve`` and ``omsync keys`` need no HTTP client.
    pass

from omsync.cli_ops import (
    EXIT_OK,
    ConfigError,
    Ctx,
    DstAk,
    DstSk,
    SrcAk,
    SrcSk,
    TaskArg,
    _api_command,
    _counters,
    _kv_table,
    _now_ms,
    fmt_time,
    parse_time,
    task_app,
)

__all__ = ["parse_byte_rate", "register"]


def _task_rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("sync_task_id", str(info["sync_task_id"])),
        ("status", str(info["status"])),
        ("source", f"{info['src_cloud_type']} {info['src_region']} {info['src_bucket']}"),
        ("destination", f"{info['dst_cloud_type']} {info['dst_region']} {info['dst_bucket']}"),
        ("description", info.get("description") or "-"),
        ("created", fmt_time(info.get("create_time"))),
        ("last started", fmt_time(info.get("last_start_time"))),
        ("consistency check", str(info.get("consistency_check"))),
        ("overwrite mode", str(info.get("object_overwrite_mode"))),
        ("storage policy", str(info.get("dst_storage_policy") or "-")),
        ("metadata migration", str(info.get("enable_metadata_migration"))),
        ("restore archived", str(info.get("enable_restore"))),
    ]


@task_app.command("create")
@_api_command
def task_create(
    *,
    ctx: Ctx,
    src_region: Annotated[str | None, typer.Option("--src-region", help="Source region.")] = None,
    src_bucket: Annotated[str | None, typer.Option("--src-bucket", help="Source bucket (or directory for Local).")] = None,
    dst_region: Annotated[str | None, typer.Option("--dst-region", help="Destination region.")] = None,
    dst_bucket: Annotated[str | None, typer.Option("--dst-bucket", help="Destination bucket.")] = None,
    src_ak: SrcAk = None,
    src_sk: SrcSk = None,
    dst_ak: DstAk = None,
    dst_sk: DstSk = None,
    src_cloud_type: Annotated[str | None, typer.Option(
        "--src-cloud-type", help="AWS, Azure, Aliyun (server default), Tencent, HuaweiCloud, …, S3, Local.")] = None,
    dst_cloud_type: Annotated[str | None, typer.Option(
        "--dst-cloud-type", help="Destination cloud type (server default HuaweiCloud).")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    consistency_check: Annotated[str | None, typer.Option(
        "--consistency-check", help="size_last_modified, crc64 or transmission.")] = None,
    object_overwrite_mode: Annotated[str | None, typer.Option(
        "--object-overwrite-mode",
        help="NO_OVERWRITE, SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE, CRC64_COMPARISON_OVERWRITE, FULL_OVERWRITE.")] = None,
    dst_storage_policy: Annotated[str | None, typer.Option("--dst-storage-policy")] = None,
    app_id: Annotated[str | None, typer.Option("--app-id")] = None,
    enable_metadata_migration: Annotated[bool, typer.Option("--enable-metadata-migration")] = False,
    enable_restore: Annotated[bool, typer.Option("--enable-restore")] = False,
    body_file: Annotated[Path | None, typer.Option(
        "--body", help="JSON file with CreateSyncTask fields; flags override it.")] = None,
) -> None:
    """Create a sync task (it starts at once). Secrets may come from OMSYNC_SRC_AK/SK, OMSYNC_DST_AK/SK."""
    body: dict[str, Any] = {}
    if body_file is not None:
        try:
            loaded = json.loads(body_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--body {body_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"--body {body_file}: must hold a JSON object")
        body.update(loaded)
    flags: dict[str, Any] = {
        "src_cloud_type": src_cloud_type, "src_region": src_region, "src_bucket": src_bucket,
        "src_ak": src_ak, "src_sk": src_sk, "dst_cloud_type": dst_cloud_type, "dst_region": dst_region,
        "dst_bucket": dst_bucket, "dst_ak": dst_ak, "dst_sk": dst_sk, "description": description,
        "consistency_check": consistency_check, "object_overwrite_mode": object_overwrite_mode,
        "dst_storage_policy": dst_storage_policy, "app_id": app_id,
        "enable_metadata_migration": enable_metadata_migration or None, "enable_restore": enable_restore or None,
    }
    body.update({k: v for k, v in flags.items() if v is not None})
    required = ("src_region", "src_bucket", "src_ak", "src_sk", "dst_region", "dst_bucket", "dst_ak", "dst_sk")
    missing = [f"--{n.replace('_', '-')}" for n in required if not body.get(n)]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}")
    task_id = ctx.client().create_task(body)
    ctx.done({"sync_task_id": task_id}, f"created sync task {task_id}")


@task_app.command("list")
@_api_command
def task_list(
    *,
    ctx: Ctx,
    status: Annotated[str | None, typer.Option("--status", help="SYNCHRONIZING or STOPPED.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many tasks; 0 = all.")] = 0,
    offset: Annotated[int, typer.Option("--offset", min=0, max=10000)] = 0,
) -> None:
    """List the project's sync tasks (all pages unless --limit)."""
    client = ctx.client()
    tasks: list[dict[str, Any]] = []
    total = 0
    while limit == 0 or len(tasks) < limit:
        page_size = 100 if limit == 0 else min(100, limit - len(tasks))
        page = client.list_tasks(limit=page_size, offset=offset + len(tasks), status=status)
        total = page.count
        tasks.extend(t.model_dump(mode="json") for t in page.tasks)
        if not page.tasks or offset + len(tasks) >= page.count:
            break
    if ctx.as_json:
        ctx.emit({"tasks": tasks, "count": total})
        return
    table = Table("sync task id", "status", "source", "destination", "created", "description")
    table.columns[0].no_wrap = True
    for t in tasks:
        table.add_row(Text(t["sync_task_id"]), t["status"],
                      Text(f"{t['src_cloud_type']}:{t['src_region']}/{t['src_bucket']}"),
                      Text(f"{t['dst_cloud_type']}:{t['dst_region']}/{t['dst_bucket']}"),
                      fmt_time(t["create_time"]), Text(t.get("description") or ""))
    ctx.out.print(table)
    ctx.out.print(f"{len(tasks)} of {total} task(s)")


@task_app.command("show")
@_api_command
def task_show(
    task_id: TaskArg,
    *,
    ctx: Ctx,
    query_time: Annotated[str | None, typer.Option(
        "--query-time", help="Any time in the month to count (epoch ms, ISO, or relative like 30d); default now.")] = None,
) -> None:
    """Show a task and its monthly counters (calendar month, UTC)."""
    at = parse_time(query_time, _now_ms()) if query_time else None
    client = ctx.client()
    show = client.show_task(task_id, query_time_ms=at).model_dump(mode="json")
    # Keys failing now, apart from the month's FAILURE counter (which keeps counting failures
    # that a retry has fixed since).
    failing = client.list_failed(task_id, limit=1).count
    show["failing_keys"] = failing
    if ctx.as_json:
        ctx.emit(show)
        return
    counters = _counters(show)
    rows = [
        *_task_rows(show),
        ("requests (month)", f"{counters['request']:,}"),
        ("succeeded (month)", f"{counters['success']:,}"),
        ("failures (month, FAILURE counter)", f"{counters['failure']:,}"),
        ("skipped (month)", f"{counters['skip']:,}"),
        ("bytes copied (month)", format_bytes(counters["size"])),
        ("pending", f"{counters['pending']:,}"),
        ("keys failing now", "-" if failing is None else f"{failing:,}  (omsync failed {task_id})"),
    ]
    ctx.out.print(_kv_table(rows))


@task_app.command("start")
@_api_command
def task_start(
    task_id: TaskArg,
    *,
    ctx: Ctx,
    src_ak: SrcAk = None,
    src_sk: SrcSk = None,
    dst_ak: DstAk = None,
    dst_sk: DstSk = None,
) -> None:
    """Start a STOPPED task; the source and destination keys must be given again."""
    given = {"--src-ak": src_ak, "--src-sk": src_sk, "--dst-ak": dst_ak, "--dst-sk": dst_sk}
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or OMSYNC_SRC_AK, OMSYNC_SRC_SK, OMSYNC_DST_AK, OMSYNC_DST_SK)")
    assert src_ak and src_sk and dst_ak and dst_sk
    ctx.client().start_task(task_id, src_ak, src_sk, dst_ak, dst_sk)
    ctx.done({"sync_task_id": task_id, "status": "SYNCHRONIZING"}, f"started sync task {task_id}")


@task_app.command("stop")
@_api_command
def task_stop(task_id: TaskArg, *, ctx: Ctx) -> None:
    """Stop a task; events sent meanwhile are kept and copied after the next start."""
    ctx.client().stop_task(task_id)
    ctx.done({"sync_task_id": task_id, "status": "STOPPED"}, f"stopped sync task {task_id}")


@task_app.command("delete")
@_api_command
def task_delete(
    task_id: TaskArg,
    *,
    ctx: Ctx,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a STOPPED task with its ledger and statistics (asks first on a terminal)."""
    if not yes and not ctx.as_json and sys.stdin.isatty() and not typer.confirm(f"Delete sync task {task_id}?"):
        raise typer.Exit(EXIT_OK)
    ctx.client().delete_task(task_id)
    ctx.done({"sync_task_id": task_id, "deleted": True}, f"deleted sync task {task_id}")


_BYTE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}
_BYTE_RATE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*?)(?:/s)?")


def parse_byte_rate(value: str) -> int:
    """Bytes per second from ``1048576``, ``512K``, ``10M``, ``1.5GiB`` or ``10MiB/s`` (binary
    units: K = KiB = 1024). Raises :class:`ConfigError`."""
    match = _BYTE_RATE.fullmatch(value.strip().lower())
    if match is None or match.group(2) not in _BYTE_UNITS:
        raise ConfigError(f"cannot read byte rate {value!r}: use bytes per second, or K, M, G (binary units)")
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2)])


def _limit_text(value: float | None, unit: str = "") -> str:
    if value is None:
        return "unlimited"
    if unit == "B/s":
        return f"{format_bytes(int(value))}/s"
    return f"{value:g}{unit}"


@task_app.command("limits")
@_api_command
def task_limits(
    task_id: TaskArg,
    *,
    ctx: Ctx,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", min=0, help="Copies of the task in flight at once, across all workers; 0 lifts the limit.",
        show_default=False)] = None,
    objects_per_second: Annotated[float | None, typer.Option(
        "--objects-per-second", min=0, help="Keys started per second in each worker process; 0 lifts the limit.",
        show_default=False)] = None,
    bytes_per_second: Annotated[str | None, typer.Option(
        "--bytes-per-second", help="Bytes per second in each worker process (e.g. 10M = 10 MiB/s); 0 lifts the limit.",
        show_default=False)] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Lift every limit (then apply the options given).")] = False,
) -> None:
    """Show or change a task's limits; without options, show them. Options change only the
    limits named (the others are kept unless --clear). Running workers apply changes within
    about a second."""
    client = ctx.client()
    changing = clear or concurrency is not None or objects_per_second is not None or bytes_per_second is not None
    if changing:
        current = client.get_limits(task_id)
        wanted: dict[str, Any] = {} if clear else {
            "max_concurrency": current.max_concurrency,
            "max_objects_per_second": current.max_objects_per_second,
            "max_bytes_per_second": current.max_bytes_per_second,
        }
        if concurrency is not None:
            wanted["max_concurrency"] = concurrency or None
        if objects_per_second is not None:
            wanted["max_objects_per_second"] = objects_per_second or None
        if bytes_per_second is not None:
            wanted["max_bytes_per_second"] = parse_byte_rate(bytes_per_second) or None
        limits = client.set_limits(task_id, **wanted)
    else:
        limits = client.get_limits(task_id)
    if ctx.as_json:
        ctx.emit(limits.model_dump(mode="json"))
        return
    ctx.out.print(_kv_table([
        ("max concurrency", _limit_text(limits.max_concurrency) + (" (all workers)" if limits.max_concurrency else "")),
        ("objects per second", _limit_text(limits.max_objects_per_second)
         + (" (per worker process)" if limits.max_objects_per_second else "")),
        ("bytes per second", _limit_text(limits.max_bytes_per_second, "B/s")
         + (" (per worker process)" if limits.max_bytes_per_second else "")),
    ], title=f"limits of sync task {task_id}" + (" (updated)" if changing else "")))


def register(app: typer.Typer) -> None:
    """Add ``omsync task`` to the ``omsync`` application."""
    app.add_typer(task_app, name="task")
