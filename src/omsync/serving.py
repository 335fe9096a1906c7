"""How ``omsync serve`` listens: uvicorn options from Settings, a connection guard, start-up
warnings about exposure.

uvicorn by itself never times out a connection that has not sent a complete request head
(nothing, or half a header), so a few hundred such connections exhaust file descriptors.
:class:`GuardedH11Protocol` closes a connection that does not deliver a complete request head
within ``http_header_timeout_seconds`` of opening or of its previous response, and answers 503
and closes at once when ``http_max_connections`` connections are already open. The open-files
limit of the process is raised to its hard limit at start, and the connection limit is kept
below it so that the database and the stores always have descriptors left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from omsync.config import Settings

log = logging.getLogger("omsync.serving")

_FD_HEADROOM = 256  # descriptors kept for the database, stores, logs and workers
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
         b"content-length: 20\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a request-head deadline and a connection limit.

    Class attributes are set by :func:`uvicorn_options` before the server starts."""

    header_timeout: float = 10.0
    max_connections: int = 1000

    _head_timer: asyncio.TimerHandle | None = None
    _armed_cycle: object | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            transport.write(_BUSY)
            transport.close()
            self.transport = transport
            self._refused = True
            log.warning("connection refused: %d connections are open (OMSYNC_HTTP_MAX_CONNECTIONS)",
                        len(self.connections))
            return
        self._refused = False
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_refused", False):
            return
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if getattr(self, "_refused", False):
            return
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not self._armed_cycle:
            self._disarm()  # a complete request head arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._armed_cycle = self.cycle
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served
        if not self.transport.is_closing():
            self.transport.close()


def raise_open_files_limit() -> int | None:
    """Raise the soft open-files limit to the hard limit; returns the soft limit now in force."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else soft


def effective_max_connections(settings: Settings, open_files: int | None) -> int:
    """``http_max_connections``, lowered when the open-files limit could not serve that many."""
    limit = settings.http_max_connections
    if open_files is not None:
        limit = min(limit, max(16, open_files - _FD_HEADROOM))
    return limit


def uvicorn_options(settings: Settings, *, open_files: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` (besides the app) from ``settings``."""
    GuardedH11Protocol.header_timeout = settings.http_header_timeout_seconds
    GuardedH11Protocol.max_connections = effective_max_connections(settings, open_files)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "timeout_graceful_shutdown": 30,
        "http": GuardedH11Protocol,
        "timeout_keep_alive": settings.http_keepalive_seconds,
        "h11_max_incomplete_event_size": 16 * 1024,
        "backlog": 2048,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or None,
        "server_header": False,
    }
    return options


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warnings(settings: Settings) -> list[str]:
    """What an operator should know about this listener before it takes traffic."""
    found = []
    if not is_loopback(settings.host) and settings.metrics_token is None:
        found.append(
            f"/metrics is served without a token on {settings.host}: anyone who can reach this port "
            "sees every project's task ids and counters; set OMSYNC_METRICS_TOKEN"
        )
    if settings.fs_roots:
        found.append(
            "OMSYNC_FS_ROOTS are open to every project's 'Local' tasks; grant directories per project "
            "with OMSYNC_FS_PROJECT_ROOTS instead"
        )
    if not is_loopback(settings.host):
        found.append(
            f"listening on {settings.host} without TLS: put a reverse proxy with TLS, timeouts and "
            "request limits in front (see docs/security.md)"
        )
    return found


def serve(settings: Settings, app: Any) -> None:
    """Run ``app`` under uvicorn with the hardened options (blocks until stopped)."""
    import uvicorn

    open_files = raise_open_files_limit()
    for warning in exposure_warnings(settings):
        log.warning("%s", warning)
    uvicorn.run(app, **uvicorn_options(settings, open_files=open_files))


__all__ = ["GuardedH11Protocol", "exposure_warnings", "is_loopback", "serve", "uvicorn_options"]
