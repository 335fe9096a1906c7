"""Provider profiles load from data, resolve every OMS cloud type, and fail clearly."""

from __future__ import annotations

import pytest

from omsync.domain.model import CloudType
from omsync.stores.profiles import (
    TIERS,
    EndpointError,
    all_profiles,
    destination_storage_class,
    get_profile,
    quirk_set,
    resolve_endpoint,
    validate_overrides,
)

# One documented region per S3-compatible OMS cloud type and the URL it must resolve to.
DOCUMENTED = [
    ("AWS", "us-east-1", "https://s3.us-east-1.amazonaws.com", "virtual"),
    ("AWS", "cn-north-1", "https://s3.cn-north-1.amazonaws.com.cn", "virtual"),
    ("Aliyun", "cn-hangzhou", "https://oss-cn-hangzhou.aliyuncs.com", "virtual"),
    ("Tencent", "ap-guangzhou", "https://cos.ap-guangzhou.myqcloud.com", "virtual"),
    ("HuaweiCloud", "cn-north-4", "https://obs.cn-north-4.myhuaweicloud.com", "virtual"),
    ("QingCloud", "pek3a", "https://s3.pek3a.qingstor.com", "virtual"),
    ("KingsoftCloud", "cn-beijing", "https://ks3-cn-beijing.ksyuncs.com", "virtual"),
    ("Baidu", "bj", "https://s3.bj.bcebos.com", "virtual"),
    ("Baidu", "fwh", "http://s3.fwh.bcebos.com", "virtual"),
    ("Qiniu", "cn-east-1", "https://s3-cn-east-1.qiniucs.com", "path"),
    ("UCloud", "cn-bj", "https://s3-cn-bj.ufileos.com", "path"),
]


def test_every_cloud_type_has_a_profile() -> None:
    loaded = all_profiles()
    assert set(loaded) == {member.value for member in CloudType}
    for profile in loaded.values():
        assert profile.name
        assert profile.backend in ("s3", "fs", "azure", "unsupported")
        assert set(profile.storage_policy) <= set(TIERS)
        assert set(profile.source_tiers.values()) <= set(TIERS)
        assert set(profile.storage_policy.values()) <= profile.storage_classes or not profile.storage_classes
        if profile.s3_compatible:
            assert profile.addressing_style in ("path", "virtual")
            assert profile.min_part_size >= 100 * 1024
            assert profile.list_api in (1, 2)


@pytest.mark.parametrize(("cloud", "region", "url", "style"), DOCUMENTED)
def test_documented_regions_resolve(cloud: str, region: str, url: str, style: str) -> None:
    resolved = resolve_endpoint(cloud, region, {})
    assert resolved.url == url
    assert resolved.region == region
    assert resolved.addressing_style == style
    assert resolved.profile.cloud_type == cloud
    assert not resolved.overridden


def test_every_listed_region_resolves() -> None:
    for name, profile in all_profiles().items():
        for region in profile.regions:
            resolved = resolve_endpoint(name, region, {})
            assert resolved.url.startswith(("https://", "http://")), (name, region)
            assert "{" not in resolved.url


def test_region_aliases_resolve_to_the_canonical_region() -> None:
    assert resolve_endpoint("Aliyun", "oss-cn-shanghai", {}).url == "https://oss-cn-shanghai.aliyuncs.com"
    assert resolve_endpoint("Qiniu", "z0", {}).url == "https://s3-cn-east-1.qiniucs.com"


