"""Property tests of the notification endpoints: malformed and hostile bodies (random JSON of
notification-shaped fields, the documented samples with parts replaced, arbitrary bytes) never
make omsync answer 500, leak a traceback, or reach beyond 127.0.0.1."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import PROJECT, create_task
from tests.notifications.formats import SAMPLES
from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request

FIELDS = ["Records", "s3", "obs", "object", "key", "bucket", "name", "eventName", "eventSource", "sequencer",
          "Type", "Message", "TopicArn", "SigningCertURL", "SubscribeURL", "Signature", "SignatureVersion",
          "specversion", "type", "data", "eventType", "subject", "url", "validationCode", "events", "oss",
          "cos", "cosObject", "cosBucket", "appid", "event", "detail-type", "detail", "source", "message",
          "topic_urn", "TopicName", "EventName", "Key", "Event", "Service"]
leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
          | st.text(max_size=40) | st.sampled_from(["ObjectCreated:Put", "ObjectRemoved:Delete", "Notification",
                                                    "SubscriptionConfirmation", "Microsoft.Storage.BlobCreated",
                                                    "Microsoft.EventGrid.SubscriptionValidationEvent", "1.0",
                                                    "%", "%zz", "+", "\x00", "a" * 2000, "src-bkt", "ceph:s3"]))
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10),
                                                                     children, max_size=5),
    max_leaves=20,
)


def _local_only(value: Any) -> Any:
    """Every URL a sample names replaced by one on 127.0.0.1 port 9 (refused by the SNS host
    rule anyway), so that nothing can reach beyond this machine."""
    if isinstance(value, dict):
        return {k: ("http://127.0.0.1:9/x" if k in ("SigningCertURL", "SubscribeURL", "signing_cert_url",
                                                      "subscribe_url", "UnsubscribeURL") else _local_only(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_local_only(v) for v in value]
    return value


DOCUMENTED = [_local_only(json.loads(p.read_text(encoding="utf-8"))) for p in sorted(SAMPLES.glob("*.json"))]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _set(value: Any, path: tuple[Any, ...], new: Any) -> None:
    for part in path[:-1]:
        value = value[part]
    value[path[-1]] = new


@st.composite
def mutated_samples(draw: st.DrawFn) -> Any:
    body = copy.deepcopy(draw(st.sampled_from(DOCUMENTED)))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(body))
        if not paths:
            break
        _set(body, draw(st.sampled_from(paths)), _local_only(draw(json_values)))
    return body


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert "Traceback" not in response.text
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        body = response.json()
        assert body["error_code"] and body["error_msg"]


@pytest.fixture(scope="module")
def task(client: Any) -> str:
    return create_task(client, src_bucket="src-bkt")


@pytest.fixture(scope="module")
def hook(api_server: OmsyncServer, keys: dict[str, Any], task: str) -> str:
    k = keys["main"]
    secret = "fuzz-" + "s" * 40
    response = signed_request(api_server.url, "PUT", f"/v2/{PROJECT}/sync-tasks/{task}/webhook", ak=k["access_key"],
                              sk=k["secret_key"], project_id=PROJECT, body=json.dumps({"secret": secret}).encode())
    assert response.status_code == 200, response.text
    return f"{api_server.url}/v2/webhooks/{task}?secret={secret}"


def _post_signed(api_server: OmsyncServer, keys: dict[str, Any], task: str, raw: bytes) -> httpx.Response:
    k = keys["main"]
    return signed_request(api_server.url, "POST", f"/v2/{PROJECT}/sync-tasks/{task}/notifications",
                          ak=k["access_key"], sk=k["secret_key"], project_id=PROJECT, body=raw)


@FUZZ
@given(body=json_values | mutated_samples())
def test_signed_notification_bodies_never_500(api_server: OmsyncServer, keys: dict[str, Any], task: str,
                                              body: Any) -> None:
    check(_post_signed(api_server, keys, task, json.dumps(body).encode()))


@FUZZ
@given(body=mutated_samples() | json_values)
def test_webhook_bodies_never_500(hook: str, body: Any) -> None:
    check(httpx.post(hook, content=json.dumps(body).encode(), timeout=30))


@FUZZ
@given(raw=st.binary(max_size=400))
def test_garbage_bytes_never_500(api_server: OmsyncServer, keys: dict[str, Any], task: str, hook: str,
                                 raw: bytes) -> None:
    check(_post_signed(api_server, keys, task, raw))
    check(httpx.post(hook, content=raw, timeout=30))


@FUZZ
@given(secret=st.text(max_size=300), task_id=st.text(min_size=1, max_size=80).filter(lambda t: "/" not in t and "?" not in t and "#" not in t))
def test_webhook_secrets_and_task_ids_never_500(api_server: OmsyncServer, secret: str, task_id: str) -> None:
    from urllib.parse import quote

    try:
        response = httpx.post(f"{api_server.url}/v2/webhooks/{quote(task_id, safe='')}", params={"secret": secret},
                              json=DOCUMENTED[0], timeout=30)
    except (httpx.InvalidURL, httpx.LocalProtocolError):
        return
    check(response)
    assert response.status_code in (401, 403, 404)


def test_deep_and_huge_bodies_are_refused_cleanly(api_server: OmsyncServer, keys: dict[str, Any], task: str) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    response = _post_signed(api_server, keys, task, deep)
    check(response)
    assert response.status_code == 400
    many = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "src-bkt"},
                                                                   "object": {"key": f"k{i}"}}} for i in range(12_000)]}
    response = _post_signed(api_server, keys, task, json.dumps(many).encode())
    check(response)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 10_000 and response.json()["ignored_reasons"] == {"too_many_records": 2_000}
