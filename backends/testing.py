"""Deterministic backends for tests and benchmarks: ``test-stt``, ``test-llm``, ``test-tts``.

They are real backends (registered through the same hooks, driven through the same contract)
whose output is a function of their input and options, with configurable latency per call and
per chunk so benchmarks can model real backends. They are never anyone's defaults: they answer
without understanding anything.

- ``test-stt`` transcribes an utterance as the next phrase of its ``transcripts`` list (one
  list per session is not possible, so concurrent tests should rely on the text, not the
  order), or as ``""`` when the audio is silence (peak below ``silence_threshold``); interim
  results every ``interim_every_ms`` of audio.
- ``test-llm`` answers ``reply`` with ``{user}`` replaced by the user's last message,
  streamed word by word.
- ``test-tool-llm`` is ``test-llm`` that can call tools, by rule: a user message with
  ``call NAME`` or ``call NAME with {JSON}`` (several joined by `` and ``) is answered
  "Calling NAME." and those calls (arguments as written, even malformed); once their results
  are in, it answers ``result_reply`` with ``{results}`` replaced by them, joined by ``; ``
  (and makes the calls that reply names, while tools are offered).
- ``test-tts`` speaks a sine tone (voice ``tone-a`` 440 Hz, ``tone-b`` 660 Hz) lasting
  ``ms_per_char`` per character of text, in ``chunk_ms`` chunks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import trio

from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendRejected,
    BackendSpec,
    LlmBackend,
    LlmCapabilities,
    LlmRequest,
    SttBackend,
    SttCapabilities,
    SttRequest,
    ToolCall,
    Transcript,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
    Voice,
    Word,
    hookimpl,
)

__all__ = ["TestLlm", "TestStt", "TestToolLlm", "TestTts", "scripted_calls"]


async def _wait_ms(ms: float) -> None:
    if ms > 0:
        await trio.sleep(ms / 1000.0)
    else:
        await trio.lowlevel.checkpoint()


class TestStt(SttBackend):
    """Deterministic STT for tests: scripted phrases, silence transcribes as empty."""

    __test__ = False  # not a pytest class

    class Options(BackendOptions, frozen=True):
        transcripts: tuple[str, ...] = ("hello there",)
        silence_threshold: float = 0.01
        interim_every_ms: int = 500
        latency_ms: float = 0.0
        """Delay between the end of the audio and the final transcript."""
        interim_latency_ms: float = 0.0

    capabilities = SttCapabilities(
        streaming=True,
        interim_results=True,
        word_timings=True,
        languages=("en",),
        sample_rates=(8000, 16000, 24000, 48000),
    )

    def __init__(self, options: Options) -> None:
        self.options = options
        self._phrases: Iterator[str] = itertools.cycle(options.transcripts or [""])

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        opts = self.options
        samples = 0
        peak = 0
        next_interim = opts.interim_every_ms
        phrase: str | None = None
        carry = b""  # a sample split across two chunks
        async with audio, results:
            async for data in audio:
                pcm = carry + data
                pcm, carry = (pcm[:-1], pcm[-1:]) if len(pcm) % 2 else (pcm, b"")
                chunk = np.frombuffer(pcm, dtype="<i2")
                samples += chunk.size
                if chunk.size:
                    peak = max(peak, int(np.abs(chunk.astype(np.int32)).max()))
                heard_ms = samples / request.sample_rate * 1000.0
                if (
                    opts.interim_every_ms > 0
                    and heard_ms >= next_interim
                    and not _silent(peak, opts)
                ):
                    phrase = phrase if phrase is not None else next(self._phrases)
                    await _wait_ms(opts.interim_latency_ms)
                    words = phrase.split()
                    shown = max(1, len(words) // 2)
                    await results.send(
                        Transcript(" ".join(words[:shown]), final=False, end_ms=int(heard_ms))
                    )
                    next_interim += opts.interim_every_ms
            await _wait_ms(opts.latency_ms)
            end_ms = int(samples / request.sample_rate * 1000.0)
            if samples == 0 or _silent(peak, opts):
                await results.send(Transcript("", final=True, start_ms=0, end_ms=end_ms))
                return
            text = phrase if phrase is not None else next(self._phrases)
            await results.send(
                Transcript(
                    text,
                    final=True,
                    start_ms=0,
                    end_ms=end_ms,
                    words=_spread(text.split(), end_ms),
                    language="en",
                )
            )


def _silent(peak: int, opts: TestStt.Options) -> bool:
    return peak < opts.silence_threshold * 32768


def _spread(words: Sequence[str], end_ms: int) -> tuple[Word, ...]:
    if not words:
        return ()
    step = end_ms / len(words)
    return tuple(Word(w, int(i * step), int((i + 1) * step)) for i, w in enumerate(words))


class TestLlm(LlmBackend):
    """Deterministic LLM for tests: answers a template, streamed word by word."""

    __test__ = False

    class Options(BackendOptions, frozen=True):
        reply: str = "You said: {user}."
        first_token_latency_ms: float = 0.0
        token_latency_ms: float = 0.0

    capabilities = LlmCapabilities(streaming=True, system_prompt=True, tools=False)

    def __init__(self, options: Options) -> None:
        self.options = options

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        text = self.options.reply.replace("{user}", user)
        async with deltas:
            await _wait_ms(self.options.first_token_latency_ms)
            for index, word in enumerate(text.split(" ")):
                if index:
                    await _wait_ms(self.options.token_latency_ms)
                await deltas.send(word if index == 0 else " " + word)


class TestToolLlm(TestLlm):
    """Deterministic tool-calling LLM for tests: ``call NAME with {JSON}`` in the user's text."""

    __test__ = False

    class Options(TestLlm.Options, frozen=True):
        result_reply: str = "The tools said: {results}."

    capabilities = LlmCapabilities(streaming=True, system_prompt=True, tools=True)
    options: Options

    async def respond(
        self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
    ) -> None:
        """Calls when the last message is the user's and asks for them (and tools are
        offered); the results' summary when the last messages are tool results."""
        last = request.messages[-1] if request.messages else None
        async with output:
            await _wait_ms(self.options.first_token_latency_ms)
            if last is not None and last.role == "tool":
                results: list[str] = []
                for message in reversed(request.messages):
                    if message.role != "tool":
                        break
                    results.insert(0, message.content)
                text = self.options.result_reply.replace("{results}", "; ".join(results))
                await self._stream(text, output)
                if request.tools:  # a reply that asks for calls makes them (a model calling again)
                    for index, (name, arguments) in enumerate(scripted_calls(text)):
                        await output.send(ToolCall(f"again_{index + 1}", name, arguments))
                return
            calls = scripted_calls(last.content if last is not None else "")
            if not calls or not request.tools:
                user = last.content if last is not None else ""
                await self._stream(self.options.reply.replace("{user}", user), output)
                return
            names = " and ".join(name for name, _ in calls)
            await self._stream(f"Calling {names}.", output)
            for index, (name, arguments) in enumerate(calls):
                await output.send(ToolCall(f"call_{index + 1}", name, arguments))

    async def _stream(self, text: str, output: trio.MemorySendChannel[str | ToolCall]) -> None:
        for index, word in enumerate(text.split(" ")):
            if index:
                await _wait_ms(self.options.token_latency_ms)
            await output.send(word if index == 0 else " " + word)


