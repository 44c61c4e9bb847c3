"""Checks every kind of backend gets: its declaration, health, closing twice, leaks, concurrency.

They are built per kind by :func:`lifecycle_checks` and :func:`concurrency_check` from two
small kind-specific functions: *exercise* (one normal call and one cancelled call, results
ignored) and *once* (one normal call, validated, returning a comparable result).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import trio

from scaivoice.engine import (
    API_VERSION,
    Backend,
    BackendOptions,
    LlmCapabilities,
    NormaliserCapabilities,
    SttCapabilities,
    TtsCapabilities,
)

from ._drive import describe_error
from ._kit import Check, Failed, Subject, capabilities_of, contract_check, require
from ._leaks import leftover_tasks, leftover_threads, live_tasks, live_threads

__all__ = ["concurrency_check", "lifecycle_checks"]

B = TypeVar("B", bound=Backend)
Exercise = Callable[[Subject[B], B], Awaitable[None]]
Once = Callable[[Subject[B], B], Awaitable[Hashable]]

_CAPABILITY_TYPES: dict[str, type] = {
    "stt": SttCapabilities,
    "llm": LlmCapabilities,
    "tts": TtsCapabilities,
    "normaliser": NormaliserCapabilities,
}


def lifecycle_checks(
    kind: str, *, exercise: Exercise[B]
) -> tuple[Check[B], Check[B], Check[B], Check[B]]:
    """The checks ``<kind>.declaration``, ``.health``, ``.aclose_idempotent``, ``.no_leaks``."""

    @contract_check(f"{kind}.declaration")
    async def declaration(subject: Subject[B]) -> str:
        """Capabilities of the right type with sane values; Options; the spec agrees."""
        backend = subject.backend
        caps = capabilities_of(backend)
        problems: list[str] = []
        expected = _CAPABILITY_TYPES[kind]
        if type(caps) is not expected:
            problems.append(f"capabilities is {type(caps).__name__}, not {expected.__name__}")
        rates = getattr(caps, "sample_rates", None)
        if rates is not None and (
            not rates or any(not isinstance(r, int) or r <= 0 for r in rates)
        ):
            problems.append(f"sample_rates {rates!r} must be positive integers (at least one)")
        languages = getattr(caps, "languages", ())
        if any(not isinstance(code, str) or not code for code in languages):
            problems.append(f"languages {languages!r} must be non-empty strings")
        options = getattr(type(backend), "Options", None)
        if not (isinstance(options, type) and issubclass(options, BackendOptions)):
            problems.append("Options is not a BackendOptions subclass")
        spec = subject.spec
        if spec is not None:
            if spec.kind != kind:
                problems.append(f"its spec declares kind {spec.kind!r}")
            if spec.capabilities != caps:
                problems.append(
                    "its spec declares other capabilities than the backend "
                    f"({spec.capabilities!r} vs {caps!r})"
                )
            if spec.api_version > API_VERSION:
                problems.append(f"its spec targets backend API {spec.api_version}")
            if backend.name != spec.name:
                problems.append(
                    f"the factory left backend.name {backend.name!r}, not {spec.name!r} "
                    "(errors would name the wrong backend)"
                )
        require(not problems, "; ".join(problems))
        declared = ", ".join(f"{k}={_short(v)}" for k, v in _fields(caps).items() if v)
        return f"declares {declared or 'nothing'}"

    @contract_check(f"{kind}.health")
    async def health(subject: Subject[B]) -> str:
        """``check_health`` of an opened backend returns without error."""
        start = trio.current_time()
        try:
            await subject.backend.check_health()
        except Exception as exc:
            raise Failed(f"check_health of an opened backend raised {describe_error(exc)}") from exc
        return f"healthy ({(trio.current_time() - start) * 1000:.0f} ms)"

    @contract_check(f"{kind}.aclose_idempotent")
    async def aclose_idempotent(subject: Subject[B]) -> str:
        """Opening, closing and closing again works; the second ``aclose`` returns at once."""
        backend = subject.factory()
        await backend.open()
        try:
            await backend.aclose()
        except Exception as exc:
            raise Failed(f"the first aclose raised {describe_error(exc)}") from exc
        start = trio.current_time()
        try:
            await backend.aclose()
        except Exception as exc:
            raise Failed(f"the second aclose raised {describe_error(exc)}") from exc
        took = trio.current_time() - start
        deadline = subject.config.cancel_deadline_s
        require(took <= deadline, f"the second aclose took {took:.2f} s (> {deadline:g} s)")
        return f"open, aclose, aclose: fine (second aclose {took * 1000:.0f} ms)"

    @contract_check(f"{kind}.no_leaks")
    async def no_leaks(subject: Subject[B]) -> str:
        """No trio task outlives a call, no thread outlives the backend (after a grace period)."""
        grace = subject.config.leak_grace_s
        # One round on the shared instance first: process-wide pools a library creates once
        # (and keeps) are not leaks of this backend.
        await exercise(subject, subject.backend)
        threads_before = live_threads()
        tasks_before = live_tasks()
        backend = subject.factory()
        await backend.open()
        try:
            tasks_open = live_tasks()  # tasks started by open() may live until aclose()
            await exercise(subject, backend)
            stray = await leftover_tasks(tasks_open, grace_s=grace)
            require(
                not stray,
                f"calls returned but left trio tasks running: {_names(stray)} "
                "(run them in a nursery inside the call)",
            )
        finally:
            with trio.move_on_after(subject.config.check_timeout_s, shield=True):
                await backend.aclose()
        stray = await leftover_tasks(tasks_before, grace_s=grace)
        require(not stray, f"trio tasks outlived aclose(): {_names(stray)}")
        threads = await leftover_threads(threads_before, grace_s=grace)
        require(
            not threads,
            f"threads still alive {grace:g} s after aclose(): {_names(threads)}",
        )
        return "no trio task outlived a call, no thread outlived the backend"

    return declaration, health, aclose_idempotent, no_leaks


def concurrency_check(kind: str, *, once: Once[B]) -> Check[B]:
    """``<kind>.concurrency``: several calls at once all succeed; for a deterministic backend
    (two sequential calls agree) they give the sequential result."""

    @contract_check(f"{kind}.concurrency")
    async def concurrency(subject: Subject[B]) -> str:
        """Concurrent calls succeed and, for a deterministic backend, match sequential ones."""
        backend = subject.backend
        first = await once(subject, backend)
        second = await once(subject, backend)
        deterministic = first == second
        n = subject.config.concurrency
        results: list[Hashable] = [None] * n
        problems: list[str] = []

        async def one(index: int) -> None:
            try:
                results[index] = await once(subject, backend)
            except Failed as exc:
                problems.append(f"concurrent call {index + 1} of {n}: {exc}")

        async with trio.open_nursery() as nursery:
            for index in range(n):
                nursery.start_soon(one, index)
        require(not problems, "; ".join(problems))
        if not deterministic:
            return (
                f"{n} concurrent calls succeeded; not compared (two sequential calls differ: "
                "the backend is not deterministic with these options)"
            )
        differ = [i for i, r in enumerate(results) if r != first]
        if differ:
            raise Failed(
                f"concurrent call(s) {[i + 1 for i in differ]} of {n} gave "
                f"{_brief(results[differ[0]])}, sequential calls gave {_brief(first)}"
            )
        return f"{n} concurrent calls gave the sequential result ({_brief(first)})"

    return concurrency


def _fields(record: object) -> dict[str, Any]:
    names = getattr(record, "__dataclass_fields__", {})
    return {name: getattr(record, name) for name in names}


def _short(value: object) -> str:
    if isinstance(value, tuple) and len(value) > 6:
        return f"({', '.join(map(repr, value[:4]))}, ... {len(value)} in all)"
    return repr(value)


def _names(things: list[Any]) -> str:
    return ", ".join(repr(getattr(t, "name", t)) for t in things)


def _brief(value: object) -> str:
    if isinstance(value, bytes):
        digest = hashlib.sha1(value).hexdigest()[:10]
        return f"{len(value)} bytes (sha1 {digest})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
