"""Provider profiles (data in ``providers.toml``) and endpoint resolution.

A profile holds one cloud's quirks: endpoint template per region, addressing style, CRC-64
header names, storage-class spellings and limits. ``resolve_endpoint`` turns a task's
``(cloud_type, region)`` plus the ``endpoints`` setting into the URL and signing settings the
S3 store needs; anything it cannot resolve raises ``EndpointError`` naming the request field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from omsync.stores.base import Capabilities

_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RELAXED_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_IPV4_LIKE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_AZURE_CONTAINER = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")

TIERS = ("STANDARD", "IA", "ARCHIVE", "DEEP_ARCHIVE")
"""OMS storage tiers (``dst_storage_policy`` values other than ``SRC_STORAGE_MAPPING``)."""


class EndpointError(ValueError):
    """A cloud type / region / endpoint override that cannot be resolved.

    ``field`` names the request or settings field at fault (``src_region``, ``dst_cloud_type``,
    ``endpoints``, ...) so the API can answer 400 naming it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class S3Dialect:
    """How an S3 server speaks, beyond what ``Capabilities`` tells the engine.

    ``crc64_headers``: response headers carrying a CRC-64/XZ of the whole object.
    ``url_encoded_listing``: ask ListObjects for ``encoding-type=url`` (off for servers that
    ignore it). ``url_encoded_upload_listing``: trust ListMultipartUploads to encode keys when
    it says it did (SeaweedFS says so but sends raw keys). ``list_api``: 2 = ListObjectsV2,
    1 = ListObjects. ``send_content_md5``: send Content-MD5 on PutObject / UploadPart.
    """

    crc64_headers: tuple[str, ...] = ()
    url_encoded_listing: bool = True
    url_encoded_upload_listing: bool = True
    list_api: int = 2
    send_content_md5: bool = True


_CAPABILITY_FIELDS = frozenset(f.name for f in dataclasses.fields(Capabilities))
_DIALECT_FIELDS = frozenset(f.name for f in dataclasses.fields(S3Dialect))


