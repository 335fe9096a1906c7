"""Native change notifications: a bucket's own event notifications posted to omsync.

* ``POST /v2/{project_id}/sync-tasks/{sync_task_id}/notifications`` — signed like every other
  call (for a function or relay that can sign);
* ``POST /v2/webhooks/{sync_task_id}?secret=…`` — for senders that cannot sign (SNS HTTP
  subscriptions, MinIO, Event Grid webhooks): the per-task secret (query ``secret``, or
  ``Authorization: Bearer``) is checked against its stored hash; SNS messages must also carry a
  valid SNS signature. A missing secret is 401, a wrong one (or an unknown task) 403.
* ``GET|PUT /v2/{project_id}/sync-tasks/{sync_task_id}/webhook`` — show whether a secret
  exists / set or rotate it (the client chooses the secret; only its hash is stored, and the
  API never sends a secret back);
* ``GET|PUT /v2/{project_id}/sync-tasks/{sync_task_id}/deletes`` and ``POST …/deletes/resume`` —
  delete propagation settings, counters and breaker.

Every created or overwritten object is accepted through the same ledger intake as
CreateSyncEvents keys (``Ledger.accept``: coalescing, REQUEST counting, 200 only after the
commit). Records of another bucket than the task's source, test events and records older (by
sequencer) than one already seen for the key are ignored and counted in the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from omsync import metrics
from omsync.api import errors
from omsync.api.errors import OmsError, invalid, not_found
from omsync.api.guards import load_json_body
from omsync.api.routes import ProjectId, ServicesDep, TaskId, parse_body
from omsync.ledger.notifications import Change, DeleteSettings, NotificationLedger, counts_view
from omsync.ledger.queue import TaskNotFound
from omsync.notifications import EventKind, Ignore, Parsed, Record, UnknownFormat, parse_message, parse_notification
from omsync.notifications.model import Envelope
from omsync.notifications.sns import SignatureProblem, sns_url_allowed, verify_signature
from omsync.secrets import hash_token
from omsync.services import Services

log = logging.getLogger("omsync.api.notifications")

router = APIRouter()

CERT_TTL_SECONDS = 3600.0
CERT_MAX_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS = 10.0
MIN_SECRET_CHARS = 32
MAX_SECRET_CHARS = 256
SECRET_PATTERN = r"^[A-Za-z0-9._~-]+$"  # unreserved URL characters: the secret travels in a query string


class DeleteSettingsReq(BaseModel):
    """PUT …/deletes: the task's delete propagation (the complete set)."""

    model_config = ConfigDict(extra="forbid")
    propagate_deletes: bool
    delete_grace_seconds: float = Field(default=60.0, ge=0, le=7 * 86400)
    max_deletes_per_minute: int = Field(default=100, ge=1, le=1_000_000)


