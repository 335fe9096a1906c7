"""Incremental CRC-64/XZ, the ECMA-182 CRC that Aliyun OSS, Tencent COS and Huawei OBS expose.

Parameters: polynomial 0x42F0E1EBA9EA3693 (reflected 0xC96C5795D7870F42), init and xorout all
ones, reflected in and out; check value ``crc64ecma(b"123456789") == 0x995DC9BBDF1939FA``.
It is *not* AWS's CRC64NVME nor Azure's CRC64; never compare those with ``*-crc64ecma``.

``fastcrc`` does the work (its ``initial`` argument takes the previous CRC value, which is what
makes it incremental); a table-driven fallback keeps the module usable without it.
``crc64_combine`` joins the CRCs of two adjacent byte ranges, so multipart uploads can derive the
whole-object CRC from per-part CRCs without reading the data again.
"""

from __future__ import annotations

from collections.abc import Callable

_POLY_REFLECTED = 0xC96C5795D7870F42
_MASK = (1 << 64) - 1

CHECK_VALUE = 0x995DC9BBDF1939FA  # crc64ecma(b"123456789")

Buffer = bytes | bytearray | memoryview


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc64_python(data: Buffer, crc: int = 0) -> int:
    """Pure-Python CRC-64/XZ of ``data`` continuing from the CRC value ``crc`` (0 to start)."""
    value = crc ^ _MASK
    table = _TABLE
    for byte in bytes(data):
        value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
    return value ^ _MASK


def _load_fast() -> Callable[[Buffer, int], int] | None:
    try:
        from fastcrc import crc64 as fast
    except ImportError:  # pragma: no cover - fastcrc is a declared dependency
        return None
    xz = fast.xz
    # Only trust fastcrc if its ``initial`` continues a previous CRC, as this module needs.
    if xz(b"6789", initial=xz(b"12345")) != CHECK_VALUE:  # pragma: no cover
        return None

    def run(data: Buffer, crc: int) -> int:
        return int(xz(data, initial=crc))

    return run


_fast = _load_fast()


def crc64ecma(data: Buffer, crc: int = 0) -> int:
    """CRC-64/XZ of ``data``; pass a previous result as ``crc`` to continue over more data."""
    if _fast is not None:
        return _fast(data, crc)
    return crc64_python(data, crc)  # pragma: no cover


class Crc64:
    """Running CRC-64/XZ: ``update()`` with consecutive chunks, read ``value`` at any point.

    >>> c = Crc64(); c.update(b"12345"); c.update(b"6789"); hex(c.value)
    '0x995dc9bbdf1939fa'
    """

    __slots__ = ("_length", "_value")

    def __init__(self, data: Buffer = b"") -> None:
        self._value = 0
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: Buffer) -> None:
        """Feed the next chunk of bytes."""
        self._value = crc64ecma(data, self._value)
        self._length += len(data)

    @property
    def value(self) -> int:
        """CRC of everything fed so far (0 for no data)."""
        return self._value

    @property
    def length(self) -> int:
        """Number of bytes fed so far."""
        return self._length

    def copy(self) -> Crc64:
        other = Crc64()
        other._value = self._value
        other._length = self._length
        return other


def _gf2_times(matrix: list[int], vector: int) -> int:
    total = 0
    index = 0
    while vector:
        if vector & 1:
            total ^= matrix[index]
        vector >>= 1
        index += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc64_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of ``A + B`` from ``crc1 = CRC(A)``, ``crc2 = CRC(B)`` and ``len2 = len(B)``.

    zlib's ``crc32_combine`` method (apply ``len2`` zero bytes to ``crc1`` by repeated squaring
    of the one-zero-bit operator), O(log len2) 64x64 GF(2) matrix products.
    """
    if len2 < 0:
        raise ValueError("len2 must be >= 0")
    if len2 == 0:
        return crc1
    odd = [_POLY_REFLECTED] + [1 << n for n in range(63)]  # operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # first pass: one zero byte
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return (crc1 ^ crc2) & _MASK
