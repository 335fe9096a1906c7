"""The shared plumbing of the operator commands that talk to a running omsync over its HTTP
API (signed requests): :class:`Ctx` and :func:`_api_command` (connection, client, output, exit
codes), connection and profile resolution, the ``task`` command group object (``task_app``,
which other modules add commands to), argument types, formatting helpers (times, keys,
sparklines, key/value tables), time parsing and reading keys from arguments, files or stdin.

The command groups live beside it, each with ``register(app)``: :mod:`omsync.cli_tasks`
(``omsync task create|list|show|start|stop|delete|limits``), :mod:`omsync.cli_events`
(``omsync events send``) and :mod:`omsync.cli_stats` (``omsync stats``, ``failed``, ``retry``,
``watch`` and ``api``, any endpoint).

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
from rich.console import Console
from rich.table import Table
from rich.text import Text

from omsync.domain.keys import encode_key_for_event

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
    "parse_time",
    "read_keys",
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

HOUR_MS = 60 * 60 * 1000
DAY_MS = 24 * HOUR_MS
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

    def done(self, data: Any, text: str) -> None:
        """Report a finished action: ``data`` as the JSON document with ``--json``, else
        ``text`` (printed as plain text, never as markup)."""
        if self.as_json:
            self.emit(data)
        else:
            self.out.print(Text(text))

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
KeysFile = Annotated[Path | None, typer.Option(
    "--from-file", "-f", help="Read keys from FILE (UTF-8, one per line; '-' = stdin).", show_default=False)]


def _kv_table(rows: Iterable[tuple[str, str]], title: str | None = None) -> Table:
    table = Table(show_header=False, title=title, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


# -- times ---------------------------------------------------------------------------------------------


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


# -- keys from arguments, files or stdin --------------------------------------------------------------

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
