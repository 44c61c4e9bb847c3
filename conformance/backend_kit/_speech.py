"""Speech for the STT checks: rendered with hibari when it is installed, else a synthetic signal.

Structure checks (one final, last; cancellation; leaks) only need audio that sounds like speech
to a voice-activity threshold, which the synthetic signal provides: voiced "syllables" (a
gliding pitch with harmonics shaped by two formants) separated by short pauses, deterministic.
Content checks need real words, so they run only when hibari rendered the speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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

__all__ = [
    "LONG_TEXT",
    "SHORT_TEXT",
    "SpeechFixtures",
    "SpeechSample",
    "render_speech",
    "synthetic_speech",
]

RATE = 16000
LONG_TEXT = "The quick brown fox jumps over the lazy dog."
SHORT_TEXT = "Hello there."
_LEAD_MS = 200
_TAIL_MS = 300


@dataclass(frozen=True, slots=True)
class SpeechSample:
    """One utterance: mono PCM16LE at :data:`RATE`, and what it says (``None``: nothing)."""

    pcm: bytes
    text: str | None
    sample_rate: int = RATE

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    def at(self, rate: int) -> bytes:
        """The utterance resampled to ``rate``."""
        return resample_pcm16(self.pcm, self.sample_rate, rate)

    def chunks(self, rate: int, chunk_ms: int) -> list[bytes]:
        """The utterance at ``rate`` cut into ``chunk_ms`` pieces (whole samples)."""
        pcm = self.at(rate)
        step = max(1, rate * chunk_ms // 1000) * 2
        return [pcm[i : i + step] for i in range(0, len(pcm), step)]


@dataclass(frozen=True, slots=True)
class SpeechFixtures:
    """The utterances STT checks feed.

    Attributes:
        source: ``"hibari"`` (real words: content checks possible) or ``"synthetic"``.
        long: about three seconds: long enough for interim results.
        short: about one second.
    """

    source: Literal["hibari", "synthetic"]
    long: SpeechSample
    short: SpeechSample

    @property
    def has_words(self) -> bool:
        return self.source == "hibari"


async def render_speech(*, use_hibari: bool = True) -> SpeechFixtures:
    """Render the kit's utterances with the ``hibari`` TTS backend, else synthesise them.

    hibari is found like any backend, through the plugin host (built-in plugins only); if it
    is not declared or cannot open (hibari-tts not installed), the synthetic signal is used.
    Cancelling abandons the rendering.
    """
    if use_hibari:
        host = PluginHost()
        host.load_entry_points(include_third_party=False, strict=False)
        spec = host.backend_specs("tts").get("hibari")
        if spec is not None:
            try:
                tts = spec.factory({"seed": 0})
                if isinstance(tts, TtsBackend):
                    async with tts:
                        long = await _speak(tts, LONG_TEXT)
                        short = await _speak(tts, SHORT_TEXT)
                    return SpeechFixtures("hibari", long, short)
            except ScaiVoiceError:
                pass  # not installed or broken: the synthetic signal will do
    return synthetic_speech()


def synthetic_speech() -> SpeechFixtures:
    """Deterministic tone-speech: about 3 s (long) and 1 s (short) of voiced syllables."""
    return SpeechFixtures(
        "synthetic",
        SpeechSample(_pad(tone_speech(syllables=12, seed=1)), None),
        SpeechSample(_pad(tone_speech(syllables=4, seed=2)), None),
    )


def tone_speech(*, syllables: int, seed: int) -> bytes:
    """Voiced syllables at :data:`RATE`: a gliding pitch, formant-shaped harmonics, pauses."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    for index in range(syllables):
        length = int(RATE * rng.uniform(0.16, 0.26))
        t = np.arange(length) / RATE
        f0_start, f0_end = rng.uniform(110, 170), rng.uniform(100, 160)
        f0 = np.linspace(f0_start, f0_end, length)
        phase = 2 * math.pi * np.cumsum(f0) / RATE
        f1, f2 = rng.uniform(450, 800), rng.uniform(1100, 2100)
        wave = np.zeros(length)
        for harmonic in range(1, 25):
            hz = harmonic * float(f0.mean())
            gain = math.exp(-(((hz - f1) / 180) ** 2)) + 0.6 * math.exp(-(((hz - f2) / 260) ** 2))
            wave += (gain + 0.02) * np.sin(harmonic * phase)
        envelope = np.sin(math.pi * np.minimum(t / t[-1], 1.0)) ** 0.6
        pieces.append(wave * envelope / max(1e-9, float(np.abs(wave).max())))
        pause_s = 0.16 if index % 3 == 2 else rng.uniform(0.03, 0.08)
        pieces.append(np.zeros(int(RATE * pause_s)))
    samples = 0.5 * np.concatenate(pieces)
    return (samples * 32767).astype("<i2").tobytes()


def _pad(pcm: bytes) -> bytes:
    lead = bytes(RATE * _LEAD_MS // 1000 * 2)
    tail = bytes(RATE * _TAIL_MS // 1000 * 2)
    return lead + pcm + tail


async def _speak(tts: TtsBackend, text: str) -> SpeechSample:
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    async with receive:
        await tts.synthesize(TtsRequest(text), send)
        chunks = [chunk async for chunk in receive]
    rate = chunks[0].sample_rate if chunks else RATE
    pcm = resample_pcm16(b"".join(c.pcm for c in chunks), rate, RATE)
    return SpeechSample(_pad(pcm), text)
