"""Counting what a backend leaves behind: trio tasks still running, threads still alive.

Tasks are found by walking the task tree from the root task (public ``trio.lowlevel``
attributes). Threads are ``threading.enumerate()``; trio's idle worker threads (named
``Trio thread N`` while they wait for work, and kept for a few seconds for reuse) are not
leaks, while a worker thread still running a job carries the job's name and is one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection

import trio

__all__ = ["leftover_tasks", "leftover_threads", "live_tasks", "live_threads"]

_IDLE_TRIO_WORKER = re.compile(r"Trio thread \d+")
_POLL_S = 0.02


def live_tasks() -> frozenset[trio.lowlevel.Task]:
    """Every task of the current ``trio.run``, system tasks included."""
    root = trio.lowlevel.current_root_task()
    found: set[trio.lowlevel.Task] = set()
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return frozenset(found)


def live_threads() -> frozenset[threading.Thread]:
    """Every Python thread alive now."""
    return frozenset(threading.enumerate())


async def leftover_tasks(
    allowed: Collection[trio.lowlevel.Task], *, grace_s: float
) -> list[trio.lowlevel.Task]:
    """Tasks not in ``allowed`` still running after up to ``grace_s`` (polled)."""
    deadline = trio.current_time() + grace_s
    while True:
        extra = [t for t in live_tasks() if t not in allowed]
        if not extra or trio.current_time() >= deadline:
            return sorted(extra, key=lambda t: t.name)
        await trio.sleep(_POLL_S)


async def leftover_threads(
    baseline: Collection[threading.Thread], *, grace_s: float
) -> list[threading.Thread]:
    """Threads started since ``baseline`` still alive (and not idle trio workers) after up
    to ``grace_s`` (polled)."""
    deadline = trio.current_time() + grace_s
    while True:
        extra = [
            t
            for t in threading.enumerate()
            if t not in baseline and t.is_alive() and not _IDLE_TRIO_WORKER.fullmatch(t.name)
        ]
        if not extra or trio.current_time() >= deadline:
            return sorted(extra, key=lambda t: t.name)
        await trio.sleep(_POLL_S)
