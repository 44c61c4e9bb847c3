"""The embedded offline stack end to end: whisper + Silero VAD + Qwen2.5-Coder-0.5B (llama.cpp) +
hibari behind the real server, hibari-spoken questions streamed in real time, as a microphone
would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import numpy as np
import pytest
import trio

from scaivoice.engine import (
    PluginHost,
    RunningServer,
    config_from_mapping,
    float_to_pcm16,
    resample_pcm16,
    serve,
)
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from .backends._wer import word_errors
from .conftest import check_invariants

pytestmark = pytest.mark.slow

QUESTION = "Hello, my name is Alice and I would like to book a table for two people."
STORY = "Please tell me a long story about a brave little dragon."
FRAME = 320 * 2  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def voice() -> dict[str, bytes]:
    hibari = pytest.importorskip("hibari")
    tts = hibari.Hibari()
    return {
        text: resample_pcm16(float_to_pcm16(tts(text, seed=0)), 24000, 16000)
        for text in (QUESTION, STORY, "Stop, please wait.")
    }


@asynccontextmanager
async def embedded_server() -> AsyncIterator[RunningServer]:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("xllamacpp")
    config = config_from_mapping(
        {
            "server": {"port": 0},
            "backends": {"options": {"llama-cpp": {"max_tokens": 120}}},
        }
    )
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, host, shutdown_trigger=trio.sleep_forever)
        )
        yield server
        nursery.cancel_scope.cancel()


async def speak(session: VoiceClient, pcm: bytes, *, trailing_silence_ms: int = 1500) -> None:
    """Stream ``pcm`` then silence, in real-time 20 ms frames, like a live microphone."""
    audio = pcm + b"\0\0" * (16 * trailing_silence_ms)
    start = trio.current_time()
    for index, offset in enumerate(range(0, len(audio), FRAME)):
        await trio.sleep_until(start + index * 0.02)
        await session.send_audio(audio[offset : offset + FRAME])


async def collect(session: VoiceClient, stop: Any, timeout: float = 60) -> list[Any]:
    items: list[Any] = []
    with trio.fail_after(timeout):
        async for event in session.events():
            items.append(event)
            if stop(event, items):
                return items
    raise AssertionError("the session closed")


def _as_memory_items(items: list[Any]) -> list[Any]:
    from scaivoice.engine.testing import AudioReceived

    return [AudioReceived(i.pcm) if isinstance(i, AgentAudio) else i for i in items]


def _turn_done(event: Any, items: list[Any]) -> bool:
    return (
        isinstance(event, frames.State)
        and event.state == "idle"
        and any(isinstance(i, frames.AgentTextDone) for i in items)
    )


async def test_a_spoken_question_gets_a_spoken_answer(voice: dict[str, bytes]) -> None:
    async with (
        embedded_server() as server,
        connect(server.ws_url, config={"vad_enabled": True}) as session,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(speak, session, voice[QUESTION])
            items = await collect(session, _turn_done)
        check_invariants(_as_memory_items(items))
        finals = [i for i in items if isinstance(i, frames.TranscriptFrame) and i.final]
        assert len(finals) == 1
        errors, words = word_errors(QUESTION, finals[0].text)
        assert errors / words <= 0.10, finals[0].text
        interims = [i for i in items if isinstance(i, frames.TranscriptFrame) and not i.final]
        assert items.index(finals[0]) > max((items.index(i) for i in interims), default=-1)
        done = next(i for i in items if isinstance(i, frames.AgentTextDone))
        assert done.text.strip() and not done.interrupted
        audio = b"".join(i.pcm for i in items if isinstance(i, AgentAudio))
        assert len(audio) / 2 / 24000 > 0.5
        assert np.abs(np.frombuffer(audio, "<i2")).max() > 1000  # a voice, not silence
        metrics = next(i for i in items if isinstance(i, frames.Metrics))
        assert metrics.stt_ms is not None and metrics.llm_first_token_ms is not None


async def test_talking_over_the_agent_stops_its_audio(voice: dict[str, bytes]) -> None:
    async with (
        embedded_server() as server,
        connect(server.ws_url, config={"vad_enabled": True}) as session,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(speak, session, voice[STORY])
            items = await collect(
                session, lambda e, _: isinstance(e, frames.AgentAudioStart), timeout=60
            )
            nursery.cancel_scope.cancel()
        words_spoken = trio.Event()

        async def talk_over() -> None:
            stop = voice["Stop, please wait."]
            await speak(session, stop + stop, trailing_silence_ms=0)  # about 2.5 s of speech
            words_spoken.set()
            await speak(session, b"", trailing_silence_ms=300)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(talk_over)
            items += await collect(
                session,
                lambda e, _: isinstance(e, frames.State) and e.state == "interrupted",
                timeout=10,
            )
            # Barge-in comes once the speech lasted min_speech_ms, not at the end of the turn.
            assert not words_spoken.is_set(), "interrupted only after the user stopped talking"
            nursery.cancel_scope.cancel()
        check_invariants(_as_memory_items(items))
        done = next(i for i in items if isinstance(i, frames.AgentTextDone))
        assert done.interrupted
        assert len(done.heard_text) < len(done.text)


async def test_a_cough_does_not_interrupt_the_agent(voice: dict[str, bytes]) -> None:
    rng = np.random.default_rng(0)
    cough = float_to_pcm16(rng.uniform(-0.6, 0.6, 1600).astype(np.float32))  # 100 ms of noise
    async with (
        embedded_server() as server,
        connect(server.ws_url, config={"vad_enabled": True}) as session,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(speak, session, voice[QUESTION])
            items = await collect(
                session, lambda e, _: isinstance(e, frames.AgentAudioStart), timeout=60
            )
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(speak, session, cough, trailing_silence_ms=600))
            items += await collect(session, lambda e, _: isinstance(e, frames.AgentTextDone))
        check_invariants(_as_memory_items(items))
        done = next(i for i in items if isinstance(i, frames.AgentTextDone))
        assert not done.interrupted
        assert not any(isinstance(i, frames.State) and i.state == "interrupted" for i in items)