def test_crc64_headers_and_dialects_follow_the_provider() -> None:
    assert get_profile("Aliyun").crc64_headers == ("x-oss-hash-crc64ecma",)
    assert get_profile("Tencent").crc64_headers == ("x-cos-hash-crc64ecma",)
    assert "x-obs-hash-crc64ecma" in get_profile("HuaweiCloud").crc64_headers
    assert get_profile("AWS").crc64_headers == ()  # CRC64NVME is another polynomial
    assert get_profile("HuaweiCloud").capabilities().crc64ecma is True
    assert get_profile("AWS").capabilities().crc64ecma is False
    assert get_profile("Qiniu").dialect().url_encoded_listing is False
    assert get_profile("UCloud").dialect().send_content_md5 is False
    caps = get_profile("UCloud").capabilities()
    assert (caps.exact_part_size, caps.max_single_put, caps.part_copy) == (8 * 1024 * 1024, 1024**3, False)
    assert get_profile("Tencent").capabilities().max_key_bytes == 850


def test_most_specific_override_wins() -> None:
    overrides = {
        "*:cn-north-4": "http://127.0.0.1:9001",
        "HuaweiCloud:*": "http://127.0.0.1:9002",
        "HuaweiCloud:cn-north-4": "http://127.0.0.1:9003/",
        "*:*": "http://127.0.0.1:9004",
    }
    assert resolve_endpoint("HuaweiCloud", "cn-north-4", overrides).url == "http://127.0.0.1:9003"
    assert resolve_endpoint("HuaweiCloud", "cn-east-3", overrides).url == "http://127.0.0.1:9002"
    assert resolve_endpoint("Aliyun", "cn-north-4", overrides).url == "http://127.0.0.1:9001"
    assert resolve_endpoint("Aliyun", "cn-hangzhou", overrides).url == "http://127.0.0.1:9004"


def test_override_covers_unlisted_regions_and_uses_path_style_for_ip_hosts() -> None:
    resolved = resolve_endpoint("HuaweiCloud", "my-private-region", {"HuaweiCloud:*": "http://127.0.0.1:8333"})
    assert (resolved.url, resolved.region, resolved.addressing_style, resolved.overridden) == (
        "http://127.0.0.1:8333", "my-private-region", "path", True)
    named = resolve_endpoint("HuaweiCloud", "cn-north-4", {"HuaweiCloud:*": "https://obs.example.net"})
    assert named.addressing_style == "virtual"


def test_generic_s3_needs_an_override_and_takes_server_quirks() -> None:
    with pytest.raises(EndpointError) as error:
        resolve_endpoint("S3", "us-east-1", {}, side="dst")
    assert error.value.field == "dst_region"
    assert "override" in str(error.value)

    resolved = resolve_endpoint("S3", "us-east-1", {"S3:*": "http://127.0.0.1:8333#seaweedfs"})
    assert resolved.url == "http://127.0.0.1:8333"
    assert resolved.quirks == "seaweedfs"
    caps = resolved.capabilities()
    assert caps.preserves_double_slash is False
    assert caps.key_problem("x//y") is not None
    assert caps.key_problem("x/y") is None
    assert resolved.dialect().url_encoded_upload_listing is False


@pytest.mark.parametrize(
    ("cloud", "region", "overrides", "side", "field", "fragment"),
    [
        ("Dropbox", "x", {}, "src", "src_cloud_type", "unknown cloud type 'Dropbox'"),
        ("Local", "x", {}, "dst", "dst_cloud_type", "file-system store"),
        ("HuaweiCloud", "mars-1", {}, "dst", "dst_region", "'mars-1' is not a known HuaweiCloud region"),
        ("Aliyun", "", {}, "src", "src_region", "region is required"),
        ("S3", "x", {}, None, "region", "needs an endpoint override"),
        ("AWS", "us-east-1", {"AWS": "http://x"}, "src", "endpoints", "CloudType:region"),
        ("AWS", "us-east-1", {"Dropbox:*": "http://x"}, "src", "endpoints", "unknown cloud type"),
        ("AWS", "us-east-1", {"AWS:*": "ftp://x"}, "src", "endpoints", "http:// or https://"),
        ("AWS", "us-east-1", {"AWS:*": "http://x#nonsense"}, "src", "endpoints", "unknown server quirks"),
    ],
)
def test_unresolvable_inputs_raise_endpoint_error_naming_the_field(
    cloud: str, region: str, overrides: dict[str, str], side: str | None, field: str, fragment: str
) -> None:
    with pytest.raises(EndpointError) as error:
        resolve_endpoint(cloud, region, overrides, side=side)
    assert isinstance(error.value, ValueError)
    assert error.value.field == field
    assert fragment in str(error.value)
    assert str(error.value).startswith(f"{field}: ")


