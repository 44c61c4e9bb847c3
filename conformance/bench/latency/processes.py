"""A server's process tree, for its CPU time and memory: ``scaivoice serve --workers N`` runs
its sessions in worker processes under a supervisor, so a figure of the supervisor alone would
miss them. Linux ``/proc`` only; None where it cannot be read."""

from __future__ import annotations

from pathlib import Path

from .._proc import process_ticks, rss_mib

__all__ = ["tree", "tree_rss_mib", "tree_ticks"]


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (those alive now)."""
    found = [pid]
    for parent in found:  # grows as children are found
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
    return found


def tree_ticks(pid: int) -> int | None:
    """User + system CPU time of ``pid`` and its descendants, in clock ticks."""
    ticks = [process_ticks(p) for p in tree(pid)]
    if ticks[0] is None:
        return None
    return sum(t for t in ticks if t is not None)


def tree_rss_mib(pid: int) -> float | None:
    """The resident sets of ``pid`` and its descendants, added up (pages they share count
    once per process, as ``ps`` adds them)."""
    sizes = [rss_mib(p) for p in tree(pid)]
    if sizes[0] is None:
        return None
    return sum(s for s in sizes if s is not None)
