"""Archived source objects through the official SDK against moto, which models the archive
classes (GetObject/CopyObject refused until restored) and RestoreObject. Its state manager
makes a restore take time: ``s3::keyrestore`` advances every RESTORE_SECONDS, so a restored
object is first reported ``ongoing-request="true"`` and becomes readable only later.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from huaweicloudsdkoms.v2 import ListSyncTasksRequest

from omsync.stores.profiles import resolve_endpoint
from tests.e2e.conftest import PROJECT, Sync
from tests.e2e.test_sync_s3 import body_for, moto_endpoints
from tests.key_corpus import holdable
from tests.rawhttp import signed_request
from tests.servers import S3Server
from tests.servers_azurite import AzuriteServer, azurite_fixture  # noqa: F401  (the azurite fixture)

pytestmark = pytest.mark.timeout(300)

RESTORE_SECONDS = 2


@pytest.fixture(scope="module")
def slow_restores(moto_s3: S3Server) -> Iterator[None]:
    url = f"{moto_s3.endpoint_url}/moto-api/state-manager"
    done = httpx.post(f"{url}/set-transition", timeout=10, json={
        "model_name": "s3::keyrestore", "transition": {"progression": "time", "seconds": RESTORE_SECONDS}})
    assert done.status_code in (200, 201), done.text
    yield
    httpx.post(f"{url}/unset-transition", timeout=10, json={"model_name": "s3::keyrestore"})


@pytest.fixture(scope="module")
def restore_sync(moto_s3: S3Server, make_sync: Any, slow_restores: None) -> Sync:
    # One attempt only: a key whose wait for its restore counted as an attempt would fail.
    sync: Sync = make_sync(moto_endpoints(moto_s3), max_attempts="1", restore_poll_seconds="0.3",
                           restore_poll_max_seconds="1")
    return sync


def archive(moto_s3: S3Server, bucket: str, keys: list[str], storage_class: str) -> None:
    s3 = moto_s3.client()
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=body_for(key), StorageClass=storage_class)
    # moto's restore clock starts with the object: let the first step pass, so that a restore
    # asked for now is reported under way for RESTORE_SECONDS before it completes.
    time.sleep(RESTORE_SECONDS + 0.5)


def fields(moto_s3: S3Server, src: str, dst: str, *, streamed: bool, **extra: Any) -> dict[str, Any]:
    return dict(src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, src_ak=moto_s3.access_key,
                src_sk=moto_s3.secret_key, dst_ak=moto_s3.access_key + ("-dst" if streamed else ""),
                dst_sk=moto_s3.secret_key, dst_region="cn-north-4", dst_bucket=dst, **extra)


def awkward_keys(moto_s3: S3Server) -> list[str]:
    capabilities = resolve_endpoint("Aliyun", "cn-hangzhou", moto_endpoints(moto_s3)).capabilities()
    return [key for _, key in holdable(capabilities)]


def failed_objects(sync: Sync, task_id: str) -> list[dict[str, Any]]:
    response = signed_request(sync.server.url, "GET", f"/v2/{PROJECT}/sync-tasks/{task_id}/failed-objects",
                              ak=sync.key["access_key"], sk=sync.key["secret_key"], project_id=PROJECT,
                              query=[("limit", 1000)])
    assert response.status_code == 200, response.text
    return list(response.json()["objects"])


def ledger_rows(sync: Sync, task_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{sync.server.data_dir / 'omsync.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT key, attempts, state FROM ledger WHERE task_id = ?", (task_id,)).fetchall()


@pytest.mark.parametrize("streamed", [False, True], ids=["server-side-copy", "streamed"])
def test_archived_objects_are_restored_then_copied_byte_exact(moto_s3: S3Server, restore_sync: Sync,
                                                              streamed: bool) -> None:
    tag = "stream" if streamed else "same"
    src, dst = moto_s3.make_bucket(f"restore-src-{tag}"), moto_s3.make_bucket(f"restore-dst-{tag}")
    keys = awkward_keys(moto_s3)
    archived, deep = keys[: len(keys) // 2], keys[len(keys) // 2:]
    archive(moto_s3, src, archived, "GLACIER")
    archive(moto_s3, src, deep, "DEEP_ARCHIVE")
    s3 = moto_s3.client()
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_object(Bucket=src, Key=archived[0])  # archived: not readable before a restore

    task_id = restore_sync.create_task(**fields(moto_s3, src, dst, streamed=streamed, enable_restore=True))
    restore_sync.send(task_id, keys)
    task = restore_sync.wait_settled(task_id, timeout=120)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys), 0), failed_objects(
        restore_sync, task_id)
    assert task.enable_restore is True
    for key in keys:
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == body_for(key), key
        assert s3.head_object(Bucket=src, Key=key)["Restore"].startswith('ongoing-request="false"')
    # Waiting for a restore is no attempt: the attempt that copied is the only one counted.
    rows = ledger_rows(restore_sync, task_id)
    assert len(rows) == len(keys) and {(attempts, state) for _, attempts, state in rows} == {(1, "done")}
    log = restore_sync.server.log()
    assert "restore requested" in log and "restore under way" in log  # polled while moto restored


def test_without_enable_restore_archived_objects_fail_as_source_archived(moto_s3: S3Server,
                                                                         restore_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("restore-src-off"), moto_s3.make_bucket("restore-dst-off")
    keys = ["cold/a b+c.txt", "cold/100%.bin", "cold/中文?.txt"]
    archive(moto_s3, src, keys, "GLACIER")
    s3 = moto_s3.client()
    s3.put_object(Bucket=src, Key="warm.txt", Body=b"warm")
    task_id = restore_sync.create_task(**fields(moto_s3, src, dst, streamed=True))
    restore_sync.send(task_id, [*keys, "warm.txt"])
    task = restore_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (1, len(keys))
    failed = failed_objects(restore_sync, task_id)
    assert sorted(o["key"] for o in failed) == sorted(keys)
    assert {o["reason"] for o in failed} == {"source_archived"}
    assert all("GLACIER" in o["message"] for o in failed)
    assert "Restore" not in s3.head_object(Bucket=src, Key=keys[0])  # nothing was restored


def test_a_restore_under_way_survives_a_restart(moto_s3: S3Server, make_sync: Any, slow_restores: None) -> None:
    # Looks far apart: the first one comes after the restart.
    sync: Sync = make_sync(moto_endpoints(moto_s3), restore_poll_seconds="4", restore_poll_max_seconds="4")
    src, dst = moto_s3.make_bucket("restore-src-restart"), moto_s3.make_bucket("restore-dst-restart")
    keys = ["restart/one", "restart/two words+plus"]
    archive(moto_s3, src, keys, "DEEP_ARCHIVE")
    task_id = sync.create_task(**fields(moto_s3, src, dst, streamed=True, enable_restore=True))
    sync.send(task_id, keys)
    deadline = time.monotonic() + 30
    while sync.server.log().count("restore requested") < len(keys):
        assert time.monotonic() < deadline, sync.server.log()[-3000:]
        time.sleep(0.1)
    sync.server.stop()
    with sqlite3.connect(f"file:{sync.server.data_dir / 'omsync.db'}?mode=ro", uri=True) as conn:
        waiting = conn.execute("SELECT count(*) FROM restores WHERE task_id = ?", (task_id,)).fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM ledger WHERE task_id = ? AND state = 'pending' "
                               "AND reason = 'restoring'", (task_id,)).fetchone()[0]
    assert (waiting, pending) == (len(keys), len(keys))
    sync.server.start()
    task = sync.wait_settled(task_id, timeout=60)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys), 0)
    s3 = moto_s3.client()
    for key in keys:
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == body_for(key)
    listed = sync.client.list_sync_tasks(ListSyncTasksRequest())
    assert any(t.sync_task_id == task_id and t.enable_restore for t in listed.tasks)


@pytest.mark.parametrize("enable_restore", [False, True], ids=["restore-off", "restore-on"])
def test_an_azure_blob_in_the_archive_tier_fails_as_source_archived(
        azurite: AzuriteServer, moto_s3: S3Server, make_sync: Any, enable_restore: bool) -> None:
    # omsync does not rehydrate Azure blobs: with or without enable_restore they fail, saying why.
    sync: Sync = make_sync({"Azure:*": azurite.account_url + "#azurite",
                            "HuaweiCloud:moto": moto_s3.endpoint_url + "#moto"})
    tag = "on" if enable_restore else "off"
    container, dst = azurite.make_container(f"archived-{tag}"), moto_s3.make_bucket(f"from-azure-archive-{tag}")
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient(azurite.account_url,
                           credential={"account_name": azurite.account, "account_key": azurite.key}) as service:
        for key in ("cold/a b+c.txt", "warm.txt"):
            service.get_blob_client(container, key).upload_blob(body_for(key))
        service.get_blob_client(container, "cold/a b+c.txt").set_standard_blob_tier("Archive")
    task_id = sync.create_task(src_cloud_type="Azure", src_region="eastus", src_bucket=container,
                               src_ak=azurite.account, src_sk=azurite.key, dst_ak=moto_s3.access_key,
                               dst_sk=moto_s3.secret_key, dst_region="moto", dst_bucket=dst,
                               enable_restore=enable_restore)
    sync.send(task_id, ["cold/a b+c.txt", "warm.txt"])
    task = sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (1, 1)
    [failed] = failed_objects(sync, task_id)
    assert (failed["key"], failed["reason"]) == ("cold/a b+c.txt", "source_archived")
    assert ("cannot restore" in failed["message"]) is enable_restore
