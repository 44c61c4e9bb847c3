"""Tools: client tool calls, their results, cancellation and errors (§2.1 ``tool.result``,
§2.2 ``tool.call`` / ``tool.cancel``, §2.3 tool keys, §4.7, §5.1, §7).

The checks that need the model to call a tool run only against a server that lists
``tools_enabled`` in ``session.started``'s ``capabilities.features``, and only when the options
do not say its model cannot be driven to call one (``--no-tool-calls``). They declare the
suite's own tools (``get_weather``, ``get_time``) and ask for them with the options' prompts.
A model that makes no call fails ``tools.call_shape``; the other checks are then skipped.

``tools.invalid_schema`` runs against any server that knows the ``tools`` key, and
``tools.result_without_tools`` against any server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from .. import spec
from ..client_tools import SUITE_TOOLS, WEATHER_TOOL, argument_problems
from ..context import SuiteContext
from ..invariants import (
    audio_bracketing,
    interrupted_turns,
    speaking_before_audio,
    text_deltas,
    tool_ordering,
)
from ..outcome import Failed, Notes, Skipped
from ..registry import check
from ..session import LiveSession, Turn, start_session
from ..wire import Received
from ._common import (
    SHORT_TEXT,
    expect_error,
    features,
    refused_update,
    shown,
    states,
    survives,
)

_CONFIG: Mapping[str, Any] = {"tools_enabled": True, "tools": [dict(t) for t in SUITE_TOOLS]}
_TOOLS = {str(t["name"]): t for t in SUITE_TOOLS}
_RESULTS: Mapping[str, Any] = {"get_weather": {"temp_c": 21}, "get_time": "14:05"}
_LATE_RESULT = {"temp_c": -40}
_ROUND_S = 1.0
"""§5.1: all calls of one round are sent at once; later calls of the round come within this."""
_STRAGGLERS_S = 0.3
_TIMEOUT_SLACK_S = 0.2
_NO_CALL = "the model made no tool call (tools.call_shape says why)"


class _Calls:
    """The client side of a session's tool calls: what was answered, and when (for §4.7)."""

    def __init__(self, live: LiveSession) -> None:
        self.live = live
        self.answered: dict[str, float] = {}
        self.handled: set[Any] = set()

    async def answer(self, call: Received) -> None:
        """Send the ``tool.result`` of ``call``: its tool's canned result."""
        call_id = call.get("call_id")
        self.handled.add(call_id)
        result = _RESULTS.get(str(call.get("name")), "done")
        at = await self.live.conn.send(
            {"type": "tool.result", "call_id": call_id, "result": result}
        )
        if isinstance(call_id, str):
            self.answered.setdefault(call_id, at)

    async def answer_until_done(self, turn: Turn) -> Received:
        """Answer every call of ``turn`` not yet handled until its ``agent.text.done`` comes;
        then wait for the turn's end (§3.1). Returns the ``agent.text.done``."""
        while True:
            mine = self.live.items[turn.start :]
            for item in mine:
                if _is_call(item, turn) and item.get("call_id") not in self.handled:
                    await self.answer(item)
            done = [i for i in mine if _is_done(i, turn)]
            if done:
                break
            await self.live.conn.expect(
                f"a tool.call or the agent.text.done of turn {turn.turn_id}",
                lambda i: _is_call(i, turn) or _is_done(i, turn),
                self.live.ctx.options.response_timeout_s,
            )
        await self.live.wait_turn_end(turn)
        return done[0]

    def judge(self, notes: Notes) -> None:
        """The ordering guarantees of §4 over the whole session."""
        items = self.live.items
        notes.violations_from(tool_ordering(items, self.answered))
        notes.violations_from(interrupted_turns(items))
        notes.violations_from(
            audio_bracketing(items, output_rate=self.live.output_rate, complete=True)
        )
        notes.violations_from(speaking_before_audio(items))
        notes.violations_from(text_deltas(items))


def _is_call(item: Received, turn: Turn) -> bool:
    return item.type == "tool.call" and item.get("turn_id") == turn.turn_id


def _is_done(item: Received, turn: Turn) -> bool:
    return item.type == "agent.text.done" and item.get("turn_id") == turn.turn_id


async def _seen_or_expect(
    live: LiveSession, start: int, what: str, predicate: Callable[[Received], bool], timeout: float
) -> Received:
    """The first frame since ``live.items[start]`` that matches, read already or to come."""
    for item in live.items[start:]:
        if predicate(item):
            return item
    return await live.conn.expect(what, predicate, timeout)