class _Certificates:
    """SNS signing certificates fetched over HTTPS from allowed hosts only, kept for an hour."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = asyncio.Lock()

    async def get(self, url: str) -> bytes:
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._lock:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
                response = await client.get(url)
            if response.status_code != 200 or len(response.content) > CERT_MAX_BYTES:
                raise SignatureProblem(f"signing certificate not available (HTTP {response.status_code})")
            if len(self._cache) >= 64:
                self._cache.clear()
            self._cache[url] = (now + CERT_TTL_SECONDS, response.content)
            return response.content


_certificates = _Certificates()


def _notifications(services: Services) -> NotificationLedger:
    return NotificationLedger(services.db)  # holds nothing but the database: cheap to make


def _host_pattern(services: Services) -> re.Pattern[str]:
    return re.compile(services.settings.sns_host_pattern)


def _refused(status: int, why: str) -> OmsError:
    code = errors.AUTH_FAILED if status == 401 else errors.FORBIDDEN
    return OmsError(status, code, why)


async def _check_sns(services: Services, envelope: Envelope) -> None:
    """Verify an SNS message's signature with its certificate (fetched only from an allowed
    host). Raises OmsError 401 when it cannot be verified."""
    fields = envelope.fields
    url = fields.get("SigningCertURL", "")
    if not sns_url_allowed(url, _host_pattern(services), allow_http=services.settings.sns_allow_http):
        raise _refused(401, "SNS SigningCertURL is not an SNS certificate URL")
    try:
        certificate = await _certificates.get(url)
        verify_signature(fields, certificate)
    except SignatureProblem as exc:
        raise _refused(401, f"SNS signature refused: {exc}") from exc
    except httpx.HTTPError as exc:
        raise _refused(401, "SNS signing certificate could not be fetched") from exc


async def _confirm_subscription(services: Services, envelope: Envelope) -> bool:
    """GET the SubscribeURL of a verified SubscriptionConfirmation (allowed hosts only)."""
    url = envelope.fields.get("SubscribeURL", "")
    if not sns_url_allowed(url, _host_pattern(services), allow_http=services.settings.sns_allow_http):
        raise invalid("SubscribeURL", "is not an SNS URL")
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        log.warning("confirming the SNS subscription of topic %s failed: %s", envelope.fields.get("TopicArn"),
                    type(exc).__name__)
        return False
    confirmed = response.status_code == 200
    log.info("SNS subscription of topic %s %s", envelope.fields.get("TopicArn"),
             "confirmed" if confirmed else f"not confirmed (HTTP {response.status_code})")
    return confirmed


def _answer(parsed: Parsed, accepted: int, scheduled: int, **extra: Any) -> dict[str, Any]:
    ignored = {reason: count for reason, count in sorted(parsed.ignored.items()) if count}
    return {"format": parsed.format, "accepted": accepted, "deletes_scheduled": scheduled,
            "ignored": sum(ignored.values()), "ignored_reasons": ignored, **extra}


def _latest_per_key(records: list[Record], parsed: Parsed, known: dict[str, str]) -> list[Record]:
    """Drop records older than (or as old as) what is known for their key, and within the body
    all but the newest of each key that carries a sequencer."""
    best: dict[str, Record] = {}
    kept: list[Record] = []
    for record in records:
        if record.sequencer is None:
            kept.append(record)
            continue
        seen = known.get(record.key)
        if seen is not None and seen >= record.sequencer:
            parsed.ignore(Ignore.STALE)
            continue
        other = best.get(record.key)
        if other is not None and other.sequencer is not None and other.sequencer >= record.sequencer:
            parsed.ignore(Ignore.STALE)
            continue
        if other is not None:
            parsed.ignore(Ignore.STALE)
        best[record.key] = record
    return kept + list(best.values())


def _source_names(row: Mapping[str, Any]) -> set[str]:
    """The names a notification may give the task's source bucket (a COS bucket with and
    without its ``-<APPID>`` suffix)."""
    bucket = str(row["src_bucket"])
    names = {bucket}
    if row.get("app_id"):
        names.add(f"{bucket}-{row['app_id']}")
    return names


async def _apply(services: Services, project_id: str, task_id: str, sources: set[str], parsed: Parsed) -> dict[str, Any]:
    notes = _notifications(services)
    records = []
    for record in parsed.records:
        if record.bucket not in sources:
            parsed.ignore(Ignore.OTHER_BUCKET)
        else:
            records.append(record)
    ordered = [r.key for r in records if r.sequencer is not None]
    known = await notes.sequencers(task_id, ordered) if ordered else {}
    records = _latest_per_key(records, parsed, known)
    state = await notes.delete_state(project_id, task_id)
    created = [r for r in records if r.kind is EventKind.CREATED]
    deleted = [r for r in records if r.kind is EventKind.DELETED]
    if deleted and not state.settings.enabled:
        parsed.ignore(Ignore.DELETES_OFF, len(deleted))
    if created:
        # A full backlog (BacklogFull) is answered 503 by the API's one mapping of domain errors.
        await services.ledger.accept(task_id, [r.key for r in created], project_id=project_id,
                                     raw_keys=[r.sent for r in created])
        metrics.event_accepted(task_id, len(created))
        services.work_arrived()
    changes = [Change(r.key, r.kind.value, r.sequencer) for r in records if r.sequencer is not None or
               (r.kind is EventKind.DELETED and state.settings.enabled)]
    scheduled = 0
    if changes:
        scheduled, stale, tripped = await notes.record(project_id, task_id, changes, state.settings)
        if stale and state.settings.enabled:  # (with deletes off they were counted as such already)
            parsed.ignore(Ignore.STALE, stale)
        if tripped:
            metrics.DELETE_BREAKER_OPEN.labels(task_id).set(1)
            log.warning("delete breaker tripped for task %s: more than %d deletes in a minute; deletes are paused "
                        "until an operator resumes them (omsync task deletes resume %s)",
                        task_id, state.settings.max_per_minute, task_id,
                        extra={"task_id": task_id})
    results: Counter[str] = Counter(parsed.ignored)
    if created:
        results["accepted"] += len(created)
    if scheduled:
        results["delete_scheduled"] += scheduled
    for result, count in results.items():
        metrics.NOTIFICATION_RECORDS.labels(task_id, result).inc(count)
    return _answer(parsed, len(created), scheduled)


async def _handle(request: Request, services: Services, project_id: str, task_id: str, row: Mapping[str, Any],
                  *, via_webhook: bool) -> Response:
    raw = await request.body()
    if not raw.strip():
        raise invalid("body", "is required")
    payload = load_json_body(raw)
    try:
        parsed = parse_notification(payload)
    except UnknownFormat as exc:
        raise invalid("body", f"is not a notification omsync reads ({exc})") from exc
    if parsed.validation_code is not None:
        # Azure Event Grid's subscription validation handshake.
        return JSONResponse({"validationResponse": parsed.validation_code})
    envelope = parsed.envelope
    if envelope is not None:
        if envelope.service == "sns" and (via_webhook or envelope.type != "Notification"):
            await _check_sns(services, envelope)
        if envelope.type == "SubscriptionConfirmation":
            if envelope.service != "sns":
                log.warning("SMN subscription confirmation received for task %s: confirm the subscription in the "
                            "SMN console (request confirmation) or open its subscribe_url", task_id)
                parsed.ignore(Ignore.SUBSCRIPTION)
                return JSONResponse(_answer(parsed, 0, 0))
            confirmed = await _confirm_subscription(services, envelope)
            parsed.ignore(Ignore.SUBSCRIPTION)
            return JSONResponse(_answer(parsed, 0, 0, subscription_confirmed=confirmed))
        if envelope.type != "Notification":
            parsed.ignore(Ignore.SUBSCRIPTION)
            return JSONResponse(_answer(parsed, 0, 0))
        try:
            inner = parse_message(envelope.message)
        except UnknownFormat:
            # The sender retries a refusal: an unreadable message is counted, not refused.
            parsed.ignore(Ignore.UNSUPPORTED_EVENT)
            return JSONResponse(_answer(parsed, 0, 0))
        inner.format = f"{envelope.service}-{inner.format}"
        parsed = inner
        if parsed.validation_code is not None or parsed.envelope is not None:
            parsed.ignore(Ignore.UNSUPPORTED_EVENT)
            parsed.envelope = None
            parsed.validation_code = None
    try:
        body = await _apply(services, project_id, task_id, _source_names(row), parsed)
    except TaskNotFound as exc:
        if via_webhook:
            raise _refused(403, "The webhook secret is not valid for this task.") from exc
        raise not_found(task_id) from exc
    return JSONResponse(body)


@router.post("/v2/{project_id}/sync-tasks/{sync_task_id}/notifications")
async def post_notification(request: Request, project_id: ProjectId, services: ServicesDep,
                            sync_task_id: TaskId) -> Response:
    """A native notification body (S3, SNS, EventBridge, MinIO, Ceph, OBS, OSS, COS, Event Grid,
    CloudEvents), signed by the caller. Answers the accepted and ignored counts, or the Event
    Grid validation response."""
    row = await services.tasks.get(project_id, sync_task_id)
    return await _handle(request, services, project_id, sync_task_id, row, via_webhook=False)


def _given_secret(request: Request) -> str | None:
    secret = request.query_params.get("secret")
    if secret:
        return secret
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def _webhook_task(request: Request, services: Services, task_id: str) -> tuple[str, Mapping[str, Any]]:
    secret = _given_secret(request)
    if secret is None or len(secret) > MAX_SECRET_CHARS:
        raise _refused(401, "The webhook secret is missing.")
    found = await _notifications(services).webhook(task_id) if len(task_id) <= 64 else None
    if found is None or found[2] is None or not hmac.compare_digest(hash_token(secret), found[2]):
        raise _refused(403, "The webhook secret is not valid for this task.")
    try:
        return found[0], await services.tasks.get(found[0], task_id)
    except TaskNotFound as exc:
        raise _refused(403, "The webhook secret is not valid for this task.") from exc


@router.post("/v2/webhooks/{sync_task_id}")
async def post_webhook(request: Request, services: ServicesDep,
                       sync_task_id: Annotated[str, Path(min_length=1, max_length=1024)]) -> Response:
    """The per-task secret webhook URL (no request signature; the secret authenticates)."""
    project_id, row = await _webhook_task(request, services, sync_task_id)
    return await _handle(request, services, project_id, sync_task_id, row, via_webhook=True)


@router.options("/v2/webhooks/{sync_task_id}")
async def webhook_handshake(request: Request, services: ServicesDep,
                            sync_task_id: Annotated[str, Path(min_length=1, max_length=1024)]) -> Response:
    """CloudEvents webhook abuse protection (used by Event Grid's CloudEvents schema): allow
    the origin that asks, once the secret checks."""
    await _webhook_task(request, services, sync_task_id)
    origin = request.headers.get("webhook-request-origin", "")
    headers = {"WebHook-Allowed-Origin": origin[:255] or "*", "WebHook-Allowed-Rate": "*"}
    return Response(status_code=200, headers=headers)


# -- management: webhook secret, delete propagation -----------------------------------------


class WebhookSecretReq(BaseModel):
    """PUT …/webhook: the secret the webhook URL will carry, chosen by the client (``omsync task
    webhook --rotate`` draws 256 random bits), so that the API never has to send one back."""

    model_config = ConfigDict(extra="forbid")
    secret: str = Field(min_length=MIN_SECRET_CHARS, max_length=MAX_SECRET_CHARS, pattern=SECRET_PATTERN)


def _webhook_view(task_id: str, created: int | None) -> dict[str, Any]:
    return {"sync_task_id": task_id, "exists": created is not None, "created_at": created,
            "path": f"/v2/webhooks/{task_id}"}


@router.get("/v2/{project_id}/sync-tasks/{sync_task_id}/webhook")
async def show_webhook(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId) -> dict[str, Any]:
    """Whether the task has a webhook secret, since when, and the URL path (the secret itself is
    never stored, so never shown)."""
    created = await _notifications(services).has_webhook(project_id, sync_task_id)
    return _webhook_view(sync_task_id, created)


@router.put("/v2/{project_id}/sync-tasks/{sync_task_id}/webhook")
async def set_webhook(request: Request, project_id: ProjectId, services: ServicesDep,
                      sync_task_id: TaskId) -> dict[str, Any]:
    """Set (or rotate: the old secret stops working at once) the task's webhook secret; only its
    SHA-256 is stored. The secret is 32 to 256 characters of ``A-Z a-z 0-9 - _ . ~``."""
    body = await parse_body(request, WebhookSecretReq)
    notes = _notifications(services)
    await notes.set_webhook(project_id, sync_task_id, hash_token(body.secret))
    created = await notes.has_webhook(project_id, sync_task_id)
    return _webhook_view(sync_task_id, created)


@router.get("/v2/{project_id}/sync-tasks/{sync_task_id}/deletes")
async def show_deletes(project_id: ProjectId, services: ServicesDep, sync_task_id: TaskId) -> dict[str, Any]:
    """Delete propagation of the task: settings, pending deletes, breaker, counters."""
    state = await _notifications(services).delete_state(project_id, sync_task_id)
    return {"sync_task_id": sync_task_id, **counts_view(state)}


@router.put("/v2/{project_id}/sync-tasks/{sync_task_id}/deletes")
async def update_deletes(request: Request, project_id: ProjectId, services: ServicesDep,
                         sync_task_id: TaskId) -> dict[str, Any]:
    """Turn delete propagation on or off and set its grace delay and breaker limit."""
    body = await parse_body(request, DeleteSettingsReq)
    notes = _notifications(services)
    await notes.set_delete_settings(project_id, sync_task_id, DeleteSettings(
        enabled=body.propagate_deletes, grace_seconds=body.delete_grace_seconds,
        max_per_minute=body.max_deletes_per_minute))
    state = await notes.delete_state(project_id, sync_task_id)
    return {"sync_task_id": sync_task_id, **counts_view(state)}


class ResumeReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    discard: bool = False


@router.post("/v2/{project_id}/sync-tasks/{sync_task_id}/deletes/resume")
async def resume_deletes(request: Request, project_id: ProjectId, services: ServicesDep,
                         sync_task_id: TaskId) -> dict[str, Any]:
    """Close the task's delete breaker: the waiting deletes run (each still checked against
    the source), or with ``{"discard": true}`` are dropped."""
    body = await parse_body(request, ResumeReq, allow_empty=True)
    notes = _notifications(services)
    dropped = await notes.resume_deletes(project_id, sync_task_id, discard=body.discard)
    state = await notes.delete_state(project_id, sync_task_id)
    metrics.DELETE_BREAKER_OPEN.labels(sync_task_id).set(0)
    log.info("delete breaker of task %s closed by an operator (%d waiting deletes discarded)", sync_task_id, dropped)
    return {"sync_task_id": sync_task_id, "discarded_now": dropped, **counts_view(state)}


__all__ = ["DeleteSettingsReq", "ResumeReq", "WebhookSecretReq", "router"]
