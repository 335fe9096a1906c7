"""The copier on in-memory stores: overwrite modes, metadata, multipart, verification, cleanup."""

from __future__ import annotations

import asyncio
import time

import pytest

from omsync.domain.model import CloudType, ConsistencyCheck, OutcomeKind, OverwriteMode, StoragePolicy
from omsync.engine.copier import SRC_ETAG_META, SRC_MTIME_META, Copier, CopyLimits
from omsync.engine.retry import CopyError, Final, RetryPolicy, Side
from omsync.stores.base import ErrorKind, ObjectInfo, PutOptions, StoreError
from omsync.stores.crc64 import crc64ecma
from omsync.stores.memory import MemoryStore
from tests.engine.helpers import (
    KIB,
    SMALL_CAPS,
    SMALL_LIMITS,
    BitFlipStore,
    FailingMidStream,
    MeteredSource,
    NoCrcStore,
    RacedStore,
    TruncatingStore,
    make_spec,
    payload,
    set_mtime,
)

KEY = "dir/obj.bin"


def stores(src_cls: type[MemoryStore] = MemoryStore, dst_cls: type[MemoryStore] = MemoryStore
           ) -> tuple[MemoryStore, MemoryStore]:
    return src_cls(capabilities=SMALL_CAPS, buckets=["src"]), dst_cls(capabilities=SMALL_CAPS, buckets=["dst"])


async def put(store: MemoryStore, bucket: str, key: str, data: bytes, **options: object) -> ObjectInfo:
    return await store.put(bucket, key, data, PutOptions(**options))  # type: ignore[arg-type]


async def open_uploads(store: MemoryStore, bucket: str = "dst") -> list[tuple[str, str]]:
    return await store.list_multipart_uploads(bucket)


# -- the plain copy ----------------------------------------------------------------------------


async def test_absent_destination_is_copied_with_content_type_and_source_facts() -> None:
    src, dst = stores()
    info = await put(src, "src", KEY, b"hello", content_type="text/x-test", metadata={"owner": "alice"})
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.size == 5
    assert outcome.reason == "absent"
    assert dst.object_bytes("dst", KEY) == b"hello"
    copied = await dst.head("dst", KEY)
    assert copied.content_type == "text/x-test"
    assert copied.metadata[SRC_ETAG_META] == info.etag
    assert copied.metadata[SRC_MTIME_META] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(info.last_modified)))
    assert "owner" not in copied.metadata  # metadata migration is off
    assert src.count("get") == 1 and dst.count("put") == 1  # streamed between two stores


async def test_user_metadata_is_copied_only_when_migration_is_enabled() -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"x", metadata={"owner": "alice", "omsync-src-etag": "forged"})
    await Copier(SMALL_LIMITS).copy(make_spec(enable_metadata_migration=True), KEY, src, dst)
    copied = await dst.head("dst", KEY)
    assert copied.metadata["owner"] == "alice"
    # The source's own omsync-* entries never override the facts recorded by this copy.
    assert copied.metadata[SRC_ETAG_META] == (await src.head("src", KEY)).etag


async def test_zero_byte_object_is_copied() -> None:
    src, dst = stores()
    await put(src, "src", "empty", b"")
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), "empty", src, dst)
    assert outcome.kind is OutcomeKind.SUCCESS and outcome.size == 0
    assert dst.object_bytes("dst", "empty") == b""


async def test_same_bucket_of_the_same_store_is_not_copied_onto_itself() -> None:
    store = MemoryStore(buckets=["b"])
    await put(store, "b", KEY, b"x")
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(src_bucket="b", dst_bucket="b"), KEY, store, store,
                                              server_side=True)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SKIP, "same_object")
    assert store.count("put") == 1


# -- overwrite modes ---------------------------------------------------------------------------


