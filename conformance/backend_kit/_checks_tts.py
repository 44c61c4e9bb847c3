"""Contract checks for TTS backends (``TtsBackend.synthesize`` and ``list_voices``)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from scaivoice.engine import AudioChunk, BackendRejected, TtsBackend, TtsRequest

from ._checks_common import concurrency_check, lifecycle_checks
from ._drive import (
    Run,
    describe_error,
    expect_cancelled,
    expect_completed,
    is_backend_error,
    synthesize,
)
from ._kit import Failed, Subject, contract_check, require

__all__ = [
    "TTS_CHECKS",
    "check_tts_aclose_idempotent",
    "check_tts_cancellation",
    "check_tts_cfg_value",
    "check_tts_chunk_duration",
    "check_tts_concurrency",
    "check_tts_declaration",
    "check_tts_empty_text",
    "check_tts_health",
    "check_tts_instructions",
    "check_tts_languages",
    "check_tts_no_leaks",
    "check_tts_output_format",
    "check_tts_speed",
    "check_tts_streaming",
    "check_tts_unknown_voice",
    "check_tts_voices",
    "check_tts_warmup_trim",
]

SENTENCE = "The quick brown fox jumps over the lazy dog."
SHORT = "Hello there."
#: Eight sentences: long enough that a streaming backend's first chunk comes well before its last.
LONG = (
    "It was a bright cold day in April. The clocks were striking thirteen. "
    "A small dog ran across the empty square. Nobody in the market looked up. "
    "The baker counted his loaves twice. Rain began to fall over the rooftops. "
    "A tram rattled past the old station. Then the town was quiet again."
)
UNKNOWN_VOICE = "scaivoice-kit-no-such-voice"


@dataclass(frozen=True, slots=True)
class _Audio:
    rate: int
    pcm: bytes
    chunk_ms: tuple[float, ...]

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.rate if self.rate else 0.0

    def describe(self) -> str:
        return f"{self.rate} Hz, {len(self.chunk_ms)} chunks, {self.duration_s:.2f} s"


def _audio(
    subject: Subject[TtsBackend],
    run: Run[AudioChunk],
    what: str,
    *,
    rate: int | None = None,
    allow_empty: bool = False,
) -> _Audio:
    """Validate a synthesis: returned, channel closed, PCM16 mono as declared, not silent."""
    expect_completed(run, what)
    declared = subject.backend.capabilities.sample_rates
    wrong = [type(c).__name__ for c in run.items if not isinstance(c, AudioChunk)]
    require(not wrong, f"{what} sent {wrong[0] if wrong else ''} instead of AudioChunk")
    chunks = run.items
    problems: list[str] = []
    rates = sorted({c.sample_rate for c in chunks})
    if len(rates) > 1:
        problems.append(f"chunks at several sample rates {rates}")
    if undeclared := [r for r in rates if r not in declared]:
        problems.append(f"sample rate {undeclared} is not declared (declared {list(declared)})")
    if rate is not None and rates and rates != [rate]:
        problems.append(f"sample rate {rates}, but the voice lists {rate}")
    if odd := [i for i, c in enumerate(chunks) if len(c.pcm) % 2]:
        problems.append(f"chunk(s) {odd[:5]} have an odd byte count: PCM16 samples are two bytes")
    pcm = b"".join(c.pcm for c in chunks)
    if not pcm and not allow_empty:
        problems.append("no audio for non-empty text")
    elif pcm and not len(pcm) % 2 and not np.frombuffer(pcm, dtype="<i2").any():
        problems.append("only digital silence")
    require(not problems, f"{what}: " + "; ".join(problems))
    sample_rate = rates[0] if rates else 0
    return _Audio(
        sample_rate,
        pcm,
        tuple(len(c.pcm) / 2 / c.sample_rate * 1000 for c in chunks if c.sample_rate > 0),
    )


@contract_check("tts.output_format")
async def check_tts_output_format(subject: Subject[TtsBackend]) -> str:
    """A sentence gives PCM16 chunks at one declared sample rate, whole samples, not silent."""
    run = await synthesize(subject.backend, TtsRequest(SENTENCE))
    audio = _audio(subject, run, "synthesising a sentence")
    return audio.describe()


@contract_check("tts.chunk_duration")
async def check_tts_chunk_duration(subject: Subject[TtsBackend]) -> str:
    """Chunks are short enough to pace and stop (the contract asks for 20-250 ms)."""
    run = await synthesize(subject.backend, TtsRequest(LONG))
    audio = _audio(subject, run, "synthesising eight sentences")
    limit = subject.config.max_chunk_ms
    longest = max(audio.chunk_ms, default=0.0)
    require(
        longest <= limit,
        f"a chunk of {longest:.0f} ms (> {limit:g} ms): the engine cannot stop audio mid-chunk",
    )
    return f"longest chunk {longest:.0f} ms ({audio.describe()})"


@contract_check("tts.empty_text")
async def check_tts_empty_text(subject: Subject[TtsBackend]) -> str:
    """Empty text gives no audio (or a BackendError), and the channel is closed either way."""
    run = await synthesize(subject.backend, TtsRequest(""))
    if run.error is not None and is_backend_error(run.error):
        require(run.closed, "the audio channel was left open after the error")
        return f"rejected with {type(run.error).__name__}"
    audio = _audio(subject, run, "synthesising empty text", allow_empty=True)
    return f"{audio.duration_s:.2f} s of audio for empty text"


@contract_check("tts.streaming", requires="streaming")
async def check_tts_streaming(subject: Subject[TtsBackend]) -> str:
    """The first chunk of a long text arrives well before the last (audio is not batched)."""
    run = await synthesize(subject.backend, TtsRequest(LONG))
    audio = _audio(subject, run, "synthesising eight sentences")
    require(len(run.items) >= 2, f"one chunk for eight sentences ({audio.describe()})")
    first, last = run.arrivals[0], run.arrivals[-1]
    config = subject.config
    if last < config.timing_resolution_s:
        return (
            f"all {len(run.items)} chunks within {last * 1000:.0f} ms: too fast to tell "
            "streaming from batch; counted as streaming"
        )
    require(
        first <= config.streaming_ratio * last,
        f"first chunk after {first:.2f} s, last after {last:.2f} s: the audio came all at "
        "once, it was not streamed",
    )
    return f"first chunk after {first * 1000:.0f} ms, last after {last * 1000:.0f} ms"


@contract_check("tts.voices", requires="voices")
async def check_tts_voices(subject: Subject[TtsBackend]) -> str:
    """``list_voices`` lists voices at declared rates, each of which speaks."""
    backend = subject.backend
    voices = list(await backend.list_voices())
    require(bool(voices), "voices are declared but list_voices() returned none")
    ids = [getattr(v, "id", None) for v in voices]
    require(len(set(ids)) == len(ids), f"voice ids are not unique: {ids}")
    declared = backend.capabilities.sample_rates
    undeclared = [v.id for v in voices if v.sample_rate not in declared]
    require(not undeclared, f"voices {undeclared[:5]} list a sample rate that is not declared")
    tried = voices[: subject.config.max_voices]
    for voice in tried:
        run = await synthesize(backend, TtsRequest(SHORT, voice_id=voice.id))
        _audio(subject, run, f"voice {voice.id!r}", rate=voice.sample_rate)
    more = f" (of {len(voices)})" if len(voices) > len(tried) else ""
    names = ", ".join(v.id for v in tried[:5])
    return f"{len(tried)} voice(s){more} speak at their listed rate: {names}"


@contract_check("tts.unknown_voice", requires="voices")
async def check_tts_unknown_voice(subject: Subject[TtsBackend]) -> str:
    """An unknown voice raises BackendRejected naming the backend, and closes the channel."""
    backend = subject.backend
    run = await synthesize(backend, TtsRequest(SHORT, voice_id=UNKNOWN_VOICE))
    error = run.error
    if error is None:
        raise Failed(f"the unknown voice {UNKNOWN_VOICE!r} was accepted")
    if not isinstance(error, BackendRejected):
        raise Failed(f"an unknown voice raised {describe_error(error)}; expected BackendRejected")
    require(
        error.backend == backend.name,
        f"BackendRejected names backend {error.backend!r}, not {backend.name!r}",
    )
    require(run.closed, "the audio channel was left open after BackendRejected")
    return f"BackendRejected: {error}"


@contract_check("tts.speed", requires="speed")
async def check_tts_speed(subject: Subject[TtsBackend]) -> str:
    """Speed 1.5 gives clearly shorter audio than speed 1.0."""
    backend = subject.backend
    normal = _audio(subject, await synthesize(backend, TtsRequest(SENTENCE)), "speed 1.0")
    fast = _audio(subject, await synthesize(backend, TtsRequest(SENTENCE, speed=1.5)), "speed 1.5")
    require(
        fast.duration_s <= 0.9 * normal.duration_s,
        f"speed 1.5 gave {fast.duration_s:.2f} s, speed 1.0 {normal.duration_s:.2f} s",
    )
    return f"speed 1.5: {fast.duration_s:.2f} s, speed 1.0: {normal.duration_s:.2f} s"


@contract_check("tts.languages", requires="languages")
async def check_tts_languages(subject: Subject[TtsBackend]) -> str:
    """A request in a declared language speaks."""
    languages = subject.backend.capabilities.languages
    language = next((code for code in languages if code.lower().startswith("en")), languages[0])
    run = await synthesize(subject.backend, TtsRequest(SENTENCE, language=language))
    audio = _audio(subject, run, f"language {language!r}")
    return f"language {language!r}: {audio.describe()}"


@contract_check("tts.instructions", requires="instructions")
async def check_tts_instructions(subject: Subject[TtsBackend]) -> str:
    """A request with style instructions speaks."""
    request = TtsRequest(SENTENCE, instructions="Speak slowly and calmly.")
    audio = _audio(subject, await synthesize(subject.backend, request), "with instructions")
    return audio.describe()


@contract_check("tts.cfg_value", requires="cfg_value")
async def check_tts_cfg_value(subject: Subject[TtsBackend]) -> str:
    """A request with a guidance value speaks."""
    request = TtsRequest(SENTENCE, cfg_value=2.0)
    audio = _audio(subject, await synthesize(subject.backend, request), "with cfg_value 2.0")
    return audio.describe()


@contract_check("tts.warmup_trim", requires="warmup_trim")
async def check_tts_warmup_trim(subject: Subject[TtsBackend]) -> str:
    """``warmup_trim_ms`` = 200 gives audio at least 100 ms shorter (the backend trims it)."""
    backend = subject.backend
    whole = _audio(subject, await synthesize(backend, TtsRequest(SENTENCE)), "untrimmed")
    trimmed = _audio(
        subject,
        await synthesize(backend, TtsRequest(SENTENCE, warmup_trim_ms=200)),
        "warmup_trim_ms=200",
    )
    cut = whole.duration_s - trimmed.duration_s
    require(cut >= 0.1, f"warmup_trim_ms=200 shortened the audio by {cut * 1000:.0f} ms")
    return f"warmup_trim_ms=200 shortened the audio by {cut * 1000:.0f} ms"


@contract_check("tts.cancellation")
async def check_tts_cancellation(subject: Subject[TtsBackend]) -> str:
    """Cancelling at the first chunk returns promptly, closes the channel, leaves it usable."""
    backend = subject.backend
    run = await synthesize(backend, TtsRequest(LONG), cancel_at_first=True, cancel_after_s=1.0)
    detail = expect_cancelled(run, "synthesis", deadline_s=subject.config.cancel_deadline_s)
    again = await synthesize(backend, TtsRequest(SHORT))
    _audio(subject, again, "a synthesis after the cancelled one")
    return detail + "; the next synthesis worked"


async def _exercise(subject: Subject[TtsBackend], backend: TtsBackend) -> None:
    await synthesize(backend, TtsRequest(SHORT))
    await synthesize(backend, TtsRequest(LONG), cancel_at_first=True, cancel_after_s=1.0)


async def _once(subject: Subject[TtsBackend], backend: TtsBackend) -> Hashable:
    audio = _audio(subject, await synthesize(backend, TtsRequest(SHORT)), "synthesis")
    return audio.pcm


check_tts_declaration, check_tts_health, check_tts_aclose_idempotent, check_tts_no_leaks = (
    lifecycle_checks("tts", exercise=_exercise)
)
check_tts_concurrency = concurrency_check("tts", once=_once)

#: Every TTS check, in the order the runner runs them.
TTS_CHECKS = (
    check_tts_declaration,
    check_tts_health,
    check_tts_output_format,
    check_tts_chunk_duration,
    check_tts_empty_text,
    check_tts_streaming,
    check_tts_voices,
    check_tts_unknown_voice,
    check_tts_speed,
    check_tts_languages,
    check_tts_instructions,
    check_tts_cfg_value,
    check_tts_warmup_trim,
    check_tts_cancellation,
    check_tts_concurrency,
    check_tts_aclose_idempotent,
    check_tts_no_leaks,
)
