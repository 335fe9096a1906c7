"""``omsync migration`` through a real server (workers off): create, list, show, stop, start,
delete, errors and exit codes; secrets never printed (the Cli fixture checks every output)."""

from __future__ import annotations

from tests.cli.conftest import TASK_FLAGS, Cli


def test_create_list_show_stop_start_delete(cli: Cli) -> None:
    created = cli("migration", "create", *TASK_FLAGS, "--type", "prefix", "--prefix", "logs/", "--prefix", "img/",
                  "--save-prefix", "backup/", "--migrate-since", "1700000000",
                  "--bandwidth", "22:00-06:00=10485760", "--description", "backfill", "--json")
    assert created.code == 0, created.stderr
    task_id = created.json()["id"]
    assert created.json()["name"]

    shown = cli("migration", "show", str(task_id), "--json")
    assert shown.code == 0, shown.stderr
    task = shown.json()
    assert task["status"] == 2 and task["task_type"] == "prefix"
    assert task["src_node"]["object_key"] == ["logs/", "img/"] and task["dst_node"]["save_prefix"] == "backup/"
    assert task["bandwidth_policy"] == [{"start": "22:00", "end": "06:00", "max_bandwidth": 10485760}]
    assert task["migrate_since"] == 1700000000 and task["description"] == "backfill"

    human = cli("migration", "show", str(task_id))
    assert human.code == 0 and "2 (running)" in human.stdout and "'logs/'" in human.stdout
    assert "22:00-06:00 UTC: 10.0 MiB/s" in human.stdout

    listed = cli("migration", "list", "--status", "2", "--json")
    assert task_id in {t["id"] for t in listed.json()["tasks"]}
    table = cli("migration", "list")
    assert table.code == 0 and str(task_id) in table.stdout

    stopped = cli("migration", "stop", str(task_id), "--json")
    assert stopped.code == 0 and stopped.json() == {"id": task_id, "status": 3}
    assert cli("migration", "start", str(task_id)).code == 0
    assert cli("migration", "show", str(task_id), "--json").json()["status"] == 2

    busy = cli("migration", "delete", str(task_id), "--json")
    assert busy.code == 1 and busy.error()["error"]["error_code"] == "OMSYNC.0409"
    assert cli("migration", "stop", str(task_id)).code == 0
    assert cli("migration", "delete", str(task_id), "--json").json() == {"id": task_id, "deleted": True}
    gone = cli("migration", "show", str(task_id), "--json")
    assert gone.code != 0 and gone.error()["error"]["error_code"] == "OMS.1009"


def test_object_and_list_tasks_and_refusals(cli: Cli) -> None:
    obj = cli("migration", "create", *TASK_FLAGS, "--type", "object", "--object", "a/b.txt", "--object", "dir/", "--json")
    assert obj.code == 0, obj.stderr
    shown = cli("migration", "show", str(obj.json()["id"]), "--json").json()
    assert shown["src_node"]["object_key"] == ["a/b.txt", "dir/"]
    lst = cli("migration", "create", *TASK_FLAGS, "--type", "list", "--list-file-bucket", "lists",
              "--list-file-key", "jobs/", "--json")
    assert lst.code == 0, lst.stderr
    list_file = cli("migration", "show", str(lst.json()["id"]), "--json").json()["src_node"]["list_file"]
    assert (list_file["list_file_key"], list_file["obs_bucket"]) == ("jobs/", "lists")
    missing = cli("migration", "create", *TASK_FLAGS, "--type", "list", "--json")
    assert missing.code == 2 and "--list-file-bucket" in missing.stderr
    bad = cli("migration", "create", *TASK_FLAGS, "--bandwidth", "all-day", "--json")
    assert bad.code == 2 and "hh:mm-hh:mm" in bad.stderr
    refused = cli("migration", "create", *TASK_FLAGS, "--bandwidth", "01:00-02:00=5", "--json")
    assert refused.code == 1 and "max_bandwidth" in refused.error()["error"]["error_msg"]
