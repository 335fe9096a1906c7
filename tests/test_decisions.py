"""Overwrite decisions and copy verification."""

from __future__ import annotations

import pytest

from omsync.domain.decisions import (
    Action,
    Decision,
    ObjectFacts,
    Verification,
    VerifyMethod,
    decide,
    verify,
)
from omsync.domain.model import ConsistencyCheck, OverwriteMode

T = 1_700_000_000.0
SRC = ObjectFacts(size=100, last_modified=T, crc64=0xDEADBEEF)

ALL_MODES = list(OverwriteMode)


# --- decide -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_absent_destination_is_copied_in_every_mode(mode: OverwriteMode) -> None:
    assert decide(mode, SRC, None) == Decision(Action.COPY, "absent")


@pytest.mark.parametrize(
    "dst",
    [
        ObjectFacts(100, T, 0xDEADBEEF),  # identical
        ObjectFacts(5, T - 100, None),  # smaller and older
        ObjectFacts(100, T + 100, 0xDEADBEEF),  # newer
    ],
)
def test_full_overwrite_always_copies(dst: ObjectFacts) -> None:
    decision = decide(OverwriteMode.FULL, SRC, dst)
    assert decision == Decision(Action.COPY, "full_overwrite")
    assert decision.copy


@pytest.mark.parametrize("dst", [ObjectFacts(100, T), ObjectFacts(1, T - 1000, 1), ObjectFacts(0, 0)])
def test_no_overwrite_skips_any_existing_destination(dst: ObjectFacts) -> None:
    decision = decide(OverwriteMode.NO_OVERWRITE, SRC, dst)
    assert decision == Decision(Action.SKIP, "exists")
    assert not decision.copy


@pytest.mark.parametrize(
    ("dst", "action", "reason"),
    [
        (ObjectFacts(100, T), Action.SKIP, "not_modified"),
        (ObjectFacts(100, T + 3600), Action.SKIP, "not_modified"),
        (ObjectFacts(100, T - 1), Action.COPY, "source_newer"),
        (ObjectFacts(101, T + 3600), Action.COPY, "size_differs"),
        (ObjectFacts(99, T), Action.COPY, "size_differs"),
        (ObjectFacts(100, T + 0.5), Action.SKIP, "not_modified"),
    ],
)
def test_size_last_modified_rule(dst: ObjectFacts, action: Action, reason: str) -> None:
    decision = decide(OverwriteMode.SIZE_LAST_MODIFIED, SRC, dst)
    assert (decision.action, decision.reason, decision.fallback) == (action, reason, False)


def test_size_last_modified_compares_whole_seconds() -> None:
    src = ObjectFacts(100, T + 0.7)
    assert decide(OverwriteMode.SIZE_LAST_MODIFIED, src, ObjectFacts(100, T)).reason == "not_modified"
    assert decide(OverwriteMode.SIZE_LAST_MODIFIED, src, ObjectFacts(100, T - 0.3)).reason == "source_newer"


def test_size_last_modified_ignores_crc() -> None:
    decision = decide(OverwriteMode.SIZE_LAST_MODIFIED, SRC, ObjectFacts(100, T, crc64=1))
    assert decision.reason == "not_modified"


@pytest.mark.parametrize(
    ("dst", "action", "reason"),
    [
        (ObjectFacts(100, T - 1000, 0xDEADBEEF), Action.SKIP, "crc64_equal"),  # older but same content
        (ObjectFacts(100, T + 1000, 0xBEEF), Action.COPY, "crc64_differs"),  # newer but other content
        (ObjectFacts(7, T, 0xDEADBEEF), Action.COPY, "size_differs"),
    ],
)
def test_crc64_rule_with_both_crcs(dst: ObjectFacts, action: Action, reason: str) -> None:
    decision = decide(OverwriteMode.CRC64, SRC, dst)
    assert decision == Decision(action, reason)


@pytest.mark.parametrize(
    ("src_crc", "dst_crc", "missing"),
    [(None, 1, "source"), (1, None, "destination"), (None, None, "source and destination")],
)
@pytest.mark.parametrize(
    ("dst_size", "dst_time", "action", "reason"),
    [
        (100, T, Action.SKIP, "not_modified"),
        (100, T - 10, Action.COPY, "source_newer"),
        (50, T + 10, Action.COPY, "size_differs"),
    ],
)
def test_crc64_falls_back_to_size_last_modified(
    src_crc: int | None,
    dst_crc: int | None,
    missing: str,
    dst_size: int,
    dst_time: float,
    action: Action,
    reason: str,
) -> None:
    decision = decide(
        OverwriteMode.CRC64, ObjectFacts(100, T, src_crc), ObjectFacts(dst_size, dst_time, dst_crc)
    )
    assert (decision.action, decision.reason, decision.fallback) == (action, reason, True)
    assert decision.note is not None and f"unknown on the {missing};" in decision.note


def test_crc_zero_is_a_value_not_missing() -> None:
    decision = decide(OverwriteMode.CRC64, ObjectFacts(0, T, 0), ObjectFacts(0, T - 5, 0))
    assert decision == Decision(Action.SKIP, "crc64_equal")


