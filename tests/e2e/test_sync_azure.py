"""Azure Blob Storage through the official SDK: Azurite → moto as a sync task's source
(``src_cloud_type="Azure"``), and moto → Azurite as its destination (``dst_cloud_type``)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from omsync.stores.profiles import resolve_endpoint
from tests.e2e.conftest import Sync
from tests.e2e.test_sync_cross import failed_objects
from tests.e2e.test_sync_s3 import body_for, put_sources
from tests.key_corpus import KEY_CORPUS
from tests.servers import S3Server
from tests.servers_azurite import AzuriteServer, azurite_fixture  # noqa: F401  (the azurite fixture)

MiB = 1024 * 1024
LARGE = "large/blob of 20 MiB.bin"


def _overrides(azurite: AzuriteServer, moto: S3Server) -> dict[str, str]:
    return {"Azure:*": azurite.account_url + "#azurite", "HuaweiCloud:moto": moto.endpoint_url + "#moto"}


def _blob_service(azurite: AzuriteServer) -> BlobServiceClient:
    return BlobServiceClient(azurite.account_url,
                             credential={"account_name": azurite.account, "account_key": azurite.key})


@pytest.fixture(scope="module")
def azure_sync(azurite: AzuriteServer, moto_s3: S3Server, make_sync: Any) -> Sync:
    sync: Sync = make_sync(_overrides(azurite, moto_s3))
    return sync


def common_keys(azurite: AzuriteServer, moto: S3Server) -> list[str]:
    """Corpus keys both Azure and moto declare they can hold."""
    overrides = _overrides(azurite, moto)
    from omsync.stores.azure import capabilities_for

    azure = capabilities_for(resolve_endpoint("Azure", "eastus", overrides))
    s3 = resolve_endpoint("HuaweiCloud", "moto", overrides).capabilities()
    return [key for _, key in KEY_CORPUS if azure.key_problem(key) is None and s3.key_problem(key) is None]


def test_azure_source_to_moto_byte_exact_with_metadata(azurite: AzuriteServer, moto_s3: S3Server,
                                                       azure_sync: Sync) -> None:
    container = azurite.make_container("e2e-azure-src")
    dst = moto_s3.make_bucket("e2e-from-azure")
    keys = common_keys(azurite, moto_s3)
    assert {"with space/file name.txt", "a+b", "100%", "what?x=1&y=2", "a#b", "x//y", "dir/",
            "中文/文件名.txt"} <= set(keys)
    large = os.urandom(20 * MiB)
    with _blob_service(azurite) as service:
        for key in keys:
            service.get_blob_client(container, key).upload_blob(
                body_for(key), overwrite=True, content_settings=ContentSettings(content_type="application/x-azure-test"),
                metadata={"origin": "azurite", "keysha": hashlib.sha1(key.encode()).hexdigest()})
        service.get_blob_client(container, LARGE).upload_blob(large, overwrite=True, max_concurrency=2)

    task_id = azure_sync.create_task(
        src_cloud_type="Azure", src_region="eastus", src_bucket=container, src_ak=azurite.account,
        src_sk=azurite.key, dst_ak=moto_s3.access_key, dst_sk=moto_s3.secret_key, dst_region="moto",
        dst_bucket=dst, enable_metadata_migration=True)
    azure_sync.send(task_id, [*keys, LARGE])
    task = azure_sync.wait_settled(task_id, timeout=120)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys) + 1, 0), \
        failed_objects(azure_sync, task_id)

    s3 = moto_s3.client()
    for key in keys:
        got = s3.get_object(Bucket=dst, Key=key)
        assert got["Body"].read() == body_for(key), key
        assert got["ContentType"] == "application/x-azure-test", key
        assert got["Metadata"]["origin"] == "azurite", key
        assert got["Metadata"]["keysha"] == hashlib.sha1(key.encode()).hexdigest(), key
    assert hashlib.sha256(s3.get_object(Bucket=dst, Key=LARGE)["Body"].read()).digest() == \
        hashlib.sha256(large).digest()


def test_missing_blob_is_source_not_found(azurite: AzuriteServer, moto_s3: S3Server, azure_sync: Sync) -> None:
    container = azurite.make_container("e2e-azure-missing")
    dst = moto_s3.make_bucket("e2e-azure-missing-dst")
    task_id = azure_sync.create_task(
        src_cloud_type="Azure", src_region="eastus", src_bucket=container, src_ak=azurite.account,
        src_sk=azurite.key, dst_ak=moto_s3.access_key, dst_sk=moto_s3.secret_key, dst_region="moto",
        dst_bucket=dst)
    azure_sync.send(task_id, ["never/written.txt"])
    task = azure_sync.wait_settled(task_id)
    assert task.monthly_failure_object == 1
    [failed] = failed_objects(azure_sync, task_id)
    assert failed["reason"] == "source_not_found"


def test_wrong_account_key_is_refused_at_creation(azurite: AzuriteServer, moto_s3: S3Server,
                                                  azure_sync: Sync) -> None:
    """The bucket check lists the container with the given account key: a wrong key is a 400
    naming the source and "access denied" when the task is created."""
    import base64

    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    container = azurite.make_container("e2e-azure-denied")
    dst = moto_s3.make_bucket("e2e-azure-denied-dst")
    with pytest.raises(ClientRequestException) as info:
        azure_sync.create_task(
            src_cloud_type="Azure", src_region="eastus", src_bucket=container, src_ak=azurite.account,
            src_sk=base64.b64encode(b"a wrong account key" * 3).decode(), dst_ak=moto_s3.access_key,
            dst_sk=moto_s3.secret_key, dst_region="moto", dst_bucket=dst)
    assert info.value.status_code == 400
    assert "[src_bucket]" in info.value.error_msg and "access denied" in info.value.error_msg


def test_missing_container_is_refused_at_creation(azurite: AzuriteServer, moto_s3: S3Server,
                                                  azure_sync: Sync) -> None:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    dst = moto_s3.make_bucket("e2e-azure-nocontainer-dst")
    with pytest.raises(ClientRequestException) as info:
        azure_sync.create_task(
            src_cloud_type="Azure", src_region="eastus", src_bucket="no-such-container",
            src_ak=azurite.account, src_sk=azurite.key,
            dst_ak=moto_s3.access_key, dst_sk=moto_s3.secret_key, dst_region="moto", dst_bucket=dst)
    assert info.value.status_code == 400
    assert "[src_bucket]" in info.value.error_msg and "bucket not found" in info.value.error_msg


def test_moto_to_azure_destination(azurite: AzuriteServer, moto_s3: S3Server, azure_sync: Sync) -> None:
    src = moto_s3.make_bucket("e2e-to-azure")
    container = azurite.make_container("e2e-azure-dst")
    keys = common_keys(azurite, moto_s3)
    put_sources(moto_s3, src, keys)
    large = os.urandom(20 * MiB)
    moto_s3.client().put_object(Bucket=src, Key=LARGE, Body=large, ContentType="video/x-large")
    task_id = azure_sync.create_task(
        src_cloud_type="HuaweiCloud", src_region="moto", src_bucket=src, src_ak=moto_s3.access_key,
        src_sk=moto_s3.secret_key, dst_cloud_type="Azure", dst_region="eastus", dst_bucket=container,
        dst_ak=azurite.account, dst_sk=azurite.key, enable_metadata_migration=True)
    azure_sync.send(task_id, [*keys, LARGE])
    task = azure_sync.wait_settled(task_id, timeout=120)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys) + 1, 0), \
        failed_objects(azure_sync, task_id)

    from omsync.stores.azure import decode_metadata

    with _blob_service(azurite) as service:
        for key in keys:
            blob = service.get_blob_client(container, key)
            assert blob.download_blob().readall() == body_for(key), key
            props = blob.get_blob_properties()
            assert props.content_settings.content_type == "application/x-omsync-test", key
            metadata = decode_metadata(props.metadata)
            assert metadata["origin"] == "e2e", key
            assert metadata["key-sha"] == hashlib.sha1(key.encode()).hexdigest(), key
            assert "omsync-src-mtime" in metadata, key
        blob = service.get_blob_client(container, LARGE)
        assert hashlib.sha256(blob.download_blob().readall()).digest() == hashlib.sha256(large).digest()
        assert blob.get_blob_properties().content_settings.content_type == "video/x-large"
        committed, _ = blob.get_block_list("committed")
        assert len(committed) > 1  # written as a block list
