"""``omsync migration ...``: OMS migration tasks over the API (CreateTask, ListTasks, ShowTask,
StartTask, StopTask, DeleteTask):

    omsync migration create --type prefix --prefix logs/ --src-region R --src-bucket B \\
        --dst-region R --dst-bucket B [--save-prefix P] [--migrate-since EPOCH_S] \\
        [--bandwidth 22:00-06:00=10485760] ...      # secrets from --src-ak … or OMSYNC_SRC_AK …
    omsync migration list [--status 2]
    omsync migration show ID [--wait]
    omsync migration start ID | stop ID | delete ID
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from omsync.cli_ops import ConfigError, Ctx, DstAk, DstSk, SrcAk, SrcSk, _api_command, _kv_table, fmt_time
from omsync.humanize import format_bytes

migration_app = typer.Typer(help="OMS migration tasks: copy what a bucket, prefix, key set or list file holds.",
                            no_args_is_help=True)

STATUS_NAMES = {1: "waiting", 2: "running", 3: "stopped", 4: "failed", 5: "succeeded", 7: "pausing"}
IdArg = Annotated[int, typer.Argument(metavar="ID", help="The migration task id.", show_default=False, min=0)]


def _status(value: int) -> str:
    return f"{value} ({STATUS_NAMES.get(value, '?')})"


def _duration(ms: int) -> str:
    seconds = max(0, ms) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _rows(task: Mapping[str, Any]) -> list[tuple[str, str]]:
    src, dst = task["src_node"], task["dst_node"]
    what = ", ".join(repr(k) for k in src.get("object_key") or []) or (
        f"list file {src['list_file']['obs_bucket']}/{src['list_file']['list_file_key']}" if src.get("list_file") else "-")
    rows = [
        ("id", str(task["id"])),
        ("name", str(task["name"])),
        ("status", _status(int(task["status"]))),
        ("type", f"{task['task_type']}: {what}"),
        ("source", f"{src['cloud_type']} {src['region']} {src['bucket']}"),
        ("destination", f"{dst['region']} {dst['bucket']}" + (f" (save prefix {dst['save_prefix']!r})"
                                                              if dst.get("save_prefix") else "")),
        ("progress", f"{task['progress'] * 100:.1f}%" + ("" if task["is_query_over"] else " (still listing)")),
        ("objects", f"{task['total_num']} listed: {task['successful_num']} copied, {task['failed_num']} failed, "
                    f"{task['skipped_num']} skipped"),
        ("size", f"{format_bytes(task['complete_size'])} of {format_bytes(task['total_size'])}"),
        ("speed", f"{format_bytes(task['migrate_speed'])}/s"),
        ("time", f"started {fmt_time(task['start_time'])}, running {_duration(task['total_time'])}, "
                 f"left ~{_duration(task['left_time'])}"),
    ]
    if task.get("migrate_since"):
        rows.append(("migrate since", f"{task['migrate_since']} (epoch seconds)"))
    for window in task.get("bandwidth_policy") or []:
        rows.append(("bandwidth", f"{window['start']}-{window['end']} UTC: {format_bytes(window['max_bandwidth'])}/s"))
    if task.get("error_reason"):
        rows.append(("error", f"{task['error_reason']['error_code']}: {task['error_reason']['error_msg']}"))
    if task.get("failed_object_record") and task["failed_object_record"]["result"]:
        rows.append(("failed object list", str(task["failed_object_record"]["list_file_key"])))
    return rows


def _bandwidth(spec: str) -> dict[str, Any]:
    """``hh:mm-hh:mm=BYTES_PER_SECOND`` as a BandwidthPolicyDto."""
    window, sep, rate = spec.partition("=")
    start, dash, end = window.partition("-")
    if not sep or not dash or not rate.isdigit():
        raise ConfigError(f"--bandwidth {spec!r}: use hh:mm-hh:mm=BYTES_PER_SECOND (UTC), e.g. 22:00-06:00=10485760")
    return {"start": start.strip(), "end": end.strip(), "max_bandwidth": int(rate)}


def _credentials(src_ak: str | None, src_sk: str | None, dst_ak: str | None, dst_sk: str | None) -> tuple[str, ...]:
    given = {"--src-ak": src_ak, "--src-sk": src_sk, "--dst-ak": dst_ak, "--dst-sk": dst_sk}
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or OMSYNC_SRC_AK, OMSYNC_SRC_SK, OMSYNC_DST_AK, OMSYNC_DST_SK)")
    return tuple(str(v) for v in given.values())


def create(
    *,
    ctx: Ctx,
    src_region: Annotated[str, typer.Option("--src-region", help="Source region.")],
    src_bucket: Annotated[str, typer.Option("--src-bucket", help="Source bucket.")],
    dst_region: Annotated[str, typer.Option("--dst-region", help="Destination region.")],
    dst_bucket: Annotated[str, typer.Option("--dst-bucket", help="Destination bucket.")],
    task_type: Annotated[str, typer.Option("--type", help="prefix, object or list.")] = "prefix",
    prefix: Annotated[list[str] | None, typer.Option(
        "--prefix", help="A prefix to migrate (prefix task; repeat; '' is the whole bucket).")] = None,
    object_key: Annotated[list[str] | None, typer.Option(
        "--object", help="A key to migrate, or a folder ending in '/' (object task; repeat).")] = None,
    list_file_bucket: Annotated[str | None, typer.Option("--list-file-bucket", help="Bucket of the list files.")] = None,
    list_file_key: Annotated[str | None, typer.Option(
        "--list-file-key", help="List file key, or a folder ending in '/' (list task).")] = None,
    save_prefix: Annotated[str | None, typer.Option("--save-prefix", help="Prefix put before every destination key.")] = None,
    migrate_since: Annotated[int | None, typer.Option(
        "--migrate-since", help="Epoch seconds: objects last modified earlier are skipped.")] = None,
    bandwidth: Annotated[list[str] | None, typer.Option(
        "--bandwidth", help="hh:mm-hh:mm=BYTES_PER_SECOND (UTC window; repeat, at most 5).")] = None,
    src_ak: SrcAk = None,
    src_sk: SrcSk = None,
    dst_ak: DstAk = None,
    dst_sk: DstSk = None,
    src_cloud_type: Annotated[str | None, typer.Option("--src-cloud-type", help="Aliyun (default), AWS, …, S3.")] = None,
    dst_cloud_type: Annotated[str | None, typer.Option("--dst-cloud-type", help="HuaweiCloud (default), S3, ….")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    object_overwrite_mode: Annotated[str | None, typer.Option("--object-overwrite-mode")] = None,
    consistency_check: Annotated[str | None, typer.Option("--consistency-check")] = None,
    dst_storage_policy: Annotated[str | None, typer.Option("--dst-storage-policy")] = None,
    enable_metadata_migration: Annotated[bool, typer.Option("--enable-metadata-migration")] = False,
    no_failed_list: Annotated[bool, typer.Option(
        "--no-failed-list", help="Do not write the failed-object list into the destination.")] = False,
) -> None:
    """Create a migration task (it starts at once). Secrets may come from OMSYNC_SRC_AK/SK, OMSYNC_DST_AK/SK."""
    sak, ssk, dak, dsk = _credentials(src_ak, src_sk, dst_ak, dst_sk)
    src: dict[str, Any] = {"region": src_region, "bucket": src_bucket, "ak": sak, "sk": ssk}
    if src_cloud_type:
        src["cloud_type"] = src_cloud_type
    if task_type == "prefix":
        src["object_key"] = prefix if prefix is not None else [""]
    elif task_type == "object":
        src["object_key"] = object_key or []
    elif task_type == "list":
        if not list_file_bucket or not list_file_key:
            raise ConfigError("a list task needs --list-file-bucket and --list-file-key")
        src["list_file"] = {"obs_bucket": list_file_bucket, "list_file_key": list_file_key}
    else:
        raise ConfigError(f"--type {task_type!r}: use prefix, object or list")
    body: dict[str, Any] = {
        "task_type": task_type, "src_node": src,
        "dst_node": {"region": dst_region, "bucket": dst_bucket, "ak": dak, "sk": dsk, "save_prefix": save_prefix},
        "description": description, "migrate_since": migrate_since,
        "bandwidth_policy": [_bandwidth(b) for b in bandwidth] if bandwidth else None,
        "object_overwrite_mode": object_overwrite_mode, "consistency_check": consistency_check,
        "dst_storage_policy": dst_storage_policy, "dst_cloud_type": dst_cloud_type,
        "enable_metadata_migration": enable_metadata_migration or None,
        "enable_failed_object_recording": False if no_failed_list else None,
    }
    body = {k: v for k, v in body.items() if v is not None}
    body["dst_node"] = {k: v for k, v in body["dst_node"].items() if v is not None}
    created = ctx.client().create_migration(body)
    if ctx.as_json:
        ctx.emit({"id": created["id"], "name": created["name"]})
    else:
        ctx.out.print(Text(f"created migration task {created['id']} ({created['name']})"))


def list_(
    *,
    ctx: Ctx,
    status: Annotated[int | None, typer.Option("--status", help="1 waiting, 2 running, 3 stopped, 4 failed, "
                                                                 "5 succeeded, 7 pausing.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
) -> None:
    """List migration tasks, newest first, with their progress."""
    page = ctx.client().list_migrations(limit=limit, offset=offset, status=status)
    if ctx.as_json:
        ctx.emit(page)
        return
    table = Table(title=f"{page['count']} migration task(s)")
    for column in ("id", "name", "status", "type", "source", "destination", "progress", "copied", "failed",
                   "skipped", "size"):
        table.add_column(column, overflow="fold")
    for task in page["tasks"]:
        table.add_row(
            str(task["id"]), task["name"], _status(int(task["status"])), task["task_type"],
            f"{task['src_node']['bucket']}", f"{task['dst_node']['bucket']}/{task['dst_node']['save_prefix'] or ''}",
            f"{task['progress'] * 100:.1f}%", str(task["successful_num"]), str(task["failed_num"]),
            str(task["skipped_num"]), format_bytes(task["complete_size"]),
        )
    ctx.out.print(table)


def show(
    task_id: IdArg,
    *,
    ctx: Ctx,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the task succeeds, fails or stops.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls with --wait.")] = 2.0,
) -> None:
    """Show a migration task: counts, progress, speed, times, error. Exit 1 with --wait when it failed."""
    client = ctx.client()
    task = client.show_migration(task_id)
    while wait and task["status"] in (1, 2, 7):
        if not ctx.as_json:
            ctx.err.print(Text(f"{_status(int(task['status']))}: {task['progress'] * 100:.1f}% "
                               f"({task['successful_num']} copied of {task['total_num']} listed)"))
        time.sleep(interval)
        task = client.show_migration(task_id)
    if ctx.as_json:
        ctx.emit(task)
    else:
        ctx.out.print(_kv_table(_rows(task), title=f"migration task {task_id}"))
    if wait and task["status"] == 4:
        raise typer.Exit(1)


def start(task_id: IdArg, *, ctx: Ctx, src_ak: SrcAk = None, src_sk: SrcSk = None, dst_ak: DstAk = None,
          dst_sk: DstSk = None) -> None:
    """Start a stopped task where it stopped (a failed one: its failed keys again); the keys must be given again."""
    sak, ssk, dak, dsk = _credentials(src_ak, src_sk, dst_ak, dst_sk)
    ctx.client().start_migration(task_id, sak, ssk, dak, dsk)
    if ctx.as_json:
        ctx.emit({"id": task_id, "status": 2})
    else:
        ctx.out.print(Text(f"started migration task {task_id}"))


def stop(task_id: IdArg, *, ctx: Ctx) -> None:
    """Stop a running task (pausing until the copies in flight end; its listing keeps its place)."""
    client = ctx.client()
    client.stop_migration(task_id)
    status = int(client.show_migration(task_id)["status"])
    if ctx.as_json:
        ctx.emit({"id": task_id, "status": status})
    else:
        ctx.out.print(Text(f"stopping migration task {task_id}: {_status(status)}"))


def delete(task_id: IdArg, *, ctx: Ctx) -> None:
    """Delete a task that is not running or pausing (the objects it copied stay)."""
    ctx.client().delete_migration(task_id)
    if ctx.as_json:
        ctx.emit({"id": task_id, "deleted": True})
    else:
        ctx.out.print(Text(f"deleted migration task {task_id}"))


def register(app: typer.Typer) -> None:
    """Add ``omsync migration create|list|show|start|stop|delete``."""
    migration_app.command("create")(_api_command(create))
    migration_app.command("list")(_api_command(list_))
    migration_app.command("show")(_api_command(show))
    migration_app.command("start")(_api_command(start))
    migration_app.command("stop")(_api_command(stop))
    migration_app.command("delete")(_api_command(delete))
    app.add_typer(migration_app, name="migration")
