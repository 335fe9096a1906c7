"""Logging setup: plain or JSON lines. Secrets never reach a log record (they are never
passed to one: credentials live in ``Credentials`` objects whose repr is masked; requests are
logged by method, path, status and duration only, never headers, query strings or bodies).

Records made while an HTTP request is served carry its ``request_id`` (the ``X-Request-Id`` the
client gets back), set through :data:`request_id_var` by the app's middleware.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar

from omsync.config import Settings

request_id_var: ContextVar[str | None] = ContextVar("omsync_request_id", default=None)
"""The id of the HTTP request being served in this context, if any."""

# Structured fields copied from a record's ``extra`` into its JSON object.
JSON_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "task_id", "key", "reason", "attempts")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records made while a request is served (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the :data:`JSON_FIELDS` the
    record carries and ``exc`` (a formatted traceback) when it has one."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JSON_FIELDS:
            if hasattr(record, name):
                payload[name] = getattr(record, name)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        line = json.dumps(payload, ensure_ascii=False, default=str)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate would break the stream: escape everything
            line = json.dumps(payload, ensure_ascii=True, default=str)
        return line


def configure_logging(settings: Settings) -> None:
    """Send every record of the process to stderr, one line each, plain or JSON
    (``settings.log_json``) at ``settings.log_level``, request ids attached."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # At DEBUG, botocore and the Azure SDK log request headers (the account or access key in
    # Authorization) and aiosqlite every statement with its parameters: none belongs in omsync's log.
    for noisy in ("botocore", "urllib3", "aiosqlite", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The app logs each request itself, with its request id; uvicorn's access log would repeat
    # it with the query string.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
