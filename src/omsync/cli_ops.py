"""Operator commands that talk to a running omsync over its HTTP API (signed requests).

``omsync task create|list|show|start|stop|delete|limits``, ``omsync events send``, ``omsync stats``,
``omsync failed``, ``omsync retry``, ``omsync watch`` and ``omsync api`` (any endpoint).

Connection settings, per field, come from the first of: the flags (``--endpoint``, ``--ak``,
``--sk``, ``--project-id``); the profile file when one is chosen explicitly (``--profile PATH``
or ``--profile-name NAME``); the environment (``OMSYNC_ENDPOINT``, ``OMSYNC_AK``,
``OMSYNC_SK``, ``OMSYNC_PROJECT_ID``); the default profile file
(``$XDG_CONFIG_HOME/omsync/profile.toml``, else ``~/.config/omsync/profile.toml``), section
``[default]`` unless ``--profile-name`` picks another. The secret key is never printed.

Output is a human table by default; ``--json`` prints exactly one JSON document on stdout (and
errors as JSON on stderr). Exit codes: 0 success, 1 API or connection error, 2 usage or
configuration error, 3 not found (404), 4 authentication or authorization (401/403),
130 interrupted.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from omsync.domain.keys import encode_key_for_event
from omsync.humanize import format_bytes

if TYPE_CHECKING:
    # Imported where used: ``omsync serve`` and ``omsync keys`` need no HTTP client.
    from omsync.client import ApiError, OmsyncClient, RetryNotice

__all__ = [
    "EXIT_API",
    "EXIT_AUTH",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigError",
    "Connection",
    "events_app",
    "parse_time",
    "read_keys",
    "register",
    "resolve_connection",
    "sparkline",
    "task_app",
]

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_INTERRUPTED = 130

DATA_TYPES = ("REQUEST", "SUCCESS", "FAILURE", "SKIP", "SIZE")
FIVE_MINUTES_MS = 5 * 60 * 1000
HOUR_MS = 60 * 60 * 1000
DAY_MS = 24 * HOUR_MS
MAX_HOURLY_WINDOW_MS = 999 * HOUR_MS  # the server answers at most 1000 hourly points
GRANULARITIES = {"5m": ("FIVE_MINUTES", FIVE_MINUTES_MS), "1h": ("ONE_HOUR", HOUR_MS), "1d": ("ONE_DAY", DAY_MS)}
_GRANULARITY_ALIASES = {"five_minutes": "5m", "one_hour": "1h", "one_day": "1d", "auto": "auto",
                        "5m": "5m", "1h": "1h", "1d": "1d"}
_SPARK = "▁▂▃▄▅▆▇█"
_PROFILE_FIELDS = {"endpoint": "endpoint", "access_key": "access_key", "ak": "access_key",
                   "secret_key": "secret_key", "sk": "secret_key", "project_id": "project_id"}


class ConfigError(Exception):
    """Missing or invalid connection settings or arguments (exit code 2)."""


# -- connection settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Where and as whom to connect. ``secret_key`` is excluded from ``repr``."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    project_id: str


def default_profile_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/omsync/profile.toml``, else ``~/.config/omsync/profile.toml``."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "omsync" / "profile.toml"


def load_profile(path: Path, name: str) -> dict[str, str]:
    """The ``[name]`` section of the TOML profile at ``path`` as connection fields.

    Accepted keys: ``endpoint``, ``access_key`` (or ``ak``), ``secret_key`` (or ``sk``),
    ``project_id``. Raises :class:`ConfigError` when the file cannot be read or parsed, the
    section is missing, or a key is unknown or not a string.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read profile file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile file {path} is not valid TOML: {exc}") from exc
    section = data.get(name)
    if not isinstance(section, dict):
        raise ConfigError(f"profile file {path} has no [{name}] section")
    found: dict[str, str] = {}
    for key, value in section.items():
        target = _PROFILE_FIELDS.get(key)
        if target is None:
            raise ConfigError(f"profile [{name}] in {path}: unknown key {key!r} "
                              f"(use endpoint, access_key, secret_key, project_id)")
        if not isinstance(value, str):
            raise ConfigError(f"profile [{name}] in {path}: {key} must be a string")
        found[target] = value
    return found


