"""What to do after a failed copy attempt: the retry policy, applied in one place.

A store failure is classified by its kind (never by backend details) into either a final
FAILURE outcome with a stable reason, or another attempt after an exponential backoff with full
jitter that honours a server's Retry-After hint. Attempts are counted by the ledger
(``Claim.attempts`` = attempts already made), so the policy is a pure function of the error and
that count.
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass

from omsync.config import Settings
from omsync.domain.model import Outcome, OutcomeKind
from omsync.stores.base import ErrorKind, StoreError

SOURCE_NOT_FOUND = "source_not_found"
DESTINATION_NOT_FOUND = "destination_not_found"
SOURCE_BUCKET_NOT_FOUND = "source_bucket_not_found"
DESTINATION_BUCKET_NOT_FOUND = "destination_bucket_not_found"
ACCESS_DENIED = "access_denied"
RETRIES_EXHAUSTED = "retries_exhausted"
UNSUPPORTED = "unsupported"
INVALID_REQUEST = "invalid_request"
CONFLICT = "conflict"
INTERNAL_ERROR = "internal_error"

_REASON_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CAMEL_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,50}$")
_MESSAGE_LIMIT = 2000


class Side(enum.StrEnum):
    """Which end of a copy a store call was made against."""

    SOURCE = "source"
    DESTINATION = "destination"


class CopyError(StoreError):
    """A :class:`StoreError` tagged with the side of the copy it came from.

    The copier raises it so that, e.g., NOT_FOUND on the source (the object is gone) is told
    apart from NOT_FOUND on the destination (its bucket is missing).
    """

    def __init__(self, side: Side, cause: StoreError) -> None:
        super().__init__(
            cause.kind, cause.message, retryable=cause.retryable, retry_after=cause.retry_after,
            code=cause.code,
        )
        self.side = side
        self.__cause__ = cause


@dataclass(frozen=True)
class Retry:
    """Try again after ``delay`` seconds; ``reason``/``message`` describe the last error."""

    delay: float
    reason: str
    message: str


@dataclass(frozen=True)
class Final:
    """No more attempts: record ``outcome`` (always a FAILURE)."""

    outcome: Outcome


Verdict = Retry | Final


def describe(error: StoreError) -> str:
    """One line for reports and logs: the side, the backend code and the message (no secrets:
    store messages never carry credentials)."""
    side = f"{error.side.value}: " if isinstance(error, CopyError) else ""
    code = f"[{error.code}] " if error.code and error.code != error.kind.value else ""
    text = f"{side}{code}{error.message}"
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def final_reason(error: StoreError) -> str | None:
    """The FAILURE reason for an error that must not be retried, or None if it may be retried.

    NOT_FOUND on the source → ``source_not_found`` (on the destination: ``destination_not_found``),
    or ``source_bucket_not_found`` / ``destination_bucket_not_found`` when the bucket itself is
    missing (code ``NoSuchBucket``);
    PERMISSION → ``access_denied``; UNSUPPORTED/INVALID/CONFLICT → the error's own snake_case
    code when it set one (e.g. ``unsupported_key``), else ``unsupported`` / ``invalid_request``
    / ``conflict``. THROTTLED, TRANSIENT and CORRUPT (and anything flagged ``retryable``) → None.
    """
    kind = error.kind
    if kind is ErrorKind.NOT_FOUND:
        destination = isinstance(error, CopyError) and error.side is Side.DESTINATION
        if error.code == "NoSuchBucket":
            return DESTINATION_BUCKET_NOT_FOUND if destination else SOURCE_BUCKET_NOT_FOUND
        return DESTINATION_NOT_FOUND if destination else SOURCE_NOT_FOUND
    if kind is ErrorKind.PERMISSION:
        return ACCESS_DENIED
    if error.retryable:
        return None
    own = _reason_code(error)
    if own is not None and own != kind.value:
        return own
    return {ErrorKind.UNSUPPORTED: UNSUPPORTED, ErrorKind.INVALID: INVALID_REQUEST}.get(kind, CONFLICT)


def _reason_code(error: StoreError) -> str | None:
    """The error's code as a snake_case reason (``UnsupportedKey`` → ``unsupported_key``), or
    None when it has no usable code."""
    code = error.code or ""
    if _REASON_CODE.match(code):
        return code
    if _CAMEL_CODE.match(code):
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", code).lower()
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, at most ``max_attempts`` attempts per key.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is uniform in
    ``[0, min(cap, base * 2**(n-1))]``; a server's Retry-After raises it to at least that hint
    (itself capped at ``cap`` so a hostile header cannot park a key for days).
    """

    max_attempts: int = 5
    base: float = 1.0
    cap: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base <= 0 or self.cap <= 0:
            raise ValueError("max_attempts >= 1, base > 0 and cap > 0 are required")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.retry_base_seconds, settings.retry_max_seconds)

    def delay(self, failed_attempts: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failed_attempts`` (>= 1) failed attempts."""
        exponent = max(0, failed_attempts - 1)
        ceiling = self.cap if exponent >= 64 else min(self.cap, self.base * 2.0**exponent)
        value = (rng or random).uniform(0.0, ceiling)
        if retry_after is not None and retry_after > 0:
            value = max(value, min(retry_after, self.cap))
        return value

    def decide(self, error: StoreError, attempts_before: int, rng: random.Random | None = None) -> Verdict:
        """What to do after ``error`` ended the attempt that followed ``attempts_before`` others.

        Returns :class:`Final` with a FAILURE outcome (non-retryable error, or the last allowed
        attempt failed → ``retries_exhausted`` carrying the last error's message), else
        :class:`Retry` with the backoff delay.
        """
        message = describe(error)
        reason = final_reason(error)
        if reason is not None:
            return Final(Outcome(OutcomeKind.FAILURE, reason=reason, message=message))
        failed = attempts_before + 1
        if failed >= self.max_attempts:
            return Final(Outcome(
                OutcomeKind.FAILURE, reason=RETRIES_EXHAUSTED,
                message=f"{failed} attempts; last: {message}",
            ))
        reason = _reason_code(error) or error.kind.value
        return Retry(self.delay(failed, error.retry_after, rng), reason, message)

    def decide_internal(self, exc: BaseException, attempts_before: int,
                        rng: random.Random | None = None) -> Verdict:
        """Same as :meth:`decide` for an unexpected exception (a defect, not a store failure):
        retried with backoff as ``internal_error``, then FAILURE ``retries_exhausted``."""
        message = f"{type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT]
        failed = attempts_before + 1
        if failed >= self.max_attempts:
            return Final(Outcome(
                OutcomeKind.FAILURE, reason=RETRIES_EXHAUSTED,
                message=f"{failed} attempts; last: {INTERNAL_ERROR}: {message}",
            ))
        return Retry(self.delay(failed, None, rng), INTERNAL_ERROR, message)
