"""The store contract suite (tests/stores/test_contract.py) run against ``AzureStore`` on Azurite,
plus unit tests of the Azure adapter's pure parts (CRC-64, metadata names, credentials,
endpoint resolution, key rules).

Every contract test that uses a backend is taken from the contract module as is, with this
module's ``backend`` fixture (Azurite only). Three contract assertions are S3 facts rather than
port facts and are restated here for Azure: a multipart object's ETag ends in ``-<parts>``, a
server-side copy has the source's ETag (both hold where the ETag is an MD5), and the storage
class ``STANDARD_IA`` exists (Azure's classes are its access tiers).
"""

from __future__ import annotations

import base64
import inspect
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from omsync.domain.model import Credentials
from omsync.stores.azure import (
    AZURE_CAPABILITIES,
    AzureStore,
    account_url,
    azure_crc64,
    azure_crc64_header,
    capabilities_for,
    decode_metadata,
    decode_metadata_name,
    encode_metadata,
    encode_metadata_name,
    parse_credentials,
)
from omsync.stores.base import UNKNOWN_SIZE, ErrorKind, PutOptions, StoreError
from omsync.stores.profiles import get_profile, resolve_endpoint
from tests.key_corpus import KEY_CORPUS
from tests.servers_azurite import AzuriteServer, azurite_fixture  # noqa: F401  (the azurite fixture)
from tests.stores import test_contract as contract
from tests.stores.test_contract import Backend, MiB, md5_hex, read_all

# Every contract test that runs against a backend, and the fixtures they use.
_BACKEND_FIXTURES = {"backend", "bucket", "corpus_buckets"}
for _name, _test in vars(contract).items():
    if _name.startswith("test_") and callable(_test) and \
            _BACKEND_FIXTURES & set(inspect.signature(_test).parameters):
        globals()[_name] = _test
bucket = contract.bucket
corpus_buckets = contract.corpus_buckets


def azurite_store(server: AzuriteServer, secret: str | None = None) -> AzureStore:
    resolved = resolve_endpoint("Azure", "", {"Azure:*": server.account_url + "#azurite"})
    auth = parse_credentials(Credentials(server.account, secret or server.key))
    return AzureStore(account_url(resolved, auth.account), auth, capabilities=capabilities_for(resolved),
                      timeout=30)


@pytest.fixture(scope="module")
async def backend(azurite: AzuriteServer) -> AsyncIterator[Backend]:
    store = azurite_store(azurite)

    def make_container() -> str:
        return azurite.make_container(f"c{uuid.uuid4().hex[:12]}")

    try:
        yield Backend("azurite", store, make_container, "no-such-container-" + uuid.uuid4().hex[:8])
    finally:
        await store.close()


# -- contract tests restated for Azure ------------------------------------------------------------


async def test_storage_class_is_kept(backend: Backend, bucket: str) -> None:
    store = backend.store
    await store.put(bucket, "cold", b"x", PutOptions(storage_class="Cool"))
    assert (await store.head(bucket, "cold")).storage_class == "Cool"
    with pytest.raises(StoreError) as error:
        await store.put(bucket, "s3-name", b"x", PutOptions(storage_class="STANDARD_IA"))
    assert error.value.kind is ErrorKind.INVALID


async def test_multipart_upload_of_a_large_object_streams_back_in_bounded_chunks(
    backend: Backend, bucket: str
) -> None:
    store = backend.store
    part = 5 * MiB
    data = os.urandom(2 * part + 2 * MiB)  # two full blocks and a short last one
    options = PutOptions(content_type="video/x-big", metadata={"part": "yes", "omsync-src-etag": "e-1"},
                         storage_class="Cool")
    upload_id = await store.create_multipart(bucket, "large/object", options)
    etags = []
    for number, offset in enumerate(range(0, len(data), part), start=1):
        etags.append((number, await store.upload_part(bucket, "large/object", upload_id, number,
                                                       data[offset:offset + part])))
    info = await store.complete_multipart(bucket, "large/object", upload_id, etags)

    assert info.from_head
    assert info.size == len(data)
    assert info.etag is not None
    assert info.etag == (await store.head(bucket, "large/object")).etag
    assert info.content_type == "video/x-big"
    assert dict(info.metadata) == {"part": "yes", "omsync-src-etag": "e-1"}
    assert info.storage_class == "Cool"
    assert await store.list_multipart_uploads(bucket) == []

    largest = total = 0
    chunks: list[bytes] = []
    async for chunk in store.get(bucket, "large/object", chunk_size=MiB):
        assert chunk
        largest = max(largest, len(chunk))
        total += len(chunk)
        chunks.append(chunk)
    assert largest <= MiB
    assert total == len(data)
    assert md5_hex(b"".join(chunks)) == md5_hex(data)


