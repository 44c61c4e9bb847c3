"""Contract checks for server skills: the ``ToolSpec`` records of a ``scaivoice_tools`` hook.

A skill is checked the way the engine will call it: its declaration as the plugin host checks
it when loading (name, schema), then its handler awaited with arguments already parsed and
validated against the schema and a :class:`~scaivoice.engine.ToolContext`, inside a cancel
scope the kit may cancel (barge-in). The author supplies what the kit cannot invent: arguments
the tool serves (``example_arguments``), optionally arguments that make a call slow enough to
cancel mid-way (``slow_arguments``: a long computation, a wait on a fake service) and
arguments the tool refuses (``failing_arguments``: it must raise ``ToolFailed``).

Each check is a :class:`ToolCheck`: ``await check(subject)`` returns a
:class:`~scaivoice.conformance.CheckResult`; :func:`~scaivoice.conformance.run_tool_checks`
runs them all.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

from scaivoice.engine import (
    ArgumentsInvalid,
    PluginContractError,
    PluginHost,
    ToolContext,
    ToolFailed,
    ToolSpec,
    hookimpl,
    parse_arguments,
    result_text,
)

from ._drive import describe_error
from ._kit import Failed, KitConfig, Skipped, require, run_check_body
from ._leaks import leftover_tasks, leftover_threads, live_tasks, live_threads
from ._report import CheckResult

__all__ = [
    "TOOL_CHECKS",
    "ToolCheck",
    "ToolSubject",
    "check_tool_cancellation",
    "check_tool_concurrency",
    "check_tool_declaration",
    "check_tool_errors",
    "check_tool_example_arguments",
    "check_tool_no_leaks",
    "check_tool_result",
    "tool_check",
]

_RESULT_CLIP = 60


@dataclass(frozen=True, slots=True)
class ToolSubject:
    """A server skill under test, and the arguments its author gives the kit.

    Attributes:
        spec: the skill (from the plugin's hook, or built directly).
        example_arguments: arguments the tool serves (valid against its schema).
        slow_arguments: arguments that make a call take long enough to cancel it mid-way
            (``None``: cancellation is checked at the start of a call only).
        failing_arguments: valid arguments the tool refuses with ``ToolFailed`` (``None``:
            ``tool.errors`` is skipped).
        config: the kit's thresholds (``tool_cancel_deadline_s``, ``tool_timeout_s``...).
    """

    spec: ToolSpec
    example_arguments: Mapping[str, Any]
    slow_arguments: Mapping[str, Any] | None = None
    failing_arguments: Mapping[str, Any] | None = None
    config: KitConfig = field(default_factory=KitConfig)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def timeout_s(self) -> float:
        """The longest one call may take: the spec's ``timeout_s``, else the kit's default."""
        return self.spec.timeout_s or self.config.tool_timeout_s

    def arguments(self, which: str = "example") -> dict[str, Any]:
        """The author's arguments as the engine hands them over: parsed from JSON text and
        validated against the schema (a fresh copy each time).

        Raises:
            Failed: they are not JSON, or not valid against the schema.
        """
        given = getattr(self, f"{which}_arguments")
        try:
            text = json.dumps(given, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise Failed(f"the {which} arguments are not JSON: {exc}") from exc
        try:  # exactly as the engine parses and validates a model's arguments
            arguments = parse_arguments(text, self.spec.parameters)
        except ArgumentsInvalid as exc:
            raise Failed(f"the {which} arguments do not match the schema: {exc}") from exc
        return arguments

    def context(self, call: int = 1) -> ToolContext:
        """The context of the kit's ``call``-th call."""
        return ToolContext(
            tenant="conformance", session_id="conformance", turn_id=1, call_id=f"kit-call-{call}"
        )


ToolBody = Callable[[ToolSubject], Awaitable[str]]


class ToolCheck:
    """One contract check of a server skill. ``await check(subject)`` returns a
    :class:`~scaivoice.conformance.CheckResult`.

    Attributes:
        name: ``"tool.<check>"``.
        kind: ``"tool"``.
        description: one line: what the check asserts.
    """

    kind = "tool"

    def __init__(self, name: str, body: ToolBody) -> None:
        self.name = name
        self.description = ((body.__doc__ or "").strip().splitlines() or [""])[0]
        self._body = body
        self.__doc__ = body.__doc__
        self.__name__ = getattr(body, "__name__", name)

    def __repr__(self) -> str:
        return f"<ToolCheck {self.name}>"

    async def __call__(self, subject: ToolSubject) -> CheckResult:
        """Run the check against ``subject``.

        Never raises for a skill's misbehaviour: that is a failed result. Cancelling the call
        cancels the check (and the handler call in progress).
        """
        return await run_check_body(
            self.name,
            functools.partial(self._body, subject),
            timeout_s=subject.config.check_timeout_s,
            culprit="the tool",
        )


def tool_check(name: str) -> Callable[[ToolBody], ToolCheck]:
    """Turn a check body into a :class:`ToolCheck` named ``name``."""

    def wrap(body: ToolBody) -> ToolCheck:
        return ToolCheck(name, body)

    return wrap


# --------------------------------------------------------------------------- calling a handler


@dataclass(slots=True)
class _Call:
    """What one handler call did. Times are seconds after the call started."""

    result: Any = None
    error: Exception | None = None
    started_at: float = 0.0
    returned_s: float = 0.0
    cancelled_caught: bool = False

    @property
    def returned_at(self) -> float:
        """When the call returned, on trio's clock."""
        return self.started_at + self.returned_s

    @property
    def ms(self) -> float:
        return self.returned_s * 1000


async def _invoke(subject: ToolSubject, arguments: dict[str, Any], call: int) -> Any:
    """``await spec.handler(arguments, context)``; a handler that returns no awaitable fails."""
    pending = subject.spec.handler(arguments, subject.context(call))
    if not inspect.isawaitable(pending):
        raise Failed(
            f"the handler returned {type(pending).__name__}, not an awaitable: make it an async def"
        )
    return await pending


async def _call(
    subject: ToolSubject,
    arguments: dict[str, Any],
    *,
    call: int = 1,
    scope: trio.CancelScope | None = None,
) -> _Call:
    """Call the handler inside ``scope`` (a fresh one if none) and record what it did."""
    outcome = _Call(started_at=trio.current_time())
    scope = scope or trio.CancelScope()
    with scope:
        try:
            outcome.result = await _invoke(subject, arguments, call)
        except Failed:
            raise
        except Exception as exc:
            outcome.error = exc
    outcome.returned_s = trio.current_time() - outcome.started_at
    outcome.cancelled_caught = scope.cancelled_caught
    return outcome


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= _RESULT_CLIP else text[: _RESULT_CLIP - 3] + "...")


