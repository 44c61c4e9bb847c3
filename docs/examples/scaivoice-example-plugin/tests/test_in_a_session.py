"""Both backends serving a whole protocol session, in memory, through the public test helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio
from scaivoice.engine import PluginHost
from scaivoice.engine.client import frames
from scaivoice.engine.testing import (
    AudioReceived,
    MemoryClient,
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
)

WORD_MS, GAP_MS = 40, 10  # short chirps: the session paces audio in real time


F = TypeVar("F")


def first(items: list[Any], kind: type[F]) -> F:
    """The first item of type ``kind``."""
    return next(i for i in items if isinstance(i, kind))


@asynccontextmanager
async def session(host: PluginHost, reply: str, **start: Any) -> AsyncIterator[MemoryClient]:
    """A started session of an engine on test-stt / test-llm plus this plugin's backends."""
    overrides = {
        "backends": {
            "tts": "example-chirp",
            "normaliser": "example-abbrev",
            "options": {
                "example-chirp": {"word_ms": WORD_MS, "gap_ms": GAP_MS},
                "test-llm": {"reply": reply},
            },
        }
    }
    async with open_test_engine(overrides, host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            started = await client.start(**start)
            assert isinstance(started, frames.SessionStarted), started
            assert isinstance(await client.receive(), frames.State)  # idle
            yield client
            nursery.cancel_scope.cancel()


async def test_a_reply_is_normalised_then_chirped(host: PluginHost) -> None:
    reply = "Fruit, e.g. apples, approx. {user}."
    async with session(
        host, reply, normalize_text=True, voice_id="example-chirp:owl", output_sample_rate=16000
    ) as client:
        await client.send_json({"type": "text", "text": "three"})
        with trio.fail_after(10):
            items = await client.receive_until("state", state="idle")

    done = first(items, frames.AgentTextDone)
    assert done.text == "Fruit, e.g. apples, approx. three."  # the text stays as written
    assert not done.interrupted
    assert first(items, frames.AgentAudioStart).sample_rate == 16000
    # What was spoken: "Fruit, for example apples, approximately three." -- six chirps.
    audio = b"".join(i.pcm for i in items if isinstance(i, AudioReceived))
    assert len(audio) / 2 / 16000 * 1000 == pytest.approx(6 * (WORD_MS + GAP_MS), abs=25)


async def test_barge_in_stops_the_chirps(host: PluginHost) -> None:
    reply = "chirp " * 200 + "done."  # about ten seconds of audio
    async with session(host, reply, vad_enabled=True) as client:
        await client.send_json({"type": "text", "text": "go"})
        with trio.fail_after(10):
            items = [await client.receive()]
            while not isinstance(items[-1], AudioReceived):  # the first audio frame
                items.append(await client.receive())
            await client.send_json({"type": "vad", "speaking": True})  # the user talks over it
            items += await client.receive_until("state", state="listening")

    states = [i for i in items if isinstance(i, frames.State)]
    assert [s.state for s in states[-2:]] == ["interrupted", "listening"]
    after = items[items.index(states[-2]) :]
    assert not any(isinstance(i, AudioReceived) for i in after)  # no audio after "interrupted"
    assert first(items, frames.AgentTextDone).interrupted
    heard_ms = sum(len(i.pcm) for i in items if isinstance(i, AudioReceived)) / 2 / 24
    assert heard_ms < 1000
