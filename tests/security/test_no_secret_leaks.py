"""No configured secret ever leaves omsync: a full run, then every output is searched for them.

A real ``omsync serve`` with workers (DEBUG, JSON logs) syncs five tasks into moto buckets,
with failures: S3 to S3 created through the SDK, S3 to S3 created through the operator CLI,
a local directory to S3, and two tasks reading their source through a test CDN (one with its
access keys sent encrypted for an omsync data key, one with its CDN key sent so). Then the API, the CLI, the dashboard and ``/metrics`` are used,
including failed logins and refused requests that carry wrong secrets. The secrets searched
for: every task's access and secret keys (in plain text also those sent encrypted), the CDN
keys, the project's API secret key, the dashboard
password, the metrics token, the master key, and the wrong secrets sent. The places searched:
the server log, every CLI output, every page, every API response (headers included), the
object lists written to the destination buckets and the raw bytes of the database files. Each
place also has a positive check (something that must be there), so an empty search cannot pass.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.fernet import Fernet

from omsync.domain.keys import encode_key_for_event
from tests.cdn_server import CdnServer
from tests.omsync_server import OmsyncServer
from tests.rawhttp import signed_request
from tests.servers import S3Server
from tests.web.conftest import CSRF, LOGIN_TOKEN

pytestmark = pytest.mark.timeout(180)

PROJECT = "sec0123456789abcdef0123456789ab"
SDK_TASK = {"src_ak": "SDKSRCAK-q8v1x3", "src_sk": "SDKSRCSK-w4n7z2k9", "dst_ak": "SDKDSTAK-e5r2t8",
            "dst_sk": "SDKDSTSK-y6u3i0p1"}
CLI_TASK = {"src_ak": "CLISRCAK-a1s4d7", "src_sk": "CLISRCSK-f2g5h8j3", "dst_ak": "CLIDSTAK-k9l6m3",
            "dst_sk": "CLIDSTSK-z0x7c4v1"}
FS_TASK = {"src_ak": "FSSRCAK-b8n5m2", "src_sk": "FSSRCSK-q1w4e7r0", "dst_ak": "FSDSTAK-t3y6u9",
           "dst_sk": "FSDSTSK-i2o5p8a1"}
# Sent encrypted for an omsync data key (crypto type KMS), with a CDN source whose key is plain.
KMS_TASK = {"src_ak": "KMSSRCAK-r5t8y1", "src_sk": "KMSSRCSK-u4i7o0p3", "dst_ak": "KMSDSTAK-a2s5d8",
            "dst_sk": "KMSDSTSK-f1g4h7j0"}
CDN_KEY = "CDNKEY-l3k6j9h2"
# A CDN source whose key is sent encrypted.
CDN_KMS_KEY = "CDNKMSKEY-z8x5c2v7"
DASHBOARD_PASSWORD = "DASHPASS-h7j4k1l8"
METRICS_TOKEN = "METRICSTOKEN-g3f6d9s2"
WRONG_SECRETS = {"wrong API secret key": "WRONGAPISK-m5n2b8v4", "wrong dashboard password": "WRONGPASS-c6x3z9l2"}
PRESENT = ["ok/one.txt", "ok/two words.txt", "ok/plus+sign.txt"]
MISSING = ["gone/missing.txt"]


def leaks(blob: str | bytes, secrets: dict[str, str]) -> list[str]:
    """Names of the ``secrets`` found in ``blob``: as they are, percent-encoded or base64-encoded
    (as in an HTTP Basic header)."""
    data = blob.encode("utf-8", "surrogateescape") if isinstance(blob, str) else blob
    found = []
    for name, secret in secrets.items():
        raw = secret.encode("utf-8")
        forms = {raw, quote(secret, safe="").encode("ascii"), base64.b64encode(raw), base64.urlsafe_b64encode(raw)}
        if any(form in data for form in forms):
            found.append(name)
    return found


def test_the_leak_finder_finds_planted_secrets() -> None:
    secrets = {"task sk": "SDKSRCSK-w4n7z2k9", "api sk": "x/y+z=="}
    assert leaks("nothing to see here", secrets) == []
    assert leaks('{"msg": "signed with SDKSRCSK-w4n7z2k9"}', secrets) == ["task sk"]
    assert leaks(b"\x00\x01binary SDKSRCSK-w4n7z2k9\xff", secrets) == ["task sk"]
    assert leaks("/path?sk=x%2Fy%2Bz%3D%3D", secrets) == ["api sk"]
    assert leaks("Authorization: Basic " + base64.b64encode(b"x/y+z==").decode(), secrets) == ["api sk"]


@dataclass
class Outputs:
    """Everything omsync said during the run, by where it was said."""

    texts: dict[str, str | bytes] = field(default_factory=dict)

    def add(self, place: str, text: str | bytes) -> None:
        assert place not in self.texts, place
        self.texts[place] = text

    def response(self, place: str, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.add(place, f"{response.status_code}\n{headers}\n\n{response.text}")
        return response


@dataclass
class Run:
    server: OmsyncServer
    api_key: dict[str, Any]
    master_key: str
    home: Path

    def api(self, method: str, path: str, *, sk: str | None = None, body: Any = None,
            query: list[tuple[str, Any]] | None = None) -> httpx.Response:
        return signed_request(self.server.url, method, f"/v2/{PROJECT}{path}", ak=self.api_key["access_key"],
                              sk=sk or self.api_key["secret_key"], project_id=PROJECT, query=query,
                              body=json.dumps(body).encode() if body is not None else b"")

    def cli(self, *args: str, env: dict[str, str] | None = None,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OMSYNC_")}
        full = {**base, "HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                "PYTHONIOENCODING": "utf-8", "COLUMNS": "200", **self.server.env,
                "OMSYNC_ENDPOINT": self.server.url, "OMSYNC_AK": self.api_key["access_key"],
                "OMSYNC_SK": self.api_key["secret_key"], "OMSYNC_PROJECT_ID": PROJECT, **(env or {})}
        return subprocess.run([sys.executable, "-m", "omsync", *args], capture_output=True, text=True,
                              env=full, timeout=60, check=False, input=input_text)


@pytest.fixture()
def run(moto_s3: S3Server, tmp_path: Path) -> Iterator[Run]:
    master_key = Fernet.generate_key().decode()
    fs_root = tmp_path / "fs"
    (fs_root / "source" / "ok").mkdir(parents=True)
    moto = moto_s3.endpoint_url + "#moto"
    env = {
        "OMSYNC_ENDPOINTS": json.dumps({"Aliyun:cn-hangzhou": moto, "HuaweiCloud:cn-north-4": moto}),
        "OMSYNC_LOG_LEVEL": "DEBUG",
        "OMSYNC_LOG_JSON": "true",
        "OMSYNC_MASTER_KEY": master_key,
        "OMSYNC_DASHBOARD_PASSWORD": DASHBOARD_PASSWORD,
        "OMSYNC_METRICS_TOKEN": METRICS_TOKEN,
        "OMSYNC_FS_ROOTS": json.dumps([str(fs_root)]),
        "OMSYNC_OBJECT_LIST_INTERVAL_SECONDS": "0.5",
        "OMSYNC_RETRY_BASE_SECONDS": "0.05",
        "OMSYNC_RETRY_MAX_SECONDS": "0.2",
    }
    server = OmsyncServer(data_dir=tmp_path / "data", env=env, workers=4).start()
    home = tmp_path / "home"
    home.mkdir()
    try:
        yield Run(server, server.create_key(PROJECT), master_key, home)
    finally:
        server.stop()


def wait_settled(run: Run, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        shown = run.api("GET", f"/sync-tasks/{task_id}", query=[("query_time", int(time.time() * 1000))]).json()
        done = shown["monthly_success_object"] + shown["monthly_failure_object"] + shown["monthly_skip_object"]
        if shown["monthly_acceptance_request"] and done == shown["monthly_acceptance_request"]:
            return dict(shown)
        assert time.monotonic() < deadline, f"task {task_id} did not settle: {shown}"
        time.sleep(0.1)


def object_lists(moto_s3: S3Server, bucket: str, task_id: str, kinds: set[str]) -> dict[str, bytes]:
    """The object lists of the task in ``bucket``, once lists of every kind in ``kinds`` exist."""
    s3 = moto_s3.client()
    prefix = f"oms/sync_task/{task_id}/"
    deadline = time.monotonic() + 20
    while True:
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        if kinds <= {key.split("/")[3] for key in listed}:
            return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in listed}
        assert time.monotonic() < deadline, f"object lists of {task_id} not written: {listed}"
        time.sleep(0.2)


def dashboard_pages(run: Run, outputs: Outputs, who: str, form: dict[str, str], task_ids: list[str]) -> None:
    with httpx.Client(base_url=run.server.url, follow_redirects=False, timeout=30) as client:
        page = outputs.response(f"{who}: login form", client.get("/ui/login"))
        token = LOGIN_TOKEN.search(page.text)
        assert token is not None
        done = outputs.response(f"{who}: login", client.post("/ui/login", data={"login_token": token.group(1), **form}))
        assert done.status_code == 303, done.text
        listing = outputs.response(f"{who}: task list page", client.get("/ui/tasks"))
        assert listing.status_code == 200
        for task_id in task_ids:
            page = outputs.response(f"{who}: task page {task_id}", client.get(f"/ui/tasks/{task_id}"))
            assert page.status_code == 200 and task_id in page.text
        csrf = CSRF.search(listing.text)
        assert csrf is not None
        outputs.response(f"{who}: retry all", client.post(f"/ui/tasks/{task_ids[0]}/retry",
                                                          data={"csrf": csrf.group(1), "all": "1"}))


def refused_login(run: Run, outputs: Outputs, who: str, form: dict[str, str]) -> None:
    with httpx.Client(base_url=run.server.url, follow_redirects=False, timeout=30) as client:
        token = LOGIN_TOKEN.search(client.get("/ui/login").text)
        assert token is not None
        refused = outputs.response(who, client.post("/ui/login", data={"login_token": token.group(1), **form}))
        assert refused.status_code == 401


def test_a_full_run_leaks_no_secret(moto_s3: S3Server, run: Run, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        full_run(moto_s3, run, tmp_path, stack)


def full_run(moto_s3: S3Server, run: Run, tmp_path: Path, stack: contextlib.ExitStack) -> None:
    server = run.server
    outputs = Outputs()
    secrets = {
        **{f"SDK task {k}": v for k, v in SDK_TASK.items()},
        **{f"CLI task {k}": v for k, v in CLI_TASK.items()},
        **{f"local task {k}": v for k, v in FS_TASK.items()},
        **{f"KMS task {k}": v for k, v in KMS_TASK.items()},
        "CDN key": CDN_KEY,
        "CDN key sent encrypted": CDN_KMS_KEY,
        "API secret key": run.api_key["secret_key"],
        "dashboard password": DASHBOARD_PASSWORD,
        "metrics token": METRICS_TOKEN,
        "master key": run.master_key,
        **WRONG_SECRETS,
    }

    # -- the run ----------------------------------------------------------------------------
    # moto accepts any credentials, so every task can carry its own distinctive ones.
    src, dst, cli_dst, fs_dst = (moto_s3.make_bucket(f"leak-{n}") for n in ("src", "dst", "cli-dst", "fs-dst"))
    s3 = moto_s3.client()
    for key in PRESENT:
        s3.put_object(Bucket=src, Key=key, Body=key.encode() * 10)
        path = tmp_path / "fs" / "source" / key
        path.write_bytes(key.encode() * 10)

    common = {"src_region": "cn-hangzhou", "dst_region": "cn-north-4", "enable_metadata_migration": True}
    created = outputs.response("API: create S3 task", run.api("POST", "/sync-tasks", body={
        "src_cloud_type": "Aliyun", "src_bucket": src, "dst_bucket": dst, **common, **SDK_TASK}))
    assert created.status_code == 200, created.text
    sdk_task = created.json()["sync_task_id"]
    created = outputs.response("API: create local task", run.api("POST", "/sync-tasks", body={
        "src_cloud_type": "Local", "src_region": "local", "src_bucket": str(tmp_path / "fs" / "source"),
        "dst_region": "cn-north-4", "dst_bucket": fs_dst, **FS_TASK}))
    assert created.status_code == 200, created.text
    fs_task = created.json()["sync_task_id"]
    cli_created = run.cli("task", "create", "--src-region", "cn-hangzhou", "--src-bucket", src, "--dst-region",
                          "cn-north-4", "--dst-bucket", cli_dst, "--json",
                          env={f"OMSYNC_{k.upper()}": v for k, v in CLI_TASK.items()})
    outputs.add("CLI: task create", cli_created.stdout + cli_created.stderr)
    assert cli_created.returncode == 0, cli_created.stderr
    cli_task = json.loads(cli_created.stdout)["sync_task_id"]

    # Credentials and a CDN key encrypted for a data key; two CDN sources (ALIYUN_OSS_A), one
    # with its key in plain text, one with it encrypted.
    data_dir = ("--data-dir", str(server.data_dir))
    kms_created = run.cli("kms", "create", "--project-id", PROJECT, "--json", *data_dir)
    outputs.add("CLI: kms create", kms_created.stdout + kms_created.stderr)
    key_id = json.loads(kms_created.stdout)["key_id"]
    sealed: dict[str, str] = {}
    for name, value in {**KMS_TASK, "cdn": CDN_KMS_KEY}.items():
        done = run.cli("kms", "encrypt", "--key-id", key_id, *data_dir, input_text=value + "\n")
        outputs.add(f"CLI: kms encrypt {name}", done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
        sealed[name] = done.stdout.strip()
    over_api = outputs.response("API: kms encrypt", run.api("POST", f"/kms-keys/{key_id}/encrypt",
                                                            body={"plaintext": KMS_TASK["src_sk"]}))
    assert over_api.status_code == 200 and over_api.json()["ciphertext"].startswith("okms1:1:")
    for name, args in {"rotate": ("rotate", key_id), "list": ("list", "--json")}.items():
        done = run.cli("kms", *args, *data_dir)
        outputs.add(f"CLI: kms {name}", done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
    kms_dst, cdn_dst = moto_s3.make_bucket("leak-kms-dst"), moto_s3.make_bucket("leak-cdn-dst")
    plain_cdn, kms_cdn = (CdnServer(s3, src, "ALIYUN_OSS_A", secret) for secret in (CDN_KEY, CDN_KMS_KEY))
    stack.enter_context(plain_cdn)
    stack.enter_context(kms_cdn)
    created = outputs.response("API: create KMS + CDN task", run.api("POST", "/sync-tasks", body={
        "src_cloud_type": "Aliyun", "src_bucket": src, "dst_bucket": kms_dst, **common,
        **{k: sealed[k] for k in KMS_TASK}, "src_crypto_type": "KMS", "src_kms_key_id": key_id,
        "dst_crypto_type": "KMS", "dst_kms_key_id": key_id,
        "source_cdn": {"domain": plain_cdn.domain, "protocol": "http", "authentication_type": "ALIYUN_OSS_A",
                       "authentication_key": CDN_KEY}}))
    assert created.status_code == 200, created.text
    kms_task = created.json()["sync_task_id"]
    created = outputs.response("API: create task with an encrypted CDN key", run.api("POST", "/sync-tasks", body={
        "src_cloud_type": "Aliyun", "src_bucket": src, "dst_bucket": cdn_dst, **common, **SDK_TASK,
        "source_cdn": {"domain": kms_cdn.domain, "protocol": "http", "authentication_type": "ALIYUN_OSS_A",
                       "authentication_key": sealed["cdn"], "crypto_type": "KMS", "kms_key_id": key_id}}))
    assert created.status_code == 200, created.text
    cdn_task = created.json()["sync_task_id"]
    tasks = [sdk_task, cli_task, fs_task, kms_task, cdn_task]

    for task_id in (sdk_task, fs_task, kms_task, cdn_task):
        sent = outputs.response(f"API: events {task_id}", run.api("POST", f"/sync-tasks/{task_id}/events",
                                                                  body={"object_keys": [encode_key_for_event(k) for k in PRESENT + MISSING]}))
        assert sent.status_code == 200, sent.text
    cli_sent = run.cli("events", "send", cli_task, *PRESENT, *MISSING, "--json")
    outputs.add("CLI: events send", cli_sent.stdout + cli_sent.stderr)
    assert cli_sent.returncode == 0, cli_sent.stderr
    for task_id in tasks:
        settled = wait_settled(run, task_id)
        assert (settled["monthly_success_object"], settled["monthly_failure_object"]) == (len(PRESENT), len(MISSING))

    # -- every way of looking at it -----------------------------------------------------------
    now = int(time.time() * 1000)
    outputs.response("API: versions", httpx.get(f"{server.url}/", timeout=10))
    outputs.response("API: healthz", httpx.get(f"{server.url}/healthz", timeout=10))
    outputs.response("API: readyz", httpx.get(f"{server.url}/readyz", timeout=10))
    outputs.response("API: list tasks", run.api("GET", "/sync-tasks", query=[("limit", 100)]))
    for task_id in tasks:
        outputs.response(f"API: show {task_id}", run.api("GET", f"/sync-tasks/{task_id}", query=[("query_time", now)]))
        outputs.response(f"API: statistics {task_id}", run.api(
            "GET", f"/sync-tasks/{task_id}/statistics",
            query=[("data_type", "REQUEST,SUCCESS,FAILURE,SKIP,SIZE"), ("start_time", now - 3_600_000),
                   ("end_time", now + 60_000)]))
        failed = outputs.response(f"API: failed objects {task_id}", run.api("GET", f"/sync-tasks/{task_id}/failed-objects"))
        assert [o["key"] for o in failed.json()["objects"]] == MISSING
    stopped = outputs.response("API: stop", run.api("POST", f"/sync-tasks/{sdk_task}/stop"))
    assert stopped.status_code == 200
    started = outputs.response("API: start with credentials", run.api("POST", f"/sync-tasks/{sdk_task}/start",
                                                                       body=SDK_TASK))
    assert started.status_code == 200, started.text
    outputs.response("API: re-drive", run.api("POST", f"/sync-tasks/{sdk_task}/failed-objects/retry", body={}))
    # Refusals echo nothing of what was sent: a wrong signature, an invalid task with credentials.
    wrong = outputs.response("API: wrong secret key", run.api("GET", "/sync-tasks", sk=WRONG_SECRETS["wrong API secret key"]))
    assert wrong.status_code == 401
    invalid = outputs.response("API: invalid task", run.api("POST", "/sync-tasks", body={
        "src_cloud_type": "Aliyun", "src_bucket": src, "dst_bucket": dst, **common, "src_region": "nowhere-9",
        **SDK_TASK}))
    assert invalid.status_code == 400
    invalid = outputs.response("API: malformed credentials", run.api("POST", "/sync-tasks", body={
        "src_cloud_type": "Aliyun", "src_bucket": src, "dst_bucket": dst, **common, **SDK_TASK,
        "dst_sk": [SDK_TASK["dst_sk"]]}))
    assert invalid.status_code == 400
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    scraped = outputs.response("metrics", httpx.get(f"{server.url}/metrics", timeout=10,
                                                    headers={"Authorization": f"Bearer {METRICS_TOKEN}"}))
    assert scraped.status_code == 200 and sdk_task in scraped.text

    for name, args in {
        "task list": ("task", "list", "--json"),
        "task show": ("task", "show", sdk_task, "--json"),
        "task show (table)": ("task", "show", cli_task),
        "failed": ("failed", fs_task, "--json"),
        "stats": ("stats", sdk_task),
        "api": ("api", "GET", f"/v2/{PROJECT}/sync-tasks"),
        "keys list": ("keys", "list", "--json", "--data-dir", str(server.data_dir)),
    }.items():
        done = run.cli(*args)
        outputs.add(f"CLI: {name}", done.stdout + done.stderr)
        assert done.returncode == 0, (name, done.stderr)
    refused = run.cli("task", "list", env={"OMSYNC_SK": WRONG_SECRETS["wrong API secret key"]})
    outputs.add("CLI: wrong secret key", refused.stdout + refused.stderr)
    assert refused.returncode != 0

    dashboard_pages(run, outputs, "operator", {"password": DASHBOARD_PASSWORD}, tasks)
    dashboard_pages(run, outputs, "project", {"access_key": run.api_key["access_key"],
                                              "secret_key": run.api_key["secret_key"]}, tasks)
    refused_login(run, outputs, "dashboard: wrong password", {"password": WRONG_SECRETS["wrong dashboard password"]})
    refused_login(run, outputs, "dashboard: wrong secret key", {"access_key": run.api_key["access_key"],
                                                                "secret_key": WRONG_SECRETS["wrong API secret key"]})

    for task_id, bucket in ((sdk_task, dst), (cli_task, cli_dst), (fs_task, fs_dst), (kms_task, kms_dst),
                            (cdn_task, cdn_dst)):
        for key, body in object_lists(moto_s3, bucket, task_id, {"success_object_lists", "failed_object_lists"}).items():
            outputs.add(f"object list {key}", body)
    server.stop()
    log = server.log()
    outputs.add("server log", log)
    for path in sorted(server.data_dir.iterdir()):
        if path.is_file():
            outputs.add(f"data file {path.name}", path.read_bytes())

    # -- positive checks: the search looks at real content -------------------------------------
    texts = outputs.texts
    assert run.api_key["access_key"].encode() in texts["data file omsync.db"] + texts.get("data file omsync.db-wal", b"")
    assert sum(1 for name in texts if name.startswith("data file omsync.db")) >= 1
    assert all(task_id in str(texts["CLI: task list"]) for task_id in tasks)
    assert run.api_key["access_key"] in str(texts["CLI: keys list"])
    assert key_id in str(texts["CLI: kms list"]) and all(v.startswith("okms1:1:") for v in sealed.values())
    assert sorted(set(plain_cdn.served)) == sorted(PRESENT) == sorted(set(kms_cdn.served))  # bytes via the CDNs
    assert "ALIYUN_OSS_A" in str(texts[f"API: show {kms_task}"])
    assert all(task_id in str(texts["operator: task list page"]) for task_id in tasks)
    assert MISSING[0] in str(texts[f"API: failed objects {fs_task}"])
    lists = b"".join(v for k, v in texts.items() if k.startswith("object list") and isinstance(v, bytes))
    assert b"gone/missing.txt" in lists and b"ok/one.txt" in lists
    records = [json.loads(line) for line in log.splitlines()]  # OMSYNC_LOG_JSON: every line is JSON
    assert len(records) > 20 and any(r["level"] == "DEBUG" for r in records)
    failed_lines = [r for r in records if r.get("reason") == "source_not_found" and r["logger"] == "omsync.engine"]
    assert {(r["task_id"], r["key"]) for r in failed_lines} >= {(t, MISSING[0]) for t in tasks}
    assert all(r["attempts"] >= 1 for r in failed_lines)
    requests = [r for r in records if r["logger"] == "omsync.access"]
    assert any(r["status"] == 401 and r.get("request_id") for r in requests)
    assert wrong.headers["X-Request-Id"] in {r.get("request_id") for r in requests}

    # -- the search ---------------------------------------------------------------------------
    found = {place: names for place, text in texts.items() if (names := leaks(text, secrets))}
    assert found == {}, f"secrets leaked: {found}"
