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

Nothing is written through a symbolic link: every write, rename, directory creation and removal
walks from the resolved root one path component at a time with ``O_NOFOLLOW`` and acts
relative to the directory descriptor it reached (``openat`` style), so a symlinked directory
inside a bucket cannot send a write outside the roots; such a key fails with ``PERMISSION``
before anything is created. Paths in ``protected`` (the data directory, the master key) are
never a bucket, never inside one, and never read.
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
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from omsync.stores import _common as common
from omsync.stores.base import Capabilities, ErrorKind, ListPage, ObjectInfo, PutOptions, StoreError
from omsync.stores.crc64 import Crc64

if TYPE_CHECKING:
    from omsync.config import Settings

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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _Written:
    name: str  # file name inside <bucket>/.omsync/tmp
    md5: str
    crc: int
    size: int


def _escape(what: str = "path") -> StoreError:
    return StoreError(ErrorKind.PERMISSION, f"{what} leaves the bucket through a symbolic link",
                      code="AccessDenied")


def _os_error(exc: OSError, what: str) -> StoreError:
    """Map an OSError to the store's error kinds (never leaks beyond this module)."""
    if isinstance(exc, FileNotFoundError):
        return StoreError(ErrorKind.NOT_FOUND, f"{what}: not found", code="NoSuchKey")
    if isinstance(exc, PermissionError):
        return StoreError(ErrorKind.PERMISSION, f"{what}: permission denied", code="AccessDenied")
    if exc.errno == errno.ELOOP:
        return _escape(what)
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


