"""Prometheus metrics of one omsync process, served at ``GET /metrics`` by ``omsync serve``.

Every metric lives in :data:`REGISTRY` (not the client library's global registry, so that
nothing another library registers leaks into the exposition). The rest of omsync records through
the small functions below and never touches metric objects; each function is cheap (no I/O)
and never raises.

Per task (label ``task_id``), counted in the process that did the work:

* ``omsync_events_accepted_total`` key occurrences accepted by CreateSyncEvents, and
  ``omsync_keys_redriven_total`` failed keys re-driven: together they are the statistics API's
  REQUEST;
* ``omsync_outcomes_total{kind, reason}`` final outcomes, SKIP ``coalesced`` included: per kind
  the statistics API's SUCCESS / FAILURE / SKIP;
* ``omsync_copied_bytes_total`` bytes of successful copies (SIZE);
* ``omsync_event_to_outcome_seconds`` histogram of the time from the acceptance of the oldest
  occurrence a copy served to its final outcome (one observation per final outcome, coalesced
  occurrences excluded, as in the statistics' latency histogram);
* ``omsync_retries_total{reason}`` failed attempts that will be tried again;
* ``omsync_throttled_total{cause}`` throttling: ``store`` (a store answered 429/503 SlowDown),
  ``backlog`` (events refused because the task's backlog is full), ``rate_limit`` (the task's
  objects/s limit delayed the start of a key's copy);
* ``omsync_task_keys_pending`` keys accepted and without a final outcome yet (in-flight keys
  included), read from the database when scraped: the same value in every process;
* ``omsync_task_keys_inflight`` keys this process is copying right now.

Per process: ``omsync_worker_slots``, ``omsync_worker_slots_busy`` and
``omsync_worker_utilization_ratio`` (busy / slots); ``omsync_store_request_duration_seconds``
and ``omsync_store_request_errors_total`` by ``backend`` (the cloud type) and ``operation`` (and
error ``kind``); ``omsync_http_request_duration_seconds`` by ``method``, ``route`` (the route
template, never the raw path) and ``status``; ``omsync_build_info``; the client library's
``process_*`` and ``python_*`` metrics.

No label ever carries a key, a credential or anything a client chose freely other than a task id
that exists.

When ``serve`` runs copy worker processes it sets ``PROMETHEUS_MULTIPROC_DIR`` for itself and its
children before this module is imported: every process then records into files there (the
client library's multiprocess mode), the API process's ``/metrics`` adds them up, and each worker
publishes its slots and in-flight keys every second (:func:`publish_slots`). The ``process_*``
and ``python_*`` metrics are then left out (they describe one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from omsync import __version__
from omsync.domain.stats import LATENCY_BOUNDS_MS

log = logging.getLogger("omsync.metrics")

# ``*_created`` series double the exposition and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
"""True when several processes record into the shared directory (see the module docstring)."""

REGISTRY = CollectorRegistry()
"""The registry :func:`render` exposes (in multiprocess mode: this process's own collectors)."""

if not MULTIPROCESS:
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""Content-Type of :func:`render`'s output (Prometheus text format 0.0.4)."""

# Same bounds as the statistics' latency columns, so dashboards and /metrics agree.
LATENCY_BUCKETS = tuple(ms / 1000 for ms in LATENCY_BOUNDS_MS)
STORE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PENDING_QUERY_TIMEOUT_SECONDS = 5.0

THROTTLE_CAUSES = ("store", "backlog", "rate_limit")

_TASK_METRICS: list[Counter | Histogram] = []
_M = TypeVar("_M", Counter, Histogram)


def _per_task(metric: _M) -> _M:
    _TASK_METRICS.append(metric)
    return metric


BUILD_INFO = Gauge("omsync_build_info", "Always 1; the omsync version as a label.", ["version"], registry=REGISTRY,
                   multiprocess_mode="max")
BUILD_INFO.labels(__version__).set(1)

EVENTS_ACCEPTED = _per_task(Counter(
    "omsync_events_accepted_total", "Key occurrences accepted by CreateSyncEvents (each one REQUEST).",
    ["task_id"], registry=REGISTRY))
KEYS_REDRIVEN = _per_task(Counter(
    "omsync_keys_redriven_total", "Failed keys re-driven (each one REQUEST).", ["task_id"], registry=REGISTRY))
OUTCOMES = _per_task(Counter(
    "omsync_outcomes_total", "Final outcomes of key occurrences by kind (SUCCESS, FAILURE, SKIP) and reason.",
    ["task_id", "kind", "reason"], registry=REGISTRY))
COPIED_BYTES = _per_task(Counter(
    "omsync_copied_bytes_total", "Bytes of objects copied successfully (the statistics' SIZE).",
    ["task_id"], registry=REGISTRY))
EVENT_TO_OUTCOME = _per_task(Histogram(
    "omsync_event_to_outcome_seconds", "Time from an event's acceptance to the final outcome of its key.",
    ["task_id"], buckets=LATENCY_BUCKETS, registry=REGISTRY))
RETRIES = _per_task(Counter(
    "omsync_retries_total", "Failed copy attempts scheduled to be tried again, by reason.",
    ["task_id", "reason"], registry=REGISTRY))
THROTTLED = _per_task(Counter(
    "omsync_throttled_total", "Throttling by cause: store (429/SlowDown), backlog (events refused), rate_limit.",
    ["task_id", "cause"], registry=REGISTRY))

STORE_DURATION = Histogram(
    "omsync_store_request_duration_seconds",
    "Duration of object store requests (get: until the first bytes), by backend and operation.",
    ["backend", "operation"], buckets=STORE_BUCKETS, registry=REGISTRY)
STORE_ERRORS = Counter(
    "omsync_store_request_errors_total", "Object store requests that failed, by backend, operation and error kind.",
    ["backend", "operation", "kind"], registry=REGISTRY)
HTTP_DURATION = Histogram(
    "omsync_http_request_duration_seconds", "Duration of HTTP requests served, by method, route template and status.",
    ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=REGISTRY)
REFRESH_ERRORS = Counter(
    "omsync_metrics_refresh_errors_total",
    "Scrapes at which the pending-keys gauge could not be read from the database (stale values served).",
    registry=REGISTRY)
NOTIFICATION_RECORDS = _per_task(Counter(
    "omsync_notification_records_total",
    "Records of native change notifications by result: accepted (copied), delete_scheduled, or the reason ignored.",
    ["task_id", "result"], registry=REGISTRY))
DELETES = _per_task(Counter(
    "omsync_deletes_total", "Propagated deletes by outcome: deleted, kept (the source still had the key), failed.",
    ["task_id", "outcome"], registry=REGISTRY))
DELETE_BREAKER_OPEN = Gauge(
    "omsync_delete_breaker_open",
    "1 while a task's delete propagation is paused by its breaker (until an operator resumes it).",
    ["task_id"], registry=REGISTRY, multiprocess_mode="max")


# -- recording ----------------------------------------------------------------------------------


def event_accepted(task_id: str, occurrences: int) -> None:
    """``occurrences`` key occurrences were accepted for the task (committed)."""
    if occurrences > 0:
        EVENTS_ACCEPTED.labels(task_id).inc(occurrences)


def keys_redriven(task_id: str, count: int) -> None:
    """``count`` failed keys of the task were re-driven (committed)."""
    if count > 0:
        KEYS_REDRIVEN.labels(task_id).inc(count)


def outcome(task_id: str, kind: str, reason: str | None, size: int = 0,
            latency_seconds: float | None = None) -> None:
    """One final outcome (``kind`` SUCCESS, FAILURE or SKIP) was recorded; ``size`` counts into
    the copied bytes for SUCCESS; ``latency_seconds`` (event to outcome) is observed when given."""
    OUTCOMES.labels(task_id, kind, reason or "none").inc()
    if kind == "SUCCESS" and size > 0:
        COPIED_BYTES.labels(task_id).inc(size)
    if latency_seconds is not None:
        EVENT_TO_OUTCOME.labels(task_id).observe(max(0.0, latency_seconds))


def coalesced(task_id: str, occurrences: int) -> None:
    """``occurrences`` were absorbed by a copy of a later generation (SKIP ``coalesced``)."""
    if occurrences > 0:
        OUTCOMES.labels(task_id, "SKIP", "coalesced").inc(occurrences)


def retry(task_id: str, reason: str) -> None:
    """A failed attempt was given back to the ledger to be tried again."""
    RETRIES.labels(task_id, reason or "unknown").inc()


def throttled(task_id: str, cause: str) -> None:
    """Work of the task was throttled; ``cause`` is one of :data:`THROTTLE_CAUSES`."""
    THROTTLED.labels(task_id, cause if cause in THROTTLE_CAUSES else "other").inc()


# Label children of the store-duration histogram, looked up once (a store request is the most
# frequent thing recorded); backends and operations are a small fixed set.
_store_timers: dict[tuple[str, str], Histogram] = {}


def store_call(backend: str, operation: str, seconds: float | None, error_kind: str | None = None) -> None:
    """One store request ended: its duration is observed when given; ``error_kind`` (an
    :class:`~omsync.stores.base.ErrorKind` value, or ``internal``) counts a failure."""
    if seconds is not None:
        timer = _store_timers.get((backend, operation))
        if timer is None:
            timer = _store_timers[(backend, operation)] = STORE_DURATION.labels(backend, operation)
        timer.observe(max(0.0, seconds))
    if error_kind is not None:
        STORE_ERRORS.labels(backend, operation, error_kind).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request was answered; ``route`` must be a route template, not a raw path."""
    HTTP_DURATION.labels(method, route, str(status)).observe(max(0.0, seconds))


def forget_task(task_id: str) -> None:
    """Drop every series of a deleted task (counters of a task that no longer exists would
    otherwise be exported until the process restarts)."""
    for metric in _TASK_METRICS:
        remove = getattr(metric, "remove_by_labels", None)  # prometheus-client >= 0.22
        if remove is not None:
            with contextlib.suppress(KeyError, ValueError):
                remove({"task_id": task_id})


# -- state read at scrape time --------------------------------------------------------------------


class SlotSource(Protocol):
    """What the metrics read from a running engine."""

    def slot_usage(self) -> tuple[int, Mapping[str, int]]:
        """(copy slots, keys in flight per task id)."""
        ...


# Multiprocess mode: what each worker process publishes about its engines (summed over the
# living processes at scrape time).
_SLOTS = Gauge("omsync_worker_slots_published", "Copy slots of a worker process.", registry=None,
               multiprocess_mode="livesum")
_INFLIGHT = Gauge("omsync_task_keys_inflight_published", "Keys a worker process is copying.", ["task_id"],
                  registry=None, multiprocess_mode="livesum")


class ProcessGauges(Collector):
    """The gauges of one process computed at scrape time: copy slots and in-flight keys of the
    engines it tracks (or, in multiprocess mode, of what the worker processes published), and
    the pending keys per task from the last :meth:`refresh_pending`. Built by the composition
    root (one per ``Services``) and handed to the engines it builds; :meth:`render` is the
    process's exposition."""

    def __init__(self) -> None:
        self._engines: list[SlotSource] = []
        self._pending: dict[str, int] = {}
        self._published: set[str] = set()

    def track(self, engine: SlotSource) -> None:
        """Report ``engine``'s slots and in-flight keys until :meth:`untrack`."""
        if engine not in self._engines:
            self._engines.append(engine)

    def untrack(self, engine: SlotSource) -> None:
        """Stop reporting ``engine`` (it stopped)."""
        if engine in self._engines:
            self._engines.remove(engine)

    def forget(self, task_id: str) -> None:
        """Drop a deleted task's pending count (and its per-task series: :func:`forget_task`)."""
        forget_task(task_id)
        self._pending.pop(task_id, None)

    async def refresh_pending(self, read_counts: Callable[[], Awaitable[Mapping[str, int]]]) -> bool:
        """Take every task's pending-key count from ``read_counts`` (the ledger's read model,
        :func:`omsync.ledger.views.pending_keys_by_task`) for the next :meth:`render`.

        On failure or after ``PENDING_QUERY_TIMEOUT_SECONDS`` the previous values stay (and
        ``omsync_metrics_refresh_errors_total`` counts it); returns whether the values are fresh.
        """
        try:
            async with asyncio.timeout(PENDING_QUERY_TIMEOUT_SECONDS):
                counts = await read_counts()
        except Exception:
            REFRESH_ERRORS.inc()
            log.warning("reading pending keys for /metrics failed; serving the previous values", exc_info=True)
            return False
        self._pending = {str(task_id): int(n) for task_id, n in counts.items()}
        return True

    def publish_slots(self) -> None:
        """Multiprocess mode, in a worker process: record this process's slots and in-flight
        keys per task for the API process's ``/metrics`` (called every second)."""
        slots, inflight = self._slot_usage()
        _SLOTS.set(slots)
        for task_id in self._published - set(inflight):
            _INFLIGHT.labels(task_id).set(0)
        for task_id, n in inflight.items():
            _INFLIGHT.labels(task_id).set(n)
        self._published.clear()
        self._published.update(inflight)

    def _slot_usage(self) -> tuple[int, dict[str, int]]:
        slots = 0
        inflight: dict[str, int] = {}
        for engine in list(self._engines):
            total, per_task = engine.slot_usage()
            slots += total
            for task_id, n in per_task.items():
                inflight[task_id] = inflight.get(task_id, 0) + n
        return slots, inflight

    def collect(self, published: Iterable[Metric] | None = None) -> Iterable[Metric]:
        """The gauges; ``published``: the multiprocess families the worker processes wrote."""
        if published is None:
            slots, inflight = self._slot_usage()
        else:
            slots, inflight = _published_usage(published)
        busy = sum(inflight.values())
        pending = GaugeMetricFamily("omsync_task_keys_pending",
                                    "Keys accepted and without a final outcome yet (in flight included).",
                                    labels=["task_id"])
        for task_id, n in sorted(self._pending.items()):
            pending.add_metric([task_id], n)
        yield pending
        running = GaugeMetricFamily("omsync_task_keys_inflight", "Keys this process is copying right now.",
                                    labels=["task_id"])
        for task_id, n in sorted(inflight.items()):
            running.add_metric([task_id], n)
        yield running
        yield GaugeMetricFamily("omsync_worker_slots", "Copy slots of the running engines in this process.",
                                value=slots)
        yield GaugeMetricFamily("omsync_worker_slots_busy", "Copy slots busy with a key right now.", value=busy)
        yield GaugeMetricFamily("omsync_worker_utilization_ratio", "Busy copy slots / copy slots (0 without workers).",
                                value=busy / slots if slots else 0.0)

    def render(self) -> bytes:
        """The exposition of :data:`REGISTRY` and these gauges in the Prometheus text format
        (:data:`CONTENT_TYPE`), or in multiprocess mode the sum over every process of ``serve``.
        Call :meth:`refresh_pending` first for current pending counts."""
        if not MULTIPROCESS:
            return generate_latest(_merged(list(REGISTRY.collect()), self.collect()))
        from prometheus_client import multiprocess

        files = CollectorRegistry()
        multiprocess.MultiProcessCollector(files)  # type: ignore[no-untyped-call]
        collected = list(files.collect())
        families = [f for f in collected if not f.name.endswith("_published")]
        published = [f for f in collected if f.name.endswith("_published")]
        # Families nobody has recorded into yet are still announced (HELP and TYPE), as in one process.
        seen = {f.name for f in families}
        for family in REGISTRY.collect():
            if family.name not in seen and family.type in ("counter", "histogram", "gauge"):
                empty = Metric(family.name, family.documentation, family.type)
                families.append(empty)
        return generate_latest(_merged(families, self.collect(published)))


def _published_usage(families: Iterable[Metric]) -> tuple[int, dict[str, int]]:
    slots = 0
    inflight: dict[str, int] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "omsync_worker_slots_published":
                slots += int(sample.value)
            elif sample.name == "omsync_task_keys_inflight_published" and sample.value:
                task_id = sample.labels["task_id"]
                inflight[task_id] = inflight.get(task_id, 0) + int(sample.value)
    return slots, inflight


def _merged(*parts: Iterable[Metric]) -> CollectorRegistry:
    """A registry exposing the given families, in order."""
    families = [family for part in parts for family in part]

    class _Families(Collector):
        def collect(self) -> Iterable[Metric]:
            return families

    merged = CollectorRegistry()
    merged.register(_Families())
    return merged


def process_exited(pid: int) -> None:
    """Multiprocess mode: drop a worker process's live gauges once it exited."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Stopwatch:
    """``time.perf_counter`` in a tiny object, for timing a call across ``try``/``finally``."""

    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