async def _first_call(live: LiveSession, turn: Turn) -> Received | None:
    """The first ``tool.call`` of ``turn``; None when the turn's reply ended without one."""
    item = await _seen_or_expect(
        live,
        turn.start,
        f"a tool.call of turn {turn.turn_id}",
        lambda i: _is_call(i, turn) or _is_done(i, turn),
        live.ctx.options.response_timeout_s,
    )
    return item if item.type == "tool.call" else None


def _shape(call: Received, notes: Notes) -> None:
    """§2.2 tool.call (of the turn asked): a call id, a declared tool, arguments fitting its
    schema."""
    call_id = call.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        notes.violation(f"tool.call has call_id {call_id!r}, expected a non-empty string")
    name = call.get("name")
    tool = _TOOLS.get(str(name))
    if tool is None:
        notes.violation(
            f"tool.call names {name!r}, a tool the client did not declare (§2.2: the model "
            f"called one of the client's tools; declared: {', '.join(_TOOLS)})"
        )
        return
    for problem in argument_problems(call.get("arguments"), tool):
        notes.violation(
            f"tool.call {call_id!r} ({name}): {problem} (§5.1: arguments are validated against "
            "the tool's parameters before tool.call is sent)"
        )


@asynccontextmanager
async def _tool_session(
    ctx: SuiteContext, label: str, **config: Any
) -> AsyncIterator[tuple[LiveSession, _Calls]]:
    """A session with the suite's tools and ``tools_enabled``; skips a server without them."""
    if not ctx.options.tool_calls:
        raise Skipped("the options say the server's model cannot be driven to call a tool")
    async with ctx.session(label, {**_CONFIG, **config}) as live:
        if "tools_enabled" not in features(live):
            raise Skipped("the server does not list tools_enabled in capabilities.features")
        if live.warned("feature_unavailable", "tools_enabled"):
            raise Failed(
                "the server lists tools_enabled in capabilities.features, but warned "
                "feature_unavailable for it (§2.2: features lists what it implements)"
            )
        yield live, _Calls(live)


async def _late_result(live: LiveSession, calls: _Calls, call_id: Any, notes: Notes) -> None:
    """A ``tool.result`` for a cancelled call: ``warning tool_result_late``; no reply starts
    and the session goes on (§5.1, §7)."""
    mark = len(live.items)
    calls.handled.add(call_id)
    await live.conn.send({"type": "tool.result", "call_id": call_id, "result": _LATE_RESULT})
    what = f"a tool.result for the cancelled call {call_id!r}"
    try:
        answer = await live.conn.expect(
            f"warning tool_result_late for {what}",
            lambda i: (
                i.type == "error" or (i.type == "warning" and i.get("code") == "tool_result_late")
            ),
            live.ctx.options.frame_timeout_s,
        )
    except Failed as exc:
        notes.violation(f"{what}: {exc} (§5.1, §7: warning tool_result_late)")
    else:
        if answer.type == "error":
            notes.violation(
                f"{what} was answered with {answer.describe()}, expected warning "
                "tool_result_late (§7)"
            )
    await live.conn.until_quiet(_STRAGGLERS_S, live.ctx.options.frame_timeout_s)
    await survives(live.conn, what, live.ctx.options.frame_timeout_s, notes)
    started = states(live.items[mark:])
    if started:
        notes.violation(
            f"{what} changed the state ({shown(started)}); §5.1: a late result is recorded, "
            "never spoken"
        )


async def _next_turn(live: LiveSession, calls: _Calls, notes: Notes) -> None:
    """The session goes on: a typed turn gets its reply (its calls, if any, are answered)."""
    turn = await live.typed_turn(SHORT_TEXT, wait_end=False)
    done = await calls.answer_until_done(turn)
    if done.get("interrupted") is not False:
        notes.violation(f"the next turn's agent.text.done says interrupted: {done.describe()}")


# --------------------------------------------------------------------------- checks


