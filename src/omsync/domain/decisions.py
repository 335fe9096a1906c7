"""Whether to copy a key (object_overwrite_mode) and whether a copy is good (consistency_check).

Pure functions over :class:`ObjectFacts`, the few facts a HEAD of either side gives.

Last-modified times are compared at whole-second resolution (each floored): HTTP dates carry
seconds only, so a file-system source with sub-second times copied within the same second to
an S3 destination must not look newer than its copy.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from omsync.domain.model import ConsistencyCheck, OverwriteMode

__all__ = ["Action", "Decision", "ObjectFacts", "Verification", "VerifyMethod", "decide", "verify"]


@dataclass(frozen=True)
class ObjectFacts:
    """What is known about one stored object.

    ``size`` in bytes; ``last_modified`` in epoch seconds (fractions allowed); ``crc64`` the
    CRC-64/XZ (ECMA-182, as OBS/OSS/COS expose it) as an unsigned int, or ``None`` when the
    store does not expose one.
    """

    size: int
    last_modified: float
    crc64: int | None = None


class Action(enum.StrEnum):
    COPY = "copy"
    SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    """The overwrite decision for one key.

    ``reason`` codes: COPY → ``absent`` (no destination object), ``full_overwrite``,
    ``size_differs``, ``source_newer``, ``crc64_differs``; SKIP → ``exists`` (NO_OVERWRITE),
    ``not_modified`` (same size and destination not older), ``crc64_equal``. ``fallback`` is
    true when CRC64 mode had to compare size and last-modified because a CRC was missing;
    ``note`` then says which side lacked it.
    """

    action: Action
    reason: str
    fallback: bool = False
    note: str | None = None

    @property
    def copy(self) -> bool:
        return self.action is Action.COPY


def _seconds(value: float) -> int:
    return math.floor(value)


def _size_mtime(source: ObjectFacts, destination: ObjectFacts, fallback: bool, note: str | None) -> Decision:
    if source.size != destination.size:
        return Decision(Action.COPY, "size_differs", fallback, note)
    if _seconds(source.last_modified) > _seconds(destination.last_modified):
        return Decision(Action.COPY, "source_newer", fallback, note)
    return Decision(Action.SKIP, "not_modified", fallback, note)


def _missing_crc(source: ObjectFacts, destination: ObjectFacts) -> str | None:
    sides = [
        name for name, facts in (("source", source), ("destination", destination)) if facts.crc64 is None
    ]
    return " and ".join(sides) if sides else None


def decide(mode: OverwriteMode, source: ObjectFacts, destination: ObjectFacts | None) -> Decision:
    """Decide whether ``source`` is copied over ``destination`` (``None``: no such object).

    * no destination object → COPY ``absent``, whatever the mode;
    * FULL_OVERWRITE → COPY ``full_overwrite``;
    * NO_OVERWRITE → SKIP ``exists`` without comparing;
    * SIZE_LAST_MODIFIED (default) → COPY when sizes differ (``size_differs``) or the source
      was modified after the destination (``source_newer``), else SKIP ``not_modified``;
    * CRC64 → COPY ``size_differs`` when sizes differ; else, with both CRCs known, SKIP
      ``crc64_equal`` or COPY ``crc64_differs``; with either missing, the size/last-modified
      rule with ``fallback=True``.
    """
    if destination is None:
        return Decision(Action.COPY, "absent")
    if mode is OverwriteMode.FULL:
        return Decision(Action.COPY, "full_overwrite")
    if mode is OverwriteMode.NO_OVERWRITE:
        return Decision(Action.SKIP, "exists")
    if mode is OverwriteMode.SIZE_LAST_MODIFIED:
        return _size_mtime(source, destination, False, None)
    if mode is OverwriteMode.CRC64:
        missing = _missing_crc(source, destination)
        if missing is not None:
            note = f"CRC64 unknown on the {missing}; compared size and last-modified"
            return _size_mtime(source, destination, True, note)
        if source.size != destination.size:
            return Decision(Action.COPY, "size_differs")
        if source.crc64 == destination.crc64:
            return Decision(Action.SKIP, "crc64_equal")
        return Decision(Action.COPY, "crc64_differs")
    raise ValueError(f"unknown overwrite mode {mode!r}")


class VerifyMethod(enum.StrEnum):
    """How a copy was actually verified."""

    SIZE_LAST_MODIFIED = "size_last_modified"
    CRC64 = "crc64"
    NONE = "none"


@dataclass(frozen=True)
class Verification:
    """The result of checking a finished copy.

    ``reason`` (when not ``ok``): ``destination_missing``, ``size_mismatch``,
    ``destination_older``, ``crc64_mismatch``, ``unverifiable``. ``fallback`` is true when a
    CRC64 check was asked for but size/last-modified was used; ``note`` explains.
    """

    ok: bool
    method: VerifyMethod
    reason: str | None = None
    fallback: bool = False
    note: str | None = None


def verify(
    check: ConsistencyCheck,
    source: ObjectFacts,
    destination: ObjectFacts | None,
    streamed_crc64: int | None = None,
    streamed_size: int | None = None,
    *,
    clock_skew_seconds: float = 0.0,
) -> Verification:
    """Check a copy of ``source`` against ``destination`` as read back after the copy.

    ``streamed_crc64``/``streamed_size`` describe the bytes that went through omsync when the
    copy was streamed (``None`` for a server-side copy or when not computed).

    Sizes are always checked: the destination's and any streamed size must equal the
    source's (``size_mismatch``), whatever ``check`` says. Then:

    * ``size_last_modified``, and ``transmission`` (its source size is always known here, and
      the spec then falls back to size/mtime): the destination must not be older than the
      source, at whole seconds, allowing ``clock_skew_seconds`` of disagreement between the
      two stores' clocks (``destination_older``).
    * ``crc64``: every available pair among source CRC, destination CRC and streamed CRC must
      agree (``crc64_mismatch``); method ``crc64``. If no pair exists but one CRC is known,
      size/last-modified is used with ``fallback``. If no CRC is known at all the copy is
      ``unverifiable`` (not ok): nothing was compared, so it must not pass silently.
    """
    if destination is None:
        return Verification(False, VerifyMethod.NONE, "destination_missing")
    if destination.size != source.size:
        return Verification(
            False,
            VerifyMethod.NONE,
            "size_mismatch",
            note=f"source {source.size} B, destination {destination.size} B",
        )
    if streamed_size is not None and streamed_size != source.size:
        return Verification(
            False,
            VerifyMethod.NONE,
            "size_mismatch",
            note=f"source {source.size} B, transferred {streamed_size} B",
        )

    if check is ConsistencyCheck.CRC64:
        known = {
            name: value
            for name, value in (
                ("source", source.crc64),
                ("destination", destination.crc64),
                ("transfer", streamed_crc64),
            )
            if value is not None
        }
        if len(known) >= 2:
            if len(set(known.values())) == 1:
                return Verification(True, VerifyMethod.CRC64, note=f"compared {', '.join(known)}")
            shown = ", ".join(f"{name} {value:016x}" for name, value in known.items())
            return Verification(False, VerifyMethod.CRC64, "crc64_mismatch", note=shown)
        if not known:
            return Verification(
                False,
                VerifyMethod.NONE,
                "unverifiable",
                note="CRC64 asked for, but neither store exposes one and none was computed in transfer",
            )
        only = next(iter(known))
        note = f"only the {only} CRC64 is known; compared size and last-modified"
        return _verify_mtime(source, destination, clock_skew_seconds, fallback=True, note=note)

    if check in (ConsistencyCheck.SIZE_LAST_MODIFIED, ConsistencyCheck.TRANSMISSION):
        return _verify_mtime(source, destination, clock_skew_seconds, fallback=False, note=None)
    raise ValueError(f"unknown consistency check {check!r}")


def _verify_mtime(
    source: ObjectFacts, destination: ObjectFacts, skew: float, *, fallback: bool, note: str | None
) -> Verification:
    if _seconds(destination.last_modified) + skew < _seconds(source.last_modified):
        return Verification(False, VerifyMethod.SIZE_LAST_MODIFIED, "destination_older", fallback, note)
    return Verification(True, VerifyMethod.SIZE_LAST_MODIFIED, None, fallback, note)
