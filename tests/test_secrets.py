"""Encryption of stored secrets and the master key file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from omsync.config import load_settings
from omsync.secrets import (
    KEY_FILE_NAME,
    SecretBox,
    SecretError,
    hash_token,
    load_or_create_key_file,
    token_matches,
)


def test_round_trip_text() -> None:
    box = SecretBox(SecretBox.generate_key())
    for text in ["", "SK-123", "ünïcødé 密钥 \x00\n", "x" * 10_000]:
        assert box.decrypt(box.encrypt(text)) == text


def test_ciphertext_hides_plaintext_and_is_not_deterministic() -> None:
    box = SecretBox(SecretBox.generate_key())
    secret = "VERY-SECRET-ACCESS-KEY-0123456789"
    first, second = box.encrypt(secret), box.encrypt(secret)
    assert secret not in first
    assert first != second
    assert first.isascii()


def test_json_round_trip() -> None:
    box = SecretBox(SecretBox.generate_key())
    value = {"src_ak": "AK", "src_sk": "SK ü", "nested": {"n": [1, 2]}}
    token = box.encrypt_json(value)
    assert "SK ü" not in token
    assert box.decrypt_json(token) == value


def test_decrypt_json_rejects_non_object() -> None:
    box = SecretBox(SecretBox.generate_key())
    with pytest.raises(SecretError):
        box.decrypt_json(box.encrypt("[1, 2]"))
    with pytest.raises(SecretError):
        box.decrypt_json(box.encrypt("not json"))


def test_wrong_key_raises_secret_error() -> None:
    token = SecretBox(SecretBox.generate_key()).encrypt("secret")
    with pytest.raises(SecretError, match="master key"):
        SecretBox(SecretBox.generate_key()).decrypt(token)


@pytest.mark.parametrize("corrupt", ["", "garbage", "gAAAAA", "é", "mutate"])
def test_corrupted_token_raises_secret_error(corrupt: str) -> None:
    box = SecretBox(SecretBox.generate_key())
    token = box.encrypt("secret")
    if corrupt == "mutate":
        middle = len(token) // 2
        corrupt = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(SecretError):
        box.decrypt(corrupt)


@pytest.mark.parametrize("key", ["", "short", "x" * 44])
def test_invalid_master_key_rejected(key: str) -> None:
    with pytest.raises(SecretError):
        SecretBox(key)


def test_repr_hides_key() -> None:
    key = SecretBox.generate_key()
    assert key not in repr(SecretBox(key))


def test_settings_master_key_takes_precedence(tmp_path: Path) -> None:
    key = SecretBox.generate_key()
    settings = load_settings(data_dir=tmp_path / "data", master_key=key)
    box = SecretBox.from_settings(settings)
    assert SecretBox(key).decrypt(box.encrypt("s")) == "s"
    assert not (tmp_path / "data").exists()  # no key file when the key is configured


def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    settings = load_settings(data_dir=data_dir)
    box = SecretBox.from_settings(settings)
    key_file = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    token = box.encrypt("persisted")
    again = SecretBox.from_settings(load_settings(data_dir=data_dir))
    assert again.decrypt(token) == "persisted"
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE_NAME]  # no temporary file left


def test_key_file_created_0600_under_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key_file(tmp_path / KEY_FILE_NAME)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600


def test_existing_key_file_is_used(tmp_path: Path) -> None:
    key = SecretBox.generate_key()
    (tmp_path / KEY_FILE_NAME).write_text(key + "\n")
    assert load_or_create_key_file(tmp_path / KEY_FILE_NAME) == key


def test_invalid_key_file_raises(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("not a key\n")
    with pytest.raises(SecretError):
        SecretBox.from_settings(load_settings(data_dir=tmp_path))
    (tmp_path / KEY_FILE_NAME).write_text("")
    with pytest.raises(SecretError):
        SecretBox.from_settings(load_settings(data_dir=tmp_path))


def test_readable_key_file_is_used_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = SecretBox.generate_key()
    path = tmp_path / KEY_FILE_NAME
    path.write_text(key)
    path.chmod(0o644)
    assert load_or_create_key_file(path) == key
    assert "accessible by other users" in caplog.text
    assert key not in caplog.text


def test_concurrent_first_runs_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "data" / KEY_FILE_NAME
    results: list[str] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(load_or_create_key_file(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8
    assert set(results) == {path.read_text().strip()}


def test_hash_token() -> None:
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_token("token") != hash_token("token ")
    assert token_matches("abc", hash_token("abc"))
    assert token_matches("abc", hash_token("abc").upper())
    assert not token_matches("abd", hash_token("abc"))
    assert not token_matches("abc", "")
