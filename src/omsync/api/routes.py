"""The OMS v2 sync-task operations (spec §2–§3) plus omsync's extensions: failed keys and their
re-drive, per-task limits.

Every handler authenticates first, then validates: an unauthenticated caller learns nothing
about the request it sent. Refusals of the domain (unknown task, status conflict, task cap,
full backlog) propagate from the repositories and are answered in one place,
:func:`omsync.api.errors.domain_error`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError

from omsync import metrics
from omsync.api import errors, task_secrets
from omsync.api.auth import authorize_project
from omsync.api.errors import OmsError, invalid, unknown_task_is_400
from omsync.api.guards import INT64_MAX, check_task_buckets, load_json_body
from omsync.api.preflight import check_task_row
from omsync.api.schemas import (
    CreateSyncTaskReq,
    CreateSyncTaskResponse,
    FailedObject,
    ListFailedObjectsResponse,
    ListSyncTasksResponse,
    ListSyncTaskStatisticResponse,
    RetryFailedReq,
    RetryFailedResponse,
    ShowSyncTaskResponse,
    StartSyncTaskReq,
    StatisticData,
    StatisticTypeData,
    SyncObjectReq,
    SyncTaskInfo,
    TaskLimitsReq,
    TaskLimitsResponse,
)
from omsync.domain.errors import TaskNotFound
from omsync.domain.keys import MAX_KEY_BYTES, KeyDecodeError, decode_event_key
from omsync.domain.model import CdnAuthentication, CloudType, ConsistencyCheck, TaskLimits, TaskStatus
from omsync.domain.stats import StatsRangeError, aggregate, choose_granularity, month_range
from omsync.ledger.migration_tasks import SYNC_ID_PREFIX as MIGRATION_ID_PREFIX
from omsync.ledger.tasks import dump_json
from omsync.services import Services
from omsync.stores.profiles import EndpointError, resolve_endpoint

M = TypeVar("M", bound=BaseModel)
DATA_TYPES = ("REQUEST", "SUCCESS", "FAILURE", "SKIP", "SIZE")
FORBIDDEN_DESCRIPTION_CHARS = set("<>()\"'&")

router = APIRouter(prefix="/v2/{project_id}/sync-tasks")


async def services_of(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency on a worker thread, a hop per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(services_of)]


async def project_scope(
    request: Request,
    services: ServicesDep,
    project_id: Annotated[str, Path(min_length=1, max_length=1024)],
) -> str:
    await authorize_project(request, services, project_id)
    return project_id


ProjectId = Annotated[str, Depends(project_scope)]


def sync_task_scope(sync_task_id: Annotated[str, Path(min_length=1, max_length=1024)]) -> str:
    """A sync task's id from the path. The engine rows of migration tasks live beside sync
    tasks; under ``sync-tasks/`` they do not exist (``TaskNotFound``)."""
    if sync_task_id.startswith(MIGRATION_ID_PREFIX):
        raise TaskNotFound(sync_task_id)
    return sync_task_id


TaskId = Annotated[str, Depends(sync_task_scope)]


async def parse_body(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    """Validate the JSON body against ``model``; 400 OMS.0064 names the first bad field."""
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            raw = b"{}"
        else:
            raise invalid("body", "is required")
    payload = load_json_body(raw)  # 400 for bad JSON, deep nesting, integers beyond 64 bits
    if not isinstance(payload, dict):
        raise invalid("body", "must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        why = "is required" if first["type"] == "missing" else str(first["msg"])
        raise invalid(field, why) from exc


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _task_info(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "sync_task_id": row["id"],
        "src_cloud_type": row["src_cloud_type"],
        "src_region": row["src_region"],
        "src_bucket": row["src_bucket"],
        "create_time": row["create_time"],
        "last_start_time": row["last_start_time"],
        "dst_bucket": row["dst_bucket"],
        "dst_region": row["dst_region"],
        "description": row["description"],
        "status": row["status"],
        "enable_metadata_migration": bool(row["enable_metadata_migration"]),
        "enable_restore": bool(row["enable_restore"]),
        "enable_kms": bool(row["enable_kms"]),
        "app_id": row["app_id"],
        "object_overwrite_mode": row["object_overwrite_mode"],
        "dst_storage_policy": row["dst_storage_policy"],
        "consistency_check": ConsistencyCheck(row["consistency_check"]).response_value,
        "source_cdn": json.loads(row["source_cdn"]) if row["source_cdn"] else None,
        "dst_cloud_type": row["dst_cloud_type"],
    }


def _check_side(services: Services, side: str, cloud: CloudType, region: str, bucket: str) -> None:
    """Refuse a task whose source or destination omsync could not reach, naming the field."""
    if cloud is CloudType.LOCAL:
        return  # the directory and the project's grant are checked by check_task_buckets
    try:
        resolve_endpoint(cloud.value, region, services.settings.endpoints)
    except EndpointError as exc:
        raise invalid(f"{side}_region", str(exc)) from exc


def _epoch_ms(name: str, value: str | None) -> int:
    if value is None or value == "":
        raise invalid(name, "is required")
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        raise invalid(name, "must be epoch milliseconds")
    return int(value)


@router.post("", response_model=CreateSyncTaskResponse, openapi_extra=_body_schema(CreateSyncTaskReq))
async def create_sync_task(request: Request, project_id: ProjectId, services: ServicesDep) -> dict[str, str]:
    """CreateSyncTask: stores the task (credentials encrypted) and starts it at once."""
    body = await parse_body(request, CreateSyncTaskReq)
    if body.description and FORBIDDEN_DESCRIPTION_CHARS & set(body.description):
        raise OmsError(
            400, errors.INVALID_DESCRIPTION, "The description contains invalid characters.",
            detail="request parameter [description] must not contain < > ( ) \" ' &",
        )
    if body.enable_kms:
        # OMS's older flag asks for server-side encryption of the copies with KMS, which omsync
        # does not offer (credentials encrypted for a data key: src_crypto_type/dst_crypto_type).
        raise invalid("enable_kms", "server-side encryption of the copies with KMS is not supported by omsync")
    cdn = body.source_cdn
    sealed = task_secrets.access_key_fields(
        {"src_ak": body.src_ak, "src_sk": body.src_sk, "dst_ak": body.dst_ak, "dst_sk": body.dst_sk},
        {"src": (body.src_crypto_type, body.src_kms_key_id), "dst": (body.dst_crypto_type, body.dst_kms_key_id)})
    if cdn is not None:
        sealed += task_secrets.cdn_key_field(cdn.authentication_type, cdn.authentication_key, cdn.crypto_type,
                                             cdn.kms_key_id, prefix="source_cdn.")
    secrets = await task_secrets.open_secrets(services, project_id, sealed)
    _check_side(services, "src", body.src_cloud_type, body.src_region, body.src_bucket)
    _check_side(services, "dst", body.dst_cloud_type, body.dst_region, body.dst_bucket)
    check_task_buckets(services.settings, project_id, body.src_cloud_type, body.src_bucket,
                       body.dst_cloud_type, body.dst_bucket)
    fields = {
        "src_cloud_type": body.src_cloud_type.value,
        "src_region": body.src_region,
        "src_bucket": body.src_bucket,
        "dst_cloud_type": body.dst_cloud_type.value,
        "dst_region": body.dst_region,
        "dst_bucket": body.dst_bucket,
        "description": body.description,
        "enable_metadata_migration": body.enable_metadata_migration,
        "enable_restore": body.enable_restore,
        "enable_kms": body.enable_kms,
        "dst_storage_policy": body.dst_storage_policy.value if body.dst_storage_policy else None,
        "app_id": body.app_id,
        "source_cdn": dump_json({"domain": cdn.domain, "protocol": cdn.protocol,
                                 "authentication_type": cdn.authentication_type.value}) if cdn else None,
        "options": dump_json({"src_crypto_type": body.src_crypto_type, "dst_crypto_type": body.dst_crypto_type}),
        "consistency_check": body.consistency_check.value,
        "object_overwrite_mode": body.object_overwrite_mode.value,
    }
    await check_task_row(services, fields, secrets.plain)
    task_id = await services.tasks.create(project_id, fields, secrets.stored)
    return {"sync_task_id": task_id}


@router.get("", response_model=ListSyncTasksResponse)
async def list_sync_tasks(
    project_id: ProjectId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    offset: Annotated[int, Query(ge=0, le=10000)] = 0,
    status: Annotated[str | None, Query(pattern="^(SYNCHRONIZING|STOPPED)$")] = None,
) -> dict[str, Any]:
    """ListSyncTasks: a page of the project's tasks and the total number matching."""
    rows, count = await services.tasks.page(project_id, limit=limit, offset=offset, status=status)
    return {"tasks": [_task_info(r) for r in rows], "count": count}


