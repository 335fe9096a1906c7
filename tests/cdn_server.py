"""A test CDN: an HTTP server that serves one bucket of a real S3 server (moto) and checks one
URL-signing scheme, as a CDN configured for it would.

The signature checks are written here independently of omsync's signing code (from the same
published formulas), so a wrong formula on either side fails the tests. The path signed is the
request path exactly as received (percent-encoded); the object key is that path decoded.

Knobs for the tests: ``key`` (the CDN's authentication key), ``ttl`` (validity of schemes whose
timestamp is the signing time), ``clock_offset`` (seconds the CDN's clock is ahead: expires
signatures), ``stale`` (key → bytes served instead of the bucket's object, as an outdated
cache would). ``served`` lists the keys served, ``refused`` the paths answered 403.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

UTC8 = 8 * 3600


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


class CdnServer:
    """One CDN domain (``127.0.0.1:<port>``) in front of ``bucket``; use as a context manager."""

    def __init__(self, s3: Any, bucket: str, scheme: str, key: str = "", ttl: int = 1800) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.scheme = scheme
        self.key = key
        self.ttl = ttl
        self.clock_offset = 0.0
        self.stale: dict[str, bytes] = {}
        self.served: list[str] = []
        self.ranges: list[str] = []  # Range headers received
        self.refused: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def domain(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CdnServer:
        cdn = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                cdn.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- the checks -------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset

    def verify(self, raw: str) -> str | None:
        """The encoded object path of an accepted request, or None (refused)."""
        path, _, query = raw.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        now, key, ttl = self.now(), self.key, self.ttl
        scheme = self.scheme
        if scheme == "NONE":
            return path if not query else None
        if scheme in ("ALIYUN_OSS_A", "TENCENT_COS_A"):
            value = params.get("auth_key" if scheme == "ALIYUN_OSS_A" else "sign", "")
            parts = value.split("-")
            if len(parts) != 4 or not parts[0].isdigit():
                return None
            ts, rand, uid, digest = parts
            ok = digest == md5(f"{path}-{ts}-{rand}-{uid}-{key}") and int(ts) - 60 <= now <= int(ts) + ttl
            return path if ok else None
        if scheme in ("ALIYUN_OSS_B", "TENCENT_COS_B"):
            match = re.match(r"^/(\d{12})/([0-9a-f]{32})(/.*)$", path)
            if match is None or query:
                return None
            stamp, digest, path = match.groups()
            signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%d%H%M")) - UTC8
            ok = digest == md5(key + stamp + path) and signed_at - 120 <= now <= signed_at + 60 + ttl
            return path if ok else None
        if scheme in ("ALIYUN_OSS_C", "TENCENT_COS_C"):
            match = re.match(r"^/([0-9a-f]{32})/([0-9a-f]+)(/.*)$", path)
            if match is None or query:
                return None
            digest, stamp, path = match.groups()
            ok = digest == md5(key + path + stamp) and int(stamp, 16) - 60 <= now <= int(stamp, 16) + ttl
            return path if ok else None
        if scheme == "TENCENT_COS_D":
            stamp = params.get("t", "")
            ok = (re.fullmatch(r"[0-9a-f]+", stamp) is not None and params.get("sign") == md5(key + path + stamp)
                  and int(stamp, 16) - 60 <= now <= int(stamp, 16) + ttl)
            return path if ok else None
        if scheme in ("QINIU_PRIVATE_AUTHENTICATION", "KSYUN_PRIVATE_AUTHENTICATION"):
            deadline = params.get("t", "")
            digest = params.get("sign" if scheme.startswith("QINIU") else "k")
            ok = (re.fullmatch(r"[0-9a-f]+", deadline) is not None and digest == md5(key + path + deadline)
                  and now <= int(deadline, 16))
            return path if ok else None
        if scheme == "AZURE_SAS_TOKEN":
            expected = dict(parse_qsl(key.lstrip("?"), keep_blank_values=True))
            if params != expected:
                return None
            expiry = calendar.timegm(time.strptime(params["se"], "%Y-%m-%dT%H:%M:%SZ"))
            return path if now <= expiry else None
        raise AssertionError(f"unknown scheme {scheme}")

    # -- serving ----------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        # The target as sent: http.server collapses a leading '//' of ``request.path``.
        raw = request.requestline.split(" ")[1]
        path = self.verify(raw)
        if path is None:
            self.refused.append(raw)
            self.answer(request, 403, b"<Error>AccessDenied</Error>")
            return
        object_key = unquote(path[1:], errors="strict")
        self.served.append(object_key)
        stale = self.stale.get(object_key)
        if stale is not None:
            self.answer(request, 200, stale, etag=f'"{hashlib.md5(stale).hexdigest()}"')
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key}
        wanted = request.headers.get("Range")
        if wanted:
            kwargs["Range"] = wanted
            self.ranges.append(wanted)
        try:
            got = self.s3.get_object(**kwargs)
        except self.s3.exceptions.NoSuchKey:
            self.answer(request, 404, b"<Error>NoSuchKey</Error>")
            return
        body = got["Body"].read()
        status = got["ResponseMetadata"]["HTTPStatusCode"]
        extra = {"Content-Range": got["ContentRange"]} if status == 206 else {}
        self.answer(request, status, body, etag=got.get("ETag"), **extra)

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int, body: bytes, etag: str | None = None,
               **headers: str) -> None:
        request.send_response(status)
        request.send_header("Content-Length", str(len(body)))
        if etag:
            request.send_header("ETag", etag)
        for name, value in headers.items():
            request.send_header(name.replace("_", "-"), value)
        request.end_headers()
        request.wfile.write(body)
