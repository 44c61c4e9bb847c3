"""Tools with the real embedded tool-capable model (Qwen2.5-Coder on llama.cpp) behind the real
server: a client tool from a typed and a spoken request, a server skill, barge-in during a call
and a late result.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ClassVar

import pytest
import trio

from scaivoice.engine import (
    PluginHost,
    RunningServer,
    ToolContext,
    ToolSpec,
    config_from_mapping,
    float_to_pcm16,
    hookimpl,
    resample_pcm16,
    serve,
)
from scaivoice.engine.client import VoiceClient, connect, frames

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name"}},
        "required": ["city"],
    },
}
PROMPT = (
    "You are a voice assistant. When the user asks about the weather, call get_weather. "
    "Answer briefly."
)
FRAME = 320 * 2  # 20 ms at 16 kHz


class Clock:
    """A server skill: the current time in a time zone (fixed, for the test)."""

    contexts: ClassVar[list[ToolContext]] = []

    @staticmethod
    async def now(arguments: Mapping[str, Any], context: ToolContext) -> Any:
        Clock.contexts.append(context)
        return {"zone": arguments.get("zone", "UTC"), "time": "14:05"}

    @hookimpl
    def scaivoice_tools(self) -> Iterator[ToolSpec]:
        yield ToolSpec(
            name="get_time",
            description="Get the current time in a time zone, such as Europe/Paris.",
            parameters={
                "type": "object",
                "properties": {"zone": {"type": "string", "description": "IANA time zone"}},
                "required": ["zone"],
            },
            handler=Clock.now,
        )


@asynccontextmanager
async def tool_server() -> AsyncIterator[RunningServer]:
    pytest.importorskip("xllamacpp")
    pytest.importorskip("faster_whisper")
    config = config_from_mapping(
        {
            "server": {"port": 0},
            "backends": {
                "llm": "llama-cpp",
                "options": {
                    "llama-cpp": {
                        # The 1.5B answers from tool results; the 0.5B keeps calling the tool.
                        "model": "qwen2.5-coder-1.5b",
                        "max_tokens": 80,
                        "temperature": 0.0,
                        "seed": 1,
                    }
                },
            },
        }
    )
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    host.register(Clock(), name="test-clock")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, host, shutdown_trigger=trio.sleep_forever)
        )
        yield server
        nursery.cancel_scope.cancel()


async def until(session: VoiceClient, kind: type[Any], timeout: float = 300) -> list[Any]:
    """Events up to and including the first of ``kind``."""
    seen: list[Any] = []
    with trio.fail_after(timeout):
        async for event in session.events():
            seen.append(event)
            if isinstance(event, kind):
                return seen
    raise AssertionError(f"the session ended before a {kind.__name__}: {seen}")


@pytest.fixture(scope="module")
def spoken_question() -> bytes:
    hibari = pytest.importorskip("hibari")
    pcm = float_to_pcm16(hibari.Hibari()("What is the weather in Paris today?", seed=0))
    return resample_pcm16(pcm, 24000, 16000)


async def test_the_model_calls_a_client_tool_from_a_typed_request() -> None:
    config = {"tools_enabled": True, "tools": [WEATHER], "system_prompt": PROMPT}
    async with tool_server() as server, connect(server.ws_url, config=config) as session:
        await session.send_text("What's the weather in Paris?")
        seen = await until(session, frames.ToolCallFrame)
        call = seen[-1]
        assert call.name == "get_weather"
        assert call.arguments["city"].lower().startswith("paris")
        await session.tool_result(call.call_id, {"sky": "sunny", "celsius": 21})
        done = (await until(session, frames.AgentTextDone))[-1]
        assert "21" in done.text or "sunny" in done.text.lower()


async def test_the_model_calls_a_client_tool_from_a_spoken_request(spoken_question: bytes) -> None:
    config = {"tools_enabled": True, "tools": [WEATHER], "system_prompt": PROMPT}
    async with tool_server() as server, connect(server.ws_url, config=config) as session:
        audio = b"\0\0" * 16 * 300 + spoken_question + b"\0\0" * 16 * 1500
        start = trio.current_time()
        for index, offset in enumerate(range(0, len(audio), FRAME)):
            await trio.sleep_until(start + index * 0.02)
            await session.send_audio(audio[offset : offset + FRAME])
        call = (await until(session, frames.ToolCallFrame))[-1]
        assert call.name == "get_weather"
        assert "paris" in json.dumps(call.arguments).lower()


async def test_the_model_calls_a_server_skill() -> None:
    Clock.contexts = []
    prompt = (
        "You are a voice assistant. When the user asks for the time, call get_time. Answer briefly."
    )
    config = {"tools_enabled": True, "system_prompt": prompt}
    async with tool_server() as server, connect(server.ws_url, config=config) as session:
        assert session.started is not None
        assert "get_time" in session.started.capabilities.tools
        await session.send_text("What time is it in Paris (Europe/Paris)?")
        done = (await until(session, frames.AgentTextDone))[-1]
        assert Clock.contexts, f"the skill was not called; the reply: {done.text!r}"
        assert Clock.contexts[0].turn_id == 1
        assert '"name"' not in done.text  # a call written as text is never spoken


async def test_a_barge_in_during_a_call_cancels_it_and_a_late_result_is_not_spoken() -> None:
    config = {"tools_enabled": True, "tools": [WEATHER], "system_prompt": PROMPT}
    async with tool_server() as server, connect(server.ws_url, config=config) as session:
        await session.send_text("What's the weather in Paris?")
        call = (await until(session, frames.ToolCallFrame))[-1]
        await session.interrupt()
        cancel = (await until(session, frames.ToolCancel))[-1]
        assert (cancel.call_id, cancel.reason) == (call.call_id, "interrupted")
        await session.tool_result(call.call_id, {"sky": "snowing"})
        warning = (await until(session, frames.WarningFrame))[-1]
        assert warning.code == "tool_result_late"
        await session.send_text("Thanks. Just say hello.")
        done = (await until(session, frames.AgentTextDone))[-1]
        assert "snow" not in done.text.lower()  # the late result is never spoken
