"""The secrets of CreateSyncTask and StartSyncTask: access keys and the CDN's authentication key,
in plain text or encrypted for one of omsync's data keys (crypto type ``KMS``, :mod:`omsync.kms`).

A ciphertext is decrypted here only to check it (400 naming the field when it does not
decrypt) and to check the buckets with it; the task stores the ciphertext with its key id
(encrypted again under the master key), and the worker that uses it decrypts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omsync import kms
from omsync.api.errors import invalid
from omsync.api.schemas import PLAIN_ACCESS_KEY_MAX
from omsync.domain.model import CdnAuthentication
from omsync.ledger.kms_keys import DataKeys
from omsync.services import Services

# Schemes whose URLs are signed with a key the caller must supply.
_KEYLESS = frozenset({CdnAuthentication.NONE})


@dataclass
class TaskSecrets:
    """``plain``: the decrypted values (for the bucket check, never stored); ``stored``: what
    the task keeps (TaskRepository.create/start): ciphertexts with ``<field>_kms_key_id``."""

    plain: dict[str, str] = field(default_factory=dict)
    stored: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sealed:
    """One secret field as sent: ``name`` for the stored mapping, ``wire`` for errors."""

    name: str
    wire: str
    value: str
    crypto_type: str | None
    key_id: str | None
    key_id_wire: str
    crypto_wire: str


async def open_secrets(services: Services, project_id: str, fields: list[Sealed]) -> TaskSecrets:
    """Check every field and build :class:`TaskSecrets`.

    Plain fields (crypto type absent or ``DEFAULT``) of access keys must be at most 100
    characters. A ``KMS`` field needs its key id, which must name a data key of the project,
    and must decrypt with it. Every refusal is a 400 naming the field.
    """
    secrets = TaskSecrets()
    keys = DataKeys(services.db, services.box)
    loaded: dict[str, kms.DataKey] = {}
    for item in fields:
        if item.crypto_type != "KMS":
            if item.name != "cdn_key" and len(item.value) > PLAIN_ACCESS_KEY_MAX:
                raise invalid(item.wire, f"String should have at most {PLAIN_ACCESS_KEY_MAX} characters "
                                         f"(unless {item.crypto_wire} is KMS)")
            secrets.plain[item.name] = secrets.stored[item.name] = item.value
            continue
        if not item.key_id:
            raise invalid(item.key_id_wire, f"is required when {item.crypto_wire} is KMS")
        key = loaded.get(item.key_id)
        if key is None:
            try:
                key = loaded[item.key_id] = await keys.load(item.key_id, project_id)
            except kms.UnknownDataKey:
                raise invalid(item.key_id_wire, "names no data key of this project (see omsync kms list)") from None
        try:
            secrets.plain[item.name] = kms.decrypt(key, item.value)
        except kms.KmsError as exc:
            raise invalid(item.wire, str(exc)) from None
        secrets.stored[item.name] = item.value
        secrets.stored[f"{item.name}_kms_key_id"] = item.key_id
    return secrets


def access_key_fields(values: dict[str, str], crypto: dict[str, tuple[str | None, str | None]]) -> list[Sealed]:
    """The four access-key fields (``src_ak`` …) with the crypto type and key id of their side
    (``crypto["src"] = (src_crypto_type, src_kms_key_id)``)."""
    out = []
    for side in ("src", "dst"):
        crypto_type, key_id = crypto[side]
        for name in (f"{side}_ak", f"{side}_sk"):
            out.append(Sealed(name, name, values[name], crypto_type, key_id, f"{side}_kms_key_id",
                              f"{side}_crypto_type"))
    return out


def cdn_key_field(authentication_type: CdnAuthentication, key: str | None, crypto_type: str | None,
                  key_id: str | None, *, prefix: str) -> list[Sealed]:
    """The CDN's authentication key as a secret field (none for NONE); ``prefix`` is how the
    request spells the CDN's fields (``source_cdn.`` on create, ``source_cdn_`` on start).
    Raises a 400 when a signing scheme has no key."""
    if authentication_type in _KEYLESS:
        return []
    if not key:
        raise invalid(f"{prefix}authentication_key", f"is required for {authentication_type.value}")
    return [Sealed("cdn_key", f"{prefix}authentication_key", key, crypto_type, key_id, f"{prefix}kms_key_id",
                   f"{prefix}crypto_type")]
