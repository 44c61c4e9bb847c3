"""Speculative replies at the user's pause, with a recogniser that only transcribes whole
utterances (as OpenAI's API does): the snapshot transcription, its adoption, its withdrawal.

The VAD is the scripted loudness VAD of test_turn_taking (it pauses after 100 ms of quiet).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import numpy as np
import trio

from scaivoice.engine import (
    BackendOptions,
    BackendSpec,
    LlmBackend,
    LlmCapabilities,
    LlmRequest,
    SttBackend,
    SttCapabilities,
    SttRequest,
    Transcript,
)
from scaivoice.engine.frames import AgentTextDone, TranscriptFrame
from scaivoice.engine.testing import (
    MemoryClient,
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
)

from .conftest import check_invariants, host_with
from .test_turn_taking import LOUD, QUIET, Features, of


async def speak(client: MemoryClient, ms: int, *, then_quiet_ms: int = 0) -> None:
    """Loud then quiet audio, in real time (20 ms frames), as a microphone sends it."""
    deadline = trio.current_time()
    for frame in [LOUD] * (ms // 20) + [QUIET] * (then_quiet_ms // 20):
        await client.send_raw(frame)
        deadline += 0.02
        await trio.sleep_until(deadline)


WORDS = "one two three four five six seven eight nine ten eleven twelve".split()


class BatchStt(SttBackend):
    """Transcribes a whole utterance after ``latency_ms``: a word per 100 ms of loud audio."""

    class Options(BackendOptions, frozen=True):
        latency_ms: float = 150.0

    capabilities = SttCapabilities(streaming=False, interim_results=False)
    calls: ClassVar[list[int]] = []  # the loud words each call heard
    cancelled: ClassVar[int] = 0

    def __init__(self, options: Options) -> None:
        self.options = options

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        loud_ms = 0.0
        async with audio, results:
            try:
                async for pcm in audio:
                    samples = np.frombuffer(pcm, dtype="<i2")
                    for frame in np.array_split(samples, max(1, samples.size // 320)):
                        if frame.size and np.abs(frame.astype(np.int32)).max() > 1000:
                            loud_ms += frame.size / 16.0
                await trio.sleep(self.options.latency_ms / 1000.0)
            except trio.Cancelled:
                type(self).cancelled += 1
                raise
            words = int(loud_ms // 100)
            type(self).calls.append(words)
            await results.send(Transcript(" ".join(WORDS[:words]), final=True))


class CountingLlm(LlmBackend):
    """Answers "Got: <text>."; records the user text of every request and the cancelled."""

    class Options(BackendOptions, frozen=True):
        pass

    capabilities = LlmCapabilities()
    requests: ClassVar[list[str]] = []
    cancelled: ClassVar[list[str]] = []

    def __init__(self, options: Options) -> None:
        pass

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        text = request.messages[-1].content
        type(self).requests.append(text)
        async with deltas:
            try:
                await trio.sleep(0.05)
                for word in f"Got: {text}.".split(" "):
                    await deltas.send(word + " ")
            except trio.Cancelled:
                type(self).cancelled.append(text)
                raise


@asynccontextmanager
async def session(**start: Any) -> AsyncIterator[MemoryClient]:
    BatchStt.calls, BatchStt.cancelled = [], 0
    CountingLlm.requests, CountingLlm.cancelled = [], []
    host = host_with(
        BackendSpec.for_class(BatchStt, name="batch-stt"),
        BackendSpec.for_class(CountingLlm, name="counting-llm"),
    )
    host.register(Features(end_of_turn=False), name="test-features")
    config = {
        "backends": {
            "stt": "batch-stt",
            "llm": "counting-llm",
            "options": {"test-tts": {"ms_per_char": 5.0}},
        }
    }
    async with open_test_engine(config, host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(**start)
            client.engine = engine  # type: ignore[attr-defined]
            yield client
            nursery.cancel_scope.cancel()


def speculative(client: MemoryClient, kind: str, outcome: str) -> float:
    counter = client.engine.telemetry.speculative_requests  # type: ignore[attr-defined]
    return float(counter.labels(kind, outcome)._value.get())


async def test_the_snapshot_at_the_pause_is_the_final_and_the_reply_is_ready() -> None:
    async with session(silence_ms=600) as client:
        await speak(client, 400, then_quiet_ms=700)  # four words, then the end of the turn
        seen = await client.receive_until("agent.text.done")
        finals = [t for t in of(seen, TranscriptFrame) if t.final]
        assert [t.text for t in finals] == ["one two three four"]
        assert of(seen, AgentTextDone)[-1].text == "Got: one two three four."
        check_invariants(seen)
    assert BatchStt.calls == [4]  # the snapshot only: the turn's own pass was not waited for
    assert CountingLlm.requests == ["one two three four"]  # started at the pause, adopted
    assert speculative(client, "stt", "adopted") == 1
    assert speculative(client, "llm", "adopted") == 1
    assert speculative(client, "llm", "discarded") == 0


async def test_speech_after_the_pause_withdraws_the_guess_unseen() -> None:
    async with session(silence_ms=600) as client:
        await speak(client, 400, then_quiet_ms=300)  # a pause: a guess on four words
        with trio.fail_after(5):
            while not CountingLlm.requests:
                await trio.sleep(0.01)
        await speak(client, 300, then_quiet_ms=700)  # ... and three more words
        seen = await client.receive_until("agent.text.done")
        finals = [t for t in of(seen, TranscriptFrame) if t.final]
        assert [t.text for t in finals] == ["one two three four five six seven"]
        texts = [f.text for f in of(seen, AgentTextDone)]
        assert texts == ["Got: one two three four five six seven."]  # the guess never showed
        check_invariants(seen)
    assert CountingLlm.requests[0] == "one two three four"  # the guess did run, unseen
    assert speculative(client, "llm", "discarded") == 1
    assert speculative(client, "stt", "discarded") >= 1


async def test_speculation_can_be_turned_off() -> None:
    overrides_off = {"session": {"early_replies": False}}
    BatchStt.calls, CountingLlm.requests = [], []
    host = host_with(
        BackendSpec.for_class(BatchStt, name="batch-stt"),
        BackendSpec.for_class(CountingLlm, name="counting-llm"),
    )
    host.register(Features(end_of_turn=False), name="test-features")
    config = {
        "backends": {"stt": "batch-stt", "llm": "counting-llm"},
        **overrides_off,
    }
    async with open_test_engine(config, host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(silence_ms=600)
            await speak(client, 400, then_quiet_ms=700)
            await client.receive_until("agent.text.done")
            nursery.cancel_scope.cancel()
    assert BatchStt.calls == [4]  # the turn's own pass, once
    assert CountingLlm.requests == ["one two three four"]