async def test_no_overwrite_skips_an_existing_destination_and_copies_a_missing_one() -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"new data")
    await put(dst, "dst", KEY, b"old")
    spec = make_spec(overwrite_mode=OverwriteMode.NO_OVERWRITE)
    outcome = await Copier(SMALL_LIMITS).copy(spec, KEY, src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SKIP, "exists")
    assert dst.object_bytes("dst", KEY) == b"old"
    await put(src, "src", "other", b"fresh")
    outcome = await Copier(SMALL_LIMITS).copy(spec, "other", src, dst)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert dst.object_bytes("dst", "other") == b"fresh"


async def test_size_last_modified_skips_an_unchanged_object() -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"same")
    await put(dst, "dst", KEY, b"SAME")
    set_mtime(src, "src", KEY, 1_000_000)
    set_mtime(dst, "dst", KEY, 1_000_000.5)
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SKIP, "not_modified")
    assert dst.object_bytes("dst", KEY) == b"SAME"


async def test_size_last_modified_copies_a_newer_source() -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"same")
    await put(dst, "dst", KEY, b"SAME")
    set_mtime(dst, "dst", KEY, 1_000_000)
    set_mtime(src, "src", KEY, 1_000_002)
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SUCCESS, "source_newer")
    assert dst.object_bytes("dst", KEY) == b"same"


async def test_size_last_modified_copies_when_sizes_differ_even_if_destination_is_newer() -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"longer data")
    await put(dst, "dst", KEY, b"short")
    set_mtime(src, "src", KEY, 1_000_000)
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SUCCESS, "size_differs")
    assert dst.object_bytes("dst", KEY) == b"longer data"


async def test_crc64_mode_skips_equal_content_and_copies_different_content_of_equal_size() -> None:
    src, dst = stores()
    spec = make_spec(overwrite_mode=OverwriteMode.CRC64)
    await put(src, "src", "equal", b"abcd")
    await put(dst, "dst", "equal", b"abcd")
    set_mtime(src, "src", "equal", time.time() + 100)  # newer source: CRC decides, not time
    outcome = await Copier(SMALL_LIMITS).copy(spec, "equal", src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SKIP, "crc64_equal")
    await put(src, "src", "differs", b"abcd")
    await put(dst, "dst", "differs", b"abce")
    set_mtime(src, "src", "differs", 1_000_000)  # older source: still copied
    outcome = await Copier(SMALL_LIMITS).copy(spec, "differs", src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SUCCESS, "crc64_differs")
    assert dst.object_bytes("dst", "differs") == b"abcd"


async def test_crc64_mode_without_destination_crc_says_it_fell_back() -> None:
    src, dst = stores(dst_cls=NoCrcStore)
    spec = make_spec(overwrite_mode=OverwriteMode.CRC64)
    await put(src, "src", KEY, b"abcd")
    await put(dst, "dst", KEY, b"abce")
    set_mtime(src, "src", KEY, 1_000_000)
    outcome = await Copier(SMALL_LIMITS).copy(spec, KEY, src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SKIP, "not_modified")
    assert outcome.message and "CRC64 unknown on the destination" in outcome.message


async def test_full_overwrite_always_copies() -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"same")
    await put(dst, "dst", KEY, b"SAME")
    set_mtime(src, "src", KEY, 1_000_000)
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(overwrite_mode=OverwriteMode.FULL), KEY, src, dst)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.SUCCESS, "full_overwrite")
    assert dst.object_bytes("dst", KEY) == b"same"


# -- verification ------------------------------------------------------------------------------


async def test_crc64_check_compares_source_destination_and_transfer() -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"checked")
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(consistency_check=ConsistencyCheck.CRC64), KEY, src, dst)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.message and "verified by crc64" in outcome.message
    assert "source, destination, transfer" in outcome.message


async def test_crc64_check_without_destination_crc_reports_the_fallback() -> None:
    src, dst = stores(src_cls=NoCrcStore, dst_cls=NoCrcStore)
    await put(src, "src", KEY, b"checked")
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(consistency_check=ConsistencyCheck.CRC64), KEY, src, dst)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.message and "verified by size_last_modified" in outcome.message
    assert "only the transfer CRC64 is known" in outcome.message


