"""Wyoming audio in and out: any PCM a satellite sends to mono PCM16 at the engine's rate, and
synthesised audio cut into chunks.

Wyoming audio is raw PCM described by ``rate`` (Hz), ``width`` (bytes per sample) and
``channels``. What comes in is converted to mono 16-bit at one rate (channels averaged, samples
scaled, resampled by :class:`~scaivoice.engine._audio.StreamResampler`); formats it cannot
convert are refused with :class:`UnsupportedAudio`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._audio import StreamResampler
from .._errors import ScaiVoiceError

__all__ = ["AudioFormat", "PcmConverter", "UnsupportedAudio", "pcm_chunks"]

MIN_RATE = 4000
MAX_RATE = 192_000
MAX_CHANNELS = 8
WIDTHS = (1, 2, 4)
"""Sample widths accepted: 8-bit unsigned, 16-bit and 32-bit signed little-endian integers."""


class UnsupportedAudio(ScaiVoiceError):
    """Audio in a format that cannot be converted (code ``unsupported_audio_format``)."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Raw PCM: ``rate`` Hz, ``width`` bytes per sample, ``channels`` interleaved."""

    rate: int
    width: int
    channels: int

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> AudioFormat:
        """The format of an ``audio-start`` or ``audio-chunk`` event's data.

        Raises:
            UnsupportedAudio: missing fields or a format outside what can be converted.
        """
        values = [data.get(key) for key in ("rate", "width", "channels")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise UnsupportedAudio("audio events need integer 'rate', 'width' and 'channels'")
        rate, width, channels = (int(v) for v in values)  # type: ignore[arg-type]
        if not MIN_RATE <= rate <= MAX_RATE:
            raise UnsupportedAudio(f"rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE}")
        if width not in WIDTHS:
            raise UnsupportedAudio(
                f"width {width} is not supported: 1 (8-bit), 2 (16-bit) or 4 (32-bit) PCM"
            )
        if not 1 <= channels <= MAX_CHANNELS:
            raise UnsupportedAudio(f"{channels} channels: 1 to {MAX_CHANNELS} are supported")
        return cls(rate, width, channels)

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels


class PcmConverter:
    """One audio stream, chunk by chunk, to mono PCM16 at ``to_rate``.

    A chunk may end inside a frame: the rest waits for the next chunk. A chunk in another
    format than the one before restarts the conversion (what was buffered is flushed first).
    """

    def __init__(self, source: AudioFormat, to_rate: int) -> None:
        self.source = source
        self.to_rate = to_rate
        self._resampler = StreamResampler(source.rate, to_rate)
        self._carry = b""
        self.ms_in = 0.0
        """How much audio has been received, in milliseconds."""

    def convert(self, audio: bytes, fmt: AudioFormat | None = None) -> bytes:
        """Convert the next chunk (in ``fmt``, default the stream's format)."""
        out = b""
        if fmt is not None and fmt != self.source:
            out = self.flush()
            self.source = fmt
            self._resampler = StreamResampler(fmt.rate, self.to_rate)
        data = self._carry + audio
        usable = len(data) - len(data) % self.source.frame_bytes
        data, self._carry = data[:usable], data[usable:]
        frames = usable // self.source.frame_bytes
        self.ms_in += frames * 1000 / self.source.rate
        return out + self._resampler.process(_to_mono16(data, self.source))

    def flush(self) -> bytes:
        """The tail held by the resampler, at the end of the stream."""
        self._carry = b""
        return self._resampler.process(b"", last=True)


def _to_mono16(data: bytes, fmt: AudioFormat) -> bytes:
    if not data:
        return b""
    if fmt.width == 2 and fmt.channels == 1:
        return data
    if fmt.width == 1:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif fmt.width == 2:
        samples = np.frombuffer(data, dtype="<i2").astype(np.int32)
    else:
        samples = np.frombuffer(data, dtype="<i4").astype(np.int64) >> 16
    if fmt.channels > 1:
        samples = samples.reshape(-1, fmt.channels).mean(axis=1)
    return bytes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())


def pcm_chunks(pcm: bytes, rate: int, *, chunk_ms: int = 100) -> Iterator[bytes]:
    """Mono PCM16 cut into pieces of at most ``chunk_ms``."""
    size = max(2, rate * chunk_ms // 1000 * 2)
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]
