"""URLs of source objects on a CDN domain, signed by the CDN vendor's URL-authentication scheme
(``source_cdn.authentication_type``).

Every scheme signs the object's **path as sent on the wire**: ``/`` followed by the key
percent-encoded as UTF-8 with only RFC 3986 unreserved characters (``A-Z a-z 0-9 - . _ ~``)
and ``/`` left as they are (so a space is ``%20``, ``+`` is ``%2B``, ``%`` is ``%25``, ``?`` is
``%3F``), and a ``.`` or ``..`` segment written ``%2E`` / ``%2E%2E`` so that no client or proxy
removes it as a dot segment. A CDN configured for the scheme compares the signature with the
path it received. ``key`` below is the ``authentication_key``; ``md5`` is the lower-case hex
MD5 of the UTF-8 string; ``now`` is the signing time (UNIX seconds, UTC).

=============================  ====================================================================
scheme                         URL (``P`` = encoded path)
=============================  ====================================================================
NONE                           ``P``
ALIYUN_OSS_A                   ``P?auth_key={ts}-{rand}-{uid}-{md5(P-ts-rand-uid-key)}``, ``ts`` =
                               ``now`` decimal, ``rand`` 32 hex characters, ``uid`` = ``0``
                               (Alibaba Cloud CDN, URL signing type A)
ALIYUN_OSS_B                   ``/{ts}/{md5(key + ts + P)}P``, ``ts`` = ``now`` as ``YYYYMMDDHHMM``
                               in UTC+8 (type B)
ALIYUN_OSS_C                   ``/{md5(key + P + ts)}/{ts}P``, ``ts`` = ``now`` in lower-case hex
                               (type C, path form)
TENCENT_COS_A                  ``P?sign={ts}-{rand}-{uid}-{md5(P-ts-rand-uid-key)}`` (Tencent Cloud
                               CDN hotlink protection type A; as Alibaba's A, parameter ``sign``)
TENCENT_COS_B                  ``/{ts}/{md5(key + ts + P)}P``, ``ts`` ``YYYYMMDDHHMM`` UTC+8 (type B)
TENCENT_COS_C                  ``/{md5(key + P + ts)}/{ts}P``, ``ts`` hex (type C)
TENCENT_COS_D                  ``P?sign={md5(key + P + ts)}&t={ts}``, ``ts`` hex (type D)
QINIU_PRIVATE_AUTHENTICATION   ``P?sign={md5(key + P + T)}&t={T}``, ``T`` = ``now + ttl`` (the
                               deadline) in lower-case hex (Qiniu CDN timestamp anti-leech)
KSYUN_PRIVATE_AUTHENTICATION   ``P?t={T}&k={md5(key + P + T)}``, ``T`` = deadline in hex
                               (Kingsoft Cloud CDN timestamp anti-leech)
AZURE_SAS_TOKEN                ``P?{key}``: the key is a SAS token (``sv=…&se=…&sig=…``), appended
                               as it is (a leading ``?`` is dropped)
=============================  ====================================================================

For the schemes whose timestamp is the signing time, the CDN decides how long a URL stays
valid (its configured validity period); omsync signs every request afresh, so a URL is used
within seconds of being signed. The formulas follow the vendors' published descriptions of
these schemes; the tests check them against an independent implementation in a test CDN.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote

from omsync.domain.model import CdnAuthentication, SourceCdn

__all__ = ["DEFAULT_TTL_SECONDS", "encode_path", "sign", "signed_url"]

DEFAULT_TTL_SECONDS = 1800  # deadline of the schemes that carry one (Qiniu, Kingsoft)
_UTC8 = 8 * 3600


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def encode_path(key: str) -> str:
    """The object's path on the CDN: ``/`` + the key percent-encoded (see the module docstring)."""
    segments = []
    for segment in key.split("/"):
        if segment in (".", ".."):
            segments.append("%2E" * len(segment))
        else:
            segments.append(quote(segment, safe=""))
    return "/" + "/".join(segments)


def _minute_utc8(now: int) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(now + _UTC8))


def _type_a(param: str) -> Callable[[str, str, int, int, str], str]:
    def sign(path: str, key: str, now: int, ttl: int, rand: str) -> str:
        uid = "0"
        digest = _md5(f"{path}-{now}-{rand}-{uid}-{key}")
        return f"{path}?{param}={now}-{rand}-{uid}-{digest}"
    return sign


def _type_b(path: str, key: str, now: int, ttl: int, rand: str) -> str:
    stamp = _minute_utc8(now)
    return f"/{stamp}/{_md5(key + stamp + path)}{path}"


def _type_c(path: str, key: str, now: int, ttl: int, rand: str) -> str:
    stamp = format(now, "x")
    return f"/{_md5(key + path + stamp)}/{stamp}{path}"


def _tencent_d(path: str, key: str, now: int, ttl: int, rand: str) -> str:
    stamp = format(now, "x")
    return f"{path}?sign={_md5(key + path + stamp)}&t={stamp}"


def _qiniu(path: str, key: str, now: int, ttl: int, rand: str) -> str:
    deadline = format(now + ttl, "x")
    return f"{path}?sign={_md5(key + path + deadline)}&t={deadline}"


def _ksyun(path: str, key: str, now: int, ttl: int, rand: str) -> str:
    deadline = format(now + ttl, "x")
    return f"{path}?t={deadline}&k={_md5(key + path + deadline)}"


def _azure_sas(path: str, key: str, now: int, ttl: int, rand: str) -> str:
    return f"{path}?{key.lstrip('?')}"


def _none(path: str, key: str, now: int, ttl: int, rand: str) -> str:
    return path


_SCHEMES: dict[CdnAuthentication, Callable[[str, str, int, int, str], str]] = {
    CdnAuthentication.NONE: _none,
    CdnAuthentication.ALIYUN_OSS_A: _type_a("auth_key"),
    CdnAuthentication.ALIYUN_OSS_B: _type_b,
    CdnAuthentication.ALIYUN_OSS_C: _type_c,
    CdnAuthentication.TENCENT_COS_A: _type_a("sign"),
    CdnAuthentication.TENCENT_COS_B: _type_b,
    CdnAuthentication.TENCENT_COS_C: _type_c,
    CdnAuthentication.TENCENT_COS_D: _tencent_d,
    CdnAuthentication.QINIU: _qiniu,
    CdnAuthentication.KSYUN: _ksyun,
    CdnAuthentication.AZURE_SAS: _azure_sas,
}


def sign(scheme: CdnAuthentication, key: str, object_key: str, *, now: float | None = None,
         ttl: int = DEFAULT_TTL_SECONDS, rand: str | None = None) -> str:
    """Path and query (no scheme or host) of ``object_key`` signed by ``scheme`` with ``key``.

    ``now`` defaults to the current time, ``rand`` (types A) to 32 random hex characters.
    """
    moment = int(time.time() if now is None else now)
    return _SCHEMES[scheme](encode_path(object_key), key, moment, ttl, rand or secrets.token_hex(16))


def signed_url(cdn: SourceCdn, object_key: str, *, now: float | None = None, ttl: int = DEFAULT_TTL_SECONDS) -> str:
    """The full URL of ``object_key`` on the task's CDN domain, signed now."""
    return f"{cdn.protocol}://{cdn.domain}" + sign(cdn.authentication_type, cdn.authentication_key or "",
                                                   object_key, now=now, ttl=ttl)
