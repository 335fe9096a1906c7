"""``omsync task limits`` through a real server: show, change some, lift one, clear, errors."""

from __future__ import annotations

import pytest

from omsync.cli_ops import ConfigError
from omsync.cli_tasks import parse_byte_rate
from tests.cli.conftest import Cli, create_task

UNLIMITED = {"max_concurrency": None, "max_objects_per_second": None, "max_bytes_per_second": None}


def test_show_set_lift_and_clear(cli: Cli) -> None:
    task_id = create_task(cli)
    shown = cli("task", "limits", task_id, "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json() == {"sync_task_id": task_id, **UNLIMITED}

    set_ = cli("task", "limits", task_id, "--concurrency", "3", "--bytes-per-second", "10M", "--json")
    assert set_.code == 0, set_.stderr
    assert set_.json() == {"sync_task_id": task_id, **UNLIMITED, "max_concurrency": 3,
                           "max_bytes_per_second": 10 * 1024 * 1024}
    # Only the limits named change; 0 lifts one.
    more = cli("task", "limits", task_id, "--objects-per-second", "2.5", "--concurrency", "0", "--json").json()
    assert more == {"sync_task_id": task_id, "max_concurrency": None, "max_objects_per_second": 2.5,
                    "max_bytes_per_second": 10 * 1024 * 1024}

    human = cli("task", "limits", task_id)
    assert human.code == 0, human.stderr
    assert "unlimited" in human.stdout and "10.0 MiB/s" in human.stdout and "per worker process" in human.stdout

    cleared = cli("task", "limits", task_id, "--clear", "--concurrency", "1", "--json")
    assert cleared.json() == {"sync_task_id": task_id, **UNLIMITED, "max_concurrency": 1}


def test_errors_and_exit_codes(cli: Cli) -> None:
    task_id = create_task(cli)
    low = cli("task", "limits", task_id, "--bytes-per-second", "100", "--json")
    assert low.code == 1
    assert low.error()["error"]["error_code"] == "OMS.0064"
    assert "max_bytes_per_second" in low.error()["error"]["error_msg"]
    assert cli("task", "limits", task_id, "--bytes-per-second", "lots").code == 2
    assert cli("task", "limits", "no-such-task", "--json").code == 3
    assert cli("task", "limits", task_id, "--json").json() == {"sync_task_id": task_id, **UNLIMITED}


@pytest.mark.parametrize(("text", "value"), [("1048576", 1048576), ("512K", 512 * 1024), ("10MiB/s", 10 * 1024**2),
                                             ("1.5G", 3 * 1024**3 // 2), ("0", 0)])
def test_byte_rates(text: str, value: int) -> None:
    assert parse_byte_rate(text) == value


def test_bad_byte_rate() -> None:
    with pytest.raises(ConfigError):
        parse_byte_rate("10T")
