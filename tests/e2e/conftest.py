from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from huaweicloudsdkoms.v2 import (
    CreateSyncEventsRequest,
    CreateSyncTaskReq,
    CreateSyncTaskRequest,
    ShowSyncTaskRequest,
    SyncObjectReq,
)

from omsync.domain.keys import encode_key_for_event
from tests.omsync_server import OmsyncServer, sdk_client

PROJECT = "e2e0123456789abcdef0123456789ab"


def now_ms() -> int:
    return int(time.time() * 1000)


class Sync:
    """An omsync serve process with workers, a project key and the SDK client for it."""

    def __init__(self, server: OmsyncServer) -> None:
        self.server = server
        key = server.create_key(PROJECT)
        self.key = key
        self.client = sdk_client(server.url, key["access_key"], key["secret_key"], PROJECT)

    def create_task(self, **fields: Any) -> str:
        extra = {k: v for k, v in fields.items() if k in ("dst_cloud_type", "object_overwrite_mode")}
        body = CreateSyncTaskReq(**{k: v for k, v in fields.items() if k not in extra})
        if extra:  # omsync extensions the SDK model does not know: send them raw
            from tests.rawhttp import signed_request

            payload = {k: v for k, v in body.to_dict().items() if v is not None}
            payload.update(extra)
            response = signed_request(self.server.url, "POST", f"/v2/{PROJECT}/sync-tasks",
                                      ak=self.key["access_key"], sk=self.key["secret_key"], project_id=PROJECT,
                                      body=json.dumps(payload).encode())
            assert response.status_code == 200, response.text
            return str(response.json()["sync_task_id"])
        return str(self.client.create_sync_task(CreateSyncTaskRequest(body=body)).sync_task_id)

    def send(self, task_id: str, keys: list[str]) -> None:
        for start in range(0, len(keys), 100):
            batch = [encode_key_for_event(k) for k in keys[start:start + 100]]
            self.client.create_sync_events(CreateSyncEventsRequest(sync_task_id=task_id,
                                                                   body=SyncObjectReq(object_keys=batch)))

    def show(self, task_id: str) -> Any:
        return self.client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task_id, query_time=now_ms()))

    def wait_settled(self, task_id: str, timeout: float = 60.0) -> Any:
        """Wait until every accepted occurrence has an outcome; return the task."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.show(task_id)
            done = task.monthly_success_object + task.monthly_failure_object + task.monthly_skip_object
            if task.monthly_acceptance_request and done == task.monthly_acceptance_request:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled: {task}\n{self.server.log()[-3000:]}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def make_sync(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sync]]:
    started: list[OmsyncServer] = []

    def make(endpoints: dict[str, str], workers: int = 4, **env: str) -> Sync:
        root = tmp_path_factory.mktemp("omsync")
        settings_env = {
            "OMSYNC_ENDPOINTS": json.dumps(endpoints),
            "OMSYNC_OBJECT_LIST_INTERVAL_SECONDS": "1",
            "OMSYNC_RETRY_BASE_SECONDS": "0.05",
            "OMSYNC_RETRY_MAX_SECONDS": "0.5",
            **{f"OMSYNC_{k.upper()}": v for k, v in env.items()},
        }
        server = OmsyncServer(data_dir=root / "data", env=settings_env, workers=workers).start()
        started.append(server)
        return Sync(server)

    yield make
    for server in started:
        server.stop()
