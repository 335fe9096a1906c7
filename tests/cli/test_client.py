"""``OmsyncClient`` retry behaviour against a scripted HTTP server that verifies every signature.

The scripted server stands in for omsync only to produce 503/429 answers on demand; each request
it receives is checked with the server's own signature verification.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from omsync.api.signing import verify_request
from omsync.client import ApiConnectionError, ApiError, OmsyncClient, RetryNotice, RetryPolicy
from omsync.domain.keys import decode_event_key
from tests.omsync_server import free_port

AK, SK, PROJECT = "SCRIPTED-AK", "scripted secret/+=", "proj ect"


@dataclass
class Script:
    """Answers to give, in order (status, headers, body); the last one repeats."""

    answers: list[tuple[int, dict[str, str], bytes]]
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture()
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            raw_path, _, raw_query = self.path.partition("?")
            access_key = verify_request(self.command, raw_path, raw_query, list(self.headers.items()), body,
                                        {AK: SK}.get, datetime.now(UTC))
            script.seen.append({"method": self.command, "path": raw_path, "query": raw_query, "body": body,
                                "ak": access_key, "date": self.headers["X-Sdk-Date"]})
            status, headers, payload = script.answers[min(len(script.seen), len(script.answers)) - 1]
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", "X-Request-Id": f"rid-{len(script.seen)}",
                                **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


Answer = tuple[int, dict[str, str], bytes]
BUSY: Answer = (503, {"Retry-After": "7"}, b'{"error_code": "OMSYNC.0503", "error_msg": "backlog full"}')
THROTTLED: Answer = (429, {}, b'{"error_code": "APIGW.0308", "error_msg": "slow down"}')
OK_EMPTY: Answer = (200, {}, b"")


def test_503_and_429_are_retried_honouring_retry_after_and_re_signed(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [BUSY, THROTTLED, OK_EMPTY]
    waits: list[float] = []
    notices: list[RetryNotice] = []
    client = OmsyncClient(url, AK, SK, PROJECT, sleep=waits.append, on_retry=notices.append,
                          retry=RetryPolicy(max_retries=3, base_delay=0.01, max_delay=60))
    with client:
        client.send_keys("task 1", ["a b", "c+d", "e%2Ff", "ü/😀", "x\ty"])
    assert len(script.seen) == 3  # every attempt verified by verify_request, with a fresh date
    assert waits[0] >= 7 and waits[1] < 1  # Retry-After is a floor, not a fixed wait
    assert [n.attempt for n in notices] == [1, 2] and "OMSYNC.0503" in notices[0].reason
    request = script.seen[-1]
    assert request["path"] == "/v2/proj%20ect/sync-tasks/task%201/events"
    keys = json.loads(request["body"])["object_keys"]
    assert [decode_event_key(k) for k in keys] == ["a b", "c+d", "e%2Ff", "ü/😀", "x\ty"]
    assert [decode_event_key(k, plus_means_space=False) for k in keys] == ["a b", "c+d", "e%2Ff", "ü/😀", "x\ty"]


def test_retries_are_bounded_and_capped(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(503, {"Retry-After": "3600"}, BUSY[2])]
    waits: list[float] = []
    client = OmsyncClient(url, AK, SK, PROJECT, sleep=waits.append,
                          retry=RetryPolicy(max_retries=2, base_delay=0.01, max_delay=5))
    with pytest.raises(ApiError) as caught:
        client.create_sync_events("t", ["k"])
    assert len(script.seen) == 3 and waits == [5, 5]
    error = caught.value
    assert (error.status, error.error_code, error.request_id, error.retry_after) == (503, "OMSYNC.0503", "rid-3", 3600)
    assert "OMSYNC.0503" in str(error) and "rid-3" in str(error)


def test_other_errors_are_not_retried(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(400, {}, b'{"error_code": "OMS.0064", "error_msg": "bad", "error_detail": "request parameter [x]"}')]
    client = OmsyncClient(url, AK, SK, PROJECT, sleep=lambda s: None)
    with pytest.raises(ApiError) as caught:
        client.list_tasks(limit=5, status="STOPPED")
    assert len(script.seen) == 1
    assert caught.value.error_detail == "request parameter [x]"
    assert script.seen[0]["query"] == "limit=5&offset=0&status=STOPPED"


def test_not_json_error_body(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>")]
    client = OmsyncClient(url, AK, SK, PROJECT, sleep=lambda s: None, retry=RetryPolicy(max_retries=1))
    with pytest.raises(ApiError) as caught:
        client.stop_task("t")  # a POST: a 502 is not retried, the proxy may have passed it on
    assert len(script.seen) == 1
    assert caught.value.error_code == "HTTP.502" and "bad gateway" in caught.value.error_msg


def test_unreachable_endpoint_fails_fast() -> None:
    waits: list[float] = []
    client = OmsyncClient(f"http://127.0.0.1:{free_port()}", AK, SK, PROJECT, sleep=waits.append)
    with pytest.raises(ApiConnectionError):
        client.show_task("t")
    assert len(waits) == 2


def test_secret_never_in_repr() -> None:
    client = OmsyncClient("http://127.0.0.1:9", AK, SK, PROJECT)
    assert SK not in repr(client) and SK not in repr(client.__dict__)
    with pytest.raises(ValueError):
        OmsyncClient("ftp://x", AK, SK, PROJECT)