async def test_server_side_copy_without_any_crc_is_reported_unverifiable_by_crc64() -> None:
    store = NoCrcStore(capabilities=SMALL_CAPS, buckets=["src", "dst"])
    await put(store, "src", KEY, b"server side")
    spec = make_spec(consistency_check=ConsistencyCheck.CRC64)
    outcome = await Copier(SMALL_LIMITS).copy(spec, KEY, store, store, server_side=True)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.message and "unverifiable by CRC64" in outcome.message
    assert "verified by size_last_modified" in outcome.message


async def test_truncated_copy_is_deleted_and_reported_as_retryable_corruption() -> None:
    src, dst = stores(dst_cls=TruncatingStore)
    await put(src, "src", KEY, b"0123456789")
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert caught.value.kind is ErrorKind.CORRUPT and caught.value.retryable
    assert caught.value.code == "verify_failed"
    assert "size_mismatch" in caught.value.message
    assert dst.keys("dst") == []


async def test_changed_bytes_of_equal_size_are_caught_by_crc64() -> None:
    src, dst = stores(dst_cls=BitFlipStore)
    await put(src, "src", KEY, b"0123456789")
    spec = make_spec(consistency_check=ConsistencyCheck.CRC64)
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(spec, KEY, src, dst)
    assert "crc64_mismatch" in caught.value.message
    assert dst.keys("dst") == []


async def test_failed_verification_leaves_another_writers_object_alone() -> None:
    src, dst = stores(dst_cls=RacedStore)
    await put(src, "src", KEY, b"0123456789")
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert caught.value.kind is ErrorKind.CORRUPT
    assert "left alone" in caught.value.message
    assert dst.object_bytes("dst", KEY) == b"another writer"


# -- multipart streaming -----------------------------------------------------------------------


async def test_large_object_is_streamed_in_parallel_parts_with_bounded_read_ahead() -> None:
    src = MeteredSource(capabilities=SMALL_CAPS, buckets=["src"])
    dst = MemoryStore(capabilities=SMALL_CAPS, buckets=["dst"])
    data = payload(100 * KIB + 123, seed=1)
    await put(src, "src", KEY, data)
    limits = SMALL_LIMITS
    in_flight = 0
    peak_in_flight = 0
    finished_bytes = 0
    peak_ahead = 0
    original = dst.upload_part

    async def upload_part(bucket: str, key: str, upload_id: str, number: int, part: bytes) -> str:
        nonlocal in_flight, peak_in_flight, finished_bytes, peak_ahead
        in_flight += 1
        peak_in_flight = max(peak_in_flight, in_flight)
        peak_ahead = max(peak_ahead, src.yielded - finished_bytes)
        await asyncio.sleep(0.005)  # slow uploads: the reader must wait, not run ahead
        try:
            return await original(bucket, key, upload_id, number, part)
        finally:
            in_flight -= 1
            finished_bytes += len(part)

    dst.upload_part = upload_part  # type: ignore[method-assign,assignment]
    outcome = await Copier(limits).copy(make_spec(consistency_check=ConsistencyCheck.CRC64), KEY, src, dst)
    assert outcome.kind is OutcomeKind.SUCCESS and outcome.size == len(data)
    assert dst.object_bytes("dst", KEY) == data
    assert (await dst.head("dst", KEY)).crc64ecma == crc64ecma(data)
    assert dst.count("create_multipart") == 1
    assert dst.count("complete_multipart") == 1
    assert dst.count("put") == 0
    assert peak_in_flight == limits.part_concurrency
    # Bytes read but not yet uploaded never exceed the parts allowed in memory (+ one read chunk).
    assert peak_ahead <= limits.part_size * limits.part_concurrency + limits.read_chunk
    assert await open_uploads(dst) == []


