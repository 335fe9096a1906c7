"""Object stores: the port (``base``) and its adapters (S3 via awscrt, Azure Blob, local fs, memory).

Only the composition root and tests pick a concrete store; the engine sees ``ObjectStore``,
``Capabilities`` and ``StoreError``. ``S3Store`` is imported lazily so that importing the port
does not load awscrt.
"""

from typing import TYPE_CHECKING, Any

from omsync.stores.base import (
    RETRYABLE_KINDS,
    Capabilities,
    ErrorKind,
    ListPage,
    ObjectInfo,
    ObjectStore,
    PutOptions,
    StoreError,
)
from omsync.stores.crc64 import Crc64, crc64_combine, crc64ecma
from omsync.stores.fs import FS_CAPABILITIES, FsStore
from omsync.stores.memory import MEMORY_CAPABILITIES, Fault, MemoryStore
from omsync.stores.profiles import (
    EndpointError,
    ProviderProfile,
    ResolvedEndpoint,
    all_profiles,
    destination_storage_class,
    get_profile,
    resolve_endpoint,
    validate_overrides,
)

if TYPE_CHECKING:
    from omsync.stores.s3 import S3Store, close_shared_clients


def __getattr__(name: str) -> Any:
    if name in ("S3Store", "close_shared_clients", "translate_error"):
        from omsync.stores import s3

        return getattr(s3, name)
    raise AttributeError(f"module 'omsync.stores' has no attribute {name!r}")


__all__ = [
    "FS_CAPABILITIES",
    "MEMORY_CAPABILITIES",
    "RETRYABLE_KINDS",
    "Capabilities",
    "Crc64",
    "EndpointError",
    "ErrorKind",
    "Fault",
    "FsStore",
    "ListPage",
    "MemoryStore",
    "ObjectInfo",
    "ObjectStore",
    "ProviderProfile",
    "PutOptions",
    "ResolvedEndpoint",
    "S3Store",
    "StoreError",
    "all_profiles",
    "close_shared_clients",
    "crc64_combine",
    "crc64ecma",
    "destination_storage_class",
    "get_profile",
    "resolve_endpoint",
    "validate_overrides",
]
