"""Statistics buckets, granularity, aggregation and monthly windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omsync.domain.stats import (
    FIVE_MINUTES_MS,
    MAX_POINTS,
    ONE_HOUR_MS,
    StatsRangeError,
    aggregate,
    bucket_range,
    bucket_start,
    choose_granularity,
    granularity_ms,
    month_range,
)

DOC_FIRST_BUCKET = 1700150400000  # 2023-11-17 00:00 UTC+8, from the documented example


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def test_constants() -> None:
    assert FIVE_MINUTES_MS == 300_000
    assert ONE_HOUR_MS == 3_600_000
    assert granularity_ms("FIVE_MINUTES") == FIVE_MINUTES_MS
    assert granularity_ms("ONE_HOUR") == ONE_HOUR_MS


@pytest.mark.parametrize(
    ("stamp", "start"),
    [
        (0, 0),
        (1, 0),
        (299_999, 0),
        (300_000, 300_000),
        (DOC_FIRST_BUCKET + 299_999, DOC_FIRST_BUCKET),
        (DOC_FIRST_BUCKET + 300_000, DOC_FIRST_BUCKET + 300_000),
    ],
)
def test_bucket_start(stamp: int, start: int) -> None:
    assert bucket_start(stamp) == start


@given(st.integers(min_value=0, max_value=2**53))
def test_bucket_start_properties(stamp: int) -> None:
    start = bucket_start(stamp)
    assert start % FIVE_MINUTES_MS == 0
    assert start <= stamp < start + FIVE_MINUTES_MS


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        (0, "FIVE_MINUTES"),
        (FIVE_MINUTES_MS, "FIVE_MINUTES"),
        (24 * ONE_HOUR_MS, "FIVE_MINUTES"),
        (24 * ONE_HOUR_MS + 1, "ONE_HOUR"),
        (7 * 24 * ONE_HOUR_MS, "ONE_HOUR"),
        (1000 * ONE_HOUR_MS, "ONE_HOUR"),
    ],
)
def test_choose_granularity(span: int, expected: str) -> None:
    assert choose_granularity(DOC_FIRST_BUCKET, DOC_FIRST_BUCKET + span) == expected


def test_hour_limit_counts_touched_hours() -> None:
    aligned = 1_699_999_200_000  # on the hour
    assert aligned % ONE_HOUR_MS == 0
    assert choose_granularity(aligned, aligned + 1000 * ONE_HOUR_MS) == "ONE_HOUR"
    with pytest.raises(StatsRangeError):
        choose_granularity(aligned, aligned + 1000 * ONE_HOUR_MS + 1)
    # 1000 hours starting mid-hour touch 1001 hours; 999 hours always fit.
    with pytest.raises(StatsRangeError):
        choose_granularity(aligned + 1, aligned + 1 + 1000 * ONE_HOUR_MS)
    assert choose_granularity(aligned + 1, aligned + 1 + 999 * ONE_HOUR_MS) == "ONE_HOUR"


def test_range_errors_name_the_fields() -> None:
    with pytest.raises(StatsRangeError) as err:
        choose_granularity(0, 2000 * ONE_HOUR_MS)
    assert err.value.fields == ("start_time", "end_time")
    assert "start_time" in str(err.value) and "end_time" in str(err.value)
    with pytest.raises(StatsRangeError) as err:
        choose_granularity(10, 5)
    assert err.value.fields == ("start_time", "end_time")
    with pytest.raises(StatsRangeError) as err:
        choose_granularity(-1, 5)
    assert err.value.fields == ("start_time",)


@given(st.integers(min_value=0, max_value=2**45), st.integers(min_value=0, max_value=1200 * ONE_HOUR_MS))
def test_accepted_ranges_never_exceed_max_points(start: int, span: int) -> None:
    try:
        granularity = choose_granularity(start, start + span)
    except StatsRangeError:
        assert span > 999 * ONE_HOUR_MS
        return
    width = granularity_ms(granularity)
    low, high = bucket_range(start, start + span)
    # One nonzero row in every 5-minute bucket of the range.
    rows = (
        [(b, 1) for b in range(low, high, FIVE_MINUTES_MS)]
        if span <= 24 * ONE_HOUR_MS
        else [(b, 1) for b in range(low - low % width, high, width)]
    )
    assert len(aggregate(rows, granularity)) <= MAX_POINTS


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 0, (0, 0)),
        (0, 1, (0, 1)),
        (DOC_FIRST_BUCKET + 1, DOC_FIRST_BUCKET + 600_000, (DOC_FIRST_BUCKET, DOC_FIRST_BUCKET + 600_000)),
        (
            DOC_FIRST_BUCKET + 299_999,
            DOC_FIRST_BUCKET + 300_001,
            (DOC_FIRST_BUCKET, DOC_FIRST_BUCKET + 300_001),
        ),
    ],
)
def test_bucket_range(start: int, end: int, expected: tuple[int, int]) -> None:
    assert bucket_range(start, end) == expected


def test_bucket_range_selects_overlapping_buckets() -> None:
    start, end = DOC_FIRST_BUCKET + 100, DOC_FIRST_BUCKET + 2 * FIVE_MINUTES_MS
    low, high = bucket_range(start, end)
    candidates = range(
        DOC_FIRST_BUCKET - FIVE_MINUTES_MS, DOC_FIRST_BUCKET + 4 * FIVE_MINUTES_MS, FIVE_MINUTES_MS
    )
    chosen = [b for b in candidates if low <= b < high]
    assert chosen == [DOC_FIRST_BUCKET, DOC_FIRST_BUCKET + FIVE_MINUTES_MS]
    with pytest.raises(StatsRangeError):
        bucket_range(5, 4)


def test_aggregate_five_minutes_matches_documented_shape() -> None:
    rows = [
        (DOC_FIRST_BUCKET + 900_000, 2),
        (DOC_FIRST_BUCKET, 3),
        (DOC_FIRST_BUCKET + 300_000, 0),  # empty bucket: omitted
        (DOC_FIRST_BUCKET + 600_000, 1),
        (DOC_FIRST_BUCKET + 600_000, 4),  # same bucket twice: summed
    ]
    assert aggregate(rows, "FIVE_MINUTES") == [
        (1700150400000, 3),
        (1700151000000, 5),
        (1700151300000, 2),
    ]


def test_aggregate_one_hour_sums_and_aligns() -> None:
    hour = DOC_FIRST_BUCKET  # also an hour boundary
    assert hour % ONE_HOUR_MS == 0
    rows = [
        (hour + 55 * 60_000, 1),
        (hour, 2),
        (hour + ONE_HOUR_MS, 5),
        (hour + 2 * ONE_HOUR_MS + 5 * 60_000, 0),
        (hour - FIVE_MINUTES_MS, 7),
    ]
    assert aggregate(rows, "ONE_HOUR") == [(hour - ONE_HOUR_MS, 7), (hour, 3), (hour + ONE_HOUR_MS, 5)]


def test_aggregate_empty_and_zero() -> None:
    assert aggregate([], "FIVE_MINUTES") == []
    assert aggregate([(0, 0), (300_000, 0)], "ONE_HOUR") == []


def test_aggregate_aligns_unaligned_rows() -> None:
    assert aggregate([(301_000, 1), (599_999, 1)], "FIVE_MINUTES") == [(300_000, 2)]


def test_aggregate_refuses_more_than_max_points() -> None:
    rows = [(i * FIVE_MINUTES_MS, 1) for i in range(MAX_POINTS + 1)]
    assert len(aggregate(rows[:MAX_POINTS], "FIVE_MINUTES")) == MAX_POINTS
    with pytest.raises(ValueError):
        aggregate(rows, "FIVE_MINUTES")


@pytest.mark.parametrize(
    ("instant", "offset", "start", "end"),
    [
        (
            datetime(2023, 11, 17, 0, 0, tzinfo=UTC),
            0,
            datetime(2023, 11, 1, tzinfo=UTC),
            datetime(2023, 12, 1, tzinfo=UTC),
        ),
        (
            datetime(2023, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
            0,
            datetime(2023, 12, 1, tzinfo=UTC),
            datetime(2024, 1, 1, tzinfo=UTC),
        ),
        (
            datetime(2024, 1, 1, tzinfo=UTC),
            0,
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2024, 2, 1, tzinfo=UTC),
        ),
        (
            datetime(2024, 2, 29, 12, tzinfo=UTC),
            0,
            datetime(2024, 2, 1, tzinfo=UTC),
            datetime(2024, 3, 1, tzinfo=UTC),
        ),
        (
            datetime(1970, 1, 1, tzinfo=UTC),
            0,
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(1970, 2, 1, tzinfo=UTC),
        ),
    ],
)
def test_month_range_utc(instant: datetime, offset: int, start: datetime, end: datetime) -> None:
    assert month_range(ms(instant), offset) == (ms(start), ms(end))


def test_month_range_utc_plus_8_differs_at_the_boundary() -> None:
    cst = timezone(timedelta(hours=8))
    # 2023-10-31 20:00 UTC is already November in UTC+8.
    instant = ms(datetime(2023, 10, 31, 20, 0, tzinfo=UTC))
    assert month_range(instant) == (
        ms(datetime(2023, 10, 1, tzinfo=UTC)),
        ms(datetime(2023, 11, 1, tzinfo=UTC)),
    )
    assert month_range(instant, 480) == (
        ms(datetime(2023, 11, 1, tzinfo=cst)),
        ms(datetime(2023, 12, 1, tzinfo=cst)),
    )
    assert month_range(DOC_FIRST_BUCKET, 480)[0] == 1698768000000  # 2023-11-01 00:00 UTC+8


def test_month_range_negative_offset_and_december() -> None:
    west = timezone(timedelta(hours=-5))
    instant = ms(datetime(2024, 1, 1, 3, 0, tzinfo=UTC))  # still 2023-12-31 in UTC-5
    assert month_range(instant, -300) == (
        ms(datetime(2023, 12, 1, tzinfo=west)),
        ms(datetime(2024, 1, 1, tzinfo=west)),
    )


@given(st.integers(min_value=0, max_value=4_102_444_800_000), st.sampled_from([0, 480, -300, 345, 525, -570]))
def test_month_range_properties(instant: int, offset: int) -> None:
    start, end = month_range(instant, offset)
    assert start <= instant < end
    assert start % FIVE_MINUTES_MS == 0 and end % FIVE_MINUTES_MS == 0
    assert 28 * 24 * ONE_HOUR_MS <= end - start <= 31 * 24 * ONE_HOUR_MS
    assert month_range(end, offset)[0] == end  # months tile the time line
    assert month_range(start - 1, offset)[1] == start


@pytest.mark.parametrize("offset", [1440, -1440, 3, 481])
def test_month_range_rejects_bad_offsets(offset: int) -> None:
    with pytest.raises(ValueError):
        month_range(0, offset)


def test_month_range_out_of_range_query_time() -> None:
    with pytest.raises(StatsRangeError) as err:
        month_range(10**18)
    assert err.value.fields == ("query_time",)
