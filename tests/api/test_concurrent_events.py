"""Many SDK clients posting events at once: every accepted occurrence is in the ledger."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from huaweicloudsdkoms.v2 import CreateSyncEventsRequest, ShowSyncTaskRequest, SyncObjectReq

from tests.api.conftest import PROJECT, create_task
from tests.omsync_server import OmsyncServer, sdk_client

CLIENTS = 12
POSTS = 15
KEYS_PER_POST = 10
DISTINCT = 40


def test_concurrent_posts_lose_nothing(api_server: OmsyncServer, keys: dict[str, Any], client: Any) -> None:
    task_id = create_task(client)
    k = keys["main"]

    def post_all(n: int) -> int:
        own = sdk_client(api_server.url, k["access_key"], k["secret_key"], PROJECT)
        sent = 0
        for p in range(POSTS):
            batch = [f"dir%2Fkey-{(n * 7 + p * 3 + i) % DISTINCT}" for i in range(KEYS_PER_POST)]
            own.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id, body=SyncObjectReq(object_keys=batch)))
            sent += len(batch)
        return sent

    with ThreadPoolExecutor(CLIENTS) as pool:
        sent = sum(pool.map(post_all, range(CLIENTS)))
    assert sent == CLIENTS * POSTS * KEYS_PER_POST
    with sqlite3.connect(api_server.data_dir / "omsync.db") as db:
        rows, generations = db.execute(
            "SELECT count(*), sum(generation) FROM ledger WHERE task_id = ?", (task_id,)).fetchone()
        stored = {r[0] for r in db.execute("SELECT key FROM ledger WHERE task_id = ?", (task_id,))}
    assert rows == DISTINCT
    assert generations == sent
    assert stored == {f"dir/key-{i}".encode() for i in range(DISTINCT)}
    show = client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=str(2**41)))
    del show  # far-future month: nothing counted there
    import time

    now = client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=int(time.time() * 1000)))
    assert now.monthly_acceptance_request == sent
