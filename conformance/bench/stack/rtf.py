"""Part 1 of ``bench stack``: the utterances, and real-time factors measured in-process.

The test sentences are rendered once by hibari (voice heart, seed 0) and resampled to 16 kHz;
they are the user's utterances of the turns. The same sentences give the TTS real-time factor
(synthesis time / audio duration, through the ``hibari`` backend) and the STT real-time factor
(final decode time / audio duration, through the ``whisper`` backend with interims off), both
as a live session decodes (no word timings) and with word timings (as voice-note transcripts
ask). Both backends are created as the engine creates them: from the plugin host's specs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from scaivoice.engine import (
    AudioChunk,
    Backend,
    BackendKind,
    PluginHost,
    ScaiVoiceError,
    SttBackend,
    SttRequest,
    Transcript,
    TtsBackend,
    TtsRequest,
    resample_pcm16,
)

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "RATE",
    "SENTENCES",
    "TIMING_REPEATS",
    "BackendTimings",
    "Utterance",
    "measure_backends",
]

SENTENCES = (
    "The meeting is on March 3rd at 4:30 pm.",
    "Hello, my name is Alice and I would like to book a table for two people.",
    "The weather today is sunny with a high of 72 degrees.",
    "Please remind me to buy milk, eggs, and bread on the way home.",
    "Your order number is 58 and it should arrive on Friday, June 14th.",
)

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
TIMING_REPEATS = 3
_TTS_RATE = 24000
_SPEECH_LEVEL = 328  # |sample| above this (-40 dBFS) is speech, not silence


@dataclass(frozen=True, slots=True)
class Utterance:
    """A user utterance: 16 kHz PCM16 mono, ending with the frame of its last speech sample."""

    text: str
    pcm: bytes

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / RATE

    def frames(self) -> list[bytes]:
        """The utterance in 20 ms frames."""
        return [self.pcm[i : i + FRAME_BYTES] for i in range(0, len(self.pcm), FRAME_BYTES)]


@dataclass(frozen=True, slots=True)
class BackendTimings:
    """In-process real-time factors over the sentences."""

    tts_rtf: list[float]
    tts_first_chunk_ms: list[float]
    stt_rtf: list[float]
    """Live sessions' final decode: no word timings (whisper's short window)."""
    stt_words_rtf: list[float]
    """With word timings, as voice-note transcripts ask (the full 30 s window)."""
    transcripts: list[str]


def _open_backend(
    host: PluginHost, kind: BackendKind, name: str, options: Mapping[str, Any]
) -> Backend:
    """An unopened backend, created as the engine creates it."""
    specs = host.backend_specs(kind)
    if name not in specs:
        raise ScaiVoiceError(f"no {kind} backend named {name!r} is installed")
    return specs[name].factory(options)


async def measure_backends(host: PluginHost) -> tuple[list[Utterance], BackendTimings]:
    """Render the utterances with hibari, then time hibari and whisper on them."""
    tts = _open_backend(host, "tts", "hibari", {"seed": 0})
    assert isinstance(tts, TtsBackend)
    async with tts:
        rendered = [await _synthesize(tts, text) for text in SENTENCES]
        tts_runs = [await _time_tts(tts, text) for text in SENTENCES]
    utterances = [
        _utterance(text, pcm) for text, (pcm, _, _) in zip(SENTENCES, rendered, strict=True)
    ]
    stt = _open_backend(host, "stt", "whisper", {"interim_interval_ms": 0})
    assert isinstance(stt, SttBackend)
    async with stt:
        stt_runs = [await _time_stt(stt, u, word_timings=False) for u in utterances]
        stt_words_runs = [await _time_stt(stt, u, word_timings=True) for u in utterances]
    return utterances, BackendTimings(
        tts_rtf=[rtf for rtf, _ in tts_runs],
        tts_first_chunk_ms=[first for _, first in tts_runs],
        stt_rtf=[rtf for rtf, _ in stt_runs],
        stt_words_rtf=[rtf for rtf, _ in stt_words_runs],
        transcripts=[text for _, text in stt_runs],
    )


async def _synthesize(tts: TtsBackend, text: str) -> tuple[bytes, float, float]:
    """Synthesise ``text`` -> (24 kHz PCM16, seconds taken, seconds to the first chunk)."""
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    start = time.perf_counter()
    first: float | None = None
    pieces: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tts.synthesize, TtsRequest(text=text), send)
        async with receive:
            async for chunk in receive:
                first = first if first is not None else time.perf_counter() - start
                pieces.append(chunk.pcm)
    return b"".join(pieces), time.perf_counter() - start, first or 0.0


async def _time_tts(tts: TtsBackend, text: str) -> tuple[float, float]:
    """Median (real-time factor, first-chunk ms) of a few syntheses of ``text``."""
    runs = [await _synthesize(tts, text) for _ in range(TIMING_REPEATS)]
    duration_s = len(runs[0][0]) / 2 / _TTS_RATE
    return (
        statistics.median(seconds / duration_s for _, seconds, _ in runs),
        statistics.median(first * 1000 for _, _, first in runs),
    )


async def _transcribe(stt: SttBackend, pcm: bytes, word_timings: bool) -> tuple[str, float]:
    """One final decode of ``pcm`` (16 kHz) -> (text, seconds taken)."""
    audio_send, audio_receive = trio.open_memory_channel[bytes](1)
    results_send, results_receive = trio.open_memory_channel[Transcript](math.inf)
    await audio_send.send(pcm)
    audio_send.close()
    start = time.perf_counter()
    request = SttRequest(sample_rate=RATE, language="en", word_timings=word_timings)
    await stt.transcribe(request, audio_receive, results_send)
    seconds = time.perf_counter() - start
    finals = [t.text async for t in results_receive if t.final]
    return (finals[-1] if finals else ""), seconds


async def _time_stt(
    stt: SttBackend, utterance: Utterance, *, word_timings: bool
) -> tuple[float, str]:
    """Median real-time factor of a few decodes of the utterance, and its transcript."""
    runs = [await _transcribe(stt, utterance.pcm, word_timings) for _ in range(TIMING_REPEATS)]
    return statistics.median(s for _, s in runs) / utterance.duration_s, runs[0][0]


def _utterance(text: str, pcm_24k: bytes) -> Utterance:
    """Resample to 16 kHz and cut after the 20 ms frame holding the last speech sample."""
    pcm = resample_pcm16(pcm_24k, _TTS_RATE, RATE)
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)) > _SPEECH_LEVEL)
    if loud.size == 0:
        raise ScaiVoiceError(f"hibari rendered silence for {text!r}")
    end = (int(loud[-1]) * 2 // FRAME_BYTES + 1) * FRAME_BYTES
    return Utterance(text, pcm[:end])
