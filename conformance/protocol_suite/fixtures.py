"""Speech the suite speaks to the server: rendered with hibari when it is importable, else a
deterministic synthetic voiced signal. A WAV file of your own can replace both.

Every fixture is PCM16LE mono, loud (peak about -6 dBFS) and framed by a little silence, so that
any VAD or STT on the other end treats it as speech. Only a rendered or supplied fixture has a
known ``text``: content checks (what was transcribed) need one.
"""

from __future__ import annotations

import functools
import importlib
import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scaivoice.engine import float_to_pcm16, resample_pcm16

__all__ = ["SpeechFixture", "load_speech_wav", "speech_fixture", "synthetic_speech"]

SPOKEN_TEXT = "Hello there."
_PEAK = 0.5
_LEAD_SILENCE_MS = 100
_TRAIL_SILENCE_MS = 400


@dataclass(frozen=True, slots=True)
class SpeechFixture:
    """An utterance: PCM16LE mono at ``sample_rate``."""

    pcm: bytes
    sample_rate: int
    source: str
    """``hibari``, ``synthetic`` or the WAV file's path."""
    text: str | None
    """What is said, when known (``None`` for the synthetic signal)."""

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate * 1000.0

    def at_rate(self, sample_rate: int) -> SpeechFixture:
        """The same utterance resampled to ``sample_rate``."""
        if sample_rate == self.sample_rate:
            return self
        pcm = resample_pcm16(self.pcm, self.sample_rate, sample_rate)
        return SpeechFixture(pcm, sample_rate, self.source, self.text)

    def head(self, ms: float) -> bytes:
        """The first ``ms`` milliseconds (an even number of bytes)."""
        return self.pcm[: int(self.sample_rate * ms / 1000) * 2]


def _finish(samples: npt.NDArray[np.floating[Any]], rate: int) -> bytes:
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 0:
        samples = samples * (_PEAK / peak)
    lead = np.zeros(rate * _LEAD_SILENCE_MS // 1000, dtype=np.float32)
    trail = np.zeros(rate * _TRAIL_SILENCE_MS // 1000, dtype=np.float32)
    return float_to_pcm16(np.concatenate([lead, samples.astype(np.float32), trail]))


def synthetic_speech(sample_rate: int = 16000, duration_s: float = 1.2) -> SpeechFixture:
    """A deterministic voiced, speech-like signal: a glottal-pulse-like harmonic series with a
    falling pitch contour, vowel formants and a syllable rhythm (about 4 syllables a second)."""
    n = int(sample_rate * duration_s)
    t = np.arange(n) / sample_rate
    f0 = 150.0 - 30.0 * t / duration_s + 6.0 * np.sin(2 * math.pi * 3.0 * t)
    phase = 2 * math.pi * np.cumsum(f0) / sample_rate
    formants = ((700.0, 130.0), (1220.0, 70.0), (2600.0, 160.0))
    signal = np.zeros(n)
    for k in range(1, 30):
        freq = f0 * k
        gain = sum(1.0 / (1.0 + ((freq - fc) / bw) ** 2) for fc, bw in formants) / k**0.5
        signal += gain * np.sin(k * phase) * (freq < sample_rate / 2)
    syllables = 0.55 + 0.45 * np.sin(2 * math.pi * 4.0 * t - math.pi / 2) ** 2
    ramp = np.minimum(1.0, np.minimum(t, duration_s - t) / 0.05)
    return SpeechFixture(
        _finish(signal * syllables * ramp, sample_rate), sample_rate, "synthetic", None
    )


@functools.lru_cache(maxsize=4)
def _hibari(text: str) -> tuple[bytes, int] | None:
    try:
        hibari = importlib.import_module("hibari")
        tts = hibari.Hibari()
        samples = np.asarray(tts(text, seed=0), dtype=np.float32)
        rate = int(getattr(tts, "sample_rate", 24000))
    except Exception:  # not installed, or its model cannot load here: fall back
        return None
    return _finish(samples, rate), rate


def speech_fixture(sample_rate: int = 16000, *, synthetic: bool = False) -> SpeechFixture:
    """The suite's utterance ("Hello there."), at ``sample_rate``."""
    if not synthetic:
        rendered = _hibari(SPOKEN_TEXT)
        if rendered is not None:
            pcm, rate = rendered
            return SpeechFixture(pcm, rate, "hibari", SPOKEN_TEXT).at_rate(sample_rate)
    return synthetic_speech(sample_rate)


def load_speech_wav(path: str | Path, text: str | None = None) -> SpeechFixture:
    """A 16-bit PCM WAV file (mono, or downmixed) as the suite's utterance."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        channels = reader.getnchannels()
        rate = reader.getframerate()
        data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype("<i2")
    return SpeechFixture(data.astype("<i2").tobytes(), rate, str(path), text)
