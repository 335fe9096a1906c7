"""Data-key ciphertexts (omsync.kms) and the CDN path encoding (omsync.stores.cdn_signing)."""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

import pytest

from omsync import kms
from omsync.domain.model import CdnAuthentication
from omsync.stores.cdn_signing import encode_path, sign
from tests.key_corpus import KEY_CORPUS


def data_key(key_id: str = "k1", **versions: bytes) -> kms.DataKey:
    material = {int(v[1:]): m for v, m in versions.items()} or {1: kms.new_material()}
    return kms.DataKey(key_id, "p", None, max(material), material)


def test_a_ciphertext_decrypts_with_its_key_only() -> None:
    key = data_key()
    sealed = kms.encrypt(key, "secret ✓")
    assert sealed.startswith("okms1:1:") and "secret" not in sealed
    assert kms.encrypt(key, "secret ✓") != sealed  # a fresh nonce every time
    assert kms.decrypt(key, sealed) == "secret ✓"
    # Same material under another id: the id is authenticated with the ciphertext.
    with pytest.raises(kms.KmsError):
        kms.decrypt(kms.DataKey("k2", "p", None, 1, key.versions), sealed)
    with pytest.raises(kms.KmsError):
        kms.decrypt(data_key(), sealed)  # another key's material


@pytest.mark.parametrize("bad", ["", "plain", "okms1:1:", "okms1:x:abc", "okms1:2:" + "A" * 60,
                                 "okms1:1:!!!!", "okms1:1:" + "A" * 20])
def test_what_is_not_a_ciphertext_of_the_key_is_refused(bad: str) -> None:
    with pytest.raises(kms.KmsError) as caught:
        kms.decrypt(data_key(), bad)
    assert len(bad) < 12 or bad not in str(caught.value)  # the message never echoes a ciphertext


def test_old_versions_decrypt_after_a_rotation_and_tampering_is_detected() -> None:
    v1, v2 = kms.new_material(), kms.new_material()
    old = kms.encrypt(data_key(v1=v1), "before")
    rotated = data_key(v1=v1, v2=v2)
    new = kms.encrypt(rotated, "after")
    assert new.startswith("okms1:2:")
    assert kms.decrypt(rotated, old) == "before" and kms.decrypt(rotated, new) == "after"
    flipped = new[:-2] + ("A" if new[-2] != "A" else "B") + new[-1]
    with pytest.raises(kms.KmsError):
        kms.decrypt(rotated, flipped)
    with pytest.raises(kms.KmsError):
        kms.decrypt(rotated, "okms1:1:" + new.split(":", 2)[2])  # the right data under the wrong version


def test_repr_shows_no_material() -> None:
    key = data_key()
    assert key.versions[1].hex() not in repr(key) and str(key.versions[1]) not in repr(key)


@pytest.mark.parametrize(("name", "key"), KEY_CORPUS, ids=[name for name, _ in KEY_CORPUS])
def test_cdn_paths_carry_every_key_exactly(name: str, key: str) -> None:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        pytest.skip("not valid Unicode: no store holds it")
    path = encode_path(key)
    assert path.startswith("/")
    assert unquote(path[1:], errors="strict") == key
    assert all(c.isascii() and c.isprintable() and c not in " ?#+" for c in path)
    assert "/./" not in path + "/" and "/../" not in path + "/"  # no dot segment a client could remove


def test_signed_paths_follow_the_documented_formulas() -> None:
    # 2021-01-01T00:00:00Z = 1609459200 = 0x5fee6600; 08:00 in UTC+8.
    now, key, rand = 1609459200, "k", "r" * 32

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    p = "/a%20b/c%2Bd%3F"
    assert sign(CdnAuthentication.ALIYUN_OSS_A, key, "a b/c+d?", now=now, rand=rand) == \
        f"{p}?auth_key={now}-{rand}-0-{md5(f'{p}-{now}-{rand}-0-k')}"
    assert sign(CdnAuthentication.ALIYUN_OSS_B, key, "a b/c+d?", now=now) == \
        f"/202101010800/{md5('k202101010800' + p)}{p}"
    assert sign(CdnAuthentication.TENCENT_COS_C, key, "a b/c+d?", now=now) == f"/{md5('k' + p + '5fee6600')}/5fee6600{p}"
    assert sign(CdnAuthentication.TENCENT_COS_D, key, "a b/c+d?", now=now) == \
        f"{p}?sign={md5('k' + p + '5fee6600')}&t=5fee6600"
    assert sign(CdnAuthentication.QINIU, key, "a b/c+d?", now=now, ttl=16) == \
        f"{p}?sign={md5('k' + p + '5fee6610')}&t=5fee6610"
    assert sign(CdnAuthentication.AZURE_SAS, "?sv=1&sig=x", "a b/c+d?", now=now) == f"{p}?sv=1&sig=x"
