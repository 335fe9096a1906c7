"""Wire models: one class per direction, field names and limits as in the OMS v2 contract."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from omsync.domain.model import CdnAuthentication, CloudType, ConsistencyCheck, OverwriteMode, StoragePolicy

Str100 = Annotated[StrictStr, Field(min_length=1, max_length=100)]
Bucket = Annotated[StrictStr, Field(min_length=1, max_length=1024)]
CryptoType = Annotated[StrictStr, Field(pattern="^(DEFAULT|KMS)$", max_length=32)]
KmsKeyId = Annotated[StrictStr, Field(max_length=36)]
# An access key: 1 to 100 characters in plain text, checked by the routes; a ciphertext (crypto
# type KMS) is longer than what it encrypts, so the model lets up to 1024 through.
AccessKey = Annotated[StrictStr, Field(min_length=1, max_length=1024)]
PLAIN_ACCESS_KEY_MAX = 100


class _Request(BaseModel):
    # Unknown fields are ignored (newer SDKs may send more), wrong types are refused.
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class SourceCdnReq(_Request):
    # A host name (or IP address) with an optional port: no scheme, path, user or query.
    domain: Annotated[StrictStr, Field(min_length=1, max_length=255,
                                       pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")]
    protocol: Annotated[StrictStr, Field(pattern="^(http|https)$")]
    authentication_type: CdnAuthentication = CdnAuthentication.NONE
    authentication_key: Annotated[StrictStr, Field(max_length=1024)] | None = None
    crypto_type: CryptoType | None = None
    kms_key_id: KmsKeyId | None = None


class CreateSyncTaskReq(_Request):
    src_cloud_type: CloudType = CloudType.ALIYUN
    src_region: Str100
    src_bucket: Bucket
    src_ak: AccessKey
    src_sk: AccessKey
    src_crypto_type: CryptoType | None = None
    src_kms_key_id: KmsKeyId | None = None
    dst_ak: AccessKey
    dst_sk: AccessKey
    dst_crypto_type: CryptoType | None = None
    dst_kms_key_id: KmsKeyId | None = None
    dst_region: Str100
    dst_bucket: Bucket
    description: Annotated[StrictStr, Field(max_length=255)] | None = None
    enable_metadata_migration: StrictBool = False
    enable_kms: StrictBool = False
    enable_restore: StrictBool = False
    dst_storage_policy: StoragePolicy | None = None
    app_id: Annotated[StrictStr, Field(max_length=255)] | None = None
    source_cdn: SourceCdnReq | None = None
    consistency_check: ConsistencyCheck = ConsistencyCheck.SIZE_LAST_MODIFIED
    # omsync extensions (the SDK never sends them): any S3-compatible destination, overwrite mode.
    dst_cloud_type: CloudType = CloudType.HUAWEI
    object_overwrite_mode: OverwriteMode = OverwriteMode.SIZE_LAST_MODIFIED


class CreateSyncTaskResponse(BaseModel):
    sync_task_id: str


class StartSyncTaskReq(_Request):
    src_ak: AccessKey
    src_sk: AccessKey
    dst_ak: AccessKey
    dst_sk: AccessKey
    src_crypto_type: CryptoType | None = None
    dst_crypto_type: CryptoType | None = None
    source_cdn_crypto_type: CryptoType | None = None
    src_kms_key_id: KmsKeyId | None = None
    dst_kms_key_id: KmsKeyId | None = None
    source_cdn_kms_key_id: KmsKeyId | None = None
    source_cdn_authentication_key: Annotated[StrictStr, Field(max_length=1024)] | None = None


class SyncObjectReq(_Request):
    object_keys: list[Annotated[StrictStr, Field(min_length=1, max_length=16384)]]


class RetryFailedReq(_Request):
    object_keys: list[Annotated[StrictStr, Field(min_length=1, max_length=16384)]] | None = None


class SyncTaskInfo(BaseModel):
    sync_task_id: str
    src_cloud_type: str
    src_region: str
    src_bucket: str
    create_time: int
    last_start_time: int
    dst_bucket: str
    dst_region: str
    description: str | None
    status: str
    enable_metadata_migration: bool
    enable_restore: bool
    enable_kms: bool
    app_id: str | None
    object_overwrite_mode: str
    dst_storage_policy: str | None
    consistency_check: str
    source_cdn: dict[str, Any] | None = None
    dst_cloud_type: str


class ShowSyncTaskResponse(SyncTaskInfo):
    monthly_acceptance_request: int
    monthly_success_object: int
    monthly_failure_object: int
    monthly_skip_object: int
    monthly_size: int


class ListSyncTasksResponse(BaseModel):
    tasks: list[SyncTaskInfo]
    count: int


class StatisticData(BaseModel):
    time_stamp: int
    statistic_num: int


class StatisticTypeData(BaseModel):
    data_type: str
    data: list[StatisticData]


class ListSyncTaskStatisticResponse(BaseModel):
    sync_task_id: str
    statistic_time_type: str
    statistic_datas: list[StatisticTypeData]


class Link(BaseModel):
    href: str
    rel: str


class Version(BaseModel):
    id: str
    links: list[Link]
    status: str
    updated: str


class ListApiVersionsResponse(BaseModel):
    versions: list[Version]


class FailedObject(BaseModel):
    key: str
    reason: str | None
    message: str | None
    attempts: int
    time: int


class ListFailedObjectsResponse(BaseModel):
    objects: list[FailedObject]
    next_marker: int | None
    # Keys failing now (all pages): not the month's FAILURE counter, which also counts failures
    # a later retry fixed.
    count: int | None = None


class RetryFailedResponse(BaseModel):
    retried: int


class TaskLimitsReq(BaseModel):
    """The complete set of a task's limits (omsync extension); an omitted or null field is
    unlimited. Unknown fields are refused, so that a misspelt limit cannot silently lift one."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    # At least one key per 1,000 s: a smaller positive rate would never let a key start.
    max_objects_per_second: Annotated[float, Field(ge=0.001, le=1_000_000, strict=True, allow_inf_nan=False)] | None = None
    max_bytes_per_second: Annotated[StrictInt, Field(ge=1024, le=10**15)] | None = None


class TaskLimitsResponse(BaseModel):
    sync_task_id: str
    max_concurrency: int | None
    max_objects_per_second: float | None
    max_bytes_per_second: int | None
