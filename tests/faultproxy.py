"""A fault-injecting HTTP/1.1 proxy for tests, placed between omsync and a real S3 server.

Point an endpoint override at :attr:`FaultProxy.url` (e.g. ``proxy.url + "#moto"``) and every
request of that endpoint passes through the proxy, which forwards it to ``upstream`` unless a
rule says otherwise. Rules are added and removed from the test thread while the proxy runs
(its asyncio loop lives in a background thread; all shared state is behind one lock):

- :meth:`FaultProxy.error` answers matching requests with an S3 error (503 ``SlowDown`` by
  default, optionally with ``Retry-After``) instead of forwarding them;
- :meth:`FaultProxy.deny_writes` answers PUT/POST into a bucket with 403 ``AccessDenied``;
- :meth:`FaultProxy.cut` relays ``after_bytes`` of a matching response's body, then closes the
  client connection (a connection cut mid-stream);
- :meth:`FaultProxy.stall` relays ``after_bytes``, then holds the response until the rule is
  released (to catch a client in the middle of a transfer).

Each rule applies to the first ``times`` matching requests (``None``: all of them). Paths are
matched after percent-decoding, without the query string, so ``"/bucket/a b+c"`` is the object
``a b+c`` in ``bucket`` whatever encoding the client chose. Every request is recorded
(:meth:`FaultProxy.requests`, :meth:`FaultProxy.count`).

Connections are not kept alive: the proxy answers every request with ``Connection: close`` and
opens one upstream connection per request (also ``Connection: close``), which clients such as
aiohttp and urllib3 handle without any pooling race. ``Expect: 100-continue`` is answered by
the proxy itself, so a refused request's body is always read before the refusal is sent (a
client still writing its body would otherwise see a reset instead of the answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

Match = str | Callable[[str], bool]
Action = Literal["error", "cut", "stall"]

_MAX_HEAD_BYTES = 64 * 1024
_RELAY_CHUNK = 64 * 1024
_UPSTREAM_TIMEOUT_SECONDS = 60.0
_STALL_LIMIT_SECONDS = 120.0


class ProxyError(Exception):
    """A malformed request or response head; the connection is dropped."""


@dataclass
class Rule:
    """One fault. ``fired`` counts the requests it changed; ``stalled`` how many responses it
    holds right now (stall rules). Create rules through :class:`FaultProxy`'s methods."""

    action: Action
    methods: frozenset[str] | None
    match: Callable[[str], bool]
    times: int | None
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    retry_after: str | None = None
    after_bytes: int = 0
    pass_first: int = 0  # per path: this many matching requests go through untouched first
    fired: int = 0
    stalled: int = 0
    _passed: dict[str, int] = field(default_factory=dict, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    def applies(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if not self.match(path):
            return False
        if self._passed.get(path, 0) < self.pass_first:
            self._passed[path] = self._passed.get(path, 0) + 1
            return False
        return True

    def release(self) -> None:
        """Let every response this (stall) rule holds, and any it would hold later, go on."""
        self._released.set()


@dataclass(frozen=True)
class Seen:
    """One request as the proxy received it: decoded path, raw query, the status it got back
    (0 when the connection broke before a status was relayed) and when it arrived."""

    method: str
    path: str
    query: str
    status: int
    at: float


def _matcher(match: Match) -> Callable[[str], bool]:
    if isinstance(match, str):
        return lambda path: path == match
    return match


def object_path(bucket: str, key: str) -> str:
    """The decoded path of an object in a path-style request."""
    return f"/{bucket}/{key}"


def in_bucket(bucket: str) -> Callable[[str], bool]:
    """A predicate matching the bucket itself and every object in it."""
    return lambda path: path == f"/{bucket}" or path.startswith(f"/{bucket}/")


class _Head:
    """A parsed message head: the start line and headers in their original order."""

    def __init__(self, start: str, headers: list[tuple[str, str]]) -> None:
        self.start = start
        self.headers = headers

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def without(self, *names: str) -> list[tuple[str, str]]:
        drop = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in drop]


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    """The next message head, or None on a clean EOF before any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProxyError("connection closed inside a message head") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProxyError("message head too large") from exc
    lines = raw[:-4].decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProxyError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return _Head(lines[0], headers)


def _encode_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    text = start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return text.encode("latin-1")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A whole chunked body, de-chunked (trailers dropped)."""
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _read_body(reader: asyncio.StreamReader, head: _Head) -> bytes:
    if (head.get("Transfer-Encoding") or "").lower().endswith("chunked"):
        return await _read_chunked(reader)
    length = int(head.get("Content-Length") or "0")
    return await reader.readexactly(length) if length else b""


class FaultProxy:
    """The proxy; see the module docstring. ``upstream`` is ``http://host:port`` (plain HTTP).

    Use ``with FaultProxy(url) as proxy:`` or :meth:`start` / :meth:`stop`. Rule methods return
    the :class:`Rule`, whose ``fired`` and ``stalled`` counters the test can read.
    """

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._seen: list[Seen] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy (valid once started)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FaultProxy:
        """Listen on a free port in a background thread; returns once it accepts connections."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, 0, limit=_MAX_HEAD_BYTES))
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("fault proxy did not start")
        if failure:
            raise RuntimeError("fault proxy did not start") from failure[0]
        return self

    def stop(self) -> None:
        """Release every stall, close the listener and all connections, end the thread."""
        self._stopping.set()
        self.clear()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            loop.stop()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- rules ----------------------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def error(self, match: Match, *, methods: tuple[str, ...] | None = None, times: int | None = None,
              status: int = 503, code: str = "SlowDown", message: str = "Please reduce your request rate.",
              retry_after: str | None = None) -> Rule:
        """Answer matching requests with ``status`` and an S3 ``<Error>`` body (none for HEAD)."""
        return self._add(Rule("error", frozenset(methods) if methods else None, _matcher(match), times,
                              status=status, code=code, message=message, retry_after=retry_after))

    def deny_writes(self, bucket: str, *, times: int | None = None) -> Rule:
        """403 ``AccessDenied`` for every PUT and POST into ``bucket``."""
        return self.error(in_bucket(bucket), methods=("PUT", "POST"), times=times, status=403,
                          code="AccessDenied", message="Access Denied")

    def cut(self, match: Match, *, after_bytes: int, methods: tuple[str, ...] = ("GET",),
            times: int | None = None) -> Rule:
        """Forward matching requests, relay ``after_bytes`` of the response body, then close the
        connection to the client (the rest of the body never arrives)."""
        return self._add(Rule("cut", frozenset(methods), _matcher(match), times, after_bytes=after_bytes))

    def stall(self, match: Match, *, after_bytes: int, methods: tuple[str, ...] = ("GET",),
              times: int | None = None, pass_first: int = 0) -> Rule:
        """Forward matching requests, relay ``after_bytes`` of the response body, then hold the
        rest until :meth:`Rule.release` (or :meth:`clear` / :meth:`stop`); a held response gives
        up after two minutes. The first ``pass_first`` matching requests of each path go
        through untouched (e.g. the first part of an object read as ranges)."""
        return self._add(Rule("stall", frozenset(methods), _matcher(match), times, after_bytes=after_bytes,
                              pass_first=pass_first))

    def remove(self, rule: Rule) -> None:
        """Stop applying ``rule`` (releasing what it holds)."""
        rule.release()
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Remove every rule (releasing held responses); the request record stays."""
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.release()

    # -- record ---------------------------------------------------------------------------------

    def requests(self, method: str | None = None, match: Match | None = None) -> list[Seen]:
        """Requests received so far, oldest first, optionally filtered."""
        test = _matcher(match) if match is not None else None
        with self._lock:
            seen = list(self._seen)
        return [s for s in seen if (method is None or s.method == method) and (test is None or test(s.path))]

    def count(self, method: str, path: Match) -> int:
        """How many ``method`` requests for ``path`` (decoded, exact when a string) arrived."""
        return len(self.requests(method, path))

    def counts(self) -> Counter[tuple[str, str]]:
        """Requests per (method, decoded path)."""
        return Counter((s.method, s.path) for s in self.requests())

    def reset_record(self) -> None:
        with self._lock:
            self._seen.clear()

    def _claim_rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.applies(method, path):
                    rule.fired += 1
                    return rule
        return None

    def _note(self, method: str, path: str, query: str, status: int, at: float) -> None:
        with self._lock:
            self._seen.append(Seen(method, path, query, status, at))

    # -- serving --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ProxyError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, OSError, ValueError):
            pass  # a broken or refused exchange: the client sees the connection close
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_head(reader)
        if head is None:
            return
        method, target, version = head.start.split(" ", 2)
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path)
        at = time.monotonic()
        if (head.get("Expect") or "").lower() == "100-continue":
            writer.write(f"{version} 100 Continue\r\n\r\n".encode("latin-1"))
            await writer.drain()
        body = await _read_body(reader, head)
        rule = self._claim_rule(method, path)
        if rule is not None and rule.action == "error":
            self._note(method, path, query, rule.status, at)
            await self._refuse(writer, method, raw_path, rule)
            return
        status = 0
        try:
            status = await self._forward(writer, method, target, head, body, rule)
        finally:
            self._note(method, path, query, status, at)

    async def _refuse(self, writer: asyncio.StreamWriter, method: str, resource: str, rule: Rule) -> None:
        xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               f"<Error><Code>{rule.code}</Code><Message>{rule.message}</Message>"
               f"<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>").encode()
        reasons = {403: "Forbidden", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(xml))),
                   ("x-amz-request-id", "faultproxy"), ("Connection", "close")]
        if rule.retry_after is not None:
            headers.append(("Retry-After", rule.retry_after))
        writer.write(_encode_head(f"HTTP/1.1 {rule.status} {reasons.get(rule.status, 'Error')}", headers))
        if method != "HEAD":
            writer.write(xml)
        await writer.drain()

    async def _forward(self, writer: asyncio.StreamWriter, method: str, target: str, head: _Head,
                       body: bytes, rule: Rule | None) -> int:
        """Send the request upstream and relay the answer; returns the status relayed."""
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(self.upstream_host, self.upstream_port, limit=_MAX_HEAD_BYTES),
            _UPSTREAM_TIMEOUT_SECONDS)
        try:
            headers = head.without("Connection", "Keep-Alive", "Proxy-Connection", "Expect",
                                   "Transfer-Encoding", "Content-Length")
            if body or method in ("PUT", "POST"):
                headers.append(("Content-Length", str(len(body))))
            headers.append(("Connection", "close"))
            up_writer.write(_encode_head(f"{method} {target} HTTP/1.1", headers) + body)
            await up_writer.drain()
            while True:
                answer = await asyncio.wait_for(_read_head(up_reader), _UPSTREAM_TIMEOUT_SECONDS)
                if answer is None:
                    raise ProxyError("upstream closed without an answer")
                status = int(answer.start.split(" ", 2)[1])
                if status >= 200 or status == 101:
                    break  # 1xx interim answers are the proxy's business, not the client's
            relayed = [*answer.without("Connection", "Keep-Alive"), ("Connection", "close")]
            writer.write(_encode_head(answer.start, relayed))
            if method == "HEAD" or status in (204, 304):
                await writer.drain()
                return status
            await self._relay_body(up_reader, writer, answer, rule)
            return status
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _relay_body(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          answer: _Head, rule: Rule | None) -> None:
        """Copy the response body as framed by the upstream (raw chunked framing included), with
        the rule's cut or stall after ``after_bytes`` bytes of the relayed stream."""
        chunked = (answer.get("Transfer-Encoding") or "").lower().endswith("chunked")
        length = answer.get("Content-Length")
        remaining = None if chunked or length is None else int(length)
        sent = 0
        trigger = rule.after_bytes if rule is not None else None

        source = self._raw_chunks(up_reader) if chunked else self._raw_bytes(up_reader, remaining)
        async for piece in source:
            while piece:
                if trigger is not None and rule is not None and sent >= trigger:
                    await self._trigger(writer, rule)
                    if rule.action == "cut":
                        return
                    trigger = None
                take = len(piece) if trigger is None else min(len(piece), trigger - sent)
                writer.write(piece[:take])
                await writer.drain()
                sent += take
                piece = piece[take:]
        if trigger is not None and rule is not None and sent >= trigger and rule.action == "cut":
            await self._trigger(writer, rule)

    async def _trigger(self, writer: asyncio.StreamWriter, rule: Rule) -> None:
        if rule.action == "cut":
            # A graceful close after the bytes already written: the client receives exactly
            # ``after_bytes`` and then an end of stream shorter than the declared length.
            await writer.drain()
            writer.close()
            return
        with self._lock:
            rule.stalled += 1
        try:
            deadline = time.monotonic() + _STALL_LIMIT_SECONDS
            while not rule._released.is_set() and not self._stopping.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            with self._lock:
                rule.stalled -= 1

    @staticmethod
    async def _raw_bytes(reader: asyncio.StreamReader, remaining: int | None) -> AsyncIterator[bytes]:
        while remaining is None or remaining > 0:
            want = _RELAY_CHUNK if remaining is None else min(_RELAY_CHUNK, remaining)
            piece = await asyncio.wait_for(reader.read(want), _UPSTREAM_TIMEOUT_SECONDS)
            if not piece:
                if remaining is not None:
                    raise ProxyError("upstream closed before the end of the body")
                return
            if remaining is not None:
                remaining -= len(piece)
            yield piece

    @staticmethod
    async def _raw_chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), _UPSTREAM_TIMEOUT_SECONDS)
            yield size_line
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    line = await asyncio.wait_for(reader.readuntil(b"\r\n"), _UPSTREAM_TIMEOUT_SECONDS)
                    yield line
                    if line == b"\r\n":
                        return
            left = size + 2
            while left:
                piece = await asyncio.wait_for(reader.read(min(_RELAY_CHUNK, left)), _UPSTREAM_TIMEOUT_SECONDS)
                if not piece:
                    raise ProxyError("upstream closed inside a chunk")
                left -= len(piece)
                yield piece


@contextlib.contextmanager
def running_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` in front of ``upstream``, stopped on exit."""
    proxy = FaultProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