async def test_object_of_exactly_whole_parts_is_streamed() -> None:
    src, dst = stores()
    data = payload(SMALL_LIMITS.part_size * 5, seed=2)
    await put(src, "src", KEY, data)
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert dst.object_bytes("dst", KEY) == data
    assert dst.count("upload_part") == 5


async def test_failed_part_upload_aborts_the_upload_and_leaves_no_object() -> None:
    src, dst = stores()
    await put(src, "src", KEY, payload(64 * KIB, seed=3))
    dst.fail("upload_part", StoreError(ErrorKind.TRANSIENT, "connection reset", code="ConnectionError"))
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert caught.value.kind is ErrorKind.TRANSIENT and caught.value.side is Side.DESTINATION
    assert dst.count("abort_multipart") == 1
    assert await open_uploads(dst) == []
    assert dst.keys("dst") == []


async def test_failed_complete_aborts_the_upload() -> None:
    src, dst = stores()
    await put(src, "src", KEY, payload(64 * KIB, seed=3))
    dst.fail("complete_multipart", StoreError(ErrorKind.TRANSIENT, "timed out", code="Timeout"))
    with pytest.raises(CopyError):
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert await open_uploads(dst) == []
    assert dst.keys("dst") == []


async def test_source_breaking_mid_stream_aborts_the_upload() -> None:
    src = FailingMidStream(40 * KIB, capabilities=SMALL_CAPS, buckets=["src"])
    dst = MemoryStore(capabilities=SMALL_CAPS, buckets=["dst"])
    await put(src, "src", KEY, payload(64 * KIB, seed=4))
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert caught.value.side is Side.SOURCE and caught.value.kind is ErrorKind.TRANSIENT
    assert await open_uploads(dst) == []
    assert dst.keys("dst") == []


async def test_cancelled_multipart_copy_aborts_the_upload() -> None:
    src, dst = stores()
    await put(src, "src", KEY, payload(64 * KIB, seed=5))
    started = asyncio.Event()
    original = dst.upload_part

    async def slow_part(bucket: str, key: str, upload_id: str, number: int, part: bytes) -> str:
        started.set()
        await asyncio.sleep(30)
        return await original(bucket, key, upload_id, number, part)

    dst.upload_part = slow_part  # type: ignore[method-assign,assignment]
    copy = asyncio.create_task(Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst))
    await asyncio.wait_for(started.wait(), 5)
    assert len(await open_uploads(dst)) == 1
    copy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await copy
    assert await open_uploads(dst) == []
    assert dst.keys("dst") == []


async def test_source_shorter_than_its_head_is_reported_as_changed() -> None:
    src, dst = stores()
    await put(src, "src", KEY, payload(64 * KIB, seed=6))
    original_head = src.head

    async def stale_head(bucket: str, key: str) -> ObjectInfo:
        info = await original_head(bucket, key)
        return ObjectInfo(key=info.key, size=info.size + 10, last_modified=info.last_modified, etag=info.etag)

    src.head = stale_head  # type: ignore[method-assign]
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert caught.value.kind is ErrorKind.CORRUPT and caught.value.code == "source_changed"
    assert await open_uploads(dst) == []
    assert dst.keys("dst") == []


# -- server-side copies ------------------------------------------------------------------------


async def test_same_store_copies_server_side_without_reading_the_data() -> None:
    store = MemoryStore(capabilities=SMALL_CAPS, buckets=["src", "dst"])
    await put(store, "src", KEY, b"server side", content_type="text/plain")
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, store, store, server_side=True)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.message and "server-side copy" in outcome.message
    assert store.count("server_copy") == 1 and store.count("get") == 0
    copied = await store.head("dst", KEY)
    assert copied.content_type == "text/plain" and SRC_ETAG_META in copied.metadata


