"""``AzureStore``: Azure Blob Storage (block blobs) through the official async SDK
(``azure.storage.blob.aio``), behind the same ``ObjectStore`` port as the S3 stores.

A task's bucket is a container; a key is a blob name, passed to the SDK as is (it percent-encodes
every byte a URL needs) and never normalised. Names Azure cannot hold are refused up front
(``AzureCapabilities.key_problem``): C0/C1 control characters and DEL, a backslash (Azure turns it
into ``/``), a path segment ending in ``.`` (the service and URL handling drop or resolve it,
which also rules out ``.``/``..`` segments), more than 1,024 characters or 254 segments.

Mapping of the port onto blob operations:

- ``put``: one Put Blob (at most 5000 MiB); ``get``: ranged GETs of at most ``read_window``
  bytes, sliced to the caller's chunk size (bounded memory).
- Multipart: a block list. ``create_multipart`` returns an upload id carrying a random token and
  the write options (content type, metadata, tier); parts are Put Block with block ids derived
  from the token and the part number (the part "ETag" is that block id); ``complete_multipart``
  is Put Block List, then a HEAD. So that open uploads can be listed like S3's, the upload also
  stages small marker blocks whose ids spell its options; ``abort_multipart`` stages an
  "aborted" marker (Azure offers no call that discards one upload's uncommitted blocks: they
  disappear at the blob's next commit, or after a week). An upload's blocks never show in
  listings nor make a blob exist.
- Server-side copy within one account: Copy Blob From URL (synchronous, at most 256 MiB); the
  source is read through a short-lived read-only SAS (account key) or the task's SAS. With
  ``copy_metadata`` the source's properties and metadata are kept; otherwise the metadata is
  replaced in the same request and the Content-Type set right after (Set Blob Properties, other
  HTTP properties such as Content-MD5 kept). Part copies are Put Block From URL.
- Access tiers (Hot, Cool, Cold, Archive) are the storage classes.

Metadata: Azure metadata names must be C# identifiers and values HTTP header text. A name that
is not ``[a-z][a-z0-9_]*`` (after lower-casing, as every store reports names) is stored as ``_``
followed by its UTF-8 bytes with every byte outside ``[a-z0-9]`` written ``_hh`` (hex), e.g.
``omsync-src-etag`` → ``_omsync_2dsrc_2detag``; names read back are decoded the same way. A value
that is not printable ASCII is stored RFC 2047 encoded (``=?UTF-8?B?...?=``) and decoded on read.

Integrity: every Put Blob and Put Block carries ``x-ms-content-crc64``, Azure's transactional
CRC-64, which the service checks against the body it received (a mismatch fails the request,
``CORRUPT``, retried). Azure's CRC-64 is CRC-64/NVME (polynomial 0xAD93D23594C93659, reflected,
init and xorout all ones; check value 0xAE8B14860A799888), sent as the base64 of its 8 bytes
little-endian: *not* the CRC-64/XZ (ECMA-182) that OSS/COS/OBS expose, so it is never put in
``ObjectInfo.crc64ecma``. Azure keeps no whole-blob CRC-64, so ``capabilities.crc64ecma`` is
false and a CRC-64 consistency check against an Azure side falls back as for any store without
one. (Azurite refuses the header in its strict mode: run it with ``--loose``, or pass
``transactional_crc64=False``.)

Errors: every SDK / transport exception becomes one ``StoreError`` by Azure error code
(``x-ms-error-code``) and HTTP status, carrying ``Retry-After`` when sent; the SDK's own retries
are off (the engine retries).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from awscrt import checksums as crt_checksums
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobSasPermissions,
    BlockState,
    ContentSettings,
    StandardBlobTier,
    generate_blob_sas,
)
from azure.storage.blob.aio import BlobServiceClient

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
from omsync.stores.profiles import ResolvedEndpoint, quirk_set

# The SDK logs every request and response at INFO; omsync logs its own outcomes.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

MiB = 1024 * 1024
TIERS = ("Hot", "Cool", "Cold", "Archive")
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)))


@dataclass(frozen=True)
class AzureCapabilities(Capabilities):
    """``Capabilities`` plus Azure's blob-name rules that the generic fields cannot say."""

    max_key_chars: int = 1024
    max_key_segments: int = 254

    def key_problem(self, key: str, *, multipart: bool = False) -> str | None:
        problem = super().key_problem(key, multipart=multipart)
        if problem is not None:
            return problem
        if len(key) > self.max_key_chars:
            return f"key is {len(key)} characters, longer than the {self.max_key_chars} Azure allows"
        segments = key.split("/")
        if len(segments) > self.max_key_segments:
            return f"key has {len(segments)} path segments, more than the {self.max_key_segments} Azure allows"
        if any(segment.endswith(".") for segment in segments):
            return "a path segment ends with '.', which Azure drops or resolves in blob names"
        return None


