"""Facts about many keys of one bucket from a listing instead of one HEAD per key.

A claimed batch of keys of one task usually shares a prefix (an event names keys of one
upload, a backfill walks a folder). On an S3 server one listed key costs a small fraction of a
HEAD (SeaweedFS here: 0.018 ms of CPU against 0.23 ms), so one ListObjectsV2 of the keys'
common prefix can stand in for their HEADs, as long as the listing is dense: it is asked for at
most ``DENSITY`` times as many keys as the batch holds, and a key it cannot settle is simply
left to its own HEAD.

What a listing settles:

* a key it lists: size, last-modified, ETag and storage class (no Content-Type, no user
  metadata, no CRC: callers that need those still HEAD);
* a key it does not list is *absent* only when the listing proves it: the listing of the prefix
  ran to its end, or (for a store that lists in UTF-8 byte order) it went past the key. A store
  that walks directories depth-first, each directory in name order (SeaweedFS), lists the keys
  directly inside one directory in key order: for a batch of such keys, a listed key of the same
  directory past the wanted one proves it absent too.

Anything else (listing failed, too sparse, a store listing in another order) is "unknown".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from omsync.stores.base import ObjectInfo, ObjectStore, StoreError

log = logging.getLogger("omsync.engine.prefetch")

DENSITY = 8           # listed keys allowed per wanted key
MIN_KEYS = 4          # below this many keys, HEADs are as cheap as a listing
MAX_LISTED = 1000     # one page at most


class Absent:
    """The listing proved that the key does not exist."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent()

Known = ObjectInfo | Absent
"""A listed object, or proof of its absence."""


@dataclass(frozen=True)
class Listing:
    """What one listing settled: ``known[key]`` for every key it settled."""

    known: dict[str, Known]
    listed: int


def common_prefix(keys: Sequence[str]) -> str:
    """The longest string every key starts with."""
    # Character by character on purpose: keys are names, not paths.
    return os.path.commonprefix(list(keys)) if keys else ""  # noqa: RUF071


async def list_facts(store: ObjectStore, bucket: str, keys: Sequence[str], *, absence: bool = True) -> Listing:
    """Settle as many of ``keys`` (of ``bucket``) as one dense listing can.

    ``absence``: whether proofs of absence are wanted (the destination's side). Without them
    (the source's side, where a missing key is rare and its own HEAD reports it) the listing
    starts right before the first key and asks for little more than the keys, even on a store
    that does not list in key order. Never raises: a failed listing settles nothing (each key
    then gets its own HEAD, which reports the error properly)."""
    wanted = set(keys)
    if len(wanted) < MIN_KEYS:
        return Listing({}, 0)
    ordered = sorted(wanted)
    prefix = common_prefix(ordered)
    capabilities = store.capabilities
    in_order = capabilities.lists_in_key_order
    # Keys directly inside one directory, on a store listing each directory in name order:
    # in key order among themselves, whatever the listing puts between them.
    directory: str | None = None
    if not in_order and capabilities.lists_directories_in_name_order:
        candidate = prefix[:prefix.rfind("/") + 1]
        if all("/" not in key[len(candidate):] for key in ordered):
            directory, in_order = candidate, True
    # An exhaustive listing of the prefix is the only proof of absence a store listing in
    # another order can give: it may be asked for many more keys than wanted.
    exhaustive = absence and not in_order
    limit = min(MAX_LISTED, DENSITY * len(wanted) if exhaustive else len(wanted) + len(wanted) // 2 + 4)
    start_after: str | None = None
    if not exhaustive:
        # Every wanted key is >= the smallest one, and a proper prefix of a string sorts
        # before it: listing after ``first[:-1]`` cannot skip a wanted key (in key order).
        first = ordered[0]
        if len(first) - 1 >= len(prefix):
            start_after = first[:-1] or None
    try:
        page = await store.list(bucket, prefix=prefix, limit=limit, start_after=start_after)
    except StoreError as exc:
        log.debug("listing %r for %d keys failed (%s); falling back to HEADs", prefix, len(wanted), exc)
        return Listing({}, 0)
    known: dict[str, Known] = {}
    for info in page.keys:
        if info.key in wanted:
            known[info.key] = info
    if not in_order and not exhaustive:
        return Listing(known, len(page.keys))  # what was found, and no proof of anything else
    complete = page.next_token is None
    if complete:
        settled_up_to: str | None = None  # everything under the prefix after start_after was listed
    elif in_order and page.keys:
        settled_up_to = _last_in_order(page.keys, directory)
        if settled_up_to is None:
            return Listing(known, len(page.keys))
    else:
        return Listing(known, len(page.keys))
    for key in ordered:
        if key in known:
            continue
        if settled_up_to is None or key < settled_up_to:
            known[key] = ABSENT
    return Listing(known, len(page.keys))


def _last_in_order(listed: Sequence[ObjectInfo], directory: str | None) -> str | None:
    """The last listed key up to which the listing ran in key order: the last of the page, or,
    when only the keys directly inside ``directory`` come in key order, the last of those."""
    if directory is None:
        return listed[-1].key
    start = len(directory)
    for info in reversed(listed):
        if info.key.startswith(directory) and "/" not in info.key[start:]:
            return info.key
    return None