async def test_large_object_in_the_same_store_uses_part_copies() -> None:
    store = MemoryStore(capabilities=SMALL_CAPS, buckets=["src", "dst"])
    data = payload(50 * KIB, seed=7)
    await put(store, "src", KEY, data)
    outcome = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, store, store, server_side=True)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert store.count("upload_part_copy") == 7  # 50 KiB in 8 KiB parts
    assert store.count("get") == 0
    assert store.object_bytes("dst", KEY) == data


async def test_failed_part_copy_aborts_the_upload() -> None:
    store = MemoryStore(capabilities=SMALL_CAPS, buckets=["src", "dst"])
    await put(store, "src", KEY, payload(50 * KIB, seed=8))
    store.fail("upload_part_copy", StoreError(ErrorKind.THROTTLED, "SlowDown", code="SlowDown"))
    with pytest.raises(CopyError):
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, store, store, server_side=True)
    assert await open_uploads(store) == []
    assert store.keys("dst") == []


# -- refusals and classification -----------------------------------------------------------------


async def test_key_the_destination_cannot_hold_fails_as_unsupported_key() -> None:
    import dataclasses

    src = MemoryStore(buckets=["src"])
    dst = MemoryStore(buckets=["dst"], capabilities=dataclasses.replace(SMALL_CAPS, preserves_double_slash=False))
    await put(src, "src", "x//y", b"data")
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), "x//y", src, dst)
    verdict = RetryPolicy().decide(caught.value, 0)
    assert isinstance(verdict, Final)
    assert verdict.outcome.reason == "unsupported_key"
    assert dst.keys("dst") == []


async def test_missing_source_is_source_not_found_and_missing_destination_bucket_is_not() -> None:
    src = MemoryStore(buckets=["src"])
    dst = MemoryStore(buckets=[])
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    verdict = RetryPolicy().decide(caught.value, 0)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "source_not_found"
    await put(src, "src", KEY, b"x")
    with pytest.raises(CopyError) as caught:
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    verdict = RetryPolicy().decide(caught.value, 0)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "destination_bucket_not_found"


# -- storage classes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "source_class", "expected"),
    [
        (None, "GLACIER", None),
        (StoragePolicy.STANDARD, None, "STANDARD"),
        (StoragePolicy.IA, None, "STANDARD_IA"),
        (StoragePolicy.ARCHIVE, None, "GLACIER"),
        (StoragePolicy.SRC_STORAGE_MAPPING, "ONEZONE_IA", "STANDARD_IA"),
        (StoragePolicy.SRC_STORAGE_MAPPING, None, "STANDARD"),
    ],
)
async def test_destination_storage_class_follows_the_policy(
    policy: StoragePolicy | None, source_class: str | None, expected: str | None
) -> None:
    src, dst = stores()
    await put(src, "src", KEY, b"x", storage_class=source_class)
    spec = make_spec(dst_storage_policy=policy, src_cloud_type=CloudType.AWS, dst_cloud_type=CloudType.HUAWEI)
    await Copier(SMALL_LIMITS).copy(spec, KEY, src, dst)
    assert (await dst.head("dst", KEY)).storage_class == expected


async def test_copy_limits_follow_the_settings() -> None:
    from omsync.config import Settings

    limits = CopyLimits.from_settings(Settings(multipart_threshold_bytes=6 * 1024 * 1024,
                                               part_size_bytes=5 * 1024 * 1024, part_concurrency=3))
    assert (limits.multipart_threshold, limits.part_size, limits.part_concurrency) == (6 << 20, 5 << 20, 3)


# -- upload records ----------------------------------------------------------------------------


