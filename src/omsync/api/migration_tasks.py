"""The OMS v2 migration-task operations: CreateTask, ListTasks, ShowTask, StartTask, StopTask,
DeleteTask (``/v2/{project_id}/tasks``), with the fields of the official SDK's models.

A migration task is copied by the same ledger and engine as sync tasks (see
:mod:`omsync.ledger.migration_tasks`); its keys are found by a checkpointed listing in the
worker processes (:mod:`omsync.engine.migration`). Fields omsync cannot honour are refused with
400 OMS.0064 naming the field (docs/migration.md lists them).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from omsync import metrics
from omsync.api import errors
from omsync.api.errors import OmsError, invalid
from omsync.api.guards import INT64_MAX, check_task_buckets
from omsync.api.preflight import check_task_row
from omsync.api.routes import ProjectId, ServicesDep, parse_body
from omsync.domain.errors import TaskNotFound
from omsync.domain.model import CloudType, ConsistencyCheck, OverwriteMode, StoragePolicy
from omsync.ledger.migration_tasks import (
    FAILED,
    STATUSES,
    STOPPED,
    SUCCEEDED,
    MigrationBusy,
    MigrationRepository,
    Progress,
    clock_minutes,
)
from omsync.services import Services
from omsync.stores.profiles import EndpointError, resolve_endpoint

router = APIRouter(prefix="/v2/{project_id}/tasks")

FORBIDDEN_DESCRIPTION_CHARS = set("^<>&\"'")
MIN_BANDWIDTH, MAX_BANDWIDTH = 1_048_576, 209_715_200
MAX_WINDOWS = 5
MAX_OBJECT_KEYS = 10_000

AccessKey = Annotated[StrictStr, Field(min_length=1, max_length=100)]
Bucket = Annotated[StrictStr, Field(min_length=1, max_length=1024)]
Region = Annotated[StrictStr, Field(min_length=1, max_length=100)]
ObjectKey = Annotated[StrictStr, Field(max_length=1024)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ListFileReq(_Request):
    list_file_key: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    obs_bucket: Bucket
    list_file_num: StrictStr | None = None


class SrcNodeReq(_Request):
    cloud_type: CloudType = CloudType.ALIYUN
    region: Region
    ak: AccessKey
    sk: AccessKey
    bucket: Bucket
    object_key: list[ObjectKey] | None = None
    list_file: ListFileReq | None = None
    app_id: Annotated[StrictStr, Field(max_length=255)] | None = None
    # Refused when set (see _refuse_unsupported).
    connection_string: StrictStr | None = None
    json_auth_file: StrictStr | None = None
    security_token: StrictStr | None = None
    crypto_type: StrictStr | None = None
    kms_key_id: StrictStr | None = None


class DstNodeReq(_Request):
    ak: AccessKey
    sk: AccessKey
    bucket: Bucket
    region: Region
    save_prefix: Annotated[StrictStr, Field(max_length=1023)] | None = None
    security_token: StrictStr | None = None
    crypto_type: StrictStr | None = None
    kms_key_id: StrictStr | None = None


class BandwidthPolicyDto(_Request):
    start: Annotated[StrictStr, Field(min_length=1, max_length=5)]
    end: Annotated[StrictStr, Field(min_length=1, max_length=5)]
    max_bandwidth: Annotated[StrictInt, Field(ge=MIN_BANDWIDTH, le=MAX_BANDWIDTH)]


class CreateTaskReq(_Request):
    task_type: Literal["object", "prefix", "list", "url_list"] = "object"
    src_node: SrcNodeReq
    dst_node: DstNodeReq
    description: Annotated[StrictStr, Field(max_length=255)] | None = None
    migrate_since: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)] | None = None
    bandwidth_policy: list[BandwidthPolicyDto] | None = None
    enable_metadata_migration: StrictBool = False
    enable_restore: StrictBool = False
    enable_failed_object_recording: StrictBool = True
    object_overwrite_mode: OverwriteMode = OverwriteMode.SIZE_LAST_MODIFIED
    dst_storage_policy: StoragePolicy | None = None
    consistency_check: ConsistencyCheck = ConsistencyCheck.SIZE_LAST_MODIFIED
    enable_requester_pays: StrictBool = False
    task_priority: Literal["HIGH", "MEDIUM", "LOW"] | None = None
    source_cdn: dict[str, Any] | None = None
    smn_config: dict[str, Any] | None = None
    # omsync extension (the SDK never sends it): any S3-compatible destination.
    dst_cloud_type: CloudType = CloudType.HUAWEI


class StartTaskReq(_Request):
    src_ak: AccessKey
    src_sk: AccessKey
    dst_ak: AccessKey
    dst_sk: AccessKey
    migrate_failed_object: StrictBool | None = None
    connection_string: StrictStr | None = None
    json_auth_file: StrictStr | None = None
    src_security_token: StrictStr | None = None
    dst_security_token: StrictStr | None = None
    src_crypto_type: StrictStr | None = None
    dst_crypto_type: StrictStr | None = None
    source_cdn_authentication_key: StrictStr | None = None


def _refuse(field: str, why: str) -> OmsError:
    return invalid(field, f"is not supported by omsync: {why}")


def _refuse_unsupported(body: CreateTaskReq) -> None:
    """400 naming the first field omsync cannot honour."""
    src, dst = body.src_node, body.dst_node
    if body.task_type == "url_list":
        raise _refuse("task_type", "URL list migration (url_list) is not offered; use object, prefix or list")
    checks: list[tuple[bool, str, str]] = [
        (src.connection_string is not None, "src_node.connection_string", "give the account name as ak and the key as sk"),
        (src.json_auth_file is not None, "src_node.json_auth_file", "Google Cloud Storage sources are not offered"),
        (src.security_token is not None, "src_node.security_token", "temporary credentials are not offered"),
        (dst.security_token is not None, "dst_node.security_token", "temporary credentials are not offered"),
        (src.crypto_type not in (None, "DEFAULT"), "src_node.crypto_type", "only DEFAULT (plain) access keys"),
        (dst.crypto_type not in (None, "DEFAULT"), "dst_node.crypto_type", "only DEFAULT (plain) access keys"),
        (src.kms_key_id is not None, "src_node.kms_key_id", "only DEFAULT (plain) access keys"),
        (dst.kms_key_id is not None, "dst_node.kms_key_id", "only DEFAULT (plain) access keys"),
        (body.source_cdn is not None, "source_cdn", "migration tasks read the source bucket only"),
        (body.smn_config is not None, "smn_config", "SMN notifications are not offered"),
        (body.enable_restore, "enable_restore", "archived source objects are not restored by migration tasks"),
        (body.enable_requester_pays, "enable_requester_pays", "requester-pays buckets are not offered"),
        (body.task_priority not in (None, "MEDIUM"), "task_priority",
         "migration tasks share the copy slots fairly with every other task"),
    ]
    for refused, field, why in checks:
        if refused:
            raise _refuse(field, why)


def _check_description(description: str | None) -> None:
    if description and FORBIDDEN_DESCRIPTION_CHARS & set(description):
        raise OmsError(400, errors.INVALID_DESCRIPTION, "The description contains invalid characters.",
                       detail="request parameter [description] must not contain ^ < > & \" '")


def _sources(body: CreateTaskReq) -> tuple[list[str], dict[str, str] | None]:
    """What the task lists: object keys / prefixes, or the list file."""
    src = body.src_node
    if body.task_type == "list":
        if src.list_file is None:
            raise invalid("src_node.list_file", "is required for a list task")
        if src.object_key:
            raise invalid("src_node.object_key", "must not be given for a list task")
        if body.migrate_since:
            raise invalid("migrate_since", "is not supported for list tasks (a list file does not tell an object's age)")
        return [], {"list_file_key": src.list_file.list_file_key, "obs_bucket": src.list_file.obs_bucket}
    if src.list_file is not None:
        raise invalid("src_node.list_file", f"must not be given for a {body.task_type} task")
    keys = src.object_key
    if not keys:
        raise invalid("src_node.object_key", f"is required for a {body.task_type} task "
                                             "(use [\"\"] for the whole bucket)")
    if len(keys) > MAX_OBJECT_KEYS:
        raise invalid("src_node.object_key", f"holds at most {MAX_OBJECT_KEYS} entries")
    for index, key in enumerate(keys):
        if body.task_type == "object" and key == "":
            raise invalid(f"src_node.object_key[{index}]", "must not be empty for an object task (use a prefix task)")
        if "\x00" in key or len(key.encode("utf-8", "surrogatepass")) > 1024:
            raise invalid(f"src_node.object_key[{index}]", "is not an object key (NUL, or over 1,024 bytes)")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise invalid(f"src_node.object_key[{index}]", "is not valid Unicode") from exc
    return list(dict.fromkeys(keys)), None


def _bandwidth(policy: list[BandwidthPolicyDto] | None) -> list[dict[str, Any]]:
    """Validated windows: hh:mm, at most 5, not overlapping."""
    if not policy:
        return []
    if len(policy) > MAX_WINDOWS:
        raise invalid("bandwidth_policy", f"holds at most {MAX_WINDOWS} windows")
    minutes: list[set[int]] = []
    for index, window in enumerate(policy):
        try:
            start, end = clock_minutes(window.start), clock_minutes(window.end)
        except ValueError as exc:
            raise invalid(f"bandwidth_policy[{index}]", f"start and end must be hh:mm ({exc})") from exc
        if start == end:
            raise invalid(f"bandwidth_policy[{index}]", "start and end must differ")
        covered = set(range(start, end)) if start < end else set(range(start, 1440)) | set(range(0, end))
        if any(covered & other for other in minutes):
            raise invalid(f"bandwidth_policy[{index}]", "overlaps another window")
        minutes.append(covered)
    return [{"start": w.start, "end": w.end, "max_bandwidth": w.max_bandwidth} for w in policy]


def _check_side(services: Services, field: str, cloud: CloudType, region: str) -> None:
    if cloud is CloudType.LOCAL:
        return
    try:
        resolve_endpoint(cloud.value, region, services.settings.endpoints)
    except EndpointError as exc:
        raise invalid(field, str(exc)) from exc


def _repository(services: Services) -> MigrationRepository:
    return MigrationRepository(services.db, services.box)


def _task_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise invalid("task_id", "must be a migration task id (a positive integer)")
    return int(raw)


def _not_found(task_id: str, status: int) -> OmsError:
    return OmsError(status, errors.NOT_FOUND, f"migration task {task_id} not found")


@contextlib.asynccontextmanager
async def _transition(task_id: str) -> AsyncIterator[None]:
    """Start/Stop/Delete refusals as for sync tasks: unknown → 400 OMS.1009, wrong status →
    400 OMSYNC.0409."""
    try:
        yield
    except TaskNotFound as exc:
        raise _not_found(task_id, 400) from exc
    except MigrationBusy as exc:
        raise OmsError(400, errors.STATE_CONFLICT, str(exc)) from exc


def task_view(row: Mapping[str, Any], progress: Progress | None, now_ms: int | None = None) -> dict[str, Any]:
    """A task as the SDK's TaskResp / ShowTaskResponse has it, with its progress."""
    p = progress or Progress()
    at = int(time.time() * 1000) if now_ms is None else now_ms
    total_num = int(row["listed_num"])
    skipped = p.skipped + int(row["since_skipped_num"])
    finished = p.successful + p.failed + skipped
    total_time = int(row["run_ms"]) + (at - int(row["run_started"]) if row["run_started"] else 0)
    total_size = max(int(row["listed_size"]), p.complete_size)
    speed = p.complete_size * 1000 // total_time if total_time > 0 else 0
    status = int(row["status"])
    progress_value = 1.0 if status == SUCCEEDED else (round(finished / total_num, 4) if total_num else 0.0)
    left = (total_size - p.complete_size) * 1000 // speed if speed and status not in (SUCCEEDED, FAILED) else 0
    list_file = json.loads(row["list_file"]) if row["list_file"] else None
    error = {"error_code": row["error_code"], "error_msg": row["error_msg"]} if row["error_code"] else None
    failed_record = None
    if row["enable_failed_object_recording"]:
        failed_record = {"result": p.failed > 0, "list_file_key": f"oms/task/{row['name']}/failed_object_lists/",
                         "error_code": None}
    return {
        "id": int(row["id"]),
        "name": row["name"],
        "task_type": row["task_type"],
        "status": status,
        "description": row["description"],
        "group_id": row["group_id"],
        "group_type": "NORMAL_TASK",
        "src_node": {"bucket": row["src_bucket"], "cloud_type": row["src_cloud_type"], "region": row["src_region"],
                     "app_id": row["app_id"], "object_key": json.loads(row["sources"]) or None,
                     "list_file": list_file},
        "dst_node": {"bucket": row["dst_bucket"], "region": row["dst_region"], "save_prefix": row["save_prefix"]},
        "dst_cloud_type": row["dst_cloud_type"],
        "enable_metadata_migration": bool(row["enable_metadata_migration"]),
        "enable_restore": bool(row["enable_restore"]),
        "enable_failed_object_recording": bool(row["enable_failed_object_recording"]),
        "enable_requester_pays": False,
        "migrate_since": row["migrate_since"] or 0,
        "bandwidth_policy": json.loads(row["bandwidth_policy"] or "[]"),
        "object_overwrite_mode": row["object_overwrite_mode"],
        "dst_storage_policy": row["dst_storage_policy"],
        "consistency_check": ConsistencyCheck(row["consistency_check"]).response_value,
        "total_num": total_num,
        "successful_num": p.successful,
        "failed_num": p.failed,
        "skipped_num": skipped,
        "total_size": total_size,
        "complete_size": p.complete_size,
        "real_size": p.complete_size,
        "progress": progress_value,
        "migrate_speed": speed,
        "left_time": left,
        "start_time": row["start_time"] or 0,
        "total_time": total_time,
        "is_query_over": bool(row["list_done"]),
        "error_reason": error,
        "failed_object_record": failed_record,
        "task_priority": "MEDIUM",
    }


