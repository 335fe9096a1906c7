"""One contract every ObjectStore backend must pass: memory, fs, moto (S3Store), SeaweedFS (S3Store).

A test is skipped only when the backend *declares* (in its Capabilities) that it cannot do the
thing, and then the store must refuse with UNSUPPORTED instead of doing something else.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from omsync.domain.model import Credentials
from omsync.stores import (
    ErrorKind,
    FsStore,
    MemoryStore,
    ObjectStore,
    PutOptions,
    S3Store,
    StoreError,
    crc64ecma,
)
from omsync.stores.base import UNKNOWN_SIZE
from omsync.stores.profiles import get_profile
from tests.key_corpus import KEY_CORPUS
from tests.servers import S3Server

MiB = 1024 * 1024
BACKENDS = ("memory", "fs", "moto", "seaweedfs")
_names = itertools.count()


@dataclass
class Backend:
    name: str
    store: ObjectStore
    make_bucket: Callable[[], str]
    missing_bucket: str


def s3_store_for(server: S3Server, quirks: str) -> S3Store:
    """An S3Store for a test server, declaring that server's limits through its quirk set."""
    profile = get_profile("S3")
    return S3Store(
        server.endpoint_url,
        Credentials(server.access_key, server.secret_key),
        region=server.region,
        addressing_style="path",
        capabilities=profile.capabilities(quirks),
        dialect=profile.dialect(quirks),
        read_timeout=30,
    )


def _bucket_name() -> str:
    return f"c{next(_names)}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[Backend]:
    name = request.param
    if name == "memory":
        memory = MemoryStore()

        def make_memory() -> str:
            bucket = _bucket_name()
            memory.create_bucket(bucket)
            return bucket

        yield Backend(name, memory, make_memory, "no-such-bucket")
        return
    if name == "fs":
        root = tmp_path_factory.mktemp("fsroot")
        fs = FsStore([root])

        def make_dir() -> str:
            path = root / _bucket_name()
            path.mkdir()
            return str(path)

        yield Backend(name, fs, make_dir, str(root / "no-such-bucket"))
        return
    server: S3Server = request.getfixturevalue("moto_s3" if name == "moto" else "seaweed_s3")
    store = s3_store_for(server, "moto" if name == "moto" else "seaweedfs")

    def make_s3() -> str:
        return server.make_bucket(_bucket_name())

    try:
        yield Backend(name, store, make_s3, "no-such-bucket-" + uuid.uuid4().hex[:8])
    finally:
        await store.close()


@pytest.fixture
def bucket(backend: Backend) -> str:
    return backend.make_bucket()


@pytest.fixture(scope="module")
def corpus_buckets(backend: Backend) -> tuple[str, str]:
    return backend.make_bucket(), backend.make_bucket()


async def read_all(store: ObjectStore, bucket: str, key: str, **kwargs: int) -> bytes:
    return b"".join([chunk async for chunk in store.get(bucket, key, **kwargs)])


async def list_all(store: ObjectStore, bucket: str, prefix: str = "", limit: int = 1000) -> list[str]:
    keys: list[str] = []
    token: str | None = None
    while True:
        page = await store.list(bucket, prefix, token, limit)
        assert len(page.keys) <= limit
        keys.extend(info.key for info in page.keys)
        token = page.next_token
        if token is None:
            return keys


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# -- single objects ------------------------------------------------------------------------------


async def test_put_then_head_and_get_return_the_same_object(backend: Backend, bucket: str) -> None:
    store = backend.store
    data = os.urandom(10_000)
    options = PutOptions(content_type="application/x-omsync", metadata={"Origin": "src-a", "n": "1"})
    before = time.time()
    written = await store.put(bucket, "dir/obj.bin", data, options)
    info = await store.head(bucket, "dir/obj.bin")

    assert info.key == "dir/obj.bin"
    assert info.size == written.size == len(data)
    assert info.content_type == "application/x-omsync"
    assert dict(info.metadata) == {"origin": "src-a", "n": "1"}
    assert abs(info.last_modified - before) < 120
    assert info.etag == written.etag
    if store.capabilities.md5_etag:
        assert info.etag == md5_hex(data)
    if store.capabilities.crc64ecma:
        assert info.crc64ecma == written.crc64ecma == crc64ecma(data)
    assert await read_all(store, bucket, "dir/obj.bin") == data