def _is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_dir_at(dir_fd: int, name: str, *, create: bool) -> int:
    """Open the directory ``name`` inside ``dir_fd`` without following a symbolic link,
    creating it first when ``create``. A symlink raises ``PERMISSION``."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link_at(dir_fd, name):
            raise _escape() from None
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=dir_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link_at(dir_fd, name):
            raise _escape() from None
        raise


def _walk_dirs(dir_fd: int, parts: Sequence[str], *, create: bool) -> int:
    """A new descriptor of ``dir_fd``/``parts`` (each component checked as above). ``dir_fd``
    stays open and owned by the caller."""
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise _escape()
            child = _open_dir_at(fd, part, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _write_file_at(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``data`` to a new file ``name`` (replacing a stale one, never through a link), fsynced."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    fd = os.open(name, _NEW_FILE_FLAGS, 0o666, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_file_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


class FsStore:
    """Local directories under ``roots`` as buckets. Blocking I/O runs in worker threads.

    ``protected`` paths (files or directories: omsync's data directory, its master key) are
    never reachable: a bucket inside one or containing one is refused with ``PERMISSION``,
    whatever the roots say.
    """

    def __init__(self, roots: Sequence[Path], *, capabilities: Capabilities = FS_CAPABILITIES,
                 protected: Sequence[Path] = ()) -> None:
        self.capabilities = capabilities
        self.roots = tuple(Path(os.path.realpath(root)) for root in roots)
        self.protected = tuple(os.path.realpath(path) for path in protected)
        # Striped locks serialise rename + sidecar clean-up per key inside this process.
        self._locks = [threading.Lock() for _ in range(64)]

    @classmethod
    def from_settings(cls, settings: Settings, project_id: str | None = None) -> FsStore:
        """The store a task may use: the roots granted to ``project_id`` (every configured root
        when None), with the data directory, database and master key protected."""
        from omsync.local_roots import granted_roots, protected_paths, usable_roots

        roots = usable_roots(settings) if project_id is None else granted_roots(settings, project_id)
        return cls(roots, protected=protected_paths(settings))

    # -- paths ------------------------------------------------------------------------------

    def _inside_roots(self, real: str) -> bool:
        return any(_inside(real, str(root)) for root in self.roots)

    def _touches_protected(self, real: str) -> bool:
        return any(_inside(real, p) or _inside(p, real) for p in self.protected)

    def _bucket(self, bucket: str) -> str:
        """Real path of an existing bucket directory inside the roots."""
        if not bucket or not os.path.isabs(bucket) or "\x00" in bucket:
            raise StoreError(ErrorKind.PERMISSION, "bucket must be an absolute directory path",
                             code="AccessDenied")
        real = os.path.realpath(bucket)
        if not self._inside_roots(real) or self._touches_protected(real):
            raise StoreError(ErrorKind.PERMISSION, "bucket is outside the allowed roots",
                             code="AccessDenied")
        if not os.path.isdir(real):
            raise StoreError(ErrorKind.NOT_FOUND, "bucket directory does not exist", code="NoSuchBucket")
        return real

    def _bucket_fd(self, base: str) -> int:
        """A descriptor of the bucket directory, reached from its root without following links."""
        for root in self.roots:
            if _inside(base, str(root)):
                rel = os.path.relpath(base, root)
                parts = [] if rel == "." else rel.split(os.sep)
                with _closing(os.open(str(root), _DIR_FLAGS)) as root_fd:
                    return _walk_dirs(root_fd, parts, create=False)
        raise StoreError(ErrorKind.PERMISSION, "bucket is outside the allowed roots", code="AccessDenied")

    @contextlib.contextmanager
    def _dir(self, base: str, parts: Sequence[str], *, create: bool) -> Iterator[int]:
        """The directory ``base``/``parts``, every component opened with ``O_NOFOLLOW``."""
        with _closing(self._bucket_fd(base)) as bucket_fd:
            fd = _walk_dirs(bucket_fd, parts, create=create)
        with _closing(fd):
            yield fd

    def _object_path(self, base: str, key: str) -> str:
        self.capabilities.check_key(key)
        return os.path.join(base, key)

    @staticmethod
    def _meta_parts(key: str) -> list[str]:
        digest = _key_hash(key)
        return [HIDDEN_DIR, "meta", digest[:2], digest]

    def _meta_dir(self, base: str, key: str) -> str:
        return os.path.join(base, *self._meta_parts(key))

    def _lock(self, base: str, key: str) -> threading.Lock:
        return self._locks[hash((base, key)) % len(self._locks)]

    def _check_readable(self, path: str) -> None:
        real = os.path.realpath(path)
        if not self._inside_roots(real) or self._touches_protected(real):
            raise StoreError(ErrorKind.PERMISSION, "object resolves outside the allowed roots",
                             code="AccessDenied")

    # -- sidecars ---------------------------------------------------------------------------

    def _read_sidecar(self, base: str, key: str, st: os.stat_result) -> dict[str, Any] | None:
        path = os.path.join(self._meta_dir(base, key), f"{st.st_ino}.json")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, encoding="utf-8") as fh:
                meta: dict[str, Any] = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key or meta.get("size") != st.st_size \
                or meta.get("mtime_ns") != st.st_mtime_ns:
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
        name = f"tmp-{uuid.uuid4().hex}"
        md5 = hashlib.md5(usedforsecurity=False)
        crc = Crc64()

        def write(chunk: bytes) -> None:
            md5.update(chunk)
            crc.update(chunk)
            fh.write(chunk)

        with self._dir(base, [HIDDEN_DIR, "tmp"], create=True) as tmp_fd:
            fd = os.open(name, _NEW_FILE_FLAGS, 0o666, dir_fd=tmp_fd)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fill(fh, write)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=tmp_fd)
                raise
        return _Written(name, md5.hexdigest(), crc.value, crc.length)

    def _discard(self, base: str, written: _Written) -> None:
        with contextlib.suppress(OSError, StoreError), self._dir(base, [HIDDEN_DIR, "tmp"], create=False) as tmp_fd:
            os.unlink(written.name, dir_fd=tmp_fd)

    def _publish(self, base: str, key: str, written: _Written, etag: str,
                 options: PutOptions) -> ObjectInfo:
        """Sidecar first, then rename the temp file onto the key's path (atomic)."""
        *parents, leaf = key.split("/")
        metadata = {name.lower(): value for name, value in options.metadata.items()}
        try:
            with self._dir(base, [HIDDEN_DIR, "tmp"], create=False) as tmp_fd, self._lock(base, key):
                st = os.stat(written.name, dir_fd=tmp_fd, follow_symlinks=False)
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
                sidecar = f"{st.st_ino}.json"
                with self._dir(base, self._meta_parts(key), create=True) as meta_fd:
                    _write_file_at(meta_fd, sidecar + ".tmp", json.dumps(meta).encode("utf-8"))
                    os.replace(sidecar + ".tmp", sidecar, src_dir_fd=meta_fd, dst_dir_fd=meta_fd)
                    try:
                        for attempt in range(5):
                            # A concurrent delete may remove an emptied parent before the rename.
                            with self._dir(base, parents, create=True) as parent_fd:
                                with contextlib.suppress(FileNotFoundError):
                                    if stat.S_ISDIR(os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                                        raise IsADirectoryError(errno.EISDIR, "is a directory", key)
                                try:
                                    os.rename(written.name, leaf, src_dir_fd=tmp_fd, dst_dir_fd=parent_fd)
                                except FileNotFoundError:
                                    if attempt == 4:
                                        raise
                                    continue
                                os.fsync(parent_fd)
                                break
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.unlink(sidecar, dir_fd=meta_fd)
                        raise
                    for name in os.listdir(meta_fd):
                        if name != sidecar:
                            with contextlib.suppress(OSError):
                                os.unlink(name, dir_fd=meta_fd)
        except BaseException:
            self._discard(base, written)
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

    @staticmethod
    def _upload_parts(upload_id: str) -> list[str]:
        if not upload_id or not all(ch in "0123456789abcdef" for ch in upload_id):
            raise StoreError(ErrorKind.NOT_FOUND, "no such upload", code="NoSuchUpload")
        return [HIDDEN_DIR, "uploads", upload_id]

    def _load_upload(self, base: str, key: str, upload_id: str) -> tuple[list[str], PutOptions]:
        parts = self._upload_parts(upload_id)
        try:
            with self._dir(base, parts, create=False) as up_fd:
                info = json.loads(_read_file_at(up_fd, "upload.json"))
        except (OSError, ValueError, StoreError):
            raise StoreError(ErrorKind.NOT_FOUND, "no such upload", code="NoSuchUpload") from None
        if not isinstance(info, dict) or info.get("key") != key:
            raise StoreError(ErrorKind.NOT_FOUND, "no such upload for this key", code="NoSuchUpload")
        options = PutOptions(content_type=info.get("content_type"), metadata=info.get("metadata") or {},
                             storage_class=info.get("storage_class"))
        return parts, options

    def _remove_upload(self, base: str, upload_id: str) -> None:
        with contextlib.suppress(OSError, StoreError), \
                self._dir(base, [HIDDEN_DIR, "uploads"], create=False) as uploads_fd:
            shutil.rmtree(upload_id, dir_fd=uploads_fd)

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        def run() -> str:
            base = self._bucket(bucket)
            self.capabilities.check_key(key, multipart=True)
            common.check_storage_class(self.capabilities, options)
            upload_id = uuid.uuid4().hex
            info = {"key": key, "content_type": options.content_type,
                    "metadata": dict(options.metadata), "storage_class": options.storage_class,
                    "created": time.time()}
            with self._dir(base, [HIDDEN_DIR, "uploads"], create=True) as uploads_fd:
                os.mkdir(upload_id, 0o777, dir_fd=uploads_fd)
                with _closing(_open_dir_at(uploads_fd, upload_id, create=False)) as up_fd:
                    _write_file_at(up_fd, "upload.json.tmp", json.dumps(info).encode("utf-8"))
                    os.replace("upload.json.tmp", "upload.json", src_dir_fd=up_fd, dst_dir_fd=up_fd)
            return upload_id

        return await self._run("create_multipart", run)

    def _store_part(self, base: str, key: str, upload_id: str, part_number: int,
                    fill: Callable[[BinaryIO, Callable[[bytes], None]], None]) -> str:
        parts, _ = self._load_upload(base, key, upload_id)
        common.check_part_number(self.capabilities, part_number)
        written = self._write_temp(base, fill)
        try:
            with self._dir(base, [HIDDEN_DIR, "tmp"], create=False) as tmp_fd, \
                    self._dir(base, parts, create=False) as up_fd:
                os.replace(written.name, f"part-{part_number:05d}", src_dir_fd=tmp_fd, dst_dir_fd=up_fd)
        except FileNotFoundError:
            self._discard(base, written)
            raise StoreError(ErrorKind.NOT_FOUND, "upload was aborted", code="NoSuchUpload") from None
        except BaseException:
            self._discard(base, written)
            raise
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
            upload_parts, options = self._load_upload(base, key, upload_id)
            common.check_parts_order(parts)
            etags: list[str] = []

            def fill(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
                with self._dir(base, upload_parts, create=False) as up_fd:
                    for index, (number, etag) in enumerate(parts):
                        part_md5 = hashlib.md5(usedforsecurity=False)
                        try:
                            part_fd = os.open(f"part-{number:05d}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                              dir_fd=up_fd)
                        except FileNotFoundError:
                            raise StoreError(ErrorKind.INVALID, f"part {number} was not uploaded",
                                             code="InvalidPart") from None
                        with os.fdopen(part_fd, "rb") as src:
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
            self._remove_upload(base, upload_id)
            return info

        return await self._run("complete_multipart", run)

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        def run() -> None:
            base = self._bucket(bucket)
            try:
                self._load_upload(base, key, upload_id)
            except StoreError:
                return
            self._remove_upload(base, upload_id)

        await self._run("abort_multipart", run)

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        def run() -> list[tuple[str, str]]:
            base = self._bucket(bucket)
            found: list[tuple[str, str]] = []
            try:
                with self._dir(base, [HIDDEN_DIR, "uploads"], create=False) as uploads_fd:
                    for name in os.listdir(uploads_fd):
                        try:
                            with _closing(_open_dir_at(uploads_fd, name, create=False)) as up_fd:
                                key = json.loads(_read_file_at(up_fd, "upload.json")).get("key")
                        except (OSError, ValueError, AttributeError, StoreError):
                            continue
                        if isinstance(key, str) and key.startswith(prefix):
                            found.append((key, name))
            except (FileNotFoundError, NotADirectoryError):
                return found
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
                write_options = options
                if options.copy_metadata:
                    # Keep the source's content type and user metadata, as S3's COPY directive.
                    source = self._info(self._bucket(src_bucket), src_key, os.fstat(src.fileno()))
                    write_options = PutOptions(content_type=source.content_type, metadata=dict(source.metadata),
                                               storage_class=options.storage_class)

                def fill(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
                    self._copy_range(src, 0, size, write)

                written = self._write_temp(base, fill)
            return self._publish(base, key, written, written.md5, write_options)

        return await self._run("server_copy", run)

    async def delete(self, bucket: str, key: str) -> None:
        def run() -> None:
            base = self._bucket(bucket)
            self._object_path(base, key)
            *parents, leaf = key.split("/")
            meta = self._meta_parts(key)
            with self._lock(base, key):
                try:
                    with self._dir(base, parents, create=False) as parent_fd:
                        if not stat.S_ISDIR(os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                            os.unlink(leaf, dir_fd=parent_fd)
                except (FileNotFoundError, NotADirectoryError):
                    pass
                with contextlib.suppress(OSError, StoreError), \
                        self._dir(base, meta[:-1], create=False) as meta_parent:
                    shutil.rmtree(meta[-1], dir_fd=meta_parent)
            # Directories exist only to hold keys: drop the ones this delete emptied.
            for depth in range(len(parents), 0, -1):
                try:
                    with self._dir(base, parents[: depth - 1], create=False) as up_fd:
                        os.rmdir(parents[depth - 1], dir_fd=up_fd)
                except (OSError, StoreError):
                    break

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
                   limit: int = 1000, start_after: str | None = None) -> ListPage:
        """One page in key order (code-point order of the keys, which is their UTF-8 byte
        order). ``start_after`` applies to the first page only; a ``token`` takes precedence."""
        after = token if token is not None else start_after

        def run() -> ListPage:
            base = self._bucket(bucket)
            want = max(1, limit)
            found: list[ObjectInfo] = []
            more = False
            for key in self._walk(base, "", prefix, after):
                if len(found) == want:
                    more = True
                    break
                try:
                    st = os.stat(os.path.join(base, key), follow_symlinks=False)
                except OSError:
                    continue  # deleted while listing
                found.append(self._info(base, key, st, listing=True))
            return ListPage(keys=found, next_token=found[-1].key if more else None)

        return await self._run("list", run)

    async def close(self) -> None:
        return None
