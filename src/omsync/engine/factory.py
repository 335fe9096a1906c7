"""Stores for the two sides of a task, built once and shared.

A side is ``(cloud type, region, credentials)``. S3-compatible clouds resolve through the
provider profiles and the ``endpoints`` setting into an :class:`~omsync.stores.s3.S3Store`;
``Local`` is one :class:`~omsync.stores.fs.FsStore` over ``fs_roots``. Sides with the same
endpoint, signing region, dialect and credentials share one store and its S3 client. Every
store is wrapped in an :class:`~omsync.stores.instrumented.InstrumentedStore` (labelled with the
cloud type), so each request is timed for the metrics.

Whether a task's copies can be server-side is decided here, explicitly (:meth:`server_side`):
both sides resolve to the same endpoint URL with the same credentials, whatever their cloud
types are called (two names for one server are one server), or both are local directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from omsync.config import Settings
from omsync.domain.model import CloudType, Credentials, SourceCdn, TaskSpec
from omsync.stores.base import ErrorKind, ObjectStore, StoreError
from omsync.stores.fs import FsStore
from omsync.stores.instrumented import InstrumentedStore
from omsync.stores.profiles import EndpointError, get_profile, resolve_endpoint

log = logging.getLogger("omsync.engine.factory")

_StoreKey = tuple[str, ...]
_SideKey = tuple[CloudType, str, str, Credentials]
_SIDE_CACHE_LIMIT = 4096  # distinct task sides remembered; beyond, the memo starts over


def addressed(spec: TaskSpec) -> TaskSpec:
    """``spec`` with bucket names as the providers address them (Tencent COS buckets carry
    ``-<APPID>``, added from ``app_id`` when missing)."""
    def name(cloud: CloudType, bucket: str) -> str:
        try:
            return get_profile(cloud.value).bucket_name(bucket, spec.app_id)
        except KeyError:
            return bucket

    src_bucket = name(spec.src_cloud_type, spec.src_bucket)
    dst_bucket = name(spec.dst_cloud_type, spec.dst_bucket)
    if (src_bucket, dst_bucket) == (spec.src_bucket, spec.dst_bucket):
        return spec
    return dataclasses.replace(spec, src_bucket=src_bucket, dst_bucket=dst_bucket)


class StoreFactory:
    """Builds and caches the stores of task sides from ``settings`` (``endpoints``,
    ``fs_roots``, ``store_timeout_seconds``, ``workers`` × ``part_concurrency`` for pool size).

    Implements :class:`~omsync.engine.ports.StoreProvider`. ``close()`` releases every store it
    built; it must be called once the engine has stopped.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stores: dict[_StoreKey, ObjectStore] = {}
        # Resolving the endpoint and hashing the secret cost more than a dict lookup on every
        # key; settings do not change for the factory's lifetime, so a side maps to one store.
        self._sides: dict[_SideKey, ObjectStore] = {}
        self._identities: dict[_SideKey, tuple[str, ...]] = {}
        self._fs: ObjectStore | None = None
        self._cdn: dict[tuple[int, SourceCdn], ObjectStore] = {}

    async def source(self, spec: TaskSpec) -> ObjectStore:
        """The source side's store. Raises ``StoreError(INVALID, code="invalid_endpoint")`` when
        the cloud type / region cannot be resolved (not retryable)."""
        store = self.store(spec.src_cloud_type, spec.src_region, spec.src, side="src")
        if spec.source_cdn is not None:
            return self._through_cdn(store, spec.source_cdn)
        return store

    def _through_cdn(self, store: ObjectStore, cdn: SourceCdn) -> ObjectStore:
        """The source store whose bytes come from ``cdn`` (one per bucket store and CDN)."""
        key = (id(store), cdn)
        known = self._cdn.get(key)
        if known is None:
            from omsync.stores.cdn import CdnSourceStore

            known = self._cdn[key] = CdnSourceStore(store, cdn, timeout=self.settings.store_timeout_seconds)
        return known

    async def destination(self, spec: TaskSpec) -> ObjectStore:
        """The destination side's store (see :meth:`source`)."""
        return self.store(spec.dst_cloud_type, spec.dst_region, spec.dst, side="dst")

    def server_side(self, spec: TaskSpec) -> bool:
        """Whether the destination store can copy from the source bucket itself: both sides
        resolve to the same endpoint URL with the same credentials (and the
        ``server_side_copy`` setting allows it), or both are local.
        Raises ``StoreError`` like :meth:`source` when a side cannot be resolved. A source read
        through a CDN (``source_cdn``) is never copied server-side."""
        if spec.source_cdn is not None:
            return False
        src = self._identity(spec.src_cloud_type, spec.src_region, spec.src, "src")
        dst = self._identity(spec.dst_cloud_type, spec.dst_region, spec.dst, "dst")
        return src == dst and (self.settings.server_side_copy or src == ("local",))

    def _identity(self, cloud_type: CloudType, region: str, credentials: Credentials, side: str) -> tuple[str, ...]:
        self.store(cloud_type, region, credentials, side=side)
        return self._identities[(cloud_type, region, side, credentials)]

    def store(self, cloud_type: CloudType, region: str, credentials: Credentials, *, side: str = "") -> ObjectStore:
        """The shared store for one side; see the module docstring for what makes two sides share."""
        side_key = (cloud_type, region, side, credentials)
        known = self._sides.get(side_key)
        if known is not None:
            return known
        store, identity = self._build(cloud_type, region, credentials, side)
        if len(self._sides) >= _SIDE_CACHE_LIMIT:
            self._sides.clear()
            self._identities.clear()
        self._sides[side_key] = store
        self._identities[side_key] = identity
        return store

    def _build(self, cloud_type: CloudType, region: str, credentials: Credentials,
               side: str) -> tuple[ObjectStore, tuple[str, ...]]:
        if cloud_type is CloudType.LOCAL:
            if self._fs is None:
                # Every granted root, with omsync's data directory and master key protected.
                self._fs = InstrumentedStore(FsStore.from_settings(self.settings), cloud_type.value)
            return self._fs, ("local",)
        try:
            resolved = resolve_endpoint(cloud_type.value, region, self.settings.endpoints, side=side or None)
        except EndpointError as exc:
            raise StoreError(ErrorKind.INVALID, str(exc), retryable=False, code="invalid_endpoint") from exc
        secret_digest = hashlib.sha256(credentials.secret_key.encode("utf-8")).hexdigest()
        if cloud_type is CloudType.AZURE:
            # The Azure SDK only where Azure is used. ak = account name, sk = key / connection
            # string / SAS (unusable credentials raise StoreError(PERMISSION)).
            from omsync.stores.azure import AzureStore, account_url, capabilities_for, parse_credentials

            auth = parse_credentials(credentials)
            url = account_url(resolved, auth.account)
            azure_key = (cloud_type.value, url, resolved.quirks or "", auth.account, secret_digest)
            azure = self._stores.get(azure_key)
            if azure is None:
                azure = InstrumentedStore(
                    AzureStore(url, auth, capabilities=capabilities_for(resolved),
                               timeout=self.settings.store_timeout_seconds),
                    cloud_type.value)
                self._stores[azure_key] = azure
            return azure, ("azure", url, auth.account, secret_digest)
        key = (cloud_type.value, resolved.url, resolved.region, resolved.addressing_style,
               resolved.quirks or "", credentials.access_key, secret_digest)
        store = self._stores.get(key)
        if store is None:
            from omsync.stores.s3 import S3Store  # awscrt only where S3 is used

            pool = max(32, min(512, self.settings.workers * (self.settings.part_concurrency + 1)))
            store = InstrumentedStore(
                S3Store.for_endpoint(resolved, credentials, max_pool_connections=pool,
                                     timeout=self.settings.store_timeout_seconds),
                cloud_type.value)
            self._stores[key] = store
        return store, ("s3", resolved.url, credentials.access_key, secret_digest)

    async def close(self) -> None:
        """Close every store built here (S3 clients close when their last user lets go)."""
        stores = [*self._cdn.values(), *self._stores.values()]
        self._cdn.clear()
        self._stores.clear()
        self._sides.clear()
        if self._fs is not None:
            stores.append(self._fs)
            self._fs = None
        for store in stores:
            try:
                await store.close()
            except Exception:
                log.exception("closing a store failed")
