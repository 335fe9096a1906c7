"""Data keys managed by omsync: the ``KMS`` crypto type of CreateSyncTask and StartSyncTask.

OMS lets a caller send access keys (``src_ak``, ``src_sk``, ``dst_ak``, ``dst_sk``) and a CDN's
``authentication_key`` encrypted for a KMS key instead of in plain text. omsync's equivalent is
a *data key*: a named, versioned AES-256 key that omsync keeps (each version's material stored
encrypted under the master key, see :mod:`omsync.secrets`), created and rotated with
``omsync kms create|rotate`` and used with ``omsync kms encrypt --key-id K``.

A ciphertext is ``okms1:<version>:<base64url(nonce || AES-GCM ciphertext and tag)>``. The data
key's id and the version are bound into the encryption as associated data, so a ciphertext
only decrypts with the key id it was made for; rotation adds a version (new ciphertexts use
it) and keeps the old ones, so ciphertexts made before a rotation still decrypt.

Nothing here touches the database: :mod:`omsync.ledger.kms_keys` stores the keys.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "CIPHERTEXT_PREFIX",
    "DataKey",
    "KmsError",
    "UnknownDataKey",
    "decrypt",
    "encrypt",
    "new_material",
]

CIPHERTEXT_PREFIX = "okms1"
_NONCE_BYTES = 12
_CIPHERTEXT = re.compile(r"^okms1:([1-9][0-9]{0,8}):([A-Za-z0-9_-]+={0,2})$")


class KmsError(Exception):
    """A ciphertext cannot be decrypted with the named data key (wrong key, another key's
    ciphertext, a version the key does not have, or not a ciphertext at all). The message
    never contains the ciphertext or the plaintext."""


class UnknownDataKey(KmsError):
    """No data key with this id exists in the project."""


@dataclass(frozen=True)
class DataKey:
    """One data key with the material of every version (raw 32-byte AES keys).

    ``current`` is the version new ciphertexts are made with.
    """

    key_id: str
    project_id: str
    alias: str | None
    current: int
    versions: Mapping[int, bytes]
    created_at: int = 0

    def __repr__(self) -> str:  # never print key material
        return f"DataKey({self.key_id!r}, current={self.current})"


def new_material() -> bytes:
    """Fresh key material for a data key version (32 random bytes: AES-256)."""
    return AESGCM.generate_key(bit_length=256)


def _aad(key_id: str, version: int) -> bytes:
    return f"{CIPHERTEXT_PREFIX}|{key_id}|{version}".encode()


def encrypt(key: DataKey, plaintext: str) -> str:
    """Encrypt ``plaintext`` (UTF-8) under the key's current version; a different ciphertext
    every time (random nonce)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key.versions[key.current]).encrypt(nonce, plaintext.encode("utf-8"), _aad(key.key_id, key.current))
    token = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
    return f"{CIPHERTEXT_PREFIX}:{key.current}:{token}"


def decrypt(key: DataKey, ciphertext: str) -> str:
    """The plaintext of a ciphertext made by :func:`encrypt` with this key (any version).

    Raises :class:`KmsError` when it was made with another key, the version is unknown, it is
    corrupted or it is not a ciphertext of this format.
    """
    match = _CIPHERTEXT.match(ciphertext.strip())
    if match is None:
        raise KmsError(f"is not an omsync KMS ciphertext ({CIPHERTEXT_PREFIX}:<version>:<data>)")
    version = int(match.group(1))
    material = key.versions.get(version)
    if material is None:
        raise KmsError(f"was not made with data key {key.key_id} (it has no version {version})")
    data = match.group(2)
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise KmsError("is not an omsync KMS ciphertext (bad base64)") from None
    if len(raw) <= _NONCE_BYTES + 16:
        raise KmsError("is not an omsync KMS ciphertext (too short)")
    try:
        plain = AESGCM(material).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(key.key_id, version))
        return plain.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        raise KmsError(f"does not decrypt with data key {key.key_id}") from None
