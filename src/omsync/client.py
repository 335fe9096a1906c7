"""A small synchronous client for omsync's HTTP API (OMS v2 sync tasks plus omsync's extensions).

Requests are signed with ``SDK-HMAC-SHA256`` by the same canonicalisation code the server uses
to verify them (:mod:`omsync.api.signing`), over the exact path and query bytes that go on the
wire. Errors come back as :class:`ApiError` carrying the OMS ``error_code``, ``error_msg`` and
the request id. Throttling (429) and a full backlog (503) are retried with exponential backoff
that never waits less than the server's ``Retry-After``; the number of retries is bounded.

Example::

    with OmsyncClient("http://127.0.0.1:8080", ak, sk, project_id) as client:
        task_id = client.create_task({...})
        client.send_keys(task_id, ["photos/2024/cat 1.jpg", "a+b.txt"])
        print(client.show_task(task_id).monthly_acceptance_request)
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from omsync.api.schemas import (
    FailedObject,
    ListFailedObjectsResponse,
    ListSyncTasksResponse,
    ListSyncTaskStatisticResponse,
    ShowSyncTaskResponse,
    SyncTaskInfo,
    TaskLimitsResponse,
)
from omsync.api.signing import ALGORITHM, DATE_FORMAT, canonical_request, compute_signature, string_to_sign
from omsync.domain.keys import encode_key_for_event

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "OmsyncClient",
    "RetryNotice",
    "RetryPolicy",
]

DEFAULT_BATCH_SIZE = 100
_RETRY_ALWAYS = frozenset({429, 503})  # the server did not act on the request
_RETRY_IF_IDEMPOTENT = frozenset({502, 504})  # a proxy may or may not have passed it on
_IDEMPOTENT = frozenset({"GET", "HEAD"})


class ApiError(Exception):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``error_code``/``error_msg`` the OMS error body (for a body
    that is not an OMS error, ``error_code`` is ``HTTP.<status>`` and ``error_msg`` the start of
    the body), ``request_id`` the ``X-Request-Id`` the server logged (``None`` if absent),
    ``error_detail`` the field-level detail of a 400 and ``retry_after`` the server's
    ``Retry-After`` in seconds when given.
    """

    def __init__(
        self,
        status: int,
        error_code: str,
        error_msg: str,
        request_id: str | None = None,
        *,
        error_detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error_msg)
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        self.error_detail = error_detail
        self.retry_after = retry_after

    def __str__(self) -> str:
        rid = f", request id {self.request_id}" if self.request_id else ""
        return f"{self.error_code}: {self.error_msg} (HTTP {self.status}{rid})"

    def as_dict(self) -> dict[str, Any]:
        """The error as plain data (for JSON output)."""
        return {
            "status": self.status,
            "error_code": self.error_code,
            "error_msg": self.error_msg,
            "error_detail": self.error_detail,
            "request_id": self.request_id,
        }


class ApiConnectionError(Exception):
    """The server could not be reached (or the connection failed) after the allowed retries."""


@dataclass(frozen=True)
class RetryPolicy:
    """How 429/503 answers (and unsent requests) are retried.

    The delay before retry ``n`` (0-based) is ``base_delay * 2**n`` with ±25 % jitter, but never
    less than the server's ``Retry-After``; every delay is capped at ``max_delay`` so the total
    wait stays bounded by roughly ``max_retries * max_delay``. A server that cannot be reached
    at all is retried only ``connect_retries`` times, so a wrong endpoint fails fast.
    """

    max_retries: int = 8
    connect_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = self.base_delay * (2.0 ** min(attempt, 30)) * random.uniform(0.75, 1.25)
        if retry_after is not None:
            backoff = max(backoff, retry_after)
        return max(0.0, min(backoff, self.max_delay))


@dataclass(frozen=True)
class RetryNotice:
    """Given to ``on_retry`` before each wait: which retry, how long, and why."""

    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True)
class _Target:
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    project_id: str


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_from(response: httpx.Response) -> ApiError:
    request_id = response.headers.get("x-request-id")
    retry_after = _retry_after(response.headers.get("retry-after"))
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error_code"), str):
        detail = body.get("error_detail")
        return ApiError(
            response.status_code,
            body["error_code"],
            str(body.get("error_msg", "")),
            request_id or body.get("request_id"),
            error_detail=detail if isinstance(detail, str) else None,
            retry_after=retry_after,
        )
    text = response.text.strip()[:200] or response.reason_phrase
    return ApiError(response.status_code, f"HTTP.{response.status_code}", text, request_id, retry_after=retry_after)


