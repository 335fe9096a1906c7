"""``omsync stats``, ``omsync failed``, ``omsync retry``, ``omsync watch`` and ``omsync api``
(any endpoint): a task's counters, failed keys and re-drive, a live view, raw API calls."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from omsync.humanize import format_bytes

if TYPE_CHECKING:
    # Imported where used: ``omsync serve`` and ``omsync keys`` need no HTTP client.
    from omsync.client import OmsyncClient

from omsync.cli_ops import (
    DAY_MS,
    EXIT_OK,
    HOUR_MS,
    ConfigError,
    Ctx,
    KeysFile,
    TaskArg,
    _api_command,
    _counters,
    _gather_keys,
    _now_ms,
    fmt_time,
    parse_time,
    printable_key,
    sparkline,
)

__all__ = ["register"]

DATA_TYPES = ("REQUEST", "SUCCESS", "FAILURE", "SKIP", "SIZE")
FIVE_MINUTES_MS = 5 * 60 * 1000
MAX_HOURLY_WINDOW_MS = 999 * HOUR_MS  # the server answers at most 1000 hourly points
GRANULARITIES = {"5m": ("FIVE_MINUTES", FIVE_MINUTES_MS), "1h": ("ONE_HOUR", HOUR_MS), "1d": ("ONE_DAY", DAY_MS)}
_GRANULARITY_ALIASES = {"five_minutes": "5m", "one_hour": "1h", "one_day": "1d", "auto": "auto",
                        "5m": "5m", "1h": "1h", "1d": "1d"}


def _fetch_series(
    client: OmsyncClient, task_id: str, types: Sequence[str], start: int, end: int, granularity: str
) -> tuple[str, int, dict[str, dict[int, int]]]:
    """Counters per type as ``{bucket_start: value}`` in the granularity asked for.

    The server answers in 5-minute buckets for ranges up to 24 h, hourly up to 1000 hours, and
    refuses longer ranges; longer ranges are fetched in windows (a day for 5-minute points,
    999 hours otherwise) and coarser points summed here.
    """
    window, align = (DAY_MS, FIVE_MINUTES_MS) if granularity == "5m" else (MAX_HOURLY_WINDOW_MS, HOUR_MS)
    windows = [(start, end)]
    if end - start > window:
        if granularity == "auto":
            granularity = "1h"
        # The server counts every bucket that starts at or before end_time, so each window ends
        # just before the bucket the next one starts with.
        windows = []
        lo = start
        while lo <= end:
            hi = (lo - lo % align) + window
            windows.append((lo, min(end, hi - 1)))
            lo = hi
    series: dict[str, dict[int, int]] = {t: {} for t in types}
    server_name = "FIVE_MINUTES"
    for lo, hi in windows:
        answer = client.statistics(task_id, types, lo, hi)
        server_name = answer.statistic_time_type
        for data in answer.statistic_datas:
            bucket = series.setdefault(data.data_type, {})
            for point in data.data:
                bucket[point.time_stamp] = bucket.get(point.time_stamp, 0) + point.statistic_num
    if granularity == "auto":
        width = FIVE_MINUTES_MS if server_name == "FIVE_MINUTES" else HOUR_MS
        return server_name, width, series
    name, width = GRANULARITIES[granularity]
    summed: dict[str, dict[int, int]] = {}
    for data_type, points in series.items():
        out: dict[int, int] = {}
        for at, value in points.items():
            out[at - at % width] = out.get(at - at % width, 0) + value
        summed[data_type] = out
    return name, width, summed


def stats(
    task_id: TaskArg,
    *,
    ctx: Ctx,
    since: Annotated[str, typer.Option(
        "--since", help="Start: epoch ms, ISO 8601 (UTC unless an offset is given), or a duration ago (1h, 30m, 2d).")] = "24h",
    until: Annotated[str, typer.Option("--until", help="End, same forms; default now.")] = "now",
    granularity: Annotated[str, typer.Option(
        "--granularity", "-g", help="auto (server's choice), 5m, 1h or 1d (days are UTC).")] = "auto",
    data_types: Annotated[list[str] | None, typer.Option(
        "--type", "-t", help="REQUEST, SUCCESS, FAILURE, SKIP, SIZE (repeatable or comma-separated); default all.")] = None,
    width: Annotated[int, typer.Option("--width", min=10, max=1000, help="Sparkline width.")] = 60,
) -> None:
    """Counters over time for a task: a table of non-empty buckets and a sparkline per type."""
    now = _now_ms()
    start, end = parse_time(since, now), parse_time(until, now)
    if end < start:
        raise ConfigError("--until is earlier than --since")
    chosen = _GRANULARITY_ALIASES.get(granularity.strip().lower())
    if chosen is None:
        raise ConfigError(f"--granularity must be auto, 5m, 1h or 1d, not {granularity!r}")
    types = [t.strip().upper() for item in (data_types or list(DATA_TYPES)) for t in item.split(",") if t.strip()]
    unknown = [t for t in types if t not in DATA_TYPES]
    if unknown or not types:
        raise ConfigError(f"--type must be among {', '.join(DATA_TYPES)}")
    types = list(dict.fromkeys(types))
    name, step, series = _fetch_series(ctx.client(), task_id, types, start, end, chosen)
    totals = {t: sum(series.get(t, {}).values()) for t in types}
    if ctx.as_json:
        ctx.emit({
            "sync_task_id": task_id, "start_time": start, "end_time": end, "statistic_time_type": name,
            "statistic_datas": [
                {"data_type": t, "data": [{"time_stamp": at, "statistic_num": v}
                                          for at, v in sorted(series.get(t, {}).items())]}
                for t in types
            ],
            "totals": totals,
        })
        return
    table = Table("time (UTC)", *types, title=f"sync task {task_id}: {fmt_time(start)} → {fmt_time(end)} ({name})")
    for column in table.columns[1:]:
        column.justify = "right"
    stamps = sorted({at for t in types for at in series.get(t, {})})
    for at in stamps:
        cells = [format_bytes(series[t].get(at, 0)) if t == "SIZE" else f"{series[t].get(at, 0):,}" for t in types]
        table.add_row(fmt_time(at), *cells)
    table.add_row("total", *[format_bytes(totals[t]) if t == "SIZE" else f"{totals[t]:,}" for t in types],
                  style="bold", end_section=True)
    ctx.out.print(table)
    first = start - start % step
    slots = range(first, max(end, first + 1), step)
    lines = Table(show_header=False, box=None, pad_edge=False)
    for t in types:
        values = [series.get(t, {}).get(at, 0) for at in slots]
        total = format_bytes(totals[t]) if t == "SIZE" else f"{totals[t]:,}"
        lines.add_row(t, Text(f"▕{sparkline(values, width)}▏", style="cyan"), total)
    ctx.out.print(lines)


# -- failed keys and re-drive --------------------------------------------------------------------------


def failed(
    task_id: TaskArg,
    *,
    ctx: Ctx,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many keys; 0 = all.")] = 1000,
) -> None:
    """List failed keys of a task with the reason and the number of attempts."""
    objects: list[dict[str, Any]] = []
    truncated = False
    for found in ctx.client().iter_failed(task_id, page_size=1000 if limit == 0 else min(1000, limit + 1)):
        if limit and len(objects) >= limit:
            truncated = True
            break
        objects.append(found.model_dump(mode="json"))
    if ctx.as_json:
        ctx.emit({"sync_task_id": task_id, "objects": objects, "count": len(objects), "truncated": truncated})
        return
    if not objects:
        ctx.out.print(Text(f"no keys are failing now in sync task {task_id} (the month's FAILURE counter "
                           "of `task show` still counts failures that a retry has fixed)"))
        return
    table = Table("key", "reason", "attempts", "time", "message")
    for obj in objects:
        table.add_row(Text(printable_key(obj["key"])), obj["reason"] or "-", str(obj["attempts"]),
                      fmt_time(obj["time"]), Text(obj["message"] or ""))
    ctx.out.print(table)
    more = f" (first {limit}; --limit 0 lists all)" if truncated else ""
    ctx.out.print(f"{len(objects)} key(s) failing now{more}")


def retry(
    task_id: TaskArg,
    keys: Annotated[list[str] | None, typer.Argument(
        metavar="KEY...", help="Failed keys to re-drive (exact keys); default all failed keys.", show_default=False)] = None,
    *,
    ctx: Ctx,
    from_file: KeysFile = None,
    null: Annotated[bool, typer.Option("--null", "-0", help="Keys in FILE are NUL-separated.")] = False,
) -> None:
    """Re-drive failed keys: each becomes pending again and counts as a new request."""
    chosen: list[str] | None = None
    if keys or from_file is not None:
        chosen, problems = _gather_keys(keys, from_file, False, null, False)
        if problems:
            raise ConfigError("illegal key(s): " + "; ".join(problems[:20]))
    client = ctx.client()
    if chosen is None:
        retried = client.retry_failed(task_id)
    else:
        # Bounded bodies: the server limits a request to 12 MiB.
        retried = sum(client.retry_failed(task_id, chosen[i:i + 1000]) for i in range(0, len(chosen), 1000))
    ctx.done({"sync_task_id": task_id, "retried": retried}, f"re-driven {retried:,} failed key(s) of sync task {task_id}")


# -- watch ---------------------------------------------------------------------------------------------


def _snapshot(client: OmsyncClient, task_id: str) -> dict[str, Any]:
    show = client.show_task(task_id).model_dump(mode="json")
    return {"sync_task_id": task_id, "status": show["status"], "time": _now_ms(), **_counters(show)}


def _watch_view(snap: Mapping[str, Any], rates: Mapping[str, float], *, live: bool = True) -> Group:
    table = Table("status", "requests", "succeeded", "failed", "skipped", "copied", "pending",
                  "done/s", title=f"sync task {snap['sync_task_id']} (this month, UTC)")
    for column in table.columns[1:]:
        column.justify = "right"
    table.add_row(snap["status"], f"{snap['request']:,}", f"{snap['success']:,}", f"{snap['failure']:,}",
                  f"{snap['skip']:,}", format_bytes(snap["size"]), f"{snap['pending']:,}",
                  f"{rates['done']:,.1f}" if "done" in rates else "-")
    hint = "; Ctrl-C to leave" if live else ""
    return Group(table, Text(f"updated {fmt_time(snap['time'])}{hint}", style="dim"))


def _rates(prev: Mapping[str, Any] | None, snap: Mapping[str, Any]) -> dict[str, float]:
    if prev is None:
        return {}
    elapsed = max(0.001, (snap["time"] - prev["time"]) / 1000)

    def done(s: Mapping[str, Any]) -> int:
        return int(s["success"] + s["failure"] + s["skip"])

    return {"request": (snap["request"] - prev["request"]) / elapsed, "done": (done(snap) - done(prev)) / elapsed}


def watch(
    task_id: TaskArg,
    *,
    ctx: Ctx,
    interval: Annotated[float, typer.Option("--interval", "-n", min=0.2, help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
) -> None:
    """Live monthly counters and the pending backlog of a task (Ctrl-C exits with 0).

    With --json, prints one JSON object per refresh (one line each), or a single one with --once.
    """
    client = ctx.client()
    snap = _snapshot(client, task_id)
    if once:
        if ctx.as_json:
            ctx.emit(snap)
        else:
            ctx.out.print(_watch_view(snap, {}, live=False))
        return
    try:
        if ctx.as_json or not ctx.out.is_terminal:
            prev: dict[str, Any] | None = None
            while True:
                snap["rates"] = _rates(prev, snap)
                if ctx.as_json:
                    sys.stdout.write(json.dumps(snap) + "\n")
                    sys.stdout.flush()
                else:
                    ctx.out.print(_watch_view(snap, snap["rates"]))
                time.sleep(interval)
                prev, snap = snap, _snapshot(client, task_id)
        with Live(_watch_view(snap, {}), console=ctx.out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                prev, snap = snap, _snapshot(client, task_id)
                live.update(_watch_view(snap, _rates(prev, snap)), refresh=True)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_OK) from None


# -- any endpoint --------------------------------------------------------------------------------------


def api(
    method: Annotated[str, typer.Argument(help="GET, POST, DELETE, …")],
    path: Annotated[str, typer.Argument(help="Path below the endpoint; {project_id} is filled in.")],
    *,
    ctx: Ctx,
    query: Annotated[list[str] | None, typer.Option("--query", "-q", help="NAME=VALUE (repeatable).")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="JSON body, or @FILE.")] = None,
) -> None:
    """Send one signed request to any omsync endpoint and print the JSON answer."""
    if not path.startswith("/"):
        raise ConfigError(f"PATH must start with '/', e.g. /v2/{{project_id}}/sync-tasks, not {path!r}")
    pairs = []
    for item in query or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--query expects NAME=VALUE, not {item!r}")
        pairs.append((name, value))
    body: Any = None
    if data is not None:
        try:
            text = Path(data[1:]).read_text(encoding="utf-8") if data.startswith("@") else data
            body = json.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--data: {exc}") from exc
    answer = ctx.client().request(method, path, query=pairs, json_body=body)
    if ctx.as_json or not ctx.out.is_terminal:
        ctx.emit(answer)
    else:
        ctx.out.print_json(data=answer)


def register(app: typer.Typer) -> None:
    """Add ``omsync stats|failed|retry|watch|api`` to the ``omsync`` application."""
    app.command("stats")(_api_command(stats))
    app.command("failed")(_api_command(failed))
    app.command("retry")(_api_command(retry))
    app.command("watch")(_api_command(watch))
    app.command("api")(_api_command(api))
