"""PCM helpers: conversions and resampling (soxr, a well-kept resampler; never hand-written)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr  # type: ignore[import-untyped]

__all__ = [
    "StreamResampler",
    "float_to_pcm16",
    "pcm16_duration_ms",
    "pcm16_to_float",
    "resample_pcm16",
]


def pcm16_to_float(pcm: bytes) -> npt.NDArray[np.float32]:
    """PCM16LE bytes -> float32 samples in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> bytes:
    """Float samples (clipped to [-1, 1]) -> PCM16LE bytes."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def pcm16_duration_ms(pcm: bytes, sample_rate: int) -> float:
    """Duration of mono PCM16 bytes in milliseconds."""
    return len(pcm) / 2 / sample_rate * 1000.0


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole mono PCM16 buffer (for one-shot audio)."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype="<i2").tobytes()


class StreamResampler:
    """Resamples a mono PCM16 stream chunk by chunk, without clicks at chunk borders."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._carry = b""  # a stray byte of a sample split across chunks
        self._stream = (
            None
            if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Feed the next chunk; returns what is ready. ``last=True`` flushes the tail.

        Chunks may split a sample: an odd trailing byte is kept for the next chunk.
        """
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) % 2:
            pcm, self._carry = pcm[:-1], pcm[-1:]
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return np.asarray(out, dtype="<i2").tobytes()