async def test_overwrite_replaces_data_and_metadata(backend: Backend, bucket: str) -> None:
    store = backend.store
    await store.put(bucket, "k", b"first version", PutOptions(metadata={"v": "1"}))
    await store.put(bucket, "k", b"second", PutOptions(content_type="text/plain", metadata={"w": "2"}))
    info = await store.head(bucket, "k")
    assert info.size == len(b"second")
    assert dict(info.metadata) == {"w": "2"}
    assert info.content_type == "text/plain"
    assert await read_all(store, bucket, "k") == b"second"
    assert await list_all(store, bucket) == ["k"]


async def test_missing_key_is_not_found_and_not_retryable(backend: Backend, bucket: str) -> None:
    store = backend.store
    with pytest.raises(StoreError) as head_error:
        await store.head(bucket, "nope")
    with pytest.raises(StoreError) as get_error:
        await read_all(store, bucket, "nope")
    for error in (head_error.value, get_error.value):
        assert error.kind is ErrorKind.NOT_FOUND
        assert error.retryable is False


async def test_missing_bucket_is_not_found(backend: Backend) -> None:
    store = backend.store
    for call in (
        lambda: store.head(backend.missing_bucket, "k"),
        lambda: store.put(backend.missing_bucket, "k", b"x", PutOptions()),
        lambda: store.list(backend.missing_bucket),
    ):
        with pytest.raises(StoreError) as error:
            await call()
        assert error.value.kind is ErrorKind.NOT_FOUND, error.value


async def test_zero_byte_object(backend: Backend, bucket: str) -> None:
    store = backend.store
    await store.put(bucket, "empty", b"", PutOptions())
    info = await store.head(bucket, "empty")
    assert info.size == 0
    assert await read_all(store, bucket, "empty") == b""
    if store.capabilities.md5_etag:
        assert info.etag == md5_hex(b"")
    if store.capabilities.crc64ecma:
        assert info.crc64ecma == 0


async def test_ranged_get(backend: Backend, bucket: str) -> None:
    store = backend.store
    data = bytes(range(256)) * 40
    await store.put(bucket, "r", data, PutOptions())
    assert await read_all(store, bucket, "r", start=0, end=10) == data[:10]
    assert await read_all(store, bucket, "r", start=100, end=2000) == data[100:2000]
    assert await read_all(store, bucket, "r", start=len(data) - 5) == data[-5:]
    assert await read_all(store, bucket, "r", start=len(data) - 5, end=len(data) + 100) == data[-5:]
    assert await read_all(store, bucket, "r", start=len(data)) == b""
    assert await read_all(store, bucket, "r", start=7, end=7) == b""
    with pytest.raises(StoreError) as error:
        await read_all(store, bucket, "r", start=len(data) + 1)
    assert error.value.kind is ErrorKind.INVALID


async def test_storage_class_is_kept(backend: Backend, bucket: str) -> None:
    store = backend.store
    await store.put(bucket, "cold", b"x", PutOptions(storage_class="STANDARD_IA"))
    assert (await store.head(bucket, "cold")).storage_class == "STANDARD_IA"


async def test_delete_removes_and_is_idempotent(backend: Backend, bucket: str) -> None:
    store = backend.store
    await store.put(bucket, "a/b/c", b"x", PutOptions())
    await store.put(bucket, "a/keep", b"y", PutOptions())
    await store.delete(bucket, "a/b/c")
    with pytest.raises(StoreError) as error:
        await store.head(bucket, "a/b/c")
    assert error.value.kind is ErrorKind.NOT_FOUND
    await store.delete(bucket, "a/b/c")  # a missing object is not an error
    assert await list_all(store, bucket) == ["a/keep"]


