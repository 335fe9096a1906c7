"""The operator dashboard under ``/ui``: server-rendered pages, no external resources.

Pages: ``/ui/login``, ``/ui/tasks`` (tasks with status, backlog and monthly counters) and
``/ui/tasks/{id}`` (charts of the last hours in 5-minute buckets, backlog, latency, failed keys
with their reasons, re-drive and stop/start). Every page but the login form needs a session
(:mod:`omsync.web.session`); a project session sees only its project's tasks, an operator
session sees all. Every POST carries the session's CSRF token. No page ever shows a task's
credentials, a secret key, the operator password or the session key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from omsync.api.migration_tasks import recent_views
from omsync.domain.errors import TaskBusy, TaskNotFound
from omsync.domain.lifecycle import TaskOperation
from omsync.domain.model import TaskStatus
from omsync.domain.stats import LATENCY_BOUNDS_MS, month_range
from omsync.humanize import format_bytes
from omsync.ledger import views
from omsync.ledger.notifications import NotificationLedger, counts_view
from omsync.ledger.queue import now_ms
from omsync.ledger.reconciliations import Reconciliations
from omsync.secrets import SecretError
from omsync.services import Services
from omsync.web import charts, data, revocation
from omsync.web.session import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    SessionSigner,
    new_login_token,
    operator_password,
    tokens_match,
)
from omsync.web.throttle import LoginThrottle

log = logging.getLogger("omsync.web")

router = APIRouter(prefix="/ui", include_in_schema=False)

_HERE = Path(__file__).parent
_STATIC = {
    "style.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_MAX_FORM_BYTES = 16 * 1024
_MAX_TASK_ID = 64
_PAGE_SIZE = 50
_FAILED_PAGE = 50
_LOGIN_FAILURE_DELAY = 0.3
SERIES = (
    ("REQUEST", "Requests (events accepted)", "request"),
    ("SUCCESS", "Copied", "success"),
    ("FAILURE", "Failed", "failure"),
    ("SKIP", "Skipped", "skip"),
    ("SIZE", "Bytes copied", "size"),
)
_NOTICES = {
    "stopped": "The task was stopped; pending keys wait until it is started.",
    "started": "The task was started with its stored credentials.",
    "conflict": "The task is not in a state that allows this; the page shows its current status.",
}

# Everything the pages use comes from this origin; no inline script or style is allowed.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# -- rendering ------------------------------------------------------------------------------------


def _timestamp(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    seconds = max(0, ms) // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _latency(ms: int) -> str:
    if ms < 0:
        return f"> {_duration(LATENCY_BOUNDS_MS[-1])}"
    return f"≤ {ms} ms" if ms < 1000 else f"≤ {_duration(ms)}"


def _show_key(key: str) -> Markup:
    """An object key as HTML: text escaped, and every control or invisible formatting character
    shown as a marked ``\\xNN``/``\\uNNNN`` escape so that keys differing only in such a
    character look different."""
    parts: list[str] = []
    for char in key:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            text = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
            parts.append(f'<span class="esc">{text}</span>')
        else:
            parts.append(str(escape(char)))
    return Markup("".join(parts))


_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)
_env.filters.update(
    timestamp=_timestamp, duration=_duration, latency=_latency, show_key=_show_key,
    bytes=format_bytes, count=charts.format_count, urlpart=lambda s: quote(str(s), safe=""),
)


def _render(name: str, *, status: int = 200, session: Session | None = None, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(session=session, **context)
    return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


def _redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=303, headers=_SECURITY_HEADERS)


def _to_login() -> Response:
    return _redirect("/ui/login")


def _not_found(session: Session) -> HTMLResponse:
    return _render("error.html", status=404, session=session, title="Not found",
                   detail="There is no such task, or it belongs to a project this login cannot see.")


def _forbidden(session: Session | None) -> HTMLResponse:
    return _render("error.html", status=403, session=session, title="Refused",
                   detail="The form was not valid for this session (stale page or cross-site request). "
                          "Reload the page and try again.")


def _task_url(task_id: str, **query: Any) -> str:
    suffix = f"?{urlencode(query)}" if query else ""
    return f"/ui/tasks/{quote(task_id, safe='')}{suffix}"


# -- sessions -------------------------------------------------------------------------------------


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _signer(request: Request) -> SessionSigner:
    signer: SessionSigner | None = getattr(request.app.state, "web_session_signer", None)
    if signer is None:
        signer = SessionSigner.from_settings(_services(request).settings)
        request.app.state.web_session_signer = signer
    return signer


def _throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle | None = getattr(request.app.state, "web_login_throttle", None)
    if throttle is None:
        settings = _services(request).settings
        throttle = LoginThrottle(settings.login_max_failures, settings.login_lockout_seconds)
        request.app.state.web_login_throttle = throttle
    return throttle


async def _session(request: Request) -> Session | None:
    """The request's valid session, or None. Sessions end at logout (everywhere: the id is
    recorded server-side); project sessions also when their access key is revoked, operator
    sessions when the operator password changes or is removed."""
    signer = _signer(request)
    session = signer.verify(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    services = _services(request)
    if await revocation.is_revoked(services.db, session.sid):
        return None
    if session.operator:
        password = operator_password(services.settings)
        if password is None or not tokens_match(session.password_fingerprint, signer.fingerprint(password)):
            return None
        return session
    assert session.access_key is not None
    found = await services.keys.lookup_key(session.access_key)
    if found is None or found[1] != session.project_id:
        return None
    return session


def _cookie_secure(request: Request) -> bool:
    """Mark cookies Secure over TLS (directly, or behind a trusted proxy that says so through
    X-Forwarded-Proto) or when the operator asks for it."""
    return request.url.scheme == "https" or _services(request).settings.dashboard_secure_cookies


def _client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form of a POST (first value of each field), or None when the body is not
    a small urlencoded form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return None
    try:
        parsed = parse_qs(body.decode("ascii"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in parsed.items()}


async def _authorized_post(request: Request) -> tuple[Session | None, dict[str, str] | None, Response | None]:
    """Session and form of a state-changing POST, or the response refusing it."""
    session = await _session(request)
    if session is None:
        return None, None, _to_login()
    form = await _form(request)
    if form is None or not tokens_match(form.get("csrf"), session.csrf):
        return session, None, _forbidden(session)
    return session, form, None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return default
    return min(high, max(low, int(raw)))


# -- routes ---------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def home() -> Response:
    """The dashboard's entry: the task list (which sends to the login form when needed)."""
    return _redirect("/ui/tasks")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The dashboard's own stylesheet and script; nothing else is served from here."""
    media_type = _STATIC.get(name)
    if media_type is None:
        return Response(status_code=404, headers=_SECURITY_HEADERS)
    content = (_HERE / "static" / name).read_bytes()
    return Response(content, media_type=media_type,
                    headers={**_SECURITY_HEADERS, "Cache-Control": "public, max-age=300"})


