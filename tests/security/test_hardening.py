"""Hardening of a running ``omsync serve`` (loopback only): local roots and symlinks, per-project
grants, idle and partial connections, login throttling, body limits, nesting and integer
bounds, query signing, logout, bucket names, rate floor.

Every test talks to a real server process over real sockets, with bounded counts and times.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

PROJECT = "hard0123456789abcdef0123456789a"
OTHER = "hardfedcba9876543210fedcba98765"
PASSWORD = "operator-pass-h4rd3n3d"
MAX_CONNECTIONS = 40
LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Setup:
    server: OmsyncServer
    keys: dict[str, dict[str, Any]]
    own_root: Path       # granted to PROJECT
    other_root: Path     # granted to OTHER
    shared_root: Path    # granted to every project; holds the data directory
    outside: Path        # granted to nobody

    def send(self, method: str, path: str, body: bytes = b"", project: str = PROJECT, **kwargs: Any) -> httpx.Response:
        key = self.keys[project]
        return signed_request(self.server.url, method, path.replace("{p}", project), ak=key["access_key"],
                              sk=key["secret_key"], project_id=project, body=body, **kwargs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("hardening")
    own, other, shared, outside = (base / n for n in ("own", "other", "shared", "outside"))
    for path in (own, other, shared, outside):
        path.mkdir()
    env = {
        "OMSYNC_FS_PROJECT_ROOTS": json.dumps({PROJECT: [str(own)], OTHER: [str(other)], "*": [str(shared)]}),
        "OMSYNC_DASHBOARD_PASSWORD": PASSWORD,
        "OMSYNC_HTTP_HEADER_TIMEOUT_SECONDS": "1",
        "OMSYNC_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "OMSYNC_LOGIN_MAX_FAILURES": "3",
        "OMSYNC_LOGIN_LOCKOUT_SECONDS": "30",
        "OMSYNC_MAX_BODY_BYTES": str(64 * 1024),
        "OMSYNC_TRUSTED_PROXIES": json.dumps(["127.0.0.1"]),
        "OMSYNC_RETRY_BASE_SECONDS": "0.05",
        "OMSYNC_MAX_ATTEMPTS": "1",
        "OMSYNC_CHECK_BUCKETS_ON_CREATE": "false",  # tasks name public cloud buckets that are not there
    }
    server = OmsyncServer(data_dir=shared / "data", env=env, workers=1).start()
    try:
        keys = {PROJECT: server.create_key(PROJECT), OTHER: server.create_key(OTHER)}
        yield Setup(server, keys, own, other, shared, outside)
    finally:
        server.stop()


def local_task(src: Path | str, dst: Path | str) -> bytes:
    return json.dumps({
        "src_cloud_type": "Local", "src_region": "local", "src_bucket": str(src), "src_ak": "a", "src_sk": "b",
        "dst_cloud_type": "Local", "dst_region": "local", "dst_bucket": str(dst), "dst_ak": "c", "dst_sk": "d",
    }).encode()


def assert_400(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "OMS.0064" and f"[{field}]" in body["error_detail"], body


# -- 1. local writes never follow a symlink out of the roots ----------------------------------


def test_event_key_through_a_symlinked_directory_creates_nothing_outside(setup: Setup) -> None:
    src, dst = setup.own_root / "src1", setup.own_root / "dst1"
    (src / "link").mkdir(parents=True)
    (src / "link" / "escape.txt").write_bytes(b"payload")
    (src / "plain.txt").write_bytes(b"fine")
    dst.mkdir()
    os.symlink(setup.outside, dst / "link")
    created = setup.send("POST", "/v2/{p}/sync-tasks", local_task(src, dst))
    assert created.status_code == 200, created.text
    task = created.json()["sync_task_id"]
    events = json.dumps({"object_keys": ["link%2Fescape.txt", "plain.txt"]}).encode()
    assert setup.send("POST", f"/v2/{{p}}/sync-tasks/{task}/events", events).status_code == 200

    def failed() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = setup.send("GET", f"/v2/{{p}}/sync-tasks/{task}/failed-objects").json()["objects"]
        return found

    objects = wait_for("the escaping key to fail", failed, timeout=60, context=setup.server.log)
    assert [o["key"] for o in objects] == ["link/escape.txt"]
    wait_for("the plain key to be copied", lambda: (dst / "plain.txt").exists(), timeout=60)
    assert list(setup.outside.rglob("*")) == []
    assert (dst / "link").is_symlink()


# -- 2. local roots are granted per project; the data directory is never reachable -------------


def test_a_project_cannot_name_another_projects_directory(setup: Setup) -> None:
    (setup.other_root / "theirs").mkdir(exist_ok=True)
    (setup.own_root / "mine").mkdir(exist_ok=True)
    refused = setup.send("POST", "/v2/{p}/sync-tasks", local_task(setup.other_root / "theirs", setup.own_root / "mine"))
    assert_400(refused, "src_bucket")
    refused = setup.send("POST", "/v2/{p}/sync-tasks", local_task(setup.own_root / "mine", setup.outside))
    assert_400(refused, "dst_bucket")
    allowed = setup.send("POST", "/v2/{p}/sync-tasks", local_task(setup.other_root / "theirs", setup.own_root / "mine"),
                         project=OTHER)
    assert_400(allowed, "dst_bucket")  # and the other way round
    # a symlink inside a granted root that points elsewhere does not widen the grant
    os.symlink(setup.other_root, setup.own_root / "to-other")
    refused = setup.send("POST", "/v2/{p}/sync-tasks", local_task(setup.own_root / "to-other", setup.own_root / "mine"))
    assert_400(refused, "src_bucket")


def test_the_data_directory_and_master_key_are_never_reachable(setup: Setup) -> None:
    data = setup.server.data_dir
    assert (data / "master.key").exists()
    (setup.shared_root / "out").mkdir(exist_ok=True)
    for bucket in (data, setup.shared_root):  # the data directory, and a directory holding it
        refused = setup.send("POST", "/v2/{p}/sync-tasks", local_task(bucket, setup.shared_root / "out"))
        assert_400(refused, "src_bucket")


# -- 3. idle and partial connections are timed out and bounded ---------------------------------


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_idle_and_half_sent_connections_are_closed_and_healthz_answers(setup: Setup) -> None:
    socks = [_connect(setup.server.url) for _ in range(MAX_CONNECTIONS - 10)]
    try:
        for index, sock in enumerate(socks):
            if index % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Partial: ")  # half a header
        assert httpx.get(setup.server.url + "/healthz", timeout=5).status_code == 200
        started = time.monotonic()
        assert all(_closed_by_server(sock, 5) for sock in socks)
        assert time.monotonic() - started < 5
    finally:
        for sock in socks:
            sock.close()
    assert httpx.get(setup.server.url + "/healthz", timeout=5).status_code == 200


def test_connections_over_the_limit_are_refused_at_once(setup: Setup) -> None:
    socks = [_connect(setup.server.url) for _ in range(MAX_CONNECTIONS + 20)]
    try:
        time.sleep(0.3)
        extra = _connect(setup.server.url)
        extra.settimeout(5)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = extra.recv(4096)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
    finally:
        for sock in socks:
            sock.close()
    wait_for("healthz to answer again", lambda: httpx.get(setup.server.url + "/healthz", timeout=5).status_code == 200,
             timeout=10)


# -- 4. dashboard logins are throttled; 9. logout ends the session everywhere ------------------


def _login(client: httpx.Client, **form: str) -> httpx.Response:
    page = client.get("/ui/login")
    match = LOGIN_TOKEN.search(page.text)
    assert match is not None, page.text
    return client.post("/ui/login", data={"login_token": match.group(1), **form})


def test_failed_logins_lock_out_the_address_and_the_account(setup: Setup) -> None:
    with httpx.Client(base_url=setup.server.url, timeout=10) as client:
        statuses = [_login(client, password=f"wrong-{n}").status_code for n in range(5)]
        assert statuses[:2] == [401, 401] and statuses[-1] == 429, statuses
        locked = _login(client, password=PASSWORD)  # the right password is refused while locked out
        assert locked.status_code == 429
        assert "Too many failed logins" in locked.text and int(locked.headers["retry-after"]) > 0
        # another address (through the trusted proxy) is still locked out for the operator account
        other = client.get("/ui/login", headers={"X-Forwarded-For": "192.0.2.7"})
        token = LOGIN_TOKEN.search(other.text)
        assert token is not None
        refused = client.post("/ui/login", data={"login_token": token.group(1), "password": PASSWORD},
                              headers={"X-Forwarded-For": "192.0.2.7"})
        assert refused.status_code == 429
    assert "dashboard login failed" in setup.server.log()
    assert PASSWORD not in setup.server.log() and "wrong-1" not in setup.server.log()


def test_logout_revokes_a_copied_cookie_and_cookies_are_secure_behind_tls(setup: Setup) -> None:
    key = setup.keys[PROJECT]
    with httpx.Client(base_url=setup.server.url, timeout=10, headers={"X-Forwarded-For": "192.0.2.9"}) as client:
        done = _login(client, access_key=key["access_key"], secret_key=key["secret_key"])
        assert done.status_code == 303, done.text
        cookie = client.cookies.get("omsync_ui")
        assert cookie
        page = client.get("/ui/tasks")
        assert page.status_code == 200
        csrf = CSRF.search(page.text)
        assert csrf is not None
        assert client.post("/ui/logout", data={"csrf": csrf.group(1)}).status_code == 303
    with httpx.Client(base_url=setup.server.url, timeout=10) as thief:
        thief.cookies.set("omsync_ui", cookie, path="/ui")
        again = thief.get("/ui/tasks")
        assert again.status_code == 303 and again.headers["location"] == "/ui/login"
    with httpx.Client(base_url=setup.server.url, timeout=10,
                      headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.10"}) as client:
        form = client.get("/ui/login")
        assert "secure" in form.headers["set-cookie"].lower()  # the proxy said the client used TLS
    with httpx.Client(base_url=setup.server.url, timeout=10) as client:
        assert "secure" not in client.get("/ui/login").headers["set-cookie"].lower()


# -- 5./6. body limits answer 413 from the stream ----------------------------------------------


def _raw(url: str, head: bytes, body: bytes = b"", wait: float = 5) -> bytes:
    sock = _connect(url)
    try:
        sock.sendall(head + body)
        sock.settimeout(wait)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        return answer
    finally:
        sock.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_chunked_body_over_the_limit_is_413_without_a_traceback(setup: Setup) -> None:
    # a known access key, so that the authentication reads the (chunked) body
    key = setup.keys[PROJECT]
    response = httpx.post(setup.server.url + f"/v2/{PROJECT}/sync-tasks", timeout=10,
                          content=iter([b"y" * 16384] * 6),
                          headers={"Authorization": f"SDK-HMAC-SHA256 Access={key['access_key']}, "
                                                    f"SignedHeaders=host;x-sdk-date, Signature={'0' * 64}",
                                   "X-Sdk-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())})
    assert response.status_code == 413, response.text
    assert "Traceback" not in setup.server.log()


def test_login_refuses_a_large_body_before_reading_it(setup: Setup) -> None:
    head = (b"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    # 20 KiB sent of a body that would be 12 MiB: the answer must come without the rest
    answer = _raw(setup.server.url, head, _chunk(b"a" * 20 * 1024), wait=5)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    declared = (b"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 12582912\r\n\r\n")
    assert _raw(setup.server.url, declared, wait=5).startswith(b"HTTP/1.1 413")


# -- 7. nesting and integer bounds are 400 naming the field ------------------------------------


def test_deep_nesting_and_huge_integers_are_400(setup: Setup) -> None:
    deep = b'{"object_keys": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_400(setup.send("POST", "/v2/{p}/sync-tasks", deep), "body")
    huge = json.dumps({"max_concurrency": 2**70}).encode()
    assert_400(setup.send("PUT", "/v2/{p}/sync-tasks/nope/limits", huge), "max_concurrency")
    marker = setup.send("GET", "/v2/{p}/sync-tasks/nope/failed-objects", query=[("marker", str(2**64))])
    assert_400(marker, "marker")
    assert "Traceback" not in setup.server.log()


ROUTES = [("POST", ""), ("GET", ""), ("GET", "/T"), ("DELETE", "/T"), ("POST", "/T/start"), ("POST", "/T/stop"),
          ("GET", "/T/statistics"), ("POST", "/T/events"), ("GET", "/T/failed-objects"),
          ("POST", "/T/failed-objects/retry"), ("GET", "/T/limits"), ("PUT", "/T/limits")]
QUERY_NAMES = ["limit", "offset", "marker", "query_time", "start_time", "end_time", "data_type", "status"]
BODY_FIELDS = ["object_keys", "max_concurrency", "max_objects_per_second", "max_bytes_per_second", "src_bucket",
               "enable_restore", "src_ak"]
big_ints = st.one_of(st.integers(), st.integers(min_value=2**62, max_value=2**80).flatmap(
    lambda n: st.sampled_from([n, -n])))
nested = st.integers(min_value=1, max_value=3000).map(lambda d: "[" * d + "1" + "]" * d)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), field=st.sampled_from(BODY_FIELDS), value=big_ints, depth=nested,
       use_depth=st.booleans(), query=st.lists(st.tuples(st.sampled_from(QUERY_NAMES), big_ints.map(str)), max_size=3))
def test_fuzz_every_route_with_nesting_and_integer_bounds(setup: Setup, route: tuple[str, str], field: str, value: int,
                                                          depth: str, use_depth: bool,
                                                          query: list[tuple[str, str]]) -> None:
    method, suffix = route
    body = f'{{"{field}": {depth if use_depth else value}}}'.encode()
    response = setup.send(method, "/v2/{p}/sync-tasks" + suffix.replace("T", "task-x"), body, query=query)
    assert response.status_code < 500, response.text
    if response.status_code == 400:
        # Start, Stop and Delete answer an unknown task with 400 OMS.1009 (their OMS pages list 400).
        assert response.json()["error_code"] in ("OMS.0064", "OMS.1009")


# -- 8. a bare '+' in a query means what the application reads -------------------------------


def test_a_signature_covers_a_bare_plus_as_the_space_it_is_read_as(setup: Setup) -> None:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    key = setup.keys[PROJECT]
    host = urlsplit(setup.server.url).netloc

    def signed(value: str) -> tuple[str, dict[str, str]]:
        request = SdkRequest(method="GET", schema="http", host=host, resource_path=f"/v2/{PROJECT}/sync-tasks",
                             query_params=[("status", value)], header_params={"X-Project-Id": PROJECT}, body=b"")
        Signer(BasicCredentials(key["access_key"], key["secret_key"], PROJECT)).sign(request)
        return request.uri, request.header_params

    uri, headers = signed("A+B")  # signed as a literal plus (%2B) ...
    assert "A%2BB" in uri
    swapped = httpx.get(setup.server.url + uri.replace("%2B", "+"), headers=headers, timeout=10)
    assert swapped.status_code == 401, swapped.text  # ... cannot be replayed as "A B"
    uri, headers = signed("A B")  # signed as a space, sent as a bare '+': same meaning, accepted
    plus = httpx.get(setup.server.url + uri.replace("%20", "+"), headers=headers, timeout=10)
    assert_400(plus, "status")


# -- 10. bucket names follow the provider's rules; also: a rate that never runs ---------------


@pytest.mark.parametrize(("cloud", "bucket"), [
    ("AWS", "arn:aws:s3:us-east-1:123456789012:accesspoint/evil"),
    ("AWS", "arn:aws:s3-object-lambda:us-east-1:123456789012:accesspoint/evil"),
    ("Aliyun", "evil.example.com:443/x"), ("HuaweiCloud", "Upper_Case"), ("Aliyun", "a"),
    ("AWS", "192.168.0.1"), ("S3", "http://evil.example/b"), ("S3", "b@evil.example"),
])
def test_bucket_names_follow_the_provider_rules(setup: Setup, cloud: str, bucket: str) -> None:
    body = {"src_cloud_type": cloud, "src_region": "us-east-1" if cloud == "AWS" else "cn-hangzhou",
            "src_bucket": bucket, "src_ak": "a", "src_sk": "b", "dst_ak": "c", "dst_sk": "d",
            "dst_region": "cn-north-4", "dst_bucket": "fine-bucket"}
    if cloud == "S3":
        body["src_region"] = "any"
    response = setup.send("POST", "/v2/{p}/sync-tasks", json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert "[src_bucket]" in response.json()["error_detail"] or "[src_region]" in response.json()["error_detail"]


def test_arn_bucket_is_refused_naming_the_field(setup: Setup) -> None:
    body = {"src_cloud_type": "AWS", "src_region": "us-east-1", "src_bucket": "ok-bucket", "src_ak": "a",
            "src_sk": "b", "dst_ak": "c", "dst_sk": "d", "dst_cloud_type": "AWS", "dst_region": "us-east-1",
            "dst_bucket": "arn:aws:s3:us-east-1:123456789012:accesspoint/evil"}
    assert_400(setup.send("POST", "/v2/{p}/sync-tasks", json.dumps(body).encode()), "dst_bucket")
    body["dst_bucket"] = "ok-destination"
    assert setup.send("POST", "/v2/{p}/sync-tasks", json.dumps(body).encode()).status_code == 200


def test_an_objects_per_second_limit_that_never_runs_is_refused(setup: Setup) -> None:
    created = setup.send("POST", "/v2/{p}/sync-tasks", local_task(setup.own_root, setup.own_root))
    assert created.status_code == 200, created.text
    task = quote(created.json()["sync_task_id"], safe="")
    for rate in ("1e-320", "0.0001"):
        response = setup.send("PUT", f"/v2/{{p}}/sync-tasks/{task}/limits",
                              b'{"max_objects_per_second": %s}' % rate.encode())
        assert_400(response, "max_objects_per_second")
    ok = setup.send("PUT", f"/v2/{{p}}/sync-tasks/{task}/limits", b'{"max_objects_per_second": 0.5}')
    assert ok.status_code == 200, ok.text
