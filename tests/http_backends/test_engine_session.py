"""A whole spoken turn through the engine on the three ``openai`` backends (slow).

The engine is configured the way an operator would: ``[backends]`` names ``openai`` for each
kind, and each kind's ``[backends.options.KIND.openai]`` table points at its own server.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from scaivoice.backends import http as http_backends
from scaivoice.engine import PluginHost
from scaivoice.engine.testing import (
    AudioReceived,
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
)

from ..backends._support import SENTENCES, Speech, chunks
from ..backends._wer import word_errors
from ..conftest import check_invariants, tag
from ._servers import Server

pytestmark = pytest.mark.slow


async def test_a_spoken_turn_is_answered_aloud(
    llama: Server, whisper: Server, speaker: Server, speech: Speech
) -> None:
    host = PluginHost()
    host.register(http_backends, name="builtin-http-backends", distribution="scaivoice")
    options: dict[str, Any] = {
        "llm": {
            "openai": {
                "base_url": llama.base_url,
                "api_key": llama.api_key,
                "model": "smollm2",
                "max_tokens": 40,
            }
        },
        "stt": {"openai": {"base_url": whisper.base_url}},
        "tts": {"openai": {"base_url": speaker.base_url, "voice": "heart"}},
    }
    names = {"stt": "openai", "llm": "openai", "tts": "openai"}
    overrides = {"backends": {**names, "options": options}}
    async with open_test_engine(overrides, host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            started = await client.start(voice_id="openai:heart")
            assert tag(started) == "session.started", started
            for piece in chunks(speech[1], 20):
                await client.send_raw(piece)
            await client.send_json({"type": "audio.commit"})
            with trio.fail_after(120):
                items = await client.receive_until("metrics")
            nursery.cancel_scope.cancel()

    check_invariants(items)
    finals = [i for i in items if tag(i) == "transcript" and i.final]  # type: ignore[union-attr]
    assert len(finals) == 1
    errors, words = word_errors(SENTENCES[1], finals[0].text)  # type: ignore[union-attr]
    assert errors / words < 0.2
    assert [i for i in items if tag(i) == "agent.text"]
    audio = b"".join(i.pcm for i in items if isinstance(i, AudioReceived))
    assert len(audio) > 24000  # over half a second at 24 kHz
    start = next(i for i in items if tag(i) == "agent.audio.start")
    assert start.sample_rate == 24000  # type: ignore[union-attr]
