"""Time arithmetic of the statistics API (ListSyncTaskStatistic) and of the monthly counters.

Outcomes are counted into 5-minute buckets aligned to the Unix epoch (so also to UTC hours and
to every real time-zone offset, all multiples of 5 minutes). A statistics query returns either
those buckets or their sums per hour, at most 1000 points, omitting empty buckets. All times
are epoch milliseconds; a range ``[start_ms, end_ms)`` includes every bucket that overlaps it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

__all__ = [
    "FIVE_MINUTES_MS",
    "MAX_FIVE_MINUTE_SPAN_MS",
    "MAX_POINTS",
    "ONE_HOUR_MS",
    "Granularity",
    "StatsRangeError",
    "aggregate",
    "bucket_range",
    "bucket_start",
    "choose_granularity",
    "granularity_ms",
    "month_range",
]

FIVE_MINUTES_MS = 5 * 60 * 1000
ONE_HOUR_MS = 60 * 60 * 1000
MAX_POINTS = 1000
MAX_FIVE_MINUTE_SPAN_MS = 24 * ONE_HOUR_MS
"""Ranges up to this long are answered in 5-minute buckets (at most 289 points)."""

Granularity = Literal["FIVE_MINUTES", "ONE_HOUR"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class StatsRangeError(ValueError):
    """A statistics time range or query time is not acceptable.

    ``fields`` names the offending query parameters (``start_time``, ``end_time``,
    ``query_time``) so the API can report them.
    """

    def __init__(self, message: str, fields: tuple[str, ...]) -> None:
        super().__init__(message)
        self.fields = fields


def bucket_start(ms: int) -> int:
    """Start of the 5-minute bucket containing ``ms`` (floor; epoch-aligned)."""
    return ms - ms % FIVE_MINUTES_MS


def granularity_ms(granularity: Granularity) -> int:
    """Width of one point of ``granularity`` in milliseconds."""
    return FIVE_MINUTES_MS if granularity == "FIVE_MINUTES" else ONE_HOUR_MS


def _check_range(start_ms: int, end_ms: int) -> None:
    if start_ms < 0:
        raise StatsRangeError("start_time must not be negative", ("start_time",))
    if end_ms < start_ms:
        raise StatsRangeError("end_time must not be earlier than start_time", ("start_time", "end_time"))


def _buckets(start_ms: int, end_ms: int, width: int) -> int:
    if end_ms <= start_ms:
        return 0
    return ((end_ms - 1) // width) - (start_ms // width) + 1


def choose_granularity(start_ms: int, end_ms: int) -> Granularity:
    """``FIVE_MINUTES`` for ranges up to 24 hours, ``ONE_HOUR`` beyond.

    Raises :class:`StatsRangeError` naming ``start_time``/``end_time`` when ``start_ms`` is
    negative, ``end_ms < start_ms``, or the range overlaps more than 1000 hours (any range of
    at most 999 hours is accepted, and exactly 1000 when it starts on the hour).
    """
    _check_range(start_ms, end_ms)
    if end_ms - start_ms <= MAX_FIVE_MINUTE_SPAN_MS:
        return "FIVE_MINUTES"
    if _buckets(start_ms, end_ms, ONE_HOUR_MS) > MAX_POINTS:
        raise StatsRangeError(
            f"the range from start_time to end_time spans more than {MAX_POINTS} hours",
            ("start_time", "end_time"),
        )
    return "ONE_HOUR"


def bucket_range(start_ms: int, end_ms: int) -> tuple[int, int]:
    """``(low, high)`` such that the 5-minute buckets overlapping ``[start_ms, end_ms)`` are
    exactly those with ``low <= bucket_start < high``. Raises :class:`StatsRangeError` for a
    negative start or a reversed range."""
    _check_range(start_ms, end_ms)
    if end_ms == start_ms:
        return (start_ms, start_ms)
    return (bucket_start(start_ms), end_ms)


def aggregate(rows: Iterable[tuple[int, int]], granularity: Granularity) -> list[tuple[int, int]]:
    """Sum ``(bucket_start_ms, value)`` rows into points of ``granularity``.

    Each row is added to the point containing its time stamp (5-minute or 1-hour, epoch
    aligned); points whose sum is zero are omitted; the result is sorted by time. Raises
    ``ValueError`` if it would exceed 1000 points, which cannot happen for rows within a range
    accepted by :func:`choose_granularity`.
    """
    width = granularity_ms(granularity)
    sums: dict[int, int] = {}
    for stamp, value in rows:
        point = stamp - stamp % width
        sums[point] = sums.get(point, 0) + value
    points = sorted((stamp, total) for stamp, total in sums.items() if total != 0)
    if len(points) > MAX_POINTS:
        raise ValueError(f"{len(points)} statistics points exceed the limit of {MAX_POINTS}")
    return points


def month_range(query_time_ms: int, tz_offset_minutes: int = 0) -> tuple[int, int]:
    """``[start_ms, end_ms)`` of the calendar month containing ``query_time_ms``.

    Months are taken in UTC by default, because the OMS documentation does not state the time
    zone of its monthly counters and UTC is the one answer independent of where a server runs;
    ``tz_offset_minutes`` (e.g. 480 for UTC+8, the zone of the OMS regions) moves the month
    boundaries to local midnight of a fixed offset. The offset must be a multiple of 5 minutes
    (so months hold whole 5-minute buckets) and less than 24 hours either way (``ValueError``).
    Raises :class:`StatsRangeError` (``query_time``) when the time is outside years 1–9999.
    """
    if not -24 * 60 < tz_offset_minutes < 24 * 60 or tz_offset_minutes % 5:
        raise ValueError("tz_offset_minutes must be a multiple of 5 strictly between -1440 and 1440")
    zone = timezone(timedelta(minutes=tz_offset_minutes))
    try:
        local = (_EPOCH + query_time_ms * _MS).astimezone(zone)
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    except (OverflowError, ValueError):
        raise StatsRangeError("query_time is out of range", ("query_time",)) from None
    return ((start - _EPOCH) // _MS, (end - _EPOCH) // _MS)


# Event-to-outcome latency histogram kept per 5-minute bucket: column ``lat_<i>`` counts final
# outcomes whose latency was at most ``LATENCY_BOUNDS_MS[i]``; the last column counts the rest.
LATENCY_BOUNDS_MS = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000)
LATENCY_COLUMNS = tuple(f"lat_{i}" for i in range(len(LATENCY_BOUNDS_MS) + 1))


def latency_column(latency_ms: int) -> str:
    """The histogram column counting an outcome that took ``latency_ms`` from event to outcome."""
    return LATENCY_COLUMNS[bisect.bisect_left(LATENCY_BOUNDS_MS, max(0, latency_ms))]