# --- verify -------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", list(ConsistencyCheck))
def test_missing_destination_fails_every_check(check: ConsistencyCheck) -> None:
    assert verify(check, SRC, None) == Verification(False, VerifyMethod.NONE, "destination_missing")


@pytest.mark.parametrize("check", list(ConsistencyCheck))
def test_size_mismatch_fails_every_check(check: ConsistencyCheck) -> None:
    result = verify(check, SRC, ObjectFacts(99, T + 1, 0xDEADBEEF), 0xDEADBEEF)
    assert (result.ok, result.reason) == (False, "size_mismatch")


@pytest.mark.parametrize("check", list(ConsistencyCheck))
def test_streamed_size_mismatch_fails_every_check(check: ConsistencyCheck) -> None:
    result = verify(check, SRC, ObjectFacts(100, T + 1, 0xDEADBEEF), 0xDEADBEEF, streamed_size=64)
    assert (result.ok, result.reason) == (False, "size_mismatch")
    assert result.note is not None and "transferred 64" in result.note


@pytest.mark.parametrize("check", [ConsistencyCheck.SIZE_LAST_MODIFIED, ConsistencyCheck.TRANSMISSION])
@pytest.mark.parametrize(
    ("dst_time", "ok"),
    [(T + 5, True), (T, True), (T + 0.9, True), (T - 0.5, False), (T - 1, False)],
)
def test_size_last_modified_verification(check: ConsistencyCheck, dst_time: float, ok: bool) -> None:
    result = verify(check, SRC, ObjectFacts(100, dst_time), streamed_size=100)
    assert result.ok is ok
    assert result.method is VerifyMethod.SIZE_LAST_MODIFIED
    assert result.reason == (None if ok else "destination_older")
    assert not result.fallback


def test_clock_skew_allowance() -> None:
    dst = ObjectFacts(100, T - 3)
    assert not verify(ConsistencyCheck.SIZE_LAST_MODIFIED, SRC, dst).ok
    assert not verify(ConsistencyCheck.SIZE_LAST_MODIFIED, SRC, dst, clock_skew_seconds=2).ok
    assert verify(ConsistencyCheck.SIZE_LAST_MODIFIED, SRC, dst, clock_skew_seconds=3).ok


@pytest.mark.parametrize(
    ("src_crc", "dst_crc", "streamed", "compared"),
    [
        (5, 5, None, "source, destination"),
        (5, None, 5, "source, transfer"),
        (None, 5, 5, "destination, transfer"),
        (5, 5, 5, "source, destination, transfer"),
    ],
)
def test_crc64_verification_passes_when_all_known_agree(
    src_crc: int | None, dst_crc: int | None, streamed: int | None, compared: str
) -> None:
    # The destination being older does not matter when content was compared.
    result = verify(
        ConsistencyCheck.CRC64, ObjectFacts(100, T, src_crc), ObjectFacts(100, T - 50, dst_crc), streamed
    )
    assert result == Verification(True, VerifyMethod.CRC64, note=f"compared {compared}")


@pytest.mark.parametrize(
    ("src_crc", "dst_crc", "streamed"),
    [(5, 6, None), (5, None, 6), (None, 5, 6), (5, 5, 6), (6, 5, 5), (5, 6, 5)],
)
def test_crc64_verification_fails_on_any_disagreement(
    src_crc: int | None, dst_crc: int | None, streamed: int | None
) -> None:
    result = verify(
        ConsistencyCheck.CRC64, ObjectFacts(100, T, src_crc), ObjectFacts(100, T + 1, dst_crc), streamed
    )
    assert (result.ok, result.method, result.reason) == (False, VerifyMethod.CRC64, "crc64_mismatch")


@pytest.mark.parametrize(
    ("src_crc", "dst_crc", "streamed", "only"),
    [(5, None, None, "source"), (None, 5, None, "destination"), (None, None, 5, "transfer")],
)
@pytest.mark.parametrize(("dst_time", "ok"), [(T + 1, True), (T - 1, False)])
def test_crc64_verification_with_one_crc_falls_back(
    src_crc: int | None, dst_crc: int | None, streamed: int | None, only: str, dst_time: float, ok: bool
) -> None:
    result = verify(
        ConsistencyCheck.CRC64, ObjectFacts(100, T, src_crc), ObjectFacts(100, dst_time, dst_crc), streamed
    )
    assert (result.ok, result.method, result.fallback) == (ok, VerifyMethod.SIZE_LAST_MODIFIED, True)
    assert result.reason == (None if ok else "destination_older")
    assert result.note is not None and f"only the {only} CRC64" in result.note


def test_crc64_verification_without_any_crc_is_unverifiable() -> None:
    result = verify(ConsistencyCheck.CRC64, ObjectFacts(100, T), ObjectFacts(100, T + 1), None, 100)
    assert result.ok is False
    assert result.reason == "unverifiable"
    assert result.method is VerifyMethod.NONE
