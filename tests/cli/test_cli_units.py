"""The CLI's pure parts: connection-setting precedence, time parsing, key reading, sparklines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from omsync.cli_ops import ConfigError, parse_time, printable_key, read_keys, resolve_connection, sparkline

NOW = 1_780_000_000_000
FLAGS: dict[str, Any] = {"endpoint": "http://flag", "access_key": "FLAG-AK", "secret_key": "flag-sk",
                         "project_id": "flag-p"}
ENV = {"OMSYNC_ENDPOINT": "http://env", "OMSYNC_AK": "ENV-AK", "OMSYNC_SK": "env-sk", "OMSYNC_PROJECT_ID": "env-p"}


def write_profile(path: Path, sections: dict[str, dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"[{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in body.items())
                            for name, body in sections.items()))
    return path


def test_flags_beat_environment_beat_default_profile(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    write_profile(tmp_path / ".config" / "omsync" / "profile.toml", {"default": {
        "endpoint": "http://profile", "ak": "PROF-AK", "sk": "prof-sk", "project_id": "prof-p"}})
    assert resolve_connection(environ=home).access_key == "PROF-AK"
    env_only = resolve_connection(environ={**home, **ENV})
    assert (env_only.endpoint, env_only.access_key, env_only.secret_key) == ("http://env", "ENV-AK", "env-sk")
    mixed = resolve_connection(endpoint="http://flag", environ={**home, "OMSYNC_SK": "env-sk"})
    assert (mixed.endpoint, mixed.access_key, mixed.secret_key, mixed.project_id) == (
        "http://flag", "PROF-AK", "env-sk", "prof-p")
    assert resolve_connection(**FLAGS, environ={**home, **ENV}).secret_key == "flag-sk"


def test_explicit_profile_beats_environment(tmp_path: Path) -> None:
    path = write_profile(tmp_path / "p.toml", {
        "default": {"endpoint": "http://d"},
        "ops": {"endpoint": "http://ops", "access_key": "OPS-AK", "secret_key": "ops-sk", "project_id": "ops-p"}})
    chosen = resolve_connection(profile=path, profile_name="ops", environ=ENV)
    assert (chosen.endpoint, chosen.access_key) == ("http://ops", "OPS-AK")
    partial = resolve_connection(profile=path, environ=ENV)  # [default] only has the endpoint
    assert (partial.endpoint, partial.access_key) == ("http://d", "ENV-AK")
    # XDG_CONFIG_HOME wins over HOME for the default location.
    write_profile(tmp_path / "xdg" / "omsync" / "profile.toml", {"ops": {"access_key": "XDG-AK"}})
    xdg = resolve_connection(profile_name="ops", environ={**ENV, "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert xdg.access_key == "XDG-AK"


def test_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OMSYNC_ENDPOINT") as missing:
        resolve_connection(environ={"HOME": str(tmp_path), "OMSYNC_AK": "a", "OMSYNC_SK": "s",
                                    "OMSYNC_PROJECT_ID": "p"})
    assert "OMSYNC_AK" not in str(missing.value)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_connection(profile=tmp_path / "absent.toml", environ=ENV)
    path = write_profile(tmp_path / "p.toml", {"default": {"endpoint": "http://x"}})
    with pytest.raises(ConfigError, match=r"no \[prod\] section"):
        resolve_connection(profile=path, profile_name="prod", environ=ENV)
    path.write_text('[default]\nsecret = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'secret'"):
        resolve_connection(profile=path, environ=ENV)
    path.write_text("[default\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_connection(profile=path, environ=ENV)


def test_connection_repr_hides_the_secret() -> None:
    conn = resolve_connection(**FLAGS, environ={})
    assert "flag-sk" not in repr(conn)


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("1700000000123", 1_700_000_000_123),
    ("1h", NOW - 3_600_000),
    ("-30m", NOW - 1_800_000),
    ("2d", NOW - 2 * 86_400_000),
    ("1w", NOW - 7 * 86_400_000),
    ("90s", NOW - 90_000),
    ("2026-05-01", int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1000)),
    ("2026-05-01T12:00:00Z", int(datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp() * 1000)),
    ("2026-05-01T14:00:00+02:00", int(datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp() * 1000)),
])
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "", "12:00", "１２"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_time(text, NOW)


def test_read_keys_splits_on_newline_only() -> None:
    data = "a b\r\nls\u2028sep\nnel\x85\n\nvt\x0bx\n+%2B\n".encode()
    keys, problems = read_keys(data)
    assert problems == []
    assert keys == ["a b\r", "ls\u2028sep", "nel\x85", "vt\x0bx", "+%2B"]
    assert read_keys(data, strip_cr=True)[0][0] == "a b"
    assert read_keys(b"no-final-newline")[0] == ["no-final-newline"]


def test_read_keys_nul_separated_and_problems() -> None:
    keys, problems = read_keys(b"a\nb\0\0c\0", null=True, what="record")
    assert (keys, problems) == (["a\nb", "c"], [])
    keys, problems = read_keys(b"ok\n\xff\n" + "é".encode() * 513 + b"\n")
    assert keys == ["ok"]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3"]


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 0, 0]) == "   "
    assert sparkline([0, 1, 8]) == " ▁█"
    line = sparkline(list(range(1000)), width=50)
    assert len(line) == 50 and line[-1] == "█" and line[0] == "▁"


def test_printable_key() -> None:
    assert printable_key("plain/ké y") == "plain/ké y"
    assert printable_key("a\tb\nc\x01\u2028") == "a\\tb\\nc\\x01\\u2028"
