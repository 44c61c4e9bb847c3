"""Tool calls of one session: what the model is offered, running calls, client results.

Per agent turn the session offers the model its client's ``tools`` and the server tools its
tenant and credential may use (:meth:`SessionTools.offer`). The model's calls of one round run
in parallel (:meth:`SessionTools.run_calls`), each under its deadline:

* a **server tool** (plugin skill, MCP tool): its handler is awaited;
* a **client tool**: ``tool.call`` goes out and the call waits for the client's ``tool.result``,
  which the dialogue hands to :meth:`SessionTools.deliver`.

Every call ends in exactly one :class:`~.history.ToolOutcome` (answered, failed, timeout or
interrupted) that the model reads. Barge-in cancels the turn's scope and with it the calls in
flight: :meth:`SessionTools.interrupted` then sends ``tool.cancel`` for the client calls and
records the outcomes, shielded by the turn's closing deadline. A client result that arrives
after its call ended is recorded as late on that same outcome and never spoken; one for an
unknown call, or a second one, is an ``error``. No call is ever re-issued.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from .._contract.tool_schemas import ArgumentsInvalid, parse_arguments, result_text
from .._contract.tools import ToolCall, ToolContext, ToolDefinition, ToolSpec
from .._errors import ToolFailed
from .._host.engine import Engine
from ..frames import (
    ClientTool,
    ErrorFrame,
    ServerFrame,
    SessionConfig,
    ToolCallFrame,
    ToolCancel,
    ToolResult,
    WarningFrame,
)
from .history import ToolOutcome

__all__ = ["OfferedTools", "SessionTools"]

log = logging.getLogger("scaivoice.session")


@dataclass(frozen=True, slots=True)
class OfferedTools:
    """The tools of one agent turn, by name: the client's and the server's."""

    client: Mapping[str, ClientTool]
    server: Mapping[str, ToolSpec]

    @property
    def definitions(self) -> tuple[ToolDefinition, ...]:
        client = tuple(
            ToolDefinition(t.name, t.description, t.parameters) for t in self.client.values()
        )
        return client + tuple(s.definition for s in self.server.values())

    def __bool__(self) -> bool:
        return bool(self.client or self.server)


@dataclass(slots=True)
class _ClientCall:
    turn_id: int
    outcome: ToolOutcome
    answered: trio.Event = field(default_factory=trio.Event)
    result: ToolResult | None = None


@dataclass(slots=True)
class _InFlight:
    turn_id: int
    call: ToolCall
    client: bool


class SessionTools:
    """The tool calls of one session.

    Args:
        engine: the opened engine (its tool registry and ``[tools]`` limits).
        tenant: the session's tenant (its allow-list applies).
        permissions: the session credential's permissions (tools may require some).
        session_id: passed to server tools in their :class:`ToolContext`.
        emit: sends a frame to the client.
    """

    def __init__(
        self,
        engine: Engine,
        tenant: str,
        permissions: frozenset[str],
        session_id: str,
        emit: Callable[[ServerFrame], Awaitable[None]],
    ) -> None:
        self._engine = engine
        self._limits = engine.config.tools
        self._tenant = tenant
        self._permissions = permissions
        self._session_id = session_id
        self._emit = emit
        self._pending: dict[str, _ClientCall] = {}
        self._ended: dict[str, ToolOutcome] = {}
        self._in_flight: dict[str, _InFlight] = {}
        self._ids = itertools.count(1)
        self._answered: dict[tuple[int, str, str], str] = {}  # (turn, tool, arguments) -> result
        self.calls = 0
        """Calls run in this session (telemetry)."""

    # ---------------------------------------------------------------- what is offered

    async def offer(self, config: SessionConfig) -> OfferedTools:
        """The tools the model may call in a turn under ``config`` (none without
        ``tools_enabled`` or with a language model that cannot call tools)."""
        if not config.tools_enabled or not self._engine.llm.capabilities.tools:
            return OfferedTools({}, {})
        client = {t.name: t for t in config.tools}
        server = await self._engine.tools.for_session(self._tenant, self._permissions)
        return OfferedTools(client, {n: s for n, s in server.items() if n not in client})

    # ---------------------------------------------------------------- running calls

    async def run_calls(
        self, turn_id: int, calls: list[ToolCall], offered: OfferedTools, config: SessionConfig
    ) -> list[ToolOutcome]:
        """Run one round's calls (from :meth:`prepare`) in parallel; their outcomes in order.

        Cancelling (barge-in) cancels every call of the round; :meth:`interrupted` records
        their outcomes afterwards.
        """
        outcomes: list[ToolOutcome | None] = [None] * len(calls)

        async def run_one(index: int, call: ToolCall) -> None:
            outcomes[index] = await self._run(turn_id, call, offered, config)

        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                self._in_flight[call.id] = _InFlight(turn_id, call, call.name in offered.client)
                nursery.start_soon(run_one, index, call)
        return [o for o in outcomes if o is not None]

    def prepare(self, calls: list[ToolCall]) -> list[ToolCall]:
        """The calls with ids never used before in this session (models repeat ids, or give
        none): call this before recording them, then :meth:`run_calls` them."""
        seen: set[str] = set()
        prepared = []
        for call in calls:
            if (
                not call.id
                or call.id in seen
                or call.id in self._ended
                or call.id in self._in_flight
            ):
                call = ToolCall(f"sv_call_{next(self._ids)}", call.name, call.arguments)
            seen.add(call.id)
            prepared.append(call)
        return prepared

    async def _run(
        self, turn_id: int, call: ToolCall, offered: OfferedTools, config: SessionConfig
    ) -> ToolOutcome:
        self.calls += 1
        client_tool = offered.client.get(call.name)
        spec = offered.server.get(call.name)
        if client_tool is None and spec is None:
            code = "tool_forbidden" if call.name in self._engine.tools.skills else "tool_unknown"
            return await self._fail(
                call, code, f"there is no tool named {call.name!r} available to you"
            )
        schema = client_tool.parameters if client_tool is not None else spec.parameters  # type: ignore[union-attr]
        try:
            arguments = parse_arguments(call.arguments, schema)
        except ArgumentsInvalid as exc:
            return await self._fail(
                call, "tool_arguments_invalid", f"invalid arguments for {call.name}: {exc}"
            )
        key = (turn_id, call.name, json.dumps(arguments, sort_keys=True))
        earlier = self._answered.get(key)
        if earlier is not None:
            # Small models often call again with the same arguments in the next round: the
            # tool is not run twice; the model reads the same answer.
            repeated = self._end(call, earlier, "answered")
            repeated.repeat = True
            return repeated
        if client_tool is not None:
            outcome = await self._run_client(turn_id, call, arguments, config)
        else:
            assert spec is not None
            outcome = await self._run_server(turn_id, call, spec, arguments)
        if outcome.status == "answered":
            self._answered[key] = outcome.content
        return outcome

    async def _run_server(
        self, turn_id: int, call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]
    ) -> ToolOutcome:
        timeout = min(spec.timeout_s or self._limits.call_timeout_s, self._limits.call_timeout_s)
        context = ToolContext(self._tenant, self._session_id, turn_id, call.id)
        try:
            with trio.fail_after(timeout):
                result = await spec.handler(arguments, context)
            text = result_text(result)
        except trio.TooSlowError:
            return await self._fail(
                call, "tool_timeout", f"{call.name} did not finish within {timeout:g} s"
            )
        except ToolFailed as exc:
            return await self._fail(call, exc.code, f"{call.name} failed: {exc}")
        except TypeError as exc:
            return await self._fail(call, "tool_failed", f"{call.name} failed: {exc}")
        except Exception as exc:  # a skill's bug: the model and the client are told, logged
            log.exception("tool %r raised an unmapped exception", call.name)
            return await self._fail(
                call, "tool_failed", f"{call.name} failed: {type(exc).__name__}: {exc}"
            )
        return self._end(call, self._cut(text), "answered")

    async def _run_client(
        self, turn_id: int, call: ToolCall, arguments: dict[str, Any], config: SessionConfig
    ) -> ToolOutcome:
        timeout = config.tool_timeout_s or self._limits.call_timeout_s
        outcome = ToolOutcome(call, "", "answered")
        pending = _ClientCall(turn_id, outcome)
        self._pending[call.id] = pending
        await self._emit(
            ToolCallFrame(turn_id=turn_id, call_id=call.id, name=call.name, arguments=arguments)
        )
        with trio.move_on_after(timeout):
            await pending.answered.wait()
        if pending.result is None:  # timed out (a barge-in cancels before this line)
            del self._pending[call.id]
            await self._emit(ToolCancel(call_id=call.id, reason="timeout"))
            await self._warn(
                "tool_timeout", f"no tool.result for {call.id} ({call.name}) within {timeout:g} s"
            )
            outcome.content = f"error: {call.name} did not answer within {timeout:g} s"
            outcome.status = "timeout"
            return self._end(call, outcome.content, "timeout", outcome)
        result = pending.result
        if result.error is not None:
            outcome.content, outcome.status = f"error: {call.name} failed: {result.error}", "failed"
        else:
            try:
                outcome.content = self._cut(result_text(result.result))
            except TypeError as exc:  # pragma: no cover - decoded JSON always serialises
                outcome.content, outcome.status = f"error: {exc}", "failed"
        return self._end(call, outcome.content, outcome.status, outcome)

    async def _fail(self, call: ToolCall, code: str, message: str) -> ToolOutcome:
        await self._warn(code, message)
        return self._end(call, f"error: {message}", "failed")

    def _end(
        self,
        call: ToolCall,
        content: str,
        status: Any,
        outcome: ToolOutcome | None = None,
    ) -> ToolOutcome:
        if outcome is None:
            outcome = ToolOutcome(call, content, status)
        flight = self._in_flight.pop(call.id, None)
        self._ended[call.id] = outcome
        source = "client" if flight is not None and flight.client else "server"
        self._engine.telemetry.tool_call(source, outcome.status)
        return outcome

    def _cut(self, text: str) -> str:
        limit = self._limits.max_result_bytes
        data = text.encode()
        if len(data) <= limit:
            return text
        kept = data[:limit].decode(errors="ignore")
        return f"{kept}\n[the result was cut at {limit} bytes]"

    # ---------------------------------------------------------------- barge-in

    async def interrupted(self, turn_id: int) -> list[ToolOutcome]:
        """Record the calls of ``turn_id`` still in flight as interrupted and send
        ``tool.cancel`` for the client's. Call it shielded, after the turn was cancelled."""
        outcomes: list[ToolOutcome] = []
        for call_id, flight in list(self._in_flight.items()):
            if flight.turn_id != turn_id:
                continue
            pending = self._pending.pop(call_id, None)
            outcome = (
                pending.outcome if pending is not None else ToolOutcome(flight.call, "", "failed")
            )
            outcome.content = (
                f"interrupted: the user spoke before {flight.call.name} finished; "
                "its result was not used"
            )
            outcome.status = "interrupted"
            outcomes.append(self._end(flight.call, outcome.content, "interrupted", outcome))
            if flight.client:
                await self._emit(ToolCancel(call_id=call_id, reason="interrupted"))
        return outcomes

    # ---------------------------------------------------------------- client results

    async def deliver(self, frame: ToolResult) -> None:
        """A ``tool.result`` from the client: hand it to its waiting call, or say why not."""
        pending = self._pending.pop(frame.call_id, None)
        if pending is not None:
            pending.result = frame
            pending.answered.set()
            return
        ended = self._ended.get(frame.call_id)
        if ended is None:
            await self._emit(
                ErrorFrame(
                    code="tool_call_unknown",
                    message=f"no tool call {frame.call_id!r} was made in this session",
                )
            )
        elif ended.status in ("interrupted", "timeout"):
            try:
                text = self._cut(result_text(frame.result)) if frame.error is None else frame.error
            except TypeError:  # pragma: no cover - decoded JSON always serialises
                text = "(unreadable)"
            reason = "the user interrupted" if ended.status == "interrupted" else "it timed out"
            ended.content = f"late result, received after {reason}; never spoken: {text}"
            ended.status = "late"
            await self._warn(
                "tool_result_late",
                f"the result of {frame.call_id} came after {reason}: recorded, not spoken",
            )
        else:
            await self._emit(
                ErrorFrame(
                    code="tool_result_duplicate",
                    message=f"tool call {frame.call_id!r} already has its result",
                )
            )

    async def _warn(self, code: str, message: str) -> None:
        await self._emit(WarningFrame(code=code, message=message))
