"""The capacity search of ``bench load --capacity``."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["search_capacity"]


def search_capacity(passes: Callable[[int], bool], start: int, limit: int = 4096) -> int:
    """The largest N for which ``passes(N)``, assuming it holds up to some N and fails above:
    double from ``start`` until a run fails (or halve until one passes), then bisect to
    within 5 %. Returns 0 when even one session fails."""
    passed, failed = 0, 0
    n = max(start, 1)
    while n <= limit:
        if passes(n):
            passed = n
            if failed:
                break
            n *= 2
        else:
            failed = n
            if passed:
                break
            n //= 2
            if n == 0:
                return 0
    if not failed:
        return passed
    while failed - passed > max(1, math.ceil(passed * 0.05)):
        n = (passed + failed) // 2
        if passes(n):
            passed = n
        else:
            failed = n
    return passed
