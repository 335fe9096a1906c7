"""Decoding of the object keys carried by CreateSyncEvents (``object_keys``).

Each element is the URL-encoded object key. By default a bare ``+`` means a space (form
encoding, as in S3-style event notifications and Java's ``URLDecoder``), so ``test+001.txt`` is
``test 001.txt`` and a literal plus is written ``%2B``. With ``plus_means_space=False`` a bare
``+`` stays a plus (RFC 3986 percent-decoding). Either way ``%XX`` escapes are decoded to bytes
and the bytes must be UTF-8. Keys are otherwise opaque: ``/``, ``.``/``..`` segments, repeated
slashes, a trailing ``/`` and control characters other than NUL are kept exactly.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_RAW_KEY_CHARS",
    "KeyDecodeError",
    "decode_event_key",
    "encode_key_for_event",
]

MAX_RAW_KEY_CHARS = 16384
"""Longest ``object_keys`` element accepted (characters, before decoding)."""

MAX_KEY_BYTES = 1024
"""Longest decoded key in UTF-8 bytes (the S3 limit)."""

_HEX = frozenset("0123456789abcdefABCDEF")


class KeyDecodeError(ValueError):
    """An event key cannot be decoded into a legal object key.

    ``raw`` is the element as received; ``reason`` is a stable code: ``raw_length``,
    ``bad_escape``, ``invalid_character`` (a lone surrogate), ``invalid_utf8``, ``too_long``,
    ``nul``.
    """

    def __init__(self, raw: str, reason: str, detail: str = "") -> None:
        shown = raw if len(raw) <= 80 else raw[:77] + "..."
        super().__init__(f"object key {shown!r}: {detail or reason}")
        self.raw = raw
        self.reason = reason


def _literal_bytes(raw: str, text: str, plus_means_space: bool) -> bytes:
    if plus_means_space:
        text = text.replace("+", " ")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise KeyDecodeError(raw, "invalid_character", "contains a lone surrogate code point") from None


def decode_event_key(raw: str, *, plus_means_space: bool = True) -> str:
    """Decode one ``object_keys`` element into the object key it names.

    ``+`` becomes a space when ``plus_means_space`` (default), then every ``%XX`` becomes the
    byte 0xXX; other characters stand for their UTF-8 bytes. Raises :class:`KeyDecodeError`
    when ``raw`` is not 1–16384 characters, a ``%`` is not followed by two hex digits, the
    bytes are not UTF-8, or the key is longer than 1024 UTF-8 bytes or contains NUL. (A
    non-empty ``raw`` never decodes to an empty key.)
    """
    if not 1 <= len(raw) <= MAX_RAW_KEY_CHARS:
        raise KeyDecodeError(raw, "raw_length", f"must be 1 to {MAX_RAW_KEY_CHARS} characters")
    pieces = raw.split("%")
    out = bytearray(_literal_bytes(raw, pieces[0], plus_means_space))
    for piece in pieces[1:]:
        escape = piece[:2]
        # int(x, 16) also accepts non-ASCII digits, hence the explicit set.
        if len(escape) != 2 or not _HEX.issuperset(escape):
            raise KeyDecodeError(raw, "bad_escape", "'%' must be followed by two hexadecimal digits")
        out.append(int(escape, 16))
        out += _literal_bytes(raw, piece[2:], plus_means_space)
    try:
        key = out.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyDecodeError(raw, "invalid_utf8", "decoded bytes are not valid UTF-8") from None
    if len(out) > MAX_KEY_BYTES:
        raise KeyDecodeError(raw, "too_long", f"decodes to more than {MAX_KEY_BYTES} UTF-8 bytes")
    if "\x00" in key:
        raise KeyDecodeError(raw, "nul", "contains a NUL character")
    return key


def encode_key_for_event(key: str) -> str:
    """Encode an object key for ``object_keys``: the inverse of :func:`decode_event_key`.

    Every character except ``A-Z a-z 0-9 _ . - ~`` is percent-encoded as UTF-8 (``+`` as
    ``%2B``, space as ``%20``), so the result decodes to ``key`` whichever ``+`` convention the
    server uses. Raises ``ValueError`` for a key that is not a legal object key (empty, over
    1024 UTF-8 bytes, NUL, or a lone surrogate).
    """
    try:
        data = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("object key contains a lone surrogate code point") from None
    if not data:
        raise ValueError("object key is empty")
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {MAX_KEY_BYTES} UTF-8 bytes")
    if b"\x00" in data:
        raise ValueError("object key contains a NUL character")
    return quote(data, safe="")
