"""Streamed listing of what a migration task copies, one page at a time, resumable.

:func:`pages` yields the objects of a task's sources page by page, each page with the
checkpoint that follows it (source number, last key, byte offset in a list file). Nothing but
the current page is held, so memory stays flat whatever the object count; a restart passes the
last recorded checkpoint back in and the listing continues right after it.

* ``prefix``: each prefix is listed whole (``""`` is the whole bucket).
* ``object``: a key ending in ``/`` is listed as a prefix; any other key is looked up by a
  one-key listing and named even when absent (its copy then fails ``source_not_found``, as
  OMS reports a missing object).
* ``list``: object list files (one URL-encoded key per line, decoded like event keys) read from
  the list-file bucket through the destination's credentials; ``list_file_key`` ending in ``/``
  means every file under it, in key order.

Keys come from the store's ``list`` (ListObjectsV2 with ``encoding-type=url`` on S3, decoded to
the exact key), never normalised. Resuming a listing uses ``start-after`` the last key recorded;
a store that does not list in key order starts the interrupted source over instead (the ledger
drops the keys it already holds, so nothing is counted twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from omsync.domain.keys import KeyDecodeError, decode_event_key
from omsync.ledger.migration_tasks import Listed
from omsync.stores.base import ErrorKind, ObjectInfo, ObjectStore, StoreError

PAGE_SIZE = 1000
MAX_LINE_BYTES = 64 * 1024  # a list-file line longer than this is refused


@dataclass(frozen=True)
class Page:
    """Objects found and the checkpoint after them: continue at source ``index``, after key
    ``after`` (prefix/object sources) or at byte ``offset`` (list files); ``done`` when every
    source is exhausted."""

    entries: list[Listed]
    index: int
    after: str | None
    offset: int
    done: bool


def _entry(info: ObjectInfo, since: int | None) -> Listed:
    return Listed(info.key, info.size, skip=since is not None and info.last_modified < since)


async def pages(task_type: str, sources: Sequence[str], *, source: ObjectStore, bucket: str,
                index: int = 0, after: str | None = None, offset: int = 0, migrate_since: int | None = None,
                list_file: Mapping[str, str] | None = None, list_store: ObjectStore | None = None,
                page_size: int = PAGE_SIZE, plus_means_space: bool = True) -> AsyncIterator[Page]:
    """The task's objects from checkpoint ``(index, after, offset)`` on, a page at a time.

    Raises ``StoreError`` from the stores (the caller decides whether to retry) and
    ``StoreError(INVALID, code="invalid_list_file")`` for a list-file line that is not a key."""
    if task_type == "list":
        if list_file is None or list_store is None:
            raise StoreError(ErrorKind.INVALID, "a list task needs its list file", retryable=False,
                             code="invalid_list_file")
        async for page in _list_files(list_store, list_file, index, offset, page_size, plus_means_space):
            yield page
        return
    ordered = source.capabilities.lists_in_key_order
    count = len(sources)
    if index >= count:
        yield Page([], count, None, 0, True)
        return
    for number in range(index, count):
        name = sources[number]
        resume = after if number == index and ordered else None
        last = number == count - 1
        if task_type == "object" and not name.endswith("/"):
            probe = await source.list(bucket, name, None, 1)
            found = [info for info in probe.keys[:1] if info.key == name]
            entries = [_entry(found[0], migrate_since)] if found else [Listed(name, None)]
            yield Page(entries, number + 1, None, 0, last)
            continue
        token: str | None = None
        while True:
            listed = await source.list(bucket, name, token, page_size, start_after=resume if token is None else None)
            entries = [_entry(info, migrate_since) for info in listed.keys]
            token = listed.next_token
            if token is None:
                yield Page(entries, number + 1, None, 0, last)
                break
            yield Page(entries, number, listed.keys[-1].key if ordered and listed.keys else None, 0, False)


async def _files(store: ObjectStore, bucket: str, key: str) -> list[str]:
    if not key.endswith("/"):
        return [key]
    names: list[str] = []
    token: str | None = None
    while True:
        page = await store.list(bucket, key, token)
        names.extend(info.key for info in page.keys if not info.key.endswith("/"))
        token = page.next_token
        if token is None:
            return sorted(names, key=lambda name: name.encode("utf-8"))


async def _list_files(store: ObjectStore, list_file: Mapping[str, str], index: int, offset: int, page_size: int,
                      plus_means_space: bool) -> AsyncIterator[Page]:
    bucket = list_file["obs_bucket"]
    files = await _files(store, bucket, list_file["list_file_key"])
    if index >= len(files):
        yield Page([], len(files), None, 0, True)
        return
    for number in range(index, len(files)):
        last_file = number == len(files) - 1
        position = offset if number == index else 0
        buffer = b""
        entries: list[Listed] = []
        if position and position >= (await store.head(bucket, files[number])).size:
            # The checkpoint is the file's end (its last page was recorded, the move to the
            # next file not yet): a ranged read from there would be refused.
            yield Page([], number + 1, None, 0, last_file)
            continue
        async for chunk in store.get(bucket, files[number], start=position):
            buffer += chunk
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    if len(buffer) > MAX_LINE_BYTES:
                        raise _bad_line(files[number], position, "is longer than 64 KiB")
                    break
                line, buffer = buffer[:end], buffer[end + 1:]
                where = position
                position += end + 1
                key = _decode(line, files[number], where, plus_means_space)
                if key is not None:
                    entries.append(Listed(key, None))
                if len(entries) >= page_size:
                    yield Page(entries, number, None, position, False)
                    entries = []
        if buffer:
            key = _decode(buffer, files[number], position, plus_means_space)
            if key is not None:
                entries.append(Listed(key, None))
        yield Page(entries, number + 1, None, 0, last_file)


def _bad_line(file: str, offset: int, why: str) -> StoreError:
    return StoreError(ErrorKind.INVALID, f"list file {file!r}, line at byte {offset}: {why}", retryable=False,
                      code="invalid_list_file")


def _decode(line: bytes, file: str, offset: int, plus_means_space: bool) -> str | None:
    """The key a list-file line names, None for a blank line."""
    text = line[:-1] if line.endswith(b"\r") else line
    if not text.strip():
        return None
    try:
        raw = text.decode("utf-8")
        return decode_event_key(raw, plus_means_space=plus_means_space)
    except UnicodeDecodeError as exc:
        raise _bad_line(file, offset, "is not UTF-8") from exc
    except KeyDecodeError as exc:
        raise _bad_line(file, offset, exc.reason) from exc