@router.post("")
async def create_task(request: Request, project_id: ProjectId, services: ServicesDep) -> dict[str, Any]:
    """CreateTask: stores the task (credentials encrypted) and starts it at once; answers
    ``{"id", "name"}`` (the SDK's CreateTaskResponse reads ``id`` and ``task_name``)."""
    body = await parse_body(request, CreateTaskReq)
    _refuse_unsupported(body)
    _check_description(body.description)
    sources, list_file = _sources(body)
    policy = _bandwidth(body.bandwidth_policy)
    src, dst = body.src_node, body.dst_node
    _check_side(services, "src_node.region", src.cloud_type, src.region)
    _check_side(services, "dst_node.region", body.dst_cloud_type, dst.region)
    check_task_buckets(services.settings, project_id, src.cloud_type, src.bucket, body.dst_cloud_type, dst.bucket)
    sync_fields = {
        "src_cloud_type": src.cloud_type.value, "src_region": src.region, "src_bucket": src.bucket,
        "dst_cloud_type": body.dst_cloud_type.value, "dst_region": dst.region, "dst_bucket": dst.bucket,
        "description": body.description, "enable_metadata_migration": body.enable_metadata_migration,
        "enable_restore": False, "dst_storage_policy": body.dst_storage_policy.value if body.dst_storage_policy else None,
        "app_id": src.app_id, "consistency_check": body.consistency_check.value,
        "object_overwrite_mode": body.object_overwrite_mode.value,
    }
    credentials = {"src_ak": src.ak, "src_sk": src.sk, "dst_ak": dst.ak, "dst_sk": dst.sk}
    await check_task_row(services, sync_fields, credentials)
    fields = {
        "task_type": body.task_type, "sources": json.dumps(sources), "list_file": json.dumps(list_file) if list_file else None,
        "save_prefix": dst.save_prefix or "", "migrate_since": body.migrate_since or None,
        "bandwidth_policy": json.dumps(policy), "enable_failed_object_recording": body.enable_failed_object_recording,
    }
    task_id, name = await _repository(services).create(project_id, sync_fields, credentials, fields)
    services.work_arrived()
    return {"id": task_id, "name": name, "task_name": name}


