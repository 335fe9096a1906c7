"""What every notification format is turned into: records of created or deleted keys, and
counted reasons for what was ignored.

Pure: no I/O. Each format module decodes its own key encoding (see :func:`form_key`,
:func:`percent_key`, :func:`plain_key`); keys are never Unicode-normalised.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from omsync.domain.keys import MAX_KEY_BYTES, KeyDecodeError, decode_event_key

__all__ = [
    "MAX_RECORDS",
    "SEQUENCER_WIDTH",
    "BadRecord",
    "Envelope",
    "EventKind",
    "Ignore",
    "Parsed",
    "Record",
    "form_key",
    "normalise_sequencer",
    "percent_key",
    "plain_key",
]

MAX_RECORDS = 10_000
"""Most records one notification body may carry; more are ignored as ``too_many_records``."""

SEQUENCER_WIDTH = 64
"""Sequencers are compared as upper-case hex left-padded with zeros to this many digits."""


class EventKind(enum.StrEnum):
    CREATED = "created"
    DELETED = "deleted"


class Ignore(enum.StrEnum):
    """Stable reasons a record (or a whole body) was not turned into work."""

    TEST_EVENT = "test_event"
    OTHER_BUCKET = "other_bucket"
    UNSUPPORTED_EVENT = "unsupported_event"
    BAD_KEY = "bad_key"
    MALFORMED = "malformed_record"
    STALE = "stale"  # an older (or the same) sequencer than one already seen for the key
    DELETES_OFF = "delete_propagation_off"
    TOO_MANY = "too_many_records"
    SUBSCRIPTION = "subscription_message"


class BadRecord(ValueError):
    """A record that cannot be read; ``reason`` is an :class:`Ignore` value."""

    def __init__(self, reason: Ignore, detail: str = "") -> None:
        super().__init__(detail or reason.value)
        self.reason = reason


@dataclass(frozen=True)
class Record:
    """One object change. ``key`` is the decoded object key; ``sent`` the key as the
    notification carried it when that differs (kept for the failed object list);
    ``sequencer`` is normalised (see :func:`normalise_sequencer`) or ``None``."""

    bucket: str
    key: str
    kind: EventKind
    sequencer: str | None = None
    time: str | None = None
    sent: str | None = None


@dataclass(frozen=True)
class Envelope:
    """An SNS (or SMN) message wrapping another notification, with what its signature covers.

    ``fields`` are the envelope's own fields (strings), ``type`` one of ``Notification``,
    ``SubscriptionConfirmation``, ``UnsubscribeConfirmation``."""

    service: str  # "sns" | "smn"
    type: str
    fields: dict[str, str]

    @property
    def message(self) -> str:
        return self.fields.get("Message", "")


@dataclass
class Parsed:
    """The result of reading one body: ``records`` to act on, ``ignored`` reasons with counts,
    ``format`` detected, and for envelopes or handshakes what the caller must do first."""

    format: str
    records: list[Record] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    envelope: Envelope | None = None
    validation_code: str | None = None  # Azure Event Grid subscription validation

    def ignore(self, reason: Ignore, count: int = 1) -> None:
        self.ignored[reason.value] += count

    def merge(self, other: Parsed) -> None:
        self.records.extend(other.records)
        self.ignored.update(other.ignored)


def _check_plain(key: str) -> str:
    try:
        data = key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRecord(Ignore.BAD_KEY, "key contains a lone surrogate") from None
    if not data or len(data) > MAX_KEY_BYTES or "\x00" in key:
        raise BadRecord(Ignore.BAD_KEY, "key is empty, too long or contains NUL")
    return key


def form_key(raw: Any) -> tuple[str, str | None]:
    """A form-encoded key (S3, MinIO, OBS): ``+`` is a space, then ``%XX`` bytes, UTF-8.
    Returns ``(key, sent)`` with ``sent`` None when the key is its own encoding."""
    if not isinstance(raw, str) or not raw:
        raise BadRecord(Ignore.MALFORMED, "object key missing")
    try:
        key = decode_event_key(raw, plus_means_space=True)
    except KeyDecodeError as exc:
        raise BadRecord(Ignore.BAD_KEY, str(exc)) from None
    return key, (raw if raw != key else None)


def percent_key(raw: Any) -> tuple[str, str | None]:
    """A percent-encoded key or URL path (RFC 3986: ``+`` stays a plus)."""
    if not isinstance(raw, str) or not raw:
        raise BadRecord(Ignore.MALFORMED, "object key missing")
    try:
        key = decode_event_key(raw, plus_means_space=False)
    except KeyDecodeError as exc:
        raise BadRecord(Ignore.BAD_KEY, str(exc)) from None
    return key, (raw if raw != key else None)


def plain_key(raw: Any) -> tuple[str, str | None]:
    """A key carried as it is (no encoding)."""
    if not isinstance(raw, str) or not raw:
        raise BadRecord(Ignore.MALFORMED, "object key missing")
    return _check_plain(raw), None


_HEX = frozenset("0123456789ABCDEF")


def normalise_sequencer(value: Any) -> str | None:
    """A hex sequencer as fixed-width upper-case hex (so that plain string comparison orders
    it), or ``None`` when absent or not hex (then the record is not ordered)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().upper()
    if not text or len(text) > SEQUENCER_WIDTH or not _HEX.issuperset(text):
        return None
    return text.rjust(SEQUENCER_WIDTH, "0")


def text(value: Any) -> str | None:
    """``value`` when it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}
