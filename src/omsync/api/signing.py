"""Verification of the ``SDK-HMAC-SHA256`` request signature sent by the Huawei Cloud SDKs.

The signer (``huaweicloudsdkcore.signer.Signer``) builds::

    CanonicalRequest = METHOD "\\n" CanonicalURI "\\n" CanonicalQuery "\\n"
                       CanonicalHeaders "\\n" SignedHeaders "\\n" PayloadHash
    StringToSign     = "SDK-HMAC-SHA256\\n" X-Sdk-Date "\\n" hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(SK, StringToSign))
    Authorization    = "SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b;c>, Signature=<hex>"

A server sees the request as it arrived on the wire, so this module rebuilds the canonical form
from the *raw* path and query string: percent-escapes are decoded fully and every path segment,
query name and query value is re-encoded with only ``A-Z a-z 0-9 _ . - ~`` left bare. Decoding
works on bytes, so any path or query the SDK can produce (spaces, ``+``, ``,``, ``%2F`` inside a
path parameter, non-ASCII text) canonicalises exactly as the SDK signed it, and byte sequences
that are not UTF-8 still canonicalise injectively instead of collapsing into U+FFFD.

Header values are expected as HTTP servers hand them over: the wire bytes decoded as ISO-8859-1
(Starlette, ``http.server``). The SDK sends UTF-8, so values are turned back into bytes and read
as UTF-8 before being canonicalised.

Nothing here imports a web framework; the API layer passes in method, raw path, raw query,
headers and body and maps :class:`SignatureError` to ``401 APIGW.0301``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "ALGORITHM",
    "DATE_FORMAT",
    "EMPTY_BODY_SHA256",
    "ParsedAuthorization",
    "SignatureError",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "compute_signature",
    "parse_authorization",
    "payload_hash",
    "string_to_sign",
    "verify_request",
]

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

_DATE_HEADER = "x-sdk-date"
_HOST_HEADER = "host"
_AUTH_HEADER = "authorization"
_CONTENT_SHA256_HEADER = "x-sdk-content-sha256"
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
# RFC 9110 token characters; the SDK only ever sends lower-case names.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_ACCESS_KEY_RE = re.compile(r"[^\s,=]+")


class SignatureError(Exception):
    """A request's signature could not be verified.

    ``reason`` is a stable machine code, one of: ``missing_authorization``,
    ``duplicate_header``, ``unsupported_algorithm``, ``malformed_authorization``,
    ``host_not_signed``, ``date_not_signed``, ``missing_signed_header``, ``missing_date``,
    ``invalid_date``, ``stale_date``, ``unknown_access_key``, ``unsigned_payload``,
    ``payload_hash_mismatch``, ``signature_mismatch``. The message never contains a secret.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedAuthorization:
    """The parts of an ``Authorization`` header in the SDK's format."""

    algorithm: str
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization:
    """Parse ``<ALGORITHM> Access=<AK>, SignedHeaders=<h1;h2>, Signature=<64 hex>``.

    The algorithm name is returned as found (checking it is :func:`verify_request`'s job).
    Raises :class:`SignatureError` (``malformed_authorization``) when a part is missing,
    repeated or unknown, a signed header name is empty or not a lower-case token, or the
    signature is not 64 hex digits.
    """
    algorithm, _, rest = value.strip().partition(" ")
    if not algorithm or not rest.strip():
        raise SignatureError("malformed_authorization", "Authorization header has no credential part")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, part_value = item.strip().partition("=")
        if not sep or name not in ("Access", "SignedHeaders", "Signature"):
            raise SignatureError("malformed_authorization", f"unexpected Authorization part {name[:40]!r}")
        if name in parts:
            raise SignatureError("malformed_authorization", f"Authorization part {name} is repeated")
        parts[name] = part_value.strip()
    missing = [n for n in ("Access", "SignedHeaders", "Signature") if n not in parts]
    if missing:
        raise SignatureError("malformed_authorization", f"Authorization lacks {', '.join(missing)}")
    access_key = parts["Access"]
    if not _ACCESS_KEY_RE.fullmatch(access_key):
        raise SignatureError("malformed_authorization", "Authorization has an empty or invalid Access")
    signed_headers = tuple(parts["SignedHeaders"].split(";"))
    if not all(_HEADER_NAME_RE.fullmatch(h) for h in signed_headers):
        raise SignatureError("malformed_authorization", "SignedHeaders must be lower-case header names")
    signature = parts["Signature"]
    if not _HEX64_RE.fullmatch(signature):
        raise SignatureError("malformed_authorization", "Signature must be 64 hexadecimal digits")
    return ParsedAuthorization(algorithm, access_key, signed_headers, signature.lower())


