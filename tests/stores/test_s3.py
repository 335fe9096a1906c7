"""S3Store specifics (on awscrt): error mapping, header parsing, listing dialects, shared clients.

Error mapping is exercised against a tiny scripted HTTP server on 127.0.0.1 that answers with
the status, headers and body a real S3 sends in that situation (throttling, auth failures,
truncated bodies, stalls); everything else runs against moto.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from omsync.domain.model import Credentials
from omsync.stores import ErrorKind, PutOptions, S3Store, StoreError
from omsync.stores.profiles import S3Dialect, get_profile, resolve_endpoint
from omsync.stores.s3 import shared_client_count, translate_error
from tests.servers import S3Server, free_port

CREDS = Credentials("test-access", "test-secret-never-shown")


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate_to: int | None = None   # send only this many body bytes, then close
    stall: bool = False              # never answer


@dataclass
class ScriptedServer:
    """Answers every request with ``reply``; records request lines."""

    reply: Reply
    requests: list[str] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                self.requests.append(lines[0])
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                    if line.lower().replace(" ", "") == "expect:100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if length:
                    await reader.readexactly(length)
                reply = self.reply
                if reply.stall:
                    await asyncio.sleep(30)
                    return
                headers = {"Content-Length": str(len(reply.body)), **reply.headers}
                if lines[0].startswith("HEAD"):
                    body = b""
                else:
                    body = reply.body if reply.truncate_to is None else reply.body[: reply.truncate_to]
                text = f"HTTP/1.1 {reply.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(text.encode("latin-1") + b"\r\n" + body)
                await writer.drain()
                if reply.truncate_to is not None:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(Reply(200))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def error_body(code: str, message: str = "scripted", key: str = "k") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message><Key>{key}</Key></Error>").encode()


def store_for(url: str, **kwargs: object) -> S3Store:
    return S3Store(url, CREDS, read_timeout=5, connect_timeout=2, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "code", "headers", "kind", "retryable", "retry_after"),
    [
        (429, "TooManyRequests", {"Retry-After": "7"}, ErrorKind.THROTTLED, True, 7.0),
        (429, "SlowDown", {}, ErrorKind.THROTTLED, True, None),
        (408, "Whatever", {}, ErrorKind.TRANSIENT, True, None),
        (403, "AccessDenied", {}, ErrorKind.PERMISSION, False, None),
        (403, "SignatureDoesNotMatch", {}, ErrorKind.PERMISSION, False, None),
        (403, "InvalidAccessKeyId", {}, ErrorKind.PERMISSION, False, None),
        (404, "NoSuchKey", {}, ErrorKind.NOT_FOUND, False, None),
        (404, "NoSuchBucket", {}, ErrorKind.NOT_FOUND, False, None),
        (400, "InvalidArgument", {}, ErrorKind.INVALID, False, None),
        (400, "BadDigest", {}, ErrorKind.CORRUPT, True, None),
        (412, "PreconditionFailed", {}, ErrorKind.CONFLICT, False, None),
        (501, "NotImplemented", {}, ErrorKind.UNSUPPORTED, False, None),
        (400, "EntityTooLarge", {}, ErrorKind.UNSUPPORTED, False, None),
    ],
)
async def test_http_errors_map_to_kinds(
    scripted: ScriptedServer, status: int, code: str, headers: dict[str, str],
    kind: ErrorKind, retryable: bool, retry_after: float | None,
) -> None:
    scripted.reply = Reply(status, error_body(code), {"Content-Type": "application/xml", **headers})
    store = store_for(scripted.url)
    try:
        with pytest.raises(StoreError) as error:
            await store.put("bucket", "k", b"data", PutOptions())
    finally:
        await store.close()
    assert (error.value.kind, error.value.retryable, error.value.code) == (kind, retryable, code)
    assert error.value.retry_after == retry_after
    assert len(scripted.requests) == 1  # the CRT client's retries are off: the engine retries
    assert "test-secret" not in str(error.value)


@pytest.mark.parametrize(
    ("status", "code", "kind", "reported"),
    [
        (503, "SlowDown", ErrorKind.THROTTLED, "SlowDown"),
        (503, "ServiceUnavailable", ErrorKind.THROTTLED, "SlowDown"),
        (500, "InternalError", ErrorKind.TRANSIENT, "InternalError"),
        (502, "BadGatewayish", ErrorKind.TRANSIENT, "InternalError"),
        (504, "GatewayTimeout", ErrorKind.TRANSIENT, "InternalError"),
        (400, "RequestTimeout", ErrorKind.TRANSIENT, "RequestTimeout"),
    ],
)
async def test_answers_the_crt_client_reports_by_name_only(
    scripted: ScriptedServer, status: int, code: str, kind: ErrorKind, reported: str,
) -> None:
    """The CRT client takes 5xx (but 501) and 400 RequestTimeout for retryable and, its retries
    being off, reports them without status, headers or body: the kind is still right, the code
    is inferred and a Retry-After is not seen."""
    scripted.reply = Reply(status, error_body(code), {"Content-Type": "application/xml", "Retry-After": "7"})
    store = store_for(scripted.url)
    try:
        with pytest.raises(StoreError) as error:
            await store.put("bucket", "k", b"data", PutOptions())
    finally:
        await store.close()
    assert (error.value.kind, error.value.retryable, error.value.code) == (kind, True, reported)
    assert len(scripted.requests) == 1


async def test_retry_after_as_http_date(scripted: ScriptedServer) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    scripted.reply = Reply(429, error_body("SlowDown"), {"Retry-After": when})
    store = store_for(scripted.url)
    try:
        with pytest.raises(StoreError) as error:
            await store.head("bucket", "k")
    finally:
        await store.close()
    assert error.value.kind is ErrorKind.THROTTLED
    assert error.value.retry_after is not None and 25 <= error.value.retry_after <= 31


async def test_head_without_error_body_is_not_found(scripted: ScriptedServer) -> None:
    scripted.reply = Reply(404)
    store = store_for(scripted.url)
    try:
        with pytest.raises(StoreError) as error:
            await store.head("bucket", "k")
    finally:
        await store.close()
    assert error.value.kind is ErrorKind.NOT_FOUND


async def test_error_body_echoing_a_control_character_still_parses(scripted: ScriptedServer) -> None:
    scripted.reply = Reply(404, error_body("NoSuchKey", key="c&#x1;d"), {"Content-Type": "application/xml"})
    store = store_for(scripted.url)
    try:
        with pytest.raises(StoreError) as error:
            await store.put("bucket", "c\x01d", b"x", PutOptions())
    finally:
        await store.close()
    assert (error.value.kind, error.value.code) == (ErrorKind.NOT_FOUND, "NoSuchKey")


async def test_create_multipart_reply_echoing_a_control_character_parses(scripted: ScriptedServer) -> None:
    body = (b'<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>b</Bucket>'
            b"<Key>c&#x1;d\x02</Key><UploadId>upload-123</UploadId></InitiateMultipartUploadResult>")
    scripted.reply = Reply(200, body, {"Content-Type": "application/xml"})
    store = store_for(scripted.url)
    try:
        assert await store.create_multipart("b", "c\x01d\x02", PutOptions()) == "upload-123"
    finally:
        await store.close()


async def test_head_parses_every_field(scripted: ScriptedServer) -> None:
    scripted.reply = Reply(200, b"0123456789", {
        "ETag": '"0123abcd"',
        "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
        "Content-Type": "image/png",
        "x-amz-meta-Origin": "cam-1",
        "x-amz-storage-class": "STANDARD_IA",
        "x-cos-hash-crc64ecma": "18446744073709551615",
    })
    store = store_for(scripted.url, dialect=S3Dialect(crc64_headers=("x-cos-hash-crc64ecma",)))
    try:
        info = await store.head("bucket", "k")
    finally:
        await store.close()
    assert info.size == 10
    assert info.etag == "0123abcd"
    assert info.last_modified == 1445412480.0
    assert info.content_type == "image/png"
    assert dict(info.metadata) == {"origin": "cam-1"}
    assert info.storage_class == "STANDARD_IA"
    assert info.crc64ecma == 2**64 - 1


async def test_truncated_body_is_transient(scripted: ScriptedServer) -> None:
    scripted.reply = Reply(200, b"x" * 100_000, truncate_to=1000)
    store = store_for(scripted.url)
    try:
        with pytest.raises(StoreError) as error:
            async for _ in store.get("bucket", "k", chunk_size=64 * 1024):
                pass
    finally:
        await store.close()
    assert error.value.kind is ErrorKind.TRANSIENT
    assert error.value.retryable


async def test_stalled_server_times_out_as_transient(scripted: ScriptedServer) -> None:
    scripted.reply = Reply(200, stall=True)
    store = S3Store(scripted.url, CREDS, read_timeout=0.5, connect_timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError) as error:
            await store.head("bucket", "k")
    finally:
        await store.close()
    assert error.value.kind is ErrorKind.TRANSIENT
    assert time.monotonic() - started < 5


async def test_refused_connection_is_transient() -> None:
    store = store_for(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(StoreError) as error:
            await store.head("bucket", "k")
    finally:
        await store.close()
    assert (error.value.kind, error.value.retryable) == (ErrorKind.TRANSIENT, True)


async def test_raw_listing_dialect_sends_no_encoding_type_and_keeps_keys(scripted: ScriptedServer) -> None:
    body = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><IsTruncated>false'
            b"</IsTruncated><Contents><Key>a+b%41 c</Key><Size>3</Size>"
            b"<LastModified>2015-10-21T07:28:00.000Z</LastModified><ETag>\"e\"</ETag></Contents>"
            b"</ListBucketResult>")
    scripted.reply = Reply(200, body, {"Content-Type": "application/xml"})
    store = store_for(scripted.url, dialect=S3Dialect(url_encoded_listing=False))
    try:
        page = await store.list("b")
    finally:
        await store.close()
    assert [info.key for info in page.keys] == ["a+b%41 c"]
    assert "encoding-type" not in scripted.requests[0]


def test_unknown_exceptions_still_become_store_errors() -> None:
    error = translate_error(RuntimeError("boom"), "head", "b", "k")
    assert isinstance(error, StoreError)
    assert error.kind is ErrorKind.TRANSIENT


# -- against moto -------------------------------------------------------------------------------


def moto_store(server: S3Server, dialect: S3Dialect = S3Dialect()) -> S3Store:
    profile = get_profile("S3")
    return S3Store(server.endpoint_url, Credentials(server.access_key, server.secret_key),
                   capabilities=profile.capabilities("moto"), dialect=dialect, read_timeout=30)


async def test_listobjects_v1_pages_awkward_keys(moto_s3: S3Server) -> None:
    bucket = moto_s3.make_bucket("v1-listing")
    store = moto_store(moto_s3, S3Dialect(list_api=1))
    keys = sorted(["a b", "a+b", "a%2Fb", "c\x01d", "x//y", "中文", "dir/", "./a"])
    try:
        for key in keys:
            await store.put(bucket, key, b"x", PutOptions())
        found: list[str] = []
        token: str | None = None
        while True:
            page = await store.list(bucket, "", token, 3)
            found += [info.key for info in page.keys]
            if page.next_token is None:
                break
            token = page.next_token
        assert found == keys
    finally:
        await store.close()


async def test_stores_with_the_same_endpoint_share_one_client(moto_s3: S3Server) -> None:
    bucket = moto_s3.make_bucket("shared-client")
    first, second = moto_store(moto_s3), moto_store(moto_s3)
    other_dialect = moto_store(moto_s3, S3Dialect(url_encoded_listing=False))
    other_credentials = S3Store(moto_s3.endpoint_url, Credentials("other-access", "other-secret"),
                                read_timeout=30)
    try:
        await first.put(bucket, "k", b"1", PutOptions())
        await second.head(bucket, "k")
        await other_dialect.head(bucket, "k")
        await other_credentials.head(bucket, "k")
        assert first._client_obj is second._client_obj is other_dialect._client_obj
        assert first._client_obj is not other_credentials._client_obj
        assert shared_client_count(moto_s3.endpoint_url) == 2
        await first.close()
        await other_dialect.close()
        assert (await second.head(bucket, "k")).size == 1  # still open for the other user
    finally:
        await second.close()
        await other_credentials.close()
    assert shared_client_count(moto_s3.endpoint_url) == 0


async def test_store_for_a_provider_profile_via_an_endpoint_override(moto_s3: S3Server) -> None:
    bucket = moto_s3.make_bucket("obs-like")
    resolved = resolve_endpoint("HuaweiCloud", "cn-north-4", {"HuaweiCloud:*": moto_s3.endpoint_url + "#moto"})
    store = S3Store.for_endpoint(resolved, Credentials(moto_s3.access_key, moto_s3.secret_key),
                                 max_pool_connections=4, timeout=10)
    try:
        assert (store.addressing_style, store.list_api, store.url_encoded_listing) == ("path", 1, False)
        await store.put(bucket, "obs/key+1", b"payload", PutOptions(storage_class="STANDARD_IA"))
        info = await store.head(bucket, "obs/key+1")
        assert (info.size, info.storage_class, info.crc64ecma) == (7, "STANDARD_IA", None)
        assert [i.key for i in (await store.list(bucket, "obs/")).keys] == ["obs/key+1"]
    finally:
        await store.close()


async def test_metadata_must_be_ascii_for_s3(moto_s3: S3Server) -> None:
    store = moto_store(moto_s3)
    try:
        with pytest.raises(StoreError) as error:
            await store.put("any", "k", b"x", PutOptions(metadata={"name": "café"}))
    finally:
        await store.close()
    assert error.value.kind is ErrorKind.INVALID
