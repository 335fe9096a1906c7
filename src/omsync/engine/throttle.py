"""Per-task rate limits of one worker process: token buckets for objects/s and bytes/s.

Each bucket holds at most ``BURST_SECONDS`` worth of its rate (at least one unit), so a limit
is smooth rather than bursty: 10 objects/s starts about one key every 100 ms. A request larger
than the bucket (a 1 MiB chunk under a 100 KiB/s limit) is let through once the bucket is full
and leaves it in debt that later requests wait out, so the long-run rate holds for any request
size. Waiters are served first come, first served, and re-read the rate at least every
``MAX_SLEEP_SECONDS``: a limit changed or removed while running applies within that time.

The limits are per process: N worker processes may together move a task at up to N times its
rates (its ``max_concurrency`` is global and enforced by the ledger instead).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping

from omsync.domain.model import TaskLimits

BURST_SECONDS = 0.1
MAX_SLEEP_SECONDS = 0.1


class TokenBucket:
    """A token bucket of ``rate`` units per second; ``None`` is unlimited (nothing waits).

    ``minimum_burst`` is the smallest capacity (1 for objects, so that a key can always start).
    """

    def __init__(self, rate: float | None = None, *, minimum_burst: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._minimum_burst = minimum_burst
        self._lock = asyncio.Lock()
        self._tokens = 0.0
        self._stamp = clock()
        self.rate: float | None = None
        self.waiting = 0  # callers inside take(), waiting or about to be served
        self.set_rate(rate)

    @property
    def capacity(self) -> float:
        if self.rate is None:
            return math.inf
        return max(self._minimum_burst, self.rate * BURST_SECONDS)

    def _refill(self) -> None:
        now = self._clock()
        if self.rate is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def set_rate(self, rate: float | None) -> None:
        """Change the rate; a bucket that was unlimited starts full, a debt carries over."""
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive finite number or None, not {rate!r}")
        if rate == self.rate:
            return
        self._refill()
        was_unlimited = self.rate is None
        self.rate = rate
        if rate is None:
            self._tokens = 0.0
        elif was_unlimited:
            self._tokens = self.capacity
        else:
            self._tokens = min(self._tokens, self.capacity)

    def available(self) -> float:
        """Tokens in the bucket now (negative while in debt; infinite when unlimited)."""
        if self.rate is None:
            return math.inf
        self._refill()
        return self._tokens

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` units may pass, then take them. Cancellation takes nothing."""
        if self.rate is None or amount <= 0:
            return
        self.waiting += 1
        try:
            async with self._lock:
                while True:
                    rate = self.rate
                    if rate is None:
                        return
                    self._refill()
                    need = min(amount, self.capacity)
                    if self._tokens >= need:
                        self._tokens -= amount
                        return
                    await asyncio.sleep(min(MAX_SLEEP_SECONDS, (need - self._tokens) / rate))
        finally:
            self.waiting -= 1


class TaskThrottle:
    """The objects/s and bytes/s buckets of one task in this process."""

    def __init__(self, limits: TaskLimits | None = None) -> None:
        self.objects = TokenBucket()
        self.bytes = TokenBucket()
        if limits is not None:
            self.apply(limits)

    def apply(self, limits: TaskLimits) -> None:
        self.objects.set_rate(limits.max_objects_per_second)
        self.bytes.set_rate(float(limits.max_bytes_per_second) if limits.max_bytes_per_second else None)

    @property
    def limited(self) -> bool:
        return self.objects.rate is not None or self.bytes.rate is not None

    async def admit(self) -> None:
        """Wait for the objects/s limit to let one more key start."""
        await self.objects.take(1)

    async def take(self, amount: int) -> None:
        """Wait for the bytes/s limit to let ``amount`` more bytes move (the copier's bandwidth)."""
        await self.bytes.take(amount)

    def chunk_size(self, preferred: int) -> int:
        """Reads of at most about a second of the bytes/s limit, so that a paced stream is read
        at least every second or so."""
        if self.bytes.rate is None:
            return preferred
        return max(1, min(preferred, int(self.bytes.rate)))

    def claim_cap(self, horizon: float) -> int | None:
        """How many more keys of the task are worth claiming now (None: no bound here).

        Keys claimed beyond what the buckets let start soon would only sit in copy slots that
        other tasks could use: objects/s allows what the bucket holds plus what it gains within
        ``horizon`` seconds, less the keys already waiting; bytes/s allows none while the
        task's bandwidth is used up (someone waits for it, or the bucket is in debt).
        """
        caps: list[int] = []
        if self.objects.rate is not None:
            ready = self.objects.available() + self.objects.rate * horizon - self.objects.waiting
            caps.append(max(0, math.floor(ready)))
        if self.bytes.rate is not None and (self.bytes.waiting > 0 or self.bytes.available() < 0):
            caps.append(0)
        return min(caps) if caps else None


class Throttles:
    """The throttles of every rate-limited task in this process, kept in step with the ledger's
    limits by :meth:`update`."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskThrottle] = {}

    def update(self, limits: Mapping[str, TaskLimits]) -> None:
        """Apply the current limits of every task (a task not named is unlimited)."""
        for task_id, throttle in list(self._tasks.items()):
            if task_id not in limits:
                throttle.apply(TaskLimits())  # releases anyone waiting
                del self._tasks[task_id]
        for task_id, task_limits in limits.items():
            current = self._tasks.setdefault(task_id, TaskThrottle())
            current.apply(task_limits)
            if not current.limited:
                del self._tasks[task_id]

    def get(self, task_id: str) -> TaskThrottle | None:
        """The task's throttle, or None when it has no rate limit in this process."""
        return self._tasks.get(task_id)

    def caps(self, horizon: float) -> dict[str, int]:
        """Per-task claim caps (see :meth:`TaskThrottle.claim_cap`) for ``Ledger.claim``."""
        found: dict[str, int] = {}
        for task_id, throttle in self._tasks.items():
            cap = throttle.claim_cap(horizon)
            if cap is not None:
                found[task_id] = cap
        return found
