"""``S3Store``: every S3-compatible cloud through aiobotocore.

One aiobotocore client (and its connection pool) is shared by every store on the same event
loop with the same endpoint, region, credentials, addressing style and listing dialect; the
store takes a reference on first use and ``close()`` drops it (the first store to create a
client decides its pool size and timeouts). botocore's own retries are off
(``total_max_attempts=1``): the engine retries, deciding on ``StoreError.kind``. Flexible
checksums are only sent when an operation requires them (many S3-compatible stores reject the
CRC32 trailers newer botocore adds by default).

Keys travel byte-exact: the adapter never normalises them, refuses up front (``UNSUPPORTED``)
any key the store's ``Capabilities`` say the server would rename or reject, asks listings for
URL-encoded keys (so control characters survive the XML) and decodes them itself.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import exceptions as boto_exc
from botocore.handlers import set_list_objects_encoding_type_url

try:  # botocore's check for S3's "200 with an <Error> body"; wrapped below (private name)
    from botocore.handlers import _handle_200_error as _botocore_200_check
except ImportError:  # pragma: no cover - a botocore without it needs no wrapping
    _botocore_200_check = None

from omsync.domain.model import Credentials
from omsync.stores.base import Capabilities, ErrorKind, ListPage, ObjectInfo, PutOptions, StoreError
from omsync.stores.profiles import ResolvedEndpoint, S3Dialect

_T = TypeVar("_T")

DEFAULT_CAPABILITIES = Capabilities(
    server_side_copy=True, multipart=True, part_copy=True, crc64ecma=False, md5_etag=True,
)

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


def _kind_for(code: str, status: int | None) -> ErrorKind:
    if code in _CODE_KINDS:
        return _CODE_KINDS[code]
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status in (401, 403):
        return ErrorKind.PERMISSION
    if status in (429, 503):
        return ErrorKind.THROTTLED
    if status in (409, 412):
        return ErrorKind.CONFLICT
    if status == 501:
        return ErrorKind.UNSUPPORTED
    if status == 408 or (status is not None and status >= 500):
        return ErrorKind.TRANSIENT
    if status is not None and 400 <= status < 500:
        return ErrorKind.INVALID
    return ErrorKind.TRANSIENT


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def translate_error(exc: BaseException, operation: str, bucket: str, key: str | None = None) -> StoreError:
    """Map a botocore / aiohttp / OS exception to a ``StoreError``; messages carry the operation,
    bucket and key but never credentials."""
    where = f"{operation} {bucket}" + (f"/{key!r}" if key is not None else "")
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, boto_exc.ClientError):
        error = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        status = meta.get("HTTPStatusCode")
        headers = meta.get("HTTPHeaders", {}) or {}
        code = str(error.get("Code") or status or "Unknown")
        message = str(error.get("Message") or "")
        kind = _kind_for(code, status)
        return StoreError(kind, f"{where}: {code} {message}".rstrip(), code=code,
                          retry_after=_retry_after(headers))
    if isinstance(exc, (boto_exc.NoCredentialsError, boto_exc.PartialCredentialsError)):
        return StoreError(ErrorKind.PERMISSION, f"{where}: missing credentials", code="NoCredentials")
    if isinstance(exc, boto_exc.ParamValidationError):
        return StoreError(ErrorKind.INVALID, f"{where}: {exc}", code="ParamValidation")
    if isinstance(exc, boto_exc.ChecksumError):
        return StoreError(ErrorKind.CORRUPT, f"{where}: {exc}", code="ChecksumError")
    if isinstance(exc, (boto_exc.ConnectTimeoutError, boto_exc.ReadTimeoutError, asyncio.TimeoutError,
                        TimeoutError)):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: timed out", code="Timeout")
    if isinstance(exc, boto_exc.IncompleteReadError):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: {exc}", code="IncompleteRead")
    if isinstance(exc, (boto_exc.HTTPClientError, boto_exc.ConnectionError, aiohttp.ClientError,
                        ConnectionError, OSError)):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: {type(exc).__name__}: {exc}",
                          code="ConnectionError")
    return StoreError(ErrorKind.TRANSIENT, f"{where}: {type(exc).__name__}: {exc}",
                      code=type(exc).__name__)


# -- shared clients -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClientKey:
    endpoint_url: str
    region: str
    access_key: str = field(repr=False)
    secret_digest: str = field(repr=False)
    addressing_style: str
    url_encoded_listing: bool


class _Shared:
    def __init__(self, context: Any, client: Any) -> None:
        self.context = context
        self.client = client
        self.refs = 0


# Clients (and their aiohttp sessions) belong to one event loop; keyed weakly by the loop so a
# finished loop's entries disappear with it and are never handed to a new one.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, _Shared]] = (
    weakref.WeakKeyDictionary()
)
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _loop_clients() -> dict[_ClientKey, _Shared]:
    loop = asyncio.get_running_loop()
    clients = _SHARED.get(loop)
    if clients is None:
        clients = _SHARED[loop] = {}
    return clients


def shared_client_count(endpoint_url: str | None = None) -> int:
    """Open shared clients on the running loop (for ``endpoint_url`` when given)."""
    return sum(1 for key in _loop_clients() if endpoint_url is None or key.endpoint_url == endpoint_url)


async def close_shared_clients() -> None:
    """Close every shared client of the running event loop (for application shutdown)."""
    clients = _loop_clients()
    while clients:
        _, shared = clients.popitem()
        await shared.context.__aexit__(None, None, None)


# XML 1.0 cannot carry most C0 control characters, not even as character references; a server
# echoing such a key (CreateMultipartUpload, CompleteMultipartUpload, error bodies, listings of
# servers that ignore encoding-type) would make botocore's parser fail the whole call.
_INVALID_XML_REF = re.compile(
    rb"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F])|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));"
)
_INVALID_XML_RAW = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_REPLACEMENT = "\ufffd".encode()


def _sanitize_xml_body(response_dict: dict[str, Any], **_: Any) -> None:
    """Replace characters XML 1.0 forbids by U+FFFD before botocore parses a response, so the
    call succeeds. Keys the adapter reads back come URL-encoded and never contain them; only a
    server sending raw keys where it should not gets such a key garbled instead of failing the
    whole call (its quirk set declares that)."""
    body = response_dict.get("body")
    if not isinstance(body, bytes) or not body:
        return
    if b"&#" in body:
        body = _INVALID_XML_REF.sub(_REPLACEMENT, body)
    response_dict["body"] = _INVALID_XML_RAW.sub(_REPLACEMENT, body)


def _sanitize_then_check(operation_model: Any, response_dict: dict[str, Any], **kwargs: Any) -> None:
    _sanitize_xml_body(response_dict)
    if _botocore_200_check is not None:
        _botocore_200_check(operation_model=operation_model, response_dict=response_dict, **kwargs)


def _clean_etag(value: Any) -> str | None:
    if not value:
        return None
    return str(value).strip().strip('"') or None


def _headers(response: Mapping[str, Any]) -> Mapping[str, str]:
    meta = response.get("ResponseMetadata") or {}
    headers = meta.get("HTTPHeaders") or {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


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
        self._client_obj: Any = None

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

    async def _client(self) -> Any:
        if self._client_obj is not None:
            return self._client_obj
        loop = asyncio.get_running_loop()
        lock = _LOCKS.get(loop)
        if lock is None:
            lock = _LOCKS[loop] = asyncio.Lock()
        async with lock:
            if self._client_obj is not None:
                return self._client_obj
            clients = _loop_clients()
            key = _ClientKey(
                endpoint_url=self.endpoint_url,
                region=self.region,
                access_key=self._credentials.access_key,
                secret_digest=hashlib.sha256(self._credentials.secret_key.encode()).hexdigest(),
                addressing_style=self.addressing_style,
                url_encoded_listing=self.url_encoded_listing,
            )
            shared = clients.get(key)
            if shared is None:
                config = AioConfig(
                    signature_version="s3v4",
                    s3={"addressing_style": self.addressing_style},
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    max_pool_connections=self.max_pool_connections,
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                context = get_session().create_client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    aws_access_key_id=self._credentials.access_key,
                    aws_secret_access_key=self._credentials.secret_key,
                    config=config,
                )
                client = await context.__aenter__()
                # Sanitising must happen before botocore's own 200-with-error check, which
                # parses the body too and would turn a valid reply into a retryable 500.
                if _botocore_200_check is not None:
                    client.meta.events.unregister("before-parse.s3.*", _botocore_200_check)
                client.meta.events.register_first("before-parse.s3.*", _sanitize_then_check)
                if not self.url_encoded_listing:
                    # botocore adds encoding-type=url on its own and then decodes; a server that
                    # ignores the parameter would have its raw keys "decoded" into other keys.
                    for op in ("ListObjects", "ListObjectsV2"):
                        client.meta.events.unregister(f"before-parameter-build.s3.{op}",
                                                      set_list_objects_encoding_type_url)
                shared = clients[key] = _Shared(context, client)
            shared.refs += 1
            self._key = key
            self._client_obj = shared.client
            return shared.client

    async def close(self) -> None:
        """Drop this store's reference to the shared client; the last one closes it."""
        key, self._key, self._client_obj = self._key, None, None
        if key is None:
            return
        clients = _loop_clients()
        shared = clients.get(key)
        if shared is None:
            return
        shared.refs -= 1
        if shared.refs <= 0:
            del clients[key]
            await shared.context.__aexit__(None, None, None)

    async def _call(self, operation: str, bucket: str, key: str | None,
                    call: Callable[[Any], Awaitable[_T]]) -> _T:
        client = await self._client()
        try:
            return await call(client)
        except StoreError:
            raise
        except Exception as exc:
            raise translate_error(exc, operation, bucket, key) from exc

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

    def _write_params(self, options: PutOptions) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if options.content_type:
            params["ContentType"] = options.content_type
        if options.metadata:
            for name, value in options.metadata.items():
                if not (name.isascii() and value.isascii()):
                    raise StoreError(ErrorKind.INVALID, "S3 user metadata must be US-ASCII",
                                     code="InvalidMetadata")
            params["Metadata"] = dict(options.metadata)
        if options.storage_class:
            params["StorageClass"] = options.storage_class
        return params

    def _require(self, flag: bool, what: str) -> None:
        if not flag:
            raise StoreError(ErrorKind.UNSUPPORTED, f"{self.endpoint_url} does not offer {what}",
                             code="NotImplemented")

    @staticmethod
    def _decoder(response: Mapping[str, Any]) -> Callable[[str], str]:
        """Keys are decoded only when the server says it encoded them: some servers ignore
        ``encoding-type`` (for some or all listings) and send raw keys."""
        if str(response.get("EncodingType") or "").lower() == "url":
            return unquote_plus
        return str

    def _info_from_head(self, key: str, response: Mapping[str, Any]) -> ObjectInfo:
        headers = _headers(response)
        modified = response.get("LastModified")
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength") or 0),
            last_modified=modified.timestamp() if modified is not None else time.time(),
            etag=_clean_etag(response.get("ETag")),
            content_type=response.get("ContentType"),
            metadata={str(k).lower(): str(v) for k, v in (response.get("Metadata") or {}).items()},
            crc64ecma=self._crc64(headers),
            storage_class=response.get("StorageClass") or headers.get("x-amz-storage-class"),
            from_head=True,
        )

    # -- the port ---------------------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """HEAD one object. A missing key or bucket is ``NOT_FOUND`` (HEAD has no error body,
        so both arrive as a bare 404)."""
        self.capabilities.check_key(key)

        async def call(client: Any) -> ObjectInfo:
            response = await client.head_object(Bucket=bucket, Key=key)
            return self._info_from_head(key, response)

        return await self._call("head", bucket, key, call)

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """Stream ``[start, end)`` (a ranged GET unless the whole object is wanted) in chunks of
        about ``chunk_size``; memory stays within one chunk plus the socket buffer. ``start``
        equal to the object size yields nothing; beyond it is ``INVALID``."""
        self.capabilities.check_key(key)
        if start < 0 or (end is not None and end < start):
            raise StoreError(ErrorKind.INVALID, f"bad range [{start}, {end})", code="InvalidRange")
        if end is not None and end == start:
            await self.head(bucket, key)
            return
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if start > 0 or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        client = await self._client()
        try:
            response = await client.get_object(**params)
        except boto_exc.ClientError as exc:
            error = translate_error(exc, "get", bucket, key)
            if start > 0 and error.code == "InvalidRange":
                # Unsatisfiable: empty when ``start`` is exactly the end of the object.
                info = await self.head(bucket, key)
                if info.size == start:
                    return
            raise error from exc
        except Exception as exc:
            raise translate_error(exc, "get", bucket, key) from exc
        body = response["Body"]
        want = max(1, chunk_size)
        try:
            buffer = bytearray()
            while True:
                try:
                    piece = await body.read(want - len(buffer))
                except Exception as exc:
                    raise translate_error(exc, "get", bucket, key) from exc
                if not piece:
                    break
                buffer += piece
                if len(buffer) >= want:
                    yield bytes(buffer)
                    buffer.clear()
            if buffer:
                yield bytes(buffer)
        finally:
            body.close()

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        """PutObject. Sends ``Content-MD5`` (the caller's, or computed here) unless the profile
        says the server cannot check it. ``last_modified`` of the result is the response's
        ``Date`` (HEAD for the stored value)."""
        self.capabilities.check_key(key)
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data, **self._write_params(options)}
        if self.send_content_md5:
            params["ContentMD5"] = options.content_md5 or _b64md5(data)

        async def call(client: Any) -> ObjectInfo:
            response = await client.put_object(**params)
            headers = _headers(response)
            return ObjectInfo(
                key=key, size=len(data), last_modified=_date(headers), etag=_clean_etag(response.get("ETag")),
                content_type=options.content_type,
                metadata={name.lower(): value for name, value in options.metadata.items()},
                crc64ecma=self._crc64(headers), storage_class=options.storage_class,
            )

        return await self._call("put", bucket, key, call)

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        self._require(self.capabilities.multipart, "multipart uploads")
        self.capabilities.check_key(key, multipart=True)
        params = {"Bucket": bucket, "Key": key, **self._write_params(options)}

        async def call(client: Any) -> str:
            response = await client.create_multipart_upload(**params)
            return str(response["UploadId"])

        return await self._call("create_multipart", bucket, key, call)

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                          data: bytes) -> str:
        self.capabilities.check_key(key)
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id,
                                  "PartNumber": part_number, "Body": data}
        if self.send_content_md5:
            params["ContentMD5"] = _b64md5(data)

        async def call(client: Any) -> str:
            response = await client.upload_part(**params)
            return _clean_etag(response.get("ETag")) or ""

        return await self._call("upload_part", bucket, key, call)

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        """UploadPartCopy of source bytes ``[start, end)`` (``CopySourceRange`` is inclusive)."""
        self._require(self.capabilities.part_copy, "server-side part copy")
        self.capabilities.check_key(key)
        self.capabilities.check_key(src_key)
        if not 0 <= start < end:
            raise StoreError(ErrorKind.INVALID, f"bad copy range [{start}, {end})", code="InvalidRange")

        async def call(client: Any) -> str:
            response = await client.upload_part_copy(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=part_number,
                CopySource={"Bucket": src_bucket, "Key": src_key},
                CopySourceRange=f"bytes={start}-{end - 1}",
            )
            return _clean_etag((response.get("CopyPartResult") or {}).get("ETag")) or ""

        return await self._call("upload_part_copy", bucket, key, call)

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        """CompleteMultipartUpload, then HEAD: the result describes the stored object (size,
        ETag, CRC-64 when exposed), so callers need no HEAD of their own to verify."""
        self.capabilities.check_key(key)
        document = {"Parts": [{"PartNumber": number, "ETag": f'"{_clean_etag(etag) or ""}"'}
                              for number, etag in parts]}

        async def call(client: Any) -> None:
            await client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                   MultipartUpload=document)

        await self._call("complete_multipart", bucket, key, call)
        return await self.head(bucket, key)

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        self.capabilities.check_key(key)

        async def call(client: Any) -> None:
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

        try:
            await self._call("abort_multipart", bucket, key, call)
        except StoreError as exc:
            if exc.code != "NoSuchUpload":
                raise

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        async def call(client: Any) -> list[tuple[str, str]]:
            found: list[tuple[str, str]] = []
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if self.url_encoded_listing:
                params["EncodingType"] = "url"
            while True:
                response = await client.list_multipart_uploads(**params)
                decode = self._decoder(response) if self.dialect.url_encoded_upload_listing else str
                for upload in response.get("Uploads") or ():
                    found.append((decode(upload["Key"]), str(upload["UploadId"])))
                if not response.get("IsTruncated"):
                    break
                next_key = response.get("NextKeyMarker")
                next_id = response.get("NextUploadIdMarker")
                if not next_key and not next_id:
                    break
                params["KeyMarker"] = decode(next_key or "")
                params["UploadIdMarker"] = next_id or ""
            return found

        return await self._call("list_multipart_uploads", bucket, prefix, call)

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        """CopyObject with ``MetadataDirective=REPLACE`` (content type, metadata and storage
        class from ``options``), then HEAD of the copy (see ``complete_multipart``)."""
        self._require(self.capabilities.server_side_copy, "server-side copy")
        self.capabilities.check_key(key)
        self.capabilities.check_key(src_key)
        params = {
            "Bucket": bucket, "Key": key, "CopySource": {"Bucket": src_bucket, "Key": src_key},
            "MetadataDirective": "REPLACE", **self._write_params(options),
        }

        async def call(client: Any) -> None:
            await client.copy_object(**params)

        await self._call("server_copy", bucket, key, call)
        return await self.head(bucket, key)

    async def delete(self, bucket: str, key: str) -> None:
        self.capabilities.check_key(key)

        async def call(client: Any) -> None:
            await client.delete_object(Bucket=bucket, Key=key)

        await self._call("delete", bucket, key, call)

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000) -> ListPage:
        """One page (at most ``min(limit, 1000)`` keys). The token is opaque: a continuation
        token for ListObjectsV2, the last key for ListObjects."""
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max(1, min(limit, 1000))}
        if self.url_encoded_listing:
            params["EncodingType"] = "url"

        async def call(client: Any) -> ListPage:
            if self.list_api == 2:
                if token:
                    params["ContinuationToken"] = token
                response = await client.list_objects_v2(**params)
            else:
                if token:
                    params["Marker"] = token
                response = await client.list_objects(**params)
            decode = self._decoder(response)
            keys = [
                ObjectInfo(
                    key=decode(item["Key"]),
                    size=int(item.get("Size") or 0),
                    last_modified=item["LastModified"].timestamp() if item.get("LastModified") else 0.0,
                    etag=_clean_etag(item.get("ETag")),
                    storage_class=item.get("StorageClass"),
                )
                for item in response.get("Contents") or ()
            ]
            next_token: str | None = None
            if response.get("IsTruncated"):
                if self.list_api == 2:
                    next_token = response.get("NextContinuationToken") or None
                else:
                    marker = response.get("NextMarker")
                    next_token = decode(marker) if marker else (keys[-1].key if keys else None)
            return ListPage(keys=keys, next_token=next_token)

        return await self._call("list", bucket, prefix, call)


def _date(headers: Mapping[str, str]) -> float:
    value = headers.get("date")
    if value:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()
