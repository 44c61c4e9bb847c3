"""Generated speakers: the same sentences in several voices of the installed TTS backends.

Speaker benchmarks and tests need several people talking; here they are synthetic voices,
rendered through the TTS backends as the engine creates them (``hibari``, ``piper``,
``espeak``), resampled to 16 kHz PCM16. A voice whose backend is not installed is left out
(piper and espeak-ng are optional GPL extras), so callers ask :func:`render_voices` and use what
comes back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from scaivoice.engine import (
    AudioChunk,
    PluginHost,
    ScaiVoiceError,
    TtsBackend,
    TtsRequest,
    resample_pcm16,
)

__all__ = ["RATE", "SENTENCES", "VOICES", "GeneratedVoice", "render_voices", "silence"]

RATE = 16000


@dataclass(frozen=True, slots=True)
class GeneratedVoice:
    """One synthetic speaker: a TTS backend, its voice, and the backend's options."""

    name: str
    backend: str
    voice_id: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


#: Distinct voices, the most natural first. espeak-ng's variants (``+f3``, ``+klatt4`` ...)
#: change pitch, formants or the synthesiser, so they sound (and embed) like different people;
#: variants that embed like another voice of the list (``en+m3``, ``en-us+croak``: cosine 0.86
#: and 0.90 to ``en-us``) are left out.
VOICES: tuple[GeneratedVoice, ...] = (
    GeneratedVoice("hibari-heart", "hibari", "heart", {"seed": 0}),
    GeneratedVoice("piper-joe", "piper", "en_US-joe-medium"),
    GeneratedVoice("espeak-en-us", "espeak", "en-us"),
    GeneratedVoice("espeak-en-us-f3", "espeak", "en-us+f3"),
    GeneratedVoice("espeak-en-us-f5", "espeak", "en-us+f5"),
    GeneratedVoice("espeak-en-scotland-m7", "espeak", "en-gb-scotland+m7"),
    GeneratedVoice("espeak-en-us-klatt4", "espeak", "en-us+klatt4"),
    GeneratedVoice("espeak-en-us-alicia", "espeak", "en-us+Alicia"),
)

#: Sentences of 2 to 4 seconds, as a speaker's turns.
SENTENCES: tuple[str, ...] = (
    "Could you book a table for two at eight tonight?",
    "The meeting moved to Thursday afternoon, right after lunch.",
    "I think we should take the train instead of driving.",
    "Please remind me to call my sister when I get home.",
    "The weather today is sunny with a light breeze from the west.",
    "Have you seen the new exhibition at the museum downtown?",
    "My order number is fifty eight and it should arrive on Friday.",
    "We need more milk, eggs and bread for the weekend.",
    "Turn left at the bakery and the station is on your right.",
    "Let us start with the budget and then talk about hiring.",
    "The children loved the story about the little red boat.",
    "Can you send me the report before the end of the day?",
)


def silence(ms: int) -> bytes:
    """``ms`` milliseconds of digital silence at 16 kHz."""
    return bytes(RATE * ms // 1000 * 2)


async def render_voices(
    sentences: Sequence[str] = SENTENCES,
    voices: Sequence[GeneratedVoice] = VOICES,
    *,
    host: PluginHost | None = None,
) -> dict[str, list[bytes]]:
    """Each available voice saying each sentence: ``{voice name: [16 kHz PCM16 per sentence]}``.

    Voices whose backend is not installed or does not open are left out; the leading and
    trailing silence of each rendering is cut (to the 10 ms).
    """
    if host is None:
        host = PluginHost()
        host.load_entry_points(include_third_party=False)
    specs = host.backend_specs("tts")
    out: dict[str, list[bytes]] = {}
    for voice in voices:
        if voice.backend not in specs:
            continue
        backend = specs[voice.backend].factory(voice.options)
        assert isinstance(backend, TtsBackend)
        try:
            async with backend:
                out[voice.name] = [await _render(backend, voice, text) for text in sentences]
        except* ScaiVoiceError:
            out.pop(voice.name, None)  # not installed / no such voice here
    return out


async def _render(backend: TtsBackend, voice: GeneratedVoice, text: str) -> bytes:
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    pieces: list[bytes] = []
    rate = RATE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.synthesize, TtsRequest(text=text, voice_id=voice.voice_id), send)
        async with receive:
            async for chunk in receive:
                pieces.append(chunk.pcm)
                rate = chunk.sample_rate
    pcm = resample_pcm16(b"".join(pieces), rate, RATE) if rate != RATE else b"".join(pieces)
    return _cut(pcm)


def _cut(pcm: bytes) -> bytes:
    """Without leading and trailing silence (|sample| under -40 dBFS), to the 10 ms."""
    samples = np.frombuffer(pcm, "<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 328)
    if loud.size == 0:
        return pcm
    step = RATE // 100
    start = int(loud[0]) // step * step
    end = min(len(samples), (int(loud[-1]) // step + 1) * step)
    return samples[start:end].tobytes()
