from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.omsync_server import OmsyncServer, sdk_client

PROJECT = "0123456789abcdef0123456789abcdef"
OTHER_PROJECT = "fedcba9876543210fedcba9876543210"


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OmsyncServer]:
    """An ``omsync serve`` process with workers off: API behaviour only."""
    root = tmp_path_factory.mktemp("api")
    endpoints = {
        "HuaweiCloud:cn-north-4": "http://127.0.0.1:9",
        "Aliyun:cn-hangzhou": "http://127.0.0.1:9",
    }
    # The endpoints are fake: the bucket check of create/start is tested on its own server.
    server = OmsyncServer(data_dir=root / "data", env={"OMSYNC_ENDPOINTS": json.dumps(endpoints),
                                                       "OMSYNC_CHECK_BUCKETS_ON_CREATE": "false"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keys(api_server: OmsyncServer) -> dict[str, dict[str, Any]]:
    return {"main": api_server.create_key(PROJECT), "other": api_server.create_key(OTHER_PROJECT)}


@pytest.fixture(scope="session")
def client(api_server: OmsyncServer, keys: dict[str, dict[str, Any]]) -> Any:
    k = keys["main"]
    return sdk_client(api_server.url, k["access_key"], k["secret_key"], PROJECT)


@pytest.fixture(scope="session")
def other_client(api_server: OmsyncServer, keys: dict[str, dict[str, Any]]) -> Any:
    k = keys["other"]
    return sdk_client(api_server.url, k["access_key"], k["secret_key"], OTHER_PROJECT)


def task_body(**overrides: Any) -> Any:
    from huaweicloudsdkoms.v2 import CreateSyncTaskReq

    fields: dict[str, Any] = dict(
        src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket="src-bkt",
        src_ak="SRC-AK-VALUE", src_sk="SRC-SK-VALUE", dst_ak="DST-AK-VALUE", dst_sk="DST-SK-VALUE",
        dst_region="cn-north-4", dst_bucket="dst-bkt",
    )
    fields.update(overrides)
    return CreateSyncTaskReq(**fields)


def create_task(client: Any, **overrides: Any) -> str:
    from huaweicloudsdkoms.v2 import CreateSyncTaskRequest

    response = client.create_sync_task(CreateSyncTaskRequest(body=task_body(**overrides)))
    assert response.status_code == 200
    task_id: str = response.sync_task_id
    return task_id


@pytest.fixture()
def data_dir(api_server: OmsyncServer) -> Path:
    return api_server.data_dir