async def test_abandoned_stream_releases_the_object(backend: Backend, bucket: str) -> None:
    store = backend.store
    data = os.urandom(3 * MiB)
    await store.put(bucket, "big", data, PutOptions())
    for _ in range(3):
        stream = store.get(bucket, "big", chunk_size=64 * 1024)
        first = await stream.__anext__()
        assert first == data[: len(first)]
        await stream.aclose()  # type: ignore[attr-defined]
    assert await read_all(store, bucket, "big") == data


# -- listing ---------------------------------------------------------------------------------------


async def test_listing_is_in_key_order_with_prefix_and_pages(backend: Backend, bucket: str) -> None:
    store = backend.store
    keys = ["p/a", "p/b", "p/c/d", "p/c/e", "p-x", "p0", "q", "p/c-z"]
    for key in keys:
        await store.put(bucket, key, key.encode(), PutOptions())

    ordered = store.capabilities.lists_in_key_order

    def arranged(found: list[str]) -> list[str]:
        assert len(found) == len(set(found)), f"duplicates across pages: {found}"
        return found if ordered else sorted(found)

    # code-point order == UTF-8 byte order, so sorted() is S3's order
    assert arranged(await list_all(store, bucket, limit=3)) == sorted(keys)
    assert arranged(await list_all(store, bucket, "p/", limit=2)) == ["p/a", "p/b", "p/c-z", "p/c/d", "p/c/e"]
    assert arranged(await list_all(store, bucket, "p/c/", limit=1)) == ["p/c/d", "p/c/e"]
    assert await list_all(store, bucket, "zzz") == []

    page = await store.list(bucket, "", None, 1000)
    assert page.next_token is None
    sizes = {info.key: info.size for info in page.keys}
    assert sizes == {key: len(key) for key in keys}


async def test_directory_entries_come_in_name_order_where_declared(backend: Backend, bucket: str) -> None:
    """``lists_directories_in_name_order``: the keys directly inside one directory come in key
    order, whatever the listing puts between them (subdirectories walked depth-first)."""
    store = backend.store
    if store.capabilities.lists_in_key_order or not store.capabilities.lists_directories_in_name_order:
        pytest.skip("lists in key order, or declares nothing about directories")
    keys = ["d/a", "d/a-b", "d/a/x", "d/a/y/z", "d/b", "d/b.c", "d/c/deep/y", "d/d", "d-e", "d/中"]
    for key in keys:
        await store.put(bucket, key, b"x", PutOptions())
    for limit in (1000, 3):
        listed = await list_all(store, bucket, "d/", limit=limit)
        direct = [key for key in listed if "/" not in key[len("d/"):]]
        assert direct == sorted(direct) == sorted(k for k in keys if k.startswith("d/") and "/" not in k[2:])


async def test_listing_facts_are_true(backend: Backend, bucket: str) -> None:
    """What one dense listing settles for a batch of keys (engine.prefetch) matches the bucket:
    a listed key exists with its size, an absent one does not exist; on a store whose listing
    proves absence past a key, the batch is settled by one listing."""
    from omsync.engine.prefetch import ABSENT, list_facts

    store = backend.store
    present = [f"f/{i:03d}" for i in range(0, 120, 2)] + ["f/013/sub", "f/011-x", "f/011/deep/z", "f-other"]
    for key in present:
        await store.put(bucket, key, key.encode(), PutOptions())
    wanted = [f"f/{i:03d}" for i in range(10, 30)] + ["f/011-x"]
    facts = await list_facts(store, bucket, wanted)
    for key, fact in facts.known.items():
        if fact is ABSENT:
            assert key not in present, key
        else:
            assert key in present and fact.size == len(key.encode()), key
    caps = store.capabilities
    if caps.lists_in_key_order or caps.lists_directories_in_name_order:
        assert set(facts.known) == set(wanted), sorted(set(wanted) - set(facts.known))


