"""OMS error bodies: ``{"error_code", "error_msg"[, "error_detail"]}`` with an ``X-Request-Id``.

Codes from the OMS/API-gateway contract where one exists (OMS.0064, OMS.0078, OMS.1009,
APIGW.0301, APIGW.0201); omsync's own conditions use the ``OMSYNC.`` prefix (listed in the README).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from omsync import metrics
from omsync.domain.errors import BacklogFull, DomainError, TaskBusy, TaskLimitReached, TaskNotFound

F = TypeVar("F", bound=Callable[..., Any])

INVALID_PARAMETER = "OMS.0064"
INVALID_DESCRIPTION = "OMS.0078"
NOT_FOUND = "OMS.1009"
AUTH_FAILED = "APIGW.0301"
FORBIDDEN = "APIGW.0302"
NO_SUCH_API = "APIGW.0101"
TOO_LARGE = "APIGW.0201"
STATE_CONFLICT = "OMSYNC.0409"
TASK_LIMIT = "OMSYNC.0410"
BACKLOG_FULL = "OMSYNC.0503"
UNSUPPORTED = "OMSYNC.0501"
INTERNAL = "OMSYNC.0500"


class OmsError(Exception):
    """An error the API answers with an OMS error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}


def invalid(field: str, why: str = "invalid") -> OmsError:
    """400 OMS.0064 naming ``field`` in ``error_detail``."""
    detail = f"request parameter [{field}] {why}"
    # The SDK surfaces error_msg only, so the field is named there too.
    return OmsError(400, INVALID_PARAMETER, f"Invalid request parameters: {detail}", detail=detail)


def not_found(task_id: str, *, status: int = 404) -> OmsError:
    """OMS.1009 for an unknown task: 404 where the OMS page of the operation lists 404
    (ShowSyncTask, statistics, events), 400 where it lists only 400/403 (Start, Stop, Delete)."""
    return OmsError(status, NOT_FOUND, f"sync task {task_id} not found")


_NOT_FOUND_STATUS = "_oms_not_found_status"


def unknown_task_is_400(endpoint: F) -> F:
    """Mark a route whose OMS page lists only 400 and 403 (StartSyncTask, StopSyncTask,
    DeleteSyncTask): an unknown task is answered 400 OMS.1009 there, 404 everywhere else."""
    setattr(endpoint, _NOT_FOUND_STATUS, 400)
    return endpoint


def domain_error(request: Request, exc: DomainError) -> OmsError:
    """The OMS error for a refusal of the domain: the one place the API maps them.

    - :class:`TaskNotFound`: OMS.1009, 404 (400 on routes marked :func:`unknown_task_is_400`);
    - :class:`TaskBusy`: 400 OMSYNC.0409 with the refusal's reason;
    - :class:`TaskLimitReached`: 400 OMSYNC.0410;
    - :class:`BacklogFull`: 503 OMSYNC.0503 with ``Retry-After`` (counted as a backlog throttle).
    """
    if isinstance(exc, TaskNotFound):
        route = request.scope.get("route")
        status = getattr(getattr(route, "endpoint", None), _NOT_FOUND_STATUS, 404)
        return not_found(exc.task_id, status=status)
    if isinstance(exc, TaskBusy):
        return OmsError(400, STATE_CONFLICT, str(exc))
    if isinstance(exc, TaskLimitReached):
        return OmsError(400, TASK_LIMIT, f"The project already owns {exc.limit} sync tasks.")
    if isinstance(exc, BacklogFull):
        if exc.task_id:
            metrics.throttled(exc.task_id, "backlog")
        return OmsError(503, BACKLOG_FULL, f"The task has {exc.pending} keys pending; retry later.",
                        headers={"Retry-After": str(exc.retry_after)})
    return OmsError(500, INTERNAL, "Internal error.")


def error_response(request: Request, error: OmsError) -> JSONResponse:
    body: dict[str, Any] = {"error_code": error.code, "error_msg": error.message}
    if error.detail is not None:
        body["error_detail"] = error.detail
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def oms_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OmsError)
    return error_response(request, exc)


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(request, domain_error(request, exc))


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
    field = _field_name(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid"))
    if first.get("type") == "json_invalid":
        field, message = "body", "is not valid JSON"
    elif first.get("type") == "missing":
        message = "is required"
    return error_response(request, invalid(field, message))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error = OmsError(404, NO_SUCH_API, "The API does not exist or has not been published.")
    elif exc.status_code == 405:
        error = OmsError(405, NO_SUCH_API, "Method not allowed for this API.")
    else:
        error = OmsError(exc.status_code, INVALID_PARAMETER, str(exc.detail))
    return error_response(request, error)
