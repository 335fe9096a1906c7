"""ListSyncTaskStatistic over counts written at known times, read back through the SDK."""

from __future__ import annotations

import sqlite3
from typing import Any

from huaweicloudsdkoms.v2 import ListSyncTaskStatisticRequest, ShowSyncTaskRequest

from tests.api.conftest import create_task
from tests.omsync_server import OmsyncServer

BASE = 1_700_150_400_000  # 2023-11-16T16:00:00Z, an hour boundary
MIN5 = 300_000
HOUR = 3_600_000


def write_buckets(server: OmsyncServer, task_id: str, rows: list[tuple[int, dict[str, int]]]) -> None:
    """Put counters straight into the server's database, as the engine would have."""
    with sqlite3.connect(server.data_dir / "omsync.db") as db:
        for at, counts in rows:
            cols = ", ".join(counts)
            marks = ", ".join("?" for _ in counts)
            db.execute(f"INSERT INTO stat_buckets (task_id, bucket_start, {cols}) VALUES (?, ?, {marks})",
                       (task_id, at, *counts.values()))


def stats(client: Any, task_id: str, data_type: str, start: int, end: int) -> Any:
    return client.list_sync_task_statistic(ListSyncTaskStatisticRequest(
        sync_task_id=task_id, data_type=data_type, start_time=str(start), end_time=str(end)))


def points(response: Any, data_type: str) -> list[tuple[int, int]]:
    [entry] = [d for d in response.statistic_datas if d.data_type == data_type]
    return [(p.time_stamp, p.statistic_num) for p in entry.data]


def test_five_minute_buckets_omit_empty_ones(api_server: OmsyncServer, client: Any) -> None:
    task_id = create_task(client)
    write_buckets(api_server, task_id, [
        (BASE, {"request": 5, "success": 4, "size": 400}),
        (BASE + MIN5 * 2, {"request": 2, "failure": 1, "skip": 1}),  # BASE + MIN5 stays empty
        (BASE + HOUR, {"request": 7, "success": 7, "size": 700}),
    ])
    response = stats(client, task_id, "REQUEST,SUCCESS,FAILURE,SKIP,SIZE", BASE, BASE + HOUR + MIN5)
    assert response.statistic_time_type == "FIVE_MINUTES"
    assert points(response, "REQUEST") == [(BASE, 5), (BASE + 2 * MIN5, 2), (BASE + HOUR, 7)]
    assert points(response, "SUCCESS") == [(BASE, 4), (BASE + HOUR, 7)]
    assert points(response, "FAILURE") == [(BASE + 2 * MIN5, 1)]
    assert points(response, "SKIP") == [(BASE + 2 * MIN5, 1)]
    assert points(response, "SIZE") == [(BASE, 400), (BASE + HOUR, 700)]
    # a window that excludes the later buckets
    assert points(stats(client, task_id, "REQUEST", BASE, BASE + MIN5 - 1), "REQUEST") == [(BASE, 5)]


def test_long_ranges_sum_into_hours(api_server: OmsyncServer, client: Any) -> None:
    task_id = create_task(client)
    write_buckets(api_server, task_id, [
        (BASE, {"request": 1}), (BASE + MIN5 * 11, {"request": 2}),  # same hour
        (BASE + HOUR * 30, {"request": 4}),
    ])
    response = stats(client, task_id, "REQUEST", BASE, BASE + HOUR * 48)
    assert response.statistic_time_type == "ONE_HOUR"
    assert points(response, "REQUEST") == [(BASE, 3), (BASE + HOUR * 30, 4)]


def test_range_over_a_thousand_points_is_refused(client: Any) -> None:
    from tests.api.test_sdk_operations import expect_error

    task_id = create_task(client)
    exc = expect_error(lambda: stats(client, task_id, "REQUEST", BASE, BASE + HOUR * 1001), 400, "OMS.0064")
    assert "start_time" in str(exc)


def test_monthly_counters_sum_the_month_of_query_time(api_server: OmsyncServer, client: Any) -> None:
    task_id = create_task(client)
    nov = BASE  # 2023-11-16
    write_buckets(api_server, task_id, [
        (nov, {"request": 3, "success": 2, "failure": 1, "size": 10}),
        (1_698_796_800_000, {"request": 1, "skip": 1}),  # 2023-11-01T00:00Z, same month
        (1_698_796_800_000 - MIN5, {"request": 100}),     # 2023-10-31T23:55Z, previous month
    ])
    task = client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=str(nov)))
    assert (task.monthly_acceptance_request, task.monthly_success_object, task.monthly_failure_object,
            task.monthly_skip_object, task.monthly_size) == (4, 2, 1, 1, 10)
