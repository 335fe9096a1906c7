"""The migration lister on a real store implementation (the in-memory store): page by page,
resumed from any checkpoint it yielded, nothing lost and nothing twice; list files by byte
offset; the prefixed destination store maps keys both ways."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from omsync.engine.lister import Page, pages
from omsync.engine.prefixed import with_key_prefix
from omsync.stores.base import PutOptions, StoreError
from omsync.stores.memory import MemoryStore
from tests.key_corpus import KEY_CORPUS

KEYS = sorted({key for _, key in KEY_CORPUS} | {f"p/{i:04d}" for i in range(57)}, key=lambda k: k.encode())


async def collect(store: MemoryStore, **kwargs: object) -> list[Page]:
    return [page async for page in pages(source=store, bucket="src", page_size=10, **kwargs)]  # type: ignore[arg-type]


async def filled() -> MemoryStore:
    store = MemoryStore(buckets=["src", "lists", "dst"])
    for key in KEYS:
        await store.put("src", key, key.encode(), PutOptions())
    return store


async def test_prefix_listing_resumes_from_every_checkpoint() -> None:
    store = await filled()
    full = await collect(store, task_type="prefix", sources=["", "p/"])
    assert full[-1].done and not any(p.done for p in full[:-1])
    assert [e.key for p in full for e in p.entries][:len(KEYS)] == KEYS
    assert [e.key for p in full for e in p.entries][len(KEYS):] == [k for k in KEYS if k.startswith("p/")]
    assert sum(1 for p in full if p.after is not None) >= len(KEYS) // 10 - 1  # mid-source checkpoints
    for cut, page in enumerate(full[:-1]):
        resumed = await collect(store, task_type="prefix", sources=["", "p/"], index=page.index, after=page.after)
        before = [e.key for p in full[:cut + 1] for e in p.entries]
        after = [e.key for p in resumed for e in p.entries]
        assert before + after == [e.key for p in full for e in p.entries], cut


async def test_object_sources_and_migrate_since() -> None:
    store = await filled()
    found = await collect(store, task_type="object", sources=["p/", "plain/file.txt", "p/00", "no/such/key"],
                          migrate_since=2**40)
    entries = [e for p in found for e in p.entries]
    # "p/" is a folder; "p/00" (no trailing "/") is an object key, absent like "no/such/key".
    assert [e.key for e in entries] == [f"p/{i:04d}" for i in range(57)] + ["plain/file.txt", "p/00", "no/such/key"]
    assert all(e.skip for e in entries if e.size is not None)  # everything is older than 2**40 s
    assert [e.size for e in entries[-2:]] == [None, None]
    assert entries[-1].size is None and not entries[-1].skip


async def test_list_files_resume_by_byte_offset() -> None:
    store = await filled()
    lines = "\n".join(quote(k, safe="") for k in KEYS) + "\n"
    await store.put("lists", "jobs/a.txt", lines.encode(), PutOptions())
    await store.put("lists", "jobs/b.txt", b"p%2F0001\r\n\r\n", PutOptions())
    spec = {"list_file_key": "jobs/", "obs_bucket": "lists"}
    full = await collect(store, task_type="list", sources=[], list_file=spec, list_store=store)
    keys = [e.key for p in full for e in p.entries]
    assert keys == [*KEYS, "p/0001"] and full[-1].done
    for cut, page in enumerate(full[:-1]):
        resumed = await collect(store, task_type="list", sources=[], list_file=spec, list_store=store,
                                index=page.index, offset=page.offset)
        assert [e.key for p in full[:cut + 1] for e in p.entries] + [e.key for p in resumed for e in p.entries] == keys
    # A checkpoint at the very end of a file moves on to the next file.
    size = len(lines.encode())
    at_end = await collect(store, task_type="list", sources=[], list_file=spec, list_store=store, index=0, offset=size)
    assert [e.key for p in at_end for e in p.entries] == ["p/0001"]
    await store.put("lists", "bad.txt", b"ok\n%zz\n", PutOptions())
    with pytest.raises(StoreError) as caught:
        await collect(store, task_type="list", sources=[], list_file={"list_file_key": "bad.txt", "obs_bucket": "lists"},
                      list_store=store)
    assert caught.value.code == "invalid_list_file" and "byte 3" in caught.value.message


async def test_prefixed_store_maps_keys_both_ways() -> None:
    store = MemoryStore(buckets=["dst"])
    prefixed = with_key_prefix(store, "save/é/")
    assert with_key_prefix(store, "") is store
    info = await prefixed.put("dst", "a//b", b"x", PutOptions())
    assert info.key == "a//b"
    assert [i.key for i in (await store.list("dst")).keys] == ["save/é/a//b"]
    assert [i.key for i in (await prefixed.list("dst", "a")).keys] == ["a//b"]
    assert (await prefixed.head("dst", "a//b")).size == 1
    limit = store.capabilities.max_key_bytes - len("save/é/".encode())
    assert prefixed.capabilities.max_key_bytes == limit


def test_migrate_since_is_seconds_or_milliseconds() -> None:
    from omsync.engine.migration import since_seconds

    assert since_seconds(None) is None and since_seconds(0) is None
    assert since_seconds(1_700_000_000) == 1_700_000_000
    assert since_seconds(1_700_000_000_123) == 1_700_000_000