@check(
    "tools.call_shape",
    "a typed request for a client tool yields tool.call (turn_id, call_id, name, arguments "
    "fitting the schema); its tool.result leads to agent.text.done",
    "§2.1 tool.result, §2.2 tool.call, §2.3 tools, §4.7, §5.1",
)
async def call_shape(ctx: SuiteContext, notes: Notes) -> None:
    async with _tool_session(ctx, "tools-call") as (live, calls):
        turn = await live.typed_turn(ctx.options.tool_prompt, wait_end=False)
        thinking = live.items[-1]  # the turn's first state: typed_turn read up to it
        call = await _first_call(live, turn)
        if call is None:
            done = next(i for i in live.items[turn.start :] if _is_done(i, turn))
            await live.wait_turn_end(turn)
            raise Failed(
                f"the model made no tool call for {ctx.options.tool_prompt!r}; it replied "
                f"{str(done.get('text'))[:120]!r}. Give a prompt that makes it call get_weather "
                "(--tool-prompt), or say it cannot (--no-tool-calls)"
            )
        notes.measure("thinking_to_tool_call_ms", (call.t - thinking.t) * 1000.0)
        _shape(call, notes)
        notes.note(f"tool.call: {call.describe()}")
        done = await calls.answer_until_done(turn)
        if done.get("interrupted") is not False:
            notes.violation(f"nothing interrupted turn {turn.turn_id}, but {done.describe()}")
        last_answer = max(calls.answered.values(), default=done.t)
        notes.measure("result_to_text_done_ms", (done.t - last_answer) * 1000.0)
        notes.note(f"reply: {str(done.get('text'))[:80]!r}; {len(calls.answered)} call(s)")
        for item in live.items[turn.start :]:
            if _is_call(item, turn) and item is not call:
                _shape(item, notes)
        await live.end()
        calls.judge(notes)


@check(
    "tools.parallel",
    "a request for two tools: both tool.call frames outstanding at once, distinct call_ids, "
    "answered in reverse order, then agent.text.done",
    "§2.2 tool.call, §4.7, §5.1 (parallel calls)",
)
async def parallel(ctx: SuiteContext, notes: Notes) -> None:
    async with _tool_session(ctx, "tools-parallel") as (live, calls):
        turn = await live.typed_turn(ctx.options.parallel_tool_prompt, wait_end=False)
        first = await _first_call(live, turn)
        if first is None:
            await live.wait_turn_end(turn)
            raise Skipped(_NO_CALL)
        await live.conn.read_for(_ROUND_S)
        outstanding = [i for i in live.items[turn.start :] if _is_call(i, turn)]
        for call in outstanding:
            _shape(call, notes)
        ids = [c.get("call_id") for c in outstanding]
        notes.measure("calls_outstanding", len(outstanding))
        for call in reversed(outstanding):  # §5.1: answer them in any order
            await calls.answer(call)
        done = await calls.answer_until_done(turn)
        if done.get("interrupted") is not False:
            notes.violation(f"nothing interrupted turn {turn.turn_id}, but {done.describe()}")
        await live.end()
        calls.judge(notes)
    if len(outstanding) < 2:
        raise Skipped(
            f"the model made only one call ({ids[0]!r}) in its first round for "
            f"{ctx.options.parallel_tool_prompt!r} (--parallel-tool-prompt)"
        )
    if len(set(ids)) != len(ids):
        notes.violation(f"the outstanding calls share call_ids: {ids}")
    notes.note(f"{len(outstanding)} calls outstanding at once: {', '.join(map(str, ids))}")


@check(
    "tools.cancel_on_barge_in",
    "interrupt while a call waits: tool.cancel (interrupted) before state interrupted, nothing "
    "of the turn after it; a late tool.result gets warning tool_result_late; the session goes on",
    "§2.2 tool.cancel, §4.5, §4.7, §5.1 (barge-in), §7 tool_result_late",
)
async def cancel_on_barge_in(ctx: SuiteContext, notes: Notes) -> None:
    async with _tool_session(ctx, "tools-barge-in") as (live, calls):
        turn = await live.typed_turn(ctx.options.tool_prompt, wait_end=False)
        call = await _first_call(live, turn)
        if call is None:
            await live.wait_turn_end(turn)
            raise Skipped(_NO_CALL)
        call_id = call.get("call_id")
        sent = await live.conn.send({"type": "interrupt"})
        got = await live.conn.expect(
            f"state interrupted of turn {turn.turn_id}",
            lambda i: (
                (i.is_state("interrupted") and i.get("turn_id") == turn.turn_id)
                or (_is_done(i, turn) and i.get("interrupted") is False)
            ),
            ctx.options.response_timeout_s,
        )
        if not got.is_state():
            notes.violation(
                f"turn {turn.turn_id} completed although interrupted while call {call_id!r} "
                "waited (§3.1)"
            )
        else:
            notes.measure("interrupt_to_interrupted_ms", (got.t - sent) * 1000.0)
        cancels = [
            i
            for i in live.items[turn.start :]
            if i.type == "tool.cancel" and i.get("call_id") == call_id
        ]
        for cancel in cancels:
            notes.measure("interrupt_to_cancel_ms", (cancel.t - sent) * 1000.0)
            if cancel.get("reason") != "interrupted":
                notes.violation(
                    f"the barge-in's tool.cancel says reason {cancel.get('reason')!r}, expected "
                    "interrupted (§2.2)"
                )
        await live.conn.until_quiet(_STRAGGLERS_S, ctx.options.frame_timeout_s)
        if not cancels:  # late or never: §4.7 is judged below; here only the record
            notes.note(f"no tool.cancel for {call_id!r} by the end of the turn")
        await _late_result(live, calls, call_id, notes)
        await _next_turn(live, calls, notes)
        await live.end()
        calls.judge(notes)


