"""The OMS v2 pre-check operations (``/v2/{project_id}/objectstorage/...``), with the fields of
the official SDK's models: ShowBucketList, ShowBucketObjects, CheckPrefix, ShowBucketRegion,
ShowCloudType and ShowRegionInfo.

Each bucket operation uses the credentials of its request against the real store, built by the
same :class:`~omsync.engine.factory.StoreFactory` as the tasks' stores (so the ``endpoints``
setting applies), with the same per-side timeout as the bucket check of CreateSyncTask. A
refusal is 400 ``OMS.0064`` naming the field and why (bucket not found, access denied, endpoint
unreachable; :func:`omsync.api.preflight.refusal`), never a 500.

Where the request carries no region (ShowBucketList, ShowBucketRegion, CheckPrefix without
``data_center``) the region is taken from what omsync knows: the regions of the ``endpoints``
setting that apply to the cloud type, else the provider profile's regions (docs/prechecks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query
from fastapi.requests import Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from omsync.api.errors import OmsError, invalid
from omsync.api.preflight import reason
from omsync.api.routes import ProjectId, ServicesDep, parse_body
from omsync.domain.model import CloudType, Credentials
from omsync.engine.factory import StoreFactory
from omsync.services import Services
from omsync.stores.base import ErrorKind, ObjectStore, StoreError
from omsync.stores.profiles import all_profiles, get_profile

router = APIRouter(prefix="/v2/{project_id}/objectstorage")

T = TypeVar("T")

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
SERVICE_NAME = "omsync"

Secret = Annotated[StrictStr, Field(min_length=1, max_length=100)]
BucketName = Annotated[StrictStr, Field(min_length=1, max_length=1024)]


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cloud_type: CloudType
    ak: Secret | None = None
    sk: Secret | None = None
    json_auth_file: StrictStr | None = None
    connection_string: StrictStr | None = None
    app_id: Annotated[StrictStr, Field(max_length=255)] | None = None


class ListBucketsReq(_Req):
    """ShowBucketList's body (SDK ``ListBucketsReq``)."""


class ShowBucketReq(_Req):
    """ShowBucketObjects' body (SDK ``ShowBucketReq``)."""

    bucket_name: BucketName
    file_path: Annotated[StrictStr, Field(max_length=1024)] | None = None
    data_center: Annotated[StrictStr, Field(max_length=100)] | None = None
    page_size: StrictInt | None = None
    behind_filename: Annotated[StrictStr, Field(max_length=1024)] | None = None


class CheckPrefixReq(_Req):
    """CheckPrefix's body (SDK ``CheckPrefixReq``)."""

    bucket_name: BucketName
    file_name: Annotated[StrictStr, Field(max_length=1024)]
    data_center: Annotated[StrictStr, Field(max_length=100)] | None = None
    security_token: StrictStr | None = None


class ShowBucketRegionReq(_Req):
    """ShowBucketRegion's body (SDK ``ShowBucketRegionReq``)."""

    bucket_name: BucketName


def _credentials(body: _Req) -> Credentials:
    """The request's keys; the fields omsync has no use for are refused by name."""
    if body.json_auth_file is not None:
        raise invalid("json_auth_file", "Google Cloud Storage is not offered by omsync")
    if getattr(body, "security_token", None) is not None:
        raise invalid("security_token", "temporary credentials are not supported; give ak and sk")
    secret = body.sk
    if secret is None and body.cloud_type is CloudType.AZURE and body.connection_string:
        secret = body.connection_string  # the Azure store takes a connection string as its secret
    if body.cloud_type is CloudType.LOCAL:
        raise invalid("cloud_type", "Local directories are not buckets of a cloud; nothing to check")
    if not body.ak:
        raise invalid("ak", "is required")
    if not secret:
        raise invalid("sk", "is required")
    return Credentials(body.ak, secret)


def candidate_regions(cloud: CloudType, endpoints: dict[str, str]) -> list[str]:
    """Regions worth trying for ``cloud`` when a request names none: those of ``endpoints``
    overrides that apply to it (``<cloud>:<region>`` first, then ``*:<region>``), else the
    profile's own regions; ``[""]`` when an override covers every region of it."""
    named: list[str] = []
    wildcard = False
    for prefix in (f"{cloud.value}:", "*:"):
        for name in endpoints:
            if not name.startswith(prefix):
                continue
            region = name[len(prefix):]
            if region == "*":
                wildcard = True
            elif region not in named:
                named.append(region)
    if named:
        return named
    if wildcard:
        return [""]
    try:
        return list(get_profile(cloud.value).regions)
    except KeyError:
        return []


