"""Text to speech through an OpenAI-compatible ``POST /audio/speech`` endpoint, streamed.

The request asks for ``response_format = "pcm"`` (raw PCM16LE mono; OpenAI's is 24 kHz) or
``"wav"``; the body is read as it arrives and sent on as short :class:`AudioChunk` pieces, so
the first audio goes out as soon as the server sends it. A WAV answer (asked for, or sent
instead of raw PCM) is read by its header: 16-bit PCM, mono, any rate from 8 to 48 kHz. Any
other content type (JSON, MP3 ...), an odd number of PCM bytes, or a WAV header that is not
16-bit mono PCM is a :class:`~scaivoice.engine.BackendProtocolError`.

``speed`` and ``instructions`` are passed to the server as they are (declared capabilities).
Voices: the ``voices`` option when it is set, otherwise what ``GET /audio/voices`` lists
(servers such as Kokoro-FastAPI have it; OpenAI has not), otherwise the ``voice`` option alone.

Operator options (``[backends.options.tts.openai]``, see :mod:`scaivoice.backends.openai_http`)::

    [backends.options.tts.openai]
    base_url = "http://127.0.0.1:8880/v1"
    model = "tts-1"
    voice = "alloy"
    voices = ["alloy", "nova"]
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar, Literal

import httpx
import msgspec
import trio

from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendProtocolError,
    BackendRejected,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
    Voice,
)

from .openai_http import OpenAIHttpBackend, OpenAIOptions

__all__ = [
    "OpenAITtsBackend",
    "OpenAITtsOptions",
    "PcmReader",
    "SniffingReader",
    "WavReader",
]

OPENAI_PCM_RATE = 24000
_LOWEST_RATE, _HIGHEST_RATE = 8000, 48000
_WAV_TYPES = {"audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave"}
_PCM_TYPES = {"audio/pcm", "audio/l16", "audio/raw", "audio/x-raw", "application/octet-stream"}
_WAV_HEADER_LIMIT = 64 * 1024  # a WAV header (with its LIST chunks) longer than this is odd
_UNKNOWN_SIZES = {0, 0xFFFFFFFF}  # data sizes that streaming servers write: "until the end"


class OpenAITtsOptions(OpenAIOptions, frozen=True):
    """Options of the ``openai`` TTS backend (besides those of :class:`OpenAIOptions`).

    Attributes:
        model: the speech model the server knows.
        voice: the voice when the request names none.
        voices: the voices offered to sessions; ``None``: ask the server
            (``GET /audio/voices``), or offer ``voice`` alone.
        language: the language the offered voices are listed with.
        response_format: ``"pcm"`` (raw, at ``sample_rate``) or ``"wav"``.
        sample_rate: the rate of ``"pcm"`` answers (24000 at OpenAI).
        chunk_ms: the longest audio chunk sent on; a network read is cut into such pieces.
    """

    kind: ClassVar[str] = "tts"

    model: str = "tts-1"
    voice: str = "alloy"
    voices: list[str] | None = None
    language: str = "en"
    response_format: Literal["pcm", "wav"] = "pcm"
    sample_rate: Annotated[int, msgspec.Meta(ge=_LOWEST_RATE, le=_HIGHEST_RATE)] = OPENAI_PCM_RATE
    chunk_ms: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 100


class _VoiceEntry(msgspec.Struct):
    id: str | None = None
    name: str | None = None
    voice_id: str | None = None
    language: str | None = None


class _VoiceList(msgspec.Struct):
    voices: list[str | _VoiceEntry] | None = None
    data: list[str | _VoiceEntry] | None = None


class OpenAITtsBackend(OpenAIHttpBackend, TtsBackend):
    """OpenAI-compatible text to speech over HTTP (/audio/speech), PCM streamed as it arrives."""

    Options: ClassVar[type[BackendOptions]] = OpenAITtsOptions
    capabilities: ClassVar[TtsCapabilities] = TtsCapabilities(
        streaming=True,
        voices=True,
        speed=True,
        instructions=True,
        languages=(),
        sample_rates=(OPENAI_PCM_RATE,),
    )

    def __init__(
        self, options: OpenAITtsOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(options, transport=transport)
        self.options = options
        self._voices: tuple[Voice, ...] | None = None

    async def list_voices(self) -> Sequence[Voice]:
        """The ``voices`` option, or the server's ``GET /audio/voices``, or ``voice`` alone.

        The server's list is asked for once, then kept; a failure is not kept, so asking
        again (the engine does, with backoff, while the server does not answer) tries again.

        Raises:
            BackendError: the server could not be asked (unreachable, 5xx...). A server
                without the endpoint (404, 405) or with an unreadable list is not an error.
        """
        if self._voices is None:
            ids = self.options.voices
            if ids is None:
                ids = await self._server_voices() or [self.options.voice]
            self._voices = tuple(self._voice(voice_id) for voice_id in dict.fromkeys(ids))
        return self._voices

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        """Ask the server to speak ``request.text`` and stream its audio into ``audio``.

        Empty text sends nothing. Cancelling closes the HTTP response at once (the connection
        is dropped) and closes ``audio``; the backend stays usable.

        Raises:
            BackendProtocolError: a content type that is not PCM or WAV, an odd number of
                PCM bytes, a WAV that is not 16-bit mono PCM, or no audio at all.
            BackendRejected: the server refused the text, the voice or an option.
            BackendError: the request failed (see :mod:`scaivoice.backends.openai_http`).
        """
        async with audio:
            if not request.text.strip():
                return
            async with self.request("POST", "audio/speech", json=self._body(request)) as response:
                reader = self._reader(response)
                sent = False
                async for data in response.aiter_bytes():
                    for chunk in reader.feed(data):
                        await audio.send(chunk)
                        sent = True
                reader.finish()
                if not sent:
                    raise self.protocol_error("the server sent no audio")

    def _body(self, request: TtsRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.options.model,
            "input": request.text,
            "voice": request.voice_id or self.options.voice,
            "response_format": self.options.response_format,
        }
        if request.speed != 1.0:
            body["speed"] = request.speed
        if request.instructions:
            body["instructions"] = request.instructions
        return body

    def _reader(self, response: httpx.Response) -> _Reader:
        """The reader for the answer's content type (checked before any byte is read)."""
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        options = self.options
        if content_type in _WAV_TYPES:
            return WavReader(options.chunk_ms, backend=self.name)
        if content_type in _PCM_TYPES or not content_type:
            # A generic type: raw PCM, unless the bytes start with a WAV header.
            return SniffingReader(options.sample_rate, options.chunk_ms, backend=self.name)
        raise self.protocol_error(
            f"expected {options.response_format} audio, got content type {content_type!r}"
        )

    async def _server_voices(self) -> list[str]:
        try:
            body = await self.request_body("GET", "audio/voices")
        except BackendRejected:
            return []  # 404 / 405: the server does not list its voices
        try:
            listing = msgspec.json.decode(body, type=_VoiceList | list[str | _VoiceEntry])
        except msgspec.DecodeError:
            return []
        entries = listing if isinstance(listing, list) else listing.voices or listing.data or []
        ids: list[str] = []
        for entry in entries:
            voice_id = entry if isinstance(entry, str) else entry.id or entry.voice_id or entry.name
            if voice_id:
                ids.append(voice_id)
        return ids

    def _voice(self, voice_id: str) -> Voice:
        return Voice(
            id=voice_id,
            name=voice_id.replace("_", " ").title(),
            language=self.options.language,
            sample_rate=self.options.sample_rate,
            description=f"{self.options.model} voice at {self.options.base_url}",
        )


