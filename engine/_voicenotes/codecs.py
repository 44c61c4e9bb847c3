"""Audio files in and out, through FFmpeg's codecs (PyAV). Blocking: call from a worker thread.

Decoding accepts what messaging apps and browsers send — OGG/Opus voice notes, WAV, MP3, WebM,
M4A/AAC, FLAC — by probing the content, not trusting a file name. Encoding produces what the
OpenAI speech API offers: ``opus`` (OGG/Opus, mono 48 kHz: a native voice note on Telegram and
WhatsApp), ``mp3``, ``flac``, ``wav`` and ``pcm`` (raw 24 kHz PCM16LE, as OpenAI sends it).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Literal

import av
import av.audio.stream
import av.error
import numpy as np

from .._audio import resample_pcm16
from .._errors import AudioDecodeError

__all__ = [
    "CONTENT_TYPES",
    "AudioDecodeError",
    "EncodedAudio",
    "SpeechFormat",
    "decode_audio",
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


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    data: bytes
    content_type: str


def decode_audio(data: bytes, *, sample_rate: int = 16000) -> bytes:
    """Decode an audio file of any supported container/codec to mono PCM16LE at ``sample_rate``.

    Raises:
        AudioDecodeError: empty, corrupt, or no audio stream.
    """
    if not data:
        raise AudioDecodeError("the audio file is empty")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file holds no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            pieces: list[bytes] = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().astype("<i2").tobytes())
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().astype("<i2").tobytes())
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise AudioDecodeError(f"not a readable audio file: {exc}") from exc
    pcm = b"".join(pieces)
    if not pcm:
        raise AudioDecodeError("the audio file holds no samples")
    return pcm


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
    out = io.BytesIO()
    samples = np.frombuffer(pcm, dtype="<i2")
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
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
