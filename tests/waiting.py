"""Polling helper for tests that wait on other processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0,
             context: Callable[[], str] = lambda: "", interval: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy and return that; after ``timeout``
    seconds fail naming ``what``, with ``context()`` (e.g. process logs) appended."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = context()
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{extra}" if extra else ""))
        time.sleep(interval)
