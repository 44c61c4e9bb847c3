"""``example-chirp``: voices, chunk format and duration, errors, cancellation, reuse."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from scaivoice.engine import (
    AudioChunk,
    BackendRejected,
    BackendUnavailable,
    PluginHost,
    TtsBackend,
    TtsRequest,
)

RATE = 16000
CHUNK_MS = 50
WORD_MS, GAP_MS = 160, 60  # the defaults


async def speak(tts: TtsBackend, request: TtsRequest) -> list[AudioChunk]:
    """Everything ``tts`` says for ``request``, read until the backend closes the channel."""
    send, receive = trio.open_memory_channel[AudioChunk](0)
    chunks: list[AudioChunk] = []
    with trio.fail_after(10):  # a backend that never closes its channel fails, not hangs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tts.synthesize, request, send)
            async with receive:
                async for chunk in receive:
                    chunks.append(chunk)
    return chunks


def pcm(chunks: list[AudioChunk]) -> np.ndarray:
    return np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")


async def test_two_voices(chirp: TtsBackend) -> None:
    voices = await chirp.list_voices()
    assert [v.id for v in voices] == ["robin", "owl"]
    assert {v.sample_rate for v in voices} == {RATE}


async def test_chunks_are_short_16k_pcm16_and_the_duration_follows_the_words(
    chirp: TtsBackend,
) -> None:
    chunks = await speak(chirp, TtsRequest("one two three"))

    assert {c.sample_rate for c in chunks} == {RATE}
    assert all(len(c.pcm) % 2 == 0 for c in chunks)
    assert all(c.duration_ms == CHUNK_MS for c in chunks[:-1])
    assert 0 < chunks[-1].duration_ms <= CHUNK_MS
    assert sum(c.duration_ms for c in chunks) == pytest.approx(3 * (WORD_MS + GAP_MS))
    samples = pcm(chunks)
    assert np.abs(samples).max() > 0.25 * 32767  # it is not silence
    gap = samples[WORD_MS * RATE // 1000 : (WORD_MS + GAP_MS) * RATE // 1000]
    assert not gap.any()  # and each chirp is followed by silence


async def test_speed_and_voice_are_honoured(chirp: TtsBackend) -> None:
    normal = await speak(chirp, TtsRequest("one two", voice_id="owl"))
    fast = await speak(chirp, TtsRequest("one two", voice_id="owl", speed=2.0))
    robin = await speak(chirp, TtsRequest("one two", voice_id="robin"))

    assert sum(c.duration_ms for c in fast) == pytest.approx(sum(c.duration_ms for c in normal) / 2)
    assert len(pcm(robin)) == len(pcm(normal))
    assert not np.array_equal(pcm(robin), pcm(normal))


async def test_empty_text_is_no_audio(chirp: TtsBackend) -> None:
    assert await speak(chirp, TtsRequest("   ")) == []


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (TtsRequest("hi", voice_id="parrot"), "unknown voice 'parrot'"),
        (TtsRequest("hi", speed=0.0), "speed"),
        (TtsRequest("hi " * 1000), "at most 2000"),
    ],
)
async def test_refused_input_is_rejected_and_the_channel_closed(
    chirp: TtsBackend, request_: TtsRequest, match: str
) -> None:
    send, receive = trio.open_memory_channel[AudioChunk](1)
    with pytest.raises(BackendRejected, match=match) as caught:
        await chirp.synthesize(request_, send)
    assert caught.value.backend == "example-chirp"
    assert not caught.value.retryable
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()


async def test_unopened_is_unavailable(host: PluginHost) -> None:
    tts = host.backend_specs("tts")["example-chirp"].factory({})
    assert isinstance(tts, TtsBackend)
    with pytest.raises(BackendUnavailable):
        await tts.check_health()
    send, _receive = trio.open_memory_channel[AudioChunk](1)
    with pytest.raises(BackendUnavailable) as caught:
        await tts.synthesize(TtsRequest("hi"), send)
    assert caught.value.retryable


async def test_cancel_mid_synthesis_stops_promptly_and_the_backend_is_reusable(
    chirp: TtsBackend,
) -> None:
    long_text = "word " * 400  # 88 s of audio: 1760 chunks
    send, receive = trio.open_memory_channel[AudioChunk](0)
    received: list[AudioChunk] = []
    turn = trio.CancelScope()  # what the engine's dialogue task hands to synthesis
    rendered_after_cancel: list[int] = []

    async def synthesis() -> None:
        with turn:
            await chirp.synthesize(TtsRequest(long_text), send)
        rendered_after_cancel.append(len(received))

    with trio.fail_after(10):  # a guard, not a measurement
        async with trio.open_nursery() as nursery:
            nursery.start_soon(synthesis)
            async with receive:
                async for chunk in receive:  # ends when the backend closes its channel
                    received.append(chunk)
                    if len(received) == 2:  # barge-in just after the second chunk
                        turn.cancel()

    assert turn.cancelled_caught
    assert len(received) == 2  # nothing was sent after the cancel
    # The call returned (its channel closed) with nothing more delivered: the unbuffered
    # channel means the backend could not run ahead of the consumer by more than one chunk.
    assert rendered_after_cancel == [2]

    again = await speak(chirp, TtsRequest("still here"))
    assert sum(c.duration_ms for c in again) == pytest.approx(2 * (WORD_MS + GAP_MS))


async def test_a_cancel_before_the_call_sends_nothing(chirp: TtsBackend) -> None:
    send, receive = trio.open_memory_channel[AudioChunk](8)
    with trio.CancelScope() as turn:
        turn.cancel()  # barge-in won the race with the hand-off
        await chirp.synthesize(TtsRequest("too late"), send)
    assert turn.cancelled_caught
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()


async def test_concurrent_sessions_get_their_own_audio(chirp: TtsBackend) -> None:
    voices = ("owl", "robin")
    alone = {voice: await speak(chirp, TtsRequest("a b c", voice_id=voice)) for voice in voices}
    together: dict[str, list[AudioChunk]] = {}

    async def one(voice: str) -> None:
        together[voice] = await speak(chirp, TtsRequest("a b c", voice_id=voice))

    async with trio.open_nursery() as nursery:
        for voice in voices:
            nursery.start_soon(one, voice)
    assert together == alone