def _outcome(outcome: _Call, what: str) -> str:
    """Check a call that ran to its end: a JSON-serialisable result, or ``ToolFailed`` with a
    message. Returns how it ended, for the detail.

    Raises:
        Failed: another exception, an empty ``ToolFailed``, a result that is not JSON.
    """
    error = outcome.error
    if isinstance(error, ToolFailed):
        require(bool(str(error).strip()), f"{what} raised ToolFailed without a message")
        return f"refused ({error.code}: {_clip(str(error))})"
    if error is not None:
        raise Failed(
            f"{what} raised {describe_error(error)}: raise ToolFailed for a failure the model "
            "should hear; anything else is reported as tool_failed and logged as a bug"
        )
    try:
        text = result_text(outcome.result)
    except (TypeError, ValueError) as exc:
        raise Failed(f"{what}: the result is not JSON-serialisable: {exc}") from exc
    return f"returned {_clip(text)} ({len(text.encode())} bytes)"


class _Declares:
    """A plugin that declares one skill: the kit loads it as the engine loads plugins."""

    def __init__(self, spec: ToolSpec) -> None:
        self._spec = spec

    @hookimpl
    def scaivoice_tools(self) -> list[ToolSpec]:
        return [self._spec]


# --------------------------------------------------------------------------- checks