@check(
    "tools.timeout",
    "with a small tool_timeout_s, an unanswered call gets tool.cancel (timeout) and warning "
    "tool_timeout; the turn goes on to agent.text.done",
    "§2.2 tool.cancel, §2.3 tool_timeout_s, §5.1 (timeout), §7 tool_timeout",
)
async def timeout(ctx: SuiteContext, notes: Notes) -> None:
    limit = ctx.options.tool_timeout_s
    async with _tool_session(ctx, "tools-timeout", tool_timeout_s=limit) as (live, calls):
        turn = await live.typed_turn(ctx.options.tool_prompt, wait_end=False)
        call = await _first_call(live, turn)
        if call is None:
            await live.wait_turn_end(turn)
            raise Skipped(_NO_CALL)
        call_id = call.get("call_id")
        calls.handled.add(call_id)  # never answered in time
        cancel = await _seen_or_expect(
            live,
            turn.start,
            f"tool.cancel of call {call_id!r} after tool_timeout_s {limit:g}",
            lambda i: i.type == "tool.cancel" and i.get("call_id") == call_id,
            limit + ctx.options.frame_timeout_s,
        )
        elapsed = cancel.t - call.t
        notes.measure("call_to_cancel_ms", elapsed * 1000.0)
        if cancel.get("reason") != "timeout":
            notes.violation(f"tool.cancel says reason {cancel.get('reason')!r}, expected timeout")
        if elapsed < limit - _TIMEOUT_SLACK_S:
            notes.violation(
                f"call {call_id!r} was cancelled {elapsed:.2f} s after it was sent, before "
                f"tool_timeout_s ({limit:g} s)"
            )
        try:
            await _seen_or_expect(
                live,
                turn.start,
                "warning tool_timeout",
                lambda i: i.type == "warning" and i.get("code") == "tool_timeout",
                ctx.options.frame_timeout_s,
            )
        except Failed as exc:
            notes.violation(f"{exc} (§5.1, §7: the server warns tool_timeout)")
        done = await calls.answer_until_done(turn)
        if done.get("interrupted") is not False:
            notes.violation(
                f"the turn ended interrupted after the timeout ({done.describe()}); §5.1: the "
                "model is told the tool failed and the reply goes on"
            )
        notes.note(f"reply after the timeout: {str(done.get('text'))[:80]!r}")
        await _late_result(live, calls, call_id, notes)
        await live.end()
        calls.judge(notes)


@check(
    "tools.bad_results",
    "tool.result for an unknown call_id gets error tool_call_unknown, a second result for a "
    "call tool_result_duplicate; both non-fatal, the session goes on",
    "§2.1 tool.result, §7 tool_call_unknown, tool_result_duplicate",
)
async def bad_results(ctx: SuiteContext, notes: Notes) -> None:
    timeout_s = ctx.options.frame_timeout_s
    async with _tool_session(ctx, "tools-bad-results") as (live, calls):
        mark = len(live.items)
        await live.conn.send(
            {"type": "tool.result", "call_id": "conformance-no-such-call", "result": 1}
        )
        await expect_error(
            live.conn, "tool_call_unknown", "a tool.result for an unknown call_id", timeout_s, notes
        )
        await survives(live.conn, "a tool.result for an unknown call_id", timeout_s, notes)
        if states(live.items[mark:]):
            notes.violation(
                f"a tool.result for no call changed the state: {states(live.items[mark:])}"
            )
        turn = await live.typed_turn(ctx.options.tool_prompt, wait_end=False)
        call = await _first_call(live, turn)
        if call is None:
            await live.wait_turn_end(turn)
            await live.end()
            raise Skipped(f"{_NO_CALL}: the duplicate result could not be sent")
        await calls.answer_until_done(turn)
        what = f"a second tool.result for call {call.get('call_id')!r}"
        await live.conn.send(
            {"type": "tool.result", "call_id": call.get("call_id"), "result": _LATE_RESULT}
        )
        await expect_error(live.conn, "tool_result_duplicate", what, timeout_s, notes)
        await survives(live.conn, what, timeout_s, notes)
        await _next_turn(live, calls, notes)
        await live.end()
        calls.judge(notes)