@router.get("/login")
async def login_form(request: Request) -> Response:
    """The login form (access key + secret key of a project, or the operator password)."""
    if await _session(request) is not None:
        return _redirect("/ui/tasks")
    return _login_page(request)


def _login_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    token = new_login_token()
    response = _render("login.html", status=status, error=error, login_token=token,
                       operator_enabled=operator_password(_services(request).settings) is not None)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=_cookie_secure(request))
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the credentials and open a session.

    A project's active access key and its secret key open a session scoped to that project;
    the operator password (``dashboard_password`` setting), when configured, opens one over all
    projects. Wrong credentials answer 401 with the form again, without saying which part was
    wrong.
    """
    form = await _form(request)
    if form is None or not tokens_match(form.get("login_token"), request.cookies.get(LOGIN_COOKIE)):
        return _login_page(request, error="The login form expired. Please try again.", status=400)
    services = _services(request)
    signer = _signer(request)
    password = form.get("password", "")
    access_key, secret_key = form.get("access_key", "").strip(), form.get("secret_key", "")
    account = "operator" if password else "ak:" + access_key[:128]
    address = _client_address(request)
    keys = (f"addr:{address}", f"acct:{account}")
    throttle = _throttle(request)
    # Named in logs by a digest only: a secret typed into the wrong field must not be logged.
    account_tag = "operator" if password else "key-" + hashlib.sha256(account.encode("utf-8", "replace")).hexdigest()[:12]
    wait = throttle.retry_after(*keys)
    if wait > 0:
        log.warning("dashboard login refused without checking: too many failures (account %s, address %s)",
                    account_tag, address)
        return _locked_out(request, wait)
    cookie: str | None = None
    if password:
        configured = operator_password(services.settings)
        if configured is not None and tokens_match(password, configured):
            _, cookie = signer.issue(project_id=None, access_key=None, operator=True,
                                     password_fingerprint=signer.fingerprint(configured))
    elif access_key and secret_key and len(access_key) <= 64:
        found = await services.keys.lookup_key(access_key)
        if found is not None and tokens_match(secret_key, found[0]):
            _, cookie = signer.issue(project_id=found[1], access_key=access_key, operator=False)
    if cookie is None:
        # A little friction for guessing; the access key space itself makes guessing hopeless.
        await asyncio.sleep(_LOGIN_FAILURE_DELAY)
        wait = throttle.failed(*keys)
        log.warning("dashboard login failed (account %s, address %s)", account_tag, address)
        if wait > 0:
            return _locked_out(request, wait)
        return _login_page(request, error="Wrong credentials.", status=401)
    throttle.succeeded(*keys)
    response = _redirect("/ui/tasks")
    response.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_SECONDS, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=_cookie_secure(request))
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


def _locked_out(request: Request, wait: float) -> Response:
    seconds = max(1, math.ceil(wait))
    response = _login_page(
        request, status=429,
        error=f"Too many failed logins. Logins from this address or for this account are paused; "
              f"try again in {seconds} seconds.")
    response.headers["Retry-After"] = str(seconds)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session: its id is recorded as ended (so a copy of the cookie stops working
    too) and the cookie is removed."""
    session, _, refused = await _authorized_post(request)
    if refused is not None:
        return refused
    assert session is not None
    await revocation.revoke(_services(request).db, session.sid, session.expires)
    response = _to_login()
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=_cookie_secure(request))
    return response


