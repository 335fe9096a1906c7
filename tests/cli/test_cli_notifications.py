"""``omsync task webhook`` and ``omsync task deletes`` through a real server."""

from __future__ import annotations

import httpx

from tests.cli.conftest import Cli, create_task


def test_webhook_create_show_rotate(cli: Cli) -> None:
    task_id = create_task(cli)
    none = cli("task", "webhook", task_id)
    assert none.code == 0, none.stderr
    assert "no webhook yet" in none.stdout
    made = cli("task", "webhook", task_id, "--rotate", "--json")
    assert made.code == 0, made.stderr
    first = made.json()
    base, _, secret = first["url"].partition("?secret=")
    assert base.endswith(f"/v2/webhooks/{task_id}") and len(secret) >= 40
    shown = cli("task", "webhook", task_id, "--json").json()
    assert shown["exists"] is True and secret not in str(shown)
    human = cli("task", "webhook", task_id)
    assert "has a webhook secret since" in human.stdout and secret not in human.stdout
    # The URL works as given (an empty S3 record list: nothing to copy), and stops after a rotation.
    assert httpx.post(first["url"], json={"Records": []}).status_code == 200
    second = cli("task", "webhook", task_id, "--rotate", "--json").json()
    assert second["url"] != first["url"]
    assert httpx.post(first["url"], json={"Records": []}).status_code == 403
    assert httpx.post(second["url"], json={"Records": []}).status_code == 200


def test_deletes_enable_show_disable_resume(cli: Cli) -> None:
    task_id = create_task(cli)
    shown = cli("task", "deletes", "show", task_id, "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json()["propagate_deletes"] is False and shown.json()["breaker_tripped"] is False
    enabled = cli("task", "deletes", "enable", task_id, "--grace-seconds", "5", "--max-per-minute", "7", "--json")
    assert enabled.code == 0, enabled.stderr
    state = enabled.json()
    assert (state["propagate_deletes"], state["delete_grace_seconds"], state["max_deletes_per_minute"]) == (True, 5, 7)
    human = cli("task", "deletes", "show", task_id)
    assert "propagate deletes" in human.stdout and "on" in human.stdout and "closed" in human.stdout
    disabled = cli("task", "deletes", "disable", task_id, "--json").json()
    assert disabled["propagate_deletes"] is False and disabled["max_deletes_per_minute"] == 7
    resumed = cli("task", "deletes", "resume", task_id, "--discard", "--json")
    assert resumed.code == 0 and resumed.json()["discarded_now"] == 0


def test_unknown_task_exit_code(cli: Cli) -> None:
    assert cli("task", "webhook", "no-such-task").code == 3
    assert cli("task", "deletes", "show", "no-such-task").code == 3