class Journal:
    """Records what the copier reports about its multipart uploads, with what the store had."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.events: list[tuple[str, str, int]] = []  # (event, upload id, parts stored by then)
        self.fail_open = False

    def _parts(self, upload_id: str) -> int:
        upload = self.store._uploads.get(upload_id)
        return len(upload.parts) if upload is not None else -1

    async def opened(self, bucket: str, upload_id: str) -> None:
        self.events.append(("opened", upload_id, self._parts(upload_id)))
        if self.fail_open:
            raise RuntimeError("the ledger is unreachable")

    async def closed(self, upload_id: str) -> None:
        self.events.append(("closed", upload_id, self._parts(upload_id)))


async def test_uploads_are_recorded_before_any_part_and_dropped_once_complete() -> None:
    src, dst = stores()
    await put(src, "src", KEY, payload(64 * KIB, seed=10))
    journal = Journal(dst)
    await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst, uploads=journal)
    [(opened, upload_id, parts_then), (closed, closed_id, after)] = journal.events
    assert (opened, parts_then) == ("opened", 0)  # recorded before the first part went out
    assert (closed, closed_id, after) == ("closed", upload_id, -1)  # dropped after completion


async def test_aborted_upload_is_dropped_but_one_that_cannot_be_aborted_is_kept() -> None:
    src, dst = stores()
    await put(src, "src", KEY, payload(64 * KIB, seed=11))
    journal = Journal(dst)
    dst.fail("upload_part", StoreError(ErrorKind.TRANSIENT, "reset"))
    with pytest.raises(CopyError):
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst, uploads=journal)
    assert [event for event, _, _ in journal.events] == ["opened", "closed"]
    assert await open_uploads(dst) == []

    journal = Journal(dst)
    dst.fail("upload_part", StoreError(ErrorKind.TRANSIENT, "reset"))
    dst.fail("abort_multipart", StoreError(ErrorKind.TRANSIENT, "reset"))
    with pytest.raises(CopyError):
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst, uploads=journal)
    assert [event for event, _, _ in journal.events] == ["opened"]  # kept for the next owner
    assert len(await open_uploads(dst)) == 1


async def test_upload_that_cannot_be_recorded_is_aborted_at_once() -> None:
    src, dst = stores()
    await put(src, "src", KEY, payload(64 * KIB, seed=12))
    journal = Journal(dst)
    journal.fail_open = True
    with pytest.raises(RuntimeError):
        await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst, uploads=journal)
    assert dst.count("upload_part") == 0
    assert await open_uploads(dst) == []


async def test_a_missing_source_bucket_is_told_from_a_missing_key() -> None:
    class BareNotFound(MemoryStore):
        """Answers HEAD like S3 does: a 404 without a body, whatever is missing."""

        async def head(self, bucket: str, key: str) -> ObjectInfo:
            try:
                return await super().head(bucket, key)
            except StoreError as exc:
                raise StoreError(ErrorKind.NOT_FOUND, "404", code="404") from exc

    src = BareNotFound(capabilities=SMALL_CAPS, buckets=["src"])
    dst = MemoryStore(capabilities=SMALL_CAPS, buckets=["dst"])
    policy = RetryPolicy()
    with pytest.raises(CopyError) as missing_key:
        await Copier(SMALL_LIMITS).copy(make_spec(), "no such key", src, dst)
    verdict = policy.decide(missing_key.value, 0)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "source_not_found"

    with pytest.raises(CopyError) as missing_bucket:
        await Copier(SMALL_LIMITS).copy(make_spec(src_bucket="gone"), KEY, src, dst)
    assert missing_bucket.value.side is Side.SOURCE and missing_bucket.value.code == "NoSuchBucket"
    verdict = policy.decide(missing_bucket.value, 0)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "source_bucket_not_found"


async def test_a_skip_reports_the_size_of_the_object_it_left_alone() -> None:
    src, dst = stores()
    data = payload(3 * KIB, seed=9)
    await put(src, "src", KEY, data)
    first = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert first.kind is OutcomeKind.SUCCESS
    again = await Copier(SMALL_LIMITS).copy(make_spec(), KEY, src, dst)
    assert (again.kind, again.reason, again.size) == (OutcomeKind.SKIP, "not_modified", len(data))
