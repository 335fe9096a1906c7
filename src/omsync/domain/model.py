"""Value types shared by the API, the ledger and the engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CloudType(enum.StrEnum):
    """``src_cloud_type`` values of the OMS API, plus omsync's own ``S3`` and ``Local``."""

    AWS = "AWS"
    AZURE = "Azure"
    ALIYUN = "Aliyun"
    TENCENT = "Tencent"
    HUAWEI = "HuaweiCloud"
    QINGCLOUD = "QingCloud"
    KINGSOFT = "KingsoftCloud"
    BAIDU = "Baidu"
    QINIU = "Qiniu"
    UCLOUD = "UCloud"
    S3 = "S3"          # any S3-compatible endpoint named by an endpoint override
    LOCAL = "Local"    # a local directory tree under an allowed root


class TaskStatus(enum.StrEnum):
    SYNCHRONIZING = "SYNCHRONIZING"
    STOPPED = "STOPPED"


class OverwriteMode(enum.StrEnum):
    NO_OVERWRITE = "NO_OVERWRITE"
    SIZE_LAST_MODIFIED = "SIZE_LAST_MODIFIED_COMPARISON_OVERWRITE"
    CRC64 = "CRC64_COMPARISON_OVERWRITE"
    FULL = "FULL_OVERWRITE"


class ConsistencyCheck(enum.StrEnum):
    """Request spelling; ``TRANSMISSION`` is reported as ``no_check`` in responses."""

    SIZE_LAST_MODIFIED = "size_last_modified"
    CRC64 = "crc64"
    TRANSMISSION = "transmission"

    @property
    def response_value(self) -> str:
        return "no_check" if self is ConsistencyCheck.TRANSMISSION else self.value


class StoragePolicy(enum.StrEnum):
    STANDARD = "STANDARD"
    IA = "IA"
    ARCHIVE = "ARCHIVE"
    DEEP_ARCHIVE = "DEEP_ARCHIVE"
    SRC_STORAGE_MAPPING = "SRC_STORAGE_MAPPING"


class OutcomeKind(enum.StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print secrets
        return "Credentials(***)"


class CdnAuthentication(enum.StrEnum):
    """``source_cdn.authentication_type``: the CDN's URL-signing scheme (omsync.stores.cdn_signing)."""

    NONE = "NONE"
    ALIYUN_OSS_A = "ALIYUN_OSS_A"
    ALIYUN_OSS_B = "ALIYUN_OSS_B"
    ALIYUN_OSS_C = "ALIYUN_OSS_C"
    TENCENT_COS_A = "TENCENT_COS_A"
    TENCENT_COS_B = "TENCENT_COS_B"
    TENCENT_COS_C = "TENCENT_COS_C"
    TENCENT_COS_D = "TENCENT_COS_D"
    QINIU = "QINIU_PRIVATE_AUTHENTICATION"
    KSYUN = "KSYUN_PRIVATE_AUTHENTICATION"
    AZURE_SAS = "AZURE_SAS_TOKEN"


@dataclass(frozen=True)
class SourceCdn:
    """Where a task reads source bytes from instead of the bucket (``source_cdn``); the key is
    decrypted (never printed)."""

    domain: str
    protocol: str
    authentication_type: CdnAuthentication
    authentication_key: str | None = None

    def __repr__(self) -> str:
        return f"SourceCdn({self.protocol}://{self.domain}, {self.authentication_type.value}, key=***)"


@dataclass(frozen=True)
class TaskSpec:
    """What the engine needs to copy a task's keys (credentials decrypted)."""

    task_id: str
    src_cloud_type: CloudType
    src_region: str
    src_bucket: str
    src: Credentials
    dst_region: str
    dst_bucket: str
    dst: Credentials
    dst_cloud_type: CloudType
    overwrite_mode: OverwriteMode
    consistency_check: ConsistencyCheck
    enable_metadata_migration: bool
    dst_storage_policy: StoragePolicy | None
    app_id: str | None = None
    enable_restore: bool = False  # restore archived source objects first (else: source_archived)
    source_cdn: SourceCdn | None = None  # read source bytes through this CDN (metadata: the bucket)
    # Migration tasks: every destination key is dst_key_prefix + source key (save_prefix);
    # object lists go under object_list_root (None: oms/sync_task/<task_id>), and failed keys
    # are listed only when record_failed_objects.
    dst_key_prefix: str = ""
    object_list_root: str | None = None
    record_failed_objects: bool = True


@dataclass(frozen=True)
class Outcome:
    """The final result of copying one key for one generation.

    ``reason`` is a stable machine code (``source_not_found``, ``access_denied``,
    ``retries_exhausted``, ``not_modified``, ``exists``, ``verify_failed``, ...); ``message`` is
    human text; ``size`` counts into SIZE when ``kind`` is SUCCESS.
    """

    kind: OutcomeKind
    reason: str | None = None
    message: str | None = None
    size: int = 0


@dataclass(frozen=True)
class TaskLimits:
    """Per-task throttles, adjustable while the task runs; ``None`` means unlimited.

    ``max_concurrency`` bounds the task's copies in flight at once across every worker process
    (enforced where keys are claimed, by counting the task's live leases).
    ``max_objects_per_second`` (keys started per second, every attempt counted) and
    ``max_bytes_per_second`` (bytes moved per second) are token buckets in each worker process:
    with N worker processes the task may reach up to N times these rates.
    """

    max_concurrency: int | None = None
    max_objects_per_second: float | None = None
    max_bytes_per_second: int | None = None

    @property
    def unlimited(self) -> bool:
        return (self.max_concurrency is None and self.max_objects_per_second is None
                and self.max_bytes_per_second is None)
