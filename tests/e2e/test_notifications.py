"""Native notifications end to end: a real ``omsync serve`` with workers, moto as both clouds,
bodies built from the formats' documented samples (tests/notifications/samples)."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest

from omsync.stores.profiles import resolve_endpoint
from tests.e2e.conftest import PROJECT, Sync
from tests.key_corpus import KEY_CORPUS, holdable
from tests.notifications import formats
from tests.notifications.formats import Change, SnsSigner
from tests.rawhttp import signed_request
from tests.servers import S3Server

AWKWARD_IDS = ("space", "spaces-only", "plus", "plus-and-space", "percent", "percent-2F-literal",
               "percent-20-literal", "percent-utf8-literal", "question", "hash", "cjk", "emoji",
               "combining-mark", "precomposed", "ampersand-entity", "tilde-star")
AWKWARD = [key for kid, key in KEY_CORPUS if kid in AWKWARD_IDS]


def body_for(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest() * 3


def moto_endpoints(server: S3Server) -> dict[str, str]:
    url = server.endpoint_url + "#moto"
    return {"Aliyun:cn-hangzhou": url, "HuaweiCloud:cn-north-4": url}


class LocalSns:
    """A local stand-in for SNS's hosts: serves the test's signing certificate and records
    visits of SubscribeURL (127.0.0.1 only)."""

    def __init__(self, signer: SnsSigner) -> None:
        self.signer = signer
        self.visits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/cert.pem"):
                    payload = outer.signer.pem
                else:
                    outer.visits.append(self.path)
                    payload = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def local_sns() -> Iterator[LocalSns]:
    sns = LocalSns(SnsSigner())
    yield sns
    sns.stop()


@pytest.fixture(scope="module")
def sync(moto_s3: S3Server, make_sync: Callable[..., Sync]) -> Sync:
    return make_sync(moto_endpoints(moto_s3), sns_host_pattern=r"127\.0\.0\.1", sns_allow_http="true",
                     delete_poll_seconds="0.2")


_counter = iter(range(1, 10_000))


def new_task(sync: Sync, moto: S3Server, *, src: str | None = None, keys: list[str] | None = None) -> tuple[str, str, str]:
    """Source and destination buckets (the source holding ``keys``) and a task between them."""
    n = next(_counter)
    src = moto.make_bucket(src or f"ntf-{n}-src")
    dst = moto.make_bucket(f"ntf-{n}-dst")
    s3 = moto.client()
    for key in keys or []:
        s3.put_object(Bucket=src, Key=key, Body=body_for(key))
    task_id = sync.create_task(
        src_cloud_type="Aliyun", src_region="cn-hangzhou", src_bucket=src, src_ak=moto.access_key,
        src_sk=moto.secret_key, dst_ak=moto.access_key, dst_sk=moto.secret_key, dst_region="cn-north-4",
        dst_bucket=dst)
    return task_id, src, dst


def api(sync: Sync, method: str, path: str, body: Any = None) -> httpx.Response:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return signed_request(sync.server.url, method, f"/v2/{PROJECT}/sync-tasks{path}", ak=sync.key["access_key"],
                          sk=sync.key["secret_key"], project_id=PROJECT, body=raw)


def notify(sync: Sync, task_id: str, body: Any) -> dict[str, Any]:
    response = api(sync, "POST", f"/{task_id}/notifications", body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def destination_keys(moto: S3Server, bucket: str) -> dict[str, bytes]:
    s3 = moto.client()
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, EncodingType="url"):
        for item in page.get("Contents", []):
            key = unquote_plus(item["Key"])
            if key.startswith("oms/"):
                continue
            try:
                found[key] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue  # deleted between the listing and the read
    return found


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def bodies(name: str, bucket: str, changes: list[Change]) -> list[Any]:
    if name in formats.BUILDERS:
        return [formats.BUILDERS[name](bucket, changes)]
    return list(formats.PER_EVENT[name](bucket, changes))


# -- every format: the right objects, byte-exact --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(formats.BUILDERS) + sorted(formats.PER_EVENT))
def test_each_format_copies_awkward_keys_byte_exact_and_ignores_foreign_buckets(
        moto_s3: S3Server, sync: Sync, name: str) -> None:
    n = next(_counter)
    src = f"ntf-{n}-src-1250000000" if name == "tencent-cos" else None
    task_id, src, dst = new_task(sync, moto_s3, src=src, keys=[*AWKWARD, "foreign.txt"])
    changes = [Change(key, "created", f"{i + 1:X}") for i, key in enumerate(AWKWARD)]
    accepted = 0
    for body in bodies(name, src, changes):
        answer = notify(sync, task_id, body)
        accepted += answer["accepted"]
        assert answer["ignored"] == 0, answer
    assert accepted == len(AWKWARD)
    # The same format naming another bucket: counted, never copied (the key exists in the source).
    other = "ntf-other-1250000000" if name == "tencent-cos" else "someone-elses-bucket"
    for body in bodies(name, other, [Change("foreign.txt")]):
        answer = notify(sync, task_id, body)
        assert answer["accepted"] == 0 and answer["ignored_reasons"] == {"other_bucket": 1}, answer
    task = sync.wait_settled(task_id)
    assert (task.monthly_acceptance_request, task.monthly_success_object, task.monthly_failure_object) == \
        (len(AWKWARD), len(AWKWARD), 0)
    assert destination_keys(moto_s3, dst) == {key: body_for(key) for key in AWKWARD}


def test_whole_key_corpus_through_s3_and_event_grid(moto_s3: S3Server, sync: Sync) -> None:
    capabilities = resolve_endpoint("Aliyun", "cn-hangzhou", moto_endpoints(moto_s3)).capabilities()
    keys = [key for _, key in holdable(capabilities)]
    for builder in (formats.s3, formats.event_grid):
        task_id, src, dst = new_task(sync, moto_s3, keys=keys)
        answer = notify(sync, task_id, builder(src, [Change(k) for k in keys]))
        assert answer["accepted"] == len(keys), answer
        sync.wait_settled(task_id)
        assert destination_keys(moto_s3, dst) == {key: body_for(key) for key in keys}


def test_test_events_and_unknown_events_copy_nothing(moto_s3: S3Server, sync: Sync) -> None:
    task_id, src, dst = new_task(sync, moto_s3, keys=["x.txt"])
    answer = notify(sync, task_id, formats.sample("s3_test_event.json"))
    assert answer["accepted"] == 0 and answer["ignored_reasons"] == {"test_event": 1}
    restore = formats.s3(src, [Change("x.txt")])
    restore["Records"][0]["eventName"] = "ObjectRestore:Completed"
    assert notify(sync, task_id, restore)["ignored_reasons"] == {"unsupported_event": 1}
    time.sleep(1.0)
    assert sync.show(task_id).monthly_acceptance_request == 0
    assert destination_keys(moto_s3, dst) == {}


def test_late_older_notification_never_wins(moto_s3: S3Server, sync: Sync) -> None:
    task_id, src, dst = new_task(sync, moto_s3, keys=["k"])
    # A delete (sequencer 0A) then a late create carrying an older sequencer (09): the create loses.
    notify(sync, task_id, formats.s3(src, [Change("k", "deleted", "0A")]))
    answer = notify(sync, task_id, formats.s3(src, [Change("k", "created", "09")]))
    assert answer["accepted"] == 0 and answer["ignored_reasons"] == {"stale": 1}, answer
    # A newer create wins; the same sequencer again is a duplicate, also ignored.
    assert notify(sync, task_id, formats.s3(src, [Change("k", "created", "000B")]))["accepted"] == 1
    assert notify(sync, task_id, formats.s3(src, [Change("k", "created", "0B")]))["ignored_reasons"] == {"stale": 1}
    # Within one body only the newest record of a key counts.
    answer = notify(sync, task_id, formats.s3(src, [Change("k", "created", "0D"), Change("k", "created", "0C")]))
    assert answer["accepted"] == 1 and answer["ignored_reasons"] == {"stale": 1}
    sync.wait_settled(task_id)
    assert destination_keys(moto_s3, dst) == {"k": body_for("k")}


# -- the per-task secret webhook and SNS signatures ------------------------------------------------------


def webhook(sync: Sync, task_id: str) -> str:
    """Set a fresh secret for the task's webhook; return the URL a cloud would be given."""
    secret = secrets.token_urlsafe(32)
    response = api(sync, "PUT", f"/{task_id}/webhook", {"secret": secret})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["exists"] is True and answer["path"] == f"/v2/webhooks/{task_id}"
    assert secret not in response.text  # the API never sends a secret back
    shown = api(sync, "GET", f"/{task_id}/webhook")
    assert shown.json()["exists"] is True and secret not in shown.text
    return f"{sync.server.url}{answer['path']}?secret={secret}"


