"""CPU time and memory of a process and its children, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list), or [] when it is gone."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found.extend(int(p) for p in text.split())
    except OSError:
        return []
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids = [pid]
    index = 0
    while index < len(pids):
        pids.extend(children(pids[index]))
        index += 1
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` used so far (0.0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command: state(0) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its living descendants."""
    return sum(cpu_seconds(p) for p in tree(pid))


def status_kib(pid: int, name: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM), 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_kib(pid: int, name: str) -> int:
    """Sum of ``name`` (VmRSS, VmHWM) over ``pid`` and its descendants."""
    return sum(status_kib(p, name) for p in tree(pid))
