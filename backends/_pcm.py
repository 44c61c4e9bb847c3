"""Cutting synthesised audio into the short chunks the engine paces and can stop."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["split_pcm"]


def split_pcm(pcm: bytes, sample_rate: int, chunk_ms: int) -> Iterator[bytes]:
    """Yield ``pcm`` (mono PCM16LE) in pieces of ``chunk_ms``; the last one may be shorter."""
    step = max(1, sample_rate * chunk_ms // 1000) * 2
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]