class OmsyncClient:
    """Signed access to one omsync endpoint for one project.

    ``endpoint`` is the base URL (``http://host:port``, optionally with a path prefix); ``access_key``
    and ``secret_key`` a key pair of ``project_id`` (``omsync keys create``). The secret key is
    only used to sign and never appears in ``repr`` or in errors.

    Every method raises :class:`ApiError` for an error answer (after retries for 429/503) and
    :class:`ApiConnectionError` when the server cannot be reached. ``on_retry`` is called before
    each retry wait; ``sleep`` is how waits are made.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        project_id: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = httpx.URL(endpoint)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        if not access_key or not secret_key or not project_id:
            raise ValueError("access key, secret key and project id are required")
        self._target = _Target(endpoint.rstrip("/"), access_key, secret_key, project_id)
        self._prefix = base.raw_path.split(b"?", 1)[0].decode("ascii").rstrip("/")
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=f"{base.scheme}://{base.netloc.decode('ascii')}", timeout=timeout, transport=transport,
            headers={"User-Agent": "omsync-cli"},
        )

    def __repr__(self) -> str:
        return f"OmsyncClient(endpoint={self._target.endpoint!r}, project_id={self._target.project_id!r})"

    @property
    def endpoint(self) -> str:
        return self._target.endpoint

    @property
    def project_id(self) -> str:
        return self._target.project_id

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OmsyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------------

    def _build(self, method: str, path: str, query: Sequence[tuple[str, str]], body: bytes | None) -> httpx.Request:
        url = self._prefix + path
        if query:
            url += "?" + urlencode(list(query), quote_via=quote)
        headers = {"X-Sdk-Date": datetime.now(UTC).strftime(DATE_FORMAT)}
        if body is not None:
            headers["Content-Type"] = "application/json;charset=UTF-8"
        request = self._http.build_request(method, url, headers=headers, content=body)
        # Sign what goes on the wire, exactly: the encoded path and query httpx will send.
        raw_path, _, raw_query = request.url.raw_path.partition(b"?")
        signed = sorted(n for n in ("host", "x-sdk-date", "content-type") if n in request.headers)
        canonical = canonical_request(
            method, raw_path, raw_query, request.headers.multi_items(), signed, body or b""
        )
        signature = compute_signature(self._target.secret_key, string_to_sign(canonical, headers["X-Sdk-Date"]))
        request.headers["Authorization"] = (
            f"{ALGORITHM} Access={self._target.access_key}, SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
        return request

    def _wait(self, attempt: int, retry_after: float | None, reason: str) -> None:
        delay = self.retry.delay(attempt, retry_after)
        if self.on_retry is not None:
            self.on_retry(RetryNotice(attempt + 1, delay, reason))
        self._sleep(delay)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | Sequence[tuple[str, str]] | None = None,
        json_body: Any = None,
    ) -> Any:
        """Send one signed request to ``path`` (below the endpoint, starting with ``/``).

        ``{project_id}`` in ``path`` is replaced by the (percent-encoded) project id. Returns the
        decoded JSON answer, or ``None`` for an empty body. Raises :class:`ApiError` /
        :class:`ApiConnectionError` as described on the class.
        """
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        path = path.replace("{project_id}", quote(self._target.project_id, safe=""))
        pairs: list[tuple[str, str]] = []
        if isinstance(query, Mapping):
            pairs = [(k, str(v)) for k, v in query.items()]
        elif query is not None:
            pairs = list(query)
        body = None if json_body is None else json.dumps(json_body, ensure_ascii=False).encode("utf-8")
        method = method.upper()
        attempt = 0
        while True:
            request = self._build(method, path, pairs, body)
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                # A connection that never opened carried nothing; anything later is only safe to
                # repeat for reads (a repeated event would count twice).
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if (unsent or method in _IDEMPOTENT) and attempt < min(self.retry.max_retries,
                                                                       self.retry.connect_retries):
                    self._wait(attempt, None, f"{type(exc).__name__}: {exc}")
                    attempt += 1
                    continue
                raise ApiConnectionError(f"cannot reach {self._target.endpoint}: {exc}") from exc
            if response.is_success:
                if not response.content.strip():
                    return None
                try:
                    return response.json()
                except ValueError as exc:
                    raise ApiError(
                        response.status_code, "HTTP.INVALID_JSON", "the answer is not JSON",
                        response.headers.get("x-request-id"),
                    ) from exc
            error = _error_from(response)
            retryable = response.status_code in _RETRY_ALWAYS or (
                response.status_code in _RETRY_IF_IDEMPOTENT and method in _IDEMPOTENT
            )
            if retryable and attempt < self.retry.max_retries:
                self._wait(attempt, error.retry_after, f"{error.error_code} (HTTP {error.status})")
                attempt += 1
                continue
            raise error

    @staticmethod
    def _task_path(task_id: str, suffix: str = "") -> str:
        return f"/v2/{{project_id}}/sync-tasks/{quote(task_id, safe='')}{suffix}"

    # -- OMS v2 operations ----------------------------------------------------------------------------

    def api_versions(self) -> dict[str, Any]:
        """ListApiVersions (``GET /``)."""
        result: dict[str, Any] = self.request("GET", "/")
        return result

    def create_task(self, body: Mapping[str, Any]) -> str:
        """CreateSyncTask with the given request fields; returns the new ``sync_task_id``."""
        result = self.request("POST", "/v2/{project_id}/sync-tasks", json_body=dict(body))
        return str(result["sync_task_id"])

    def list_tasks(self, *, limit: int = 10, offset: int = 0, status: str | None = None) -> ListSyncTasksResponse:
        """ListSyncTasks: one page (``limit`` 1–100, ``offset`` 0–10000) and the total count."""
        query: dict[str, str | int] = {"limit": limit, "offset": offset}
        if status is not None:
            query["status"] = status
        return ListSyncTasksResponse.model_validate(self.request("GET", "/v2/{project_id}/sync-tasks", query=query))

    def iter_tasks(self, *, status: str | None = None, page_size: int = 100) -> Iterator[SyncTaskInfo]:
        """Every task of the project (``status`` filters), fetched page by page."""
        offset = 0
        while True:
            page = self.list_tasks(limit=page_size, offset=offset, status=status)
            yield from page.tasks
            offset += len(page.tasks)
            if not page.tasks or offset >= page.count:
                return

    def show_task(self, task_id: str, *, query_time_ms: int | None = None) -> ShowSyncTaskResponse:
        """ShowSyncTask: the task and the counters of the UTC month of ``query_time_ms`` (default now)."""
        at = query_time_ms if query_time_ms is not None else int(time.time() * 1000)
        answer = self.request("GET", self._task_path(task_id), query={"query_time": at})
        return ShowSyncTaskResponse.model_validate(answer)

    def delete_task(self, task_id: str) -> None:
        """DeleteSyncTask (the task must be STOPPED)."""
        self.request("DELETE", self._task_path(task_id))

    def start_task(self, task_id: str, src_ak: str, src_sk: str, dst_ak: str, dst_sk: str,
                   **extra: str) -> None:
        """StartSyncTask with the source and destination credentials (and optional extra fields)."""
        body = {"src_ak": src_ak, "src_sk": src_sk, "dst_ak": dst_ak, "dst_sk": dst_sk, **extra}
        self.request("POST", self._task_path(task_id, "/start"), json_body=body)

    def stop_task(self, task_id: str) -> None:
        """StopSyncTask (the task must be SYNCHRONIZING)."""
        self.request("POST", self._task_path(task_id, "/stop"))

    def statistics(self, task_id: str, data_types: Sequence[str], start_ms: int, end_ms: int
                   ) -> ListSyncTaskStatisticResponse:
        """ListSyncTaskStatistic for ``data_types`` (REQUEST, SUCCESS, FAILURE, SKIP, SIZE) over
        ``[start_ms, end_ms]``; the server picks FIVE_MINUTES (≤ 24 h) or ONE_HOUR buckets."""
        query: dict[str, str | int] = {"data_type": ",".join(data_types), "start_time": start_ms, "end_time": end_ms}
        answer = self.request("GET", self._task_path(task_id, "/statistics"), query=query)
        return ListSyncTaskStatisticResponse.model_validate(answer)

    def create_sync_events(self, task_id: str, object_keys: Sequence[str]) -> None:
        """CreateSyncEvents with ``object_keys`` exactly as given (already URL-encoded).

        Use :meth:`send_keys` for real (decoded) object keys.
        """
        self.request("POST", self._task_path(task_id, "/events"), json_body={"object_keys": list(object_keys)})

    def send_keys(
        self,
        task_id: str,
        keys: Sequence[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Send real object keys as sync events, encoded so each arrives byte-exact, in batches.

        Every key is checked before anything is sent: ``ValueError`` names the first illegal
        one (empty, over 1024 UTF-8 bytes, NUL, lone surrogate). Batches go in order; after each
        accepted batch ``on_batch`` gets the number of keys accepted so far. An error stops the
        run (the keys of earlier batches stay accepted). Returns the number of keys sent.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        encoded = []
        for index, key in enumerate(keys):
            try:
                encoded.append(encode_key_for_event(key))
            except ValueError as exc:
                raise ValueError(f"key {index}: {exc}") from exc
        sent = 0
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            self.create_sync_events(task_id, batch)
            sent += len(batch)
            if on_batch is not None:
                on_batch(sent)
        return sent

    # -- omsync extensions ------------------------------------------------------------------------------

    def list_failed(self, task_id: str, *, limit: int = 100, marker: int = 0) -> ListFailedObjectsResponse:
        """One page of failed keys with reasons; pass the returned ``next_marker`` for the next."""
        answer = self.request("GET", self._task_path(task_id, "/failed-objects"),
                              query={"limit": limit, "marker": marker})
        return ListFailedObjectsResponse.model_validate(answer)

    def iter_failed(self, task_id: str, *, page_size: int = 1000) -> Iterator[FailedObject]:
        """Every failed key of the task, page by page."""
        marker = 0
        while True:
            page = self.list_failed(task_id, limit=page_size, marker=marker)
            yield from page.objects
            if page.next_marker is None:
                return
            marker = page.next_marker

    def retry_failed(self, task_id: str, keys: Sequence[str] | None = None) -> int:
        """Re-drive failed keys (all, or the named real object keys); returns how many."""
        body = {} if keys is None else {"object_keys": list(keys)}
        answer = self.request("POST", self._task_path(task_id, "/failed-objects/retry"), json_body=body)
        return int(answer["retried"])

    def get_limits(self, task_id: str) -> TaskLimitsResponse:
        """The task's limits (``None`` fields are unlimited)."""
        return TaskLimitsResponse.model_validate(self.request("GET", self._task_path(task_id, "/limits")))

    def set_limits(
        self,
        task_id: str,
        *,
        max_concurrency: int | None = None,
        max_objects_per_second: float | None = None,
        max_bytes_per_second: int | None = None,
    ) -> TaskLimitsResponse:
        """Replace the task's limits; each ``None`` is unlimited. ``max_concurrency`` counts
        copies in flight across all workers, the two rates apply in each worker process.
        Returns the limits now in force."""
        body = {
            "max_concurrency": max_concurrency,
            "max_objects_per_second": max_objects_per_second,
            "max_bytes_per_second": max_bytes_per_second,
        }
        return TaskLimitsResponse.model_validate(
            self.request("PUT", self._task_path(task_id, "/limits"), json_body=body)
        )

    # -- native notifications (omsync extension) --------------------------------------------------

    def webhook(self, task_id: str) -> dict[str, Any]:
        """The task's webhook: whether a secret exists, since when, and the URL path."""
        answer: dict[str, Any] = self.request("GET", self._task_path(task_id, "/webhook"))
        return answer

    def set_webhook(self, task_id: str, secret: str) -> dict[str, Any]:
        """Set (or rotate) the task's webhook secret (32 to 256 of ``A-Z a-z 0-9 - _ . ~``);
        the server keeps only its hash."""
        answer: dict[str, Any] = self.request("PUT", self._task_path(task_id, "/webhook"),
                                              json_body={"secret": secret})
        return answer

    def deletes(self, task_id: str) -> dict[str, Any]:
        """The task's delete propagation: settings, pending deletes, breaker, counters."""
        answer: dict[str, Any] = self.request("GET", self._task_path(task_id, "/deletes"))
        return answer

    def set_deletes(self, task_id: str, *, enabled: bool, grace_seconds: float,
                    max_per_minute: int) -> dict[str, Any]:
        """Turn delete propagation on or off with its grace delay and breaker limit."""
        body = {"propagate_deletes": enabled, "delete_grace_seconds": grace_seconds,
                "max_deletes_per_minute": max_per_minute}
        answer: dict[str, Any] = self.request("PUT", self._task_path(task_id, "/deletes"), json_body=body)
        return answer

    def resume_deletes(self, task_id: str, *, discard: bool = False) -> dict[str, Any]:
        """Close the task's delete breaker (``discard``: drop the deletes that waited)."""
        answer: dict[str, Any] = self.request("POST", self._task_path(task_id, "/deletes/resume"),
                                              json_body={"discard": discard})
        return answer

    # -- reconciliation (omsync extension) ------------------------------------------------------

    def start_reconciliation(self, task_id: str, prefix: str = "") -> str:
        """Start reconciling the task under ``prefix`` (exact key prefix); the run's id."""
        answer: dict[str, Any] = self.request("POST", self._task_path(task_id, "/reconciliations"),
                                              json_body={"prefix": prefix})
        return str(answer["reconciliation_id"])

    def show_reconciliation(self, task_id: str, run_id: str) -> dict[str, Any]:
        """One run: status (RUNNING, SUCCESS, FAILED), counters, times, error_reason."""
        answer: dict[str, Any] = self.request(
            "GET", self._task_path(task_id, f"/reconciliations/{quote(run_id, safe='')}"))
        return answer

    def list_reconciliations(self, task_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The task's latest runs, newest first."""
        answer: dict[str, Any] = self.request("GET", self._task_path(task_id, "/reconciliations"),
                                              query={"limit": limit})
        runs: list[dict[str, Any]] = answer["reconciliations"]
        return runs

    def set_reconciliation_schedule(self, task_id: str, interval_seconds: int, prefix: str = "") -> dict[str, Any]:
        """Reconcile the task every ``interval_seconds`` (the first run now)."""
        answer: dict[str, Any] = self.request("PUT", self._task_path(task_id, "/reconciliation-schedule"),
                                              json_body={"interval_seconds": interval_seconds, "prefix": prefix})
        return answer

    def reconciliation_schedule(self, task_id: str) -> dict[str, Any]:
        """The task's reconciliation schedule (404 OMS.1009 when it has none)."""
        answer: dict[str, Any] = self.request("GET", self._task_path(task_id, "/reconciliation-schedule"))
        return answer

    def clear_reconciliation_schedule(self, task_id: str) -> None:
        """Remove the task's reconciliation schedule."""
        self.request("DELETE", self._task_path(task_id, "/reconciliation-schedule"))

    # -- OMS migration tasks (/v2/{project_id}/tasks) -------------------------------------------

    @staticmethod
    def _migration_path(task_id: int, suffix: str = "") -> str:
        return f"/v2/{{project_id}}/tasks/{int(task_id)}{suffix}"

    def create_migration(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """CreateTask with the given request fields; returns ``{"id", "name", ...}``."""
        answer: dict[str, Any] = self.request("POST", "/v2/{project_id}/tasks", json_body=dict(body))
        return answer

    def list_migrations(self, *, limit: int = 10, offset: int = 0, status: int | None = None) -> dict[str, Any]:
        """ListTasks: one page of migration tasks (``limit`` 1–100) and the total count."""
        query: dict[str, str | int] = {"limit": limit, "offset": offset}
        if status is not None:
            query["status"] = status
        answer: dict[str, Any] = self.request("GET", "/v2/{project_id}/tasks", query=query)
        return answer

    def show_migration(self, task_id: int) -> dict[str, Any]:
        """ShowTask: the migration task with its counts and progress."""
        answer: dict[str, Any] = self.request("GET", self._migration_path(task_id))
        return answer

    def start_migration(self, task_id: int, src_ak: str, src_sk: str, dst_ak: str, dst_sk: str) -> None:
        """StartTask: resume a stopped task (retry a failed one's failed keys) with the keys again."""
        body = {"src_ak": src_ak, "src_sk": src_sk, "dst_ak": dst_ak, "dst_sk": dst_sk}
        self.request("POST", self._migration_path(task_id, "/start"), json_body=body)

    def stop_migration(self, task_id: int) -> None:
        """StopTask (the task must be waiting or running)."""
        self.request("POST", self._migration_path(task_id, "/stop"))

    def delete_migration(self, task_id: int) -> None:
        """DeleteTask (the task must not be running or pausing)."""
        self.request("DELETE", self._migration_path(task_id))