async def test_listing_starts_after_a_key(backend: Backend, bucket: str) -> None:
    store = backend.store
    keys = ["s/a", "s/b", "s/b0", "s/c d", "s/c+d", "s/中", "t"]
    for key in keys:
        await store.put(bucket, key, b"x", PutOptions())
    ordered = store.capabilities.lists_in_key_order

    async def after(start_after: str | None, prefix: str = "s/", limit: int = 1000) -> list[str]:
        page = await store.list(bucket, prefix, None, limit, start_after=start_after)
        found = [info.key for info in page.keys]
        return found if ordered else sorted(found)

    assert await after(None) == sorted(k for k in keys if k.startswith("s/"))
    assert await after("s/b") == ["s/b0", "s/c d", "s/c+d", "s/中"]
    assert await after("s/bz") == ["s/c d", "s/c+d", "s/中"]    # need not be a stored key
    assert await after("s/c d") == ["s/c+d", "s/中"]           # characters that need encoding
    assert await after("s/c+d") == ["s/中"]
    assert await after("s/中") == []
    assert await after("a", prefix="") == sorted(keys)
    limited = await after("s/a", prefix="", limit=2)
    if ordered:
        assert limited == ["s/b", "s/b0"]
    else:
        assert len(limited) == 2 and all(key.encode() > b"s/a" for key in limited)
    # page on from there: the token takes over and start_after is ignored
    first = await store.list(bucket, "s/", None, 2, start_after="s/a")
    if ordered:
        assert [info.key for info in first.keys] == ["s/b", "s/b0"]
    assert first.next_token is not None
    rest = await store.list(bucket, "s/", first.next_token, 1000, start_after="s/a")
    assert sorted([info.key for info in first.keys + rest.keys]) == ["s/b", "s/b0", "s/c d", "s/c+d", "s/中"]


# -- multipart -------------------------------------------------------------------------------------


async def test_multipart_upload_of_a_large_object_streams_back_in_bounded_chunks(
    backend: Backend, bucket: str
) -> None:
    store = backend.store
    part = max(5 * MiB, store.capabilities.min_part_size)
    data = os.urandom(2 * part + 2 * MiB)  # 12 MiB: two full parts and a short last one
    options = PutOptions(content_type="video/x-big", metadata={"part": "yes"})
    upload_id = await store.create_multipart(bucket, "large/object", options)
    etags = []
    for number, offset in enumerate(range(0, len(data), part), start=1):
        etags.append((number, await store.upload_part(bucket, "large/object", upload_id, number,
                                                       data[offset:offset + part])))
    info = await store.complete_multipart(bucket, "large/object", upload_id, etags)

    assert info.size == len(data)
    assert info.etag is not None and info.etag.endswith("-3")
    assert info.content_type == "video/x-big"
    assert dict(info.metadata) == {"part": "yes"}
    if store.capabilities.crc64ecma:
        assert info.crc64ecma == crc64ecma(data)
    assert await store.list_multipart_uploads(bucket) == []

    digest = hashlib.md5(usedforsecurity=False)
    largest = 0
    total = 0
    async for chunk in store.get(bucket, "large/object", chunk_size=MiB):
        assert chunk
        largest = max(largest, len(chunk))
        total += len(chunk)
        digest.update(chunk)
    assert largest <= MiB
    assert total == len(data)
    assert digest.hexdigest() == md5_hex(data)


async def test_aborted_upload_leaves_nothing(backend: Backend, bucket: str) -> None:
    store = backend.store
    upload_id = await store.create_multipart(bucket, "aborted", PutOptions())
    await store.upload_part(bucket, "aborted", upload_id, 1, b"x" * 1000)
    assert await store.list_multipart_uploads(bucket) == [("aborted", upload_id)]
    assert await store.list_multipart_uploads(bucket, "other") == []

    await store.abort_multipart(bucket, "aborted", upload_id)
    await store.abort_multipart(bucket, "aborted", upload_id)  # unknown upload: not an error
    assert await store.list_multipart_uploads(bucket) == []
    assert await list_all(store, bucket) == []
    with pytest.raises(StoreError) as error:
        await store.head(bucket, "aborted")
    assert error.value.kind is ErrorKind.NOT_FOUND


async def test_complete_with_a_wrong_part_etag_is_refused(backend: Backend, bucket: str) -> None:
    store = backend.store
    upload_id = await store.create_multipart(bucket, "bad", PutOptions())
    await store.upload_part(bucket, "bad", upload_id, 1, b"y" * 100)
    with pytest.raises(StoreError) as error:
        await store.complete_multipart(bucket, "bad", upload_id, [(1, "0" * 32)])
    assert error.value.kind is ErrorKind.INVALID
    assert await list_all(store, bucket) == []  # nothing half-assembled is visible
    await store.abort_multipart(bucket, "bad", upload_id)


