"""The retry policy: classification of store errors, backoff with jitter, Retry-After."""

from __future__ import annotations

import random

import pytest

from omsync.domain.model import OutcomeKind
from omsync.engine.retry import CopyError, Final, Retry, RetryPolicy, Side, describe
from omsync.stores.base import ErrorKind, StoreError


def err(kind: ErrorKind, code: str | None = None, **kw: object) -> StoreError:
    return StoreError(kind, f"{kind.value} happened", code=code, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CopyError(Side.SOURCE, err(ErrorKind.NOT_FOUND, "NoSuchKey")), "source_not_found"),
        (CopyError(Side.DESTINATION, err(ErrorKind.NOT_FOUND, "NoSuchBucket")), "destination_bucket_not_found"),
        (CopyError(Side.SOURCE, err(ErrorKind.NOT_FOUND, "NoSuchBucket")), "source_bucket_not_found"),
        (CopyError(Side.DESTINATION, err(ErrorKind.NOT_FOUND, "404")), "destination_not_found"),
        (err(ErrorKind.PERMISSION, "AccessDenied"), "access_denied"),
        (CopyError(Side.DESTINATION, err(ErrorKind.PERMISSION)), "access_denied"),
        (err(ErrorKind.UNSUPPORTED, "UnsupportedKey"), "unsupported_key"),
        (err(ErrorKind.UNSUPPORTED), "unsupported"),
        (err(ErrorKind.INVALID, "InvalidStorageClass"), "invalid_storage_class"),
        (err(ErrorKind.INVALID), "invalid_request"),
        (err(ErrorKind.INVALID, "invalid_endpoint"), "invalid_endpoint"),
        (err(ErrorKind.CONFLICT, "PreconditionFailed"), "precondition_failed"),
    ],
)
def test_final_errors_fail_at_once(error: StoreError, reason: str) -> None:
    verdict = RetryPolicy(max_attempts=5).decide(error, 0)
    assert isinstance(verdict, Final)
    assert verdict.outcome.kind is OutcomeKind.FAILURE
    assert verdict.outcome.reason == reason
    assert verdict.outcome.message and error.message in verdict.outcome.message


@pytest.mark.parametrize("kind", [ErrorKind.THROTTLED, ErrorKind.TRANSIENT, ErrorKind.CORRUPT])
def test_retryable_errors_are_retried_until_the_attempts_run_out(kind: ErrorKind) -> None:
    policy = RetryPolicy(max_attempts=3, base=1.0, cap=10.0)
    error = CopyError(Side.SOURCE, err(kind, "SlowDown"))
    for before in (0, 1):
        verdict = policy.decide(error, before)
        assert isinstance(verdict, Retry)
        assert verdict.reason == "slow_down"
        assert "source: [SlowDown]" in verdict.message
    verdict = policy.decide(error, 2)
    assert isinstance(verdict, Final)
    assert verdict.outcome.reason == "retries_exhausted"
    assert verdict.outcome.message == f"3 attempts; last: source: [SlowDown] {kind.value} happened"


def test_a_single_attempt_policy_never_retries() -> None:
    verdict = RetryPolicy(max_attempts=1).decide(err(ErrorKind.TRANSIENT), 0)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "retries_exhausted"


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_attempts=50, base=0.5, cap=8.0)
    rng = random.Random(7)
    for failed, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (40, 8.0), (200, 8.0)):
        samples = [policy.delay(failed, rng=rng) for _ in range(400)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.9  # full jitter spreads over the whole range
        assert min(samples) < ceiling * 0.1


def test_retry_after_is_honoured_but_capped() -> None:
    policy = RetryPolicy(max_attempts=5, base=0.01, cap=30.0)
    verdict = policy.decide(err(ErrorKind.THROTTLED, "SlowDown", retry_after=12.0), 0, random.Random(1))
    assert isinstance(verdict, Retry) and verdict.delay >= 12.0
    verdict = policy.decide(err(ErrorKind.THROTTLED, retry_after=3600.0), 0, random.Random(1))
    assert isinstance(verdict, Retry) and verdict.delay == 30.0


def test_unexpected_exceptions_are_retried_as_internal_error_then_fail() -> None:
    policy = RetryPolicy(max_attempts=2, base=0.1, cap=1.0)
    verdict = policy.decide_internal(RuntimeError("boom"), 0)
    assert isinstance(verdict, Retry) and verdict.reason == "internal_error"
    assert verdict.message == "RuntimeError: boom"
    verdict = policy.decide_internal(RuntimeError("boom"), 1)
    assert isinstance(verdict, Final) and verdict.outcome.reason == "retries_exhausted"
    assert verdict.outcome.message and "internal_error: RuntimeError: boom" in verdict.outcome.message


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base=0)


def test_long_messages_are_shortened() -> None:
    assert describe(StoreError(ErrorKind.TRANSIENT, "short")) == "short"
    text = describe(StoreError(ErrorKind.TRANSIENT, "y" * 10_000))
    assert len(text) == 2000 and text.endswith("…")
