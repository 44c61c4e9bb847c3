"""Tools in sessions: client tools, server skills, barge-in, late and bad results, permissions.

Driven through the real session engine with ``test-tool-llm``, the deterministic tool-calling
model (``call NAME with {JSON}`` in the user's text makes it call NAME).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from scaivoice.backends.testing import TestToolLlm
from scaivoice.engine import (
    PERMISSION_ADMIN,
    PERMISSION_USE,
    BackendSpec,
    LlmRequest,
    PluginHost,
    Principal,
    ToolCall,
    ToolContext,
    ToolFailed,
    ToolSpec,
    hookimpl,
)
from scaivoice.engine.frames import (
    AgentTextDone,
    ErrorFrame,
    ServerFrame,
    SessionStarted,
    ToolCallFrame,
    ToolCancel,
    WarningFrame,
)
from scaivoice.engine.testing import (
    AudioReceived,
    MemoryClient,
    memory_transport_pair,
    open_test_engine,
)

from .conftest import check_invariants, host_with

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


class RecordingToolLlm(TestToolLlm):
    """``test-tool-llm`` that keeps every request it was sent."""

    requests: ClassVar[list[LlmRequest]] = []

    async def respond(self, request: LlmRequest, output: Any) -> None:
        type(self).requests.append(request)
        await super().respond(request, output)


class Skills:
    """Server skills for the tests; events let a test see a skill run and be cancelled."""

    started = trio.Event()
    cancelled = trio.Event()
    contexts: ClassVar[list[ToolContext]] = []

    @classmethod
    def reset(cls) -> None:
        cls.started, cls.cancelled = trio.Event(), trio.Event()
        cls.contexts = []

    @staticmethod
    async def add(arguments: Mapping[str, Any], context: ToolContext) -> Any:
        Skills.contexts.append(context)
        return {"sum": arguments["a"] + arguments["b"]}

    @staticmethod
    async def wait_forever(arguments: Mapping[str, Any], context: ToolContext) -> Any:
        Skills.started.set()
        try:
            await trio.sleep_forever()
        finally:
            Skills.cancelled.set()

    @staticmethod
    async def broken(arguments: Mapping[str, Any], context: ToolContext) -> Any:
        raise ToolFailed("the database is down")

    @staticmethod
    async def buggy(arguments: Mapping[str, Any], context: ToolContext) -> Any:
        return {"value": object()}

    @hookimpl
    def scaivoice_tools(self) -> Iterator[ToolSpec]:
        numbers = {"type": "number"}
        yield ToolSpec(
            name="add",
            description="Add two numbers.",
            parameters={
                "type": "object",
                "properties": {"a": numbers, "b": numbers},
                "required": ["a", "b"],
            },
            handler=Skills.add,
        )
        yield ToolSpec(name="wait_forever", description="Never ends.", handler=Skills.wait_forever)
        yield ToolSpec(name="broken", description="Fails.", handler=Skills.broken)
        yield ToolSpec(name="buggy", description="Returns junk.", handler=Skills.buggy)
        yield ToolSpec(
            name="admin_only",
            description="Needs admin.",
            handler=Skills.add,
            permissions=frozenset({PERMISSION_ADMIN}),
        )


@asynccontextmanager
async def tool_session(
    overrides: dict[str, Any] | None = None,
    *,
    tenant: str = "default",
    permissions: frozenset[str] = frozenset({PERMISSION_USE}),
    **start: Any,
) -> AsyncIterator[tuple[MemoryClient, SessionStarted]]:
    """A session on ``rec-tool-llm`` with the test skills installed, started with ``start``."""
    from scaivoice.engine._session.runner import Session  # the memory runner's own entry

    RecordingToolLlm.requests = []
    Skills.reset()
    host: PluginHost = host_with(BackendSpec.for_class(RecordingToolLlm, name="rec-tool-llm"))
    host.register(Skills(), name="test-skills")
    overrides = dict(overrides or {})
    options = {"test-tts": {"ms_per_char": 2.0}, **overrides.pop("backends", {}).get("options", {})}
    config = {"backends": {"llm": "rec-tool-llm", "options": options}, **overrides}
    async with open_test_engine(config, host=host) as engine:
        transport, client = memory_transport_pair()
        principal = Principal(tenant=tenant, key_id="test", permissions=permissions)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Session(engine, principal, transport).run)
            started = await client.start(tools_enabled=True, **start)
            assert isinstance(started, SessionStarted), started
            client.engine = engine  # type: ignore[attr-defined]
            yield client, started
            nursery.cancel_scope.cancel()


async def say(client: MemoryClient, text: str) -> None:
    await client.send_json({"type": "text", "text": text})


def frames_of(items: list[ServerFrame | AudioReceived], kind: type[Any]) -> list[Any]:
    return [i for i in items if isinstance(i, kind)]


async def test_a_client_tool_is_called_and_its_result_spoken() -> None:
    async with tool_session(tools=[WEATHER]) as (client, started):
        assert "tools_enabled" in started.capabilities.features
        await say(client, 'call get_weather with {"city": "Paris"}')
        seen = await client.receive_until("tool.call")
        call = frames_of(seen, ToolCallFrame)[0]
        assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
        assert call.turn_id == 1
        await client.send_json(
            {"type": "tool.result", "call_id": call.call_id, "result": {"c": 21}}
        )
        seen += await client.receive_until("agent.text.done")
        done = frames_of(seen, AgentTextDone)[-1]
        assert done.text == 'Calling get_weather. The tools said: {"c": 21}.'
        assert not done.interrupted
        check_invariants(seen)
        # The second request carried the call and its result, each once.
        second = RecordingToolLlm.requests[-1]
        assert [m.role for m in second.messages[-2:]] == ["assistant", "tool"]
        assert second.messages[-2].tool_calls == (
            ToolCall(call.call_id, "get_weather", '{"city": "Paris"}'),
        )
        assert second.messages[-1].tool_call_id == call.call_id
        calls = client.engine.telemetry.tool_calls  # type: ignore[attr-defined]
        assert calls.labels("client", "answered")._value.get() == 1


async def test_parallel_client_calls_are_outstanding_together() -> None:
    time_tool = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
    async with tool_session(tools=[WEATHER, time_tool]) as (client, _):
        await say(client, 'call get_weather with {"city": "Oslo"} and call get_time')
        first = frames_of(await client.receive_until("tool.call"), ToolCallFrame)[0]
        second = frames_of(await client.receive_until("tool.call"), ToolCallFrame)[0]
        assert {first.name, second.name} == {"get_weather", "get_time"}
        assert first.call_id != second.call_id
        by_name = {first.name: first.call_id, second.name: second.call_id}
        await client.send_json(
            {"type": "tool.result", "call_id": by_name["get_time"], "result": "noon"}
        )
        await client.send_json(
            {"type": "tool.result", "call_id": by_name["get_weather"], "result": "rain"}
        )
        seen = await client.receive_until("agent.text.done")
        assert frames_of(seen, AgentTextDone)[-1].text.endswith("The tools said: rain; noon.")


async def test_a_server_skill_runs_with_its_context() -> None:
    async with tool_session() as (client, started):
        assert "add" in started.capabilities.tools
        assert "admin_only" not in started.capabilities.tools  # needs scaivoice:admin
        await say(client, 'call add with {"a": 2, "b": 40}')
        seen = await client.receive_until("agent.text.done")
        assert not frames_of(seen, ToolCallFrame)  # server skills never reach the client
        assert frames_of(seen, AgentTextDone)[-1].text.endswith('The tools said: {"sum": 42}.')
        (context,) = Skills.contexts
        assert (context.tenant, context.turn_id) == ("default", 1)


async def test_barge_in_cancels_client_calls_and_a_late_result_is_recorded_once() -> None:
    async with tool_session(tools=[WEATHER]) as (client, _):
        await say(client, 'call get_weather with {"city": "Rome"}')
        call = frames_of(await client.receive_until("tool.call"), ToolCallFrame)[0]
        await client.send_json({"type": "interrupt"})
        seen = await client.receive_until("tool.cancel")
        assert frames_of(seen, ToolCancel)[0] == ToolCancel(
            call_id=call.call_id, reason="interrupted"
        )
        seen += await client.receive_until("state", state="interrupted")
        check_invariants(seen)
        await client.send_json({"type": "tool.result", "call_id": call.call_id, "result": "sun"})
        late = frames_of(await client.receive_until("warning"), WarningFrame)[-1]
        assert late.code == "tool_result_late"
        await say(client, "and now?")
        seen = await client.receive_until("agent.text.done", turn_id=2)
        assert "sun" not in frames_of(seen, AgentTextDone)[-1].text  # never spoken
        history = RecordingToolLlm.requests[-1].messages
        calls = [c.id for m in history for c in m.tool_calls]
        results = [m for m in history if m.role == "tool"]
        assert calls == [call.call_id]  # recorded once, never re-issued
        assert len(results) == 1 and results[0].tool_call_id == call.call_id
        assert results[0].content.startswith("late result") and "sun" in results[0].content


async def test_barge_in_cancels_a_running_skill() -> None:
    async with tool_session() as (client, _):
        await say(client, "call wait_forever")
        with trio.fail_after(10):
            await Skills.started.wait()
        await client.send_json({"type": "interrupt"})
        await client.receive_until("state", state="interrupted")
        with trio.fail_after(10):
            await Skills.cancelled.wait()
        assert len([r for r in RecordingToolLlm.requests if r.tools]) == 1  # not re-issued


async def test_a_client_tool_that_does_not_answer_times_out() -> None:
    async with tool_session(tools=[WEATHER], tool_timeout_s=0.2) as (client, _):
        await say(client, 'call get_weather with {"city": "Lima"}')
        seen = await client.receive_until("agent.text.done")
        call = frames_of(seen, ToolCallFrame)[0]
        assert ToolCancel(call_id=call.call_id, reason="timeout") in frames_of(seen, ToolCancel)
        assert "tool_timeout" in [w.code for w in frames_of(seen, WarningFrame)]
        assert "did not answer within 0.2 s" in frames_of(seen, AgentTextDone)[-1].text


async def test_unknown_and_duplicate_results_are_errors_and_the_session_goes_on() -> None:
    async with tool_session(tools=[WEATHER]) as (client, _):
        await client.send_json({"type": "tool.result", "call_id": "nope", "result": 1})
        error = frames_of(await client.receive_until("error"), ErrorFrame)[-1]
        assert error.code == "tool_call_unknown" and not error.fatal
        await say(client, 'call get_weather with {"city": "Kyiv"}')
        call = frames_of(await client.receive_until("tool.call"), ToolCallFrame)[0]
        await client.send_json({"type": "tool.result", "call_id": call.call_id, "result": 1})
        await client.receive_until("agent.text.done")
        await client.send_json({"type": "tool.result", "call_id": call.call_id, "result": 2})
        error = frames_of(await client.receive_until("error"), ErrorFrame)[-1]
        assert error.code == "tool_result_duplicate"
        await say(client, "still there?")
        await client.receive_until("agent.text.done", turn_id=2)


async def test_malformed_arguments_are_repaired_or_told_to_the_model() -> None:
    async with tool_session(tools=[WEATHER]) as (client, _):
        await say(client, 'call get_weather with {city: "Paris"')  # unquoted key, no brace
        call = frames_of(await client.receive_until("tool.call"), ToolCallFrame)[0]
        assert call.arguments == {"city": "Paris"}
        await client.send_json({"type": "tool.result", "call_id": call.call_id, "result": "ok"})
        await client.receive_until("agent.text.done")
        await say(client, 'call get_weather with {"town": "Paris"}')  # breaks the schema
        seen = await client.receive_until("agent.text.done", turn_id=2)
        assert not frames_of(seen, ToolCallFrame)
        assert "tool_arguments_invalid" in [w.code for w in frames_of(seen, WarningFrame)]
        assert "'city' is a required property" in frames_of(seen, AgentTextDone)[-1].text


@pytest.mark.parametrize(
    ("text", "code", "told"),
    [
        ("call broken", "tool_failed", "the database is down"),
        ("call buggy", "tool_failed", "not JSON-serialisable"),
        ("call no_such_tool", "tool_unknown", "no tool named 'no_such_tool'"),
        ('call admin_only with {"a": 1, "b": 2}', "tool_forbidden", "no tool named"),
    ],
)
async def test_failing_tools_are_told_to_the_model(text: str, code: str, told: str) -> None:
    async with tool_session() as (client, _):
        await say(client, text)
        seen = await client.receive_until("agent.text.done")
        assert code in [w.code for w in frames_of(seen, WarningFrame)]
        assert told in frames_of(seen, AgentTextDone)[-1].text
        await say(client, "next")
        await client.receive_until("agent.text.done", turn_id=2)


async def test_admins_get_the_admin_skill() -> None:
    admin = frozenset({PERMISSION_USE, PERMISSION_ADMIN})
    async with tool_session(permissions=admin) as (_, started):
        assert "admin_only" in started.capabilities.tools


async def test_a_tenant_allow_list_limits_the_skills() -> None:
    overrides = {"tenants": {"acme": {"tools": ["ad*"]}}, "tools": {"allow": []}}
    async with tool_session(overrides, tenant="acme") as (_, started):
        assert started.capabilities.tools == ["add"]
    async with tool_session(overrides) as (client, started):
        assert started.capabilities.tools == []  # the default tenant: nothing allowed
        await say(client, 'call add with {"a": 1, "b": 1}')
        seen = await client.receive_until("agent.text.done")
        assert not Skills.contexts  # never ran: the model was offered no tools
        assert not RecordingToolLlm.requests  # a plain reply: generate(), no tools
        assert frames_of(seen, AgentTextDone)[-1].text.startswith("You said: call add")


@pytest.mark.parametrize(
    "tools",
    [
        [{"name": "x", "parameters": {"type": "array"}}],
        [{"name": "x", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}}],
        [WEATHER, WEATHER],
        [{"name": "add"}],  # shadows a server skill
    ],
)
async def test_bad_client_tools_are_refused(tools: list[dict[str, Any]]) -> None:
    async with tool_session() as (client, _):
        await client.send_json({"type": "session.update", "config": {"tools": tools}})
        error = frames_of(await client.receive_until("error"), ErrorFrame)[-1]
        assert error.code == "invalid_tools" and not error.fatal


async def test_the_filler_is_said_while_a_tool_takes_long() -> None:
    async with tool_session(
        tools=[WEATHER], tool_filler="One moment.", tool_filler_after_ms=50
    ) as (client, _):
        await say(client, 'call get_weather with {"city": "Bern"}')
        call = frames_of(await client.receive_until("tool.call"), ToolCallFrame)[0]
        while "One moment." not in getattr(await client.receive_frame(), "delta", ""):
            pass
        await client.send_json({"type": "tool.result", "call_id": call.call_id, "result": "snow"})
        seen = await client.receive_until("agent.text.done")
        text = frames_of(seen, AgentTextDone)[-1].text
        assert text.index("One moment.") < text.index("snow")


# ---------------------------------------------------------------- MCP tools in a session


MCP_SERVER = Path(__file__).parent / "mcp_servers" / "tools_server.py"


@pytest.mark.slow
async def test_an_mcp_servers_tools_are_called_in_a_session_and_a_crash_is_survived() -> None:
    pytest.importorskip("mcp")
    overrides = {
        "tools": {
            "mcp": {
                "demo": {
                    "command": [sys.executable, str(MCP_SERVER)],
                    "tools": ["weather", "crash", "slow"],
                }
            }
        }
    }
    async with tool_session(overrides) as (client, started):
        assert {"demo_weather", "demo_crash", "demo_slow"} <= set(started.capabilities.tools)
        assert "demo_echo" not in started.capabilities.tools  # filtered out by `tools`
        await say(client, 'call demo_weather with {"city": "Oslo"}')
        seen = await client.receive_until("agent.text.done")
        assert '"sky": "sunny"' in frames_of(seen, AgentTextDone)[-1].text
        await say(client, 'call demo_slow with {"seconds": 30}')
        await client.receive_until("state", state="thinking")
        await client.send_json({"type": "interrupt"})
        await client.receive_until("state", state="interrupted")  # the MCP call is cancelled
        await say(client, "call demo_crash")  # the server dies mid-call
        seen = await client.receive_until("agent.text.done", turn_id=3)
        assert "tool_server_unavailable" in [w.code for w in frames_of(seen, WarningFrame)]
        await say(client, "still there?")
        await client.receive_until("agent.text.done", turn_id=4)  # the session goes on


async def test_the_same_call_again_in_a_turn_is_answered_without_running_it_again() -> None:
    overrides = {
        "backends": {
            "options": {
                "rec-tool-llm": {"result_reply": 'Again: call get_weather with {"city": "Oslo"}'}
            }
        }
    }
    async with tool_session(overrides, tools=[WEATHER]) as (client, _):
        await say(client, 'call get_weather with {"city": "Oslo"}')
        call = frames_of(await client.receive_until("tool.call"), ToolCallFrame)[0]
        await client.send_json({"type": "tool.result", "call_id": call.call_id, "result": "rain"})
        seen = await client.receive_until("agent.text.done")
        assert not frames_of(seen, ToolCallFrame)  # the repeated call was not sent again
        requests = RecordingToolLlm.requests
        assert [bool(r.tools) for r in requests] == [True, True, False]  # then: answer now
        results = [m.content for m in requests[-1].messages if m.role == "tool"]
        assert results == ["rain", "rain"]  # one client call, answered twice
