"""Reconciliation of a sync task (an omsync extension of the OMS API):

* ``POST /v2/{project_id}/sync-tasks/{sync_task_id}/reconciliations`` (optional body
  ``{"prefix": "..."}``, the exact key prefix, not URL-encoded) starts a run and answers
  ``{"reconciliation_id": ...}``; a worker process drives it (:mod:`omsync.engine.reconcile`).
* ``GET .../reconciliations/{reconciliation_id}``: its ``status`` (RUNNING, SUCCESS, FAILED),
  counters, times and ``error_reason``.
* ``GET .../reconciliations``: the task's latest runs, newest first.
* ``PUT .../reconciliation-schedule`` ``{"interval_seconds": 86400, "prefix": "", "next_run_at": ms}``
  runs one every interval (the first at ``next_run_at``, default now); ``GET`` shows it,
  ``DELETE`` removes it.

An unknown task, or one of another project, is 404 ``OMS.1009``; so is an unknown run. A run
while another of the same task is RUNNING is 400 ``OMSYNC.0409``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from omsync.api.errors import NOT_FOUND, STATE_CONFLICT, OmsError, invalid
from omsync.api.guards import INT64_MAX
from omsync.api.routes import ProjectId, ServicesDep, TaskId, parse_body
from omsync.ledger.reconciliations import ReconciliationRunning, Reconciliations
from omsync.services import Services

router = APIRouter(prefix="/v2/{project_id}/sync-tasks")

RunId = Annotated[str, Path(min_length=1, max_length=64)]


class ReconciliationReq(BaseModel):
    """The optional body of a new run."""

    model_config = ConfigDict(extra="forbid")

    prefix: Annotated[StrictStr, Field(max_length=1024)] = ""


MIN_INTERVAL, MAX_INTERVAL = 60, 366 * 86_400


class ScheduleReq(BaseModel):
    """A task's recurring reconciliation."""

    model_config = ConfigDict(extra="forbid")

    interval_seconds: Annotated[StrictInt, Field(ge=MIN_INTERVAL, le=MAX_INTERVAL)]
    prefix: Annotated[StrictStr, Field(max_length=1024)] = ""
    next_run_at: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)] | None = None


def _runs(services: Services) -> Reconciliations:
    return Reconciliations(services.db)


@router.post("/{sync_task_id}/reconciliations")
async def create_reconciliation(request: Request, project_id: ProjectId, services: ServicesDep,
                                sync_task_id: TaskId) -> dict[str, str]:
    """Start reconciling the task's source and destination under ``prefix`` (default: all).
    404 OMS.1009 for an unknown task; 400 OMSYNC.0409 while a run of it is RUNNING; 400
    OMS.0064 naming ``prefix`` for a bad body."""
    body = await parse_body(request, ReconciliationReq, allow_empty=True)
    if "\x00" in body.prefix:
        raise invalid("prefix", "must not contain NUL")
    await services.tasks.get(project_id, sync_task_id)  # 404 for another project's or an engine row
    try:
        run_id = await _runs(services).create(project_id, sync_task_id, body.prefix)
    except ReconciliationRunning as exc:
        raise OmsError(400, STATE_CONFLICT, str(exc)) from exc
    services.work_arrived()
    return {"reconciliation_id": run_id}


@router.get("/{sync_task_id}/reconciliations/{reconciliation_id}")
async def show_reconciliation(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId,
                              reconciliation_id: RunId) -> dict[str, Any]:
    """One run: status, counters (source_listed, destination_listed, missing, differing, extra,
    enqueued), started_at/finished_at (epoch ms), error_reason. 404 OMS.1009 when unknown."""
    await services.tasks.get(project_id, sync_task_id)
    run = await _runs(services).get(project_id, sync_task_id, reconciliation_id)
    if run is None:
        raise OmsError(404, NOT_FOUND, f"reconciliation {reconciliation_id} of sync task {sync_task_id} not found")
    return run.as_dict()


@router.get("/{sync_task_id}/reconciliations")
async def list_reconciliations(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId,
                               limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """The task's latest runs, newest first (at most ``limit``, 1 to 100)."""
    await services.tasks.get(project_id, sync_task_id)
    runs = await _runs(services).recent(project_id, sync_task_id, limit)
    return {"reconciliations": [run.as_dict() for run in runs]}



@router.put("/{sync_task_id}/reconciliation-schedule")
async def set_schedule(request: Request, project_id: ProjectId, services: ServicesDep,
                       sync_task_id: TaskId) -> dict[str, Any]:
    """Run the task's reconciliation every ``interval_seconds`` (60 s to 366 days) under
    ``prefix``, the first at ``next_run_at`` (epoch ms, default now); replaces any schedule. A
    due run is skipped while one of the task is still RUNNING."""
    body = await parse_body(request, ScheduleReq)
    if "\x00" in body.prefix:
        raise invalid("prefix", "must not contain NUL")
    await services.tasks.get(project_id, sync_task_id)
    schedule = await _runs(services).set_schedule(project_id, sync_task_id, body.interval_seconds, body.prefix,
                                                  body.next_run_at)
    return schedule.as_dict()


@router.get("/{sync_task_id}/reconciliation-schedule")
async def show_schedule(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId) -> dict[str, Any]:
    """The task's schedule; 404 OMS.1009 when it has none."""
    await services.tasks.get(project_id, sync_task_id)
    schedule = await _runs(services).schedule(project_id, sync_task_id)
    if schedule is None:
        raise OmsError(404, NOT_FOUND, f"sync task {sync_task_id} has no reconciliation schedule")
    return schedule.as_dict()


@router.delete("/{sync_task_id}/reconciliation-schedule")
async def delete_schedule(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId) -> Response:
    """Remove the task's schedule (runs already started go on); 404 OMS.1009 when it has none."""
    await services.tasks.get(project_id, sync_task_id)
    if not await _runs(services).clear_schedule(project_id, sync_task_id):
        raise OmsError(404, NOT_FOUND, f"sync task {sync_task_id} has no reconciliation schedule")
    return Response(status_code=204)


__all__ = ["router"]
