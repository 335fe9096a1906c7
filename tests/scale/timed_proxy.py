"""A :class:`~tests.faultproxy.FaultProxy` that also records when each request ended, and can
delay requests before forwarding them (to keep copies in flight for a while).

Each omsync process under test gets its own proxy (through its endpoint overrides), so the
proxy a request arrived at names the process that sent it; with the start and end of every
request, the copies of one key by different processes can be laid side by side in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from tests.faultproxy import FaultProxy, Rule, _Head


@dataclass(frozen=True)
class Span:
    """One request: decoded path, status (0 when broken), arrival and end (``time.monotonic``
    of this process; the end is after the last byte of the answer was relayed)."""

    method: str
    path: str
    status: int
    start: float
    end: float


class TimedProxy(FaultProxy):
    """Records a :class:`Span` per request; requests whose decoded path satisfies ``slow`` wait
    ``delay`` seconds before being forwarded."""

    def __init__(self, upstream: str, *, slow: Callable[[str], bool] | None = None, delay: float = 0.0) -> None:
        super().__init__(upstream)
        self.slow = slow
        self.delay = delay
        self._spans: list[Span] = []

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    async def _forward(self, writer: asyncio.StreamWriter, method: str, target: str, head: _Head,
                       body: bytes, rule: Rule | None) -> int:
        if self.delay > 0 and self.slow is not None and self.slow(unquote(target.partition("?")[0])):
            await asyncio.sleep(self.delay)
        return await super()._forward(writer, method, target, head, body, rule)

    def _note(self, method: str, path: str, query: str, status: int, at: float) -> None:
        end = time.monotonic()
        super()._note(method, path, query, status, at)
        with self._lock:
            self._spans.append(Span(method, path, status, at, end))
