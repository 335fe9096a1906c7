"""``omsync events send``, ``stats``, ``failed``, ``retry``, ``watch`` through a real server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cli.conftest import ENDPOINTS, TASK_SECRETS, Cli, connection_env, create_task, ledger_rows
from tests.key_corpus import KEY_CORPUS
from tests.omsync_server import OmsyncServer

# Characters that str.splitlines() and friends treat as line breaks, but that are ordinary
# characters of an object key: only "\n" separates keys in a file.
LINE_BREAK_LOOKALIKES = ["ends-with-cr\r", "ls\u2028sep", "ps\u2029sep", "nel\x85x", "vt\x0bx", "ff\x0cx",
                         "fs\x1cgs\x1drs\x1ex", "\rleading-cr"]


def awkward_keys(count: int) -> list[str]:
    """``count`` distinct keys: the shared corpus (minus keys with a newline), then prefixed variants."""
    base = [key for _, key in KEY_CORPUS if "\n" not in key] + LINE_BREAK_LOOKALIKES
    keys = list(base)
    short = [k for k in base if len(k.encode("utf-8")) <= 1000]
    n = 0
    while len(keys) < count:
        keys.append(f"{n:05d}-{short[n % len(short)]}")
        n += 1
    assert len(set(keys)) == count
    return keys


def test_send_10000_keys_from_file_exactly_once(cli: Cli, cli_server: OmsyncServer, tmp_path: Path) -> None:
    task_id = create_task(cli)
    keys = awkward_keys(10_000)
    path = tmp_path / "keys.txt"
    path.write_bytes("".join(k + "\n" for k in keys).encode("utf-8"))

    sent = cli("events", "send", task_id, "--from-file", str(path), "--json")
    assert sent.code == 0, sent.stderr
    summary = sent.json()
    assert summary["keys"] == 10_000 and summary["batches"] == 100 and summary["sync_task_id"] == task_id

    rows = ledger_rows(cli_server, task_id)
    assert len(rows) == 10_000
    assert {k.decode("utf-8") for k, _ in rows} == set(keys)
    assert all(generation == 1 for _, generation in rows)

    assert cli("task", "show", task_id, "--json").json()["monthly_acceptance_request"] == 10_000
    stats = cli("stats", task_id, "--since", "1h", "--json")
    assert stats.code == 0, stats.stderr
    doc = stats.json()
    assert doc["sync_task_id"] == task_id and doc["statistic_time_type"] == "FIVE_MINUTES"
    assert [d["data_type"] for d in doc["statistic_datas"]] == ["REQUEST", "SUCCESS", "FAILURE", "SKIP", "SIZE"]
    assert doc["totals"] == {"REQUEST": 10_000, "SUCCESS": 0, "FAILURE": 0, "SKIP": 0, "SIZE": 0}
    request = doc["statistic_datas"][0]["data"]
    assert sum(p["statistic_num"] for p in request) == 10_000
    assert all(set(p) == {"time_stamp", "statistic_num"} and p["time_stamp"] % 300_000 == 0 for p in request)
    assert doc["start_time"] < request[0]["time_stamp"] + 300_000 and request[-1]["time_stamp"] <= doc["end_time"]

    # 60 days is past the server's 1000-hour limit: fetched in windows, nothing counted twice.
    daily = cli("stats", task_id, "--since", "60d", "--granularity", "1d", "--type", "request", "--json").json()
    assert daily["statistic_time_type"] == "ONE_DAY" and daily["totals"] == {"REQUEST": 10_000}
    assert all(p["time_stamp"] % 86_400_000 == 0 for p in daily["statistic_datas"][0]["data"])
    fine = cli("stats", task_id, "--since", "2d", "-g", "5m", "-t", "REQUEST,SKIP", "--json").json()
    assert fine["statistic_time_type"] == "FIVE_MINUTES" and fine["totals"] == {"REQUEST": 10_000, "SKIP": 0}

    human = cli("stats", task_id, "--since", "1h", "--type", "REQUEST")
    assert human.code == 0 and "10,000" in human.stdout and "█" in human.stdout


def test_keys_with_newlines_need_nul_separated_stdin(cli: Cli, cli_server: OmsyncServer) -> None:
    task_id = create_task(cli)
    keys = ["n\nl", "two\n\nnewlines\n", "plain", "\n"]
    sent = cli("events", "send", task_id, "--stdin", "-0", "--json",
               input=b"".join(k.encode("utf-8") + b"\0" for k in keys))
    assert sent.code == 0, sent.stderr
    assert sent.json()["keys"] == 4
    assert sorted(k for k, _ in ledger_rows(cli_server, task_id)) == sorted(k.encode("utf-8") for k in keys)


def test_keys_as_arguments_are_sent_decoded_exact(cli: Cli, cli_server: OmsyncServer) -> None:
    task_id = create_task(cli)
    keys = ["a+b", "a%2Bb", "with space", "q?x#y", "日本/😀", "x//y", "dir/"]
    sent = cli("events", "send", task_id, *keys)
    assert sent.code == 0, sent.stderr
    assert "7 key(s)" in sent.stdout
    assert sorted(k for k, _ in ledger_rows(cli_server, task_id)) == sorted(k.encode("utf-8") for k in keys)


def test_illegal_key_sends_nothing(cli: Cli, cli_server: OmsyncServer, tmp_path: Path) -> None:
    task_id = create_task(cli)
    path = tmp_path / "keys.txt"
    path.write_bytes(b"fine-1\nfine-2\n" + b"x" * 1025 + b"\nfine-3\n\xff\xfe\n")
    result = cli("events", "send", task_id, "--from-file", str(path), "--json")
    assert result.code == 2
    message = result.error()["error"]["error_msg"]
    assert "line 3" in message and "line 5" in message
    assert ledger_rows(cli_server, task_id) == []


def test_crlf_and_skip(cli: Cli, cli_server: OmsyncServer, tmp_path: Path) -> None:
    task_id = create_task(cli)
    path = tmp_path / "keys.txt"
    path.write_bytes(b"one\r\ntwo\r\n\r\nthree\r\n")
    assert cli("events", "send", task_id, "-f", str(path), "--strip-cr", "--skip", "1").code == 0
    assert sorted(k for k, _ in ledger_rows(cli_server, task_id)) == [b"three", b"two"]


def test_full_backlog_reports_how_far_it_got(cli: Cli, tmp_path: Path) -> None:
    server = OmsyncServer(data_dir=tmp_path / "data", env={
        "OMSYNC_ENDPOINTS": json.dumps(ENDPOINTS), "OMSYNC_MAX_PENDING_PER_TASK": "50",
        "OMSYNC_CHECK_BUCKETS_ON_CREATE": "false"}).start()
    try:
        key = server.create_key("small-backlog")
        small = Cli(cli.home, {**connection_env(server, key), **TASK_SECRETS}, (key["secret_key"],))
        task_id = create_task(small)
        result = small("events", "send", task_id, *[f"k{i}" for i in range(200)], "--retries", "0", "--json")
        assert result.code == 1, result.stderr
        assert result.stdout == ""
        doc = result.error()
        assert doc["error"]["error_code"] == "OMSYNC.0503" and doc["error"]["status"] == 503
        assert doc["accepted"] == 100 and doc["total"] == 200 and doc["resume_skip"] == 100
        assert small("task", "show", task_id, "--json").json()["monthly_acceptance_request"] == 100
    finally:
        server.stop()


def test_failed_and_retry_on_a_task_without_failures(cli: Cli) -> None:
    task_id = create_task(cli)
    assert cli("events", "send", task_id, "a", "b").code == 0
    failed = cli("failed", task_id, "--json")
    assert failed.code == 0, failed.stderr
    assert failed.json() == {"sync_task_id": task_id, "objects": [], "count": 0, "truncated": False}
    retried = cli("retry", task_id, "--json")
    assert retried.code == 0, retried.stderr
    assert retried.json() == {"sync_task_id": task_id, "retried": 0}
    assert cli("retry", task_id, "a", "--json").json()["retried"] == 0
    assert "no keys are failing now" in cli("failed", task_id).stdout


def test_watch_once_and_until_interrupted(cli: Cli) -> None:
    task_id = create_task(cli)
    assert cli("events", "send", task_id, "x", "y", "z").code == 0
    once = cli("watch", task_id, "--once", "--json")
    assert once.code == 0, once.stderr
    snap: dict[str, Any] = once.json()
    assert snap["sync_task_id"] == task_id and snap["status"] == "SYNCHRONIZING"
    assert (snap["request"], snap["success"], snap["failure"], snap["skip"], snap["pending"]) == (3, 0, 0, 0, 3)

    import os
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OMSYNC_")}, **cli.env,
           "HOME": str(cli.home), "XDG_CONFIG_HOME": str(cli.home / ".config")}
    proc = subprocess.Popen([sys.executable, "-m", "omsync", "watch", task_id, "--json", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert all(line["pending"] == 3 for line in lines)
        assert "done" in lines[1]["rates"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
