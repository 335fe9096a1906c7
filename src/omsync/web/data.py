"""What the dashboard computes from the ledger's read models (:mod:`omsync.ledger.views`):
latency percentiles from the recorded histogram. The queries themselves live in the ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from omsync.db import Database
from omsync.domain.stats import LATENCY_BOUNDS_MS
from omsync.ledger import views

# Event-to-outcome latency histogram, per 5-minute bucket: column ``lat_<i>`` of ``stat_buckets``
# counts final outcomes whose latency was at most LATENCY_BOUNDS_MS[i] (the last one: above all;
# both defined in omsync.domain.stats). The dashboard shows percentiles once the ledger records
# these columns, and "n/a" before.


def histogram_percentile(counts: Sequence[int], q: float) -> int | None:
    """The upper bound (ms) of the latency bin holding quantile ``q`` (0 < q <= 1) of a
    histogram over :data:`LATENCY_BOUNDS_MS`; -1 when it falls in the open last bin; None for
    an empty histogram."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else -1
    return -1


async def latency_percentiles(db: Database, task_id: str, start_ms: int, end_ms: int) -> Mapping[str, int] | None:
    """p50/p90/p99 event-to-outcome latency over the window, or None when not recorded."""
    counts = await views.latency_counts(db, task_id, start_ms, end_ms)
    if counts is None:
        return None
    found = {name: histogram_percentile(counts, q) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
    if any(v is None for v in found.values()):
        return None
    return {k: v for k, v in found.items() if v is not None}