AZURE_CAPABILITIES = AzureCapabilities(
    server_side_copy=True,
    multipart=True,
    part_copy=True,
    crc64ecma=False,
    md5_etag=False,
    min_part_size=1,
    max_part_count=50_000,
    max_single_put=5000 * MiB,
    max_server_copy=256 * MiB,       # Copy Blob From URL (synchronous)
    max_key_bytes=4096,              # the limit is 1,024 characters (max_key_chars)
    storage_classes=frozenset(TIERS),
    unsupported_key_chars=_CONTROL | {"\\"},
    lists_in_key_order=False,        # listings are "alphabetical", not promised in UTF-8 byte order
    limitation="Azure Blob Storage naming rules",
)


def capabilities_for(resolved: ResolvedEndpoint | None) -> AzureCapabilities:
    """Azure's capabilities, narrowed by the endpoint's ``#quirks`` set (e.g. ``azurite``)."""
    if resolved is None or not resolved.quirks:
        return AZURE_CAPABILITIES
    return dataclasses.replace(AZURE_CAPABILITIES, **quirk_set(resolved.quirks)[0])


# -- Azure's CRC-64 ----------------------------------------------------------------------------


def azure_crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Azure Storage's CRC-64 (= CRC-64/NVME) of ``data``, continuing from ``crc``."""
    return int(crt_checksums.crc64nvme(bytes(data) if isinstance(data, memoryview) else data, crc))


def azure_crc64_header(data: bytes | bytearray | memoryview) -> str:
    """The ``x-ms-content-crc64`` value for ``data``: base64 of the CRC's 8 bytes, little-endian."""
    return base64.b64encode(azure_crc64(data).to_bytes(8, "little")).decode("ascii")


# -- metadata ------------------------------------------------------------------------------------

_PLAIN_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SAFE_BYTE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")
_RFC2047 = re.compile(r"=\?utf-8\?b\?([A-Za-z0-9+/=]*)\?=", re.IGNORECASE)


def encode_metadata_name(name: str) -> str:
    """A metadata name as Azure can store it (a C# identifier); see the module docstring."""
    name = name.lower()
    if _PLAIN_NAME.fullmatch(name):
        return name
    return "_" + "".join(chr(b) if b in _SAFE_BYTE else f"_{b:02x}" for b in name.encode("utf-8"))


def decode_metadata_name(stored: str) -> str:
    """Inverse of :func:`encode_metadata_name`; a name it did not write comes back lower-cased."""
    stored = stored.lower()
    if not stored.startswith("_"):
        return stored
    out = bytearray()
    text = stored[1:]
    index = 0
    while index < len(text):
        char = text[index]
        if char == "_":
            try:
                out.append(int(text[index + 1:index + 3], 16))
            except ValueError:
                return stored
            if len(text[index + 1:index + 3]) != 2:
                return stored
            index += 3
        elif ord(char) in _SAFE_BYTE:
            out.append(ord(char))
            index += 1
        else:
            return stored
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return stored


def encode_metadata_value(value: str) -> str:
    if value.isascii() and value.isprintable() and value == value.strip() and not _RFC2047.fullmatch(value):
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def decode_metadata_value(stored: str) -> str:
    match = _RFC2047.fullmatch(stored)
    if match is None:
        return stored
    try:
        return base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return stored


def encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    return {encode_metadata_name(name): encode_metadata_value(value) for name, value in metadata.items()}


def decode_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {decode_metadata_name(name): decode_metadata_value(value) for name, value in (metadata or {}).items()}


# -- credentials --------------------------------------------------------------------------------

_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_ACCOUNT_RELAXED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")  # emulators / private deployments


@dataclass(frozen=True)
class AzureAuth:
    """How to sign for one account: its name and either its key or a SAS token."""

    account: str
    account_key: str | None = field(default=None, repr=False)
    sas: str | None = field(default=None, repr=False)

    @property
    def credential(self) -> AzureNamedKeyCredential | AzureSasCredential:
        if self.account_key is not None:
            return AzureNamedKeyCredential(self.account, self.account_key)
        return AzureSasCredential(self.sas or "")


