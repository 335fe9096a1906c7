"""Operator commands for native change notifications:

    omsync task webhook TASK [--rotate]            # show, or create/rotate, the secret webhook URL
    omsync task deletes show TASK
    omsync task deletes enable TASK [--grace-seconds 60] [--max-per-minute 100]
    omsync task deletes disable TASK
    omsync task deletes resume TASK [--discard]    # close the breaker after a delete storm
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from omsync.cli_ops import Ctx, TaskArg, _api_command, _kv_table, fmt_time, task_app

deletes_app = typer.Typer(help="Delete propagation of native notifications: show, enable, disable, resume.",
                          no_args_is_help=True)


def _webhook(task_id: str, *, ctx: Ctx,
             rotate: Annotated[bool, typer.Option(
                 "--rotate", help="Create a new secret (the first one, or replacing the old one at once).")] = False,
             ) -> None:
    """Show whether the task has a secret webhook URL, or create/rotate it with --rotate. The
    URL (with its secret) is shown once; only a hash of the secret is stored."""
    client = ctx.client()
    if rotate:
        # Drawn here, so that the server never has to send a secret back: it keeps only a hash.
        secret = "omsw_" + secrets.token_urlsafe(32)
        answer = client.set_webhook(task_id, secret)
        url = f"{client.endpoint.rstrip('/')}{answer['path']}?secret={secret}"
        if ctx.as_json:
            ctx.emit({**answer, "url": url})
            return
        ctx.out.print(_kv_table([("webhook URL", url)], title=f"webhook of sync task {task_id}"))
        ctx.err.print("Store this URL now: its secret cannot be shown again (rotate to get a new one).")
        return
    answer = client.webhook(task_id)
    if ctx.as_json:
        ctx.emit(answer)
        return
    if answer["exists"]:
        ctx.out.print(f"sync task {task_id} has a webhook secret since {fmt_time(answer['created_at'])}; "
                      f"POST to {client.endpoint}{answer['path']}?secret=… (rotate with --rotate)")
    else:
        ctx.out.print(f"sync task {task_id} has no webhook yet: create it with `omsync task webhook {task_id} --rotate`")


def _print_state(ctx: Ctx, task_id: str, state: Mapping[str, Any], title: str) -> None:
    if ctx.as_json:
        ctx.emit(dict(state))
        return
    breaker = "closed"
    if state["breaker_tripped"]:
        breaker = (f"OPEN since {fmt_time(state['breaker_tripped_at'])} ({state['breaker_tripped_count']} deletes "
                   f"in a minute): deletes paused; resume with `omsync task deletes resume {task_id}`")
    ctx.out.print(_kv_table([
        ("propagate deletes", "on" if state["propagate_deletes"] else "off"),
        ("grace delay", f"{state['delete_grace_seconds']:g} s"),
        ("breaker limit", f"{state['max_deletes_per_minute']} deletes per minute"),
        ("breaker", breaker),
        ("pending deletes", str(state["pending_deletes"])),
        ("deleted / kept / failed / discarded",
         f"{state['deleted']} / {state['kept']} / {state['failed']} / {state['discarded']}"),
    ], title=title))


def _show(task_id: TaskArg, *, ctx: Ctx) -> None:
    """Settings, pending deletes, breaker and counters of the task's delete propagation."""
    _print_state(ctx, task_id, ctx.client().deletes(task_id), f"deletes of sync task {task_id}")


def _enable(task_id: TaskArg, *, ctx: Ctx,
            grace_seconds: Annotated[float, typer.Option(
                "--grace-seconds", min=0, help="Wait this long after a delete notification before acting.")] = 60.0,
            max_per_minute: Annotated[int, typer.Option(
                "--max-per-minute", min=1, help="More delete notifications than this in a minute trip the breaker.")] = 100,
            ) -> None:
    """Propagate deletes: a delete notification removes the destination object after the grace
    delay, only if the source still lacks the key then."""
    state = ctx.client().set_deletes(task_id, enabled=True, grace_seconds=grace_seconds, max_per_minute=max_per_minute)
    _print_state(ctx, task_id, state, f"deletes of sync task {task_id} (updated)")


def _disable(task_id: TaskArg, *, ctx: Ctx) -> None:
    """Stop propagating deletes (pending ones are dropped when their time comes)."""
    current = ctx.client().deletes(task_id)
    state = ctx.client().set_deletes(task_id, enabled=False, grace_seconds=current["delete_grace_seconds"],
                                     max_per_minute=current["max_deletes_per_minute"])
    _print_state(ctx, task_id, state, f"deletes of sync task {task_id} (updated)")


def _resume(task_id: TaskArg, *, ctx: Ctx,
            discard: Annotated[bool, typer.Option(
                "--discard", help="Drop the deletes that waited instead of applying them.")] = False,
            ) -> None:
    """Close the task's delete breaker: the waiting deletes run (each still checked against
    the source), or with --discard are dropped."""
    state = ctx.client().resume_deletes(task_id, discard=discard)
    _print_state(ctx, task_id, state, f"deletes of sync task {task_id} (resumed)")


def register(app: typer.Typer) -> None:
    """Add ``task webhook`` and ``task deletes …`` to the ``omsync`` application."""
    del app  # the commands belong to the ``task`` group, which the operator commands added
    task_app.command("webhook")(_api_command(_webhook))
    deletes_app.command("show")(_api_command(_show))
    deletes_app.command("enable")(_api_command(_enable))
    deletes_app.command("disable")(_api_command(_disable))
    deletes_app.command("resume")(_api_command(_resume))
    task_app.add_typer(deletes_app, name="deletes")