@tool_check("tool.declaration")
async def check_tool_declaration(subject: ToolSubject) -> str:
    """The name, description, parameters schema, permissions and timeout are valid."""
    spec = subject.spec
    problems: list[str] = []
    if not isinstance(spec, ToolSpec):
        raise Failed(f"{spec!r} is not a ToolSpec")
    # What the plugin host checks when it loads the skill: the name, the schema, the version.
    host = PluginHost()
    host.register(_Declares(spec), name="conformance")
    try:
        host.tool_specs()
    except PluginContractError as exc:
        problems.append(str(exc))
    if not isinstance(spec.description, str) or not spec.description.strip():
        problems.append("the description is empty: the model reads it to decide when to call")
    if not callable(spec.handler):
        problems.append(f"the handler {spec.handler!r} is not callable")
    if not isinstance(spec.permissions, frozenset) or not all(
        isinstance(p, str) and p for p in spec.permissions
    ):
        problems.append(f"permissions {spec.permissions!r} must be a frozenset of names")
    if spec.timeout_s is not None and not spec.timeout_s > 0:
        problems.append(f"timeout_s {spec.timeout_s!r} must be positive (or None)")
    require(not problems, "; ".join(problems))
    properties = spec.parameters.get("properties") or {}
    required = spec.parameters.get("required") or []
    return (
        f"{spec.name}: {len(properties)} parameter(s), {len(required)} required; "
        f"permissions {sorted(spec.permissions) or 'none'}; "
        f"timeout {'engine default' if spec.timeout_s is None else f'{spec.timeout_s:g} s'}"
    )


@tool_check("tool.example_arguments")
async def check_tool_example_arguments(subject: ToolSubject) -> str:
    """The author's example (and slow, failing) arguments are valid against the schema."""
    checked = ["example"]
    subject.arguments("example")
    for which in ("slow", "failing"):
        if getattr(subject, f"{which}_arguments") is not None:
            subject.arguments(which)
            checked.append(which)
    return f"valid: {', '.join(checked)} arguments"


@tool_check("tool.result")
async def check_tool_result(subject: ToolSubject) -> str:
    """The example call returns a JSON-serialisable result (or raises ToolFailed) in time."""
    arguments = subject.arguments()
    limit = subject.timeout_s
    with trio.move_on_after(limit) as deadline:
        outcome = await _call(subject, arguments)
    if deadline.cancelled_caught:
        raise Failed(f"the example call did not return within {limit:g} s (its timeout)")
    how = _outcome(outcome, "the example call")
    return f"{how} in {outcome.ms:.0f} ms"


@tool_check("tool.errors")
async def check_tool_errors(subject: ToolSubject) -> str:
    """Arguments the tool refuses raise ToolFailed with a message, not another exception."""
    if subject.failing_arguments is None:
        raise Skipped("no failing_arguments given: give arguments the tool must refuse")
    arguments = subject.arguments("failing")
    with trio.move_on_after(subject.timeout_s) as deadline:
        outcome = await _call(subject, arguments)
    if deadline.cancelled_caught:
        raise Failed(f"the failing call did not return within {subject.timeout_s:g} s")
    if outcome.error is None:
        raise Failed(
            f"the failing arguments gave a result ({_clip(repr(outcome.result))}): "
            "raise ToolFailed to tell the model why the tool cannot serve them"
        )
    return _outcome(outcome, "the failing call")


