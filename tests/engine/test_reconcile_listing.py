"""The sorted listings and the merge join of reconciliation against real S3 servers: moto lists
in key order (read page by page after a checkpoint), SeaweedFS does not (sorted externally, in
runs spilled to files and merged); both come out in UTF-8 byte order, byte-exact."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from omsync.config import Settings
from omsync.domain.model import CloudType, Credentials
from omsync.engine.factory import StoreFactory
from omsync.engine.reconcile import Entry, merge_join, sorted_listing
from omsync.stores.base import ObjectStore
from tests.key_corpus import holdable
from tests.servers import S3Server


async def collect(entries: AsyncIterator[Entry]) -> list[str]:
    return [entry.key async for entry in entries]


async def raw_order(store: ObjectStore, bucket: str) -> list[str]:
    keys: list[str] = []
    token: str | None = None
    while True:
        page = await store.list(bucket, "", token, 3)
        keys += [info.key for info in page.keys]
        token = page.next_token
        if token is None:
            return keys


def store_of(server: S3Server, quirks: str, tmp_path: Path) -> tuple[StoreFactory, ObjectStore]:
    factory = StoreFactory(Settings(data_dir=tmp_path, endpoints={"S3:*": f"{server.endpoint_url}#{quirks}"}))
    return factory, factory.store(CloudType.S3, "us-east-1", Credentials(server.access_key, server.secret_key))


def put(server: S3Server, bucket: str, keys: list[str]) -> None:
    client = server.client()
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode("utf-8", "surrogatepass")[:10])


async def test_seaweedfs_listing_is_sorted_externally_in_bounded_runs(seaweed_s3: S3Server, tmp_path: Path) -> None:
    factory, store = store_of(seaweed_s3, "seaweedfs", tmp_path)
    try:
        assert not store.capabilities.lists_in_key_order
        bucket = seaweed_s3.make_bucket(f"rl-{uuid.uuid4().hex[:10]}")
        corpus = [key for _, key in holdable(store.capabilities)]
        keys = sorted(set(corpus) | {"a/x", "a.txt", "a-b", "a/y/z", "a0", "b", "b/c", "b.d"})
        put(seaweed_s3, bucket, keys)
        listed = await raw_order(store, bucket)
        assert sorted(listed) == keys and listed != keys  # the server's own order is not key order
        spill = tmp_path / "runs"
        spill.mkdir()
        got = await collect(sorted_listing(store, bucket, "", None, spill, page_size=4, run_size=5))
        assert got == keys
        assert len(list(spill.iterdir())) == -(-len(keys) // 5)  # runs of 5 spilled to disk
        after = keys[len(keys) // 2]
        resumed_dir = tmp_path / "resumed"
        resumed_dir.mkdir()
        resumed = await collect(sorted_listing(store, bucket, "", after, resumed_dir, page_size=4, run_size=5))
        assert resumed == [key for key in keys if key > after]
    finally:
        await factory.close()


async def test_moto_listing_resumes_after_a_key_in_key_order(moto_s3: S3Server, tmp_path: Path) -> None:
    factory, store = store_of(moto_s3, "moto", tmp_path)
    try:
        assert store.capabilities.lists_in_key_order
        bucket = moto_s3.make_bucket(f"rl-{uuid.uuid4().hex[:10]}")
        keys = sorted(key for _, key in holdable(store.capabilities))
        put(moto_s3, bucket, keys)
        assert await collect(sorted_listing(store, bucket, "", None, tmp_path, page_size=3)) == keys
        after = keys[7]
        assert await collect(sorted_listing(store, bucket, "", after, tmp_path, page_size=3)) == keys[8:]
    finally:
        await factory.close()


async def test_merge_join_pairs_every_key_once() -> None:
    async def stream(keys: list[str]) -> AsyncIterator[Entry]:
        for key in keys:
            yield Entry(key, len(key), 0.0)

    source = ["a", "a/b", "b", "d", "\U0001f600"]
    destination = ["a", "c", "d", "e", "\uffff"]
    joined = [(key, src is not None, dst is not None)
              async for key, src, dst in merge_join(stream(source), stream(destination))]
    assert joined == [("a", True, True), ("a/b", True, False), ("b", True, False), ("c", False, True),
                      ("d", True, True), ("e", False, True), ("\uffff", False, True), ("\U0001f600", True, False)]