def _encode(data: bytes) -> str:
    # urllib's always-safe set is exactly A-Z a-z 0-9 _ . - ~, what the SDK leaves bare.
    return quote(data, safe="")


def canonical_uri(raw_path: str | bytes) -> str:
    """The SDK's CanonicalURI for a raw request path (percent-escapes as received).

    Decoded fully, split on ``/`` (so ``%2F`` separates segments), each segment re-encoded,
    and a trailing ``/`` appended when missing: ``/`` → ``/``, ``/v2`` → ``/v2/``.
    """
    segments = unquote_to_bytes(raw_path).split(b"/")
    uri = "/".join(_encode(segment) for segment in segments)
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(raw_query: str | bytes) -> str:
    """The SDK's CanonicalQueryString for a raw query string (without the leading ``?``).

    Pairs are split on ``&`` and the first ``=``, decoded, sorted by name then value and
    re-encoded (space → ``%20``, ``+`` → ``%2B``, ``,`` → ``%2C``); a name without ``=``
    gets an empty value. A bare ``+`` on the wire is read as a space, exactly as the
    application's query parser reads it (form encoding), so a signature covers the meaning the
    request is served with; the SDK always escapes both, so what it signs is unchanged.
    """
    raw = raw_query.encode("utf-8") if isinstance(raw_query, str) else raw_query
    pairs: list[tuple[bytes, bytes]] = []
    for piece in raw.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        pairs.append((unquote_to_bytes(name.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" "))))
    # Byte order of UTF-8 equals code-point order, which is what the SDK sorts by.
    pairs.sort()
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in pairs)


