"""``omsync events send``: sync events (changed object keys) from arguments, files or stdin."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    # Imported where used: ``omsync serve`` and ``omsync keys`` need no HTTP client.
    pass

from omsync.cli_ops import (
    EXIT_API,
    EXIT_INTERRUPTED,
    ConfigError,
    Ctx,
    KeysFile,
    TaskArg,
    _api_command,
    _gather_keys,
    exit_code_for,
    read_keys,
)

__all__ = ["events_app", "read_keys", "register"]

# -- events --------------------------------------------------------------------------------------------

events_app = typer.Typer(help="Send sync events (changed object keys).", no_args_is_help=True)


@events_app.command("send")
@_api_command
def events_send(
    task_id: TaskArg,
    keys: Annotated[list[str] | None, typer.Argument(
        metavar="KEY...", help="Object keys exactly as stored (not URL-encoded).", show_default=False)] = None,
    *,
    ctx: Ctx,
    from_file: KeysFile = None,
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
    ctx.done({"sync_task_id": task_id, "keys": len(todo), "batches": batches, "seconds": seconds},
             f"sent {len(todo):,} key(s) in {batches} batch(es) to sync task {task_id} in {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``omsync events`` to the ``omsync`` application."""
    app.add_typer(events_app, name="events")