def parse_credentials(credentials: Credentials) -> AzureAuth:
    """Read a task side's ``ak``/``sk`` as OMS gives them for Azure.

    ``ak`` is the storage account name. ``sk`` is one of: the account key (base64); a connection
    string (``AccountName=...;AccountKey=...`` or ``...;SharedAccessSignature=...``, whose
    ``AccountName`` fills an empty ``ak``; endpoint parts are ignored: the endpoint always comes
    from the provider profile or the endpoints setting); or a SAS token (``sv=...&sig=...``, with
    or without a leading ``?``). Raises ``StoreError(PERMISSION)`` for anything else."""
    account = credentials.access_key.strip()
    secret = credentials.secret_key.strip()
    key: str | None = None
    sas: str | None = None
    if ";" in secret or secret.lower().startswith(("accountname=", "defaultendpointsprotocol=")):
        parts: dict[str, str] = {}
        for item in secret.split(";"):
            name, sep, value = item.partition("=")
            if sep:
                parts[name.strip().lower()] = value.strip()
        named = parts.get("accountname", "")
        if named and account and named != account:
            raise StoreError(ErrorKind.PERMISSION, "the connection string names another account than the access key",
                             code="InvalidCredentials")
        account = account or named
        key = parts.get("accountkey") or None
        sas = parts.get("sharedaccesssignature") or None
    elif "sig=" in secret and ("sv=" in secret or "se=" in secret):
        sas = secret
    else:
        key = secret
    if sas is not None:
        sas = sas.lstrip("?")
    if key is not None:
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise StoreError(ErrorKind.PERMISSION, "the Azure account key is not base64",
                             code="InvalidCredentials") from None
    if key is None and sas is None:
        raise StoreError(ErrorKind.PERMISSION, "no Azure account key or SAS token in the secret key",
                         code="InvalidCredentials")
    if not _ACCOUNT_RELAXED.fullmatch(account):
        raise StoreError(ErrorKind.PERMISSION, "the access key must be the Azure storage account name",
                         code="InvalidCredentials")
    return AzureAuth(account=account, account_key=key, sas=sas)


def account_url(resolved: ResolvedEndpoint, account: str) -> str:
    """The account's blob endpoint: ``{account}`` in the profile's (or override's) template is
    replaced by the account name (which must then be a valid Azure account name: 3–24 of
    ``a-z 0-9``, so it can never choose another host); an override without it (an emulator,
    ``http://127.0.0.1:10000/devstoreaccount1``) is used as is."""
    url = resolved.url.rstrip("/")
    if "{account}" not in url:
        return url
    if not _ACCOUNT.fullmatch(account):
        raise StoreError(ErrorKind.PERMISSION, "the access key is not a valid Azure storage account name "
                         "(3 to 24 lower-case letters and digits)", code="InvalidCredentials")
    return url.replace("{account}", account)


# -- errors -------------------------------------------------------------------------------------

_CODE_KINDS: dict[str, ErrorKind] = {
    **dict.fromkeys(("BlobNotFound", "ContainerNotFound", "ResourceNotFound", "CannotVerifyCopySource",
                     "ContainerBeingDeleted", "BlobBeingRehydrated"), ErrorKind.NOT_FOUND),
    **dict.fromkeys(("AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
                     "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch",
                     "AuthorizationResourceTypeMismatch", "AuthorizationServiceMismatch",
                     "InsufficientAccountPermissions", "AccountIsDisabled", "KeyBasedAuthenticationNotPermitted",
                     "NoAuthenticationInformation", "InvalidAuthenticationInfo", "InvalidCredentials"),
                    ErrorKind.PERMISSION),
    **dict.fromkeys(("ServerBusy", "TooManyRequests", "IngressOverAccountLimit", "EgressOverAccountLimit"),
                    ErrorKind.THROTTLED),
    **dict.fromkeys(("InternalError", "OperationTimedOut", "ServiceUnavailable"), ErrorKind.TRANSIENT),
    **dict.fromkeys(("Md5Mismatch", "Crc64Mismatch", "source_changed"), ErrorKind.CORRUPT),
    **dict.fromkeys(("FeatureNotSupported", "APINotImplemented", "UnsupportedHeader", "BlobArchived",
                     "RequestBodyTooLarge", "BlockCountExceedsLimit", "BlockListTooLong",
                     "UnsupportedQueryParameter", "FeatureVersionMismatch"), ErrorKind.UNSUPPORTED),
    **dict.fromkeys(("ConditionNotMet", "BlobAlreadyExists", "LeaseIdMissing", "LeaseAlreadyPresent",
                     "LeaseIdMismatchWithBlobOperation", "PendingCopyOperation", "TargetConditionNotMet",
                     "SourceConditionNotMet"), ErrorKind.CONFLICT),
    **dict.fromkeys(("InvalidBlockList", "InvalidBlobOrBlock", "InvalidBlockId", "InvalidRange",
                     "InvalidHeaderValue", "InvalidQueryParameterValue", "OutOfRangeInput",
                     "InvalidResourceName", "InvalidUri", "InvalidBlobTier", "InvalidInput",
                     "InvalidMetadata", "MetadataTooLarge", "MissingRequiredHeader", "InvalidMd5",
                     "InvalidPart", "InvalidUploadId"), ErrorKind.INVALID),
}


