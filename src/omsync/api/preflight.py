"""The bucket check of CreateSyncTask and StartSyncTask: a task whose every key would fail is
refused when it is created or started, not discovered one failed key at a time.

With the credentials given, each side costs one request to the real store (S3 through awscrt,
a local directory, Azure): a listing of at most one object. On the source that proves the
bucket exists and can be read; on the destination it proves the bucket exists and the
credentials are accepted (omsync lists the destination anyway, to decide overwrites). Nothing
is written. A refusal is 400 ``OMS.0064`` naming the field (``src_bucket`` / ``dst_bucket``)
and the reason: bucket not found, access denied, or endpoint unreachable.

``OMSYNC_CHECK_BUCKETS_ON_CREATE=false`` turns the check off (for sources that are not
reachable yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omsync.api.errors import OmsError, invalid
from omsync.domain.model import CloudType, Credentials
from omsync.engine.factory import StoreFactory
from omsync.stores.base import ErrorKind, StoreError
from omsync.stores.profiles import get_profile

if TYPE_CHECKING:
    from omsync.services import Services

log = logging.getLogger("omsync.api.preflight")

SIDE_NAMES = {"src": "source", "dst": "destination"}


def _bucket_name(cloud: CloudType, bucket: str, app_id: str | None) -> str:
    """The bucket as its provider addresses it (Tencent COS buckets carry ``-<APPID>``)."""
    try:
        return get_profile(cloud.value).bucket_name(bucket, app_id)
    except KeyError:
        return bucket


def reason(error: StoreError) -> str:
    """Why a bucket cannot be used, in the words of the refusals: ``bucket not found``,
    ``access denied``, ``endpoint unreachable`` or ``cannot be used``, with the store's error
    code and (shortened) message."""
    if error.kind is ErrorKind.NOT_FOUND:
        why = "bucket not found"
    elif error.kind is ErrorKind.PERMISSION:
        why = "access denied"
    elif error.kind in (ErrorKind.TRANSIENT, ErrorKind.THROTTLED):
        why = "endpoint unreachable"
    else:
        why = "cannot be used"
    code = f" [{error.code}]" if error.code and error.code != error.kind.value else ""
    message = error.message if len(error.message) <= 300 else error.message[:299] + "…"
    return f"{why}{code} ({message})"


def refusal(side: str, bucket: str, error: StoreError) -> OmsError:
    """400 naming ``<side>_bucket``, the side in words and why it cannot be used."""
    verb = "read" if side == "src" else "written"
    return invalid(f"{side}_bucket",
                   f"{SIDE_NAMES[side]} bucket {bucket!r} cannot be {verb} with the given credentials: "
                   f"{reason(error)}")


async def probe(stores: StoreFactory, side: str, cloud: CloudType, region: str, bucket: str,
                credentials: Credentials, *, app_id: str | None, timeout: float) -> StoreError | None:
    """One listing of at most one object of ``bucket``; the error that stops it, if any."""
    try:
        store = stores.store(cloud, region, credentials, side=side)
        name = _bucket_name(cloud, bucket, app_id)
        await asyncio.wait_for(store.list(name, limit=1), timeout)
    except StoreError as exc:
        if exc.kind is ErrorKind.THROTTLED:
            return None  # the bucket answered: it exists and the store is only busy
        return exc
    except TimeoutError:
        return StoreError(ErrorKind.TRANSIENT, f"no answer within {timeout:g} s", code="Timeout")
    return None


async def check_buckets(stores: StoreFactory, *, timeout: float, app_id: str | None,
                        src: tuple[CloudType, str, str, Credentials],
                        dst: tuple[CloudType, str, str, Credentials]) -> None:
    """Raise a 400 :class:`OmsError` when the source bucket cannot be read or the destination
    bucket cannot be written with the given credentials (both sides are probed at once; the
    source's refusal is reported first)."""
    results = await asyncio.gather(
        probe(stores, "src", *src, app_id=app_id, timeout=timeout),
        probe(stores, "dst", *dst, app_id=app_id, timeout=timeout),
    )
    for side, (_, _, bucket, _), error in zip(("src", "dst"), (src, dst), results, strict=True):
        if error is not None:
            log.info("task refused: %s bucket check failed (%s)", SIDE_NAMES[side], error.kind.value)
            raise refusal(side, bucket, error)


__all__ = ["check_buckets", "probe", "reason", "refusal"]


async def check_task_row(services: Services, row: Mapping[str, Any], credentials: Mapping[str, str]) -> None:
    """Refuse (400 naming the side) a task ``row`` (its cloud types, regions, buckets and
    ``app_id``) whose source bucket cannot be read or destination bucket reached with
    ``credentials`` (``src_ak``, ``src_sk``, ``dst_ak``, ``dst_sk``), unless
    ``check_buckets_on_create`` is off."""
    settings = services.settings
    if not settings.check_buckets_on_create:
        return
    async with services.checking_stores() as stores:
        await check_buckets(
            stores, timeout=settings.check_buckets_timeout_seconds, app_id=row["app_id"],
            src=(CloudType(row["src_cloud_type"]), row["src_region"], row["src_bucket"],
                 Credentials(credentials["src_ak"], credentials["src_sk"])),
            dst=(CloudType(row["dst_cloud_type"]), row["dst_region"], row["dst_bucket"],
                 Credentials(credentials["dst_ak"], credentials["dst_sk"])),
        )
