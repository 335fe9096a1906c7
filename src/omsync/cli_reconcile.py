"""``omsync reconcile TASK [--prefix P] [--wait] [--json]``: compare a sync task's source and
destination, enqueue what is missing or differs, report extras (never deleted).

    omsync reconcile 0a1b2c... --prefix photos/ --wait
    omsync reconcile 0a1b2c... --show RUN_ID        # one run again
    omsync reconcile 0a1b2c... --list               # the task's latest runs
    omsync reconcile 0a1b2c... --every 1d           # a run now and every day (--no-schedule stops it)

Exit status with ``--wait``: 0 when the run succeeded, 1 when it failed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from omsync.cli_ops import ConfigError, Ctx, _api_command, _kv_table, fmt_time

COUNTERS = ("source_listed", "destination_listed", "missing", "differing", "extra", "enqueued")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_interval(text: str) -> int:
    """``90s``, ``30m``, ``12h``, ``1d`` (or plain seconds) as seconds; ConfigError otherwise."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit is not None else value
    if not (number.isascii() and number.isdigit()) or int(number) == 0:
        raise ConfigError(f"--every {text!r}: use a whole number of s, m, h or d, e.g. 1d or 12h")
    return int(number) * (unit or 1)


def _rows(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("reconciliation", str(run["reconciliation_id"])),
        ("task", str(run["sync_task_id"])),
        ("prefix", repr(run["prefix"]) if run["prefix"] else "(whole bucket)"),
        ("status", str(run["status"])),
        *((name.replace("_", " "), str(run[name])) for name in COUNTERS),
        ("started", fmt_time(run["started_at"])),
        ("finished", fmt_time(run["finished_at"])),
    ]
    if run.get("takeovers"):
        rows.append(("resumed", f"{run['takeovers']} time(s) from its checkpoint by another process"))
    if run.get("error_reason"):
        rows.append(("error", str(run["error_reason"])))
    return rows


def reconcile(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="The sync task id.", show_default=False)],
    *,
    ctx: Ctx,
    prefix: Annotated[str, typer.Option("--prefix", help="Only keys starting with this (exact, not URL-encoded).")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run ends; exit 1 when it failed.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls with --wait.")] = 1.0,
    show: Annotated[str | None, typer.Option("--show", metavar="RUN_ID",
                                             help="Show that run instead of starting one.")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List the task's latest runs instead.")] = False,
    every: Annotated[str | None, typer.Option("--every", metavar="INTERVAL",
                                              help="Reconcile now and then every INTERVAL (60s to 366d: "
                                                   "e.g. 1d, 12h).")] = None,
    no_schedule: Annotated[bool, typer.Option("--no-schedule", help="Remove the task's schedule.")] = False,
) -> None:
    """Reconcile a sync task: list source and destination, enqueue missing and differing keys
    (copied like events), report extras (never deleted); a drift report goes into the
    destination beside the object lists."""
    if sum((show is not None, list_runs, every is not None, no_schedule)) > 1:
        raise ConfigError("use only one of --show, --list, --every and --no-schedule")
    client = ctx.client()
    if every is not None or no_schedule:
        _schedule(ctx, task_id, parse_interval(every) if every is not None else None, prefix)
        return
    if list_runs:
        runs = client.list_reconciliations(task_id)
        if ctx.as_json:
            ctx.emit({"reconciliations": runs})
            return
        table = Table(title=f"reconciliations of {task_id}")
        for column in ("id", "status", "prefix", *COUNTERS, "started", "finished"):
            table.add_column(column.replace("_", " "), overflow="fold")
        for run in runs:
            table.add_row(run["reconciliation_id"], run["status"], run["prefix"] or "-",
                          *(str(run[name]) for name in COUNTERS), fmt_time(run["started_at"]),
                          fmt_time(run["finished_at"]))
        ctx.out.print(table)
        return
    run_id = show if show is not None else client.start_reconciliation(task_id, prefix)
    run = client.show_reconciliation(task_id, run_id)
    while wait and run["status"] == "RUNNING":
        if not ctx.as_json:
            ctx.err.print(Text(f"RUNNING: {run['source_listed']} source / {run['destination_listed']} destination "
                               f"keys listed, {run['enqueued']} enqueued"))
        time.sleep(interval)
        run = client.show_reconciliation(task_id, run_id)
    if ctx.as_json:
        ctx.emit(run)
    else:
        ctx.out.print(_kv_table(_rows(run), title=f"reconciliation of {task_id}"))
    if wait and run["status"] == "FAILED":
        raise typer.Exit(1)


def _schedule(ctx: Ctx, task_id: str, interval: int | None, prefix: str) -> None:
    client = ctx.client()
    if interval is None:
        client.clear_reconciliation_schedule(task_id)
        if ctx.as_json:
            ctx.emit({"sync_task_id": task_id, "schedule": None})
        else:
            ctx.out.print(Text(f"task {task_id} is no longer reconciled on a schedule"))
        return
    schedule = client.set_reconciliation_schedule(task_id, interval, prefix)
    if ctx.as_json:
        ctx.emit(schedule)
    else:
        where = f" under {prefix!r}" if prefix else ""
        ctx.out.print(Text(f"task {task_id} is reconciled{where} every {interval} s, next at "
                           f"{fmt_time(schedule['next_run_at'])}"))


def register(app: typer.Typer) -> None:
    """Add ``omsync reconcile``."""
    app.command("reconcile")(_api_command(reconcile))
