"""``S3Store``: every S3-compatible cloud through awscrt's native S3 client.

Requests are built by hand (``awscrt.http.HttpRequest``: method, percent-encoded path, query and
headers) and sent with ``S3Client.make_request(type=DEFAULT, operation_name=...)``; the CRT
client signs them (SigV4, ``UNSIGNED-PAYLOAD``) and runs connections, DNS and TLS on its own
native event-loop threads. Its callbacks run on those threads: they only collect the response
and hand it to the asyncio loop that made the request (``loop.call_soon_threadsafe``), where
the answer is parsed.

One CRT client (and its connection pool) is shared by every store with the same endpoint,
region, credentials and addressing style, in the whole process; the store takes a reference on
first use and ``close()`` drops it (the first store to create a client decides its pool size
and timeouts). All clients share one process-wide event-loop group and host resolver. The CRT
client's own retries are off: the engine retries, deciding on ``StoreError.kind``. The read
timeout is enforced here, as a deadline per request: ``read_timeout`` plus the time the bytes
it moves take at 256 KiB/s; a request past it is cancelled and fails as ``TRANSIENT``.

Keys travel byte-exact: the adapter percent-encodes every byte of a key except unreserved
characters and ``/`` (S3's own canonical form, so the signature matches what the server
computes), never normalises them, refuses up front (``UNSUPPORTED``) any key the store's
``Capabilities`` say the server would rename or reject, asks listings for URL-encoded keys (so
control characters survive the XML) and decodes them itself.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import email.utils
import hashlib
import io
import os
import re
import threading
import time
import weakref
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

from awscrt import auth as crt_auth
from awscrt import exceptions as crt_exceptions
from awscrt import http as crt_http
from awscrt import io as crt_io
from awscrt import s3 as crt_s3

from omsync.domain.model import Credentials
from omsync.stores import _common as common
from omsync.stores.base import (
    UNKNOWN_SIZE,
    Capabilities,
    ErrorKind,
    ListPage,
    ObjectInfo,
    PutOptions,
    StoreError,
)
from omsync.stores.profiles import ResolvedEndpoint, S3Dialect

DEFAULT_CAPABILITIES = Capabilities(
    server_side_copy=True, multipart=True, part_copy=True, crc64ecma=False, md5_etag=True,
)

EVENT_LOOP_THREADS = 1
"""Native event-loop threads shared by every CRT client of the process (HTTP, TLS, signing).
One thread keeps up with several thousand small requests a second; set before the first
request to change it."""

_MIN_GET_WINDOW = 4 * 1024 * 1024  # smallest ranged GET a stream issues (chunks are sliced from it)
_MIN_TRANSFER_RATE = 256 * 1024  # bytes/s a request's body must at least move at, on top of the read timeout

# -- error mapping ------------------------------------------------------------------------------

_CODE_KINDS: dict[str, ErrorKind] = {
    **dict.fromkeys(("NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NotFound", "NoSuchVersion"),
                    ErrorKind.NOT_FOUND),
    **dict.fromkeys(("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                     "AccountProblem", "InvalidSecurity", "ExpiredToken", "InvalidToken",
                     "TokenRefreshRequired", "RequestTimeTooSkewed", "Forbidden", "Unauthorized",
                     "AuthorizationHeaderMalformed", "MissingSecurityHeader"),
                    ErrorKind.PERMISSION),
    **dict.fromkeys(("SlowDown", "TooManyRequests", "Throttling", "ThrottlingException",
                     "RequestLimitExceeded", "ServiceUnavailable", "SlowDownRead", "SlowDownWrite"),
                    ErrorKind.THROTTLED),
    **dict.fromkeys(("InternalError", "RequestTimeout", "OperationAborted", "ServiceError",
                     "InternalServerError", "GatewayTimeout", "BadGateway"),
                    ErrorKind.TRANSIENT),
    **dict.fromkeys(("BadDigest", "XAmzContentSHA256Mismatch", "ContentSHA256Mismatch",
                     "IncompleteBody"),
                    ErrorKind.CORRUPT),
    **dict.fromkeys(("NotImplemented", "KeyTooLongError", "EntityTooLarge", "InvalidObjectState",
                     "MethodNotAllowed", "XNotImplemented"),
                    ErrorKind.UNSUPPORTED),
    **dict.fromkeys(("PreconditionFailed", "ConditionalRequestConflict"), ErrorKind.CONFLICT),
    **dict.fromkeys(("PathStyleDomainForbidden", "VirtualHostDomainRequired", "InvalidArgument",
                     "InvalidRequest", "InvalidRange", "EntityTooSmall", "InvalidPart",
                     "InvalidPartOrder", "MalformedXML", "InvalidBucketName", "InvalidStorageClass",
                     "InvalidDigest"),
                    ErrorKind.INVALID),
}


class S3ResponseFailure(Exception):
    """An S3 answer that is an error: a non-2xx status, or a 200 whose body is ``<Error>``."""

    def __init__(self, status: int | None, headers: Mapping[str, str], body: bytes | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


class RequestTimeout(Exception):
    """The request missed its deadline and was cancelled."""


# The CRT client classifies three S3 answers as retryable and, with its retries off, reports
# them by error name only, without the status, headers or body: 5xx but 501 (and 200 with an
# InternalError body), 503 (and 200 with SlowDown), and 400 with code RequestTimeout. Their S3 codes are inferred
# (a 503 ServiceUnavailable reads as SlowDown) and a Retry-After they carried is not seen.
_CRT_ANSWERS: dict[str, tuple[ErrorKind, str, int]] = {
    "AWS_ERROR_S3_SLOW_DOWN": (ErrorKind.THROTTLED, "SlowDown", 503),
    "AWS_ERROR_S3_INTERNAL_ERROR": (ErrorKind.TRANSIENT, "InternalError", 500),
    "AWS_ERROR_S3_REQUEST_TIMEOUT": (ErrorKind.TRANSIENT, "RequestTimeout", 400),
}
# CRT error names (``AwsCrtError.name``) that mean a bad checksum, or missing/unusable
# credentials; every other CRT failure without an HTTP answer is a network problem.
_CRT_CORRUPT = ("CHECKSUM",)
_CRT_PERMISSION = ("AWS_AUTH_", "CREDENTIALS")


def translate_error(exc: BaseException, operation: str, bucket: str, key: str | None = None) -> StoreError:
    """Map an S3 error answer / awscrt / OS exception to a ``StoreError``; messages carry the
    operation, bucket and key but never credentials."""
    where = f"{operation} {bucket}" + (f"/{key!r}" if key is not None else "")
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, crt_s3.S3ResponseError):
        exc = S3ResponseFailure(exc.status_code, _header_map(exc.headers or ()), exc.body)
    if isinstance(exc, S3ResponseFailure):
        code, message = _error_code(exc.body)
        status = exc.status
        code = code or str(status or "Unknown")
        kind = _kind(code, status)
        return StoreError(kind, f"{where}: {code} {message}".rstrip(), code=code,
                          retry_after=common.retry_after(exc.headers))
    if isinstance(exc, (RequestTimeout, asyncio.TimeoutError, TimeoutError)):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: timed out", code="Timeout")
    if isinstance(exc, crt_exceptions.AwsCrtError):
        name = exc.name or ""
        answer = _CRT_ANSWERS.get(name)
        if answer is not None:
            kind, code, status = answer
            return StoreError(kind, f"{where}: {code} (HTTP {status})", code=code)
        if any(part in name for part in _CRT_CORRUPT):
            return StoreError(ErrorKind.CORRUPT, f"{where}: {name}", code="ChecksumError")
        if any(part in name for part in _CRT_PERMISSION):
            return StoreError(ErrorKind.PERMISSION, f"{where}: {name}", code="NoCredentials")
        if "TIMEOUT" in name:
            return StoreError(ErrorKind.TRANSIENT, f"{where}: timed out ({name})", code="Timeout")
        return StoreError(ErrorKind.TRANSIENT, f"{where}: {name}: {exc.message}", code="ConnectionError")
    if isinstance(exc, (ConnectionError, OSError)):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: {type(exc).__name__}: {exc}",
                          code="ConnectionError")
    return StoreError(ErrorKind.TRANSIENT, f"{where}: {type(exc).__name__}: {exc}",
                      code=type(exc).__name__)


# -- XML ----------------------------------------------------------------------------------------

# XML 1.0 cannot carry most C0 control characters, not even as character references; a server
# echoing such a key (CreateMultipartUpload, CompleteMultipartUpload, error bodies, listings of
# servers that ignore encoding-type) would make the parser fail the whole call.
_INVALID_XML_REF = re.compile(
    rb"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F])|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));"
)
_INVALID_XML_RAW = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_REPLACEMENT = "\ufffd".encode()


def _sanitize_xml(body: bytes) -> bytes:
    """Replace characters XML 1.0 forbids by U+FFFD, so the document parses. Keys the adapter
    reads back come URL-encoded and never contain them; only a server sending raw keys where
    it should not gets such a key garbled instead of failing the whole call."""
    if b"&#" in body:
        body = _INVALID_XML_REF.sub(_REPLACEMENT, body)
    return _INVALID_XML_RAW.sub(_REPLACEMENT, body)


def _parse_xml(body: bytes) -> ET.Element | None:
    """The document's root, or ``None`` when there is no parsable body."""
    if not body or not body.strip():
        return None
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        pass
    try:
        return ET.fromstring(_sanitize_xml(body))
    except ET.ParseError:
        return None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _error_code(body: bytes | None) -> tuple[str | None, str]:
    """``(Code, Message)`` of an S3 ``<Error>`` body."""
    root = _parse_xml(body) if body else None
    if root is None:
        return None, ""
    return (root.findtext("{*}Code") or None), (root.findtext("{*}Message") or "")