def _bucket(cloud: CloudType, bucket: str, app_id: str | None) -> str:
    try:
        return get_profile(cloud.value).bucket_name(bucket, app_id)
    except KeyError:
        return bucket


def _store(stores: StoreFactory, cloud: CloudType, region: str, credentials: Credentials,
           field: str) -> ObjectStore:
    try:
        return stores.store(cloud, region, credentials, side="src")
    except StoreError as exc:
        if exc.code == "invalid_endpoint":
            raise invalid(field, exc.message) from exc
        raise


async def _timed(call: Awaitable[T], timeout: float) -> T:
    try:
        return await asyncio.wait_for(call, timeout)
    except TimeoutError:
        raise StoreError(ErrorKind.TRANSIENT, f"no answer within {timeout:g} s", code="Timeout") from None


def _bucket_refusal(bucket: str, error: StoreError) -> OmsError:
    """400 naming ``ak`` when the keys were refused, else ``bucket_name``, and why."""
    if error.kind is ErrorKind.PERMISSION:
        return invalid("ak", f"the given credentials were refused: {reason(error)}")
    return invalid("bucket_name", f"bucket {bucket!r} cannot be used with the given credentials: {reason(error)}")


async def _on_bucket(services: Services, body: _Req, bucket: str, region: str | None,
                     call: Callable[[ObjectStore, str], Awaitable[T]]) -> T:
    """``call(store, addressed bucket)`` for the request's side; store errors become 400s."""
    settings = services.settings
    credentials = _credentials(body)
    regions = [region] if region else candidate_regions(body.cloud_type, settings.endpoints)
    if not regions:
        raise invalid("data_center", f"no region of {body.cloud_type.value} is known; name one")
    async with services.checking_stores() as stores:
        store = _store(stores, body.cloud_type, regions[0], credentials, "data_center" if region else "cloud_type")
        try:
            return await _timed(call(store, _bucket(body.cloud_type, bucket, body.app_id)),
                                settings.check_buckets_timeout_seconds)
        except StoreError as exc:
            raise _bucket_refusal(bucket, exc) from exc


@router.post("/buckets")
async def show_bucket_list(request: Request, project_id: ProjectId, services: ServicesDep) -> list[str]:
    """ShowBucketList: the names of the buckets the given keys own (ListBuckets), in the
    first region :func:`candidate_regions` gives. 400 naming ``ak`` when the keys are refused,
    ``cloud_type`` when the store cannot list buckets (Azure: give the container)."""
    body = await parse_body(request, ListBucketsReq)
    credentials = _credentials(body)
    regions = candidate_regions(body.cloud_type, services.settings.endpoints)
    if not regions:
        raise invalid("cloud_type", f"no region of {body.cloud_type.value} is known")
    async with services.checking_stores() as stores:
        store = _store(stores, body.cloud_type, regions[0], credentials, "cloud_type")
        lister: Callable[[], Awaitable[list[str]]] | None = getattr(store, "list_buckets", None)
        if lister is None:
            raise invalid("cloud_type", f"listing the buckets of {body.cloud_type.value} is not supported")
        try:
            names = await _timed(lister(), services.settings.check_buckets_timeout_seconds)
        except StoreError as exc:
            raise _bucket_refusal("", exc) from exc
    return sorted(names)


@router.post("/buckets/objects")
async def show_bucket_objects(request: Request, project_id: ProjectId, services: ServicesDep) -> dict[str, Any]:
    """ShowBucketObjects: one page of the objects under ``file_path`` (every key starting with
    it, at any depth), at most ``page_size`` (1 to 1000, default 100) after ``behind_filename``.
    ``next_page`` says whether more follow and ``next_marker`` is the ``behind_filename`` of
    the next page (the last key of this one)."""
    body = await parse_body(request, ShowBucketReq)
    size = DEFAULT_PAGE_SIZE if body.page_size is None else body.page_size
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise invalid("page_size", f"must be 1 to {MAX_PAGE_SIZE}, got {size}")
    prefix = body.file_path or ""
    after = body.behind_filename or None

    async def one_page(store: ObjectStore, bucket: str) -> dict[str, Any]:
        page = await store.list(bucket, prefix=prefix, limit=size, start_after=after)
        keys = page.keys[:size]
        more = page.next_token is not None or len(page.keys) > size
        return {
            "next_page": more,
            "next_marker": keys[-1].key if more and keys else None,
            "records": [{"name": info.key, "size": str(info.size)} for info in keys],
        }

    return await _on_bucket(services, body, body.bucket_name, body.data_center,
                            one_page)