@tool_check("tool.cancellation")
async def check_tool_cancellation(subject: ToolSubject) -> str:
    """A call cancelled at its start (and, with slow arguments, mid-way) returns promptly."""
    deadline = subject.config.tool_cancel_deadline_s
    # At its start: the scope is cancelled before the handler runs (the user interrupted as
    # the model's call arrived). A handler that blocks before its first checkpoint shows here.
    scope = trio.CancelScope()
    scope.cancel()
    early = await _call(subject, subject.arguments(), scope=scope)
    _cancelled(early, "a call cancelled at its start", 0.0, deadline)
    how = "cancelled at its first checkpoint" if early.cancelled_caught else "had no checkpoint"
    detail = f"at its start: returned in {early.ms:.0f} ms ({how})"
    if subject.slow_arguments is None:
        return detail + "; give slow_arguments to check a call cancelled mid-way"
    slow = subject.arguments("slow")
    scope = trio.CancelScope()
    calls: list[_Call] = []

    async def slow_call() -> None:
        calls.append(await _call(subject, slow, call=2, scope=scope))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_call)
        with trio.move_on_after(subject.timeout_s / 2):
            await trio.testing.wait_all_tasks_blocked()  # the handler waits on something
        cancelled_at = trio.current_time()
        scope.cancel()
    (outcome,) = calls
    if outcome.returned_at < cancelled_at:
        raise Failed(
            f"the slow call returned in {outcome.ms:.0f} ms, before the kit could cancel it: "
            "slow_arguments must make a call that takes longer"
        )
    _cancelled(outcome, "a call cancelled mid-way", cancelled_at - outcome.started_at, deadline)
    latency = outcome.returned_at - cancelled_at
    return detail + f"; mid-way: returned {latency * 1000:.0f} ms after the cancel"


def _cancelled(outcome: _Call, what: str, cancelled_s: float, deadline_s: float) -> None:
    """Fail unless a call cancelled ``cancelled_s`` after it started returned within
    ``deadline_s`` of the cancel, raising nothing but ``ToolFailed`` (or ``Cancelled``)."""
    latency = outcome.returned_s - cancelled_s
    if latency > deadline_s:
        raise Failed(
            f"{what} took {latency * 1000:.0f} ms to return (> {deadline_s * 1000:.0f} ms): "
            "blocking work belongs in trio.to_thread.run_sync in short pieces, and long work "
            "must not be shielded"
        )
    if outcome.error is not None and not isinstance(outcome.error, ToolFailed):
        raise Failed(f"{what} raised {describe_error(outcome.error)} (let Cancelled through)")


@tool_check("tool.concurrency")
async def check_tool_concurrency(subject: ToolSubject) -> str:
    """Concurrent calls (one handler serves every session) all end as a lone call does."""
    n = subject.config.concurrency
    outcomes: list[_Call] = [_Call() for _ in range(n)]

    async def one(index: int) -> None:
        outcomes[index] = await _call(subject, subject.arguments(), call=index + 1)

    with trio.move_on_after(subject.timeout_s) as deadline:
        async with trio.open_nursery() as nursery:
            for index in range(n):
                nursery.start_soon(one, index)
    if deadline.cancelled_caught:
        raise Failed(f"{n} concurrent calls did not all return within {subject.timeout_s:g} s")
    hows = [_outcome(o, f"concurrent call {i + 1} of {n}") for i, o in enumerate(outcomes)]
    slowest = max(o.ms for o in outcomes)
    return f"{n} concurrent calls: {hows[0]} (slowest {slowest:.0f} ms)"


@tool_check("tool.no_leaks")
async def check_tool_no_leaks(subject: ToolSubject) -> str:
    """No trio task and no busy thread outlives a call (after a grace period)."""
    grace = subject.config.leak_grace_s
    await _call(subject, subject.arguments())  # process-wide pools made once are not leaks
    tasks, threads = live_tasks(), live_threads()
    await _call(subject, subject.arguments(), call=2)
    scope = trio.CancelScope()
    scope.cancel()
    await _call(subject, subject.arguments(), call=3, scope=scope)
    stray = await leftover_tasks(tasks, grace_s=grace)
    require(
        not stray,
        f"calls returned but left trio tasks running: {', '.join(repr(t.name) for t in stray)} "
        "(run them in a nursery inside the handler)",
    )
    busy = await leftover_threads(threads, grace_s=grace)
    require(not busy, f"threads still busy {grace:g} s after the calls: {[t.name for t in busy]}")
    return "no trio task and no thread outlived a call"


#: Every tool check, in the order the runner runs them.
TOOL_CHECKS = (
    check_tool_declaration,
    check_tool_example_arguments,
    check_tool_result,
    check_tool_errors,
    check_tool_cancellation,
    check_tool_concurrency,
    check_tool_no_leaks,
)
