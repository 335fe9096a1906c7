"""SDK-HMAC-SHA256 verification against requests signed by the real huaweicloudsdkcore signer."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import quote

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.algorithm import SigningAlgorithm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omsync.api.signing import (
    EMPTY_BODY_SHA256,
    SignatureError,
    canonical_query,
    canonical_request,
    canonical_uri,
    compute_signature,
    parse_authorization,
    string_to_sign,
    verify_request,
)

AK = "EXAMPLE-AK"
SK = "EXAMPLE-SK"
PROJECT = "0123456789abcdef0123456789abcdef"
HOST = "127.0.0.1:18081"
UA = (
    "huaweicloud-usdk-python/3.0; os/Linux##1_SMP_PREEMPT_DYNAMIC_@0#x86_64 python/3.11.7 "
    "impl/CPython; app/487b187a-2a03-4da0-8438-82edcb9d13ff"
)
DATE = "20261124T185710Z"
NOW = datetime(2026, 11, 24, 18, 57, 10, tzinfo=UTC)
SECRETS = {AK: SK, "OTHER-AK": "other secret"}


@dataclass
class Wire:
    """A request as a server receives it."""

    method: str
    raw_path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers if k.lower() == name.lower())

    def with_header(self, name: str, value: str) -> Wire:
        others = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        return Wire(self.method, self.raw_path, self.raw_query, [*others, (name, value)], self.body)

    def without_header(self, name: str) -> Wire:
        kept = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        return Wire(self.method, self.raw_path, self.raw_query, kept, self.body)


def verify(wire: Wire, now: datetime = NOW, **kwargs: Any) -> str:
    return verify_request(
        wire.method, wire.raw_path, wire.raw_query, wire.headers, wire.body, SECRETS.get, now, **kwargs
    )


def sdk_request(
    method: str,
    path_template: str,
    path_params: dict[str, str] | None = None,
    query: list[tuple[str, Any]] | None = None,
    body: str | None = None,
    *,
    date: str | None = DATE,
    ak: str = AK,
    sk: str = SK,
    extra_headers: dict[str, str] | None = None,
    algorithm: SigningAlgorithm = SigningAlgorithm.HMAC_SHA256,
) -> Wire:
    """Sign with the SDK exactly as its client does, then prepare it with requests (as sent)."""
    resource_path = path_template.replace("{project_id}", quote(PROJECT, safe=""))
    for name, value in (path_params or {}).items():
        resource_path = resource_path.replace("{" + name + "}", quote(str(value), safe=""))
    headers = {"User-Agent": UA, "Content-Type": "application/json;charset=utf-8", **(extra_headers or {})}
    if date is not None:
        headers["X-Sdk-Date"] = date
    request = SdkRequest(
        method=method,
        schema="http",
        host=HOST,
        resource_path=resource_path,
        query_params=list(query or []),
        header_params=headers,
        body=body,
        signing_algorithm=algorithm,
    )
    signed = BasicCredentials(ak, sk, PROJECT).sign_request(request)
    prepared = requests.Request(method, signed.url, headers=signed.header_params, data=signed.body).prepare()
    path, _, raw_query = prepared.path_url.partition("?")
    raw_body = prepared.body or b""
    if isinstance(raw_body, str):
        raw_body = raw_body.encode("utf-8")
    return Wire(method, path, raw_query, list(prepared.headers.items()), raw_body)


# --- the worked example of the specification ------------------------------------------------------

EXAMPLE_BODY = (
    b'{"src_cloud_type": "Aliyun", "src_region": "cn-hangzhou", "src_bucket": "src-bkt", '
    b'"src_ak": "SRC-AK", "src_sk": "SRC-SK", "dst_ak": "DST-AK", "dst_sk": "DST-SK", '
    b'"dst_region": "cn-north-4", "dst_bucket": "dst-bkt"}'
)
EXAMPLE_SIGNATURE = "231eda8ea62e85e615043d6e814d0cc7b21e76d1887ceefb23c3ee717e55bfb2"
EXAMPLE_HEADERS = [
    ("User-Agent", UA),
    ("Accept-Encoding", "gzip, deflate"),
    ("Accept", "*/*"),
    ("Connection", "keep-alive"),
    ("Content-Type", "application/json;charset=utf-8"),
    ("X-Project-Id", PROJECT),
    ("X-Sdk-Date", DATE),
    ("Host", HOST),
    (
        "Authorization",
        "SDK-HMAC-SHA256 Access=EXAMPLE-AK, SignedHeaders=content-type;host;user-agent;x-project-id;"
        f"x-sdk-date, Signature={EXAMPLE_SIGNATURE}",
    ),
    ("Content-Length", "215"),
]
EXAMPLE_SIGNED = ["content-type", "host", "user-agent", "x-project-id", "x-sdk-date"]


def test_spec_example_canonical_request_string_to_sign_and_signature() -> None:
    path = f"/v2/{PROJECT}/sync-tasks"
    canonical = canonical_request("POST", path, "", dict(EXAMPLE_HEADERS), EXAMPLE_SIGNED, EXAMPLE_BODY)
    assert canonical == (
        f"POST\n/v2/{PROJECT}/sync-tasks/\n\n"
        "content-type:application/json;charset=utf-8\n"
        f"host:{HOST}\n"
        f"user-agent:{UA}\n"
        f"x-project-id:{PROJECT}\n"
        f"x-sdk-date:{DATE}\n\n"
        "content-type;host;user-agent;x-project-id;x-sdk-date\n"
        "75a86247c4a9de140947db81d079e9fa5729b51b5c7d85aad6cc9ef29acc89e1"
    )
    to_sign = string_to_sign(canonical, DATE)
    assert to_sign == (
        "SDK-HMAC-SHA256\n20261124T185710Z\n50e8f09eb58441de2da377ff556072fb52d51cc6ea46393a2d73de4d87365028"
    )
    assert compute_signature(SK, to_sign) == EXAMPLE_SIGNATURE
    wire = Wire("POST", path, "", EXAMPLE_HEADERS, EXAMPLE_BODY)
    assert verify(wire) == AK


def test_spec_example_is_reproduced_by_the_sdk_signer() -> None:
    wire = sdk_request("POST", "/v2/{project_id}/sync-tasks", body=EXAMPLE_BODY.decode())
    assert parse_authorization(wire.header("Authorization")).signature == EXAMPLE_SIGNATURE
    assert verify(wire) == AK


def test_spec_example_rejected_with_another_secret() -> None:
    wire = Wire("POST", f"/v2/{PROJECT}/sync-tasks", "", EXAMPLE_HEADERS, EXAMPLE_BODY)
    with pytest.raises(SignatureError) as err:
        verify_request(wire.method, wire.raw_path, "", wire.headers, wire.body, {AK: "EXAMPLE-SK2"}.get, NOW)
    assert err.value.reason == "signature_mismatch"


# --- canonical forms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("", "/"),
        ("/v2", "/v2/"),
        ("/v2/", "/v2/"),
        ("/a%20b%2Fc%2Bd~%C3%A9", "/a%20b/c%2Bd~%C3%A9/"),
        ("/a b/é", "/a%20b/%C3%A9/"),
        ("/x//y", "/x//y/"),
        ("/%7Euser/a.b_c-d", "/~user/a.b_c-d/"),
        ("/100%25", "/100%25/"),
        ("/%ff", "/%FF/"),
    ],
)
def test_canonical_uri(raw: str, expected: str) -> None:
    assert canonical_uri(raw) == expected


def test_canonical_uri_keeps_invalid_utf8_distinct() -> None:
    assert canonical_uri("/a%FF") != canonical_uri("/a%FE")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("limit=10&offset=0&status=SYNCHRONIZING", "limit=10&offset=0&status=SYNCHRONIZING"),
        (
            "start_time=1&data_type=REQUEST,SUCCESS&end_time=2",
            "data_type=REQUEST%2CSUCCESS&end_time=2&start_time=1",
        ),
        ("data_type=REQUEST%2CSUCCESS", "data_type=REQUEST%2CSUCCESS"),
        ("b=2&a=1", "a=1&b=2"),
        ("a=2&a=1&a=10", "a=1&a=10&a=2"),
        ("a+b=c+d", "a%20b=c%20d"),  # a bare '+' is a space, as the query parser reads it
        ("a%2Bb=c%2Bd", "a%2Bb=c%2Bd"),
        ("a%20b=%E4%BB%BB", "a%20b=%E4%BB%BB"),
        ("flag&x=", "flag=&x="),
        ("&&a=1&", "a=1"),
        ("k=a=b", "k=a%3Db"),
    ],
)
def test_canonical_query(raw: str, expected: str) -> None:
    assert canonical_query(raw) == expected


# --- requests signed by the SDK ----------------------------------------------------------------------

TASK_IDS = [
    "d18befdd-eb82-41f3-8019-bbb593d74a3e",
    "a b/c+d~é",
    "任务-1",
    "x%2Fy",
    "100%",
    "semi;colon,comma?hash#",
    "...",  # ("." and ".." are removed by requests before sending)
]


@pytest.mark.parametrize("task_id", TASK_IDS)
@pytest.mark.parametrize(
    ("method", "template", "query", "body"),
    [
        ("GET", "/v2/{project_id}/sync-tasks/{id}", [("query_time", 1700000000000)], None),
        (
            "GET",
            "/v2/{project_id}/sync-tasks/{id}/statistics",
            [("data_type", "REQUEST,SUCCESS"), ("start_time", 1700000000000), ("end_time", 1700003600000)],
            None,
        ),
        (
            "POST",
            "/v2/{project_id}/sync-tasks/{id}/events",
            [],
            '{"object_keys": ["test%2F001.txt", "a b+c"]}',
        ),
        ("POST", "/v2/{project_id}/sync-tasks/{id}/stop", [], None),
        ("POST", "/v2/{project_id}/sync-tasks/{id}/start", [], '{"src_ak": "A", "src_sk": "B"}'),
        ("DELETE", "/v2/{project_id}/sync-tasks/{id}", [], None),
    ],
)
def test_sdk_signed_requests_verify(
    task_id: str, method: str, template: str, query: list[tuple[str, Any]], body: str | None
) -> None:
    wire = sdk_request(method, template, {"id": task_id}, query, body)
    assert verify(wire) == AK


@pytest.mark.parametrize(
    "query",
    [
        [("limit", 10), ("offset", 0), ("status", "SYNCHRONIZING")],
        [("key with space", "v a l"), ("plus+key", "1+1=2"), ("comma", "a,b,c")],
        [("ünï", "κλειδί/值"), ("empty", ""), ("tilde~", "~/?#[]@!$&'()*+,;=")],
        [("flag", True), ("other", False)],
        [("multi", ["b", "a", "c"])],
        [("dup", "2"), ("dup", "1")],
    ],
)
def test_sdk_signed_queries_verify(query: list[tuple[str, Any]]) -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks", query=query)
    assert verify(wire) == AK


@pytest.mark.parametrize("path", ["/", "/v2", "/v2/"])
def test_sdk_signed_version_paths_verify(path: str) -> None:
    assert verify(sdk_request("GET", path)) == AK


def test_non_ascii_header_value_verifies() -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks", extra_headers={"X-Client": "été 任务"})
    assert "x-client" in parse_authorization(wire.header("Authorization")).signed_headers
    assert verify(wire) == AK


def test_unicode_body_verifies() -> None:
    body = json.dumps({"object_keys": ["目录/文件 +.txt"]}, ensure_ascii=False)
    assert verify(sdk_request("POST", "/v2/{project_id}/sync-tasks/t/events", body=body)) == AK


# --- tampering ---------------------------------------------------------------------------------------


@pytest.fixture
def events_wire() -> Wire:
    return sdk_request(
        "POST",
        "/v2/{project_id}/sync-tasks/{id}/events",
        {"id": "a b/c+d~é"},
        [("data_type", "REQUEST,SUCCESS")],
        '{"object_keys": ["test%2F001.txt"]}',
    )


def _assert_rejected(wire: Wire, reason: str, now: datetime = NOW) -> None:
    with pytest.raises(SignatureError) as err:
        verify(wire, now)
    assert err.value.reason == reason


def test_tampered_body_rejected(events_wire: Wire) -> None:
    assert verify(events_wire) == AK
    events_wire.body = events_wire.body.replace(b"001", b"002")
    _assert_rejected(events_wire, "signature_mismatch")


def test_emptied_body_rejected(events_wire: Wire) -> None:
    events_wire.body = b""
    _assert_rejected(events_wire, "signature_mismatch")


@pytest.mark.parametrize(
    "path_change",
    [
        ("a%20b", "a%20c"),  # other task id
        ("%2Fc", "%2Fd"),
        ("/events", "/stop"),
        (f"/v2/{PROJECT}", "/v2/ffffffffffffffffffffffffffffffff"),
    ],
)
def test_tampered_path_rejected(events_wire: Wire, path_change: tuple[str, str]) -> None:
    old, new = path_change
    assert old in events_wire.raw_path
    events_wire.raw_path = events_wire.raw_path.replace(old, new)
    _assert_rejected(events_wire, "signature_mismatch")


@pytest.mark.parametrize(
    "query", ["data_type=REQUEST", "data_type=REQUEST%2CSUCCESS&x=1", "", "data_type=REQUEST%2CFAILURE"]
)
def test_tampered_query_rejected(events_wire: Wire, query: str) -> None:
    events_wire.raw_query = query
    _assert_rejected(events_wire, "signature_mismatch")


def test_equivalent_query_encoding_still_verifies(events_wire: Wire) -> None:
    # The same parameters, spelled differently on the wire, have the same canonical form.
    events_wire.raw_query = "data_type=REQUEST,SUCCESS"
    assert verify(events_wire) == AK


def test_tampered_method_rejected(events_wire: Wire) -> None:
    events_wire.method = "PUT"
    _assert_rejected(events_wire, "signature_mismatch")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Project-Id", "ffffffffffffffffffffffffffffffff"),
        ("Host", "127.0.0.1:9999"),
        ("Content-Type", "application/json"),
        ("User-Agent", "curl/8"),
    ],
)
def test_tampered_signed_header_rejected(events_wire: Wire, name: str, value: str) -> None:
    _assert_rejected(events_wire.with_header(name, value), "signature_mismatch")


def test_unsigned_header_may_change(events_wire: Wire) -> None:
    assert verify(events_wire.with_header("Accept", "text/plain").with_header("X-Other", "1")) == AK


def test_whitespace_around_signed_header_value_is_ignored(events_wire: Wire) -> None:
    project = events_wire.header("X-Project-Id")
    assert verify(events_wire.with_header("X-Project-Id", f"  {project}\t")) == AK


def test_missing_signed_header_rejected(events_wire: Wire) -> None:
    _assert_rejected(events_wire.without_header("X-Project-Id"), "missing_signed_header")


def test_duplicate_signed_header_rejected(events_wire: Wire) -> None:
    events_wire.headers.append(("x-project-id", "other"))
    _assert_rejected(events_wire, "duplicate_header")


def test_tampered_date_rejected(events_wire: Wire) -> None:
    # Still within the allowed skew, but not the signed value.
    _assert_rejected(events_wire.with_header("X-Sdk-Date", "20261124T185711Z"), "signature_mismatch")


@pytest.mark.parametrize("offset", [-900, -1, 0, 1, 900])
def test_date_within_skew_accepted(offset: int) -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks")
    assert verify(wire, NOW + timedelta(seconds=offset)) == AK


@pytest.mark.parametrize("offset", [-901, 901, -86400, 86400 * 365])
def test_date_outside_skew_rejected(offset: int) -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks")
    _assert_rejected(wire, "stale_date", NOW + timedelta(seconds=offset))


def test_custom_skew_and_naive_now() -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks")
    naive_now = datetime(2026, 11, 24, 18, 58, 10)
    assert verify(wire, naive_now, max_skew_seconds=60) == AK
    with pytest.raises(SignatureError) as err:
        verify(wire, naive_now, max_skew_seconds=59)
    assert err.value.reason == "stale_date"


def test_sdk_current_time_verifies_now() -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks", date=None)
    assert verify(wire, datetime.now(UTC)) == AK


def test_missing_date_rejected(events_wire: Wire) -> None:
    _assert_rejected(events_wire.without_header("X-Sdk-Date"), "missing_date")


@pytest.mark.parametrize(
    "value", ["2026-11-24T18:57:10Z", "20261124T185710", "20261324T185710Z", "", "x" * 16]
)
def test_invalid_date_rejected(events_wire: Wire, value: str) -> None:
    _assert_rejected(events_wire.with_header("X-Sdk-Date", value), "invalid_date")


def test_unknown_access_key_rejected() -> None:
    _assert_rejected(sdk_request("GET", "/v2/{project_id}/sync-tasks", ak="NOBODY"), "unknown_access_key")


def test_wrong_secret_rejected() -> None:
    _assert_rejected(
        sdk_request("GET", "/v2/{project_id}/sync-tasks", sk="not the secret"), "signature_mismatch"
    )


def test_other_key_pair_verifies_as_its_access_key() -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks", ak="OTHER-AK", sk="other secret")
    assert verify(wire) == "OTHER-AK"


def test_missing_authorization_rejected(events_wire: Wire) -> None:
    _assert_rejected(events_wire.without_header("Authorization"), "missing_authorization")
    _assert_rejected(events_wire.with_header("Authorization", "  "), "missing_authorization")


def test_duplicate_authorization_rejected(events_wire: Wire) -> None:
    events_wire.headers.append(("authorization", events_wire.header("Authorization")))
    _assert_rejected(events_wire, "duplicate_header")


def test_sm3_signature_rejected() -> None:
    wire = sdk_request("GET", "/v2/{project_id}/sync-tasks", algorithm=SigningAlgorithm.HMAC_SM3)
    assert wire.header("Authorization").startswith("SDK-HMAC-SM3 ")
    _assert_rejected(wire, "unsupported_algorithm")


@pytest.mark.parametrize(
    "value",
    [
        "V11-HMAC-SHA256 Credential=EXAMPLE-AK/20261124/cn-north-4/oms, SignedHeaders=host, Signature=00",
        "SDK-ECDSA-P256-SHA256 Access=EXAMPLE-AK, SignedHeaders=host;x-sdk-date, Signature=00",
        "Bearer abc",
        "sdk-hmac-sha256 Access=EXAMPLE-AK, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
    ],
)
def test_other_algorithms_rejected(events_wire: Wire, value: str) -> None:
    _assert_rejected(events_wire.with_header("Authorization", value), "unsupported_algorithm")


@pytest.mark.parametrize(
    "value",
    [
        "SDK-HMAC-SHA256",
        "SDK-HMAC-SHA256 ",
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date",
        "SDK-HMAC-SHA256 Access=AK, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=Host;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=abc",
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=" + "g" * 64,
        "SDK-HMAC-SHA256 Access=AK, Access=AK, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64 + ", Extra=1",
        "SDK-HMAC-SHA256 Access AK, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
    ],
)
def test_malformed_authorization_rejected(value: str) -> None:
    with pytest.raises(SignatureError) as err:
        parse_authorization(value)
    assert err.value.reason == "malformed_authorization"


def test_parse_authorization() -> None:
    parsed = parse_authorization(
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=content-type;host;x-sdk-date, Signature=" + "AB" * 32
    )
    assert parsed.algorithm == "SDK-HMAC-SHA256"
    assert parsed.access_key == "AK1"
    assert parsed.signed_headers == ("content-type", "host", "x-sdk-date")
    assert parsed.signature == "ab" * 32


def _resign(wire: Wire, signed_headers: list[str], secret: str = SK) -> Wire:
    """Sign a request ourselves over a chosen header list (the SDK always signs host and date)."""
    canonical = canonical_request(
        wire.method, wire.raw_path, wire.raw_query, wire.headers, signed_headers, wire.body
    )
    signature = compute_signature(secret, string_to_sign(canonical, wire.header("X-Sdk-Date")))
    value = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={';'.join(signed_headers)}, Signature={signature}"
    return wire.with_header("Authorization", value)


def test_own_resigning_matches_sdk(events_wire: Wire) -> None:
    signed = list(parse_authorization(events_wire.header("Authorization")).signed_headers)
    assert _resign(events_wire, signed).header("Authorization") == events_wire.header("Authorization")


def test_host_must_be_signed(events_wire: Wire) -> None:
    _assert_rejected(_resign(events_wire, ["content-type", "x-sdk-date"]), "host_not_signed")


def test_date_must_be_signed(events_wire: Wire) -> None:
    _assert_rejected(_resign(events_wire, ["content-type", "host"]), "date_not_signed")


def test_minimal_signed_headers_verify(events_wire: Wire) -> None:
    assert verify(_resign(events_wire, ["host", "x-sdk-date"])) == AK


def test_content_sha256_header_must_match_body(events_wire: Wire) -> None:
    import hashlib

    real = hashlib.sha256(events_wire.body).hexdigest()
    matching = events_wire.with_header("X-Sdk-Content-Sha256", real)
    assert verify(_resign(matching, ["host", "x-sdk-content-sha256", "x-sdk-date"])) == AK
    lying = events_wire.with_header("X-Sdk-Content-Sha256", EMPTY_BODY_SHA256)
    _assert_rejected(_resign(lying, ["host", "x-sdk-date"]), "payload_hash_mismatch")


def test_unsigned_payload_only_when_allowed() -> None:
    wire = sdk_request(
        "POST", "/v2/{project_id}/upload", body="raw text", extra_headers={"Content-Type": "text/plain"}
    )
    assert wire.header("X-Sdk-Content-Sha256") == "UNSIGNED-PAYLOAD"
    _assert_rejected(wire, "unsigned_payload")
    assert verify(wire, allow_unsigned_payload=True) == AK


# --- property: any SDK-signed request verifies; any single-byte body change does not -------------

# "." and ".." segments are resolved away by requests before sending, so they never reach a server.
_segment = st.text(min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_query = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    segments=st.lists(_segment, min_size=0, max_size=3),
    query=_query,
    body=st.binary(max_size=64),
    index=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_property_signed_requests_verify_and_body_changes_fail(
    method: str, segments: list[str], query: list[tuple[str, str]], body: bytes, index: int, flip: int
) -> None:
    template = "/v2/{project_id}" + "".join(f"/{{p{i}}}" for i in range(len(segments)))
    params = {f"p{i}": s for i, s in enumerate(segments)}
    request = SdkRequest(
        method=method,
        schema="http",
        host=HOST,
        resource_path=_fill(template, params),
        query_params=list(query),
        header_params={"User-Agent": UA, "Content-Type": "application/json", "X-Sdk-Date": DATE},
        body=body,
    )
    signed = BasicCredentials(AK, SK, PROJECT).sign_request(request)
    prepared = requests.Request(method, signed.url, headers=signed.header_params, data=signed.body).prepare()
    path, _, raw_query = prepared.path_url.partition("?")
    wire = Wire(method, path, raw_query, list(prepared.headers.items()), body)
    assert verify(wire) == AK

    if body:
        i = index % len(body)
        changed = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
    else:
        changed = bytes([flip])
    wire.body = changed
    with pytest.raises(SignatureError) as err:
        verify(wire)
    assert err.value.reason == "signature_mismatch"


def _fill(template: str, params: dict[str, str]) -> str:
    path = template.replace("{project_id}", PROJECT)
    for name, value in params.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return path


# --- end to end: the official OMS client against a capturing HTTP server ---------------------------


@dataclass
class Captured:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


@pytest.fixture(scope="module")
def capture_server() -> Iterator[tuple[str, queue.Queue[Captured]]]:
    captured: queue.Queue[Captured] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            captured.put(Captured(self.command, self.path, list(self.headers.items()), body))
            out = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", captured
    finally:
        server.shutdown()
        server.server_close()


def test_official_client_requests_verify(
    capture_server: tuple[str, queue.Queue[Captured]], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkoms.v2 import (
        CreateSyncEventsRequest,
        CreateSyncTaskReq,
        CreateSyncTaskRequest,
        DeleteSyncTaskRequest,
        ListApiVersionsRequest,
        ListSyncTasksRequest,
        ListSyncTaskStatisticRequest,
        OmsClient,
        ShowApiInfoRequest,
        ShowSyncTaskRequest,
        StartSyncTaskReq,
        StartSyncTaskRequest,
        StopSyncTaskRequest,
        SyncObjectReq,
    )

    monkeypatch.setenv("HOME", str(tmp_path))  # the SDK writes ~/.huaweicloud/application_id
    endpoint, captured = capture_server
    config = HttpConfig.get_default_config()
    config.timeout = (5, 5)
    client = (
        OmsClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(AK, SK, PROJECT))
        .with_endpoints([endpoint])
        .build()
    )
    task = "a b/c+d~é 任务,%2F"
    calls = [
        lambda: client.create_sync_task(
            CreateSyncTaskRequest(
                body=CreateSyncTaskReq(
                    src_cloud_type="Aliyun",
                    src_region="cn-hangzhou",
                    src_bucket="src-bkt",
                    src_ak="S",
                    src_sk="S",
                    dst_ak="D",
                    dst_sk="D",
                    dst_region="cn-north-4",
                    dst_bucket="dst-bkt",
                    description="描述 + ü",
                )
            )
        ),
        lambda: client.list_sync_tasks(ListSyncTasksRequest(limit=10, offset=0, status="SYNCHRONIZING")),
        lambda: client.show_sync_task(ShowSyncTaskRequest(sync_task_id=task, query_time="1700000000000")),
        lambda: client.create_sync_events(
            CreateSyncEventsRequest(
                sync_task_id=task, body=SyncObjectReq(object_keys=["test%2F001.txt", "a b+c", "é"])
            )
        ),
        lambda: client.list_sync_task_statistic(
            ListSyncTaskStatisticRequest(
                sync_task_id=task,
                data_type="REQUEST,SUCCESS",
                start_time="1700000000000",
                end_time="1700003600000",
            )
        ),
        lambda: client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task)),
        lambda: client.start_sync_task(
            StartSyncTaskRequest(
                sync_task_id=task, body=StartSyncTaskReq(src_ak="A", src_sk="B", dst_ak="C", dst_sk="D")
            )
        ),
        lambda: client.delete_sync_task(DeleteSyncTaskRequest(sync_task_id=task)),
        lambda: client.list_api_versions(ListApiVersionsRequest()),
        lambda: client.show_api_info(ShowApiInfoRequest(version="v2")),
    ]
    seen = []
    for call in calls:
        call()
        got = captured.get(timeout=5)
        path, _, raw_query = got.target.partition("?")
        assert verify(Wire(got.method, path, raw_query, got.headers, got.body), datetime.now(UTC)) == AK
        # The same request with one body byte changed, or another task id, must fail.
        if got.body:
            tampered = got.body[:-1] + bytes([got.body[-1] ^ 1])
            with pytest.raises(SignatureError):
                verify(Wire(got.method, path, raw_query, got.headers, tampered), datetime.now(UTC))
        seen.append((got.method, path, raw_query))
    assert ("GET", f"/v2/{PROJECT}/sync-tasks", "limit=10&offset=0&status=SYNCHRONIZING") in seen
    encoded_task = quote(task, safe="")
    assert (
        "GET",
        f"/v2/{PROJECT}/sync-tasks/{encoded_task}/statistics",
        "data_type=REQUEST%2CSUCCESS&end_time=1700003600000&start_time=1700000000000",
    ) in seen
    assert ("GET", "/", "") in seen