def test_validate_overrides_accepts_the_documented_forms() -> None:
    validate_overrides({"HuaweiCloud:cn-north-4": "http://127.0.0.1:9000", "*:eu": "https://s3.example.com",
                        "S3:*": "http://127.0.0.1:1#moto"})


def test_storage_policies_map_to_provider_spellings() -> None:
    obs = get_profile("HuaweiCloud")
    assert destination_storage_class(None, obs) is None
    assert destination_storage_class("IA", obs) == "STANDARD_IA"
    assert destination_storage_class("ARCHIVE", obs) == "GLACIER"
    assert destination_storage_class("DEEP_ARCHIVE", obs) == "DEEP_ARCHIVE"
    assert destination_storage_class("IA", get_profile("Qiniu")) == "LINE"
    assert destination_storage_class("IA", get_profile("UCloud")) == "ONEZONE_IA"
    with pytest.raises(ValueError, match="ARCHIVE"):
        destination_storage_class("ARCHIVE", get_profile("Baidu"))
    with pytest.raises(ValueError, match="unknown storage policy"):
        destination_storage_class("COLDEST", obs)


def test_source_storage_mapping_follows_the_obs_table() -> None:
    obs = get_profile("HuaweiCloud")
    cases = [
        ("AWS", "INTELLIGENT_TIERING", "STANDARD"),
        ("AWS", "GLACIER_IR", "STANDARD_IA"),
        ("AWS", "GLACIER", "GLACIER"),
        ("AWS", "DEEP_ARCHIVE", "DEEP_ARCHIVE"),
        ("AWS", None, "STANDARD"),
        ("Aliyun", "STANDARD_IA", "STANDARD_IA"),
        ("Tencent", "MAZ_STANDARD_IA", "STANDARD_IA"),
        ("Tencent", "ARCHIVE", "GLACIER"),
        ("KingsoftCloud", "DEEP_COLD_ARCHIVE", "DEEP_ARCHIVE"),
        ("Qiniu", "LINE", "STANDARD_IA"),
        ("UCloud", "ONEZONE_IA", "STANDARD_IA"),
        ("Azure", "Cool", "STANDARD_IA"),
        ("Azure", "Archive", "GLACIER"),
    ]
    for cloud, source_class, expected in cases:
        got = destination_storage_class("SRC_STORAGE_MAPPING", obs, get_profile(cloud), source_class)
        assert got == expected, (cloud, source_class)
    # A tier the destination lacks falls back to the nearest warmer one.
    baidu = get_profile("Baidu")
    assert destination_storage_class("SRC_STORAGE_MAPPING", baidu, get_profile("AWS"), "DEEP_ARCHIVE") == (
        "STANDARD_IA")


def test_tencent_buckets_get_the_appid_suffix_once() -> None:
    cos = get_profile("Tencent")
    assert cos.bucket_name("photos", "1250000000") == "photos-1250000000"
    assert cos.bucket_name("photos-1250000000", "1250000000") == "photos-1250000000"
    assert cos.bucket_name("photos", None) == "photos"
    assert get_profile("AWS").bucket_name("photos", "1250000000") == "photos"


def test_quirk_sets_only_name_known_fields() -> None:
    for name in ("seaweedfs", "moto"):
        caps, _dialect = quirk_set(name)
        assert "limitation" in caps
    assert "\n" in quirk_set("moto")[0]["unsupported_key_chars"]