@router.post("/buckets/prefix")
async def check_prefix(request: Request, project_id: ProjectId, services: ServicesDep) -> dict[str, bool]:
    """CheckPrefix: ``exist`` is true when at least one object's key starts with
    ``file_name`` (one listing of at most one object)."""
    body = await parse_body(request, CheckPrefixReq)

    async def exists(store: ObjectStore, bucket: str) -> bool:
        page = await store.list(bucket, prefix=body.file_name, limit=1)
        return bool(page.keys)

    found = await _on_bucket(services, body, body.bucket_name, body.data_center,
                             exists)
    return {"exist": found}


@router.post("/buckets/regions")
async def show_bucket_region(request: Request, project_id: ProjectId, services: ServicesDep) -> dict[str, Any]:
    """ShowBucketRegion: the first region (of :func:`candidate_regions`, probed at once) in
    which the bucket answers a one-object listing with the given keys: ``id`` and ``name`` are
    that region, ``support`` whether omsync can use it. 400 naming ``bucket_name`` (or ``ak``)
    with the first region's refusal when none answers."""
    body = await parse_body(request, ShowBucketRegionReq)
    credentials = _credentials(body)
    settings = services.settings
    regions = candidate_regions(body.cloud_type, settings.endpoints)
    if not regions:
        raise invalid("cloud_type", f"no region of {body.cloud_type.value} is known")
    bucket = _bucket(body.cloud_type, body.bucket_name, body.app_id)

    async def probe(stores: StoreFactory, region: str) -> StoreError | None:
        try:
            store = _store(stores, body.cloud_type, region, credentials, "cloud_type")
            await _timed(store.list(bucket, limit=1), settings.check_buckets_timeout_seconds)
        except StoreError as exc:
            return None if exc.kind is ErrorKind.THROTTLED else exc
        return None

    async with services.checking_stores() as stores:
        results = await asyncio.gather(*(probe(stores, region) for region in regions))
    for region, error in zip(regions, results, strict=True):
        if error is None:
            return {"id": region, "name": region, "support": True}
    first = results[0]
    assert first is not None  # every probe failed
    raise _bucket_refusal(body.bucket_name, first)


def supported_cloud_types(side: str) -> list[str]:
    """Cloud types omsync can read (``src``) or write (``dst``): every provider profile with a
    backend (S3-compatible, Azure, local directories)."""
    del side  # both sides take every store omsync has
    return [name for name, profile in all_profiles().items() if profile.backend != "unsupported"]


@router.get("/cloud-type")
async def show_cloud_type(
    project_id: ProjectId,
    services: ServicesDep,
    kind: Annotated[Literal["src", "dst"] | None, Query(alias="type")] = None,
) -> list[str]:
    """ShowCloudType: the cloud types omsync supports as a source (``type=src``, the default)
    or destination (``type=dst``)."""
    return supported_cloud_types(kind or "src")


@router.get("/data-center")
async def show_region_info(project_id: ProjectId, services: ServicesDep) -> list[dict[str, Any]]:
    """ShowRegionInfo: one entry (``service_name`` ``omsync``) listing, per supported cloud
    type, the regions it resolves without configuration (the provider profile) and those the
    ``endpoints`` setting adds; ``description`` names the provider and, for an override, says
    so."""
    endpoints = services.settings.endpoints
    listed: list[dict[str, str]] = []
    for name, profile in all_profiles().items():
        if profile.backend == "unsupported":
            continue
        seen: set[str] = set()
        try:
            cloud = CloudType(name)
        except ValueError:
            continue
        for region in candidate_regions(cloud, endpoints):
            if region and region not in profile.regions and region not in seen:
                seen.add(region)
                listed.append({"cloud_type": name, "value": region,
                               "description": f"{profile.name} (endpoint override)"})
        for region in profile.regions:
            if region not in seen:
                seen.add(region)
                listed.append({"cloud_type": name, "value": region, "description": f"{profile.name} {region}"})
    return [{"service_name": SERVICE_NAME, "region_list": listed}]


__all__ = ["candidate_regions", "router", "supported_cloud_types"]