def resolve_connection(
    *,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    project_id: str | None = None,
    profile: Path | None = None,
    profile_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """Combine flags, profile file and environment into a :class:`Connection` (see the module
    docstring for the order). Raises :class:`ConfigError` naming every missing setting."""
    env = os.environ if environ is None else environ
    flags = {"endpoint": endpoint, "access_key": access_key, "secret_key": secret_key, "project_id": project_id}
    from_env = {"endpoint": env.get("OMSYNC_ENDPOINT"), "access_key": env.get("OMSYNC_AK"),
                "secret_key": env.get("OMSYNC_SK"), "project_id": env.get("OMSYNC_PROJECT_ID")}
    explicit = profile is not None or profile_name is not None
    path = profile if profile is not None else default_profile_path(env)
    from_profile: dict[str, str] = {}
    if explicit or path.is_file():
        from_profile = load_profile(path, profile_name or "default")
    layers: list[Mapping[str, str | None]] = (
        [flags, from_profile, from_env] if explicit else [flags, from_env, from_profile]
    )
    values: dict[str, str] = {}
    for name in flags:
        for layer in layers:
            value = layer.get(name)
            if value:
                values[name] = value
                break
    hints = {"endpoint": "--endpoint / OMSYNC_ENDPOINT", "access_key": "--ak / OMSYNC_AK",
             "secret_key": "--sk / OMSYNC_SK", "project_id": "--project-id / OMSYNC_PROJECT_ID"}
    missing = [hints[n] for n in flags if n not in values]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or set them in the profile file {path})")
    return Connection(values["endpoint"], values["access_key"], values["secret_key"], values["project_id"])


# -- command plumbing ----------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What every API command gets: output consoles, ``--json``, and a lazily built client."""

    options: dict[str, Any]
    as_json: bool
    out: Console
    err: Console
    _client: OmsyncClient | None = None

    def client(self, *, max_retries: int | None = None) -> OmsyncClient:
        from omsync.client import OmsyncClient, RetryPolicy

        if self._client is None:
            conn = resolve_connection(**self.options)
            retry = RetryPolicy() if max_retries is None else RetryPolicy(max_retries=max_retries)
            try:
                self._client = OmsyncClient(conn.endpoint, conn.access_key, conn.secret_key, conn.project_id,
                                            retry=retry, on_retry=self._notice)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        return self._client

    def _notice(self, notice: RetryNotice) -> None:
        self.err.print(Text(f"retry {notice.attempt} in {notice.delay:.1f} s: {notice.reason}", style="yellow"))

    def emit(self, data: Any) -> None:
        """Print ``data`` as the single JSON document on stdout."""
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        sys.stdout.flush()

    def fail(self, code: int, message: str, error: dict[str, Any] | None = None, **extra: Any) -> NoReturn:
        """Report an error on stderr (JSON with ``--json``) and exit with ``code``."""
        if self.as_json:
            body = dict(error or {"error_msg": message})
            sys.stderr.write(json.dumps({"error": body, "exit_code": code, **extra}, ensure_ascii=False) + "\n")
        else:
            self.err.print(Text(f"error: {message}", style="red"))
        raise typer.Exit(code)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def exit_code_for(error: ApiError) -> int:
    """3 for 404 or an unknown task (OMS.1009, which Start/Stop/Delete answer with 400), 4 for
    401/403, 1 for any other API error."""
    if error.status == 404 or error.error_code == "OMS.1009":
        return EXIT_NOT_FOUND
    if error.status in (401, 403):
        return EXIT_AUTH
    return EXIT_API


