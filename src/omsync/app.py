"""The ASGI application: OMS v2 routes, error bodies, request ids and request logs, body
limits, health and Prometheus metrics."""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omsync import __version__, metrics
from omsync.api import errors
from omsync.api.errors import OmsError, error_response
from omsync.api.kms_routes import router as kms_router
from omsync.api.migration_tasks import router as migration_tasks_router
from omsync.api.notifications import router as notifications_router
from omsync.api.prechecks import router as prechecks_router
from omsync.api.reconciliation import router as reconciliation_router
from omsync.api.routes import router
from omsync.api.schemas import ListApiVersionsResponse, Version
from omsync.composition import open_services
from omsync.config import Settings
from omsync.domain.errors import DomainError
from omsync.ledger import views
from omsync.logs import request_id_var
from omsync.services import Services
from omsync.web import web_router

log = logging.getLogger("omsync.api")
access_log = logging.getLogger("omsync.access")

# Probed every few seconds by orchestrators and scrapers: their request lines go to DEBUG.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

API_VERSION_UPDATED = "2020-04-01T12:00:00Z"
UI_MAX_BODY_BYTES = 16 * 1024  # the dashboard's forms are small


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413 APIGW.0201, whether or not a length was sent.

    Paths starting with one of ``small_paths`` (the dashboard's forms) get ``small_max_bytes``
    instead. A declared length over the limit is refused before anything is read; a chunked
    body is counted as it streams in and refused as soon as it passes the limit, so no more
    than the limit is ever buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int, small_paths: tuple[str, ...] = (),
                 small_max_bytes: int = 16 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.small_paths = small_paths
        self.small_max_bytes = small_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = self.small_max_bytes if path.startswith(self.small_paths) else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = (
            b'{"error_code": "%s", "error_msg": "Request entity too large."}' % errors.TOO_LARGE.encode()
        )
        response = Response(body, status_code=413, media_type="application/json",
                            headers={"X-Request-Id": uuid.uuid4().hex, "Connection": "close"})
        await response(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised from a body read that passed the limit; :class:`BodyLimit` answers 413."""


def _body_too_large(exc: BaseException) -> bool:
    """Whether ``exc`` is, wraps or groups a :class:`BodyTooLarge` (middleware task groups
    re-raise it inside an exception group)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BodyTooLarge):
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return False


def _versions(request: Request) -> list[Version]:
    base = str(request.base_url).rstrip("/")
    return [Version(id="v2", links=[{"href": f"{base}/v2/", "rel": "self"}], status="CURRENT",  # type: ignore[list-item]
                    updated=API_VERSION_UPDATED)]


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class RequestContext:
    """Per HTTP request: a request id (``request.state.request_id``, the ``X-Request-Id``
    answer header and every log line of the request), one access-log line with its metrics, and
    an OMS error body instead of a traceback for anything unhandled.

    A plain ASGI middleware: it only wraps ``send``, so a request costs no extra task or
    response object (as Starlette's ``BaseHTTPMiddleware`` would)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        answered = False

        async def tagged_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            try:
                await self.app(scope, receive, tagged_send)
            except Exception as exc:  # never leak a traceback to the client
                if _body_too_large(exc):
                    raise BodyTooLarge from None  # answered 413 by BodyLimit, nothing to log
                request = Request(scope)
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                if answered:
                    return
                response = error_response(request, OmsError(500, errors.INTERNAL, "Internal error."))
                await response(scope, receive, tagged_send)
            _log_request(Request(scope), status, time.perf_counter() - started)
        finally:
            request_id_var.reset(token)


def _log_request(request: Request, status: int, seconds: float) -> None:
    """One line per request: method, path as sent (percent-encoded, without the query string:
    nothing a client put in it is repeated), status, duration and request id; and its metrics,
    labelled by the route template so that ids in paths do not multiply the series."""
    route = request.scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    metrics.http_request(request.method, template, status, seconds)
    raw = request.scope.get("raw_path") or request.url.path.encode("utf-8", "surrogateescape")
    # Percent-encode whatever is not printable ASCII, so a path cannot forge a log line.
    path = quote(raw.split(b"?", 1)[0], safe="/%:@!$&'()*+,;=-._~")
    level = logging.DEBUG if request.url.path in QUIET_PATHS else logging.INFO
    access_log.log(level, "%s %s %d %.1f ms request_id=%s", request.method, path, status, seconds * 1000,
                   request.state.request_id,
                   extra={"method": request.method, "path": path, "status": status,
                          "duration_ms": round(seconds * 1000, 3)})


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def log_endpoint_overrides(settings: Settings) -> None:
    """Say at start-up which endpoint overrides are in effect (``OMSYNC_ENDPOINTS``): a task
    whose side matches none goes to its provider's public endpoint."""
    if not settings.endpoints:
        log.info("endpoint overrides: none (OMSYNC_ENDPOINTS unset): every side uses its provider's public endpoint")
        return
    for name, url in sorted(settings.endpoints.items()):
        log.info("endpoint override: %s -> %s", name, _without_userinfo(url))


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """Build the app. Without ``services`` the lifespan opens them from ``settings`` (migrating
    the database) and starts the in-process workers when ``settings.workers`` > 0."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        if own:
            log_endpoint_overrides(settings)
        app.state.services = services if services is not None else await open_services(settings)
        runner = None
        if own and settings.workers > 0:
            from omsync.runtime import start_copying

            runner = await start_copying(app.state.services)
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            if own:
                await app.state.services.close()

    app = FastAPI(
        title="omsync",
        version=__version__,
        description="OMS v2 sync-task API (wire-compatible) served by omsync.",
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services

    app.add_exception_handler(OmsError, errors.oms_error_handler)
    app.add_exception_handler(DomainError, errors.domain_error_handler)
    app.add_exception_handler(RequestValidationError, errors.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_middleware(RequestContext)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, small_paths=("/ui",),
                       small_max_bytes=UI_MAX_BODY_BYTES)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the database answers."""
        try:
            await request.app.state.services.db.ping()
        except Exception as exc:  # any database failure means not ready
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics of this process (see :mod:`omsync.metrics`). With
        ``metrics_token`` set, only ``Authorization: Bearer <token>`` gets them (else 401)."""
        if settings.metrics_token is not None and not _bearer_matches(request, settings.metrics_token.get_secret_value()):
            return Response("metrics need a bearer token\n", status_code=401, media_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="omsync metrics"'})
        services = request.app.state.services
        await services.gauges.refresh_pending(lambda: views.pending_keys_by_task(services.db))
        return Response(services.gauges.render(), media_type=metrics.CONTENT_TYPE)

    app.include_router(router)
    app.include_router(migration_tasks_router)
    app.include_router(notifications_router)
    app.include_router(kms_router)
    app.include_router(prechecks_router)
    app.include_router(reconciliation_router)
    app.include_router(web_router)

    @app.get("/", response_model=ListApiVersionsResponse)
    async def list_api_versions(request: Request) -> dict[str, Any]:
        """ListApiVersions (public, like the gateway's version discovery)."""
        return {"versions": _versions(request)}

    @app.get("/{version}", response_model=Version)
    async def show_api_info(request: Request, version: str) -> Version:
        """ShowApiInfo: one version object at top level."""
        for item in _versions(request):
            if item.id == version:
                return item
        raise OmsError(404, errors.NO_SUCH_API, f"API version {version[:10]!r} does not exist.")

    return app