def _error_code(exc: HttpResponseError) -> str | None:
    code = getattr(exc, "error_code", None)
    headers = getattr(exc.response, "headers", None)
    if code is None and headers is not None:
        code = headers.get("x-ms-error-code")
    if code is None:
        return None
    value = getattr(code, "value", code)
    return str(value) or None


def translate_error(exc: BaseException, operation: str, bucket: str, key: str | None = None) -> StoreError:
    """Map an Azure SDK / transport exception to a ``StoreError`` naming the operation, container
    and blob (never credentials or SAS tokens)."""
    if isinstance(exc, StoreError):
        return exc
    where = f"{operation} {bucket}" + (f"/{key!r}" if key is not None else "")
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        code = _error_code(exc) or str(status)
        kind = _kind(code, status)
        reason = exc.reason or ""
        headers = getattr(exc.response, "headers", None)
        return StoreError(kind, f"{where}: {code} (HTTP {status}) {reason}".rstrip(), code=code,
                          retry_after=common.retry_after(headers))
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: timed out", code="Timeout")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, ConnectionError, OSError)):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: {type(exc).__name__}: {_short(exc)}",
                          code="ConnectionError")
    if isinstance(exc, AzureError):
        return StoreError(ErrorKind.TRANSIENT, f"{where}: {type(exc).__name__}: {_short(exc)}",
                          code=type(exc).__name__)
    if isinstance(exc, (binascii.Error, ValueError)) and "key" in str(exc).lower():
        return StoreError(ErrorKind.PERMISSION, f"{where}: unusable Azure credentials", code="InvalidCredentials")
    return StoreError(ErrorKind.TRANSIENT, f"{where}: {type(exc).__name__}: {_short(exc)}",
                      code=type(exc).__name__)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return re.sub(r"sig=[^&\s]+", "sig=***", text)[:300]


# -- block ids and upload ids -------------------------------------------------------------------

_BLOCK_MAGIC = b"oM"
_BLOCK_BYTES = 48                      # 64 characters in base64, the most Azure takes; one length for all
_TOKEN_BYTES = 12
_HEADER = len(_BLOCK_MAGIC) + 1 + _TOKEN_BYTES
_CHUNK = _BLOCK_BYTES - _HEADER - 4    # option bytes per marker block
_UPLOAD_PREFIX = "azb1"


def _block_id(kind: bytes, token: bytes, body: bytes = b"") -> str:
    raw = _BLOCK_MAGIC + kind + token + body
    return base64.b64encode(raw.ljust(_BLOCK_BYTES, b"\0")).decode("ascii")


def part_block_id(token: bytes, part_number: int) -> str:
    return _block_id(b"D", token, struct.pack(">I", part_number))


def _marker_ids(token: bytes, payload: bytes) -> list[str]:
    chunks = [payload[offset:offset + _CHUNK] for offset in range(0, len(payload), _CHUNK)] or [b""]
    return [_block_id(b"O", token, struct.pack(">HH", index, len(payload)) + chunk)
            for index, chunk in enumerate(chunks)]


def _abort_id(token: bytes) -> str:
    return _block_id(b"A", token)


def _options_payload(options: PutOptions) -> bytes:
    document = {"c": options.content_type, "m": {name.lower(): value for name, value in options.metadata.items()},
                "t": options.storage_class}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _upload_id(token: bytes, payload: bytes) -> str:
    encoded = base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")
    return f"{_UPLOAD_PREFIX}.{token.hex()}.{encoded}"


@dataclass(frozen=True)
class _Upload:
    token: bytes
    options: PutOptions


def _parse_upload_id(upload_id: str) -> _Upload | None:
    parts = upload_id.split(".")
    if len(parts) != 3 or parts[0] != _UPLOAD_PREFIX:
        return None
    try:
        token = bytes.fromhex(parts[1])
        payload = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
        document = json.loads(payload.decode("utf-8"))
        metadata = {str(k): str(v) for k, v in dict(document.get("m") or {}).items()}
        content_type = document.get("c")
        tier = document.get("t")
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None
    if len(token) != _TOKEN_BYTES:
        return None
    return _Upload(token, PutOptions(content_type=str(content_type) if content_type is not None else None,
                                     metadata=metadata, storage_class=str(tier) if tier is not None else None))