def _wire_text(value: str) -> str:
    """The header value as the SDK had it before sending (UTF-8 read from the wire bytes)."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value  # already decoded as Unicode text by the caller
    return raw.decode("utf-8", "surrogateescape")


def _header_values(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, list[str]] = {}
    for name, value in items:
        found.setdefault(name.lower(), []).append(value)
    return found


def canonical_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], signed_headers: Iterable[str]
) -> str:
    """``name:trimmed-value\\n`` for every signed header, in the order given.

    Header names are matched case-insensitively. Raises :class:`SignatureError`
    (``missing_signed_header``) when a signed header is absent and ``duplicate_header`` when
    it occurs more than once (its signed value would be ambiguous).
    """
    return _canonical_headers(_header_values(headers), signed_headers)


def _canonical_headers(values: dict[str, list[str]], signed_headers: Iterable[str]) -> str:
    lines = []
    for name in signed_headers:
        found = values.get(name.lower())
        if not found:
            raise SignatureError("missing_signed_header", f"signed header {name!r} is not in the request")
        if len(found) > 1:
            raise SignatureError("duplicate_header", f"signed header {name!r} occurs more than once")
        lines.append(f"{name}:{_wire_text(found[0]).strip()}\n")
    return "".join(lines)


def payload_hash(headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes) -> str:
    """The PayloadHash the SDK signs: empty body → SHA-256 of nothing; else the value of
    ``X-Sdk-Content-Sha256`` when present; else the hex SHA-256 of the body."""
    return _payload_hash(_header_values(headers), body)


def _payload_hash(values: dict[str, list[str]], body: bytes) -> str:
    if not body:
        return EMPTY_BODY_SHA256
    declared = values.get(_CONTENT_SHA256_HEADER)
    if declared:
        return declared[0].strip()
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    signed_headers: Iterable[str],
    body: bytes,
) -> str:
    """The CanonicalRequest (see the module docstring) for a request as received.

    ``headers`` may be a mapping or a list of (name, value) pairs (to expose repeated headers).
    Raises :class:`SignatureError` as :func:`canonical_headers` does.
    """
    return _canonical_request(method, raw_path, raw_query, _header_values(headers), signed_headers, body)


def _canonical_request(
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    values: dict[str, list[str]],
    signed_headers: Iterable[str],
    body: bytes,
) -> str:
    signed = list(signed_headers)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(raw_query),
            _canonical_headers(values, signed),
            ";".join(signed),
            _payload_hash(values, body),
        ]
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    """``SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex SHA-256 of the canonical request>``."""
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def compute_signature(secret_key: str, to_sign: str) -> str:
    """Lower-case hex HMAC-SHA256 of the string to sign, keyed with the UTF-8 bytes of the SK."""
    mac = hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()


@functools.lru_cache(maxsize=64)
def _parse_sdk_date(value: str) -> datetime:
    # Cached: every request of one second carries the same value, and strptime is slow.
    value = value.strip()
    if not _DATE_RE.fullmatch(value):
        raise SignatureError("invalid_date", "X-Sdk-Date must look like YYYYMMDDTHHMMSSZ")
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("invalid_date", "X-Sdk-Date is not a valid UTC time") from None


def verify_request(
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew_seconds: float = 900,
    *,
    allow_unsigned_payload: bool = False,
) -> str:
    """Verify an ``SDK-HMAC-SHA256`` signed request and return its access key.

    ``raw_path``/``raw_query`` are exactly as on the request line (escapes not decoded, no
    ``?``); ``headers`` as the server received them (values ISO-8859-1 decoded; a list of pairs
    lets repeated headers be detected); ``body`` the raw body bytes; ``lookup_secret`` maps an
    access key to its secret key or ``None``; ``now`` is the server time (naive means UTC).

    Checks, in order: an ``Authorization`` header is present and single; its algorithm is
    ``SDK-HMAC-SHA256`` (SM3, ECDSA, SM2 and V11 variants are rejected); it parses;
    ``host`` and ``x-sdk-date`` are among the signed headers; ``X-Sdk-Date`` is well formed
    and within ``max_skew_seconds`` of ``now`` either way; the access key is known; an
    ``X-Sdk-Content-Sha256`` header (used by the SDK instead of the body hash) is the body's
    real hash (``UNSIGNED-PAYLOAD`` only when ``allow_unsigned_payload``); finally the
    signature matches (constant-time comparison).

    Raises :class:`SignatureError` whose ``reason`` names the first failed check.
    """
    values = _header_values(headers)
    auth_values = values.get(_AUTH_HEADER)
    if not auth_values or not auth_values[0].strip():
        raise SignatureError("missing_authorization", "the request has no Authorization header")
    if len(auth_values) > 1:
        raise SignatureError("duplicate_header", "the request has more than one Authorization header")
    authorization = auth_values[0].strip()
    algorithm = authorization.split(None, 1)[0]
    if algorithm != ALGORITHM:
        raise SignatureError(
            "unsupported_algorithm", f"signing algorithm {algorithm[:40]!r} is not supported"
        )
    parsed = parse_authorization(authorization)

    signed = {h.lower() for h in parsed.signed_headers}
    if _HOST_HEADER not in signed:
        raise SignatureError("host_not_signed", "the Host header must be signed")
    if _DATE_HEADER not in signed:
        raise SignatureError("date_not_signed", "the X-Sdk-Date header must be signed")

    date_values = values.get(_DATE_HEADER)
    if not date_values:
        raise SignatureError("missing_date", "the request has no X-Sdk-Date header")
    if len(date_values) > 1:
        raise SignatureError("duplicate_header", "the request has more than one X-Sdk-Date header")
    signed_at = _parse_sdk_date(date_values[0])
    current = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if abs((current - signed_at).total_seconds()) > max_skew_seconds:
        raise SignatureError("stale_date", "X-Sdk-Date is too far from the server time")

    secret_key = lookup_secret(parsed.access_key)
    if secret_key is None:
        raise SignatureError("unknown_access_key", "the access key is not known")

    declared = values.get(_CONTENT_SHA256_HEADER)
    if body and declared:
        declared_hash = declared[0].strip()
        if declared_hash == _UNSIGNED_PAYLOAD:
            if not allow_unsigned_payload:
                raise SignatureError("unsigned_payload", "an unsigned payload is not accepted")
        elif declared_hash.lower() != hashlib.sha256(body).hexdigest():
            raise SignatureError("payload_hash_mismatch", "X-Sdk-Content-Sha256 does not match the body")

    canonical = _canonical_request(method, raw_path, raw_query, values, parsed.signed_headers, body)
    expected = compute_signature(secret_key, string_to_sign(canonical, date_values[0].strip()))
    if not hmac.compare_digest(expected.encode("ascii"), parsed.signature.encode("ascii")):
        raise SignatureError("signature_mismatch", "the request signature does not match")
    return parsed.access_key
