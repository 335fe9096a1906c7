"""``FsStore``: a local directory tree as an object store (``src_cloud_type`` / ``dst`` ``Local``).

A *bucket* is an absolute directory path that must resolve inside one of the configured roots
(else ``PERMISSION``; a missing directory is ``NOT_FOUND``); key ``a/b.txt`` is the file
``<bucket>/a/b.txt``. Keys that cannot be a path (empty or ``.``/``..`` segments, a trailing
``/``, a segment over 255 bytes, NUL, the reserved ``.omsync/`` prefix) are refused with
``UNSUPPORTED``, as declared in ``FS_CAPABILITIES``.

Every write lands in ``<bucket>/.omsync/tmp`` first, is fsynced and then renamed into place, so
readers never see a half-written file. Content type, user metadata, ETag and CRC-64 live in a
sidecar ``<bucket>/.omsync/meta/<h[:2]>/<h>/<inode>.json`` (``h`` = SHA-256 of the key) that is
written *before* the rename and names the inode it describes: a reader always pairs a file with
its own sidecar, and a file changed by someone else (inode, size or mtime differ) simply has no
metadata (``etag``/``crc64ecma`` ``None``). Multipart parts are staged in
``<bucket>/.omsync/uploads/<id>/`` and assembled into a temporary file that is renamed atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from omsync.stores import _common as common
from omsync.stores.base import Capabilities, ErrorKind, ListPage, ObjectInfo, PutOptions, StoreError
from omsync.stores.crc64 import Crc64

HIDDEN_DIR = ".omsync"
_COPY_CHUNK = 1024 * 1024
_T = TypeVar("_T")

FS_CAPABILITIES = Capabilities(
    server_side_copy=True,
    multipart=True,
    part_copy=True,
    crc64ecma=True,
    md5_etag=True,
    min_part_size=1,
    max_single_put=5 * 1024**3,
    max_server_copy=2**62,
    max_key_bytes=1024,
    preserves_double_slash=False,
    allows_dot_segments=False,
    allows_trailing_slash_object=False,
    max_segment_bytes=255,
    unsupported_key_chars=frozenset({"\x00"}),
    reserved_prefixes=(HIDDEN_DIR + "/",),
    keys_are_paths=True,
    limitation="local file system: a key must be a relative file path",
)


@dataclass(frozen=True)
class _Written:
    path: str
    md5: str
    crc: int
    size: int


def _os_error(exc: OSError, what: str) -> StoreError:
    """Map an OSError to the store's error kinds (never leaks beyond this module)."""
    if isinstance(exc, FileNotFoundError):
        return StoreError(ErrorKind.NOT_FOUND, f"{what}: not found", code="NoSuchKey")
    if isinstance(exc, PermissionError):
        return StoreError(ErrorKind.PERMISSION, f"{what}: permission denied", code="AccessDenied")
    if isinstance(exc, (NotADirectoryError, IsADirectoryError, FileExistsError)) or exc.errno in (
        errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY,
    ):
        return StoreError(
            ErrorKind.UNSUPPORTED,
            f"{what}: an object and a directory of the same name cannot both exist here",
            code="PathConflict",
        )
    if exc.errno == errno.ENAMETOOLONG:
        return StoreError(ErrorKind.UNSUPPORTED, f"{what}: name too long", code="KeyTooLongError")
    return StoreError(ErrorKind.TRANSIENT, f"{what}: {exc.strerror or exc}", code="IOError")


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _has_surrogate(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsStore:
    """Local directories under ``roots`` as buckets. Blocking I/O runs in worker threads."""

    def __init__(self, roots: Sequence[Path], *, capabilities: Capabilities = FS_CAPABILITIES) -> None:
        self.capabilities = capabilities
        self.roots = tuple(Path(os.path.realpath(root)) for root in roots)
        # Striped locks serialise rename + sidecar clean-up per key inside this process.
        self._locks = [threading.Lock() for _ in range(64)]
        self._ready: set[str] = set()

    # -- paths ------------------------------------------------------------------------------

    def _inside_roots(self, real: str) -> bool:
        return any(real == str(root) or real.startswith(str(root) + os.sep) for root in self.roots)

    def _bucket(self, bucket: str) -> str:
        """Real path of an existing bucket directory inside the roots."""
        if not bucket or not os.path.isabs(bucket) or "\x00" in bucket:
            raise StoreError(ErrorKind.PERMISSION, "bucket must be an absolute directory path",
                             code="AccessDenied")
        real = os.path.realpath(bucket)
        if not self._inside_roots(real):
            raise StoreError(ErrorKind.PERMISSION, "bucket is outside the allowed roots",
                             code="AccessDenied")
        if not os.path.isdir(real):
            raise StoreError(ErrorKind.NOT_FOUND, "bucket directory does not exist", code="NoSuchBucket")
        return real

    def _object_path(self, base: str, key: str) -> str:
        self.capabilities.check_key(key)
        return os.path.join(base, key)

    def _hidden(self, base: str, *parts: str) -> str:
        path = os.path.join(base, HIDDEN_DIR, *parts)
        if path not in self._ready:
            os.makedirs(path, exist_ok=True)
            self._ready.add(path)
        return path

    def _meta_dir(self, base: str, key: str) -> str:
        digest = _key_hash(key)
        return os.path.join(base, HIDDEN_DIR, "meta", digest[:2], digest)

    def _lock(self, base: str, key: str) -> threading.Lock:
        return self._locks[hash((base, key)) % len(self._locks)]

    def _check_readable(self, path: str) -> None:
        real = os.path.realpath(path)
        if not self._inside_roots(real):
            raise StoreError(ErrorKind.PERMISSION, "object resolves outside the allowed roots",
                             code="AccessDenied")

    # -- sidecars ---------------------------------------------------------------------------

    def _read_sidecar(self, base: str, key: str, st: os.stat_result) -> dict[str, Any] | None:
        path = os.path.join(self._meta_dir(base, key), f"{st.st_ino}.json")
        try:
            with open(path, encoding="utf-8") as fh:
                meta: dict[str, Any] = json.load(fh)
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or meta.get("size") != st.st_size or meta.get("mtime_ns") != st.st_mtime_ns:
            return None
        return meta

    def _info(self, base: str, key: str, st: os.stat_result, *, listing: bool = False) -> ObjectInfo:
        meta = self._read_sidecar(base, key, st) or {}
        if listing:
            return ObjectInfo(key=key, size=st.st_size, last_modified=st.st_mtime,
                              etag=meta.get("etag"), storage_class=meta.get("storage_class"))
        return ObjectInfo(
            key=key,
            size=st.st_size,
            last_modified=st.st_mtime,
            etag=meta.get("etag"),
            content_type=meta.get("content_type"),
            metadata=dict(meta.get("metadata") or {}),
            crc64ecma=meta.get("crc64"),
            storage_class=meta.get("storage_class"),
        )

    # -- writing ----------------------------------------------------------------------------

    def _write_temp(self, base: str, fill: Callable[[BinaryIO, Callable[[bytes], None]], None]) -> _Written:
        """Create a temp file in the bucket's hidden dir, let ``fill`` write it, fsync it."""
        tmp_dir = self._hidden(base, "tmp")
        path = os.path.join(tmp_dir, f"tmp-{uuid.uuid4().hex}")
        md5 = hashlib.md5(usedforsecurity=False)
        crc = Crc64()

        def write(chunk: bytes) -> None:
            md5.update(chunk)
            crc.update(chunk)
            fh.write(chunk)

        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            # The hidden directory was removed behind our back: make it again, once.
            self._ready.discard(tmp_dir)
            self._hidden(base, "tmp")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fill(fh, write)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return _Written(path, md5.hexdigest(), crc.value, crc.length)

    def _publish(self, base: str, key: str, written: _Written, etag: str,
                 options: PutOptions) -> ObjectInfo:
        """Sidecar first, then rename the temp file onto the key's path (atomic)."""
        final = os.path.join(base, key)
        st = os.stat(written.path)
        metadata = {name.lower(): value for name, value in options.metadata.items()}
        meta: dict[str, Any] = {
            "key": key,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "etag": etag,
            "crc64": written.crc,
            "content_type": options.content_type,
            "metadata": metadata,
            "storage_class": options.storage_class,
        }
        meta_dir = self._meta_dir(base, key)
        sidecar = os.path.join(meta_dir, f"{st.st_ino}.json")
        try:
            with self._lock(base, key):
                os.makedirs(meta_dir, exist_ok=True)
                tmp_meta = sidecar + ".tmp"
                with open(tmp_meta, "w", encoding="utf-8") as fh:
                    json.dump(meta, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp_meta, sidecar)
                if os.path.isdir(final) and not os.path.islink(final):
                    raise IsADirectoryError(errno.EISDIR, "is a directory", final)
                for attempt in range(5):
                    # A concurrent delete may remove an emptied parent between makedirs and rename.
                    os.makedirs(os.path.dirname(final), exist_ok=True)
                    try:
                        os.rename(written.path, final)
                        break
                    except FileNotFoundError:
                        if attempt == 4:
                            raise
                _fsync_dir(os.path.dirname(final))
                for name in os.listdir(meta_dir):
                    if name != f"{st.st_ino}.json":
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(meta_dir, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(written.path)
            with contextlib.suppress(OSError):
                if not os.path.exists(final) or os.stat(final).st_ino != st.st_ino:
                    os.unlink(sidecar)
            raise
        return ObjectInfo(
            key=key, size=st.st_size, last_modified=st.st_mtime, etag=etag,
            content_type=options.content_type, metadata=metadata,
            crc64ecma=written.crc, storage_class=options.storage_class,
        )

    async def _run(self, what: str, func: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(func)
        except StoreError:
            raise
        except OSError as exc:
            raise _os_error(exc, what) from exc

    # -- the port ---------------------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        def run() -> ObjectInfo:
            base = self._bucket(bucket)
            path = self._object_path(base, key)
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                raise StoreError(ErrorKind.NOT_FOUND, "no such object", code="NoSuchKey") from None
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(ErrorKind.NOT_FOUND, "no such object", code="NoSuchKey")
            self._check_readable(path)
            return self._info(base, key, st)

        return await self._run("head", run)

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        def open_file() -> tuple[BinaryIO, int, int]:
            base = self._bucket(bucket)
            path = self._object_path(base, key)
            try:
                fh = open(path, "rb")  # noqa: SIM115 - closed by the generator below
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise StoreError(ErrorKind.NOT_FOUND, "no such object", code="NoSuchKey") from None
            try:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise StoreError(ErrorKind.NOT_FOUND, "no such object", code="NoSuchKey")
                self._check_readable(path)
                first, stop = common.resolve_range(st.st_size, start, end)
                fh.seek(first)
            except BaseException:
                fh.close()
                raise
            return fh, first, stop

        fh, position, stop = await self._run("get", open_file)
        try:
            size = max(1, chunk_size)
            while position < stop:
                want = min(size, stop - position)
                chunk = await self._run("get", functools.partial(fh.read, want))
                if not chunk:
                    raise StoreError(ErrorKind.TRANSIENT, "file shrank while being read",
                                     code="IncompleteBody")
                position += len(chunk)
                yield chunk
        finally:
            fh.close()

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        def run() -> ObjectInfo:
            base = self._bucket(bucket)
            self._object_path(base, key)
            common.check_put_size(self.capabilities, len(data))
            common.check_storage_class(self.capabilities, options)
            common.verify_content_md5(options, hashlib.md5(data, usedforsecurity=False).digest())

            def fill(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
                write(data)

            written = self._write_temp(base, fill)
            return self._publish(base, key, written, written.md5, options)

        return await self._run("put", run)

    def _upload_dir(self, base: str, upload_id: str) -> str:
        if not upload_id or not all(ch in "0123456789abcdef" for ch in upload_id):
            raise StoreError(ErrorKind.NOT_FOUND, "no such upload", code="NoSuchUpload")
        return os.path.join(base, HIDDEN_DIR, "uploads", upload_id)

    def _load_upload(self, base: str, key: str, upload_id: str) -> tuple[str, PutOptions]:
        directory = self._upload_dir(base, upload_id)
        try:
            with open(os.path.join(directory, "upload.json"), encoding="utf-8") as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            raise StoreError(ErrorKind.NOT_FOUND, "no such upload", code="NoSuchUpload") from None
        if info.get("key") != key:
            raise StoreError(ErrorKind.NOT_FOUND, "no such upload for this key", code="NoSuchUpload")
        options = PutOptions(content_type=info.get("content_type"), metadata=info.get("metadata") or {},
                             storage_class=info.get("storage_class"))
        return directory, options

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        def run() -> str:
            base = self._bucket(bucket)
            self.capabilities.check_key(key, multipart=True)
            common.check_storage_class(self.capabilities, options)
            upload_id = uuid.uuid4().hex
            directory = os.path.join(self._hidden(base, "uploads"), upload_id)
            os.mkdir(directory)
            info = {"key": key, "content_type": options.content_type,
                    "metadata": dict(options.metadata), "storage_class": options.storage_class,
                    "created": time.time()}
            with open(os.path.join(directory, "upload.json.tmp"), "w", encoding="utf-8") as fh:
                json.dump(info, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(os.path.join(directory, "upload.json.tmp"), os.path.join(directory, "upload.json"))
            return upload_id

        return await self._run("create_multipart", run)

    def _store_part(self, base: str, key: str, upload_id: str, part_number: int,
                    fill: Callable[[BinaryIO, Callable[[bytes], None]], None]) -> str:
        directory, _ = self._load_upload(base, key, upload_id)
        common.check_part_number(self.capabilities, part_number)
        written = self._write_temp(base, fill)
        try:
            os.replace(written.path, os.path.join(directory, f"part-{part_number:05d}"))
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                os.unlink(written.path)
            raise StoreError(ErrorKind.NOT_FOUND, "upload was aborted", code="NoSuchUpload") from None
        return written.md5

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                          data: bytes) -> str:
        def run() -> str:
            base = self._bucket(bucket)

            def fill(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
                write(data)

            return self._store_part(base, key, upload_id, part_number, fill)

        return await self._run("upload_part", run)

    def _open_source(self, src_bucket: str, src_key: str) -> tuple[BinaryIO, int]:
        src_base = self._bucket(src_bucket)
        path = self._object_path(src_base, src_key)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise StoreError(ErrorKind.NOT_FOUND, "no such source object", code="NoSuchKey") from None
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            fh.close()
            raise StoreError(ErrorKind.NOT_FOUND, "no such source object", code="NoSuchKey")
        try:
            self._check_readable(path)
        except StoreError:
            fh.close()
            raise
        return fh, st.st_size

    @staticmethod
    def _copy_range(src: BinaryIO, start: int, end: int, write: Callable[[bytes], None]) -> None:
        src.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = src.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise StoreError(ErrorKind.TRANSIENT, "source shrank while being copied",
                                 code="IncompleteBody")
            write(chunk)
            remaining -= len(chunk)

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        def run() -> str:
            base = self._bucket(bucket)
            src, size = self._open_source(src_bucket, src_key)
            with src:
                common.check_copy_range(size, start, end)

                def fill(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
                    self._copy_range(src, start, end, write)

                return self._store_part(base, key, upload_id, part_number, fill)

        return await self._run("upload_part_copy", run)

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        def run() -> ObjectInfo:
            base = self._bucket(bucket)
            self._object_path(base, key)
            directory, options = self._load_upload(base, key, upload_id)
            common.check_parts_order(parts)
            etags: list[str] = []

            def fill(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
                for index, (number, etag) in enumerate(parts):
                    part_md5 = hashlib.md5(usedforsecurity=False)
                    try:
                        src = open(os.path.join(directory, f"part-{number:05d}"), "rb")  # noqa: SIM115
                    except FileNotFoundError:
                        raise StoreError(ErrorKind.INVALID, f"part {number} was not uploaded",
                                         code="InvalidPart") from None
                    with src:
                        size = 0
                        while chunk := src.read(_COPY_CHUNK):
                            part_md5.update(chunk)
                            write(chunk)
                            size += len(chunk)
                    if part_md5.hexdigest() != common.clean_etag(etag):
                        raise StoreError(ErrorKind.INVALID, f"part {number} has a different ETag",
                                         code="InvalidPart")
                    if index < len(parts) - 1 and size < self.capabilities.min_part_size:
                        raise StoreError(ErrorKind.INVALID, f"part {number} is smaller than the minimum",
                                         code="EntityTooSmall")
                    etags.append(part_md5.hexdigest())

            written = self._write_temp(base, fill)
            info = self._publish(base, key, written, common.multipart_etag(etags), options)
            shutil.rmtree(directory, ignore_errors=True)
            return info

        return await self._run("complete_multipart", run)

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        def run() -> None:
            base = self._bucket(bucket)
            try:
                directory, _ = self._load_upload(base, key, upload_id)
            except StoreError:
                return
            shutil.rmtree(directory, ignore_errors=True)

        await self._run("abort_multipart", run)

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        def run() -> list[tuple[str, str]]:
            base = self._bucket(bucket)
            root = os.path.join(base, HIDDEN_DIR, "uploads")
            found: list[tuple[str, str]] = []
            try:
                entries = list(os.scandir(root))
            except FileNotFoundError:
                return found
            for entry in entries:
                try:
                    with open(os.path.join(entry.path, "upload.json"), encoding="utf-8") as fh:
                        key = json.load(fh).get("key")
                except (OSError, ValueError):
                    continue
                if isinstance(key, str) and key.startswith(prefix):
                    found.append((key, entry.name))
            return sorted(found)

        return await self._run("list_multipart_uploads", run)

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        def run() -> ObjectInfo:
            base = self._bucket(bucket)
            self._object_path(base, key)
            common.check_storage_class(self.capabilities, options)
            src, size = self._open_source(src_bucket, src_key)
            with src:
                if size > self.capabilities.max_server_copy:
                    raise StoreError(ErrorKind.UNSUPPORTED, "source larger than the server-copy limit",
                                     code="InvalidRequest")

                def fill(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
                    self._copy_range(src, 0, size, write)

                written = self._write_temp(base, fill)
            return self._publish(base, key, written, written.md5, options)

        return await self._run("server_copy", run)

    async def delete(self, bucket: str, key: str) -> None:
        def run() -> None:
            base = self._bucket(bucket)
            path = self._object_path(base, key)
            with self._lock(base, key):
                try:
                    if stat.S_ISREG(os.lstat(path).st_mode) or os.path.islink(path):
                        os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    pass
                shutil.rmtree(self._meta_dir(base, key), ignore_errors=True)
            # Directories exist only to hold keys: drop the ones this delete emptied.
            parent = os.path.dirname(path)
            while parent != base and parent.startswith(base + os.sep):
                try:
                    os.rmdir(parent)
                except OSError:
                    break
                parent = os.path.dirname(parent)

        await self._run("delete", run)

    def _walk(self, base: str, rel: str, prefix: str, after: str | None) -> Iterator[str]:
        """Keys under ``base/rel`` in key order, pruning subtrees outside ``prefix`` or ≤ ``after``."""
        try:
            entries = list(os.scandir(os.path.join(base, rel) if rel else base))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        items: list[tuple[str, bool]] = []
        for entry in entries:
            name = entry.name
            if (not rel and name == HIDDEN_DIR) or _has_surrogate(name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    items.append((name + "/", True))
                elif entry.is_file(follow_symlinks=False):
                    items.append((name, False))
            except OSError:
                continue
        # 'a/' sorts where every key under it sorts, so a plain sort gives S3 key order.
        items.sort()
        for name, is_dir in items:
            full = rel + name
            if is_dir:
                if not (full.startswith(prefix) or prefix.startswith(full)):
                    continue
                if after is not None and full < after and not after.startswith(full):
                    continue
                yield from self._walk(base, full, prefix, after)
            elif full.startswith(prefix) and (after is None or full > after):
                yield full

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000) -> ListPage:
        def run() -> ListPage:
            base = self._bucket(bucket)
            want = max(1, limit)
            found: list[ObjectInfo] = []
            more = False
            for key in self._walk(base, "", prefix, token):
                if len(found) == want:
                    more = True
                    break
                try:
                    st = os.stat(os.path.join(base, key))
                except OSError:
                    continue  # deleted while listing
                found.append(self._info(base, key, st, listing=True))
            return ListPage(keys=found, next_token=found[-1].key if more else None)

        return await self._run("list", run)

    async def close(self) -> None:
        return None
