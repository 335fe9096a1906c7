"""Throttling of failed dashboard logins, per client address and per account.

After ``max_failures`` failed logins from one address, or against one account (the operator,
or one access key), further attempts are refused without checking the credentials for
``lockout_seconds``; each further failure doubles the lock-out, up to an hour. A successful
login clears the account's and the address's record. State is per process: several API
processes each allow the number of failures, which still bounds guessing to a few per minute.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_LOCKOUT_SECONDS = 3600.0
_MAX_TRACKED = 100_000  # records kept; the oldest are forgotten beyond


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Counts failed logins by key (``addr:<ip>``, ``acct:<id>``) and says when to refuse."""

    def __init__(self, max_failures: int, lockout_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, *keys: str) -> float:
        """Seconds until any of ``keys`` may try again (0: now)."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            record = self._records.get(key)
            if record is not None and record.locked_until > now:
                wait = max(wait, record.locked_until - now)
        return wait

    def failed(self, *keys: str) -> float:
        """Record a failure for every key; returns the longest lock-out now in force."""
        now = self._clock()
        for key in keys:
            record = self._records.pop(key, None) or _Record()
            if record.last and now - record.last > MAX_LOCKOUT_SECONDS:
                record = _Record()  # an old streak is forgotten
            record.failures += 1
            record.last = now
            excess = record.failures - self.max_failures
            if excess >= 0:
                record.locked_until = now + min(MAX_LOCKOUT_SECONDS, self.lockout_seconds * 2 ** min(excess, 32))
            self._records[key] = record
        while len(self._records) > _MAX_TRACKED:
            self._records.popitem(last=False)
        return self.retry_after(*keys)

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of ``keys``."""
        for key in keys:
            self._records.pop(key, None)


__all__ = ["MAX_LOCKOUT_SECONDS", "LoginThrottle"]