def test_sns_through_the_webhook_signature_checked(moto_s3: S3Server, sync: Sync, local_sns: LocalSns) -> None:
    task_id, src, dst = new_task(sync, moto_s3, keys=AWKWARD)
    url = webhook(sync, task_id)
    cert = local_sns.base + "/cert.pem"
    envelope = local_sns.signer.sign(formats.sns_envelope(formats.s3(src, [Change(k) for k in AWKWARD]), cert))
    forged = dict(envelope, Message=json.dumps(formats.s3(src, [Change("evil")])))
    refused = httpx.post(url, json=forged)
    assert refused.status_code == 401 and refused.json()["error_code"] == "APIGW.0301", refused.text
    wrong_cert = local_sns.signer.sign(dict(envelope, SigningCertURL="https://evil.example/cert.pem"))
    assert httpx.post(url, json=wrong_cert).status_code == 401
    answer = httpx.post(url, json=envelope)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(AWKWARD) and answer.json()["format"] == "sns-s3"
    sync.wait_settled(task_id)
    assert destination_keys(moto_s3, dst) == {key: body_for(key) for key in AWKWARD}
    assert sync.show(task_id).monthly_acceptance_request == len(AWKWARD)  # the forgery added nothing


def test_webhook_secret_wrong_missing_rotated(moto_s3: S3Server, sync: Sync) -> None:
    task_id, src, _ = new_task(sync, moto_s3, keys=["a"])
    old = webhook(sync, task_id)
    body = formats.minio(src, [Change("a")])
    base, _, secret = old.partition("?secret=")
    missing = httpx.post(base, json=body)
    assert missing.status_code == 401 and missing.json()["error_code"] == "APIGW.0301"
    wrong = httpx.post(base, params={"secret": secret[:-2] + "xx"}, json=body)
    assert wrong.status_code == 403 and wrong.json()["error_code"] == "APIGW.0302"
    other_task = httpx.post(sync.server.url + "/v2/webhooks/no-such-task", params={"secret": secret}, json=body)
    assert other_task.status_code == 403
    assert httpx.post(base, headers={"Authorization": f"Bearer {secret}"}, json=body).json()["accepted"] == 1
    new = webhook(sync, task_id)  # rotation: the old secret stops working at once
    assert httpx.post(old, json=body).status_code == 403
    assert httpx.post(new, json=body).status_code == 200
    assert secret not in sync.server.log()