def _open_uploads(block_ids: list[str]) -> list[str]:
    """Upload ids of the uploads whose markers are among ``block_ids`` and that were not aborted."""
    chunks: dict[bytes, dict[int, bytes]] = {}
    sizes: dict[bytes, int] = {}
    aborted: set[bytes] = set()
    for block_id in block_ids:
        try:
            raw = base64.b64decode(block_id, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) != _BLOCK_BYTES or not raw.startswith(_BLOCK_MAGIC):
            continue
        kind = raw[len(_BLOCK_MAGIC):len(_BLOCK_MAGIC) + 1]
        token = raw[len(_BLOCK_MAGIC) + 1:_HEADER]
        if kind == b"A":
            aborted.add(token)
        elif kind == b"O":
            index, total = struct.unpack(">HH", raw[_HEADER:_HEADER + 4])
            chunks.setdefault(token, {})[index] = raw[_HEADER + 4:]
            sizes[token] = total
    found: list[str] = []
    for token, parts in chunks.items():
        if token in aborted:
            continue
        total = sizes[token]
        count = max(1, -(-total // _CHUNK))
        if any(index not in parts for index in range(count)):
            continue
        payload = b"".join(parts[index] for index in range(count))[:total]
        found.append(_upload_id(token, payload))
    return found


# -- listing tokens -----------------------------------------------------------------------------


def _encode_token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise StoreError(ErrorKind.INVALID, "not a listing token of this store", code="InvalidToken") from None
    if not isinstance(state, dict):
        raise StoreError(ErrorKind.INVALID, "not a listing token of this store", code="InvalidToken")
    return state


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else time.time()


def _etag(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value.strip().strip('"') or None


def _tier(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value)) or None


# -- the store ----------------------------------------------------------------------------------


class AzureStore:
    """Block blobs of one storage account (``account_url``), signed with ``auth``.

    ``read_window``: bytes per ranged GET of a stream (and the most a stream holds);
    ``timeout``: connection and read timeout per request; ``transactional_crc64``: send
    ``x-ms-content-crc64`` on writes (see the module docstring).
    """

    def __init__(
        self,
        account_url: str,
        auth: AzureAuth,
        *,
        capabilities: AzureCapabilities = AZURE_CAPABILITIES,
        read_window: int = 4 * MiB,
        timeout: float = 60.0,
        transactional_crc64: bool = True,
        sas_lifetime: timedelta = timedelta(hours=1),
    ) -> None:
        self.account_url = account_url.rstrip("/")
        self.auth = auth
        self.capabilities: Capabilities = capabilities
        self.read_window = max(64 * 1024, read_window)
        self.transactional_crc64 = transactional_crc64
        self.sas_lifetime = sas_lifetime
        self._client = BlobServiceClient(
            self.account_url,
            credential=auth.credential,
            retry_total=0,
            connection_timeout=timeout,
            read_timeout=timeout,
            max_single_get_size=self.read_window,
            max_chunk_get_size=self.read_window,
            max_single_put_size=capabilities.max_single_put,
            max_block_size=capabilities.max_single_put,
        )

    @classmethod
    def for_endpoint(cls, resolved: ResolvedEndpoint, credentials: Credentials, *,
                     timeout: float = 60.0) -> AzureStore:
        """The store for a task side: account from ``ak``, key / SAS from ``sk`` (see
        :func:`parse_credentials`), endpoint from the resolved profile or override."""
        auth = parse_credentials(credentials)
        return cls(account_url(resolved, auth.account), auth, capabilities=capabilities_for(resolved),
                   timeout=timeout)

    def __repr__(self) -> str:
        return f"AzureStore({self.account_url!r})"

    # -- helpers ----------------------------------------------------------------------------

    def _crc_headers(self, data: bytes) -> dict[str, str]:
        return {"x-ms-content-crc64": azure_crc64_header(data)} if self.transactional_crc64 else {}

    def _require(self, flag: bool, what: str) -> None:
        if not flag:
            raise StoreError(ErrorKind.UNSUPPORTED, f"this store does not offer {what}", code="NotImplemented")

    def _tier(self, options: PutOptions) -> StandardBlobTier | None:
        common.check_storage_class(self.capabilities, options)
        return StandardBlobTier(options.storage_class) if options.storage_class else None

    def _source_url(self, bucket: str, key: str) -> str:
        """A URL the service can read the source blob from: its URL with a short read-only SAS
        (signed with the account key), or with the task's SAS."""
        url = self._client.get_blob_client(bucket, key).url
        if self.auth.account_key is not None:
            now = datetime.now(UTC)
            sas = generate_blob_sas(self.auth.account, bucket, key, account_key=self.auth.account_key,
                                    permission=BlobSasPermissions(read=True), start=now - timedelta(minutes=15),
                                    expiry=now + self.sas_lifetime)
        else:
            sas = self.auth.sas or ""
        return f"{url}?{sas}" if sas else url

    def _info(self, key: str, props: Any, *, from_head: bool = True) -> ObjectInfo:
        settings = props.content_settings
        return ObjectInfo(
            key=key, size=int(props.size or 0), last_modified=_timestamp(props.last_modified),
            etag=_etag(props.etag), content_type=settings.content_type if settings is not None else None,
            metadata=decode_metadata(props.metadata), storage_class=_tier(props.blob_tier), from_head=from_head,
        )

    # -- the port ---------------------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        self.capabilities.check_key(key)
        try:
            props = await self._client.get_blob_client(bucket, key).get_blob_properties()
        except Exception as exc:
            raise translate_error(exc, "head", bucket, key) from exc
        return self._info(key, props)

    async def get(self, bucket: str, key: str, *, start: int = 0, end: int | None = None,
                  chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """Ranged GETs of ``read_window`` bytes, pinned to the first answer's ETag (a blob
        rewritten mid-stream fails as ``CORRUPT`` ``source_changed``)."""
        self.capabilities.check_key(key)
        if start < 0 or (end is not None and end < start):
            raise StoreError(ErrorKind.INVALID, f"bad range [{start}, {end})", code="InvalidRange")
        blob = self._client.get_blob_client(bucket, key)
        piece = max(1, chunk_size)
        length = None if end is None else end - start
        if length == 0:
            await self.head(bucket, key)
            return
        try:
            downloader = await blob.download_blob(offset=start, length=length, max_concurrency=1)
        except HttpResponseError as exc:
            error = translate_error(exc, "get", bucket, key)
            if error.code == "InvalidRange":
                size = (await self.head(bucket, key)).size
                if size == start:
                    return
                raise StoreError(ErrorKind.INVALID, f"get {bucket}/{key!r}: range start {start} beyond "
                                 f"object size {size}", code="InvalidRange") from exc
            raise error from exc
        except Exception as exc:
            raise translate_error(exc, "get", bucket, key) from exc
        chunks = downloader.chunks()
        while True:
            try:
                data = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except HttpResponseError as exc:
                error = translate_error(exc, "get", bucket, key)
                if error.kind is ErrorKind.CONFLICT:
                    raise StoreError(ErrorKind.CORRUPT, f"get {bucket}/{key!r}: the blob changed while "
                                     "it was read", code="source_changed") from exc
                raise error from exc
            except Exception as exc:
                raise translate_error(exc, "get", bucket, key) from exc
            if len(data) <= piece:
                yield bytes(data)
            else:
                view = memoryview(data)
                for offset in range(0, len(data), piece):
                    yield bytes(view[offset:offset + piece])

    async def put(self, bucket: str, key: str, data: bytes, options: PutOptions) -> ObjectInfo:
        """Put Blob (one request), with the transactional CRC-64; ``last_modified`` and ETag
        come from the answer."""
        self.capabilities.check_key(key)
        common.check_put_size(self.capabilities, len(data))
        tier = self._tier(options)
        md5 = bytearray(base64.b64decode(options.content_md5)) if options.content_md5 else None
        settings = ContentSettings(content_type=options.content_type, content_md5=md5)
        try:
            answer = await self._client.get_blob_client(bucket, key).upload_blob(
                data, length=len(data), overwrite=True, content_settings=settings,
                metadata=encode_metadata(options.metadata), standard_blob_tier=tier, max_concurrency=1,
                headers=self._crc_headers(data))
        except Exception as exc:
            raise translate_error(exc, "put", bucket, key) from exc
        return ObjectInfo(
            key=key, size=len(data), last_modified=_timestamp(answer.get("last_modified")),
            etag=_etag(answer.get("etag")), content_type=options.content_type or "application/octet-stream",
            metadata={name.lower(): value for name, value in options.metadata.items()},
            storage_class=options.storage_class,
        )

    async def create_multipart(self, bucket: str, key: str, options: PutOptions) -> str:
        """A block-list upload: its options travel in the upload id and in marker blocks."""
        self._require(self.capabilities.multipart, "multipart uploads")
        self.capabilities.check_key(key, multipart=True)
        self._tier(options)
        token = os.urandom(_TOKEN_BYTES)
        payload = _options_payload(options)
        blob = self._client.get_blob_client(bucket, key)
        try:
            await asyncio.gather(*(blob.stage_block(block_id, b"\0", length=1)
                                   for block_id in _marker_ids(token, payload)))
        except Exception as exc:
            raise translate_error(exc, "create_multipart", bucket, key) from exc
        return _upload_id(token, payload)

    def _upload(self, upload_id: str, bucket: str, key: str) -> _Upload:
        upload = _parse_upload_id(upload_id)
        if upload is None:
            raise StoreError(ErrorKind.NOT_FOUND, f"{bucket}/{key!r}: no upload {upload_id[:40]!r}",
                             code="NoSuchUpload")
        return upload

    def _check_part(self, part_number: int) -> None:
        common.check_part_number(self.capabilities, part_number)

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                          data: bytes) -> str:
        """Put Block; the part's ETag is its block id."""
        self.capabilities.check_key(key)
        upload = self._upload(upload_id, bucket, key)
        self._check_part(part_number)
        block_id = part_block_id(upload.token, part_number)
        try:
            await self._client.get_blob_client(bucket, key).stage_block(
                block_id, data, length=len(data), headers=self._crc_headers(data))
        except Exception as exc:
            raise translate_error(exc, "upload_part", bucket, key) from exc
        return block_id

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, start: int, end: int) -> str:
        """Put Block From URL of source bytes ``[start, end)``."""
        self._require(self.capabilities.part_copy, "server-side part copy")
        self.capabilities.check_key(key)
        self.capabilities.check_key(src_key)
        upload = self._upload(upload_id, bucket, key)
        self._check_part(part_number)
        if not 0 <= start < end:
            raise StoreError(ErrorKind.INVALID, f"bad copy range [{start}, {end})", code="InvalidRange")
        block_id = part_block_id(upload.token, part_number)
        try:
            await self._client.get_blob_client(bucket, key).stage_block_from_url(
                block_id, self._source_url(src_bucket, src_key), source_offset=start, source_length=end - start)
        except Exception as exc:
            raise translate_error(exc, "upload_part_copy", bucket, key) from exc
        return block_id

    async def complete_multipart(self, bucket: str, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> ObjectInfo:
        """Put Block List with the upload's options, then HEAD (the answer is ``from_head``)."""
        self.capabilities.check_key(key)
        upload = self._upload(upload_id, bucket, key)
        common.check_parts_order(parts)
        blocks: list[BlobBlock] = []
        for number, etag in parts:
            expected = part_block_id(upload.token, number)
            if etag.strip().strip('"') != expected:
                raise StoreError(ErrorKind.INVALID, f"part {number} was not uploaded with that ETag",
                                 code="InvalidPart")
            blocks.append(BlobBlock(block_id=expected))
        options = upload.options
        try:
            await self._client.get_blob_client(bucket, key).commit_block_list(
                blocks, content_settings=ContentSettings(content_type=options.content_type),
                metadata=encode_metadata(options.metadata), standard_blob_tier=self._tier(options))
        except Exception as exc:
            raise translate_error(exc, "complete_multipart", bucket, key) from exc
        return await self.head(bucket, key)

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        """Mark the upload aborted (see the module docstring); an unknown upload is not an error."""
        self.capabilities.check_key(key)
        upload = _parse_upload_id(upload_id)
        if upload is None:
            return
        try:
            await self._client.get_blob_client(bucket, key).stage_block(_abort_id(upload.token), b"\0", length=1)
        except Exception as exc:
            raise translate_error(exc, "abort_multipart", bucket, key) from exc

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        """Open uploads as (key, upload_id). Costs one Get Block List per blob under ``prefix``."""
        container = self._client.get_container_client(bucket)
        found: list[tuple[str, str]] = []
        try:
            names: list[str] = []
            async for item in container.list_blobs(name_starts_with=prefix or None, include=["uncommittedblobs"]):
                if item.name not in names:
                    names.append(item.name)
            for name in names:
                _, uncommitted = await container.get_blob_client(name).get_block_list("uncommitted")
                ids = [block.id for block in uncommitted if getattr(block, "state", BlockState.UNCOMMITTED)]
                found.extend((name, upload_id) for upload_id in _open_uploads(ids))
        except Exception as exc:
            raise translate_error(exc, "list_multipart_uploads", bucket, prefix) from exc
        return sorted(found)

    async def server_copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
                          options: PutOptions) -> ObjectInfo:
        """Copy Blob From URL (synchronous) inside the account; see the module docstring.
        Answered from the copy's own result (``size=UNKNOWN_SIZE``) with ``copy_metadata``,
        else from the HEAD that reads the copied HTTP properties before the Content-Type is
        set."""
        self._require(self.capabilities.server_side_copy, "server-side copy")
        self.capabilities.check_key(key)
        self.capabilities.check_key(src_key)
        tier = self._tier(options)
        blob = self._client.get_blob_client(bucket, key)
        metadata = None if options.copy_metadata else encode_metadata(options.metadata)
        try:
            answer = await blob.start_copy_from_url(self._source_url(src_bucket, src_key), metadata=metadata or None,
                                                    standard_blob_tier=tier, requires_sync=True)
            if options.copy_metadata:
                return ObjectInfo(key=key, size=UNKNOWN_SIZE, last_modified=_timestamp(answer.get("last_modified")),
                                  etag=_etag(answer.get("etag")), storage_class=options.storage_class)
            if not metadata:
                await blob.set_blob_metadata({}, if_match=answer.get("etag"))
            props = await blob.get_blob_properties()
            copied = props.content_settings
            settings = ContentSettings(
                content_type=options.content_type or "application/octet-stream",
                content_encoding=copied.content_encoding, content_language=copied.content_language,
                content_disposition=copied.content_disposition, cache_control=copied.cache_control,
                content_md5=copied.content_md5)
            answer = await blob.set_http_headers(settings, if_match=props.etag)
        except Exception as exc:
            raise translate_error(exc, "server_copy", bucket, key) from exc
        return ObjectInfo(
            key=key, size=int(props.size or 0), last_modified=_timestamp(answer.get("last_modified")),
            etag=_etag(answer.get("etag")), content_type=settings.content_type,
            metadata={name.lower(): value for name, value in options.metadata.items()},
            storage_class=options.storage_class or _tier(props.blob_tier),
        )

    async def delete(self, bucket: str, key: str) -> None:
        self.capabilities.check_key(key)
        try:
            await self._client.get_blob_client(bucket, key).delete_blob(delete_snapshots="include")
        except Exception as exc:
            error = translate_error(exc, "delete", bucket, key)
            if error.code == "BlobNotFound":
                return
            raise error from exc

    async def list(self, bucket: str, prefix: str = "", token: str | None = None,
                   limit: int = 1000, start_after: str | None = None) -> ListPage:
        """One page of at most ``min(limit, 5000)`` blobs. The token is this store's own: the
        service's marker, how many entries of that page were already returned, and the
        ``start_after`` filter (applied here, in UTF-8 byte order, since Azure has no StartAfter
        in that order)."""
        limit = max(1, min(limit, 5000))
        fresh: dict[str, Any] = {"m": None, "s": 0, "a": start_after, "n": limit}
        state = _decode_token(token) if token is not None else fresh
        marker: str | None = state.get("m")
        skip = int(state.get("s") or 0)
        after: str | None = state.get("a")
        size = max(1, min(int(state.get("n") or limit), 5000))
        after_bytes = after.encode("utf-8", "surrogatepass") if after is not None else None
        container = self._client.get_container_client(bucket)
        found: list[ObjectInfo] = []
        try:
            while True:
                pages = container.list_blobs(name_starts_with=prefix or None,
                                             results_per_page=size).by_page(continuation_token=marker)
                items: list[Any] = []
                try:
                    page = await pages.__anext__()
                    items = [item async for item in page]
                except StopAsyncIteration:
                    pass
                next_marker: str | None = getattr(pages, "continuation_token", None) or None
                for index in range(skip, len(items)):
                    item = items[index]
                    name: str = item.name
                    if after_bytes is not None and name.encode("utf-8", "surrogatepass") <= after_bytes:
                        continue
                    found.append(ObjectInfo(key=name, size=int(item.size or 0),
                                            last_modified=_timestamp(item.last_modified), etag=_etag(item.etag),
                                            storage_class=_tier(item.blob_tier)))
                    if len(found) == limit:
                        if index + 1 < len(items):
                            rest = {"m": marker, "s": index + 1, "a": after, "n": size}
                            return ListPage(found, _encode_token(rest))
                        if next_marker:
                            return ListPage(found, _encode_token({"m": next_marker, "s": 0, "a": after, "n": size}))
                        return ListPage(found, None)
                if not next_marker:
                    return ListPage(found, None)
                marker, skip = next_marker, 0
        except StoreError:
            raise
        except Exception as exc:
            raise translate_error(exc, "list", bucket, prefix) from exc

    async def close(self) -> None:
        try:
            await self._client.close()
        except Exception:  # closing never fails a caller
            logging.getLogger("omsync.stores.azure").debug("closing the Azure client failed", exc_info=True)


__all__ = [
    "AZURE_CAPABILITIES",
    "TIERS",
    "AzureAuth",
    "AzureCapabilities",
    "AzureStore",
    "account_url",
    "azure_crc64",
    "azure_crc64_header",
    "capabilities_for",
    "decode_metadata",
    "encode_metadata",
    "parse_credentials",
    "translate_error",
]


def _kind(code: str, status: int | None) -> ErrorKind:
    return common.kind_for(_CODE_KINDS, code, status)
