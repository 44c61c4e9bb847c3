"""The load generator's user: one utterance, hibari's voice or a synthetic voiced signal.

The synthetic signal is harmonics of a gliding pitch shaped by changing vowel formants, with
short noise consonants between the syllables: Silero VAD scores it as speech.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from scaivoice.engine import ScaiVoiceError, float_to_pcm16, resample_pcm16

__all__ = ["RATE", "SpeechKind", "speech_utterance", "synthetic_speech"]

SpeechKind = Literal["auto", "hibari", "synthetic"]

RATE = 16000
_SPEECH_LEVEL = 328  # |sample| above this (-40 dBFS) is speech
_HIBARI_SENTENCE = "Could you book a table for two?"

_VOWELS = (
    (730.0, 1090.0, 2440.0),
    (270.0, 2290.0, 3010.0),
    (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0),
    (570.0, 840.0, 2410.0),
    (660.0, 1720.0, 2410.0),
)


def _formant_gain(
    freqs: npt.NDArray[np.float64], formants: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    gain = np.zeros_like(freqs)
    for centre, width, weight in zip(formants, (80.0, 100.0, 150.0), (1.0, 0.5, 0.25), strict=True):
        gain += weight / np.sqrt(1.0 + ((freqs - centre) / (width / 2.0)) ** 2)
    return gain


def synthetic_speech(seconds: float = 1.5, seed: int = 0) -> bytes:
    """A voiced, speech-like signal at 16 kHz (PCM16): syllables of gliding pitch whose
    harmonics are shaped by changing vowel formants, separated by short noise consonants.
    Silero VAD scores it as speech (probabilities near 1) from its second frame on."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    pieces: list[npt.NDArray[np.float64]] = []
    done = 0
    syllable = 0
    while done < total:
        consonant = int(rng.uniform(0.03, 0.06) * RATE)
        pieces.append(np.diff(rng.normal(0.0, 1.0, consonant + 1)) * 0.04)
        length = int(rng.uniform(0.16, 0.26) * RATE)
        t = np.arange(length) / RATE
        shape = np.clip(t / t[-1], 0.0, 1.0)
        pitch = (140.0 - 30.0 * done / total) * (1.0 + 0.1 * np.sin(np.pi * shape))
        phase = 2.0 * np.pi * np.cumsum(pitch) / RATE
        start = np.array(_VOWELS[syllable % len(_VOWELS)])
        end = np.array(_VOWELS[(syllable + 2) % len(_VOWELS)])
        voiced = np.zeros(length)
        for harmonic in range(1, 30):
            freqs = harmonic * pitch
            gain = (1.0 - shape) * _formant_gain(freqs, start) + shape * _formant_gain(freqs, end)
            voiced += np.where(freqs < 0.45 * RATE, gain, 0.0) * np.sin(harmonic * phase)
        voiced *= np.sin(np.pi * shape) ** 0.5
        pieces.append(voiced / max(float(np.abs(voiced).max()), 1e-9))
        done += consonant + length
        syllable += 1
    signal = np.concatenate(pieces)[:total]
    return float_to_pcm16(0.5 * signal / float(np.abs(signal).max()))


def _hibari_speech() -> bytes | None:
    try:
        import hibari  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    audio = hibari.Hibari()(_HIBARI_SENTENCE, seed=0)
    pcm = resample_pcm16(float_to_pcm16(np.asarray(audio, dtype=np.float32)), 24000, RATE)
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _SPEECH_LEVEL)
    if loud.size == 0:
        return None
    return samples[loud[0] : loud[-1] + 1].tobytes()


def speech_utterance(kind: SpeechKind = "auto") -> tuple[str, bytes]:
    """The user's utterance -> (what it is, 16 kHz PCM16 padded to whole 20 ms frames).

    ``auto``: hibari's voice when hibari is importable, else the synthetic signal.

    Raises:
        ScaiVoiceError: ``hibari`` was asked for and is not importable.
    """
    pcm = _hibari_speech() if kind in ("auto", "hibari") else None
    if pcm is None and kind == "hibari":
        raise ScaiVoiceError("--speech hibari: hibari is not importable (pip install hibari-tts)")
    label = f"hibari ({_HIBARI_SENTENCE!r})" if pcm is not None else "synthetic voiced signal"
    pcm = pcm if pcm is not None else synthetic_speech()
    pad = -len(pcm) % (RATE * 100 // 1000 * 2)  # whole frames of 20, 50 and 100 ms
    return label, pcm + b"\0" * pad
