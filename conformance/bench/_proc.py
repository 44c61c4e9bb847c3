"""CPU time and memory from ``/proc`` (Linux), for the benchmarks' figures.

Each reader returns None where ``/proc`` (or the process) cannot be read, so a benchmark runs
anywhere and leaves out the figures it cannot take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLOCK_TICKS", "MachineTicks", "machine_ticks", "process_ticks", "rss_mib"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
"""Clock ticks a second: the unit of the tick counts below."""


@dataclass(frozen=True, slots=True)
class MachineTicks:
    """CPU time of all the machine's cores so far, in clock ticks."""

    busy: int
    total: int


def machine_ticks() -> MachineTicks | None:
    """The machine's busy and total CPU time (``/proc/stat``: idle and iowait are not busy)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 5:
        return None
    return MachineTicks(busy=sum(ticks) - ticks[3] - ticks[4], total=sum(ticks))


def process_ticks(pid: int, *, thread: int | None = None) -> int | None:
    """User + system CPU time of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    try:
        stat = Path(path).read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int, field_name: str = "VmRSS") -> float | None:
    """A memory field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None
