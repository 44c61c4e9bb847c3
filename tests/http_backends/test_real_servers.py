"""The ``openai`` backends against real OpenAI-compatible servers on loopback (slow).

llama.cpp's server (xllamacpp, Qwen2.5-Coder-0.5B), faster-whisper-server (Whisper tiny.en) and the hibari
speech server beside this file, each a subprocess started once per test session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from scaivoice.backends.openai_llm import OpenAILlmBackend, OpenAILlmOptions
from scaivoice.backends.openai_stt import OpenAISttBackend, OpenAISttOptions
from scaivoice.backends.openai_tts import OpenAITtsBackend, OpenAITtsOptions
from scaivoice.engine import (
    AudioChunk,
    BackendRejected,
    ChatMessage,
    LlmRequest,
    SttRequest,
    Transcript,
    TtsRequest,
)

from ..backends._support import SENTENCES, Speech, chunks, silence
from ..backends._wer import word_errors
from ._servers import LLAMA_MODEL, Server

pytestmark = pytest.mark.slow

QUESTION = LlmRequest(
    (
        ChatMessage("system", "You are a helpful assistant. Answer in one short sentence."),
        ChatMessage("user", "What is the capital of France?"),
    )
)
TEXT = "Hello there. The meeting is on March 3rd at 4:30 pm. Please be on time."


@pytest.fixture
async def llm(llama: Server) -> AsyncIterator[OpenAILlmBackend]:
    options = OpenAILlmOptions(
        base_url=llama.base_url, api_key=llama.api_key, model=LLAMA_MODEL, max_tokens=48
    )
    async with OpenAILlmBackend(options) as backend:
        yield backend


@pytest.fixture
async def stt(whisper: Server) -> AsyncIterator[OpenAISttBackend]:
    async with OpenAISttBackend(OpenAISttOptions(base_url=whisper.base_url)) as backend:
        yield backend


@pytest.fixture
async def tts(speaker: Server) -> AsyncIterator[OpenAITtsBackend]:
    options = OpenAITtsOptions(base_url=speaker.base_url, voice="heart", chunk_ms=100)
    async with OpenAITtsBackend(options) as backend:
        yield backend


async def reply(backend: OpenAILlmBackend, request: LlmRequest = QUESTION) -> list[str]:
    send, receive = trio.open_memory_channel[str](1000)
    with trio.fail_after(60):
        await backend.generate(request, send)
    return [d async for d in receive]


async def transcribe(
    backend: OpenAISttBackend, pcm: bytes, rate: int = 16000, **request: Any
) -> list[Transcript]:
    audio_send, audio_receive = trio.open_memory_channel[bytes](1000)
    results_send, results_receive = trio.open_memory_channel[Transcript](10)
    async with audio_send:
        for piece in chunks(pcm, 100, rate):
            await audio_send.send(piece)
    with trio.fail_after(60):
        await backend.transcribe(SttRequest(rate, **request), audio_receive, results_send)
    return [r async for r in results_receive]


async def synthesize(backend: OpenAITtsBackend, request: TtsRequest) -> list[AudioChunk]:
    send, receive = trio.open_memory_channel[AudioChunk](10000)
    with trio.fail_after(60):
        await backend.synthesize(request, send)
    return [c async for c in receive]


def total_ms(audio: list[AudioChunk]) -> float:
    return sum(c.duration_ms for c in audio)


# --------------------------------------------------------------------------- LLM


async def test_llm_streams_a_reply(llm: OpenAILlmBackend) -> None:
    await llm.check_health()
    deltas = await reply(llm)
    assert len(deltas) >= 2 and all(deltas)  # streamed: "Paris", "."
    assert "paris" in "".join(deltas).lower()


async def test_llm_reports_the_finish_reason_and_honours_max_tokens(
    llm: OpenAILlmBackend,
) -> None:
    send, receive = trio.open_memory_channel[str](1000)
    request = LlmRequest((ChatMessage("user", "Count from one to fifty in words."),), max_tokens=4)
    completion = await llm.complete(request, send)
    deltas = [d async for d in receive]
    assert completion.finish_reason == "length"
    assert 1 <= len(deltas) <= 4
    assert completion.text == "".join(deltas) and not completion.tool_calls


async def test_llm_with_a_wrong_api_key_is_rejected(llama: Server) -> None:
    options = OpenAILlmOptions(base_url=llama.base_url, api_key="sk-wrong", model="m")
    async with OpenAILlmBackend(options) as backend:
        with pytest.raises(BackendRejected, match="401"):
            await backend.check_health()
        with pytest.raises(BackendRejected, match="401") as caught:
            await reply(backend)
        assert not caught.value.retryable


async def test_llm_cancel_mid_stream_is_prompt_and_the_backend_is_reusable(
    llm: OpenAILlmBackend,
) -> None:
    long = LlmRequest((ChatMessage("user", "Tell me a long story about a dragon."),))
    send, receive = trio.open_memory_channel[str](1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(llm.generate, long, send)
        with trio.fail_after(60):
            await receive.receive()
        nursery.cancel_scope.cancel()
    # Whatever is still in the channel was sent before the cancel; then it is closed: the
    # stream was cut, not read to its end. (That the cut is immediate is tested in virtual
    # time: test_failures.py, test_cancelling_mid_stream_closes_promptly_...)
    assert len([d async for d in receive]) < 48
    assert await reply(llm)  # same pool, next request


async def test_llm_serves_concurrent_generations(llm: OpenAILlmBackend) -> None:
    results: list[list[str]] = []

    async def one() -> None:
        results.append(await reply(llm))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert len(results) == 3 and all(results)


# --------------------------------------------------------------------------- STT


async def test_stt_transcribes_speech_with_one_final_result(
    stt: OpenAISttBackend, speech: Speech
) -> None:
    await stt.check_health()  # this server has no /v1/models: reachable is healthy
    errors = words = 0
    for index, sentence in enumerate(SENTENCES):
        audio = silence(300) + speech[index] + silence(300)
        results = await transcribe(stt, audio, language="en")
        assert [r.final for r in results] == [True]
        final = results[0]
        audio_ms = len(audio) // 32
        assert 0 <= final.start_ms < final.end_ms <= audio_ms
        assert final.language == "en"
        e, n = word_errors(sentence, final.text)
        errors, words = errors + e, words + n
    assert errors / words < 0.15, (errors, words)


async def test_stt_takes_other_sample_rates(stt: OpenAISttBackend, speech: Speech) -> None:
    pcm_24k = speech.pcm_24k[SENTENCES[2]]
    results = await transcribe(stt, pcm_24k, rate=24000)
    errors, words = word_errors(SENTENCES[2], results[0].text)
    assert errors / words < 0.2


async def test_stt_silence_gives_an_empty_or_short_final(stt: OpenAISttBackend) -> None:
    results = await transcribe(stt, silence(50))
    assert results == [Transcript("", final=True, end_ms=50)]


# --------------------------------------------------------------------------- TTS


async def test_tts_streams_short_24khz_chunks(tts: OpenAITtsBackend) -> None:
    await tts.check_health()
    audio = await synthesize(tts, TtsRequest(TEXT))
    assert len(audio) > 20
    assert {c.sample_rate for c in audio} == {24000}
    assert all(len(c.pcm) % 2 == 0 and c.duration_ms <= 100 for c in audio)
    assert 3000 < total_ms(audio) < 10000


async def test_tts_first_audio_arrives_before_the_whole_text_is_spoken(
    tts: OpenAITtsBackend,
) -> None:
    send, receive = trio.open_memory_channel[AudioChunk](10000)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tts.synthesize, TtsRequest(TEXT * 3), send)
        await receive.receive()
        first = trio.current_time() - started
        rest = [c async for c in receive]
    whole = trio.current_time() - started
    assert rest and first < whole / 2, (first, whole)


async def test_tts_speed_is_passed_natively(tts: OpenAITtsBackend) -> None:
    normal = total_ms(await synthesize(tts, TtsRequest(TEXT)))
    fast = total_ms(await synthesize(tts, TtsRequest(TEXT, speed=1.5)))
    assert fast < normal * 0.85
    with pytest.raises(BackendRejected, match="speed"):
        await synthesize(tts, TtsRequest(TEXT, speed=3.0))


async def test_tts_instructions_are_passed_natively(tts: OpenAITtsBackend) -> None:
    # The server refuses unknown fields, so this also checks the field's name.
    audio = await synthesize(tts, TtsRequest("Hello.", instructions="Speak cheerfully."))
    assert total_ms(audio) > 300


async def test_tts_wav_answers_are_read_by_their_header(speaker: Server) -> None:
    pcm_options = OpenAITtsOptions(base_url=speaker.base_url, voice="heart")
    wav_options = OpenAITtsOptions(base_url=speaker.base_url, voice="heart", response_format="wav")
    async with OpenAITtsBackend(pcm_options) as pcm, OpenAITtsBackend(wav_options) as wav:
        from_pcm = await synthesize(pcm, TtsRequest("Hello there."))
        from_wav = await synthesize(wav, TtsRequest("Hello there."))
    # The server synthesises with a fixed seed: the same samples either way.
    assert b"".join(c.pcm for c in from_wav) == b"".join(c.pcm for c in from_pcm)
    assert {c.sample_rate for c in from_wav} == {24000}


async def test_tts_voices_come_from_the_server(tts: OpenAITtsBackend) -> None:
    voices = await tts.list_voices()
    assert [(v.id, v.sample_rate) for v in voices] == [("heart", 24000)]
    with pytest.raises(BackendRejected, match="unknown voice 'emma'"):
        await synthesize(tts, TtsRequest("Hi.", voice_id="emma"))


async def test_tts_cancel_mid_stream_is_prompt_and_the_backend_is_reusable(
    tts: OpenAITtsBackend,
) -> None:
    send, receive = trio.open_memory_channel[AudioChunk](10000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tts.synthesize, TtsRequest(TEXT * 4), send)
        with trio.fail_after(60):
            heard = [await receive.receive()]
        nursery.cancel_scope.cancel()
    heard += [c async for c in receive]  # sent before the cancel; then the channel is closed
    once = await synthesize(tts, TtsRequest(TEXT))  # the backend is reusable
    # The stream was cut: less than the whole text's audio came through. (That the cut is
    # immediate is tested in virtual time: test_failures.py, test_cancelling_mid_audio_...)
    assert total_ms(heard) < 3 * total_ms(once)