def _tool(name: str, parameters: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": "A conformance tool.",
        "parameters": parameters,
    }


@check(
    "tools.invalid_schema",
    "client tools whose parameters are not an object schema, duplicate names, a server tool's "
    "name: error invalid_tools; the start / update is refused",
    "§2.3 tools, §7 invalid_tools",
)
async def invalid_schema(ctx: SuiteContext, notes: Notes) -> None:
    timeout_s = ctx.options.frame_timeout_s
    array = {"tools": [_tool("conformance_list", {"type": "array"})]}
    what = "session.start with a tool whose parameters are {type: array}"
    async with ctx.connect("tools-invalid") as conn:
        await conn.send(
            {"type": "session.start", "protocol": spec.PROTOCOL_VERSION, "config": array}
        )
        answer = await conn.expect(
            f"the answer to {what}",
            lambda i: i.type in ("error", "session.started"),
            timeout_s,
        )
        if answer.type == "error" and answer.get("code") == "unknown_config_key":
            raise Skipped("the server does not know the tools config key (unknown_config_key)")
        if answer.type == "session.started":
            raise Failed(f"{what} was accepted; §2.3, §7: invalid_tools, the start is refused")
        if answer.get("code") != "invalid_tools":
            notes.violation(f"{what} was answered with {answer.describe()}, expected invalid_tools")
        elif answer.get("fatal") is not False:
            notes.violation(
                f"error invalid_tools has fatal: {answer.get('fatal')!r}, expected false"
            )
        if conn.closed:
            raise Failed(f"the server closed the connection after {what}; §7: send it again")
        live = await start_session(ctx, conn, {"tools": [dict(WEATHER_TOOL)]})
        bad_type = {"type": "object", "properties": {"city": {"type": 5}}}
        refusals: list[tuple[list[dict[str, Any]], tuple[str, ...]]] = [
            ([_tool("conformance_bad", bad_type)], ("invalid_tools",)),
            ([dict(WEATHER_TOOL), dict(WEATHER_TOOL)], ("invalid_tools",)),
            # §2.3: name 1-64 of A-Z a-z 0-9 _ -; a value out of range may be invalid_frame.
            ([_tool("no spaces!", {"type": "object"})], ("invalid_tools", "invalid_frame")),
            (
                [_tool(f"t{n}", {"type": "object"}) for n in range(spec.MAX_CLIENT_TOOLS + 1)],
                ("invalid_tools", "invalid_frame"),
            ),
        ]
        capabilities = live.started.get("capabilities")
        server_tools = capabilities.get("tools") if isinstance(capabilities, dict) else None
        if isinstance(server_tools, list) and server_tools and isinstance(server_tools[0], str):
            refusals.append(([_tool(server_tools[0], {"type": "object"})], ("invalid_tools",)))
        else:
            notes.note("the server lists no tools of its own: a shadowing name was not tried")
        for tools, codes in refusals:
            await refused_update(live, {"tools": tools}, codes, notes)
        await live.end()


@check(
    "tools.result_without_tools",
    "tool.result in a session without tools_enabled that made no call: error "
    "tools_unavailable, non-fatal",
    "§2.1 tool.result, §7 tools_unavailable",
)
async def result_without_tools(ctx: SuiteContext, notes: Notes) -> None:
    timeout_s = ctx.options.frame_timeout_s
    async with ctx.session("tools-unavailable") as live:
        what = "a tool.result in a session without tools_enabled"
        await live.conn.send({"type": "tool.result", "call_id": "conformance-call", "result": 1})
        await expect_error(live.conn, "tools_unavailable", what, timeout_s, notes)
        await survives(live.conn, what, timeout_s, notes)
        await live.end()