async def test_server_copy_with_copy_metadata_keeps_the_source_metadata(backend: Backend, bucket: str) -> None:
    store = backend.store
    other = backend.make_bucket()
    data = os.urandom(3000)
    await store.put(bucket, "kept", data, PutOptions(content_type="image/x-kept",
                                                     metadata={"Origin": "cam-1", "n": "7"}))
    info = await store.server_copy(bucket, "kept", other, "kept copy",
                                   PutOptions(content_type="ignored/type", metadata={"ignored": "1"},
                                              copy_metadata=True))
    assert info.key == "kept copy"
    assert info.size in (len(data), UNKNOWN_SIZE)
    head = await store.head(other, "kept copy")
    assert info.etag == head.etag  # the copy's own ETag (Azure ETags are versions, not MD5s)
    assert head.content_type == "image/x-kept"
    assert dict(head.metadata) == {"origin": "cam-1", "n": "7"}
    assert head.size == len(data)
    assert await read_all(store, other, "kept copy") == data


# -- Azure-specific behaviour against Azurite ------------------------------------------------------


async def test_metadata_names_azure_cannot_store_round_trip(backend: Backend, bucket: str) -> None:
    store = backend.store
    metadata = {"omsync-src-etag": "abc", "omsync-src-mtime": "Thu, 01 Jan 1970 00:00:00 GMT",
                "Content-Language-Hint": "x", "9lives": "1", "_under": "2", "plain_name": "3",
                "unicode": "caf\u00e9 \u4e2d", "spaces": "  padded  "}
    await store.put(bucket, "meta", b"m", PutOptions(metadata=metadata))
    expected = {name.lower(): value for name, value in metadata.items()}
    assert dict((await store.head(bucket, "meta")).metadata) == expected


async def test_wrong_account_key_is_permission_and_not_retryable(azurite: AzuriteServer) -> None:
    container = azurite.make_container(f"deny{uuid.uuid4().hex[:8]}")
    wrong = base64.b64encode(b"not the key" * 4).decode()
    store = azurite_store(azurite, wrong)
    try:
        for call in (lambda: store.head(container, "k"), lambda: store.put(container, "k", b"x", PutOptions())):
            with pytest.raises(StoreError) as error:
                await call()
            assert error.value.kind is ErrorKind.PERMISSION, error.value
            assert error.value.retryable is False
            assert wrong not in str(error.value)
    finally:
        await store.close()


async def test_connection_string_and_sas_credentials(azurite: AzuriteServer, backend: Backend) -> None:
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    container = backend.make_bucket()
    await backend.store.put(container, "shared", b"data", PutOptions())
    sas = generate_account_sas(azurite.account, azurite.key, ResourceTypes(object=True, container=True),
                               AccountSasPermissions(read=True, write=True, list=True),
                               expiry=datetime.now(UTC) + timedelta(hours=1))
    for secret in (azurite.connection_string, "?" + sas,
                   f"AccountName={azurite.account};SharedAccessSignature={sas}"):
        store = azurite_store(azurite, secret)
        try:
            assert await read_all(store, container, "shared") == b"data"
        finally:
            await store.close()


async def test_server_copy_of_a_missing_source_is_not_found(backend: Backend, bucket: str) -> None:
    with pytest.raises(StoreError) as error:
        await backend.store.server_copy(bucket, "absent", bucket, "copy", PutOptions())
    assert error.value.kind is ErrorKind.NOT_FOUND


# -- pure parts ------------------------------------------------------------------------------------


def test_azure_crc64_is_crc64_nvme_little_endian() -> None:
    assert azure_crc64(b"123456789") == 0xAE8B14860A799888  # CRC-64/NVME check value
    assert azure_crc64(b"") == 0
    assert azure_crc64(b"6789", azure_crc64(b"12345")) == azure_crc64(b"123456789")
    assert base64.b64decode(azure_crc64_header(b"123456789")) == (0xAE8B14860A799888).to_bytes(8, "little")