@dataclass(frozen=True)
class ProviderProfile:
    """One cloud's S3 dialect. Build with ``get_profile``; fields mirror ``providers.toml``."""

    cloud_type: str
    name: str
    backend: str                       # "s3", "fs", "azure" or "unsupported"
    endpoint: str | None
    regions: tuple[str, ...]
    region_endpoints: Mapping[str, str]
    region_aliases: Mapping[str, str]
    signing_region: str
    addressing_style: str
    crc64_headers: tuple[str, ...]
    url_encoded_listing: bool
    list_api: int
    send_content_md5: bool
    md5_etag: bool
    server_side_copy: bool
    part_copy: bool
    min_part_size: int
    exact_part_size: int | None
    max_part_count: int
    max_single_put: int
    max_server_copy: int
    max_key_bytes: int
    bucket_appid_suffix: bool
    storage_classes: frozenset[str]
    storage_policy: Mapping[str, str]
    source_tiers: Mapping[str, str]

    @property
    def s3_compatible(self) -> bool:
        return self.backend == "s3"

    def canonical_region(self, region: str) -> str:
        return self.region_aliases.get(region, region)

    def capabilities(self, quirks: str | None = None) -> Capabilities:
        """Capabilities of an S3 store speaking this dialect, narrowed by a named quirk set."""
        caps = Capabilities(
            server_side_copy=self.server_side_copy,
            multipart=True,
            part_copy=self.part_copy,
            crc64ecma=bool(self.crc64_headers),
            md5_etag=self.md5_etag,
            min_part_size=self.min_part_size,
            max_part_count=self.max_part_count,
            max_single_put=self.max_single_put,
            max_server_copy=self.max_server_copy,
            max_key_bytes=self.max_key_bytes,
            storage_classes=self.storage_classes,
            exact_part_size=self.exact_part_size,
        )
        if quirks:
            caps = dataclasses.replace(caps, **quirk_set(quirks)[0])
        return caps

    def dialect(self, quirks: str | None = None) -> S3Dialect:
        """The S3 dialect of this provider, adjusted by a named quirk set."""
        dialect = S3Dialect(
            crc64_headers=self.crc64_headers,
            url_encoded_listing=self.url_encoded_listing,
            list_api=self.list_api,
            send_content_md5=self.send_content_md5,
        )
        if quirks:
            dialect = dataclasses.replace(dialect, **quirk_set(quirks)[1])
        return dialect

    def storage_class_for(self, tier: str) -> str:
        """The class to send for an OMS tier (``STANDARD``/``IA``/``ARCHIVE``/``DEEP_ARCHIVE``).

        Raises ``ValueError`` when this provider has no such tier.
        """
        try:
            return self.storage_policy[tier]
        except KeyError:
            raise ValueError(f"{self.cloud_type} offers no {tier} storage class") from None

    def tier_of(self, storage_class: str | None) -> str:
        """OMS tier of a class this provider reports; no class (S3 omits STANDARD) or an
        unknown one counts as ``STANDARD``."""
        if not storage_class:
            return "STANDARD"
        return self.source_tiers.get(storage_class, self.source_tiers.get(storage_class.upper(), "STANDARD"))

    def bucket_problem(self, bucket: str) -> str | None:
        """Why ``bucket`` is not a valid bucket name for this provider, or None.

        Named clouds take DNS-compatible names (3–63 of ``a-z 0-9 . -``, starting and ending
        with a letter or digit, no ``..``/``.-``/``-.``, not an IP address); cloud type ``S3``
        (any S3-compatible server) also takes upper-case letters and ``_``, up to 255. Never an
        ARN, a URL or anything with ``:``, ``/``, ``@`` or ``%``: a bucket value must never
        choose the host a request goes to. ``Local`` buckets are paths, checked elsewhere.
        """
        if self.backend == "fs":
            return None
        if self.backend == "azure":
            if bucket in ("$root", "$web") or (_AZURE_CONTAINER.fullmatch(bucket) and "--" not in bucket):
                return None
            return ("is not a valid Azure container name (3 to 63 of a-z 0-9 -, starting and ending with a "
                    "letter or digit, no '--')")
        relaxed = self.cloud_type == "S3"
        pattern = _RELAXED_BUCKET if relaxed else _DNS_BUCKET
        if not pattern.fullmatch(bucket):
            allowed = "A-Z a-z 0-9 . - _, 3 to 255" if relaxed else "a-z 0-9 . -, 3 to 63"
            return (f"is not a valid {self.cloud_type} bucket name ({allowed} characters, starting and "
                    "ending with a letter or digit; ARNs and URLs are not buckets)")
        if ".." in bucket or ".-" in bucket or "-." in bucket:
            return f"is not a valid {self.cloud_type} bucket name (no '..', '.-' or '-.')"
        if _IPV4_LIKE.fullmatch(bucket):
            return f"is not a valid {self.cloud_type} bucket name (it looks like an IP address)"
        return None

    def bucket_name(self, bucket: str, app_id: str | None) -> str:
        """The bucket name to address: Tencent buckets carry ``-<APPID>``, added when missing."""
        if self.bucket_appid_suffix and app_id and not bucket.endswith(f"-{app_id}"):
            return f"{bucket}-{app_id}"
        return bucket


def destination_storage_class(
    policy: str | None,
    destination: ProviderProfile,
    source: ProviderProfile | None = None,
    source_class: str | None = None,
) -> str | None:
    """Class to write for ``dst_storage_policy``: ``None`` (no policy) sends none; a tier maps
    through the destination profile; ``SRC_STORAGE_MAPPING`` maps the source object's class to
    its tier first (§13 of the provider notes). Raises ``ValueError`` for an unknown policy or a
    tier the destination does not offer."""
    if policy is None:
        return None
    if policy == "SRC_STORAGE_MAPPING":
        tier = (source or destination).tier_of(source_class)
        if tier not in destination.storage_policy:
            # Fall back to the nearest colder-to-warmer tier the destination has.
            for candidate in reversed(TIERS[: TIERS.index(tier) + 1]):
                if candidate in destination.storage_policy:
                    return destination.storage_policy[candidate]
        return destination.storage_class_for(tier)
    if policy not in TIERS:
        raise ValueError(f"unknown storage policy {policy!r}")
    return destination.storage_class_for(policy)


@dataclass(frozen=True)
class ResolvedEndpoint:
    """Where and how to talk to one cloud region."""

    url: str
    region: str                        # SigV4 signing region
    addressing_style: str
    profile: ProviderProfile
    quirks: str | None = None          # name of a [quirks.*] set from the override fragment
    overridden: bool = False

    def capabilities(self) -> Capabilities:
        return self.profile.capabilities(self.quirks)

    def dialect(self) -> S3Dialect:
        return self.profile.dialect(self.quirks)


# -- loading -----------------------------------------------------------------------------------


