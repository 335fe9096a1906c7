"""Encryption of stored secrets (source/destination AK/SK) and hashing of operator tokens.

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, authenticated) under one master
key: ``Settings.master_key`` when set, else the key file ``<data_dir>/master.key``, created on
first run with mode 0600. Lose the key and the stored secrets are unrecoverable; anyone who reads
it can decrypt them, so it must stay out of backups of the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken

if TYPE_CHECKING:
    from omsync.config import Settings

__all__ = [
    "KEY_FILE_NAME",
    "SecretBox",
    "SecretError",
    "hash_token",
    "load_or_create_key_file",
    "token_matches",
]

KEY_FILE_NAME = "master.key"

_log = logging.getLogger(__name__)


class SecretError(Exception):
    """A secret cannot be encrypted or decrypted: bad master key, wrong key, corrupted token."""


class SecretBox:
    """Encrypts and decrypts text under one Fernet master key.

    Tokens are URL-safe ASCII strings that embed their creation time; the same plaintext
    encrypts to a different token every time.
    """

    __slots__ = ("_fernet",)

    def __init__(self, key: str | bytes) -> None:
        """Raises :class:`SecretError` when ``key`` is not a urlsafe-base64 32-byte Fernet key."""
        try:
            self._fernet = Fernet(key.strip())
        except (ValueError, TypeError):
            raise SecretError("the master key is not a valid Fernet key (32 url-safe base64 bytes)") from None

    def __repr__(self) -> str:  # never show the key
        return "SecretBox(***)"

    @staticmethod
    def generate_key() -> str:
        """A new random master key."""
        return Fernet.generate_key().decode("ascii")

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """Use ``settings.master_key`` if set, else ``<data_dir>/master.key`` (created if absent).

        Raises :class:`SecretError` for an invalid key and ``OSError`` when the key file cannot
        be read or created.
        """
        if settings.master_key is not None:
            return cls(settings.master_key.get_secret_value())
        return cls(load_or_create_key_file(Path(settings.data_dir) / KEY_FILE_NAME))

    def encrypt(self, plaintext: str) -> str:
        """Encrypt text (UTF-8) into an ASCII token."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Decrypt a token made by :meth:`encrypt` under the same key.

        Raises :class:`SecretError` when the key is not the one that encrypted it or the token
        is corrupted or not a token at all.
        """
        try:
            data = self._fernet.decrypt(token.encode("ascii"))
            return data.decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError, TypeError):
            raise SecretError(
                "cannot decrypt a stored secret: the master key differs from the one that encrypted it, "
                "or the stored value is corrupted"
            ) from None

    def encrypt_json(self, value: Mapping[str, Any]) -> str:
        """Encrypt a JSON-serialisable mapping. Raises ``TypeError`` for unserialisable values."""
        return self.encrypt(
            json.dumps(dict(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        )

    def decrypt_json(self, token: str) -> dict[str, Any]:
        """Decrypt a token made by :meth:`encrypt_json`. Raises :class:`SecretError` as
        :meth:`decrypt` does, or when the plaintext is not a JSON object."""
        text = self.decrypt(token)
        try:
            value = json.loads(text)
        except ValueError:
            raise SecretError("the decrypted secret is not JSON") from None
        if not isinstance(value, dict):
            raise SecretError("the decrypted secret is not a JSON object")
        return value


def load_or_create_key_file(path: Path) -> str:
    """Read the master key from ``path``, creating the file (and its directory) when absent.

    Creation is atomic and never exposes the key: it is written to a temporary file opened with
    ``O_CREAT | O_EXCL`` and mode 0600, flushed to disk, then hard-linked into place, which
    fails if another process created the key first (that key is then used). A key file that
    other users can read is used but logged as a warning. Raises ``OSError`` on I/O failure and
    :class:`SecretError` when the file does not hold a valid key.
    """
    path = Path(path)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = SecretBox.generate_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    _write_new_file(tmp, key)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)  # another process won the race
        except OSError:
            # No hard links on this file system: create in place, still exclusive and 0600.
            try:
                _write_new_file(path, key)
            except FileExistsError:
                return _read_key(path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _log.info("created master key file %s", path)
    return key


def _write_new_file(path: Path, key: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed owner bits; never add others'
        os.write(fd, (key + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning(
            "master key file %s is accessible by other users (mode %o); use chmod 600", path, mode & 0o777
        )
    try:
        key = path.read_text(encoding="ascii").strip()
    except UnicodeDecodeError:
        raise SecretError(f"master key file {path} does not hold a Fernet key") from None
    if not key:
        raise SecretError(f"master key file {path} is empty")
    SecretBox(key)  # validate now, not at the first decryption
    return key


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def hash_token(token: str) -> str:
    """Lower-case hex SHA-256 of an operator-issued ``X-Auth-Token``, for storage and lookup.

    A plain hash suffices because issued tokens are long random strings, not passwords.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time check of a presented token against a stored :func:`hash_token` value."""
    return hmac.compare_digest(
        hash_token(token).encode("ascii"), token_hash.lower().encode("ascii", "replace")
    )
