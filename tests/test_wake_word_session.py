"""The server-side wake word end to end: a real server with the micro-wake-word feature, Silero
VAD and whisper, spoken to in real time by generated voices."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from scaivoice.conformance.bench.wake import render
from scaivoice.engine import PluginHost, RunningServer, config_from_mapping, serve
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

pytestmark = pytest.mark.slow

QUESTION = "Hey Jarvis, what time is it?"
SAME_BREATH = "Hey Jarvis what time is it?"  # no comma: hardly a pause before "what"
OTHER = "Could you set a timer for twenty minutes, please?"
VOICES = ("piper:en_US-joe-medium", "hibari:heart")
FRAME = 640  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def speech() -> dict[tuple[str, str], bytes]:
    pytest.importorskip("hibari")
    pytest.importorskip("piper")
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    rendered, skipped = trio.run(render, host, VOICES, [QUESTION, SAME_BREATH, OTHER])
    assert not skipped
    return {(r.voice, r.text): r.pcm for r in rendered}


@asynccontextmanager
async def wake_server() -> AsyncIterator[RunningServer]:
    pytest.importorskip("pymicro_wakeword")
    pytest.importorskip("faster_whisper")
    config = config_from_mapping(
        {
            "server": {"port": 0},
            "backends": {
                "stt": "whisper",
                "llm": "test-llm",
                "tts": "test-tts",
                # whisper's cut encoder window repeats short utterances ("What time is it?
                # What time is it? ..."); the full window decodes them as said.
                "options": {"whisper": {"short_window": False}},
            },
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


async def speak(session: VoiceClient, pcm: bytes, *, trailing_silence_ms: int) -> None:
    """Stream ``pcm`` then silence, in real-time 20 ms frames, like a live microphone."""
    audio = pcm + b"\0\0" * (16 * trailing_silence_ms)
    start = trio.current_time()
    for index, offset in enumerate(range(0, len(audio), FRAME)):
        await trio.sleep_until(start + index * 0.02)
        await session.send_audio(audio[offset : offset + FRAME])


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


@pytest.mark.parametrize(
    ("voice", "question"),
    [
        (VOICES[0], QUESTION),
        (VOICES[1], QUESTION),
        pytest.param(
            VOICES[0],
            SAME_BREATH,
            marks=pytest.mark.xfail(
                reason="piper renders each run differently; run into 'what' with no pause, "
                "'hey jarvis' is not always detected (a miss leaves the session asleep)",
                strict=False,
            ),
        ),
        pytest.param(VOICES[1], SAME_BREATH),
    ],
)
async def test_the_request_after_the_wake_word_is_the_turn(
    speech: dict[tuple[str, str], bytes], voice: str, question: str
) -> None:
    """Asleep, a sentence is ignored; "Hey Jarvis, what time is it?" sends a ``wake`` frame and
    opens the turn, whose transcript is the request without the wake word."""
    config = {"vad_enabled": True, "wake_word_enabled": True, "wake_word": ["hey_jarvis"]}
    items: list[Any] = []
    async with wake_server() as server, connect(server.ws_url, config=config) as session:
        assert session.started is not None
        assert "hey_jarvis" in session.started.capabilities.wake_words

        async def talk() -> None:
            await speak(session, speech[voice, OTHER], trailing_silence_ms=800)
            await speak(session, speech[voice, question], trailing_silence_ms=1500)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(talk)
            with trio.fail_after(60):
                async for event in session.events():
                    if isinstance(event, AgentAudio):
                        continue
                    items.append(event)
                    if isinstance(event, frames.TranscriptFrame) and event.final:
                        break
            nursery.cancel_scope.cancel()
    wakes = [i for i in items if isinstance(i, frames.WakeFrame)]
    transcripts = [i for i in items if isinstance(i, frames.TranscriptFrame)]
    assert [w.keyword for w in wakes] == ["hey_jarvis"]
    assert 0.9 < wakes[0].confidence <= 1.0
    assert items.index(wakes[0]) < items.index(transcripts[0])
    final = transcripts[-1]
    assert final.final and [t for t in transcripts if t.final] == [final]
    assert _words(final.text) == "what time is it", (final.text, items)
