"""CRC-64/XZ (ECMA-182) as OSS/COS/OBS compute it: check value, incremental, combine."""

from __future__ import annotations

import os
import random

import pytest

from omsync.stores.crc64 import CHECK_VALUE, Crc64, crc64_combine, crc64_python, crc64ecma


def test_check_value() -> None:
    assert crc64ecma(b"123456789") == 0x995DC9BBDF1939FA == CHECK_VALUE
    assert crc64_python(b"123456789") == CHECK_VALUE
    assert crc64ecma(b"") == 0


def test_fast_and_table_implementations_agree() -> None:
    data = os.urandom(10_000)
    assert crc64ecma(data) == crc64_python(data)


@pytest.mark.parametrize("seed", range(5))
def test_incremental_equals_one_shot(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(1, 200_000))
    cuts = sorted(rng.sample(range(len(data) + 1), k=min(6, len(data) + 1)))
    crc = Crc64()
    previous = 0
    for cut in [*cuts, len(data)]:
        crc.update(data[previous:cut])
        previous = cut
    assert crc.value == crc64ecma(data)
    assert crc.length == len(data)
    copy = crc.copy()
    copy.update(b"more")
    assert copy.value == crc64ecma(data + b"more")
    assert crc.value == crc64ecma(data)


def test_accepts_memoryview_and_bytearray() -> None:
    data = bytearray(b"123456789")
    assert Crc64(memoryview(data)).value == CHECK_VALUE
    assert Crc64(data).value == CHECK_VALUE


@pytest.mark.parametrize(("len_a", "len_b"), [(0, 0), (0, 17), (17, 0), (1, 1), (1000, 777), (5 << 20, 3)])
def test_combine_joins_adjacent_ranges(len_a: int, len_b: int) -> None:
    a, b = os.urandom(len_a), os.urandom(len_b)
    assert crc64_combine(crc64ecma(a), crc64ecma(b), len(b)) == crc64ecma(a + b)


def test_combine_rejects_negative_length() -> None:
    with pytest.raises(ValueError):
        crc64_combine(1, 2, -1)