@cache
def _data() -> dict[str, Any]:
    text = resources.files("omsync.stores").joinpath("providers.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _frozen_map(value: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in dict(value or {}).items()})


@cache
def get_profile(cloud_type: str) -> ProviderProfile:
    """The profile for a cloud type (``KeyError`` if there is none)."""
    data = _data()
    raw = data["profiles"][cloud_type]
    merged: dict[str, Any] = {**data["defaults"], **raw}
    return ProviderProfile(
        cloud_type=cloud_type,
        name=str(merged["name"]),
        backend=str(merged["backend"]),
        endpoint=merged.get("endpoint"),
        regions=tuple(merged.get("regions", ())),
        region_endpoints=_frozen_map(merged.get("region_endpoints")),
        region_aliases=_frozen_map(merged.get("region_aliases")),
        signing_region=str(merged["signing_region"]),
        addressing_style=str(merged["addressing_style"]),
        crc64_headers=tuple(h.lower() for h in merged["crc64_headers"]),
        url_encoded_listing=bool(merged["url_encoded_listing"]),
        list_api=int(merged["list_api"]),
        send_content_md5=bool(merged["send_content_md5"]),
        md5_etag=bool(merged["md5_etag"]),
        server_side_copy=bool(merged["server_side_copy"]),
        part_copy=bool(merged["part_copy"]),
        min_part_size=int(merged["min_part_size"]),
        exact_part_size=int(merged["exact_part_size"]) or None,
        max_part_count=int(merged["max_part_count"]),
        max_single_put=int(merged["max_single_put"]),
        max_server_copy=int(merged["max_server_copy"]),
        max_key_bytes=int(merged["max_key_bytes"]),
        bucket_appid_suffix=bool(merged["bucket_appid_suffix"]),
        storage_classes=frozenset(merged.get("storage_classes", ())),
        storage_policy=_frozen_map(merged.get("storage_policy")),
        source_tiers=_frozen_map(merged.get("source_tiers")),
    )


def all_profiles() -> dict[str, ProviderProfile]:
    """Every profile by cloud type."""
    return {name: get_profile(name) for name in _data()["profiles"]}


@cache
def quirk_set(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(capabilities overrides, dialect overrides)`` of a named server (``[quirks.<name>]``).

    Character-set fields are written as strings in the data. ``KeyError`` if unknown,
    ``ValueError`` for a field that is neither a ``Capabilities`` nor an ``S3Dialect`` field.
    """
    raw = dict(_data()["quirks"][name])
    caps: dict[str, Any] = {}
    dialect: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("unsupported_key_chars", "multipart_unsupported_key_chars", "storage_classes"):
            value = frozenset(value)
        elif key in ("reserved_prefixes", "crc64_headers"):
            value = tuple(value)
        if key in _CAPABILITY_FIELDS:
            caps[key] = value
        elif key in _DIALECT_FIELDS:
            dialect[key] = value
        else:
            raise ValueError(f"quirks.{name}: unknown field {key!r}")
    return caps, dialect


def quirk_names() -> list[str]:
    return sorted(_data().get("quirks", {}))


# -- endpoint resolution ------------------------------------------------------------------------


def _field(side: str | None, name: str) -> str:
    return f"{side}_{name}" if side else name


def validate_overrides(overrides: Mapping[str, str]) -> None:
    """Check every ``endpoints`` entry: key ``CloudType:region`` (either part may be ``*``, the
    cloud type must exist), value an http(s) URL with a host and an optional known ``#quirks``
    fragment. Raises ``EndpointError(field="endpoints")``."""
    known = set(_data()["profiles"])
    for name, url in overrides.items():
        parts = name.split(":")
        if len(parts) != 2 or not all(parts):
            raise EndpointError("endpoints", f"key {name!r} must look like 'CloudType:region'")
        if parts[0] != "*" and parts[0] not in known:
            raise EndpointError("endpoints", f"key {name!r} names unknown cloud type {parts[0]!r}")
        _parse_override(name, url)


def _parse_override(name: str, url: str) -> tuple[str, str | None]:
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise EndpointError("endpoints", f"endpoint for {name!r} must be an http:// or https:// URL")
    quirks = split.fragment or None
    if quirks is not None and quirks not in _data().get("quirks", {}):
        raise EndpointError(
            "endpoints", f"endpoint for {name!r} names unknown server quirks {quirks!r} "
            f"(known: {', '.join(quirk_names())})"
        )
    return url.split("#", 1)[0].rstrip("/"), quirks


def _is_local_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _pick_override(cloud_type: str, region: str, overrides: Mapping[str, str]) -> tuple[str, str] | None:
    for name in (f"{cloud_type}:{region}", f"{cloud_type}:*", f"*:{region}", "*:*"):
        if name in overrides:
            return name, overrides[name]
    return None


def resolve_endpoint(
    cloud_type: str,
    region: str,
    overrides: Mapping[str, str] | None = None,
    *,
    side: str | None = None,
) -> ResolvedEndpoint:
    """Endpoint for ``(cloud_type, region)``.

    ``overrides`` is the ``endpoints`` setting: keys ``CloudType:region``, ``CloudType:*``,
    ``*:region`` (and ``*:*``), most specific first; a value may end in ``#<quirks>`` to declare a
    server's key limits (``[quirks.*]`` in ``providers.toml``). An override for an IP address or
    ``localhost`` uses path-style addressing (virtual hosts cannot work there). ``Azure`` resolves
    for any region to a URL that still holds ``{account}`` (see :mod:`omsync.stores.azure`).

    ``side`` (``"src"``/``"dst"``) only prefixes the field named in errors. Raises
    ``EndpointError`` for an unknown cloud type, a provider without a network backend (Local),
    a region the profile does not list and no override covers, ``S3`` without an override, or
    an invalid override.
    """
    overrides = overrides or {}
    validate_overrides(overrides)
    try:
        profile = get_profile(cloud_type)
    except KeyError:
        known = ", ".join(sorted(_data()["profiles"]))
        raise EndpointError(_field(side, "cloud_type"),
                            f"unknown cloud type {cloud_type!r} (known: {known})") from None
    if profile.backend == "unsupported":
        raise EndpointError(_field(side, "cloud_type"),
                            f"{cloud_type} ({profile.name}) is not supported by the S3 backend")
    if profile.backend == "fs":
        raise EndpointError(_field(side, "cloud_type"),
                            f"{cloud_type} is served by the file-system store, not an S3 endpoint")
    canonical = profile.canonical_region(region)
    chosen = _pick_override(cloud_type, region, overrides)
    if chosen is None and canonical != region:
        chosen = _pick_override(cloud_type, canonical, overrides)
    if profile.backend == "azure":
        return _resolve_azure(profile, canonical, chosen)
    signing = profile.signing_region.replace("{region}", canonical) if canonical else "us-east-1"
    if chosen is not None:
        name, raw_url = chosen
        url, quirks = _parse_override(name, raw_url)
        style = "path" if (_is_local_host(url) or cloud_type == "S3") else profile.addressing_style
        return ResolvedEndpoint(url=url, region=signing, addressing_style=style, profile=profile,
                                quirks=quirks, overridden=True)
    if cloud_type == "S3":
        raise EndpointError(_field(side, "region"),
                            f"cloud type S3 needs an endpoint override ('S3:{region or '*'}' in endpoints)")
    if not region:
        raise EndpointError(_field(side, "region"), f"a region is required for {cloud_type}")
    if canonical not in profile.regions:
        raise EndpointError(
            _field(side, "region"),
            f"region {region!r} is not a known {cloud_type} region and no endpoint override covers it "
            f"(known: {', '.join(profile.regions)}; or set endpoints '{cloud_type}:{region}')",
        )
    template = profile.region_endpoints.get(canonical) or profile.endpoint
    if not template:
        raise EndpointError(_field(side, "region"), f"{cloud_type} has no endpoint template")
    return ResolvedEndpoint(url=template.replace("{region}", canonical), region=signing,
                            addressing_style=profile.addressing_style, profile=profile)


def _resolve_azure(profile: ProviderProfile, region: str, chosen: tuple[str, str] | None) -> ResolvedEndpoint:
    """Azure: any region (even none) resolves; sovereign-cloud regions to their endpoints. The
    URL keeps ``{account}`` for the store to fill in from the task's account name."""
    if chosen is not None:
        name, raw_url = chosen
        url, quirks = _parse_override(name, raw_url)
        return ResolvedEndpoint(url=url, region=region, addressing_style="path", profile=profile,
                                quirks=quirks, overridden=True)
    template = profile.region_endpoints.get(region) or profile.endpoint or ""
    return ResolvedEndpoint(url=template, region=region, addressing_style="virtual", profile=profile)


__all__ = [
    "TIERS",
    "EndpointError",
    "ProviderProfile",
    "ResolvedEndpoint",
    "S3Dialect",
    "all_profiles",
    "destination_storage_class",
    "get_profile",
    "quirk_set",
    "resolve_endpoint",
    "validate_overrides",
]
