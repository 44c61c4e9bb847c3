"""What the server process itself is doing: its trio tasks, memory, file descriptors and
event-loop lag, for ``GET /v1/admin/runtime`` and the soak benchmark.

The lag is sampled by :meth:`RuntimeMonitor.run`, a task of the server's nursery: it sleeps
``interval_s`` again and again and records how much later than asked it woke up (a loop busy
with other work, or blocked by a synchronous call, wakes it late). The snapshot shows the lag's
median, 99th percentile and maximum over the last ``window_s``. Memory and descriptors are read
from ``/proc/self`` (Linux); elsewhere they are ``None``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import trio

__all__ = ["RuntimeMonitor", "open_fds", "rss_mib"]


class RuntimeMonitor:
    """Event-loop lag samples of this process, and a snapshot of its runtime.

    Args:
        interval_s: how often the lag is sampled.
        window_s: how far back the snapshot's lag figures reach.
    """

    def __init__(self, *, interval_s: float = 0.1, window_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.started_at = time.time()
        self._lags: deque[tuple[float, float]] = deque()

    async def run(self) -> None:
        """Sample the event-loop lag until cancelled (cancelling it is how it stops)."""
        while True:
            asked = trio.current_time() + self.interval_s
            await trio.sleep_until(asked)
            now = trio.current_time()
            self._lags.append((now, max(0.0, now - asked)))
            while self._lags and self._lags[0][0] < now - self.window_s:
                self._lags.popleft()

    def lag_ms(self) -> dict[str, Any]:
        """``p50``, ``p99`` and ``max`` lag in ms over the window (``None`` before a sample)."""
        lags = sorted(lag for _, lag in self._lags)
        figures: dict[str, Any] = {"window_s": self.window_s, "samples": len(lags)}
        for name, share in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
            value = lags[min(len(lags) - 1, int(share * len(lags)))] if lags else None
            figures[name] = round(value * 1000.0, 2) if value is not None else None
        return figures

    def snapshot(self, *, sessions_live: int) -> dict[str, Any]:
        """The process's runtime now (call it from the trio thread)."""
        statistics = trio.lowlevel.current_statistics()
        return {
            "object": "runtime",
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "sessions_live": sessions_live,
            "tasks": statistics.tasks_living,
            "tasks_runnable": statistics.tasks_runnable,
            "threads": threading.active_count(),
            "rss_mib": rss_mib(),
            "open_fds": open_fds(),
            "lag_ms": self.lag_ms(),
        }


def rss_mib() -> float | None:
    """This process's resident set in MiB (``/proc/self/statm``), or ``None``."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(resident * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024), 1)


def open_fds() -> int | None:
    """How many file descriptors this process has open (``/proc/self/fd``), or ``None``."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing the folder
    except OSError:
        return None
