"""The named checks, in the order they run. Check modules register with :func:`check`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .outcome import Notes

if TYPE_CHECKING:
    from .context import SuiteContext

__all__ = ["CHECKS", "Check", "check", "select"]

CheckFunc = Callable[["SuiteContext", Notes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Check:
    """A named conformance check."""

    name: str
    """Dotted, stable: ``group.what`` (``bargein.interrupt``)."""
    title: str
    """What it verifies, in one line."""
    spec: str
    """The sections of docs/protocol.md it enforces."""
    func: CheckFunc


CHECKS: list[Check] = []


def check(name: str, title: str, spec: str) -> Callable[[CheckFunc], CheckFunc]:
    """Register the decorated coroutine function as check ``name``."""

    def register(func: CheckFunc) -> CheckFunc:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"duplicate check name {name!r}")
        CHECKS.append(Check(name, title, spec, func))
        return func

    return register


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in patterns)


def select(only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[Check]:
    """The checks to run: all, or those named (or prefixed) in ``only``, less ``skip``.

    Raises:
        ValueError: a name in ``only`` or ``skip`` matches no check.
    """
    for pattern in (*only, *skip):
        if not any(_matches(c.name, (pattern,)) for c in CHECKS):
            raise ValueError(f"no check is named {pattern!r}")
    chosen = [c for c in CHECKS if not only or _matches(c.name, only)]
    return [c for c in chosen if not _matches(c.name, skip)]