def test_sns_subscription_confirmation_only_when_signed(moto_s3: S3Server, sync: Sync, local_sns: LocalSns) -> None:
    task_id, _, _ = new_task(sync, moto_s3)
    url = webhook(sync, task_id)
    confirmation = formats.sample("sns_subscription_confirmation.json")
    confirmation.update(SigningCertURL=local_sns.base + "/cert.pem",
                        SubscribeURL=local_sns.base + "/?Action=ConfirmSubscription&Token=t1")
    forged = dict(local_sns.signer.sign(confirmation), Token="other")
    assert httpx.post(url, json=forged).status_code == 401
    assert local_sns.visits == []
    off_host = local_sns.signer.sign(dict(confirmation, SubscribeURL="http://localhost:1/?Action=ConfirmSubscription"))
    assert httpx.post(url, json=off_host).status_code == 400
    answer = httpx.post(url, json=local_sns.signer.sign(confirmation))
    assert answer.status_code == 200 and answer.json()["subscription_confirmed"] is True, answer.text
    assert local_sns.visits == ["/?Action=ConfirmSubscription&Token=t1"]


def test_event_grid_validation_handshake(moto_s3: S3Server, sync: Sync) -> None:
    task_id, _, _ = new_task(sync, moto_s3)
    url = webhook(sync, task_id)
    answer = httpx.post(url, json=formats.sample("eventgrid_validation.json"))
    assert answer.status_code == 200 and answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    options = httpx.options(url, headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert options.status_code == 200 and options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_signed_endpoint_refusals(moto_s3: S3Server, sync: Sync) -> None:
    task_id, src, _ = new_task(sync, moto_s3)
    assert api(sync, "POST", "/no-such-task/notifications", formats.s3(src, [Change("a")])).status_code == 404
    bad_json = api(sync, "POST", f"/{task_id}/notifications", b"{not json")
    assert bad_json.status_code == 400 and "body" in bad_json.json()["error_msg"]
    unknown = api(sync, "POST", f"/{task_id}/notifications", {"hello": "world"})
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "OMS.0064"
    unsigned = httpx.post(f"{sync.server.url}/v2/{PROJECT}/sync-tasks/{task_id}/notifications",
                          json=formats.s3(src, [Change("a")]))
    assert unsigned.status_code == 401
    # Another project's credentials: refused on this project's path, and the task unknown on theirs.
    other = sync.server.create_key("another0123456789abcdef01234567")
    body = json.dumps(formats.s3(src, [Change("a")])).encode()
    for project, status in ((PROJECT, 403), (other["project_id"], 404)):
        response = signed_request(sync.server.url, "POST", f"/v2/{project}/sync-tasks/{task_id}/notifications",
                                  ak=other["access_key"], sk=other["secret_key"], project_id=project, body=body)
        assert response.status_code == status, response.text
        webhook_path = f"/v2/{project}/sync-tasks/{task_id}/webhook"
        assert signed_request(sync.server.url, "PUT", webhook_path, ak=other["access_key"], sk=other["secret_key"],
                              project_id=project, body=json.dumps({"secret": "s" * 40}).encode()).status_code == status
    # Weak or unusable secrets are refused, naming the field.
    for weak in ("short", "x" * 31, "has space" * 5, "q?uery=" * 6, "x" * 257):
        refused = api(sync, "PUT", f"/{task_id}/webhook", {"secret": weak})
        assert refused.status_code == 400 and "secret" in refused.json()["error_msg"], refused.text
    assert sync.show(task_id).monthly_acceptance_request == 0


# -- delete propagation ------------------------------------------------------------------------------------


def deletes(sync: Sync, task_id: str, **settings: Any) -> dict[str, Any]:
    if settings:
        response = api(sync, "PUT", f"/{task_id}/deletes", settings)
    else:
        response = api(sync, "GET", f"/{task_id}/deletes")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def copied(sync: Sync, moto: S3Server, keys: list[str]) -> tuple[str, str, str]:
    task_id, src, dst = new_task(sync, moto, keys=keys)
    notify(sync, task_id, formats.s3(src, [Change(k) for k in keys]))
    sync.wait_settled(task_id)
    assert set(destination_keys(moto, dst)) == set(keys)
    return task_id, src, dst


def test_deletes_are_off_by_default(moto_s3: S3Server, sync: Sync) -> None:
    task_id, src, dst = copied(sync, moto_s3, ["gone"])
    moto_s3.client().delete_object(Bucket=src, Key="gone")
    answer = notify(sync, task_id, formats.s3(src, [Change("gone", "deleted")]))
    assert answer["ignored_reasons"] == {"delete_propagation_off": 1} and answer["deletes_scheduled"] == 0
    assert deletes(sync, task_id)["propagate_deletes"] is False
    time.sleep(1.0)
    assert "gone" in destination_keys(moto_s3, dst)


def test_delete_of_a_key_the_source_still_has_deletes_nothing(moto_s3: S3Server, sync: Sync) -> None:
    task_id, src, dst = copied(sync, moto_s3, ["still here"])
    deletes(sync, task_id, propagate_deletes=True, delete_grace_seconds=0.5, max_deletes_per_minute=100)
    assert notify(sync, task_id, formats.s3(src, [Change("still here", "deleted")]))["deletes_scheduled"] == 1
    wait_for(lambda: deletes(sync, task_id)["kept"] == 1, what="the delete to be decided")
    assert destination_keys(moto_s3, dst) == {"still here": body_for("still here")}
    assert deletes(sync, task_id)["deleted"] == 0


def test_real_delete_applied_after_the_grace_delay_and_listed(moto_s3: S3Server, sync: Sync) -> None:
    keys = ["to delete/a b+c%d?#中.txt", "stays"]
    task_id, src, dst = copied(sync, moto_s3, keys)
    deletes(sync, task_id, propagate_deletes=True, delete_grace_seconds=3, max_deletes_per_minute=100)
    moto_s3.client().delete_object(Bucket=src, Key=keys[0])
    posted = time.monotonic()
    assert notify(sync, task_id, formats.event_grid(src, [Change(keys[0], "deleted", "1F")]))["deletes_scheduled"] == 1
    time.sleep(1.5)
    assert keys[0] in destination_keys(moto_s3, dst)  # the grace delay is not over yet
    wait_for(lambda: keys[0] not in destination_keys(moto_s3, dst), what="the delete to be applied")
    assert time.monotonic() - posted >= 2.9
    assert destination_keys(moto_s3, dst) == {"stays": body_for("stays")}
    state = deletes(sync, task_id)
    assert (state["deleted"], state["kept"], state["pending_deletes"]) == (1, 0, 0)
    s3 = moto_s3.client()

    def listed() -> list[str]:
        found = s3.list_objects_v2(Bucket=dst, Prefix=f"oms/sync_task/{task_id}/deleted_object_lists/").get("Contents", [])
        return [s3.get_object(Bucket=dst, Key=o["Key"])["Body"].read().decode() for o in found]

    wait_for(lambda: bool(listed()), what="the deleted-object list")
    [text] = listed()
    key, _, outcome, _ = text.rstrip("\n").split("\t")
    assert (key, outcome) == (keys[0], "deleted")


def test_older_delete_than_the_last_create_is_ignored(moto_s3: S3Server, sync: Sync) -> None:
    task_id, src, dst = new_task(sync, moto_s3, keys=["k"])
    deletes(sync, task_id, propagate_deletes=True, delete_grace_seconds=0.2, max_deletes_per_minute=100)
    assert notify(sync, task_id, formats.s3(src, [Change("k", "created", "20")]))["accepted"] == 1
    sync.wait_settled(task_id)
    moto_s3.client().delete_object(Bucket=src, Key="k")  # the source lacks it: only the order saves it
    answer = notify(sync, task_id, formats.s3(src, [Change("k", "deleted", "1F")]))
    assert answer["deletes_scheduled"] == 0 and answer["ignored_reasons"] == {"stale": 1}
    time.sleep(1.0)
    assert "k" in destination_keys(moto_s3, dst)


def test_delete_storm_trips_the_breaker_until_resumed(moto_s3: S3Server, sync: Sync) -> None:
    keys = [f"storm/{i}" for i in range(6)]
    task_id, src, dst = copied(sync, moto_s3, keys)
    deletes(sync, task_id, propagate_deletes=True, delete_grace_seconds=0.5, max_deletes_per_minute=3)
    s3 = moto_s3.client()
    for key in keys:
        s3.delete_object(Bucket=src, Key=key)
    answer = notify(sync, task_id, formats.s3(src, [Change(k, "deleted") for k in keys]))
    assert answer["deletes_scheduled"] == len(keys)
    state = deletes(sync, task_id)
    assert state["breaker_tripped"] is True and state["breaker_tripped_count"] == len(keys)
    time.sleep(2.0)
    assert set(destination_keys(moto_s3, dst)) == set(keys)  # nothing deleted while paused
    assert deletes(sync, task_id)["pending_deletes"] == len(keys)
    scraped = httpx.get(sync.server.url + "/metrics").text
    assert f'omsync_delete_breaker_open{{task_id="{task_id}"}} 1.0' in scraped
    assert "delete breaker tripped for task " + task_id in sync.server.log()
    with httpx.Client(base_url=sync.server.url, follow_redirects=True) as browser:
        form = browser.get("/ui/login").text
        token = re.search(r'name="login_token" value="([^"]+)"', form)
        assert token is not None
        browser.post("/ui/login", data={"login_token": token.group(1), "access_key": sync.key["access_key"],
                                        "secret_key": sync.key["secret_key"]})
        page = browser.get(f"/ui/tasks/{task_id}")
        assert page.status_code == 200 and 'id="delete-breaker"' in page.text and "paused" in page.text
        assert "deletes paused" in browser.get("/ui/tasks").text
    resumed = api(sync, "POST", f"/{task_id}/deletes/resume", {})
    assert resumed.status_code == 200 and resumed.json()["breaker_tripped"] is False
    wait_for(lambda: destination_keys(moto_s3, dst) == {}, what="the resumed deletes")
    assert deletes(sync, task_id)["deleted"] == len(keys)
    wait_for(lambda: f'omsync_delete_breaker_open{{task_id="{task_id}"}} 0.0' in httpx.get(sync.server.url + "/metrics").text,
             what="the gauge to close")


def test_notifications_coalesce_and_count_like_create_sync_events(moto_s3: S3Server, sync: Sync) -> None:
    from huaweicloudsdkoms.v2 import StartSyncTaskReq, StartSyncTaskRequest, StopSyncTaskRequest

    task_id, src, dst = new_task(sync, moto_s3, keys=["same key"])
    sync.client.stop_sync_task(StopSyncTaskRequest(sync_task_id=task_id))
    for _ in range(3):  # held while STOPPED, as CreateSyncEvents keys are
        assert notify(sync, task_id, formats.minio(src, [Change("same key")]))["accepted"] == 1
    assert sync.show(task_id).monthly_acceptance_request == 3
    sync.client.start_sync_task(StartSyncTaskRequest(sync_task_id=task_id, body=StartSyncTaskReq(
        src_ak=moto_s3.access_key, src_sk=moto_s3.secret_key, dst_ak=moto_s3.access_key, dst_sk=moto_s3.secret_key)))
    task = sync.wait_settled(task_id)
    assert (task.monthly_success_object, task.monthly_skip_object, task.monthly_failure_object) == (1, 2, 0)
    assert destination_keys(moto_s3, dst) == {"same key": body_for("same key")}
