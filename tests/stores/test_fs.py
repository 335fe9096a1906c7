"""FsStore specifics beyond the contract: roots, atomic writes, sidecars, path conflicts."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from omsync.stores import ErrorKind, FsStore, PutOptions, StoreError
from omsync.stores.fs import HIDDEN_DIR


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def bucket(root: Path) -> str:
    path = root / "bucket"
    path.mkdir()
    return str(path)


async def read_all(store: FsStore, bucket: str, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(bucket, key)])


def visible_files(bucket: str) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(bucket):
        if directory == bucket and HIDDEN_DIR in dirs:
            dirs.remove(HIDDEN_DIR)
        found.extend(os.path.relpath(os.path.join(directory, name), bucket) for name in files)
    return sorted(found)


async def test_key_maps_to_a_file_under_the_bucket(root: Path, bucket: str) -> None:
    store = FsStore([root])
    await store.put(bucket, "a/b.txt", b"hello", PutOptions())
    assert (Path(bucket) / "a" / "b.txt").read_bytes() == b"hello"
    assert visible_files(bucket) == ["a/b.txt"]


@pytest.mark.parametrize("where", ["outside", "relative", "parent-escape"])
async def test_bucket_outside_the_roots_is_permission(tmp_path: Path, root: Path, where: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bucket = {
        "outside": str(outside),
        "relative": "root/bucket",
        "parent-escape": str(root / ".." / "outside"),
    }[where]
    store = FsStore([root])
    with pytest.raises(StoreError) as error:
        await store.put(bucket, "k", b"x", PutOptions())
    assert error.value.kind is ErrorKind.PERMISSION
    assert list(outside.iterdir()) == []


async def test_symlink_escaping_the_roots_is_not_readable(tmp_path: Path, root: Path, bucket: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private")
    os.symlink(secret, Path(bucket) / "link")
    store = FsStore([root])
    with pytest.raises(StoreError) as error:
        await store.head(bucket, "link")
    assert error.value.kind is ErrorKind.PERMISSION
    with pytest.raises(StoreError):
        await read_all(store, bucket, "link")
    assert [info.key for info in (await store.list(bucket)).keys] == []


async def test_files_written_by_others_are_listed_without_metadata(root: Path, bucket: str) -> None:
    (Path(bucket) / "d").mkdir()
    (Path(bucket) / "d" / "external.bin").write_bytes(b"abc")
    store = FsStore([root])
    info = await store.head(bucket, "d/external.bin")
    assert (info.size, info.etag, info.crc64ecma, dict(info.metadata)) == (3, None, None, {})
    assert [i.key for i in (await store.list(bucket)).keys] == ["d/external.bin"]
    assert await read_all(store, bucket, "d/external.bin") == b"abc"


async def test_sidecar_is_ignored_once_the_file_changes_behind_our_back(root: Path, bucket: str) -> None:
    store = FsStore([root])
    await store.put(bucket, "k", b"original", PutOptions(content_type="a/b", metadata={"m": "1"}))
    assert (await store.head(bucket, "k")).metadata == {"m": "1"}
    (Path(bucket) / "k").write_bytes(b"rewritten by someone else")
    info = await store.head(bucket, "k")
    assert info.size == len(b"rewritten by someone else")
    assert (info.etag, info.content_type, dict(info.metadata)) == (None, None, {})


async def test_failed_assembly_leaves_no_visible_file(root: Path, bucket: str) -> None:
    store = FsStore([root])
    upload = await store.create_multipart(bucket, "big", PutOptions())
    await store.upload_part(bucket, "big", upload, 1, b"a" * 1000)
    with pytest.raises(StoreError):
        await store.complete_multipart(bucket, "big", upload, [(1, "f" * 32)])
    assert visible_files(bucket) == []
    assert os.listdir(Path(bucket) / HIDDEN_DIR / "tmp") == []
    await store.abort_multipart(bucket, "big", upload)
    assert os.listdir(Path(bucket) / HIDDEN_DIR / "uploads") == []


async def test_an_object_and_a_directory_of_the_same_name_conflict(root: Path, bucket: str) -> None:
    store = FsStore([root])
    await store.put(bucket, "a", b"file", PutOptions())
    with pytest.raises(StoreError) as nested:
        await store.put(bucket, "a/b", b"x", PutOptions())
    await store.put(bucket, "d/e", b"x", PutOptions())
    with pytest.raises(StoreError) as over_dir:
        await store.put(bucket, "d", b"x", PutOptions())
    for error in (nested.value, over_dir.value):
        assert error.kind is ErrorKind.UNSUPPORTED
    assert store.capabilities.keys_are_paths
    assert visible_files(bucket) == ["a", "d/e"]


async def test_delete_prunes_emptied_directories_only(root: Path, bucket: str) -> None:
    store = FsStore([root])
    await store.put(bucket, "x/y/z", b"1", PutOptions())
    await store.put(bucket, "x/keep", b"2", PutOptions())
    await store.delete(bucket, "x/y/z")
    assert not (Path(bucket) / "x" / "y").exists()
    assert (Path(bucket) / "x" / "keep").exists()
    assert Path(bucket).is_dir()


async def test_concurrent_overwrites_keep_data_and_metadata_together(root: Path, bucket: str) -> None:
    store = FsStore([root])
    payloads = [f"version {n}".encode() * (n + 1) for n in range(16)]
    await asyncio.gather(*(
        store.put(bucket, "hot", data, PutOptions(metadata={"md5": hashlib.md5(data).hexdigest()}))
        for data in payloads
    ))
    data = await read_all(store, bucket, "hot")
    info = await store.head(bucket, "hot")
    assert data in payloads
    assert info.etag == info.metadata["md5"] == hashlib.md5(data).hexdigest()
    meta_dirs = list((Path(bucket) / HIDDEN_DIR / "meta").rglob("*.json"))
    assert len(meta_dirs) == 1  # stale sidecars were removed


async def test_listing_skips_the_hidden_directory(root: Path, bucket: str) -> None:
    store = FsStore([root])
    await store.put(bucket, "visible", b"x", PutOptions(metadata={"a": "b"}))
    upload = await store.create_multipart(bucket, "pending", PutOptions())
    await store.upload_part(bucket, "pending", upload, 1, b"y")
    assert [i.key for i in (await store.list(bucket)).keys] == ["visible"]
    assert await store.list_multipart_uploads(bucket) == [("pending", upload)]


async def test_bucket_may_be_a_root_itself(root: Path) -> None:
    store = FsStore([root])
    await store.put(str(root), "top", b"x", PutOptions())
    assert (root / "top").read_bytes() == b"x"


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("key", ["link/escaped.txt", "link/deeper/escaped.txt"])
async def test_writes_never_follow_a_symlinked_directory_out_of_the_roots(tmp_path: Path, root: Path, bucket: str,
                                                                         key: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, Path(bucket) / "link")
    store = FsStore([root])
    with pytest.raises(StoreError) as error:
        await store.put(bucket, key, b"x", PutOptions())
    assert error.value.kind is ErrorKind.PERMISSION
    upload = await store.create_multipart(bucket, key, PutOptions())
    etag = await store.upload_part(bucket, key, upload, 1, b"part")
    with pytest.raises(StoreError) as error:
        await store.complete_multipart(bucket, key, upload, [(1, etag)])
    assert error.value.kind is ErrorKind.PERMISSION
    await store.put(bucket, "src.txt", b"source", PutOptions())
    with pytest.raises(StoreError) as error:
        await store.server_copy(bucket, "src.txt", bucket, key, PutOptions())
    assert error.value.kind is ErrorKind.PERMISSION
    (outside / "keep.txt").write_bytes(b"keep")
    with pytest.raises(StoreError) as error:
        await store.delete(bucket, "link/keep.txt")
    assert error.value.kind is ErrorKind.PERMISSION
    assert _tree(outside) == ["keep.txt"]  # nothing created, removed or left outside the roots


@pytest.mark.parametrize("hidden", [HIDDEN_DIR, f"{HIDDEN_DIR}/tmp", f"{HIDDEN_DIR}/meta", f"{HIDDEN_DIR}/uploads"])
async def test_a_symlinked_working_directory_is_refused(tmp_path: Path, root: Path, bucket: str, hidden: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (Path(bucket) / hidden).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, Path(bucket) / hidden)
    store = FsStore([root])
    write = store.create_multipart(bucket, "a.txt", PutOptions()) if hidden.endswith("uploads") else \
        store.put(bucket, "a.txt", b"x", PutOptions())
    with pytest.raises(StoreError) as error:
        await write
    assert error.value.kind is ErrorKind.PERMISSION
    assert _tree(outside) == []
    assert not (Path(bucket) / "a.txt").exists()


async def test_a_symlinked_file_is_replaced_not_written_through(tmp_path: Path, root: Path, bucket: str) -> None:
    target = tmp_path / "target.txt"
    target.write_bytes(b"untouched")
    os.symlink(target, Path(bucket) / "file.txt")
    store = FsStore([root])
    await store.put(bucket, "file.txt", b"new", PutOptions())
    assert target.read_bytes() == b"untouched"
    assert not (Path(bucket) / "file.txt").is_symlink()
    await store.delete(bucket, "file.txt")
    assert target.read_bytes() == b"untouched"


@pytest.mark.parametrize("where", ["inside", "above", "equal"])
async def test_protected_paths_are_never_a_bucket(root: Path, where: str) -> None:
    data = root / "data"
    data.mkdir()
    (data / "master.key").write_text("secret")
    bucket = {"inside": data, "above": root, "equal": data}[where]
    store = FsStore([root], protected=[data, data / "master.key"])
    for attempt in (store.head(str(bucket), "master.key"), store.list(str(bucket)),
                    store.put(str(bucket), "x.txt", b"x", PutOptions())):
        with pytest.raises(StoreError) as error:
            await attempt
        assert error.value.kind is ErrorKind.PERMISSION


async def test_list_start_after_is_exclusive_and_first_page_only(root: Path, bucket: str) -> None:
    store = FsStore([root])
    keys = ["a", "a/b", "a/c", "a-b", "b", "é", "z/ü"]
    for key in keys:
        await store.put(bucket, key.replace("a/", "dir/") if key.startswith("a/") else key, b"1", PutOptions())
    stored = sorted(k.replace("a/", "dir/") if k.startswith("a/") else k for k in keys)
    assert stored == sorted(stored, key=lambda k: k.encode("utf-8"))
    page = await store.list(bucket, start_after="a-b")
    assert [o.key for o in page.keys] == [k for k in stored if k.encode() > b"a-b"]
    page = await store.list(bucket, start_after="dir/b")  # between two keys, inside a directory
    assert [o.key for o in page.keys] == ["dir/c", "z/ü", "é"]
    first = await store.list(bucket, limit=2, start_after="a")
    assert [o.key for o in first.keys] == ["a-b", "b"]
    second = await store.list(bucket, token=first.next_token, limit=10, start_after="zzz")
    assert [o.key for o in second.keys] == ["dir/b", "dir/c", "z/ü", "é"]  # start_after ignored with a token
    assert [o.key for o in (await store.list(bucket, start_after="é")).keys] == []
    assert [o.key for o in (await store.list(bucket, prefix="dir/", start_after="dir/b")).keys] == ["dir/c"]