@router.get("/tasks")
async def task_list(request: Request) -> Response:
    """The tasks the session may see, newest first, with status, backlog and monthly counters."""
    session = await _session(request)
    if session is None:
        return _to_login()
    services = _services(request)
    status = request.query_params.get("status")
    if status not in (TaskStatus.SYNCHRONIZING.value, TaskStatus.STOPPED.value):
        status = None
    page = _int_param(request, "page", 1, 1, 10_000)
    rows, total = await views.list_tasks(services.db, session.project_id, status=status, limit=_PAGE_SIZE,
                                        offset=(page - 1) * _PAGE_SIZE)
    month_start, month_end = month_range(now_ms())
    monthly = await views.totals_by_task(services.db, [r["id"] for r in rows], month_start, month_end)
    pages = max(1, -(-total // _PAGE_SIZE))
    migrations, migration_count = await recent_views(services, session.project_id)
    deletes_paused = set(await NotificationLedger(services.db).tripped_tasks())
    return _render("tasks.html", session=session, tasks=rows, monthly=monthly, total=total, page=page,
                   pages=pages, status_filter=status, month_start=month_start, migrations=migrations,
                   migration_count=migration_count, deletes_paused=deletes_paused)


def _redactor(secrets: list[str]) -> Callable[[str | None], str | None]:
    """Hide the task's own credentials should a store's error message ever quote them."""
    hidden = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def redact(text: str | None) -> str | None:
        if text is None:
            return None
        for secret in hidden:
            text = text.replace(secret, "***")
        return text

    return redact


async def _task_secrets(services: Services, task_id: str) -> list[str] | None:
    try:
        spec = await services.tasks.spec(task_id)
    except (TaskNotFound, SecretError):
        return None
    return [spec.src.access_key, spec.src.secret_key, spec.dst.access_key, spec.dst.secret_key]


@router.get("/tasks/{task_id}")
async def task_page(request: Request, task_id: str) -> Response:
    """One task: charts of the last ``hours`` hours (1–24, default 6), backlog, latency,
    failed keys (``after`` pages through them) and the actions."""
    session = await _session(request)
    if session is None:
        return _to_login()
    services = _services(request)
    task = await views.load_task(services.db, task_id, session.project_id) if len(task_id) <= _MAX_TASK_ID else None
    if task is None:
        return _not_found(session)
    hours = _int_param(request, "hours", 6, 1, 24)
    after = _int_param(request, "after", 0, 0, 2**62)
    now = now_ms()
    first, end = charts.window(now, hours)
    drawn = []
    for series, title, column in SERIES:
        points = await services.ledger.buckets(task_id, first, end, column)
        drawn.append(charts.build_chart(series, title, points, first, end, as_bytes=column == "size"))
    month_start, month_end = month_range(now)
    monthly = await services.ledger.totals(task_id, month_start, month_end)
    backlog = await views.backlog(services.db, task_id)
    failed = await services.ledger.failed_keys(task_id, limit=_FAILED_PAGE, after_id=after)
    failed_total = await views.failed_count(services.db, task_id)
    latency = await data.latency_percentiles(services.db, task_id, first, end)
    deletes = counts_view(await NotificationLedger(services.db).delete_state(None, task_id))
    runs = Reconciliations(services.db)
    reconciliation = (await runs.latest([task_id])).get(task_id)
    schedule = await runs.schedule(task["project_id"], task_id)
    secrets = await _task_secrets(services, task_id)
    redact = _redactor(secrets) if secrets is not None else (lambda _text: "(hidden)")
    failures = [{**item, "message": redact(item["message"])} for item in failed]
    notice = _NOTICES.get(request.query_params.get("msg", ""))
    retried = request.query_params.get("retried")
    if retried is not None and retried.isascii() and retried.isdigit() and len(retried) < 12:
        notice = f"{int(retried)} failed key(s) re-driven; they are copied again now."
    return _render(
        "task.html", session=session, task=task, charts=drawn, hours=hours, monthly=monthly, backlog=backlog,
        failures=failures, failed_total=failed_total, after=after, now=now,
        next_after=failed[-1]["id"] if len(failed) == _FAILED_PAGE else None,
        latency=latency, notice=notice, window_start=first, deletes=deletes,
        reconciliation=reconciliation.as_dict() if reconciliation is not None else None,
        schedule=schedule.as_dict() if schedule is not None else None,
        can_stop=task["status"] == TaskStatus.SYNCHRONIZING.value,
    )


async def _post_target(request: Request, task_id: str) -> tuple[Mapping[str, Any] | None, dict[str, str], Response | None]:
    session, form, refused = await _authorized_post(request)
    if refused is not None:
        return None, {}, refused
    assert session is not None and form is not None
    services = _services(request)
    task = await views.load_task(services.db, task_id, session.project_id) if len(task_id) <= _MAX_TASK_ID else None
    if task is None:
        return None, {}, _not_found(session)
    return task, form, None


@router.post("/tasks/{task_id}/retry")
async def retry(request: Request, task_id: str) -> Response:
    """Re-drive one failed key (form field ``row``: its ledger row id) or all (``all=1``)."""
    _, form, refused = await _post_target(request, task_id)
    if refused is not None:
        return refused
    services = _services(request)
    count = 0
    row = form.get("row", "")
    if row.isascii() and row.isdigit() and len(row) < 19:
        key = await views.failed_key_of_row(services.db, task_id, int(row))
        if key is not None:
            count = await services.redrive(task_id, [key])
    elif form.get("all") == "1":
        count = await services.redrive(task_id, None)
    return _redirect(_task_url(task_id, retried=count))


async def _change_status(request: Request, task_id: str, operation: TaskOperation) -> Response:
    """Stop or start (resume) the task the form names; a refusal of the task lifecycle
    (:mod:`omsync.domain.lifecycle`) comes back as the "conflict" notice."""
    task, _, refused = await _post_target(request, task_id)
    if refused is not None:
        return refused
    assert task is not None
    services = _services(request)
    try:
        if operation is TaskOperation.STOP:
            await services.tasks.stop(task["project_id"], task_id)
        else:
            await services.tasks.resume(task["project_id"], task_id)
    except (TaskBusy, TaskNotFound):
        return _redirect(_task_url(task_id, msg="conflict"))
    if operation is TaskOperation.STOP:
        return _redirect(_task_url(task_id, msg="stopped"))
    services.work_arrived()
    return _redirect(_task_url(task_id, msg="started"))


@router.post("/tasks/{task_id}/stop")
async def stop(request: Request, task_id: str) -> Response:
    """Stop a synchronizing task; its pending keys wait in the ledger."""
    return await _change_status(request, task_id, TaskOperation.STOP)


@router.post("/tasks/{task_id}/start")
async def start(request: Request, task_id: str) -> Response:
    """Start a stopped task again with the credentials it already has."""
    return await _change_status(request, task_id, TaskOperation.START)