@router.get("")
async def list_tasks(
    project_id: ProjectId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    status: Annotated[int | None, Query()] = None,
    group_id: Annotated[str | None, Query(max_length=64)] = None,
    task_name: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    """ListTasks: a page of the project's migration tasks (newest first) and the count matching."""
    if status is not None and status not in STATUSES:
        raise invalid("status", f"must be one of {', '.join(map(str, STATUSES))}")
    repository = _repository(services)
    rows, count = await repository.page(project_id, limit=limit, offset=offset, status=status, group_id=group_id,
                                        name=task_name)
    progress = await repository.progress([r["sync_task_id"] for r in rows])
    return {"tasks": [task_view(r, progress.get(r["sync_task_id"])) for r in rows], "count": count}


@router.get("/{task_id}")
async def show_task(project_id: ProjectId, services: ServicesDep,
                    task_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    """ShowTask: the task with its counts, progress, speed and times."""
    repository = _repository(services)
    try:
        row = await repository.get(project_id, _task_id(task_id))
    except TaskNotFound as exc:
        raise _not_found(task_id, 404) from exc
    progress = await repository.progress([row["sync_task_id"]])
    return task_view(row, progress.get(row["sync_task_id"]))


@router.post("/{task_id}/start")
async def start_task(request: Request, project_id: ProjectId, services: ServicesDep,
                     task_id: Annotated[str, Path(max_length=64)]) -> Response:
    """StartTask: a stopped task resumes where it stopped, a failed one retries its failed keys,
    with the credentials given again."""
    body = await parse_body(request, StartTaskReq)
    for field in ("connection_string", "json_auth_file", "src_security_token", "dst_security_token",
                  "source_cdn_authentication_key"):
        if getattr(body, field) is not None:
            raise _refuse(field, "see docs/migration.md")
    for field in ("src_crypto_type", "dst_crypto_type"):
        if getattr(body, field) not in (None, "DEFAULT"):
            raise _refuse(field, "only DEFAULT (plain) access keys")
    number = _task_id(task_id)
    repository = _repository(services)
    credentials = {"src_ak": body.src_ak, "src_sk": body.src_sk, "dst_ak": body.dst_ak, "dst_sk": body.dst_sk}
    async with _transition(task_id):
        row = await repository.get(project_id, number)
        if int(row["status"]) in (STOPPED, FAILED):  # other statuses are refused by start itself
            await check_task_row(services, row, credentials)
        await repository.start(project_id, number, credentials)
    services.work_arrived()
    return Response(status_code=200)


@router.post("/{task_id}/stop")
async def stop_task(project_id: ProjectId, services: ServicesDep,
                    task_id: Annotated[str, Path(max_length=64)]) -> Response:
    """StopTask: running → pausing (7) until the copies in flight end, then stopped (3)."""
    number = _task_id(task_id)
    async with _transition(task_id):
        await _repository(services).stop(project_id, number)
    return Response(status_code=200)


@router.delete("/{task_id}")
async def delete_task(project_id: ProjectId, services: ServicesDep,
                      task_id: Annotated[str, Path(max_length=64)]) -> Response:
    """DeleteTask: a task that is not running or pausing, with its ledger and statistics."""
    number = _task_id(task_id)
    async with _transition(task_id):
        sync_task_id = await _repository(services).delete(project_id, number)
    metrics.forget_task(sync_task_id)
    return Response(status_code=200)


async def recent_views(services: Services, project_id: str | None, *, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` migration tasks of a project (all with None) as :func:`task_view`
    shows them, with their number (for the dashboard)."""
    repository = _repository(services)
    rows, count = await repository.page(project_id, limit=limit, offset=0)
    progress = await repository.progress([r["sync_task_id"] for r in rows])
    return [{**task_view(r, progress.get(r["sync_task_id"])), "project_id": r["project_id"]} for r in rows], count
