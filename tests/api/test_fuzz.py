"""Property tests: no input, signed or not, makes the API answer 500 or leak a traceback."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import PROJECT
from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["src_cloud_type", "src_region", "src_bucket", "src_ak", "src_sk", "dst_ak", "dst_sk", "dst_region",
          "dst_bucket", "description", "enable_metadata_migration", "enable_restore", "dst_storage_policy",
          "consistency_check", "object_keys", "app_id", "source_cdn"]
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=10)
paths = st.sampled_from(["", "/{task}", "/{task}/events", "/{task}/start", "/{task}/stop", "/{task}/statistics",
                         "/{task}/failed-objects", "/{task}/failed-objects/retry"])
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert "Traceback" not in response.text
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        body = response.json()
        assert body["error_code"] and body["error_msg"]


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "DELETE"]), path=paths, body=bodies,
       task=st.text(min_size=1, max_size=60).filter(lambda t: "/" not in t),
       query=st.lists(st.tuples(st.sampled_from(["limit", "offset", "status", "query_time", "data_type",
                                                  "start_time", "end_time", "marker"]),
                                st.text(max_size=20)), max_size=4))
def test_signed_random_requests_never_500(api_server: OmsyncServer, keys: dict[str, Any], method: str, path: str,
                                          body: dict[str, Any], task: str, query: list[tuple[str, str]]) -> None:
    from urllib.parse import quote

    k = keys["main"]
    full = f"/v2/{PROJECT}/sync-tasks" + path.replace("{task}", quote(task, safe=""))
    response = signed_request(api_server.url, method, full, ak=k["access_key"], sk=k["secret_key"],
                              project_id=PROJECT, query=query, body=json.dumps(body).encode())
    check(response)


@FUZZ
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_signed_garbage_bodies_never_500(api_server: OmsyncServer, keys: dict[str, Any], raw: bytes,
                                         content_type: str) -> None:
    k = keys["main"]
    response = signed_request(api_server.url, "POST", f"/v2/{PROJECT}/sync-tasks", ak=k["access_key"],
                              sk=k["secret_key"], project_id=PROJECT, body=raw, content_type=content_type or "x/y")
    check(response)


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(["Authorization", "X-Sdk-Date", "X-Auth-Token", "Content-Type"]),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)),
       path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60))
def test_unsigned_random_requests_never_500(api_server: OmsyncServer, headers: dict[str, str], path: str) -> None:
    try:
        response = httpx.get(api_server.url + "/" + path.lstrip("/"), headers=headers, timeout=10)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError):
        return  # the client refused to send it
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
