"""Bar charts of 5-minute counters, laid out on the server and drawn as inline SVG.

No chart library and no script: the geometry is computed here and the template writes plain
``<rect>`` elements (each with its time, value and a tooltip), so the pages work without
JavaScript and without anything fetched from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from omsync.domain.stats import FIVE_MINUTES_MS, ONE_HOUR_MS, bucket_start
from omsync.humanize import format_bytes

WIDTH, HEIGHT = 720, 150
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 10, 22
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass(frozen=True)
class Bar:
    """One non-zero bucket: its rectangle (SVG user units), time, value and tooltip."""

    x: float
    y: float
    width: float
    height: float
    time_ms: int
    value: int
    label: str


@dataclass(frozen=True)
class Tick:
    """An hour mark on the time axis."""

    x: float
    label: str


@dataclass(frozen=True)
class Chart:
    """One series over a window: bars of non-zero buckets, hour ticks and the largest value."""

    series: str
    title: str
    bars: list[Bar]
    ticks: list[Tick]
    total: int
    peak: int
    peak_label: str
    total_label: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_w: int = PLOT_W
    plot_h: int = PLOT_H


def window(now_ms: int, hours: int) -> tuple[int, int]:
    """``(first_bucket_start, end_ms)`` of the last ``hours`` hours in 5-minute buckets, the
    current (partial) bucket included."""
    buckets = hours * ONE_HOUR_MS // FIVE_MINUTES_MS
    return bucket_start(now_ms) - (buckets - 1) * FIVE_MINUTES_MS, now_ms


def format_count(value: int) -> str:
    """``12345`` → ``12,345``."""
    return f"{value:,}"


def clock(ms: int) -> str:
    """``HH:MM`` in UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def build_chart(series: str, title: str, points: Iterable[tuple[int, int]], first_ms: int, end_ms: int,
                *, as_bytes: bool = False) -> Chart:
    """Lay out ``points`` (``(bucket_start_ms, value)``) as bars over ``[first_ms, end_ms]``.

    Buckets outside the window are ignored; a non-zero value never draws thinner than one
    pixel, so a single event stays visible next to a peak of thousands.
    """
    fmt = format_bytes if as_bytes else format_count
    slots = (bucket_start(end_ms) - first_ms) // FIVE_MINUTES_MS + 1
    slot_w = PLOT_W / slots
    values = {t: v for t, v in points if first_ms <= t <= end_ms and v}
    peak = max(values.values(), default=0)
    bars = []
    for stamp, value in sorted(values.items()):
        index = (stamp - first_ms) // FIVE_MINUTES_MS
        height = max(1.0, PLOT_H * value / peak)
        bars.append(Bar(
            x=round(LEFT + index * slot_w + 0.5, 2), y=round(TOP + PLOT_H - height, 2),
            width=round(max(1.0, slot_w - 1), 2), height=round(height, 2), time_ms=stamp, value=value,
            label=f"{clock(stamp)}–{clock(stamp + FIVE_MINUTES_MS)} UTC: {fmt(value)}",
        ))
    ticks = []
    hour = first_ms - first_ms % ONE_HOUR_MS + (ONE_HOUR_MS if first_ms % ONE_HOUR_MS else 0)
    while hour <= end_ms:
        ticks.append(Tick(x=round(LEFT + (hour - first_ms) / FIVE_MINUTES_MS * slot_w, 2), label=clock(hour)))
        hour += ONE_HOUR_MS
    total = sum(values.values())
    return Chart(series=series, title=title, bars=bars, ticks=ticks, total=total, peak=peak,
                 peak_label=fmt(peak), total_label=fmt(total))