def scripted_calls(text: str) -> list[tuple[str, str]]:
    """``[(name, arguments)]`` asked for by ``call NAME [with {JSON}]`` in ``text``.

    The arguments run from ``{`` to its matching ``}`` (or to the end of the text when it
    never closes: a malformed call, as small models write them).
    """
    calls: list[tuple[str, str]] = []
    position = 0
    while (start := text.find("call ", position)) != -1:
        rest = text[start + 5 :]
        name = rest.split(" ", 1)[0].rstrip(".,")
        if not name:
            break
        position = start + 5 + len(name)
        arguments = "{}"
        if text.startswith(" with ", position):
            begin = position + 6
            depth, end = 0, len(text)
            for index in range(begin, len(text)):
                if text[index] == "{":
                    depth += 1
                elif text[index] == "}":
                    depth -= 1
                    if depth == 0:
                        end = index + 1
                        break
            arguments, position = text[begin:end], end
        calls.append((name, arguments))
    return calls


_TONES = {"tone-a": 440.0, "tone-b": 660.0}


class TestTts(TtsBackend):
    """Deterministic TTS for tests: a sine tone whose length follows the text."""

    __test__ = False

    class Options(BackendOptions, frozen=True):
        sample_rate: int = 24000
        ms_per_char: float = 50.0
        chunk_ms: int = 100
        first_chunk_latency_ms: float = 0.0
        chunk_latency_ms: float = 0.0
        amplitude: float = 0.3

    capabilities = TtsCapabilities(
        streaming=True,
        voices=True,
        speed=True,
        languages=("en",),
        sample_rates=(24000,),
    )

    def __init__(self, options: Options) -> None:
        self.options = options

    async def list_voices(self) -> Sequence[Voice]:
        rate = self.options.sample_rate
        return [
            Voice(id=name, name=f"Test tone {hz:g} Hz", language="en", sample_rate=rate)
            for name, hz in _TONES.items()
        ]

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        opts = self.options
        voice = request.voice_id or "tone-a"
        async with audio:
            if voice not in _TONES:
                raise BackendRejected(f"unknown voice {voice!r}", backend=self.name)
            total_ms = len(request.text.strip()) * opts.ms_per_char / request.speed
            rate = opts.sample_rate
            total = int(rate * total_ms / 1000)
            step = max(1, int(rate * opts.chunk_ms / 1000))
            await _wait_ms(opts.first_chunk_latency_ms)
            for index, start in enumerate(range(0, total, step)):
                if index:
                    await _wait_ms(opts.chunk_latency_ms)
                t = np.arange(start, min(start + step, total)) / rate
                wave = opts.amplitude * np.sin(2 * math.pi * _TONES[voice] * t)
                await audio.send(AudioChunk((wave * 32767).astype("<i2").tobytes(), rate))


@hookimpl
def scaivoice_stt_backends() -> Iterator[BackendSpec]:
    yield BackendSpec.for_class(TestStt, name="test-stt")


@hookimpl
def scaivoice_llm_backends() -> Iterator[BackendSpec]:
    yield BackendSpec.for_class(TestLlm, name="test-llm")
    yield BackendSpec.for_class(TestToolLlm, name="test-tool-llm")


@hookimpl
def scaivoice_tts_backends() -> Iterator[BackendSpec]:
    yield BackendSpec.for_class(TestTts, name="test-tts")