# -- server-side copies ----------------------------------------------------------------------------


async def test_server_copy_across_buckets_replaces_metadata(backend: Backend, bucket: str) -> None:
    store = backend.store
    other = backend.make_bucket()
    data = os.urandom(4096)
    await store.put(bucket, "src key", data, PutOptions(content_type="a/b", metadata={"old": "1"}))
    if not store.capabilities.server_side_copy:
        with pytest.raises(StoreError) as error:
            await store.server_copy(bucket, "src key", other, "dst key", PutOptions())
        assert error.value.kind is ErrorKind.UNSUPPORTED
        pytest.skip(f"{backend.name} declares no server-side copy")
    info = await store.server_copy(bucket, "src key", other, "dst key",
                                   PutOptions(content_type="c/d", metadata={"new": "2"}))
    assert info.size in (len(data), UNKNOWN_SIZE)  # the copy's own answer may not tell the size
    if store.capabilities.md5_etag:
        assert info.etag == md5_hex(data)
    head = await store.head(other, "dst key")
    assert head.content_type == "c/d"
    assert dict(head.metadata) == {"new": "2"}
    assert await read_all(store, other, "dst key") == data
    assert (await store.head(bucket, "src key")).metadata == {"old": "1"}


async def test_server_copy_with_copy_metadata_keeps_the_source_metadata(backend: Backend, bucket: str) -> None:
    store = backend.store
    if not store.capabilities.server_side_copy:
        pytest.skip(f"{backend.name} declares no server-side copy")
    other = backend.make_bucket()
    data = os.urandom(3000)
    written = await store.put(bucket, "kept", data, PutOptions(content_type="image/x-kept",
                                                               metadata={"Origin": "cam-1", "n": "7"}))
    info = await store.server_copy(bucket, "kept", other, "kept copy",
                                   PutOptions(content_type="ignored/type", metadata={"ignored": "1"},
                                              copy_metadata=True))
    assert info.key == "kept copy"
    assert info.size in (len(data), UNKNOWN_SIZE)
    assert info.etag == written.etag
    head = await store.head(other, "kept copy")
    assert head.content_type == "image/x-kept"
    assert dict(head.metadata) == {"origin": "cam-1", "n": "7"}
    assert head.size == len(data)
    assert await read_all(store, other, "kept copy") == data


async def test_part_copy_assembles_ranges_of_a_source(backend: Backend, bucket: str) -> None:
    store = backend.store
    part = max(5 * MiB, store.capabilities.min_part_size)
    data = os.urandom(part + 12345)
    await store.put(bucket, "source", data, PutOptions())
    upload_id = await store.create_multipart(bucket, "assembled", PutOptions())
    if not store.capabilities.part_copy:
        with pytest.raises(StoreError) as error:
            await store.upload_part_copy(bucket, "assembled", upload_id, 1, bucket, "source", 0, part)
        assert error.value.kind is ErrorKind.UNSUPPORTED
        await store.abort_multipart(bucket, "assembled", upload_id)
        pytest.skip(f"{backend.name} declares no part copy")
    first = await store.upload_part_copy(bucket, "assembled", upload_id, 1, bucket, "source", 0, part)
    second = await store.upload_part_copy(bucket, "assembled", upload_id, 2, bucket, "source",
                                          part, len(data))
    info = await store.complete_multipart(bucket, "assembled", upload_id, [(1, first), (2, second)])
    assert info.size == len(data)
    assert await read_all(store, bucket, "assembled") == data


# -- awkward keys ----------------------------------------------------------------------------------

CORPUS_IDS = [kid for kid, _ in KEY_CORPUS]