# --------------------------------------------------------------------------- readers (sans-IO)


class PcmReader:
    """Turns a raw PCM16LE mono byte stream into :class:`AudioChunk` pieces of ``chunk_ms``.

    Bytes are passed on as soon as they hold whole samples; an odd byte waits for the next
    read. :meth:`finish` raises if the stream ended on half a sample.
    """

    def __init__(self, sample_rate: int, chunk_ms: int, *, backend: str) -> None:
        self.sample_rate = sample_rate
        self._step = max(1, sample_rate * chunk_ms // 1000) * 2
        self._carry = b""
        self._backend = backend

    def feed(self, data: bytes) -> Iterator[AudioChunk]:
        data = self._carry + data
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        for start in range(0, whole, self._step):
            yield AudioChunk(data[start : min(start + self._step, whole)], self.sample_rate)

    def finish(self) -> None:
        if self._carry:
            raise _protocol_error("the audio ended on half a 16-bit sample", self._backend)


class WavReader:
    """Reads a streamed WAV: the header first, then its PCM as :class:`PcmReader` does.

    Streaming servers write an unknown data size (0 or 0xFFFFFFFF): the data then runs to the
    end of the body. Only 16-bit PCM, mono, 8-48 kHz is accepted.
    """

    def __init__(self, chunk_ms: int, *, backend: str) -> None:
        self._chunk_ms = chunk_ms
        self._backend = backend
        self._header = b""
        self._pcm: PcmReader | None = None
        self._left: int | None = None  # data bytes still to come, when the header says

    def feed(self, data: bytes) -> Iterator[AudioChunk]:
        if self._pcm is None:
            self._header += data
            parsed = self._parse_header()
            if parsed is None:
                return
            self._pcm, self._left, data = parsed
        if self._left is not None:
            data, self._left = data[: self._left], max(0, self._left - len(data))
        yield from self._pcm.feed(data)

    def finish(self) -> None:
        if self._pcm is None:
            raise _protocol_error("the WAV header is incomplete", self._backend)
        self._pcm.finish()

    def _parse_header(self) -> tuple[PcmReader, int | None, bytes] | None:
        """``(reader, data size or None, the data bytes read so far)``, or ``None``: need more."""
        header = self._header
        if len(header) < 12:
            return None
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            raise _protocol_error(f"not a WAV file (starts {header[:12]!r})", self._backend)
        offset, rate = 12, None
        while True:
            if len(header) < offset + 8:
                break
            chunk_id, size = (
                header[offset : offset + 4],
                struct.unpack_from("<I", header, offset + 4)[0],
            )
            body = offset + 8
            if chunk_id == b"data":
                if rate is None:
                    raise _protocol_error("the WAV data comes before its format", self._backend)
                left = None if size in _UNKNOWN_SIZES else size
                return PcmReader(rate, self._chunk_ms, backend=self._backend), left, header[body:]
            if len(header) < body + size:
                break
            if chunk_id == b"fmt ":
                rate = self._check_format(header[body : body + size])
            offset = body + size + size % 2  # chunks are padded to an even size
        if len(header) > _WAV_HEADER_LIMIT:
            raise _protocol_error("the WAV header is too long", self._backend)
        return None

    def _check_format(self, fmt: bytes) -> int:
        if len(fmt) < 16:
            raise _protocol_error("the WAV format chunk is too short", self._backend)
        tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
        pcm = tag == 1 or (tag == 0xFFFE and len(fmt) >= 26 and fmt[24:26] == b"\x01\x00")
        if not pcm or bits != 16 or channels != 1 or not _LOWEST_RATE <= rate <= _HIGHEST_RATE:
            raise _protocol_error(
                f"unsupported WAV audio: format {tag:#x}, {bits}-bit, {channels} channel(s), "
                f"{rate} Hz (16-bit mono PCM at 8-48 kHz is read)",
                self._backend,
            )
        return int(rate)


class SniffingReader:
    """A body of a generic content type: a WAV if it starts with ``RIFF``, else raw PCM."""

    def __init__(self, sample_rate: int, chunk_ms: int, *, backend: str) -> None:
        self._pcm = PcmReader(sample_rate, chunk_ms, backend=backend)
        self._wav = WavReader(chunk_ms, backend=backend)
        self._start = b""
        self._reader: PcmReader | WavReader | None = None

    def feed(self, data: bytes) -> Iterator[AudioChunk]:
        if self._reader is None:
            self._start += data
            if len(self._start) < 4:
                return
            self._reader = self._wav if self._start.startswith(b"RIFF") else self._pcm
            data = self._start
        yield from self._reader.feed(data)

    def finish(self) -> None:
        if self._reader is None:
            self._reader = self._pcm
            list(self._pcm.feed(self._start))
        self._reader.finish()


_Reader = PcmReader | WavReader | SniffingReader


def _protocol_error(message: str, backend: str) -> BackendProtocolError:
    return BackendProtocolError(message, backend=backend)
