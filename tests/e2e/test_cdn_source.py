"""Tasks whose source is read through a CDN domain (``source_cdn``), through the official SDK.

The CDN is tests/cdn_server.py: it serves the moto source bucket and checks the task's
signing scheme with its own implementation of each formula. Metadata comes from the bucket
(HEAD with the task's credentials), bytes from the CDN.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkoms.v2 import CreateSyncTaskReq, CreateSyncTaskRequest, SourceCdnReq

from omsync.stores.profiles import resolve_endpoint
from tests.cdn_server import CdnServer
from tests.e2e.conftest import PROJECT, Sync
from tests.e2e.test_sync_s3 import body_for, moto_endpoints, put_sources
from tests.key_corpus import holdable
from tests.omsync_server import omsync_cli
from tests.rawhttp import signed_request
from tests.servers import S3Server

pytestmark = pytest.mark.timeout(300)

SCHEMES = ["NONE", "ALIYUN_OSS_A", "ALIYUN_OSS_B", "ALIYUN_OSS_C", "TENCENT_COS_A", "TENCENT_COS_B",
           "TENCENT_COS_C", "TENCENT_COS_D", "QINIU_PRIVATE_AUTHENTICATION", "KSYUN_PRIVATE_AUTHENTICATION",
           "AZURE_SAS_TOKEN"]
CDN_KEY = "cdn key+with%odd?chars-中"


def sas_token(valid_seconds: int = 3600) -> str:
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + valid_seconds))
    return f"sv=2024-11-04&ss=b&srt=o&sp=r&se={expiry}&spr=https,http&sig=c2lnbmF0dXJl%2B%2Fx%3D"


def key_for(scheme: str) -> str:
    return sas_token() if scheme == "AZURE_SAS_TOKEN" else "" if scheme == "NONE" else CDN_KEY


@pytest.fixture(scope="module")
def cdn_sync(moto_s3: S3Server, make_sync: Any) -> Sync:
    sync: Sync = make_sync(moto_endpoints(moto_s3), max_attempts="3")
    return sync


@pytest.fixture(scope="module")
def source(moto_s3: S3Server) -> tuple[str, list[str]]:
    """The source bucket with the awkward keys moto can hold."""
    bucket = moto_s3.make_bucket("cdn-src")
    capabilities = resolve_endpoint("Aliyun", "cn-hangzhou", moto_endpoints(moto_s3)).capabilities()
    keys = [key for _, key in holdable(capabilities)]
    put_sources(moto_s3, bucket, keys)
    return bucket, keys


@pytest.fixture()
def cdn(moto_s3: S3Server, source: tuple[str, list[str]], request: pytest.FixtureRequest) -> Iterator[CdnServer]:
    scheme = getattr(request, "param", "ALIYUN_OSS_A")
    with CdnServer(moto_s3.client(), source[0], scheme, key_for(scheme)) as server:
        yield server


def cdn_task(sync: Sync, moto_s3: S3Server, src: str, dst: str, cdn: CdnServer, **cdn_fields: Any) -> str:
    # The same credentials on both sides: without the CDN this copy would be server-side.
    source_cdn = SourceCdnReq(domain=cdn.domain, protocol="http", authentication_type=cdn.scheme,
                              **{"authentication_key": cdn.key or None, **cdn_fields})
    return sync.create_task(src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src,
                            src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key, dst_ak=moto_s3.access_key,
                            dst_sk=moto_s3.secret_key, dst_region="cn-north-4", dst_bucket=dst,
                            source_cdn=source_cdn)


def api(sync: Sync, method: str, path: str, **kwargs: Any) -> Any:
    return signed_request(sync.server.url, method, f"/v2/{PROJECT}/sync-tasks{path}", ak=sync.key["access_key"],
                          sk=sync.key["secret_key"], project_id=PROJECT, **kwargs)


def failed(sync: Sync, task_id: str) -> list[dict[str, Any]]:
    response = api(sync, "GET", f"/{task_id}/failed-objects", query=[("limit", 1000)])
    assert response.status_code == 200, response.text
    return list(response.json()["objects"])


@pytest.mark.parametrize("cdn", SCHEMES, indirect=True)
def test_awkward_keys_arrive_byte_exact_through_every_scheme(moto_s3: S3Server, cdn_sync: Sync, cdn: CdnServer,
                                                             source: tuple[str, list[str]]) -> None:
    src, keys = source
    dst = moto_s3.make_bucket(f"cdn-dst-{cdn.scheme.lower().replace('_', '-')}")
    task_id = cdn_task(cdn_sync, moto_s3, src, dst, cdn)
    cdn_sync.send(task_id, keys)
    task = cdn_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys), 0), failed(cdn_sync, task_id)
    s3 = moto_s3.client()
    for key in keys:
        assert s3.get_object(Bucket=dst, Key=key)["Body"].read() == body_for(key), key
    # Every object's bytes came through the CDN (no server-side copy), each under its own key.
    assert sorted(set(cdn.served)) == sorted(keys)
    assert cdn.refused == []
    # The task shows its CDN, never the key.
    shown = api(cdn_sync, "GET", f"/{task_id}", query=[("query_time", int(time.time() * 1000))])
    assert shown.json()["source_cdn"] == {"domain": cdn.domain, "protocol": "http", "authentication_type": cdn.scheme}
    if cdn.key:
        assert cdn.key not in shown.text and json.dumps(cdn.key)[1:-1] not in shown.text
        database = b"".join(p.read_bytes() for p in cdn_sync.server.data_dir.iterdir()
                            if p.name.startswith("omsync.db"))
        assert task_id.encode() in database and cdn.key.encode() not in database


@pytest.mark.parametrize("cdn", ["ALIYUN_OSS_A", "TENCENT_COS_D", "AZURE_SAS_TOKEN"], indirect=True)
def test_a_wrong_key_ends_as_access_denied(moto_s3: S3Server, cdn_sync: Sync, cdn: CdnServer,
                                           source: tuple[str, list[str]]) -> None:
    src, keys = source
    dst = moto_s3.make_bucket(f"cdn-dst-wrong-{cdn.scheme.lower().replace('_', '-')}")
    signed_with = sas_token().replace("sig=", "sig=WRONG") if cdn.scheme == "AZURE_SAS_TOKEN" else "not the key"
    task_id = cdn_task(cdn_sync, moto_s3, src, dst, cdn, authentication_key=signed_with)
    cdn_sync.send(task_id, keys[:3])
    task = cdn_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (0, 3)
    assert {o["reason"] for o in failed(cdn_sync, task_id)} == {"access_denied"}
    assert len(cdn.refused) == 3 and cdn.served == []  # refused at once, not retried


@pytest.mark.parametrize("cdn", ["ALIYUN_OSS_B", "TENCENT_COS_C", "QINIU_PRIVATE_AUTHENTICATION",
                                 "KSYUN_PRIVATE_AUTHENTICATION"], indirect=True)
def test_an_expired_signature_ends_as_access_denied(moto_s3: S3Server, cdn_sync: Sync, cdn: CdnServer,
                                                    source: tuple[str, list[str]]) -> None:
    src, keys = source
    dst = moto_s3.make_bucket(f"cdn-dst-expired-{cdn.scheme.lower().replace('_', '-')}")
    cdn.clock_offset = 2 * 3600  # the CDN's time is past every validity window omsync signs for
    task_id = cdn_task(cdn_sync, moto_s3, src, dst, cdn)
    cdn_sync.send(task_id, keys[:2])
    task = cdn_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (0, 2)
    assert {o["reason"] for o in failed(cdn_sync, task_id)} == {"access_denied"}
    cdn.clock_offset = 0  # the same task, signing afresh: accepted
    assert api(cdn_sync, "POST", f"/{task_id}/failed-objects/retry", body=b"{}").status_code == 200
    task = cdn_sync.wait_settled(task_id)
    assert task.monthly_success_object == 2


def test_a_stale_cdn_copy_is_never_written(moto_s3: S3Server, cdn_sync: Sync, cdn: CdnServer,
                                           source: tuple[str, list[str]]) -> None:
    src, _ = source
    dst = moto_s3.make_bucket("cdn-dst-stale")
    s3 = moto_s3.client()
    same_size, shorter = "stale/same-size.bin", "stale/shorter.bin"
    for key in (same_size, shorter):
        s3.put_object(Bucket=src, Key=key, Body=b"fresh content!")
    cdn.stale = {same_size: b"stale content!", shorter: b"old"}  # an outdated cache of each
    task_id = cdn_task(cdn_sync, moto_s3, src, dst, cdn)
    cdn_sync.send(task_id, [same_size, shorter])
    task = cdn_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (0, 2)
    found = failed(cdn_sync, task_id)
    assert {o["reason"] for o in found} == {"retries_exhausted"}
    assert all("cdn_stale" in o["message"] for o in found)
    assert all(o["attempts"] == 3 for o in found)  # retried: a stale copy may be refreshed
    assert "Contents" not in s3.list_objects_v2(Bucket=dst, Prefix="stale/")
    cdn.stale = {}  # the CDN caught up
    api(cdn_sync, "POST", f"/{task_id}/failed-objects/retry", body=b"{}")
    task = cdn_sync.wait_settled(task_id)
    assert task.monthly_success_object == 2
    assert s3.get_object(Bucket=dst, Key=same_size)["Body"].read() == b"fresh content!"


def test_a_kms_encrypted_cdn_key(moto_s3: S3Server, cdn_sync: Sync, cdn: CdnServer,
                                 source: tuple[str, list[str]]) -> None:
    src, keys = source
    dst = moto_s3.make_bucket("cdn-dst-kms")

    def kms(*args: str) -> str:
        done = omsync_cli(cdn_sync.server.data_dir, "kms", *args, env=cdn_sync.server.env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    key_id = kms("create", "--project-id", PROJECT)
    sealed = kms("encrypt", "--key-id", key_id, cdn.key)
    task_id = cdn_task(cdn_sync, moto_s3, src, dst, cdn, authentication_key=sealed, crypto_type="KMS",
                       kms_key_id=key_id)
    cdn_sync.send(task_id, keys[:5])
    task = cdn_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (5, 0), failed(cdn_sync, task_id)

    def refused(**cdn_fields: Any) -> str:
        with pytest.raises(ClientRequestException) as caught:
            cdn_sync.client.create_sync_task(CreateSyncTaskRequest(body=CreateSyncTaskReq(
                src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, src_ak="a", src_sk="s",
                dst_ak="a", dst_sk="s", dst_region="cn-north-4", dst_bucket=dst,
                source_cdn=SourceCdnReq(**{"domain": cdn.domain, "protocol": "http", **cdn_fields}))))
        assert caught.value.status_code == 400
        return str(caught.value.error_msg)

    assert "source_cdn.authentication_key" in refused(authentication_type="ALIYUN_OSS_A", authentication_key=CDN_KEY[:-1] + "x",
                                                      crypto_type="KMS", kms_key_id=key_id)
    assert "source_cdn.kms_key_id" in refused(authentication_type="ALIYUN_OSS_A", authentication_key=sealed,
                                              crypto_type="KMS")
    assert "source_cdn.authentication_key" in refused(authentication_type="TENCENT_COS_B")
    assert "source_cdn.authentication_type" in refused(authentication_type="SOMETHING_ELSE", authentication_key="k")
    assert "source_cdn.protocol" in refused(authentication_type="NONE", protocol="ftp")
    assert "source_cdn.domain" in refused(authentication_type="NONE", domain="http://cdn.example.com/path")


def test_a_large_object_comes_through_the_cdn_in_ranges_and_the_key_survives_a_restart(
        moto_s3: S3Server, make_sync: Any, source: tuple[str, list[str]]) -> None:
    sync: Sync = make_sync(moto_endpoints(moto_s3), multipart_threshold_bytes=str(5 * 1024 * 1024),
                           part_size_bytes=str(5 * 1024 * 1024))
    src, _ = source
    dst = moto_s3.make_bucket("cdn-dst-large")
    key = "large/a b+c%?中.bin"
    body = bytes(range(256)) * (12 * 1024 * 1024 // 256 + 7)  # three parts, the last one short
    moto_s3.client().put_object(Bucket=src, Key=key, Body=body)
    with CdnServer(moto_s3.client(), src, "ALIYUN_OSS_C", CDN_KEY) as cdn:
        task_id = cdn_task(sync, moto_s3, src, dst, cdn)
        sync.send(task_id, [key])
        task = sync.wait_settled(task_id)
        assert (task.monthly_success_object, task.monthly_failure_object) == (1, 0), failed(sync, task_id)
        assert moto_s3.client().get_object(Bucket=dst, Key=key)["Body"].read() == body
        assert len(cdn.ranges) == 3 and cdn.served == [key] * 3

        # StartSyncTask without the CDN key keeps the task's key.
        from huaweicloudsdkoms.v2 import StartSyncTaskReq, StartSyncTaskRequest, StopSyncTaskRequest

        sync.client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
        sync.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=StartSyncTaskReq(
            src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key, dst_ak=moto_s3.access_key,
            dst_sk=moto_s3.secret_key)))
        sync.send(task_id, ["plain/file.txt"])
        task = sync.wait_settled(task_id)
        assert (task.monthly_success_object, task.monthly_failure_object) == (2, 0), failed(sync, task_id)
        assert cdn.served[-1] == "plain/file.txt" and cdn.refused == []