async def _refuse_or_skip(store: ObjectStore, bucket: str, key: str, *, multipart: bool) -> None:
    """If the store declares it cannot hold ``key``, check it refuses (UNSUPPORTED) and skip."""
    problem = store.capabilities.key_problem(key, multipart=multipart)
    if problem is None:
        return
    with pytest.raises(StoreError) as error:
        if multipart:
            await store.create_multipart(bucket, key, PutOptions())
        else:
            await store.put(bucket, key, b"x", PutOptions())
    assert error.value.kind is ErrorKind.UNSUPPORTED
    assert error.value.retryable is False
    pytest.skip(error.value.message)


@pytest.mark.parametrize("key", [key for _, key in KEY_CORPUS], ids=CORPUS_IDS)
async def test_awkward_key_round_trips_byte_exact(
    backend: Backend, corpus_buckets: tuple[str, str], key: str
) -> None:
    store = backend.store
    bucket, other = corpus_buckets
    await _refuse_or_skip(store, bucket, key, multipart=False)
    data = key.encode("utf-8") + b"\x00payload"

    await store.put(bucket, key, data, PutOptions(content_type="application/x-key", metadata={"k": "v"}))
    info = await store.head(bucket, key)
    assert (info.key, info.size, dict(info.metadata)) == (key, len(data), {"k": "v"})
    assert await read_all(store, bucket, key) == data

    listed = await list_all(store, bucket, prefix=key)
    assert key in listed
    assert all(found.startswith(key) for found in listed)

    if store.capabilities.server_side_copy:
        await store.server_copy(bucket, key, other, key, PutOptions(metadata={"copied": "1"}))
        assert await read_all(store, other, key) == data
        await store.delete(other, key)

    await store.delete(bucket, key)
    with pytest.raises(StoreError) as error:
        await store.head(bucket, key)
    assert error.value.kind is ErrorKind.NOT_FOUND


@pytest.mark.parametrize("key", [key for _, key in KEY_CORPUS], ids=CORPUS_IDS)
async def test_awkward_key_multipart_and_part_copy(
    backend: Backend, corpus_buckets: tuple[str, str], key: str
) -> None:
    store = backend.store
    bucket, other = corpus_buckets
    await _refuse_or_skip(store, bucket, key, multipart=True)
    data = b"multipart:" + key.encode("utf-8")

    upload_id = await store.create_multipart(bucket, key, PutOptions())
    assert (key, upload_id) in await store.list_multipart_uploads(bucket, prefix=key)
    etag = await store.upload_part(bucket, key, upload_id, 1, data)
    await store.complete_multipart(bucket, key, upload_id, [(1, etag)])
    assert await read_all(store, bucket, key) == data

    if store.capabilities.part_copy:
        copy_id = await store.create_multipart(other, key, PutOptions())
        part = await store.upload_part_copy(other, key, copy_id, 1, bucket, key, 0, len(data))
        await store.complete_multipart(other, key, copy_id, [(1, part)])
        assert await read_all(store, other, key) == data
        await store.delete(other, key)
    await store.delete(bucket, key)


async def test_unicode_normal_forms_are_distinct_keys(backend: Backend, bucket: str) -> None:
    store = backend.store
    nfd, nfc = "cafe\u0301", "caf\u00e9"
    await store.put(bucket, nfd, b"decomposed", PutOptions())
    await store.put(bucket, nfc, b"precomposed", PutOptions())
    assert await read_all(store, bucket, nfd) == b"decomposed"
    assert await read_all(store, bucket, nfc) == b"precomposed"
    assert sorted(await list_all(store, bucket)) == sorted([nfd, nfc])


# -- credentials -----------------------------------------------------------------------------------


async def test_seaweedfs_refuses_a_wrong_secret_key_as_permission(seaweed_s3: S3Server) -> None:
    bucket = seaweed_s3.make_bucket(_bucket_name())
    store = S3Store(seaweed_s3.endpoint_url, Credentials(seaweed_s3.access_key, "wrong-secret"),
                    read_timeout=10)
    try:
        for call in (lambda: store.head(bucket, "k"), lambda: store.put(bucket, "k", b"x", PutOptions())):
            with pytest.raises(StoreError) as error:
                await call()
            assert error.value.kind is ErrorKind.PERMISSION, error.value
            assert error.value.retryable is False
            assert "wrong-secret" not in str(error.value)
    finally:
        await store.close()

