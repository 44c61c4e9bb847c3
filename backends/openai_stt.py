"""Speech to text through an OpenAI-compatible ``POST /audio/transcriptions`` endpoint.

The API is not streaming: the utterance is collected from the audio channel until it closes,
wrapped as a WAV file in memory (stdlib ``wave``) and sent as one multipart request. The answer
becomes exactly one final :class:`~scaivoice.engine.Transcript`; there are no interim results.

``response_format = "verbose_json"`` (the default) asks for segment timings, and with
``word_timestamps`` for word timings. A server that refuses ``verbose_json`` with a 4xx while
accepting ``json`` is remembered as such, and asked for ``json`` from then on.

Operator options (``[backends.options.stt.openai]``, see :mod:`scaivoice.backends.openai_http`)::

    [backends.options.stt.openai]
    base_url = "http://127.0.0.1:8001/v1"
    model = "whisper-1"
    language = "en"
"""

from __future__ import annotations

import io
import wave
from typing import ClassVar, Literal

import httpx
import msgspec
import trio

from scaivoice.engine import (
    BackendOptions,
    BackendRejected,
    SttBackend,
    SttCapabilities,
    SttRequest,
    Transcript,
    Word,
)

from .openai_http import OpenAIHttpBackend, OpenAIOptions

__all__ = ["OpenAISttBackend", "OpenAISttOptions", "wav_bytes"]

_MIN_AUDIO_MS = 100  # servers refuse shorter audio; it holds no word anyway
_LOWEST_RATE, _HIGHEST_RATE = 8000, 48000


class OpenAISttOptions(OpenAIOptions, frozen=True):
    """Options of the ``openai`` STT backend (besides those of :class:`OpenAIOptions`).

    Attributes:
        model: the transcription model the server knows.
        language: ISO-639-1 language when the request names none (``None``: detected).
        response_format: ``"verbose_json"`` for segment timings, or plain ``"json"``.
        word_timestamps: also ask for word timings (``timestamp_granularities[]=word``).
        temperature: sampling temperature; ``None``: the server's default.
        prompt: text that guides the model's style or spelling.
    """

    kind: ClassVar[str] = "stt"

    model: str = "whisper-1"
    language: str | None = None
    response_format: Literal["verbose_json", "json"] = "verbose_json"
    word_timestamps: bool = False
    temperature: float | None = None
    prompt: str | None = None


class _Segment(msgspec.Struct):
    start: float
    end: float
    text: str = ""


class _Word(msgspec.Struct):
    word: str
    start: float
    end: float


class _Transcription(msgspec.Struct):
    """The answer, ``json`` or ``verbose_json``; unknown fields are ignored."""

    text: str
    language: str | None = None
    duration: float | None = None
    segments: list[_Segment] | None = None
    words: list[_Word] | None = None


class OpenAISttBackend(OpenAIHttpBackend, SttBackend):
    """OpenAI-compatible speech to text over HTTP (/audio/transcriptions): one final result."""

    Options: ClassVar[type[BackendOptions]] = OpenAISttOptions
    capabilities: ClassVar[SttCapabilities] = SttCapabilities(
        streaming=False,
        interim_results=False,
        word_timings=False,
        languages=(),
        sample_rates=(8000, 16000, 22050, 24000, 44100, 48000),
    )

    def __init__(
        self, options: OpenAISttOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(options, transport=transport)
        self.options = options
        # None: not known yet whether the server gives verbose_json.
        self._verbose: bool | None = None if options.response_format == "verbose_json" else False

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        """Collect the utterance until ``audio`` closes, send it, emit one final transcript.

        Less than 100 ms of audio gives an empty final transcript without a request.
        Cancelling abandons the request (its connection is closed) and closes ``results``;
        the backend stays usable.

        Raises:
            BackendRejected: a sample rate outside 8-48 kHz, or the server refused the audio.
            BackendError: the request failed (see :mod:`scaivoice.backends.openai_http`).
        """
        async with results:
            if not _LOWEST_RATE <= request.sample_rate <= _HIGHEST_RATE:
                raise BackendRejected(
                    f"sample rate {request.sample_rate} is outside {_LOWEST_RATE}-{_HIGHEST_RATE}",
                    backend=self.name,
                )
            self._require_client()
            collected = bytearray()
            async for chunk in audio:
                collected += chunk
            pcm = bytes(collected[: len(collected) - len(collected) % 2])
            audio_ms = len(pcm) // 2 * 1000 // request.sample_rate
            if audio_ms < _MIN_AUDIO_MS:
                await results.send(Transcript("", final=True, end_ms=audio_ms))
                return
            answer = await self._post(wav_bytes(pcm, request.sample_rate), request)
            await results.send(self._transcript(answer, request, audio_ms))

    async def _post(self, wav: bytes, request: SttRequest) -> _Transcription:
        files = {"file": ("audio.wav", wav, "audio/wav")}
        if self._verbose is not False:
            try:
                body = await self.request_body(
                    "POST", "audio/transcriptions", data=self._form(request, True), files=files
                )
            except BackendRejected:
                if self._verbose is not None:
                    raise
                # Maybe only verbose_json is refused: try plain json once to find out.
                body = await self.request_body(
                    "POST", "audio/transcriptions", data=self._form(request, False), files=files
                )
                self._verbose = False
            else:
                self._verbose = True
        else:
            body = await self.request_body(
                "POST", "audio/transcriptions", data=self._form(request, False), files=files
            )
        try:
            return msgspec.json.decode(body, type=_Transcription)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise self.protocol_error(f"malformed transcription: {exc}") from exc

    def _form(self, request: SttRequest, verbose: bool) -> dict[str, str | list[str]]:
        options = self.options
        form: dict[str, str | list[str]] = {
            "model": options.model,
            "response_format": "verbose_json" if verbose else "json",
        }
        language = request.language or options.language
        if language:
            form["language"] = language.replace("_", "-").split("-")[0].lower()
        if verbose:
            form["timestamp_granularities[]"] = (
                ["segment", "word"] if options.word_timestamps else ["segment"]
            )
        if options.temperature is not None:
            form["temperature"] = str(options.temperature)
        if options.prompt:
            form["prompt"] = options.prompt
        return form

    def _transcript(self, answer: _Transcription, request: SttRequest, audio_ms: int) -> Transcript:
        def ms(seconds: float) -> int:
            return max(0, min(audio_ms, round(seconds * 1000)))

        words = tuple(Word(w.word.strip(), ms(w.start), ms(w.end)) for w in answer.words or ())
        segments = answer.segments or []
        if words:
            start_ms, end_ms = words[0].start_ms, words[-1].end_ms
        elif segments:
            start_ms, end_ms = ms(segments[0].start), ms(segments[-1].end)
        else:
            start_ms, end_ms = 0, audio_ms
        # verbose_json names the language ("english" at OpenAI, "en" elsewhere): keep codes.
        language = answer.language if answer.language and len(answer.language) <= 3 else None
        return Transcript(
            text=answer.text.strip(),
            final=True,
            start_ms=start_ms,
            end_ms=end_ms,
            words=words,
            language=language or request.language or self.options.language,
        )


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """``pcm`` (mono PCM16LE) as a WAV file in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()
