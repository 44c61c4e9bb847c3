"""What the ``openai`` backends add to a real server's own latency (slow; prints a table).

For each kind, ``CALLS`` pairs of calls against the same server, alternating: the server's own
time, measured with a bare httpx client (a warm connection, a ready body), and the time through
the backend, from the call to the first thing it hands on:

- LLM: time to the first content delta (``POST /v1/chat/completions``, streamed);
- STT: time from the end of the user's audio to the final transcript (the backend collects
  the audio, writes the WAV and parses the answer; the bare call posts a ready WAV);
- TTS: time to the first audio (the bare call stops at the first body byte).

The overhead is given as the median of the paired differences and as the difference of the
fastest calls of each (the steadiest figure on a busy machine). The figures are printed, not
asserted (wall-clock times say more about the machine than the code); each call checks what it
received.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio

from scaivoice.backends.openai_llm import OpenAILlmBackend, OpenAILlmOptions
from scaivoice.backends.openai_stt import OpenAISttBackend, OpenAISttOptions, wav_bytes
from scaivoice.backends.openai_tts import OpenAITtsBackend, OpenAITtsOptions
from scaivoice.engine import (
    AudioChunk,
    ChatMessage,
    LlmRequest,
    SttRequest,
    Transcript,
    TtsRequest,
)

from ..backends._support import Speech, chunks
from ._servers import Server

pytestmark = pytest.mark.slow

CALLS = 20
WARMUP = 2
PROMPT = "Name one colour."
SPOKEN = "The weather today is sunny with a high of 72 degrees."


async def pairs(
    raw: Callable[[], Awaitable[float]], backend: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """``CALLS`` alternating (raw, backend) timings in ms, after ``WARMUP`` of each."""

    async def bare() -> float:
        try:
            return await raw()
        except httpx.RemoteProtocolError:
            # The server closed the bare client's pooled keep-alive connection just as it was
            # reused (a race of that pool, not what is measured): once more, on a new one.
            return await raw()

    for _ in range(WARMUP):
        await bare()
        await backend()
    raws: list[float] = []
    via_backend: list[float] = []
    for index in range(CALLS):
        if index % 2 == 0:
            raws.append(await bare())
            via_backend.append(await backend())
        else:
            via_backend.append(await backend())
            raws.append(await bare())
    return raws, via_backend


def report(label: str, raws: list[float], via: list[float]) -> None:
    """Print one line of figures, with the overhead in ms: the median of the paired
    differences, and the difference of the fastest calls (the steadiest on a busy machine)."""
    paired = statistics.median(b - a for a, b in zip(raws, via, strict=True))
    fastest = min(via) - min(raws)

    def q(values: list[float]) -> str:
        values = sorted(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        return f"min {values[0]:6.1f} median {statistics.median(values):6.1f} p90 {p90:6.1f}"

    print(
        f"\n{label:<24} server: {q(raws)} | backend: {q(via)} | overhead: "
        f"median of pairs {paired:+5.1f}, min vs min {fastest:+5.1f} ms (n={len(raws)})"
    )


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


async def test_llm_time_to_first_token(llama: Server, capsys: pytest.CaptureFixture[str]) -> None:
    options = OpenAILlmOptions(
        base_url=llama.base_url,
        api_key=llama.api_key,
        model="smollm2",
        max_tokens=8,
        temperature=0.0,
    )
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "max_tokens": 8,
        "temperature": 0.0,
    }
    headers = {"Authorization": f"Bearer {llama.api_key}"}
    async with httpx.AsyncClient(base_url=llama.base_url, headers=headers, timeout=60) as client:
        async with OpenAILlmBackend(options) as backend:

            async def raw() -> float:
                start, first = time.perf_counter(), None
                async with client.stream("POST", "chat/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        if first is None and line.startswith("data: {"):
                            choices = json.loads(line[6:])["choices"]
                            if choices and choices[0]["delta"].get("content"):
                                first = ms_since(start)
                assert first is not None
                return first

            async def via() -> float:
                send, receive = trio.open_memory_channel[str](100)
                start, first = time.perf_counter(), None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        backend.generate, LlmRequest((ChatMessage("user", PROMPT),)), send
                    )
                    async for _ in receive:
                        if first is None:
                            first = ms_since(start)
                assert first is not None
                return first

            raws, vias = await pairs(raw, via)
    with capsys.disabled():
        report("LLM first token", raws, vias)


async def test_stt_end_of_audio_to_final(
    whisper: Server, speech: Speech, capsys: pytest.CaptureFixture[str]
) -> None:
    pcm = speech.pcm_16k[SPOKEN]
    wav = wav_bytes(pcm, 16000)
    data = {"model": "whisper-1", "response_format": "verbose_json"}
    async with httpx.AsyncClient(base_url=whisper.base_url, timeout=60) as client:
        async with OpenAISttBackend(OpenAISttOptions(base_url=whisper.base_url)) as backend:

            async def raw() -> float:
                start = time.perf_counter()
                files = {"file": ("audio.wav", wav, "audio/wav")}
                response = await client.post("audio/transcriptions", data=data, files=files)
                response.raise_for_status()
                assert response.json()["text"]
                return ms_since(start)

            async def via() -> float:
                audio_send, audio_receive = trio.open_memory_channel[bytes](1000)
                results_send, results_receive = trio.open_memory_channel[Transcript](10)
                async with audio_send:
                    for piece in chunks(pcm, 20):  # 20 ms frames, as a session sends them
                        await audio_send.send(piece)
                start = time.perf_counter()  # the audio channel is closed: the turn ended
                await backend.transcribe(SttRequest(16000), audio_receive, results_send)
                elapsed = ms_since(start)
                assert [r.final async for r in results_receive] == [True]
                return elapsed

            raws, vias = await pairs(raw, via)
    with capsys.disabled():
        report("STT end of audio->final", raws, vias)


async def test_tts_time_to_first_audio(speaker: Server, capsys: pytest.CaptureFixture[str]) -> None:
    body = {"model": "tts-1", "input": SPOKEN, "voice": "heart", "response_format": "pcm"}
    options = OpenAITtsOptions(base_url=speaker.base_url, voice="heart")
    async with httpx.AsyncClient(base_url=speaker.base_url, timeout=60) as client:
        async with OpenAITtsBackend(options) as backend:

            async def raw() -> float:
                start, first = time.perf_counter(), None
                async with client.stream("POST", "audio/speech", json=body) as response:
                    async for data in response.aiter_bytes():
                        if first is None and data:
                            first = ms_since(start)
                assert first is not None
                return first

            async def via() -> float:
                send, receive = trio.open_memory_channel[AudioChunk](10000)
                start, first = time.perf_counter(), None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(backend.synthesize, TtsRequest(SPOKEN), send)
                    async for _ in receive:
                        if first is None:
                            first = ms_since(start)
                assert first is not None
                return first

            raws, vias = await pairs(raw, via)
    with capsys.disabled():
        report("TTS first audio", raws, vias)