def test_metadata_names_are_encoded_reversibly_as_identifiers() -> None:
    import re

    names = ["origin", "omsync-src-etag", "9lives", "_under", "a__b", "x.y", "中文", "-", "plain_name"]
    for name in names:
        stored = encode_metadata_name(name)
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", stored), stored
        assert decode_metadata_name(stored) == name.lower()
    assert encode_metadata_name("Origin") == "origin"
    assert encode_metadata_name("omsync-src-etag") == "_omsync_2dsrc_2detag"
    values = {"v": "caf\u00e9", "w": "tab\there", "x": "=?UTF-8?B?bm90?=", "y": "plain"}
    assert decode_metadata(encode_metadata(values)) == values
    assert all(value.isascii() for value in encode_metadata(values).values())


def test_credentials_forms() -> None:
    key = base64.b64encode(b"k" * 64).decode()
    assert parse_credentials(Credentials("acct", key)).account_key == key
    parsed = parse_credentials(Credentials("", f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};"
                                               "EndpointSuffix=core.windows.net"))
    assert (parsed.account, parsed.account_key) == ("acct", key)
    assert parse_credentials(Credentials("acct", "?sv=2024-01-01&ss=b&sig=abc%3D")).sas == "sv=2024-01-01&ss=b&sig=abc%3D"
    for bad in (Credentials("acct", "not base64!"), Credentials("other", f"AccountName=acct;AccountKey={key}"),
                Credentials("bad/name", key)):
        with pytest.raises(StoreError) as error:
            parse_credentials(bad)
        assert error.value.kind is ErrorKind.PERMISSION


def test_endpoints_come_from_the_profile_or_the_override() -> None:
    public = resolve_endpoint("Azure", "eastus")
    assert account_url(public, "myacct") == "https://myacct.blob.core.windows.net"
    assert account_url(resolve_endpoint("Azure", ""), "myacct") == "https://myacct.blob.core.windows.net"
    china = resolve_endpoint("Azure", "chinanorth2")
    assert account_url(china, "myacct") == "https://myacct.blob.core.chinacloudapi.cn"
    gov = resolve_endpoint("Azure", "AzureUSGovernment")
    assert account_url(gov, "myacct") == "https://myacct.blob.core.usgovcloudapi.net"
    with pytest.raises(StoreError):
        account_url(public, "evil.example.com#")  # an account name never chooses the host
    emulator = resolve_endpoint("Azure", "x", {"Azure:*": "http://127.0.0.1:10000/devstoreaccount1"})
    assert account_url(emulator, "devstoreaccount1") == "http://127.0.0.1:10000/devstoreaccount1"
    assert capabilities_for(emulator).part_copy is True
    azurite = resolve_endpoint("Azure", "x", {"Azure:*": "http://127.0.0.1:10000/devstoreaccount1#azurite"})
    assert capabilities_for(azurite).part_copy is False
    profile = get_profile("Azure")
    assert profile.bucket_problem("my-container1") is None
    assert profile.bucket_problem("My.Bucket") is not None
    assert profile.bucket_problem("a--b") is not None


def test_key_rules() -> None:
    caps = AZURE_CAPABILITIES
    refused = {kid for kid, key in KEY_CORPUS if caps.key_problem(key) is not None}
    assert refused == {"backslash", "ctrl-01", "ctrl-1f", "tab", "newline", "carriage-return", "del-7f",
                       "dot-slash", "dot-dot", "dot-segment", "only-dots"}
    for key in ("x//y", "dir/", "a+b", "100%", "what?x=1&y=2", "a#b", "中文/文件名.txt", "   ", "/lead"):
        assert caps.key_problem(key) is None, key
    assert caps.key_problem("a" * 1024) is None
    assert caps.key_problem("a" * 1025) is not None
    assert caps.key_problem("\u00e9" * 1024) is None  # 1,024 characters, 2,048 bytes
    assert caps.key_problem("name.") is not None
    assert caps.key_problem("a/" * 254 + "b") is not None
    assert caps.key_problem("\u0085x") is not None  # C1 control
