"""The user's audio in ``bench latency``: a room's noise and a spoken question, in 20 ms frames.

The question is real speech, rendered once by the embedded ``hibari`` backend (voice heart,
seed 0, as the engine creates it from the plugin host's specs), resampled to 16 kHz and cut
from its first to its last sample above -40 dBFS (the last frame is padded). Without hibari, a
synthetic voiced signal that Silero VAD scores as speech stands in (and says so).

The noise is white Gaussian noise whose RMS is ``noise_dbfs`` below full scale (32768): -58
dBFS is a quiet room. It runs under the question too: the question frames are speech plus
noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

from ..load.speech import synthetic_speech

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "RATE",
    "NoiseLoop",
    "Question",
    "noise_frames",
    "render_question",
]

RATE = 16000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
_SPEECH_LEVEL = 328  # |sample| above this (-40 dBFS) is speech
_NOISE_SECONDS = 10
_SYNTHETIC_SECONDS = 1.9


@dataclass(frozen=True, slots=True)
class Question:
    """The spoken question: 16 kHz PCM16, its first frame starting with speech and its last
    frame holding its last speech sample."""

    text: str
    source: str
    """What rendered it (``hibari (heart, seed 0)``, or the synthetic stand-in)."""
    pcm: bytes

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / RATE

    def frames(self, noise: NoiseLoop) -> list[bytes]:
        """The question in 20 ms frames, with the next frames of ``noise`` under it."""
        speech = np.frombuffer(self.pcm, dtype="<i2").astype(np.int32)
        out = []
        for start in range(0, len(speech), FRAME_SAMPLES):
            under = np.frombuffer(noise.next(), dtype="<i2").astype(np.int32)
            mixed = (
                under
                + np.pad(speech[start : start + FRAME_SAMPLES], (0, FRAME_SAMPLES))[:FRAME_SAMPLES]
            )
            out.append(np.clip(mixed, -32768, 32767).astype("<i2").tobytes())
        return out


def noise_frames(dbfs: float, *, seed: int = 0, seconds: float = _NOISE_SECONDS) -> list[bytes]:
    """``seconds`` of white noise at an RMS of ``dbfs`` (below 32768), in 20 ms frames."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, 32768.0 * 10 ** (dbfs / 20), round(seconds * RATE))
    pcm = np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


class NoiseLoop:
    """The noise frames in a loop, from an offset (so sessions do not send the same frames)."""

    def __init__(self, frames: list[bytes], offset: int = 0) -> None:
        self._frames = frames
        self._index = offset % len(frames)

    def next(self) -> bytes:
        frame = self._frames[self._index]
        self._index = (self._index + 1) % len(self._frames)
        return frame


async def render_question(host: PluginHost, text: str) -> Question:
    """``text`` spoken by hibari, or the synthetic stand-in when hibari is not installed."""
    specs = host.backend_specs("tts")
    if "hibari" not in specs:
        pcm = _trim(synthetic_speech(_SYNTHETIC_SECONDS))
        return Question(text, "synthetic voiced signal (hibari is not installed)", pcm)
    tts = specs["hibari"].factory({"seed": 0})
    assert isinstance(tts, TtsBackend)
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    async with tts:
        await tts.synthesize(TtsRequest(text=text), send)
    chunks = [chunk async for chunk in receive]
    if not chunks:
        raise ScaiVoiceError(f"hibari rendered nothing for {text!r}")
    pcm = resample_pcm16(b"".join(c.pcm for c in chunks), chunks[0].sample_rate, RATE)
    return Question(text, "hibari (heart, seed 0)", _trim(pcm))


def _trim(pcm: bytes) -> bytes:
    """From the first to the last sample above -40 dBFS, padded to whole frames."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _SPEECH_LEVEL)
    if loud.size == 0:
        raise ScaiVoiceError("the question was rendered as silence")
    speech = samples[loud[0] : loud[-1] + 1].tobytes()
    return speech + bytes(-len(speech) % FRAME_BYTES)
