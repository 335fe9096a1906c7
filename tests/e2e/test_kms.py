"""Credentials sent encrypted for an omsync data key (crypto type KMS), through the official SDK.

The destination is SeaweedFS, which checks SigV4 against its own credentials: a task syncs only
if the worker decrypted the ciphertexts it was given into exactly those credentials.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkoms.v2 import CreateSyncTaskReq, CreateSyncTaskRequest, StartSyncTaskReq, StartSyncTaskRequest

from tests.e2e.conftest import PROJECT, Sync
from tests.e2e.test_sync_s3 import body_for, put_sources
from tests.omsync_server import omsync_cli
from tests.servers import S3Server

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def kms_sync(moto_s3: S3Server, seaweed_s3: S3Server, make_sync: Any) -> Sync:
    sync: Sync = make_sync({"Aliyun:cn-hangzhou": moto_s3.endpoint_url + "#moto",
                            "HuaweiCloud:cn-north-4": seaweed_s3.endpoint_url + "#seaweedfs"})
    return sync


def kms(sync: Sync, *args: str) -> str:
    done = omsync_cli(sync.server.data_dir, "kms", *args, env=sync.server.env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def encrypted(sync: Sync, key_id: str, values: dict[str, str]) -> dict[str, str]:
    return {name: kms(sync, "encrypt", "--key-id", key_id, value) for name, value in values.items()}


def plain_credentials(moto_s3: S3Server, seaweed_s3: S3Server) -> dict[str, str]:
    return {"src_ak": moto_s3.access_key, "src_sk": moto_s3.secret_key,
            "dst_ak": seaweed_s3.access_key, "dst_sk": seaweed_s3.secret_key}


def fields(src: str, dst: str, credentials: dict[str, str], **extra: Any) -> dict[str, Any]:
    return dict(src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, dst_region="cn-north-4",
                dst_bucket=dst, **credentials, **extra)


def refused(sync: Sync, **body: Any) -> str:
    with pytest.raises(ClientRequestException) as caught:
        sync.client.create_sync_task(CreateSyncTaskRequest(body=CreateSyncTaskReq(**body)))
    assert caught.value.status_code == 400, caught.value
    assert caught.value.error_code == "OMS.0064"
    return str(caught.value.error_msg)


def test_a_task_with_kms_encrypted_credentials_syncs_and_stores_no_plaintext(
        moto_s3: S3Server, seaweed_s3: S3Server, kms_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("kms-src"), seaweed_s3.make_bucket("kms-dst")
    keys = ["plain.txt", "with space/a+b.txt", "100%/中文?.bin"]
    put_sources(moto_s3, src, keys)
    key_id = kms(kms_sync, "create", "--project-id", PROJECT, "--alias", "credentials")
    assert len(key_id) == 36
    listed = json.loads(kms(kms_sync, "list", "--project-id", PROJECT, "--json"))
    assert [(k["key_id"], k["alias"], k["version"]) for k in listed] == [(key_id, "credentials", 1)]
    plain = plain_credentials(moto_s3, seaweed_s3)
    sealed = encrypted(kms_sync, key_id, plain)
    assert all(sealed[n].startswith("okms1:1:") and plain[n] not in sealed[n] for n in plain)

    task_id = kms_sync.create_task(**fields(src, dst, sealed, src_crypto_type="KMS", src_kms_key_id=key_id,
                                            dst_crypto_type="KMS", dst_kms_key_id=key_id))
    kms_sync.send(task_id, keys)
    task = kms_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys), 0), kms_sync.server.log()[-3000:]
    weed = seaweed_s3.client()
    for key in keys:
        assert weed.get_object(Bucket=dst, Key=key)["Body"].read() == body_for(key)

    # After a rotation new ciphertexts use version 2; ciphertexts of version 1 still decrypt.
    rotated = json.loads(kms(kms_sync, "rotate", key_id, "--json"))
    assert rotated["version"] == 2
    fresh = encrypted(kms_sync, key_id, {"dst_sk": plain["dst_sk"]})
    assert fresh["dst_sk"].startswith("okms1:2:")
    mixed = {**sealed, **fresh}
    dst2 = seaweed_s3.make_bucket("kms-dst-rotated")
    rotated_task = kms_sync.create_task(**fields(src, dst2, mixed, src_crypto_type="KMS", src_kms_key_id=key_id,
                                                 dst_crypto_type="KMS", dst_kms_key_id=key_id))
    kms_sync.send(rotated_task, keys[:1])
    task = kms_sync.wait_settled(rotated_task)
    assert (task.monthly_success_object, task.monthly_failure_object) == (1, 0)

    # StartSyncTask takes encrypted credentials too (a stopped task restarted with them).
    from huaweicloudsdkoms.v2 import StopSyncTaskRequest
    kms_sync.client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    kms_sync.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=StartSyncTaskReq(
        **encrypted(kms_sync, key_id, plain), src_crypto_type="KMS", src_kms_key_id=key_id,
        dst_crypto_type="KMS", dst_kms_key_id=key_id)))
    put_sources(moto_s3, src, ["after-restart.txt"])
    kms_sync.send(task_id, ["after-restart.txt"])
    task = kms_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (len(keys) + 1, 0)

    # No plaintext secret of these tasks in the database files (the AKs are not secret, the SKs are).
    data = b"".join(p.read_bytes() for p in Path(kms_sync.server.data_dir).iterdir() if p.name.startswith("omsync.db"))
    assert task_id.encode() in data
    assert seaweed_s3.secret_key.encode() not in data
    assert moto_s3.secret_key.encode() not in data


def test_refusals_name_the_field(moto_s3: S3Server, seaweed_s3: S3Server, kms_sync: Sync) -> None:
    src, dst = moto_s3.make_bucket("kms-src"), seaweed_s3.make_bucket("kms-dst-refused")
    plain = plain_credentials(moto_s3, seaweed_s3)
    mine = kms(kms_sync, "create", "--project-id", PROJECT)
    other = kms(kms_sync, "create", "--project-id", PROJECT)
    foreign = kms(kms_sync, "create", "--project-id", "another-project-0123456789abcdef")
    sealed = encrypted(kms_sync, mine, plain)
    on_mine = {"src_crypto_type": "KMS", "src_kms_key_id": mine, "dst_crypto_type": "KMS", "dst_kms_key_id": mine}

    assert "src_kms_key_id" in refused(kms_sync, **fields(src, dst, sealed, **{**on_mine, "src_kms_key_id": None}))
    unknown = "00000000-0000-4000-8000-000000000000"
    assert "src_kms_key_id" in refused(kms_sync, **fields(src, dst, sealed, **{**on_mine, "src_kms_key_id": unknown}))
    # A key of another project is unknown here.
    assert "dst_kms_key_id" in refused(kms_sync, **fields(src, dst, sealed, **{**on_mine, "dst_kms_key_id": foreign}))
    # A ciphertext made for another key does not decrypt with this one.
    for_other = encrypted(kms_sync, other, {"dst_sk": plain["dst_sk"]})
    assert "dst_sk" in refused(kms_sync, **fields(src, dst, {**sealed, **for_other}, **on_mine))
    # Not a ciphertext at all, and a tampered one.
    assert "src_ak" in refused(kms_sync, **fields(src, dst, {**sealed, "src_ak": "plain-text"}, **on_mine))
    tampered = sealed["src_sk"][:-4] + ("AAAA" if not sealed["src_sk"].endswith("AAAA") else "BBBB")
    assert "src_sk" in refused(kms_sync, **fields(src, dst, {**sealed, "src_sk": tampered}, **on_mine))
    # Plain access keys stay limited to 100 characters.
    assert "src_sk" in refused(kms_sync, **fields(src, dst, {**plain, "src_sk": "s" * 101}))
    # Mixed: the source plain, the destination encrypted, is fine.
    mixed = kms_sync.create_task(**fields(src, dst, {**plain, "dst_ak": sealed["dst_ak"], "dst_sk": sealed["dst_sk"]},
                                          dst_crypto_type="KMS", dst_kms_key_id=mine))
    assert mixed


def test_encrypting_over_the_api(moto_s3: S3Server, seaweed_s3: S3Server, kms_sync: Sync) -> None:
    from tests.rawhttp import signed_request

    def encrypt(key_id: str, body: Any, sk: str | None = None) -> Any:
        return signed_request(kms_sync.server.url, "POST", f"/v2/{PROJECT}/kms-keys/{key_id}/encrypt",
                              ak=kms_sync.key["access_key"], sk=sk or kms_sync.key["secret_key"], project_id=PROJECT,
                              body=json.dumps(body).encode())

    key_id = kms(kms_sync, "create", "--project-id", PROJECT)
    plain = plain_credentials(moto_s3, seaweed_s3)
    sealed = {}
    for name, value in plain.items():
        answer = encrypt(key_id, {"plaintext": value})
        assert answer.status_code == 200, answer.text
        assert answer.json()["key_id"] == key_id and answer.json()["version"] == 1
        assert value not in answer.text
        sealed[name] = answer.json()["ciphertext"]
    src, dst = moto_s3.make_bucket("kms-src"), seaweed_s3.make_bucket("kms-dst-api")
    put_sources(moto_s3, src, ["via-api.txt"])
    task_id = kms_sync.create_task(**fields(src, dst, sealed, src_crypto_type="KMS", src_kms_key_id=key_id,
                                            dst_crypto_type="KMS", dst_kms_key_id=key_id))
    kms_sync.send(task_id, ["via-api.txt"])
    task = kms_sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_failure_object) == (1, 0)

    foreign = kms(kms_sync, "create", "--project-id", "another-project-0123456789abcdef")
    for unknown in (foreign, "00000000-0000-4000-8000-000000000000"):
        refused = encrypt(unknown, {"plaintext": "x"})
        assert (refused.status_code, refused.json()["error_code"]) == (404, "OMSYNC.0404")
    bad = encrypt(key_id, {"plaintext": ""})
    assert bad.status_code == 400 and "plaintext" in bad.json()["error_msg"]
    assert encrypt(key_id, {"plaintext": "x"}, sk="wrong").status_code == 401
