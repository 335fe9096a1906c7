"""``omsync task …`` through a real server: JSON output, human output, exit codes, credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.conftest import PROJECT, TASK_FLAGS, Cli, connection_env, create_task, ledger_rows
from tests.omsync_server import OmsyncServer, free_port


def test_task_lifecycle_with_json_output(cli: Cli) -> None:
    task_id = create_task(cli)

    listed = cli("task", "list", "--json")
    assert listed.code == 0, listed.stderr
    doc = listed.json()
    assert doc["count"] == len(doc["tasks"]) >= 1
    assert task_id in {t["sync_task_id"] for t in doc["tasks"]}

    shown = cli("task", "show", task_id, "--json")
    assert shown.code == 0, shown.stderr
    info = shown.json()
    assert info["sync_task_id"] == task_id and info["status"] == "SYNCHRONIZING"
    assert info["src_bucket"] == "src-bkt" and info["dst_bucket"] == "dst-bkt"
    assert info["monthly_acceptance_request"] == 0

    assert cli("task", "stop", task_id, "--json").json() == {"sync_task_id": task_id, "status": "STOPPED"}
    assert cli("task", "list", "--status", "STOPPED", "--json").json()["tasks"][0]["status"] == "STOPPED"
    again = cli("task", "stop", task_id, "--json")
    assert again.code == 1 and again.stdout == ""
    assert again.error()["error"]["error_code"] == "OMSYNC.0409"

    started = cli("task", "start", task_id, "--json")  # source/destination keys from OMSYNC_SRC_AK … env
    assert started.code == 0, started.stderr
    assert cli("task", "show", task_id, "--json").json()["status"] == "SYNCHRONIZING"
    busy = cli("task", "delete", task_id, "--json")
    assert busy.code == 1 and busy.error()["error"]["error_code"] == "OMSYNC.0409"

    assert cli("task", "stop", task_id).code == 0
    deleted = cli("task", "delete", task_id, "--json")
    assert deleted.code == 0, deleted.stderr
    assert deleted.json() == {"sync_task_id": task_id, "deleted": True}
    assert cli("task", "show", task_id, "--json").code == 3
    assert cli("task", "delete", task_id, "--json").code == 3


def test_list_limit_pages(cli: Cli) -> None:
    for _ in range(3):
        create_task(cli)
    doc = cli("task", "list", "--limit", "2", "--json").json()
    assert len(doc["tasks"]) == 2 and doc["count"] >= 3
    assert len(cli("task", "list", "--json").json()["tasks"]) == doc["count"]


def test_human_output(cli: Cli) -> None:
    task_id = create_task(cli)
    shown = cli("task", "show", task_id)
    assert shown.code == 0, shown.stderr
    assert task_id in shown.stdout and "SYNCHRONIZING" in shown.stdout and "pending" in shown.stdout
    listed = cli("task", "list")
    assert listed.code == 0 and task_id in listed.stdout


def test_not_found_exits_3_for_every_command(cli: Cli) -> None:
    # The id is awkward on purpose: it must be signed and routed as one path segment.
    missing = "no such task+100% ü"
    for args in (["task", "show", missing], ["task", "stop", missing], ["task", "delete", missing],
                 ["events", "send", missing, "k"], ["stats", missing], ["retry", missing],
                 ["watch", missing, "--once"]):
        result = cli(*args, "--json")
        assert result.code == 3, (args, result.stderr)
        assert result.stdout == ""
        error = result.error()
        assert error["exit_code"] == 3
        # Stop and Delete answer an unknown task with 400 (the statuses their OMS pages list).
        status = 400 if args[:2] in (["task", "stop"], ["task", "delete"]) else 404
        assert error["error"]["error_code"] == "OMS.1009" and error["error"]["status"] == status
        assert error["error"]["request_id"]
    human = cli("task", "show", missing)
    assert human.code == 3 and "OMS.1009" in human.stderr and "request id" in human.stderr


def test_auth_errors_exit_4(cli: Cli, cli_server: OmsyncServer, cli_keys: dict[str, dict[str, Any]]) -> None:
    wrong_secret = cli("task", "list", "--json", extra_env={"OMSYNC_SK": "not-the-secret"})
    assert wrong_secret.code == 4
    assert wrong_secret.error()["error"]["error_code"] == "APIGW.0301"

    unknown_key = cli("task", "list", "--ak", "NOSUCHKEY", "--json")
    assert unknown_key.code == 4

    # Another project's valid key used on this project's paths.
    other = cli_keys["other"]
    foreign = cli("task", "list", "--ak", other["access_key"], "--sk", other["secret_key"], "--project-id", PROJECT,
                  "--json")
    assert foreign.code == 4
    assert foreign.error()["error"]["error_code"] == "APIGW.0302"


def test_usage_and_config_errors_exit_2(bare_cli: Cli, cli: Cli) -> None:
    missing = bare_cli("task", "list", "--json")
    assert missing.code == 2
    assert "OMSYNC_ENDPOINT" in missing.error()["error"]["error_msg"]
    assert bare_cli("task", "list", "--profile", "/nonexistent/profile.toml").code == 2
    assert cli("task", "list", "--no-such-flag").code == 2
    assert cli("events", "send", "some-task").code == 2  # no keys given
    assert cli("stats", "some-task", "--since", "yesterday-ish").code == 2
    assert cli("task", "create", "--src-region", "cn-hangzhou", "--json").code == 2


def test_unreachable_server_exits_1(cli: Cli) -> None:
    result = cli("task", "list", "--endpoint", f"http://127.0.0.1:{free_port()}", "--json", timeout=30)
    assert result.code == 1
    assert "cannot reach" in result.error()["error"]["error_msg"]


def test_profile_file(bare_cli: Cli, cli_server: OmsyncServer, cli_keys: dict[str, dict[str, Any]],
                      tmp_path: Path) -> None:
    env = connection_env(cli_server, cli_keys["main"])
    good = (f'endpoint = "{env["OMSYNC_ENDPOINT"]}"\naccess_key = "{env["OMSYNC_AK"]}"\n'
            f'secret_key = "{env["OMSYNC_SK"]}"\nproject_id = "{env["OMSYNC_PROJECT_ID"]}"\n')
    profile = tmp_path / "ops.toml"
    profile.write_text(f'[default]\nendpoint = "http://127.0.0.1:9"\n\n[ops]\n{good}')
    chosen = bare_cli("task", "list", "--json", "--profile", str(profile), "--profile-name", "ops")
    assert chosen.code == 0, chosen.stderr

    default = bare_cli.home / ".config" / "omsync" / "profile.toml"
    default.parent.mkdir(parents=True)
    default.write_text(f"[default]\n{good}")
    # The default profile fills what the environment lacks; the environment's wrong secret wins.
    assert bare_cli("task", "list", "--json").code == 0
    assert bare_cli("task", "list", "--json", extra_env={"OMSYNC_SK": "wrong"}).code == 4


def test_create_from_body_file(cli: Cli, tmp_path: Path) -> None:
    body = tmp_path / "task.json"
    body.write_text('{"src_region": "cn-hangzhou", "src_bucket": "from-file", "dst_region": "cn-north-4",'
                    ' "dst_bucket": "dst-bkt", "description": "made from a file"}')
    created = cli("task", "create", "--body", str(body), "--json")
    assert created.code == 0, created.stderr
    info = cli("task", "show", created.json()["sync_task_id"], "--json").json()
    assert info["src_bucket"] == "from-file" and info["description"] == "made from a file"
    refused = cli("task", "create", *TASK_FLAGS, "--description", "bad <chars>", "--json")
    assert refused.code == 1 and refused.error()["error"]["error_code"] == "OMS.0078"


def test_api_command_reaches_any_endpoint(cli: Cli, cli_server: OmsyncServer) -> None:
    task_id = create_task(cli)
    # Raw CreateSyncEvents: the body goes as written, so a bare '+' is decoded by the server as a space.
    raw = cli("api", "POST", f"/v2/{{project_id}}/sync-tasks/{task_id}/events", "--data", '{"object_keys": ["a+b"]}',
              "--json")
    assert raw.code == 0, raw.stderr
    assert ledger_rows(cli_server, task_id) == [(b"a b", 1)]
    listed = cli("api", "GET", "/v2/{project_id}/sync-tasks", "-q", "limit=1", "--json")
    assert listed.code == 0, listed.stderr
    assert len(listed.json()["tasks"]) == 1 and listed.json()["count"] >= 1
