"""The copy path against a real S3 server (moto), through ``StoreFactory`` and ``S3Store``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omsync.composition import build_engine, store_factory
from omsync.config import Settings
from omsync.domain.model import CloudType, Credentials, OutcomeKind, TaskSpec
from omsync.engine.copier import SRC_ETAG_META, SRC_MTIME_META, Copier, CopyLimits
from omsync.engine.factory import StoreFactory
from omsync.engine.retry import CopyError, Final, RetryPolicy
from omsync.services import Services
from omsync.stores.base import ErrorKind, ObjectStore, StoreError
from tests.engine.helpers import MIB, eventually, make_spec, payload
from tests.key_corpus import holdable, refused
from tests.servers import S3Server

SMALL = 100 * 1024
LARGE = 12 * MIB  # three 5 MiB parts (the smallest S3 allows), over a 6 MiB threshold


def settings_for(server: S3Server, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, endpoints={"S3:*": f"{server.endpoint_url}#moto"},
        multipart_threshold_bytes=6 * MIB, part_size_bytes=5 * MIB, part_concurrency=2, **extra,
    )


def bucket(server: S3Server) -> str:
    return server.make_bucket(f"eng-{uuid.uuid4().hex[:12]}")


def spec_for(src_bucket: str, dst_bucket: str, *, same_credentials: bool, **overrides: Any) -> TaskSpec:
    # moto accepts any credentials: different ones make two stores (a streamed copy), the same
    # ones one store (a server-side copy).
    dst = Credentials("src-ak", "src-sk") if same_credentials else Credentials("dst-ak", "dst-sk")
    fields: dict[str, Any] = dict(
        src_cloud_type=CloudType.S3, dst_cloud_type=CloudType.S3, src_region="us-east-1",
        dst_region="us-east-1", src_bucket=src_bucket, dst_bucket=dst_bucket,
        src=Credentials("src-ak", "src-sk"), dst=dst)
    return make_spec(**{**fields, **overrides})


@pytest.fixture()
async def factory(moto_s3: S3Server, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    made = StoreFactory(settings_for(moto_s3, tmp_path))
    yield made
    await made.close()


def read(server: S3Server, bucket_name: str, key: str) -> tuple[bytes, dict[str, Any]]:
    response = server.client().get_object(Bucket=bucket_name, Key=key)
    return response["Body"].read(), response


async def stores(factory: StoreFactory, spec: TaskSpec) -> tuple[ObjectStore, ObjectStore]:
    return await factory.source(spec), await factory.destination(spec)


def copier(factory: StoreFactory) -> Copier:
    return Copier(CopyLimits.from_settings(factory.settings))


# -- factory -----------------------------------------------------------------------------------


async def test_factory_shares_one_store_per_endpoint_and_credentials(factory: StoreFactory) -> None:
    same = spec_for("a", "b", same_credentials=True)
    source, destination = await stores(factory, same)
    assert source is destination
    other = spec_for("a", "b", same_credentials=False)
    source2, destination2 = await stores(factory, other)
    assert source2 is source and destination2 is not source
    assert destination.capabilities.unsupported_key_chars == frozenset("\n")  # the '#moto' quirks


async def test_factory_refuses_an_unresolvable_side_as_a_final_failure(factory: StoreFactory) -> None:
    spec = spec_for("a", "b", same_credentials=True, src_cloud_type=CloudType.ALIYUN, src_region="nowhere-1")
    with pytest.raises(StoreError) as caught:
        await factory.source(spec)
    assert caught.value.code == "invalid_endpoint" and not caught.value.retryable
    verdict = RetryPolicy().decide(caught.value, 0)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "invalid_endpoint"


async def test_local_sides_use_one_file_system_store(tmp_path: Path) -> None:
    made = StoreFactory(Settings(data_dir=tmp_path, fs_roots=[tmp_path]))
    spec = make_spec(src_cloud_type=CloudType.LOCAL, dst_cloud_type=CloudType.LOCAL)
    assert await made.source(spec) is await made.destination(spec)
    await made.close()


# -- copies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("same_credentials", [False, True], ids=["streamed", "server-side"])
@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "multipart"])
async def test_copy_on_moto(moto_s3: S3Server, factory: StoreFactory, size: int, same_credentials: bool) -> None:
    src_bucket, dst_bucket = bucket(moto_s3), bucket(moto_s3)
    data = payload(size, seed=size)
    key = "dir/a b+c%.bin"
    moto_s3.client().put_object(Bucket=src_bucket, Key=key, Body=data, ContentType="application/x-test",
                                Metadata={"owner": "alice"})
    spec = spec_for(src_bucket, dst_bucket, same_credentials=same_credentials, enable_metadata_migration=True)
    source, destination = await stores(factory, spec)
    outcome = await copier(factory).copy(spec, key, source, destination,
                                          server_side=factory.server_side(spec))
    assert outcome.kind is OutcomeKind.SUCCESS and outcome.size == size
    expected = {(SMALL, False): "streamed", (LARGE, False): "streamed in 3 parts",
                (SMALL, True): "server-side copy", (LARGE, True): "server-side multipart copy"}
    assert outcome.message and expected[(size, same_credentials)] in outcome.message
    body, response = read(moto_s3, dst_bucket, key)
    assert body == data
    assert response["ContentType"] == "application/x-test"
    assert response["Metadata"]["owner"] == "alice"
    source_etag = moto_s3.client().head_object(Bucket=src_bucket, Key=key)["ETag"].strip('"')
    if (size, same_credentials) == (SMALL, True):
        # CopyObject keeping the source's metadata: the object is the source's, ETag and all.
        assert response["ETag"].strip('"') == source_etag
        assert SRC_ETAG_META not in response["Metadata"]
    else:
        assert response["Metadata"][SRC_ETAG_META] == source_etag
        assert response["Metadata"][SRC_MTIME_META].endswith("Z")
    assert moto_s3.client().list_multipart_uploads(Bucket=dst_bucket).get("Uploads", []) == []
    # A second copy finds nothing to do.
    again = await copier(factory).copy(spec, key, source, destination,
                                       server_side=factory.server_side(spec))
    assert (again.kind, again.reason) == (OutcomeKind.SKIP, "not_modified")


async def test_missing_source_on_moto_is_source_not_found(moto_s3: S3Server, factory: StoreFactory) -> None:
    spec = spec_for(bucket(moto_s3), bucket(moto_s3), same_credentials=False)
    source, destination = await stores(factory, spec)
    with pytest.raises(CopyError) as caught:
        await copier(factory).copy(spec, "absent", source, destination,
                                   server_side=factory.server_side(spec))
    assert caught.value.kind is ErrorKind.NOT_FOUND
    verdict = RetryPolicy().decide(caught.value, 0)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "source_not_found"


@pytest.mark.parametrize("same_credentials", [False, True], ids=["streamed", "server-side"])
async def test_awkward_keys_round_trip_byte_exact_with_metadata(
    moto_s3: S3Server, factory: StoreFactory, same_credentials: bool
) -> None:
    src_bucket, dst_bucket = bucket(moto_s3), bucket(moto_s3)
    spec = spec_for(src_bucket, dst_bucket, same_credentials=same_credentials, enable_metadata_migration=True)
    source, destination = await stores(factory, spec)
    keys = [key for _, key in holdable(destination.capabilities)]
    assert len(keys) > 30
    client = moto_s3.client()
    for index, key in enumerate(keys):
        client.put_object(Bucket=src_bucket, Key=key, Body=f"body {index}".encode(),
                          ContentType=f"text/x-{index}", Metadata={"index": str(index)})
    limit = asyncio.Semaphore(8)

    async def one(key: str) -> OutcomeKind:
        async with limit:
            return (await copier(factory).copy(spec, key, source, destination,
                                               server_side=factory.server_side(spec))).kind

    kinds = await asyncio.gather(*(one(key) for key in keys))
    assert set(kinds) == {OutcomeKind.SUCCESS}
    listed: list[str] = []
    token = None
    while True:
        page = await destination.list(dst_bucket, token=token)
        listed += [info.key for info in page.keys]
        token = page.next_token
        if token is None:
            break
    assert sorted(listed) == sorted(keys)  # nothing renamed, nothing extra
    for index, key in enumerate(keys):
        body, response = read(moto_s3, dst_bucket, key)
        assert body == f"body {index}".encode(), key
        assert response["ContentType"] == f"text/x-{index}"
        assert response["Metadata"]["index"] == str(index)


async def test_keys_moto_cannot_hold_are_refused_up_front(moto_s3: S3Server, factory: StoreFactory) -> None:
    spec = spec_for(bucket(moto_s3), bucket(moto_s3), same_credentials=False)
    source, destination = await stores(factory, spec)
    refusals = refused(destination.capabilities)
    assert refusals  # the corpus has keys moto cannot route (a newline)
    from tests.key_corpus import KEY_CORPUS

    for kid, key in KEY_CORPUS:
        if kid not in refusals:
            continue
        with pytest.raises(CopyError) as caught:
            await copier(factory).copy(spec, key, source, destination,
                                       server_side=factory.server_side(spec))
        verdict = RetryPolicy().decide(caught.value, 0)
        assert isinstance(verdict, Final) and verdict.outcome.reason == "unsupported_key", kid


# -- the engine end to end ---------------------------------------------------------------------


async def test_engine_copies_events_into_moto_and_writes_object_lists(moto_s3: S3Server, tmp_path: Path) -> None:
    settings = settings_for(moto_s3, tmp_path, workers=4, poll_interval_seconds=0.05,
                            object_list_interval_seconds=3600, retry_base_seconds=0.01, retry_max_seconds=0.05)
    services = await Services.open(settings)
    made = store_factory(settings)
    engine = build_engine(settings, services, made)
    try:
        src_bucket, dst_bucket = bucket(moto_s3), bucket(moto_s3)
        client = moto_s3.client()
        keys = [f"obj/{i}" for i in range(10)]
        for i, key in enumerate(keys):
            client.put_object(Bucket=src_bucket, Key=key, Body=payload(1000 + i, seed=i))
        fields = {
            "src_cloud_type": "S3", "src_region": "us-east-1", "src_bucket": src_bucket,
            "dst_cloud_type": "S3", "dst_region": "us-east-1", "dst_bucket": dst_bucket,
            "description": None, "enable_metadata_migration": False, "enable_restore": False,
            "enable_kms": False, "dst_storage_policy": None, "app_id": None, "source_cdn": None,
            "options": "{}", "consistency_check": "crc64",
            "object_overwrite_mode": "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE",
        }
        creds = {"src_ak": "a1", "src_sk": "s1", "dst_ak": "a2", "dst_sk": "s2"}
        task_id = await services.tasks.create("p", fields, creds)
        await services.ledger.accept(task_id, [*keys, "missing"])
        await engine.start()
        engine.notify()

        async def settled() -> bool:
            return await services.ledger.pending_occurrences(task_id) == 0

        await eventually(settled, 20, "the task to settle")
        totals = await services.ledger.totals(task_id)
        assert (totals["request"], totals["success"], totals["failure"]) == (11, 10, 1)
        for i, key in enumerate(keys):
            assert read(moto_s3, dst_bucket, key)[0] == payload(1000 + i, seed=i)
        await engine.stop(5)  # writes the object lists
        listed = client.list_objects_v2(Bucket=dst_bucket, Prefix=f"oms/sync_task/{task_id}/")
        names = sorted(item["Key"].split("/")[3] for item in listed.get("Contents", []))
        assert names == ["failed_object_lists", "success_object_lists"]
    finally:
        await engine.stop(1)
        await made.close()
        await services.close()
