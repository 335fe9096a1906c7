"""Cross-store sync through the official SDK: moto → SeaweedFS (real SigV4), fs → s3, s3 → fs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from omsync.stores.profiles import resolve_endpoint
from tests.e2e.conftest import PROJECT, Sync
from tests.e2e.test_sync_s3 import body_for, put_sources
from tests.key_corpus import KEY_CORPUS
from tests.rawhttp import signed_request
from tests.servers import S3Server


@pytest.fixture(scope="module")
def fs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fsroot")


@pytest.fixture(scope="module")
def cross_sync(moto_s3: S3Server, seaweed_s3: S3Server, make_sync: Any, fs_root: Path) -> Sync:
    import json

    endpoints = {
        "Aliyun:cn-hangzhou": moto_s3.endpoint_url + "#moto",
        "HuaweiCloud:cn-north-4": seaweed_s3.endpoint_url + "#seaweedfs",
        "HuaweiCloud:moto": moto_s3.endpoint_url + "#moto",
    }
    sync: Sync = make_sync(endpoints, fs_roots=json.dumps([str(fs_root)]))
    return sync


def common_keys(*endpoint_pairs: tuple[str, str, dict[str, str]]) -> list[str]:
    """Corpus keys every named endpoint declares it can hold (single-part)."""
    caps = [resolve_endpoint(cloud, region, overrides).capabilities() for cloud, region, overrides in endpoint_pairs]
    return [key for _, key in KEY_CORPUS if all(c.key_problem(key) is None for c in caps)]


def failed_objects(sync: Sync, task_id: str) -> list[dict[str, Any]]:
    response = signed_request(sync.server.url, "GET", f"/v2/{PROJECT}/sync-tasks/{task_id}/failed-objects",
                              ak=sync.key["access_key"], sk=sync.key["secret_key"], project_id=PROJECT)
    objects: list[dict[str, Any]] = response.json()["objects"]
    return objects


def test_moto_to_seaweedfs_with_real_signatures(moto_s3: S3Server, seaweed_s3: S3Server, cross_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("cross-src"), seaweed_s3.make_bucket("cross-dst")
    keys = common_keys(("Aliyun", "cn-hangzhou", {"Aliyun:cn-hangzhou": moto_s3.endpoint_url + "#moto"}),
                       ("HuaweiCloud", "cn-north-4", {"HuaweiCloud:cn-north-4": seaweed_s3.endpoint_url + "#seaweedfs"}))
    assert len(keys) >= 25
    put_sources(moto_s3, src, keys)
    task_id = cross_sync.create_task(
        src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, src_ak=moto_s3.access_key,
        src_sk=moto_s3.secret_key, dst_ak=seaweed_s3.access_key, dst_sk=seaweed_s3.secret_key,
        dst_region="cn-north-4", dst_bucket=dst, enable_metadata_migration=True)
    cross_sync.send(task_id, keys)
    task = cross_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys), 0), failed_objects(cross_sync, task_id)
    weed = seaweed_s3.client()
    for key in keys:
        got = weed.get_object(Bucket=dst, Key=key)
        assert got["Body"].read() == body_for(key), key
        assert got["Metadata"]["origin"] == "e2e"


def test_wrong_destination_secret_is_refused_at_creation(moto_s3: S3Server, seaweed_s3: S3Server,
                                                         cross_sync: Sync) -> None:
    """A destination that refuses the credentials makes every key fail: the task is refused
    when it is created (400 naming the destination), not accepted to fail key by key."""
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    src, dst = moto_s3.make_bucket("cross-deny-src"), seaweed_s3.make_bucket("cross-deny-dst")
    put_sources(moto_s3, src, ["denied"])
    with pytest.raises(ClientRequestException) as info:
        cross_sync.create_task(
            src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, src_ak="a", src_sk="b",
            dst_ak=seaweed_s3.access_key, dst_sk="wrong-secret", dst_region="cn-north-4", dst_bucket=dst)
    assert info.value.status_code == 400
    assert "[dst_bucket]" in info.value.error_msg and "access denied" in info.value.error_msg


def test_fs_to_s3_and_back(moto_s3: S3Server, cross_sync: Sync, fs_root: Path) -> None:
    source_dir = fs_root / "source"
    keys = ["top.txt", "nested/dir/file.bin", "spaces and+plus.txt", "unicode/日本語.txt", "empty"]
    for key in keys:
        path = source_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if key == "empty" else body_for(key))
    dst = moto_s3.make_bucket("fs-to-s3")
    up = cross_sync.create_task(
        src_cloud_type="Local", src_region="local", src_bucket=str(source_dir), src_ak="-", src_sk="-",
        dst_ak="a", dst_sk="b", dst_region="moto", dst_bucket=dst)
    cross_sync.send(up, keys)
    task = cross_sync.wait_settled(up)
    assert task.monthly_success_object == len(keys), failed_objects(cross_sync, up)
    s3 = moto_s3.client()
    for key in keys:
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == (source_dir / key).read_bytes()

    back_dir = fs_root / "back"
    back_dir.mkdir()  # like a bucket, the directory must exist
    down = cross_sync.create_task(
        src_cloud_type="HuaweiCloud", src_region="moto", src_bucket=dst, src_ak="a", src_sk="b",
        dst_cloud_type="Local", dst_ak="-", dst_sk="-", dst_region="local", dst_bucket=str(back_dir))
    cross_sync.send(down, keys)
    task = cross_sync.wait_settled(down)
    assert task.monthly_success_object == len(keys), failed_objects(cross_sync, down)
    for key in keys:
        assert hashlib.sha256((back_dir / key).read_bytes()).digest() == \
            hashlib.sha256((source_dir / key).read_bytes()).digest()


def test_local_bucket_outside_the_allowed_roots_is_refused(cross_sync: Sync, tmp_path: Path) -> None:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    with pytest.raises(ClientRequestException) as info:
        cross_sync.create_task(
            src_cloud_type="Local", src_region="local", src_bucket=str(tmp_path), src_ak="-", src_sk="-",
            dst_ak="a", dst_sk="b", dst_region="moto", dst_bucket="x-bucket")
    assert info.value.status_code == 400
    assert "src_bucket" in info.value.error_msg
