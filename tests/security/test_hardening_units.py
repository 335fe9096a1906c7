"""Units behind the hardening: exposure warnings, uvicorn options, login throttle, JSON guards,
bucket rules, local grants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from omsync.api.errors import OmsError
from omsync.api.guards import json_depth_exceeds, load_json_body
from omsync.config import Settings
from omsync.local_roots import local_bucket_problem
from omsync.serving import GuardedH11Protocol, exposure_warnings, uvicorn_options
from omsync.stores.profiles import get_profile
from omsync.web.throttle import LoginThrottle


def test_metrics_exposure_is_warned_about_off_loopback(tmp_path: Path) -> None:
    assert exposure_warnings(Settings(data_dir=tmp_path)) == []
    warnings = exposure_warnings(Settings(data_dir=tmp_path, host="0.0.0.0"))
    assert any("/metrics" in w and "task ids" in w for w in warnings)
    with_token = exposure_warnings(Settings(data_dir=tmp_path, host="0.0.0.0", metrics_token=SecretStr("t")))
    assert not any("/metrics" in w for w in with_token)
    assert any("OMSYNC_FS_PROJECT_ROOTS" in w for w in exposure_warnings(Settings(data_dir=tmp_path, fs_roots=[tmp_path])))


def test_uvicorn_options_bound_connections_below_the_open_files_limit(tmp_path: Path) -> None:
    options = uvicorn_options(Settings(data_dir=tmp_path, http_max_connections=5000,
                                       http_header_timeout_seconds=3), open_files=1024)
    assert options["http"] is GuardedH11Protocol
    assert GuardedH11Protocol.max_connections == 1024 - 256
    assert GuardedH11Protocol.header_timeout == 3
    assert options["proxy_headers"] is False
    assert uvicorn_options(Settings(data_dir=tmp_path, trusted_proxies=["10.0.0.1"]))["forwarded_allow_ips"] == ["10.0.0.1"]


def test_login_throttle_backs_off_and_forgets_on_success() -> None:
    now = [0.0]
    throttle = LoginThrottle(3, 10, clock=lambda: now[0])
    assert [throttle.failed("a") for _ in range(3)][-1] == 10
    assert throttle.retry_after("a", "b") == 10
    assert throttle.failed("a") == 20  # doubles
    now[0] += 21
    assert throttle.retry_after("a") == 0
    throttle.succeeded("a")
    assert throttle.failed("a") == 0


def test_json_guards() -> None:
    assert json_depth_exceeds(b"[" * 33 + b"]" * 33)
    assert not json_depth_exceeds(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    assert not json_depth_exceeds(b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    with pytest.raises(OmsError) as error:
        load_json_body(json.dumps({"a": [1, {"b": 2**64}]}).encode())
    assert "[a.1.b]" in (error.value.detail or "")
    assert load_json_body(json.dumps({"a": 2**63 - 1}).encode()) == {"a": 2**63 - 1}


@pytest.mark.parametrize(("cloud", "bucket", "ok"), [
    ("AWS", "my-bucket.logs", True), ("AWS", "arn:aws:s3:us-east-1:1:accesspoint/x", False),
    ("AWS", "ab", False), ("AWS", "My-Bucket", False), ("AWS", "a..b", False), ("AWS", "10.0.0.1", False),
    ("Tencent", "photos-1250000000", True), ("S3", "Legacy_Bucket", True), ("S3", "host:9000", False),
    ("Local", "/anything", True),
])
def test_bucket_rules(cloud: str, bucket: str, ok: bool) -> None:
    assert (get_profile(cloud).bucket_problem(bucket) is None) is ok


def test_local_grants_and_protected_paths(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for path in (mine, theirs, mine / "d"):
        path.mkdir()
    settings = Settings(data_dir=mine / "data", fs_project_roots={"p": [mine], "q": [theirs]})
    (mine / "data").mkdir()
    assert local_bucket_problem(settings, "p", str(mine / "d")) is None
    assert local_bucket_problem(settings, "q", str(mine / "d")) is not None
    assert local_bucket_problem(settings, "x", str(mine / "d")) is not None  # no grant at all
    assert local_bucket_problem(settings, "p", str(mine)) is not None  # holds the data directory
    assert local_bucket_problem(settings, "p", str(mine / "data")) is not None
    assert local_bucket_problem(settings, "p", "relative/path") is not None