@router.get("/{sync_task_id}", response_model=ShowSyncTaskResponse)
async def show_sync_task(
    project_id: ProjectId,
    services: ServicesDep,
    sync_task_id: TaskId,
    query_time: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    """ShowSyncTask: the task and the counters of the calendar month (UTC) of ``query_time``."""
    at = _epoch_ms("query_time", query_time)
    row = await services.tasks.get(project_id, sync_task_id)
    try:
        start, end = month_range(at)
    except StatsRangeError as exc:
        raise invalid("query_time", str(exc)) from exc
    totals = await services.ledger.totals(sync_task_id, start, end)
    return {
        **_task_info(row),
        "monthly_acceptance_request": totals["request"],
        "monthly_success_object": totals["success"],
        "monthly_failure_object": totals["failure"],
        "monthly_skip_object": totals["skip"],
        "monthly_size": totals["size"],
    }


@router.delete("/{sync_task_id}")
@unknown_task_is_400
async def delete_sync_task(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId) -> Response:
    """DeleteSyncTask: only a STOPPED task; removes its ledger and statistics."""
    await services.tasks.delete(project_id, sync_task_id)
    services.gauges.forget(sync_task_id)
    return Response(status_code=200)


@router.post("/{sync_task_id}/start", openapi_extra=_body_schema(StartSyncTaskReq))
@unknown_task_is_400
async def start_sync_task(
    request: Request, project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId
) -> Response:
    """StartSyncTask: STOPPED → SYNCHRONIZING with the credentials given again."""
    body = await parse_body(request, StartSyncTaskReq, allow_empty=True)
    sealed = task_secrets.access_key_fields(
        {"src_ak": body.src_ak, "src_sk": body.src_sk, "dst_ak": body.dst_ak, "dst_sk": body.dst_sk},
        {"src": (body.src_crypto_type, body.src_kms_key_id), "dst": (body.dst_crypto_type, body.dst_kms_key_id)})
    row = await services.tasks.get(project_id, sync_task_id)
    cdn = json.loads(row["source_cdn"]) if row["source_cdn"] else None
    kept: dict[str, str] = {}
    if cdn is not None and body.source_cdn_authentication_key is not None:
        sealed += task_secrets.cdn_key_field(
            CdnAuthentication(cdn["authentication_type"]), body.source_cdn_authentication_key,
            body.source_cdn_crypto_type, body.source_cdn_kms_key_id, prefix="source_cdn_")
    elif cdn is not None:  # the CDN key is not sent again: the task keeps the one it has
        stored = await services.tasks.credentials(project_id, sync_task_id)
        kept = {k: v for k, v in stored.items() if k.startswith("cdn_key")}
    secrets = await task_secrets.open_secrets(services, project_id, sealed)
    if row["status"] == TaskStatus.STOPPED.value:
        await check_task_row(services, row, secrets.plain)
    await services.tasks.start(project_id, sync_task_id, {**kept, **secrets.stored})
    services.work_arrived()
    return Response(status_code=200)


@router.post("/{sync_task_id}/stop")
@unknown_task_is_400
async def stop_sync_task(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId) -> Response:
    """StopSyncTask: SYNCHRONIZING → STOPPED; pending keys wait in the ledger until started."""
    await services.tasks.stop(project_id, sync_task_id)
    return Response(status_code=200)


@router.get("/{sync_task_id}/statistics", response_model=ListSyncTaskStatisticResponse)
async def list_sync_task_statistic(
    project_id: ProjectId,
    services: ServicesDep,
    sync_task_id: TaskId,
    data_type: Annotated[str | None, Query(max_length=255)] = None,
    start_time: Annotated[str | None, Query(max_length=1024)] = None,
    end_time: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    """ListSyncTaskStatistic: counters in 5-minute or 1-hour buckets, empty buckets omitted."""
    if not data_type:
        raise invalid("data_type", "is required")
    types = data_type.split(",")
    unknown = [t for t in types if t not in DATA_TYPES]
    if unknown:
        raise invalid("data_type", f"has unknown value {unknown[0]!r}; use {','.join(DATA_TYPES)}")
    start, end = _epoch_ms("start_time", start_time), _epoch_ms("end_time", end_time)
    if end < start:
        raise invalid("end_time", "must not be earlier than start_time")
    try:
        granularity = choose_granularity(start, end)
    except StatsRangeError as exc:
        raise invalid("start_time", str(exc)) from exc
    await services.tasks.get(project_id, sync_task_id)
    datas = []
    for name in dict.fromkeys(types):
        rows = await services.ledger.buckets(sync_task_id, start, end, name.lower())
        points = aggregate(rows, granularity)
        datas.append(StatisticTypeData(
            data_type=name, data=[StatisticData(time_stamp=t, statistic_num=v) for t, v in points]
        ))
    return {"sync_task_id": sync_task_id, "statistic_time_type": granularity, "statistic_datas": datas}


def _is_plain_key(raw: str) -> bool:
    """Whether ``raw`` decodes to itself: printable-or-control ASCII without ``%``, ``+`` or NUL,
    1 to MAX_KEY_BYTES characters (so 1 to MAX_KEY_BYTES UTF-8 bytes)."""
    return (
        0 < len(raw) <= MAX_KEY_BYTES and raw.isascii() and "%" not in raw and "+" not in raw and "\x00" not in raw
    )


@router.post("/{sync_task_id}/events", openapi_extra=_body_schema(SyncObjectReq))
async def create_sync_events(
    request: Request, project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId
) -> Response:
    """CreateSyncEvents: decode each key and record it durably before answering 200.

    Events for a STOPPED task are accepted and held until the task is started.
    """
    body = await parse_body(request, SyncObjectReq)
    limit = services.settings.max_keys_per_event
    if not 1 <= len(body.object_keys) <= limit:
        raise invalid("object_keys", f"must hold 1 to {limit} keys, got {len(body.object_keys)}")
    plus_means_space = services.settings.key_plus_means_space
    keys = []
    sent: list[str | None] | None = None  # each key as received, where it differs (object lists)
    for index, raw in enumerate(body.object_keys):
        if _is_plain_key(raw):
            keys.append(raw)  # what decode_event_key returns for it, without the work
            continue
        try:
            key = decode_event_key(raw, plus_means_space=plus_means_space)
        except KeyDecodeError as exc:
            raise invalid(f"object_keys[{index}]", f"{raw[:200]!r}: {exc.reason}") from exc
        if key != raw:
            if sent is None:
                sent = [None] * len(body.object_keys)
            sent[index] = raw
        keys.append(key)
    await services.ledger.accept(sync_task_id, keys, project_id=project_id, raw_keys=sent)
    metrics.event_accepted(sync_task_id, len(keys))
    services.work_arrived()
    return Response(status_code=200)


# -- omsync extensions: failed keys and re-drive ---------------------------------------------


@router.get("/{sync_task_id}/failed-objects", response_model=ListFailedObjectsResponse)
async def list_failed_objects(
    project_id: ProjectId,
    services: ServicesDep,
    sync_task_id: TaskId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    marker: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> dict[str, Any]:
    """Keys failing now with their reasons, paginated by ``marker`` (the ``next_marker``
    returned); ``count`` is how many keys are failing now in all (not the month's FAILURE
    counter, which also counts failures a later retry fixed)."""
    await services.tasks.get(project_id, sync_task_id)
    rows = await services.ledger.failed_keys(sync_task_id, limit=limit, after_id=marker)
    return {
        "objects": [FailedObject(**{k: v for k, v in r.items() if k != "id"}) for r in rows],
        "next_marker": rows[-1]["id"] if len(rows) == limit else None,
        "count": await services.tasks.failing_keys(sync_task_id),
    }


@router.post("/{sync_task_id}/failed-objects/retry", response_model=RetryFailedResponse,
             openapi_extra=_body_schema(RetryFailedReq))
async def retry_failed_objects(
    request: Request, project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId
) -> dict[str, int]:
    """Re-drive failed keys (all, or those named, decoded keys as stored); each counts as a new REQUEST."""
    body = await parse_body(request, RetryFailedReq, allow_empty=True)
    await services.tasks.get(project_id, sync_task_id)
    count = await services.redrive(sync_task_id, body.object_keys)
    return {"retried": count}


# -- omsync extension: per-task limits -------------------------------------------------------


def _limits_body(task_id: str, limits: TaskLimits) -> dict[str, Any]:
    return {
        "sync_task_id": task_id,
        "max_concurrency": limits.max_concurrency,
        "max_objects_per_second": limits.max_objects_per_second,
        "max_bytes_per_second": limits.max_bytes_per_second,
    }


@router.get("/{sync_task_id}/limits", response_model=TaskLimitsResponse)
async def show_task_limits(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId) -> dict[str, Any]:
    """The task's limits; null is unlimited."""
    limits = await services.tasks.limits(project_id, sync_task_id)
    return _limits_body(sync_task_id, limits)


@router.put("/{sync_task_id}/limits", response_model=TaskLimitsResponse, openapi_extra=_body_schema(TaskLimitsReq))
async def update_task_limits(
    request: Request, project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId
) -> dict[str, Any]:
    """Replace the task's limits (an omitted or null field is unlimited); running workers apply
    them within about a second. ``max_concurrency`` counts the task's copies in flight across
    all workers; the objects/s and bytes/s limits apply in each worker process."""
    body = await parse_body(request, TaskLimitsReq)
    limits = TaskLimits(
        max_concurrency=body.max_concurrency,
        max_objects_per_second=body.max_objects_per_second,
        max_bytes_per_second=body.max_bytes_per_second,
    )
    await services.tasks.set_limits(project_id, sync_task_id, limits)
    services.work_arrived()  # a raised or lifted limit may free work at once
    return _limits_body(sync_task_id, limits)


__all__ = ["SyncTaskInfo", "router"]
