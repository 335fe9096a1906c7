"""Human-readable figures shared by the CLI and the dashboard."""

from __future__ import annotations


def format_bytes(value: int) -> str:
    """Binary units: ``1536`` → ``1.5 KiB``, ``512`` → ``512 B``."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - the loop always returns
