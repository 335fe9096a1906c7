"""Decoding of CreateSyncEvents object keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omsync.domain.keys import (
    MAX_KEY_BYTES,
    MAX_RAW_KEY_CHARS,
    KeyDecodeError,
    decode_event_key,
    encode_key_for_event,
)


@pytest.mark.parametrize(
    ("raw", "form", "literal"),
    [
        ("test%2F001.txt", "test/001.txt", "test/001.txt"),
        ("test%2F002.txt", "test/002.txt", "test/002.txt"),
        ("test%2B001.txt", "test+001.txt", "test+001.txt"),
        ("test+001.txt", "test 001.txt", "test+001.txt"),
        ("a b+c", "a b c", "a b+c"),
        ("plain.txt", "plain.txt", "plain.txt"),
        ("%E7%9B%AE%E5%BD%95/%e6%96%87", "目录/文", "目录/文"),
        ("目录/文件.txt", "目录/文件.txt", "目录/文件.txt"),
        ("100%25", "100%", "100%"),
        ("%2525", "%25", "%25"),
        ("x//y", "x//y", "x//y"),
        ("./a", "./a", "./a"),
        ("a/../b", "a/../b", "a/../b"),
        ("dir/", "dir/", "dir/"),
        ("%3F%23?#", "?#?#", "?#?#"),
        ("%0A%09%7F%01", "\n\t\x7f\x01", "\n\t\x7f\x01"),
        ("+", " ", "+"),
        ("%20", " ", " "),
    ],
)
def test_decode_examples(raw: str, form: str, literal: str) -> None:
    assert decode_event_key(raw) == form
    assert decode_event_key(raw, plus_means_space=True) == form
    assert decode_event_key(raw, plus_means_space=False) == literal


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "raw_length"),
        ("a" * (MAX_RAW_KEY_CHARS + 1), "raw_length"),
        ("%", "bad_escape"),
        ("a%", "bad_escape"),
        ("a%2", "bad_escape"),
        ("%G0", "bad_escape"),
        ("%2G", "bad_escape"),
        ("%%41", "bad_escape"),
        ("%٣٣", "bad_escape"),  # non-ASCII digits are not hex digits
        ("% 1", "bad_escape"),
        ("%FF", "invalid_utf8"),
        ("%C3", "invalid_utf8"),
        ("%C3%28", "invalid_utf8"),
        ("%ED%A0%80", "invalid_utf8"),  # an encoded surrogate
        ("a\ud800b", "invalid_character"),
        ("%00", "nul"),
        ("a\x00b", "nul"),
        ("a" * (MAX_KEY_BYTES + 1), "too_long"),
        ("%41" * (MAX_KEY_BYTES + 1), "too_long"),
        ("é" * (MAX_KEY_BYTES // 2 + 1), "too_long"),
    ],
)
def test_decode_rejections(raw: str, reason: str) -> None:
    for plus in (True, False):
        with pytest.raises(KeyDecodeError) as err:
            decode_event_key(raw, plus_means_space=plus)
        assert err.value.reason == reason
        assert err.value.raw == raw


def test_length_limits_inclusive() -> None:
    assert decode_event_key("a" * MAX_KEY_BYTES) == "a" * MAX_KEY_BYTES
    assert decode_event_key("é" * (MAX_KEY_BYTES // 2)) == "é" * (MAX_KEY_BYTES // 2)
    # 16384 raw characters may still decode to a legal key.
    raw = "%41" * MAX_KEY_BYTES
    assert len(raw) <= MAX_RAW_KEY_CHARS
    assert decode_event_key(raw) == "A" * MAX_KEY_BYTES
    assert decode_event_key("a") == "a"


def test_error_message_truncates_long_raw() -> None:
    with pytest.raises(KeyDecodeError) as err:
        decode_event_key("a" * 5000)
    assert len(str(err.value)) < 200


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("test/001.txt", "test%2F001.txt"),
        ("test+001.txt", "test%2B001.txt"),
        ("test 001.txt", "test%20001.txt"),
        ("a-b_c.d~e", "a-b_c.d~e"),
        ("目", "%E7%9B%AE"),
        ("100%", "100%25"),
    ],
)
def test_encode_examples(key: str, encoded: str) -> None:
    assert encode_key_for_event(key) == encoded


@pytest.mark.parametrize("key", ["", "a\x00b", "a" * (MAX_KEY_BYTES + 1), "a\udc80"])
def test_encode_rejects_illegal_keys(key: str) -> None:
    with pytest.raises(ValueError):
        encode_key_for_event(key)


_key_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=300
).filter(lambda k: len(k.encode("utf-8")) <= MAX_KEY_BYTES)


@settings(max_examples=300, deadline=None)
@given(key=_key_text)
def test_round_trip_both_plus_modes(key: str) -> None:
    encoded = encode_key_for_event(key)
    assert encoded.isascii()
    assert "+" not in encoded and " " not in encoded
    assert decode_event_key(encoded, plus_means_space=True) == key
    assert decode_event_key(encoded, plus_means_space=False) == key


@settings(max_examples=200, deadline=None)
@given(raw=st.text(min_size=1, max_size=200))
def test_decode_never_fails_otherwise(raw: str) -> None:
    """Any input either decodes or raises KeyDecodeError (never another exception)."""
    for plus in (True, False):
        try:
            key = decode_event_key(raw, plus_means_space=plus)
        except KeyDecodeError:
            continue
        assert key and "\x00" not in key and len(key.encode()) <= MAX_KEY_BYTES
        assert decode_event_key(encode_key_for_event(key), plus_means_space=plus) == key


def test_round_trip_1024_byte_key() -> None:
    key = ("k/" * 512)[:MAX_KEY_BYTES]
    assert len(key.encode()) == MAX_KEY_BYTES
    assert decode_event_key(encode_key_for_event(key)) == key
