"""Awkward object keys every store must keep byte-exact (or refuse by declared capability).

``KEY_CORPUS`` is a list of ``(id, key)``; ids are stable test ids. ``holdable`` tells which keys
a store can hold according to the ``Capabilities`` it declares.
"""

from __future__ import annotations

from omsync.stores.base import Capabilities


def _key_of_exactly_1024_bytes() -> str:
    """Multi-byte characters in segments short enough (< 255 bytes) for file-path stores."""
    segment = "é中😀" * 27  # 9 bytes per repetition -> 243 bytes
    key = "/".join([segment] * 4)  # 975 bytes
    key += "-" + "x" * (1024 - len(key.encode("utf-8")) - 1)
    assert len(key.encode("utf-8")) == 1024
    return key


KEY_CORPUS: list[tuple[str, str]] = [
    ("plain", "plain/file.txt"),
    ("space", "with space/file name.txt"),
    ("spaces-only", "   "),
    ("trailing-space", "trailing "),
    ("plus", "a+b"),
    ("plus-and-space", "a+ b"),
    ("percent", "100%"),
    ("percent-2F-literal", "a%2Fb"),
    ("percent-20-literal", "a%20b"),
    ("percent-utf8-literal", "%E4%B8%AD"),
    ("question", "what?x=1&y=2"),
    ("hash", "a#b"),
    ("ampersand-entity", "&amp;&lt;tag&gt;"),
    ("xml-tag", "<Key>x</Key>"),
    ("quotes", "it's \"quoted\""),
    ("backslash", "a\\b"),
    ("tilde-star", "~user/*glob*"),
    ("semicolon-comma", "a;b,c=d"),
    ("cjk", "中文/文件名.txt"),
    ("emoji", "emoji-😀🎉"),
    ("combining-mark", "e\u0301"),
    ("precomposed", "\u00e9"),
    ("rtl", "שלום/مرحبا"),
    ("zero-width", "a\u200bb"),
    ("nbsp", "a\u00a0b"),
    ("bom", "\ufeffbom"),
    ("ctrl-01", "c\x01d"),
    ("ctrl-1f", "us\x1fsep"),
    ("tab", "t\tab"),
    ("newline", "n\nl"),
    ("carriage-return", "r\rr"),
    ("del-7f", "d\x7fel"),
    ("double-slash", "x//y"),
    ("leading-slash", "/lead"),
    ("dot-slash", "./a"),
    ("dot-dot", "a/../b"),
    ("dot-segment", "a/./b"),
    ("only-dots", ".."),
    ("trailing-slash", "dir/"),
    ("url-like", "http://example.com/p?q=1"),
    ("reserved-fs-prefix", ".omsync/x"),
    ("dotfile", ".hidden"),
    ("long-segment-300", "s" * 300),
    ("exactly-1024-bytes", _key_of_exactly_1024_bytes()),
]

assert len({key for _, key in KEY_CORPUS}) == len(KEY_CORPUS), "corpus keys must be distinct"


def holdable(capabilities: Capabilities, *, multipart: bool = False) -> list[tuple[str, str]]:
    """The corpus entries a store with ``capabilities`` declares it can hold."""
    return [(kid, key) for kid, key in KEY_CORPUS
            if capabilities.key_problem(key, multipart=multipart) is None]


def refused(capabilities: Capabilities, *, multipart: bool = False) -> dict[str, str]:
    """``id -> reason`` for the corpus entries the store declares it cannot hold."""
    found: dict[str, str] = {}
    for kid, key in KEY_CORPUS:
        problem = capabilities.key_problem(key, multipart=multipart)
        if problem is not None:
            found[kid] = problem
    return found
