"""``convert_units`` called by a model in a whole protocol session, in memory.

The model is ``test-tool-llm``: deterministic, it calls the tools a user's message names
(``call NAME with {JSON}``) and then reads their results back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from scaivoice.engine import PluginHost
from scaivoice.engine.client import frames
from scaivoice.engine.testing import (
    MemoryClient,
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
)

ASK = 'call convert_units with {"value": 5, "from_unit": "km", "to_unit": "mi"}'


@asynccontextmanager
async def session(
    host: PluginHost, overrides: dict[str, Any]
) -> AsyncIterator[tuple[MemoryClient, frames.SessionStarted]]:
    """A started session with tools enabled, on test-stt / test-tool-llm / test-tts."""
    settings = {"backends": {"llm": "test-tool-llm"}, **overrides}
    async with open_test_engine(settings, host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            started = await client.start(tools_enabled=True)
            assert isinstance(started, frames.SessionStarted), started
            assert isinstance(await client.receive(), frames.State)  # idle
            yield client, started
            nursery.cancel_scope.cancel()


async def test_the_model_calls_the_skill_and_reads_its_answer(host: PluginHost) -> None:
    async with session(host, {}) as (client, started):
        assert "convert_units" in started.capabilities.tools  # offered to this session
        await client.send_json({"type": "text", "text": ASK})
        items = await client.receive_until("state", state="idle")

    done = next(i for i in items if isinstance(i, frames.AgentTextDone))
    assert done.text.startswith("Calling convert_units.")
    assert "5 kilometres is 3.107 miles" in done.text  # the skill's result, read back


async def test_a_skill_the_allow_list_leaves_out_is_not_offered(host: PluginHost) -> None:
    # [tools] allow = ["get_*"]: no tenant may use convert_units, so the model is not told
    # about it (and test-tool-llm, offered no tools, just answers).
    async with session(host, {"tools": {"allow": ["get_*"]}}) as (client, started):
        assert started.capabilities.tools == []
        await client.send_json({"type": "text", "text": ASK})
        items = await client.receive_until("state", state="idle")

    done = next(i for i in items if isinstance(i, frames.AgentTextDone))
    assert done.text.startswith("You said:")