_COMMON_OPTIONS: list[tuple[str, Any, Any]] = [
    ("endpoint", Annotated[str | None, typer.Option(
        "--endpoint", help="omsync base URL, e.g. http://127.0.0.1:8080 (env OMSYNC_ENDPOINT).",
        rich_help_panel="Connection")], None),
    ("access_key", Annotated[str | None, typer.Option(
        "--ak", help="Access key (env OMSYNC_AK).", rich_help_panel="Connection")], None),
    ("secret_key", Annotated[str | None, typer.Option(
        "--sk", help="Secret key (env OMSYNC_SK); prefer the environment or a profile file to this flag.",
        rich_help_panel="Connection", show_default=False)], None),
    ("project_id", Annotated[str | None, typer.Option(
        "--project-id", help="Project id (env OMSYNC_PROJECT_ID).", rich_help_panel="Connection")], None),
    ("profile", Annotated[Path | None, typer.Option(
        "--profile", help="Profile TOML file (default ~/.config/omsync/profile.toml).",
        rich_help_panel="Connection")], None),
    ("profile_name", Annotated[str | None, typer.Option(
        "--profile-name", help="Section of the profile file (default: default).",
        rich_help_panel="Connection")], None),
    ("as_json", Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only on stdout.")], False),
]


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped output is read by people through files and pagers: do not cut it at 80 columns.
        console.width = 200
    return console


def _api_command(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the connection options and ``--json``, and map failures to exit codes.

    ``func`` takes a keyword ``ctx: Ctx`` in place of those options.
    """
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "ctx"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, annotation, default in _COMMON_OPTIONS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from omsync.client import ApiConnectionError, ApiError

        options = {name: kwargs.pop(name) for name, _, _ in _COMMON_OPTIONS}
        as_json = bool(options.pop("as_json"))
        ctx = Ctx(options, as_json, _console(stderr=False), _console(stderr=True))
        try:
            func(*args, ctx=ctx, **kwargs)
        except ApiError as exc:
            ctx.fail(exit_code_for(exc), str(exc), exc.as_dict())
        except ApiConnectionError as exc:
            ctx.fail(EXIT_API, str(exc))
        except ConfigError as exc:
            ctx.fail(EXIT_USAGE, str(exc))
        except KeyboardInterrupt:
            ctx.fail(EXIT_INTERRUPTED, "interrupted")
        finally:
            ctx.close()

    wrapper.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]} | {"return": None}
    return wrapper


# -- formatting ----------------------------------------------------------------------------------------


def fmt_time(ms: int | None) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SSZ`` (UTC); ``-`` for none or 0."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def printable_key(key: str) -> str:
    """A key for display: characters that would not print (controls, line separators) escaped.

    Display only; ``--json`` output carries keys exactly.
    """
    if key.isprintable():
        return key
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    return "".join(
        c if c.isprintable() else named.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in key
    )


def sparkline(values: Sequence[int], width: int = 60) -> str:
    """A unicode sparkline of ``values``, summed into at most ``width`` cells.

    Zero cells are blank so that idle periods stand out; any non-zero cell shows at least ``▁``.
    """
    if not values:
        return ""
    width = max(1, width)
    per = math.ceil(len(values) / width)
    cells = [sum(values[i:i + per]) for i in range(0, len(values), per)]
    top = max(cells)
    if top <= 0:
        return " " * len(cells)
    return "".join(" " if v <= 0 else _SPARK[max(0, math.ceil(v * len(_SPARK) / top) - 1)] for v in cells)


# -- task ----------------------------------------------------------------------------------------------

task_app = typer.Typer(help="Create, list, show, start, stop and delete sync tasks; show and set their limits.",
                        no_args_is_help=True)

TaskArg = Annotated[str, typer.Argument(metavar="TASK", help="The sync task id.", show_default=False)]
SrcAk = Annotated[str | None, typer.Option("--src-ak", envvar="OMSYNC_SRC_AK", help="Source access key.",
                                           show_default=False)]
SrcSk = Annotated[str | None, typer.Option("--src-sk", envvar="OMSYNC_SRC_SK", help="Source secret key.",
                                           show_default=False)]
DstAk = Annotated[str | None, typer.Option("--dst-ak", envvar="OMSYNC_DST_AK", help="Destination access key.",
                                           show_default=False)]
DstSk = Annotated[str | None, typer.Option("--dst-sk", envvar="OMSYNC_DST_SK", help="Destination secret key.",
                                           show_default=False)]


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


def _kv_table(rows: Iterable[tuple[str, str]], title: str | None = None) -> Table:
    table = Table(show_header=False, title=title, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


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
    if ctx.as_json:
        ctx.emit({"sync_task_id": task_id})
    else:
        ctx.out.print(Text(f"created sync task {task_id}"))


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


def _counters(show: Mapping[str, Any]) -> dict[str, int]:
    counters = {
        "request": int(show["monthly_acceptance_request"]),
        "success": int(show["monthly_success_object"]),
        "failure": int(show["monthly_failure_object"]),
        "skip": int(show["monthly_skip_object"]),
        "size": int(show["monthly_size"]),
    }
    # Monthly counters: an occurrence accepted last month and finished this month can make the
    # difference negative at the turn of a month; a backlog is never below zero.
    counters["pending"] = max(0, counters["request"] - counters["success"] - counters["failure"] - counters["skip"])
    return counters


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
    if ctx.as_json:
        ctx.emit({"sync_task_id": task_id, "status": "SYNCHRONIZING"})
    else:
        ctx.out.print(Text(f"started sync task {task_id}"))


@task_app.command("stop")
@_api_command
def task_stop(task_id: TaskArg, *, ctx: Ctx) -> None:
    """Stop a task; events sent meanwhile are kept and copied after the next start."""
    ctx.client().stop_task(task_id)
    if ctx.as_json:
        ctx.emit({"sync_task_id": task_id, "status": "STOPPED"})
    else:
        ctx.out.print(Text(f"stopped sync task {task_id}"))


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
    if ctx.as_json:
        ctx.emit({"sync_task_id": task_id, "deleted": True})
    else:
        ctx.out.print(Text(f"deleted sync task {task_id}"))


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


# -- events --------------------------------------------------------------------------------------------

events_app = typer.Typer(help="Send sync events (changed object keys).", no_args_is_help=True)


def read_keys(data: bytes, *, null: bool = False, strip_cr: bool = False, what: str = "line") -> tuple[list[str], list[str]]:
    """Split ``data`` into object keys: one per line, or NUL-separated when ``null``.

    Only ``\\n`` (or NUL) separates keys; every other character, ``\\r`` included, is part of
    the key unless ``strip_cr`` removes one trailing ``\\r`` (CRLF files). Empty records are
    skipped (an empty key is not legal). Returns ``(keys, problems)``: each problem names the
    1-based record number of a key that is not UTF-8 or not a legal object key.
    """
    records = data.split(b"\0" if null else b"\n")
    if records and records[-1] == b"":
        records.pop()
    keys: list[str] = []
    problems: list[str] = []
    for number, raw in enumerate(records, 1):
        if strip_cr and raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            continue
        try:
            key = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{what} {number}: not valid UTF-8")
            continue
        try:
            encode_key_for_event(key)
        except ValueError as exc:
            problems.append(f"{what} {number}: {exc}")
            continue
        keys.append(key)
    return keys, problems


def _check_keys(keys: Sequence[str], what: str) -> list[str]:
    problems = []
    for number, key in enumerate(keys, 1):
        try:
            encode_key_for_event(key)
        except ValueError as exc:
            problems.append(f"{what} {number}: {exc}")
    return problems


def _gather_keys(
    keys: list[str] | None, from_file: Path | None, stdin: bool, null: bool, strip_cr: bool
) -> tuple[list[str], list[str]]:
    sources = sum([bool(keys), from_file is not None, stdin])
    if sources != 1:
        raise ConfigError("give keys as arguments, or --from-file FILE, or --stdin (exactly one)")
    if keys:
        return list(keys), _check_keys(keys, "argument")
    what = "record" if null else "line"
    if from_file is not None and str(from_file) != "-":
        try:
            data = from_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {from_file}: {exc.strerror or exc}") from exc
    else:
        data = sys.stdin.buffer.read()
    return read_keys(data, null=null, strip_cr=strip_cr, what=what)


@events_app.command("send")
@_api_command
def events_send(
    task_id: TaskArg,
    keys: Annotated[list[str] | None, typer.Argument(
        metavar="KEY...", help="Object keys exactly as stored (not URL-encoded).", show_default=False)] = None,
    *,
    ctx: Ctx,
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", "-f", help="Read keys from FILE (UTF-8, one per line; '-' = stdin).")] = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read keys from standard input.")] = False,
    null: Annotated[bool, typer.Option(
        "--null", "-0", help="Keys are NUL-separated (for keys containing newlines, e.g. find -print0).")] = False,
    strip_cr: Annotated[bool, typer.Option("--strip-cr", help="Drop one trailing CR per line (CRLF files).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1000, help="Keys per request.")] = 100,
    skip: Annotated[int, typer.Option("--skip", min=0, help="Skip the first N keys (resume an interrupted run).")] = 0,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries per batch on 429/503 (backlog full).")] = 10,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Progress bar (only on a terminal, never with --json).")] = True,
) -> None:
    """Send object keys as sync events, in batches, each key encoded so it arrives byte-exact.

    Keys are the real object keys: spaces, '+', '%', unicode and control characters are sent as they are. A file holds one key per line; keys that contain a newline need NUL-separated input (--null with --stdin or --from-file). Every key is checked before anything is sent.
    """
    found, problems = _gather_keys(keys, from_file, stdin, null, strip_cr)
    if problems:
        shown = problems[:20]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise ConfigError(f"{len(problems)} illegal key(s), nothing sent: " + "; ".join(shown) + more)
    todo = found[skip:]
    if not todo:
        raise ConfigError("no keys to send")
    from omsync.client import ApiConnectionError, ApiError

    client = ctx.client(max_retries=retries)
    accepted = 0
    started = time.monotonic()

    def done(count: int) -> None:
        nonlocal accepted
        accepted = count

    show_bar = progress and not ctx.as_json and ctx.err.is_terminal and len(todo) > batch_size
    try:
        if show_bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=ctx.err, transient=True) as bar:
                job = bar.add_task("keys", total=len(todo))

                def advance(count: int) -> None:
                    done(count)
                    bar.update(job, completed=count)

                client.send_keys(task_id, todo, batch_size=batch_size, on_batch=advance)
        else:
            client.send_keys(task_id, todo, batch_size=batch_size, on_batch=done)
    except (ApiError, ApiConnectionError) as exc:
        code = exit_code_for(exc) if isinstance(exc, ApiError) else EXIT_API
        error = exc.as_dict() if isinstance(exc, ApiError) else {"error_msg": str(exc)}
        resume = skip + accepted
        ctx.fail(code, f"{exc}\naccepted {accepted} of {len(todo)} key(s); resume with --skip {resume}",
                 error, accepted=accepted, total=len(todo), resume_skip=resume)
    except KeyboardInterrupt:
        resume = skip + accepted
        ctx.fail(EXIT_INTERRUPTED, f"interrupted: accepted {accepted} of {len(todo)} key(s); "
                 f"resume with --skip {resume}", accepted=accepted, total=len(todo), resume_skip=resume)
    seconds = round(time.monotonic() - started, 3)
    batches = math.ceil(len(todo) / batch_size)
    if ctx.as_json:
        ctx.emit({"sync_task_id": task_id, "keys": len(todo), "batches": batches, "seconds": seconds})
    else:
        ctx.out.print(Text(f"sent {len(todo):,} key(s) in {batches} batch(es) to sync task {task_id} in {seconds:.1f} s"))


# -- stats ---------------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"([0-9]+)\s*(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_time(value: str, now_ms: int) -> int:
    """A point in time as epoch milliseconds.

    Accepts ``now``; a plain number (epoch milliseconds); a duration ago such as ``90s``,
    ``30m``, ``1h``, ``2d``, ``1w`` (optionally ``-1h``); or an ISO 8601 time (``2026-05-01``,
    ``2026-05-01T12:00:00+02:00``; without an offset it is UTC). Raises :class:`ConfigError`.
    """
    text = value.strip()
    if text.lower() == "now":
        return now_ms
    if text.isascii() and text.isdigit():
        return int(text)
    relative = _RELATIVE.fullmatch(text.lstrip("-").strip())
    if relative:
        return now_ms - int(relative.group(1)) * _UNIT_MS[relative.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"cannot read time {value!r}: use epoch ms, ISO 8601, or a duration like 1h, 30m, 2d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


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
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", "-f", help="Read the keys from FILE (one per line; '-' = stdin).")] = None,
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
    if ctx.as_json:
        ctx.emit({"sync_task_id": task_id, "retried": retried})
    else:
        ctx.out.print(Text(f"re-driven {retried:,} failed key(s) of sync task {task_id}"))


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
    """Add the operator commands to the ``omsync`` application."""
    app.add_typer(task_app, name="task")
    app.add_typer(events_app, name="events")
    app.command("stats")(_api_command(stats))
    app.command("failed")(_api_command(failed))
    app.command("retry")(_api_command(retry))
    app.command("watch")(_api_command(watch))
    app.command("api")(_api_command(api))
