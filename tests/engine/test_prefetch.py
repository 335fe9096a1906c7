"""Facts of many keys from one listing, and the memory budget of streamed copies."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from omsync.engine.copier import MemoryBudget
from omsync.engine.prefetch import ABSENT, MIN_KEYS, common_prefix, list_facts
from omsync.stores.base import ErrorKind, ListPage, ObjectInfo, PutOptions, StoreError
from omsync.stores.memory import MEMORY_CAPABILITIES, MemoryStore

BUCKET = "b"


class CountingStore(MemoryStore):
    """Counts listings and HEADs; optionally lists like a store that is not in key order."""

    def __init__(self, *, in_order: bool = True) -> None:
        super().__init__()
        self.capabilities = dataclasses.replace(MEMORY_CAPABILITIES, lists_in_key_order=in_order)
        self.listings: list[dict[str, object]] = []

    async def list(self, bucket: str, prefix: str = "", token: str | None = None, limit: int = 1000,
                   start_after: str | None = None) -> ListPage:
        self.listings.append({"prefix": prefix, "limit": limit, "start_after": start_after})
        return await super().list(bucket, prefix, token, limit, start_after=start_after)


async def filled(store: MemoryStore, keys: list[str]) -> None:
    store.create_bucket(BUCKET)
    for key in keys:
        await store.put(BUCKET, key, key.encode(), PutOptions())


async def test_one_listing_settles_present_and_absent_keys() -> None:
    store = CountingStore()
    await filled(store, [f"dir/{i:03d}" for i in range(0, 40, 2)] + ["dir-other", "dir/zz"])
    wanted = [f"dir/{i:03d}" for i in range(10, 20)]
    result = await list_facts(store, BUCKET, wanted)
    assert len(store.listings) == 1
    assert store.listings[0]["prefix"] == "dir/01"
    for i in range(10, 20):
        fact = result.known[f"dir/{i:03d}"]
        if i % 2 == 0:
            assert isinstance(fact, ObjectInfo) and fact.size == len(f"dir/{i:03d}")
        else:
            assert fact is ABSENT


async def test_a_sparse_listing_settles_only_what_it_saw() -> None:
    store = CountingStore()
    # 200 keys between the wanted ones: more than the listing may read for 4 keys.
    await filled(store, [f"k/{i:04d}" for i in range(200)])
    wanted = ["k/0000", "k/0001", "k/0199x", "k/0199y"]
    result = await list_facts(store, BUCKET, wanted)
    assert isinstance(result.known["k/0000"], ObjectInfo)
    assert isinstance(result.known["k/0001"], ObjectInfo)
    assert "k/0199x" not in result.known and "k/0199y" not in result.known  # left to their HEADs


async def test_a_store_listing_out_of_key_order_proves_absence_only_by_a_complete_listing() -> None:
    store = CountingStore(in_order=False)
    await filled(store, ["p/a", "p/b", "p/d"])
    result = await list_facts(store, BUCKET, ["p/a", "p/b", "p/c", "p/d"])
    assert store.listings[0]["start_after"] is None
    assert result.known["p/c"] is ABSENT

    crowded = CountingStore(in_order=False)
    await filled(crowded, [f"q/{i:04d}" for i in range(100)])
    sparse = await list_facts(crowded, BUCKET, ["q/0000", "q/0001", "q/0002", "q/zzzz"])
    assert "q/zzzz" not in sparse.known  # the listing was cut short: no proof either way


async def test_awkward_keys_are_settled_byte_exact() -> None:
    store = CountingStore()
    keys = ["a b/+%?#", "a b/+%?#x", "a b/\u00e9\u0301", "a b//./../c", "a b/\x01ctl"]
    await filled(store, keys[:3])
    result = await list_facts(store, BUCKET, keys)
    assert [k for k in keys if isinstance(result.known.get(k), ObjectInfo)] == keys[:3]
    assert [k for k in keys if result.known.get(k) is ABSENT] == keys[3:]


async def test_few_keys_or_a_failing_listing_settle_nothing() -> None:
    store = CountingStore()
    await filled(store, ["x/1", "x/2"])
    assert (await list_facts(store, BUCKET, ["x/1", "x/2"][: MIN_KEYS - 2])).known == {}
    assert store.listings == []

    class Failing(CountingStore):
        async def list(self, bucket: str, prefix: str = "", token: str | None = None, limit: int = 1000,
                       start_after: str | None = None) -> ListPage:
            raise StoreError(ErrorKind.THROTTLED, "slow down")

    assert (await list_facts(Failing(), BUCKET, [f"x/{i}" for i in range(8)])).known == {}


def test_common_prefix_is_by_character() -> None:
    assert common_prefix(["dir/001", "dir/0020"]) == "dir/00"
    assert common_prefix(["a", "b"]) == ""
    assert common_prefix([]) == ""


async def test_memory_budget_bounds_and_serves_in_order() -> None:
    budget = MemoryBudget(100)
    assert await budget.acquire(60) == 60
    order: list[str] = []

    async def take(name: str, amount: int) -> None:
        got = await budget.acquire(amount)
        order.append(name)
        await asyncio.sleep(0.01)
        budget.release(got)

    waiting = [asyncio.create_task(take("big", 80)), asyncio.create_task(take("small", 10))]
    await asyncio.sleep(0.01)
    assert order == []  # "small" would fit, but "big" came first
    budget.release(60)
    await asyncio.gather(*waiting)
    assert order == ["big", "small"]
    assert budget.used == 0
    assert await budget.acquire(10_000) == 100  # above the budget: granted the whole budget
    budget.release(100)


async def test_memory_budget_survives_cancelled_waiters() -> None:
    budget = MemoryBudget(10)
    held = await budget.acquire(10)
    waiter = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(held)
    assert budget.used == 0
    assert await budget.acquire(10) == 10


async def test_without_absence_a_store_out_of_key_order_is_listed_from_the_first_key() -> None:
    store = CountingStore(in_order=False)
    await filled(store, [f"s/{i:04d}" for i in range(200)])
    wanted = [f"s/{i:04d}" for i in range(100, 116)] + ["s/0150x"]
    result = await list_facts(store, BUCKET, wanted, absence=False)
    listing = store.listings[0]
    assert listing["start_after"] == "s/010" and int(str(listing["limit"])) < 40
    assert all(isinstance(result.known[k], ObjectInfo) for k in wanted[:-1])
    assert "s/0150x" not in result.known  # no proof of absence from such a listing
