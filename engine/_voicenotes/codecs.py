"""Audio files in and out, through FFmpeg's codecs (PyAV). Blocking: call from a worker thread
(:func:`decode_audio_in_worker` does, a short step at a time).

Decoding accepts what messaging apps and browsers send — OGG/Opus voice notes, WAV, MP3, WebM,
M4A/AAC, FLAC — by probing the content, not trusting a file name. Encoding produces what the
OpenAI speech API offers: ``opus`` (OGG/Opus, mono 48 kHz: a native voice note on Telegram and
WhatsApp), ``mp3``, ``flac``, ``wav`` and ``pcm`` (raw 24 kHz PCM16LE, as OpenAI sends it).
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np
import trio

from .._audio import resample_pcm16
from .._errors import AudioDecodeError

if TYPE_CHECKING:
    import av
    import av.container

__all__ = [
    "CONTENT_TYPES",
    "AudioDecodeError",
    "AudioDecoder",
    "AudioTooLong",
    "EncodedAudio",
    "SpeechFormat",
    "decode_audio",
    "decode_audio_in_worker",
    "encode_audio",
]

SpeechFormat = Literal["opus", "mp3", "flac", "wav", "pcm"]

CONTENT_TYPES: dict[str, str] = {
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

_PCM_RATE = 24000  # OpenAI's "pcm" format: 24 kHz mono PCM16LE
_DECLARED_SLACK_S = 1.0  # a header's duration may round up; decoding checks the exact length


class AudioTooLong(AudioDecodeError):
    """The audio lasts longer than the caller's cap (a long file, or a decompression bomb:
    hours of silence compress to a few megabytes)."""

    def __init__(self, max_duration_s: float, declared_s: float | None = None) -> None:
        said = f" (its header says {declared_s:.0f} s)" if declared_s is not None else ""
        super().__init__(f"the audio lasts longer than {max_duration_s:g} s{said}")
        self.max_duration_s = max_duration_s


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    data: bytes
    content_type: str


class AudioDecoder:
    """Decodes one audio file to mono PCM16LE, a short step at a time.

    Blocking, like the rest of this module: run each :meth:`step` in a worker thread (or use
    :func:`decode_audio_in_worker`); a caller that stops between steps (a deadline, a cancel)
    calls :meth:`close`. Frames are resampled as they are decoded, so memory holds the PCM
    decoded so far (bounded by ``max_duration_s``) and one frame, never the whole decoded file
    at its own rate.

    Args:
        data: the file's bytes (any container and codec FFmpeg reads; the content is probed).
        sample_rate: the PCM's rate.
        max_duration_s: longer audio raises :class:`AudioTooLong`: at once when the file's
            header says so, else as soon as decoding passes it. ``None``: no cap.
    """

    def __init__(
        self, data: bytes, *, sample_rate: int = 16000, max_duration_s: float | None = None
    ) -> None:
        if not data:
            raise AudioDecodeError("the audio file is empty")
        self._data = data
        self._sample_rate = sample_rate
        self._max_duration_s = max_duration_s
        self._max_samples = None if max_duration_s is None else int(max_duration_s * sample_rate)
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.AudioFrame] | None = None
        self._resampler: av.AudioResampler | None = None
        self._pcm = io.BytesIO()
        self._samples = 0
        self.done = False
        """The whole file was decoded: :meth:`pcm` is its audio."""

    @property
    def duration_s(self) -> float:
        """The audio decoded so far, in seconds."""
        return self._samples / self._sample_rate

    def step(self, budget_s: float = 0.1) -> bool:
        """Decode for about ``budget_s`` seconds (at least one frame); ``True`` once done.

        Raises:
            AudioDecodeError: the file is corrupt or holds no audio.
            AudioTooLong: the audio passed ``max_duration_s``.
        """
        if self.done:
            return True
        av = _pyav()
        try:
            if self._frames is None:
                self._open()
            assert self._frames is not None and self._resampler is not None
            until = time.monotonic() + budget_s
            for frame in self._frames:
                self._keep(self._resampler.resample(frame))
                if time.monotonic() >= until:
                    return False
            self._keep(self._resampler.resample(None))
        except AudioDecodeError:
            self.close()
            raise
        except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
            self.close()
            raise AudioDecodeError(f"not a readable audio file: {exc}") from exc
        self.close()
        if not self._samples:
            raise AudioDecodeError("the audio file holds no samples")
        self.done = True
        return True

    def pcm(self) -> bytes:
        """The decoded audio (mono PCM16LE at ``sample_rate``), once :attr:`done`."""
        if not self.done:
            raise RuntimeError("the file is not decoded yet")
        return self._pcm.getvalue()

    def close(self) -> None:
        """Free the decoder (idempotent); the PCM decoded so far stays readable."""
        self._frames = None
        self._resampler = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> AudioDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> None:
        av = _pyav()
        container = av.open(io.BytesIO(self._data), mode="r")
        self._container = container
        if not container.streams.audio:
            raise AudioDecodeError("the file holds no audio stream")
        declared = container.duration
        if (
            self._max_duration_s is not None
            and declared is not None
            and declared / av.time_base > self._max_duration_s + _DECLARED_SLACK_S
        ):
            raise AudioTooLong(self._max_duration_s, declared / av.time_base)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self._sample_rate)
        self._frames = container.decode(container.streams.audio[0])

    def _keep(self, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            self._samples += out.samples
            if self._max_samples is not None and self._samples > self._max_samples:
                assert self._max_duration_s is not None
                raise AudioTooLong(self._max_duration_s)
            self._pcm.write(np.ascontiguousarray(out.to_ndarray()[0], dtype="<i2").data)


def decode_audio(
    data: bytes, *, sample_rate: int = 16000, max_duration_s: float | None = None
) -> bytes:
    """Decode an audio file of any supported container/codec to mono PCM16LE at ``sample_rate``.

    Blocking, all at once; :func:`decode_audio_in_worker` is the form a server uses.

    Raises:
        AudioDecodeError: empty, corrupt, or no audio stream.
        AudioTooLong: the audio lasts longer than ``max_duration_s``.
    """
    with AudioDecoder(data, sample_rate=sample_rate, max_duration_s=max_duration_s) as decoder:
        while not decoder.step(budget_s=3600.0):
            pass
        return decoder.pcm()


async def decode_audio_in_worker(
    data: bytes,
    *,
    sample_rate: int = 16000,
    max_duration_s: float | None = None,
    limiter: trio.CapacityLimiter | None = None,
    step_s: float = 0.1,
) -> bytes:
    """:func:`decode_audio` in worker threads, about ``step_s`` of work per thread call.

    The caller bounds the wall time (``trio.move_on_after`` around it); cancelling stops the
    decode at the end of the step in progress (within about ``step_s``) and frees the decoder.
    Each step takes ``limiter`` for itself, so concurrent decodes share the workers in turn.

    Raises:
        AudioDecodeError: empty, corrupt, or no audio stream.
        AudioTooLong: the audio lasts longer than ``max_duration_s``.
    """
    with AudioDecoder(data, sample_rate=sample_rate, max_duration_s=max_duration_s) as decoder:
        while not await trio.to_thread.run_sync(decoder.step, step_s, limiter=limiter):
            pass
        return decoder.pcm()


def encode_audio(pcm: bytes, sample_rate: int, fmt: SpeechFormat) -> EncodedAudio:
    """Encode mono PCM16LE ``pcm`` at ``sample_rate`` as ``fmt``."""
    if fmt == "pcm":
        return EncodedAudio(resample_pcm16(pcm, sample_rate, _PCM_RATE), CONTENT_TYPES["pcm"])
    if fmt == "wav":
        return EncodedAudio(_wav(pcm, sample_rate), CONTENT_TYPES["wav"])
    if fmt == "opus":
        data = _ffmpeg(resample_pcm16(pcm, sample_rate, 48000), 48000, "ogg", "libopus", 32000)
    elif fmt == "mp3":
        rate = sample_rate if sample_rate in (16000, 22050, 24000, 32000, 44100, 48000) else 24000
        data = _ffmpeg(resample_pcm16(pcm, sample_rate, rate), rate, "mp3", "libmp3lame", 64000)
    else:
        data = _ffmpeg(pcm, sample_rate, "flac", "flac", None)
    return EncodedAudio(data, CONTENT_TYPES[fmt])


def _wav(pcm: bytes, sample_rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)
    return out.getvalue()


def _ffmpeg(
    pcm: bytes, rate: int, container_format: str, codec: str, bit_rate: int | None
) -> bytes:
    av = _pyav()
    out = io.BytesIO()
    samples = np.frombuffer(pcm, dtype="<i2")
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        frame_size = stream.codec_context.frame_size or 1024
        if samples.size % frame_size:
            samples = np.concatenate(
                [samples, np.zeros(frame_size - samples.size % frame_size, dtype="<i2")]
            )
        pts = 0
        for start in range(0, samples.size, frame_size):
            frame = av.AudioFrame.from_ndarray(
                samples[start : start + frame_size].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = pts
            pts += frame_size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _pyav() -> ModuleType:
    """PyAV (FFmpeg), imported on the first voice note: it costs a server ~15 MiB that one
    serving only live sessions does not need."""
    import av
    import av.error

    return av