def _is_error_document(root: ET.Element | None) -> bool:
    return root is not None and _local(root.tag) == "Error"


# -- small parsers ------------------------------------------------------------------------------


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _clean_etag(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().strip('"') or None


def _http_date(value: str | None) -> float | None:
    if value:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return None


def _iso_date(value: str | None) -> float | None:
    if value:
        try:
            return datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            pass
    return None


OFFLOAD_HASH_BYTES = 1024 * 1024  # above this, a body is hashed on a thread (hashlib lets go of the GIL)


async def _content_md5(data: bytes | bytearray | memoryview) -> str:
    """``_b64md5`` without holding up the event loop for a large body."""
    if len(data) > OFFLOAD_HASH_BYTES:
        return await asyncio.to_thread(_b64md5, data)
    return _b64md5(data)


def _b64md5(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def _q(value: str) -> str:
    """A query-string value, encoded as SigV4 wants it (everything but unreserved characters)."""
    return quote(value, safe="")


# -- the native client --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClientKey:
    endpoint_url: str
    region: str
    access_key: str = field(repr=False)
    secret_digest: str = field(repr=False)
    addressing_style: str


class _Shared:
    """One CRT client and what requests need to address it."""

    def __init__(self, client: Any, tls: bool) -> None:
        self.client = client
        self.tls = tls
        self.refs = 0


_LOCK = threading.Lock()
_SHARED: dict[_ClientKey, _Shared] = {}
_BOOTSTRAP: tuple[int, Any] | None = None  # (pid, ClientBootstrap): not inherited across fork


def _bootstrap() -> Any:
    """The process-wide event-loop group + host resolver (created on first use)."""
    global _BOOTSTRAP
    pid = os.getpid()
    if _BOOTSTRAP is None or _BOOTSTRAP[0] != pid:
        if _BOOTSTRAP is not None:  # a forked child: the parent's native threads are gone
            _SHARED.clear()
        group = crt_io.EventLoopGroup(num_threads=EVENT_LOOP_THREADS)
        resolver = crt_io.DefaultHostResolver(group)
        _BOOTSTRAP = (pid, crt_io.ClientBootstrap(group, resolver))
    return _BOOTSTRAP[1]


def shared_client_count(endpoint_url: str | None = None) -> int:
    """Open shared clients (for ``endpoint_url`` when given)."""
    with _LOCK:
        return sum(1 for key in _SHARED if endpoint_url is None or key.endpoint_url == endpoint_url.rstrip("/"))


async def close_shared_clients() -> None:
    """Drop every shared client (for application shutdown); requests still in flight finish."""
    with _LOCK:
        _SHARED.clear()


class _Inbox:
    """Finished requests handed from the CRT's threads to one asyncio loop.

    Waking a loop from another thread costs a write to its self-pipe and a GIL hand-over; under
    load many requests finish between two turns of the loop, so at most one wake-up is in
    flight and it resolves everything that arrived by then."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls: collections.deque[_Call] = collections.deque()
        self.lock = threading.Lock()
        self.scheduled = False

    def put(self, call: _Call) -> None:
        """From a native thread: ``call`` is finished."""
        self.calls.append(call)
        with self.lock:
            if self.scheduled:
                return
            self.scheduled = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        # Reset first: a call appended from now on is either popped below or schedules anew.
        with self.lock:
            self.scheduled = False
        calls = self.calls
        while calls:
            calls.popleft()._resolve()


_INBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    inbox = _INBOXES.get(loop)
    if inbox is None:
        inbox = _INBOXES[loop] = _Inbox(loop)
    return inbox


class _Call:
    """One request in flight. The CRT callbacks run on native threads: they only collect what
    arrives and hand the call to the loop's :class:`_Inbox`, which resolves ``future``."""

    __slots__ = ("chunks", "error", "error_body", "error_headers", "error_status", "future", "headers",
                 "inbox", "loop", "request", "status", "timed_out", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.inbox = _inbox(loop)
        self.future: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.error: BaseException | None = None
        self.error_status: int | None = None
        self.error_headers: list[tuple[str, str]] | None = None
        self.error_body: bytes | None = None
        self.request: Any = None
        self.timed_out = False
        self.timer: asyncio.TimerHandle | None = None

    # -- native threads --

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.status = status_code
        self.headers = headers

    def on_body(self, chunk: Any, offset: int, **_: Any) -> None:
        self.chunks.append(bytes(chunk))  # no copy: the CRT hands over ``bytes``

    def on_done(self, error: BaseException | None, error_headers: list[tuple[str, str]] | None,
                error_body: bytes | None, status_code: int | None, **_: Any) -> None:
        self.error = error
        self.error_headers = error_headers
        self.error_body = error_body
        self.error_status = status_code
        self.inbox.put(self)

    # -- the loop's thread --

    def _resolve(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.request = None
        if not self.future.done():
            self.future.set_result(None)

    def arm(self, timeout: float) -> None:
        self.timer = self.loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        if self.future.done():
            return
        self.timed_out = True
        if self.request is not None:
            self.request.cancel()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        request, self.request = self.request, None
        if request is not None:
            request.cancel()

    def raise_for_failure(self) -> None:
        """Raise what ended the request, if it failed (called on the loop's thread)."""
        if self.timed_out:
            raise RequestTimeout()
        error = self.error
        if error is None:
            return
        if isinstance(error, crt_s3.S3ResponseError):
            raise S3ResponseFailure(self.error_status, _header_map(self.error_headers or ()),
                                    self.error_body)
        raise error

    def body(self) -> bytes:
        chunks = self.chunks
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class S3Store:
    """An S3-compatible endpoint with one set of credentials.

    Construct directly for tests and generic endpoints, or with ``for_endpoint`` from a
    ``ResolvedEndpoint``. ``capabilities`` declares what the server can hold and do (the
    contract suite skips by it; the store refuses keys it rules out); ``dialect`` how it
    speaks (CRC-64 headers, listing encoding and API version, Content-MD5).
    """

    def __init__(
        self,
        endpoint_url: str,
        credentials: Credentials,
        *,
        region: str = "us-east-1",
        addressing_style: str = "path",
        capabilities: Capabilities = DEFAULT_CAPABILITIES,
        dialect: S3Dialect = S3Dialect(),
        max_pool_connections: int = 32,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if addressing_style not in ("path", "virtual", "auto"):
            raise ValueError(f"addressing_style must be path, virtual or auto, not {addressing_style!r}")
        if dialect.list_api not in (1, 2):
            raise ValueError("list_api must be 1 or 2")
        self.endpoint_url = endpoint_url.rstrip("/")
        split = urlsplit(self.endpoint_url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"endpoint must be an http:// or https:// URL, not {endpoint_url!r}")
        self._tls = split.scheme == "https"
        self._netloc = split.netloc.rpartition("@")[2]
        self._base_path = split.path.rstrip("/")
        self.region = region
        self.addressing_style = addressing_style
        self.capabilities = capabilities
        self.dialect = dialect
        self.crc64_headers = tuple(h.lower() for h in dialect.crc64_headers)
        self.url_encoded_listing = dialect.url_encoded_listing
        self.list_api = dialect.list_api
        self.send_content_md5 = dialect.send_content_md5
        self.max_pool_connections = max_pool_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._credentials = credentials
        self._key: _ClientKey | None = None
        self._client_obj: _Shared | None = None

    @classmethod
    def for_endpoint(
        cls,
        resolved: ResolvedEndpoint,
        credentials: Credentials,
        *,
        max_pool_connections: int = 32,
        timeout: float = 60.0,
        connect_timeout: float | None = None,
        capabilities: Capabilities | None = None,
    ) -> S3Store:
        """A store for a resolved endpoint, with the profile's dialect and capabilities (narrowed
        by the override's ``#quirks``; ``capabilities`` replaces them entirely). ``timeout`` is
        the read timeout; the connect timeout defaults to ``min(timeout, 10)``."""
        return cls(
            resolved.url,
            credentials,
            region=resolved.region,
            addressing_style=resolved.addressing_style,
            capabilities=capabilities or resolved.capabilities(),
            dialect=resolved.dialect(),
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout if connect_timeout is not None else min(timeout, 10.0),
            read_timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint_url!r}, region={self.region!r})"

    # -- client -----------------------------------------------------------------------------

    def _client(self) -> _Shared:
        shared = self._client_obj
        if shared is not None:
            return shared
        key = _ClientKey(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key=self._credentials.access_key,
            secret_digest=hashlib.sha256(self._credentials.secret_key.encode()).hexdigest(),
            addressing_style=self.addressing_style,
        )
        with _LOCK:
            bootstrap = _bootstrap()
            shared = _SHARED.get(key)
            if shared is None:
                shared = _SHARED[key] = _Shared(self._new_client(bootstrap), self._tls)
            shared.refs += 1
        self._key = key
        self._client_obj = shared
        return shared

    def _new_client(self, bootstrap: Any) -> Any:
        provider = crt_auth.AwsCredentialsProvider.new_static(
            self._credentials.access_key, self._credentials.secret_key)
        signing = crt_s3.create_default_s3_signing_config(region=self.region, credential_provider=provider)
        tls_options = None
        if self._tls:
            ca_bundle = os.environ.get("AWS_CA_BUNDLE")
            if ca_bundle:
                context_options = crt_io.TlsContextOptions()
                context_options.override_default_trust_store_from_path(ca_filepath=ca_bundle)
                tls_options = crt_io.ClientTlsContext(context_options).new_connection_options()
        return crt_s3.S3Client(
            bootstrap=bootstrap,
            region=self.region,
            signing_config=signing,
            tls_mode=crt_s3.S3RequestTlsMode.ENABLED if self._tls else crt_s3.S3RequestTlsMode.DISABLED,
            tls_connection_options=tls_options,
            max_active_connections_override=max(1, self.max_pool_connections),
            retry_config=crt_s3.S3RetryConfig(retry_mode=crt_s3.S3RetryMode.NONE),
            connect_timeout_ms=max(1, int(self.connect_timeout * 1000)),
        )

    async def close(self) -> None:
        """Drop this store's reference to the shared client; the last one releases it."""
        key, self._key, self._client_obj = self._key, None, None
        if key is None:
            return
        with _LOCK:
            shared = _SHARED.get(key)
            if shared is None:
                return
            shared.refs -= 1
            if shared.refs <= 0:
                del _SHARED[key]

    # -- requests ---------------------------------------------------------------------------

    def _address(self, bucket: str, key: str | None) -> tuple[str, str]:
        """``(Host header, path)`` of an object (or of the bucket when ``key`` is None)."""
        virtual = self.addressing_style == "virtual" or (
            self.addressing_style == "auto" and _dns_compatible(bucket, self._tls))
        encoded = "" if key is None else quote(key, safe="/~")
        if not bucket:  # the service itself (ListBuckets)
            return self._netloc, f"{self._base_path}/"
        if virtual:
            return f"{bucket}.{self._netloc}", f"{self._base_path}/{encoded}"
        if key is None:
            return self._netloc, f"{self._base_path}/{quote(bucket, safe='')}"
        return self._netloc, f"{self._base_path}/{quote(bucket, safe='')}/{encoded}"

    def _start(self, operation: str, method: str, bucket: str, key: str | None, query: str = "",
               headers: list[tuple[str, str]] | None = None,
               body: bytes | bytearray | memoryview | None = None, expect: int = 0) -> _Call:
        """Send one request (``expect``: bytes the answer should bring); the returned call
        resolves when the answer is complete."""
        shared = self._client()
        host, path = self._address(bucket, key)
        if query:
            path = f"{path}?{query}"
        pairs = [("Host", host)]
        if headers:
            pairs += headers
        stream = None
        if body is not None:
            pairs.append(("Content-Length", str(len(body))))
            stream = io.BytesIO(body)
        elif method in ("PUT", "POST"):
            pairs.append(("Content-Length", "0"))
        call = _Call(asyncio.get_running_loop())
        request = crt_http.HttpRequest(method, path, crt_http.HttpHeaders(pairs), stream)
        call.request = shared.client.make_request(
            type=crt_s3.S3RequestType.DEFAULT, operation_name=operation, request=request,
            on_headers=call.on_headers, on_body=call.on_body, on_done=call.on_done,
        )
        # The CRT client reports no progress of a DEFAULT request (it buffers the whole body
        # each way), so the deadline grows with the bytes the request moves.
        moved = len(body) if body is not None else expect
        call.arm(self.read_timeout + moved / _MIN_TRANSFER_RATE if moved else self.read_timeout)
        return call

    async def _finish(self, call: _Call) -> _Response:
        try:
            await call.future
        except asyncio.CancelledError:
            call.cancel()
            raise
        call.raise_for_failure()
        return _Response(call.status, _header_map(call.headers), call.body())

    async def _request(self, operation: str, label: str, method: str, bucket: str, key: str | None,
                       query: str = "", headers: list[tuple[str, str]] | None = None,
                       body: bytes | bytearray | memoryview | None = None,
                       error_key: str | None = None) -> _Response:
        """One request whose whole answer is wanted; every failure becomes a ``StoreError``."""
        try:
            return await self._finish(self._start(operation, method, bucket, key, query, headers, body))
        except StoreError:
            raise
        except Exception as exc:
            raise translate_error(exc, label, bucket, key if error_key is None else error_key) from exc

    def _xml(self, response: _Response, label: str, bucket: str, key: str | None) -> ET.Element:
        """The answer's XML document; an ``<Error>`` document (S3 answers some failures of
        CopyObject, UploadPartCopy and CompleteMultipartUpload with 200) raises."""
        root = _parse_xml(response.body)
        if root is None or _is_error_document(root):
            raise translate_error(S3ResponseFailure(response.status, response.headers, response.body),
                                  label, bucket, key)
        return root

    # -- helpers ----------------------------------------------------------------------------

    def _crc64(self, headers: Mapping[str, str]) -> int | None:
        for name in self.crc64_headers:
            value = headers.get(name)
            if value:
                try:
                    return int(value.strip()) & ((1 << 64) - 1)
                except ValueError:
                    continue
        return None

    @staticmethod
    def _metadata_headers(options: PutOptions, pairs: list[tuple[str, str]]) -> None:
        for name, value in options.metadata.items():
            if not (name.isascii() and value.isascii()):
                raise StoreError(ErrorKind.INVALID, "S3 user metadata must be US-ASCII",
                                 code="InvalidMetadata")
            pairs.append((f"x-amz-meta-{name}", value))

    def _write_headers(self, options: PutOptions) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        if options.content_type:
            pairs.append(("Content-Type", options.content_type))
        if options.metadata:
            self._metadata_headers(options, pairs)
        if options.storage_class:
            pairs.append(("x-amz-storage-class", options.storage_class))
        return pairs

    def _require(self, flag: bool, what: str) -> None:
        if not flag:
            raise StoreError(ErrorKind.UNSUPPORTED, f"{self.endpoint_url} does not offer {what}",
                             code="NotImplemented")

    @staticmethod
    def _copy_source(src_bucket: str, src_key: str) -> str:
        return quote(f"{src_bucket}/{src_key}", safe="/~")

    def _info_from_head(self, key: str, headers: Mapping[str, str]) -> ObjectInfo:
        metadata = {name[11:]: value for name, value in headers.items() if name.startswith("x-amz-meta-")}
        modified = _http_date(headers.get("last-modified"))
        try:
            size = int(headers.get("content-length") or 0)
        except ValueError:
            size = 0
        return ObjectInfo(
            key=key,
            size=size,
            last_modified=modified if modified is not None else time.time(),
            etag=_clean_etag(headers.get("etag")),
            content_type=headers.get("content-type"),
            metadata=metadata,
            crc64ecma=self._crc64(headers),
            storage_class=headers.get("x-amz-storage-class"),
            restore=headers.get("x-amz-restore"),
            from_head=True,
        )

    # -- the port ---------------------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """HEAD one object. A missing key or bucket is ``NOT_FOUND`` (HEAD has no error body,
        so both arrive as a bare 404)."""
        self.capabilities.check_key(key)
        response = await self._request("HeadObject", "head", "HEAD", bucket, key)
        return self._info_from_head(key, response.headers)

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """Stream ``[start, end)`` in chunks of at most ``chunk_size``, as a sequence of ranged
        GETs (at least 4 MiB each; the CRT client delivers an answer's body only when all of it
        has arrived), the next one in flight while a range is consumed: memory stays within two
        ranges. Later ranges carry ``If-Match`` with the first answer's ETag,
        so an object replaced mid-stream fails (``CONFLICT``) instead of being spliced.
        ``start`` equal to the object size yields nothing; beyond it is ``INVALID``. Closing the
        stream early cancels the request in flight."""
        self.capabilities.check_key(key)
        if start < 0 or (end is not None and end < start):
            raise StoreError(ErrorKind.INVALID, f"bad range [{start}, {end})", code="InvalidRange")
        if end is not None and end == start:
            await self.head(bucket, key)
            return
        piece = max(1, chunk_size)
        window = max(piece, _MIN_GET_WINDOW)
        position = start
        stop = end  # becomes known (the object's size or ``end``) with the first answer
        etag: str | None = None

        def fetch(offset: int) -> _Call:
            last = offset + window - 1
            if stop is not None:
                last = min(last, stop - 1)
            headers = [("Range", f"bytes={offset}-{last}")]
            if etag:
                headers.append(("If-Match", etag))
            return self._start("GetObject", "GET", bucket, key, headers=headers, expect=last - offset + 1)

        try:
            pending: _Call | None = fetch(position)
        except Exception as exc:
            raise translate_error(exc, "get", bucket, key) from exc
        try:
            while pending is not None:
                try:
                    response = await self._finish(pending)
                except StoreError:
                    raise
                except Exception as exc:
                    error = translate_error(exc, "get", bucket, key)
                    if error.code == "InvalidRange" and position == start:
                        # Unsatisfiable: empty when ``start`` is exactly the end of the object.
                        pending = None
                        info = await self.head(bucket, key)
                        if info.size == start:
                            return
                    raise error from exc
                pending = None
                data = response.body
                if response.status != 206:
                    # The server ignored Range and sent the whole object: slice it, no more requests.
                    if position == start:
                        whole = memoryview(data)[start:end]
                        for offset in range(0, len(whole), piece):
                            yield bytes(whole[offset:offset + piece])
                    return
                total = _range_total(response.headers.get("content-range"))
                if stop is None or (total is not None and total < stop):
                    stop = total
                if etag is None:
                    etag = response.headers.get("etag")
                if not data:
                    if stop is not None and position < stop:
                        raise StoreError(ErrorKind.TRANSIENT, f"get {bucket}/{key!r}: empty range answer",
                                         code="IncompleteRead")
                    return
                position += len(data)
                if stop is None or position < stop:
                    pending = fetch(position)
                if len(data) <= piece:
                    yield data
                else:
                    view = memoryview(data)
                    for offset in range(0, len(data), piece):
                        yield bytes(view[offset:offset + piece])
        finally:
            if pending is not None:
                pending.cancel()

    async def list_buckets(self) -> list[str]:
        """Names of the buckets these credentials own (ListBuckets, one request). Refused
        credentials raise ``StoreError(PERMISSION)``, like any other request."""
        response = await self._request("ListBuckets", "list buckets", "GET", "", None)
        root = self._xml(response, "list buckets", "", None)
        return [name.text or "" for name in root.iterfind("{*}Buckets/{*}Bucket/{*}Name")]

    async def restore(self, bucket: str, key: str, days: int = 1, tier: str = "Standard") -> bool:
        """RestoreObject: ask for a temporary readable copy of an archived object for ``days``.
        Returns True when a restore was started now, False when one is under way or done
        already (202 vs 200 / ``RestoreAlreadyInProgress``). A class that needs no restore is
        ``UNSUPPORTED`` (``InvalidObjectState``)."""
        self.capabilities.check_key(key)
        body = (f"<RestoreRequest><Days>{int(days)}</Days><GlacierJobParameters><Tier>{_xml_text(tier)}"
                "</Tier></GlacierJobParameters></RestoreRequest>").encode()
        headers = [("Content-Type", "application/xml"), ("Content-MD5", _b64md5(body))]
        try:
            response = await self._finish(self._start("RestoreObject", "POST", bucket, key, "restore",
                                                      headers, body))
        except S3ResponseFailure as exc:
            if exc.status == 202:
                return True  # the CRT takes any answer but 200/204/206 for a failure: 202 is Accepted
            error = translate_error(exc, "restore", bucket, key)
            if error.code == "RestoreAlreadyInProgress":
                return False
            raise error from exc
        except Exception as exc:
            raise translate_error(exc, "restore", bucket, key) from exc
        return response.status == 202

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        """PutObject. Sends ``Content-MD5`` (the caller's, or computed here) unless the profile
        says the server cannot check it. ``last_modified`` of the result is the response's
        ``Date`` (HEAD for the stored value)."""
        self.capabilities.check_key(key)
        headers = self._write_headers(options)
        if self.send_content_md5:
            headers.append(("Content-MD5", options.content_md5 or await _content_md5(data)))
        response = await self._request("PutObject", "put", "PUT", bucket, key, headers=headers, body=data)
        return ObjectInfo(
            key=key, size=len(data), last_modified=_http_date(response.headers.get("date")) or time.time(),
            etag=_clean_etag(response.headers.get("etag")), content_type=options.content_type,
            metadata={name.lower(): value for name, value in options.metadata.items()},
            crc64ecma=self._crc64(response.headers), storage_class=options.storage_class,
        )

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        self._require(self.capabilities.multipart, "multipart uploads")
        self.capabilities.check_key(key, multipart=True)
        headers = self._write_headers(options)
        response = await self._request("CreateMultipartUpload", "create_multipart", "POST", bucket, key,
                                       "uploads=", headers)
        root = self._xml(response, "create_multipart", bucket, key)
        upload_id = root.findtext("{*}UploadId")
        if not upload_id:
            raise StoreError(ErrorKind.TRANSIENT, f"create_multipart {bucket}/{key!r}: no UploadId in the answer",
                             code="MalformedAnswer")
        return upload_id

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                          data: bytes) -> str:
        self.capabilities.check_key(key)
        headers = [("Content-MD5", await _content_md5(data))] if self.send_content_md5 else []
        response = await self._request("UploadPart", "upload_part", "PUT", bucket, key,
                                       f"partNumber={part_number}&uploadId={_q(upload_id)}", headers, data)
        return _clean_etag(response.headers.get("etag")) or ""

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        """UploadPartCopy of source bytes ``[start, end)`` (the copy-source range is inclusive)."""
        self._require(self.capabilities.part_copy, "server-side part copy")
        self.capabilities.check_key(key)
        self.capabilities.check_key(src_key)
        if not 0 <= start < end:
            raise StoreError(ErrorKind.INVALID, f"bad copy range [{start}, {end})", code="InvalidRange")
        headers = [("x-amz-copy-source", self._copy_source(src_bucket, src_key)),
                   ("x-amz-copy-source-range", f"bytes={start}-{end - 1}")]
        response = await self._request("UploadPartCopy", "upload_part_copy", "PUT", bucket, key,
                                       f"partNumber={part_number}&uploadId={_q(upload_id)}", headers)
        root = self._xml(response, "upload_part_copy", bucket, key)
        return _clean_etag(root.findtext("{*}ETag")) or ""

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        """CompleteMultipartUpload, then HEAD: the result describes the stored object (size,
        ETag, CRC-64 when exposed), so callers need no HEAD of their own to verify."""
        self.capabilities.check_key(key)
        document = "".join(
            f'<Part><PartNumber>{number}</PartNumber><ETag>"{_xml_text(_clean_etag(etag) or "")}"</ETag></Part>'
            for number, etag in parts)
        body = f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{document}' \
               "</CompleteMultipartUpload>"
        response = await self._request("CompleteMultipartUpload", "complete_multipart", "POST", bucket, key,
                                       f"uploadId={_q(upload_id)}", [("Content-Type", "application/xml")],
                                       body.encode())
        self._xml(response, "complete_multipart", bucket, key)
        return await self.head(bucket, key)

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        self.capabilities.check_key(key)
        try:
            await self._request("AbortMultipartUpload", "abort_multipart", "DELETE", bucket, key,
                                f"uploadId={_q(upload_id)}")
        except StoreError as exc:
            if exc.code != "NoSuchUpload":
                raise

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        key_marker = upload_marker = None
        while True:
            query = [("prefix", prefix)]
            if self.url_encoded_listing:
                query.append(("encoding-type", "url"))
            if key_marker is not None:
                query.append(("key-marker", key_marker))
            if upload_marker is not None:
                query.append(("upload-id-marker", upload_marker))
            response = await self._request("ListMultipartUploads", "list_multipart_uploads", "GET", bucket,
                                           None, _query(query, "uploads="), error_key=prefix)
            root = self._xml(response, "list_multipart_uploads", bucket, prefix)
            decode = _decoder(root) if self.dialect.url_encoded_upload_listing else str
            for upload in root.iterfind("{*}Upload"):
                found.append((decode(upload.findtext("{*}Key") or ""), upload.findtext("{*}UploadId") or ""))
            if (root.findtext("{*}IsTruncated") or "").strip().lower() != "true":
                break
            next_key = root.findtext("{*}NextKeyMarker")
            next_id = root.findtext("{*}NextUploadIdMarker")
            if not next_key and not next_id:
                break
            key_marker = decode(next_key or "")
            upload_marker = next_id or ""
        return found

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        """CopyObject, answered from the copy's own result (no read-back): ETag and
        last-modified of the new object, ``size=UNKNOWN_SIZE``. Content type, metadata and
        storage class come from ``options`` (``x-amz-metadata-directive: REPLACE``), or the
        source's are kept (``COPY``) when ``options.copy_metadata`` (the storage class still
        applies)."""
        self._require(self.capabilities.server_side_copy, "server-side copy")
        self.capabilities.check_key(key)
        self.capabilities.check_key(src_key)
        headers = [("x-amz-copy-source", self._copy_source(src_bucket, src_key))]
        if options.copy_metadata:
            headers.append(("x-amz-metadata-directive", "COPY"))
            if options.storage_class:
                headers.append(("x-amz-storage-class", options.storage_class))
        else:
            headers.append(("x-amz-metadata-directive", "REPLACE"))
            headers += self._write_headers(options)
        response = await self._request("CopyObject", "server_copy", "PUT", bucket, key, headers=headers)
        etag, modified_text = self._copy_result(response, bucket, key)
        modified = _iso_date(modified_text) or _http_date(response.headers.get("date"))
        return ObjectInfo(
            key=key, size=UNKNOWN_SIZE, last_modified=modified or time.time(),
            etag=_clean_etag(etag),
            content_type=None if options.copy_metadata else options.content_type,
            metadata={} if options.copy_metadata else {n.lower(): v for n, v in options.metadata.items()},
            crc64ecma=self._crc64(response.headers), storage_class=options.storage_class,
        )

    def _copy_result(self, response: _Response, bucket: str, key: str) -> tuple[str | None, str | None]:
        """ETag and LastModified of a CopyObjectResult. The document is tiny and fixed, so it is
        read with two searches; anything else (an ``<Error>`` answered with 200, an odd
        document) takes the full parse."""
        body = response.body or b""
        if b"<Error" not in body:
            etag = _COPY_ETAG.search(body)
            modified = _COPY_MODIFIED.search(body)
            if etag is not None and modified is not None:
                with contextlib.suppress(ValueError):
                    return (_xml_unescape(etag.group(1).decode("utf-8", "replace")),
                            modified.group(1).decode("ascii", "replace"))
        root = self._xml(response, "server_copy", bucket, key)
        return root.findtext("{*}ETag"), root.findtext("{*}LastModified")

    async def delete(self, bucket: str, key: str) -> None:
        self.capabilities.check_key(key)
        await self._request("DeleteObject", "delete", "DELETE", bucket, key)

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000, start_after: str | None = None) -> ListPage:
        """One page (at most ``min(limit, 1000)`` keys). The token is opaque: a continuation
        token for ListObjectsV2, the last key for ListObjects. ``start_after`` (first page
        only) is ``start-after`` (ListObjectsV2) or ``marker`` (ListObjects)."""
        query: list[tuple[str, str]] = []
        if self.list_api == 2:
            query.append(("list-type", "2"))
            if token:
                query.append(("continuation-token", token))
            elif start_after:
                query.append(("start-after", start_after))
        elif token or start_after:
            query.append(("marker", token or start_after or ""))
        query += [("max-keys", str(max(1, min(limit, 1000)))), ("prefix", prefix)]
        if self.url_encoded_listing:
            query.append(("encoding-type", "url"))
        operation = "ListObjectsV2" if self.list_api == 2 else "ListObjects"
        response = await self._request(operation, "list", "GET", bucket, None, _query(query),
                                       error_key=prefix)
        fast = _scan_listing(response.body or b"", self.list_api)
        if fast is not None:
            return fast
        root = self._xml(response, "list", bucket, prefix)
        decode = _decoder(root)
        keys: list[ObjectInfo] = []
        for item in root.iterfind("{*}Contents"):
            name = size = modified = etag = storage = None
            for child in item:
                tag = child.tag
                tag = tag[tag.rfind("}") + 1:]
                if tag == "Key":
                    name = child.text
                elif tag == "Size":
                    size = child.text
                elif tag == "LastModified":
                    modified = child.text
                elif tag == "ETag":
                    etag = child.text
                elif tag == "StorageClass":
                    storage = child.text
            keys.append(ObjectInfo(
                key=decode(name or ""), size=int(size or 0), last_modified=_iso_date(modified) or 0.0,
                etag=_clean_etag(etag), storage_class=storage or None,
            ))
        next_token: str | None = None
        if (root.findtext("{*}IsTruncated") or "").strip().lower() == "true":
            if self.list_api == 2:
                next_token = root.findtext("{*}NextContinuationToken") or None
            else:
                marker = root.findtext("{*}NextMarker")
                next_token = decode(marker) if marker else (keys[-1].key if keys else None)
        return ListPage(keys=keys, next_token=next_token)


_LIST_ITEM = re.compile(rb"<Contents>(.*?)</Contents>", re.S)
_LIST_FIELDS = {name: re.compile(b"<" + name + b">([^<]*)</" + name + b">")
                for name in (b"Key", b"Size", b"LastModified", b"ETag", b"StorageClass", b"EncodingType",
                             b"IsTruncated", b"NextContinuationToken", b"NextMarker")}


def _field(pattern: bytes, text: bytes) -> str | None:
    found = _LIST_FIELDS[pattern].search(text)
    return None if found is None else _xml_unescape(found.group(1).decode("utf-8"))


def _scan_listing(body: bytes, list_api: int) -> ListPage | None:
    """A ListObjects(V2) page read with a few searches instead of an XML parse (a page is read
    for every batch of keys). ``None`` sends the caller to the full parse: an ``<Error>``
    document, namespaced element names, or anything it cannot account for."""
    if b"<Error" in body or b"<ListBucketResult" not in body or b":Key>" in body:
        return None
    head = body.split(b"<Contents>", 1)[0]
    tail = body.rsplit(b"</Contents>", 1)[-1] if b"</Contents>" in body else b""
    encoding = _field(b"EncodingType", head) or _field(b"EncodingType", tail) or ""
    decode: Any = unquote_plus if encoding.strip().lower() == "url" else str
    keys: list[ObjectInfo] = []
    try:
        for item in _LIST_ITEM.finditer(body):
            block = item.group(1)
            name = _field(b"Key", block)
            if name is None:
                return None
            keys.append(ObjectInfo(
                key=decode(name), size=int(_field(b"Size", block) or 0),
                last_modified=_iso_date(_field(b"LastModified", block)) or 0.0,
                etag=_clean_etag(_field(b"ETag", block)), storage_class=_field(b"StorageClass", block) or None,
            ))
    except (ValueError, UnicodeDecodeError):
        return None
    if len(keys) != body.count(b"<Contents>"):
        return None
    next_token: str | None = None
    if ((_field(b"IsTruncated", head) or _field(b"IsTruncated", tail) or "").strip().lower()) == "true":
        if list_api == 2:
            next_token = _field(b"NextContinuationToken", head) or _field(b"NextContinuationToken", tail) or None
        else:
            marker = _field(b"NextMarker", head) or _field(b"NextMarker", tail)
            next_token = decode(marker) if marker else (keys[-1].key if keys else None)
    return ListPage(keys=keys, next_token=next_token)


_COPY_ETAG = re.compile(rb"<ETag>([^<]*)</ETag>")
_COPY_MODIFIED = re.compile(rb"<LastModified>([^<]*)</LastModified>")


_XML_REFERENCE = re.compile(r"&(?:#(x[0-9a-fA-F]+|[0-9]+)|(amp|lt|gt|quot|apos));")
_XML_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _xml_reference(match: re.Match[str]) -> str:
    number, name = match.groups()
    if name is not None:
        return _XML_ENTITIES[name]
    return chr(int(number[1:], 16) if number[0] == "x" else int(number))


def _xml_unescape(text: str) -> str:
    """XML character data with its references resolved: the five entities and numeric
    references (``&#34;``, ``&#x22;``), exactly as an XML parser would."""
    return _XML_REFERENCE.sub(_xml_reference, text) if "&" in text else text


def _decoder(root: ET.Element) -> Any:
    """Keys are decoded only when the server says it encoded them: some servers ignore
    ``encoding-type`` (for some or all listings) and send raw keys."""
    if (root.findtext("{*}EncodingType") or "").strip().lower() == "url":
        return unquote_plus
    return str


def _query(params: list[tuple[str, str]], first: str = "") -> str:
    encoded = "&".join(f"{name}={_q(value)}" for name, value in params)
    if first:
        return f"{first}&{encoded}" if encoded else first
    return encoded


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _range_total(value: str | None) -> int | None:
    """The object size from ``Content-Range: bytes a-b/size``."""
    if value:
        total = value.rpartition("/")[2].strip()
        if total.isdigit():
            return int(total)
    return None


_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def _dns_compatible(bucket: str, tls: bool) -> bool:
    """Whether a bucket can be addressed as a virtual host (``auto`` addressing)."""
    if tls and "." in bucket:  # a dotted host does not match the endpoint's wildcard certificate
        return False
    return bool(_DNS_BUCKET.match(bucket)) and ".." not in bucket and not _IP_LIKE.match(bucket)


def _kind(code: str, status: int | None) -> ErrorKind:
    return common.kind_for(_CODE_KINDS, code, status)
