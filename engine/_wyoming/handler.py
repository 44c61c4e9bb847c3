"""One Wyoming connection: its events in, the engine's answers out.

Requests and what they get (``→`` from the client, ``←`` to it):

- ``describe`` ← ``info``; ``ping`` ← ``pong``; ``select-program`` (``scaivoice``) is taken
  silently.
- ``transcribe`` (optional) → ``audio-start``, ``audio-chunk``\\*, ``audio-stop`` ←
  ``transcript``; with a recogniser that gives interim results, ``transcript-start``,
  ``transcript-chunk``\\* (the text so far) before it and ``transcript-stop`` after it. The
  audio goes to the recogniser as it arrives.
- ``detect`` → audio ← ``detection`` for each wake word heard, ``not-detected`` at
  ``audio-stop`` when none was.
- ``synthesize`` ← ``audio-start``, ``audio-chunk``\\*, ``audio-stop`` (sentence by sentence, so
  the first audio comes after the first sentence). Streaming: ``synthesize-start``,
  ``synthesize-chunk``\\* (each completed sentence is spoken while more text arrives, each in
  its own ``audio-start`` … ``audio-stop``), the compatibility ``synthesize`` (ignored),
  ``synthesize-stop`` ← the rest, then ``synthesize-stopped``.

Anything else, or a request that cannot be served, is answered with an ``error`` event (a
stable ``code``, see :data:`.service.ERROR_CODES`) and the connection goes on; only bytes that are not
Wyoming events end it (after an ``error``). A client that goes away mid-stream ends its
connection quietly: its recognition or synthesis is cancelled.

The engine's side (recognition, synthesis, voices) is :class:`~.service.WyomingService`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import trio
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk as WyomingChunk
from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.ping import Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStopped,
    SynthesizeVoice,
)
from wyoming.wake import Detect, Detection, NotDetected

from .._audio import resample_pcm16
from .._contract.backends import AudioChunk, SttRequest
from .._contract.features import (
    FeatureSession,
    SessionContext,
    WakeDetected,
    open_feature_session,
)
from .._errors import ConfigError, ScaiVoiceError
from .._session.sentences import SentenceChunker
from .audio import AudioFormat, PcmConverter, UnsupportedAudio, pcm_chunks
from .framing import EventDecoder, FramingError, encode_event
from .info import PROGRAM, describe, wake_feature, wake_keywords
from .service import Refused, Voice, WyomingService

__all__ = ["ClientTooSlow", "WyomingConnection"]

log = logging.getLogger("scaivoice.wyoming")
_T = TypeVar("_T")

STT_RATE = 16000
"""Audio goes to the recogniser and the wake-word detector as 16 kHz mono PCM16."""
_STT_DEADLINE_S = 300.0
_TTS_DEADLINE_S = 120.0
"""A streamed synthesis must end this long after its ``synthesize-stop``."""
_SEND_TIMEOUT_S = 30.0
_IDLE_TIMEOUT_S = 300.0
"""A connection that sends nothing for this long is closed (it holds one of the server's
connection slots)."""
_RECEIVE_BYTES = 65536
_AUDIO_QUEUE = 16
_TEXT_QUEUE = 64


class ClientTooSlow(ScaiVoiceError):
    """The client did not read what was sent to it for a long time: the connection ends."""


@dataclass
class _AudioIn:
    """An audio stream being received (between ``audio-start`` and ``audio-stop``)."""

    converter: PcmConverter | None
    """``None`` for a stream refused at its start."""
    feed: Callable[[bytes], Awaitable[None]]
    finish: Callable[[], Awaitable[None]]
    abandon: Callable[[], None]
    settle: Callable[[], Awaitable[None]] = field(default=lambda: _nothing())
    """At the ``audio-stop`` of a stream that was dropped: wait for its job to end (its error
    comes before whatever the client asks next)."""
    discarding: bool = False
    """After an error: the rest of the stream is read and dropped, up to its ``audio-stop``."""
    limited: bool = True
    """Limited to ``max_audio_s`` (a transcription); a wake-word stream may last for hours."""


async def _nothing(pcm: bytes = b"") -> None:
    return None


def _ignore() -> None:
    return None


@dataclass
class _Job:
    """A task of the connection's nursery: a recognition or a streamed synthesis."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


class _AudioOut:
    """Synthesised audio to the client: ``audio-start`` at the first chunk (its rate is the
    stream's), chunks of at most 100 ms resampled to that rate, ``audio-stop`` at the end."""

    def __init__(self, send: Callable[[Event], Awaitable[None]]) -> None:
        self._send = send
        self.rate: int | None = None
        self.ms = 0

    async def write(self, chunk: AudioChunk) -> None:
        if self.rate is None:
            self.rate = chunk.sample_rate
            await self._send(AudioStart(rate=self.rate, width=2, channels=1, timestamp=0).event())
        pcm = chunk.pcm
        if chunk.sample_rate != self.rate:
            pcm = resample_pcm16(pcm, chunk.sample_rate, self.rate)
        for piece in pcm_chunks(pcm, self.rate):
            event = WyomingChunk(
                rate=self.rate, width=2, channels=1, audio=piece, timestamp=self.ms
            ).event()
            await self._send(event)
            self.ms += len(piece) * 1000 // (2 * self.rate)

    async def close(self, *, empty_rate: int | None = None) -> None:
        """End the audio: ``audio-stop`` when audio was sent; with ``empty_rate``, an empty
        ``audio-start`` / ``audio-stop`` at that rate when none was."""
        if self.rate is None and empty_rate is not None:
            self.rate = empty_rate
            await self._send(AudioStart(rate=self.rate, width=2, channels=1, timestamp=0).event())
        if self.rate is not None:
            await self._send(AudioStop(timestamp=self.ms).event())


class WyomingConnection:
    """One client's connection. :meth:`run` serves it until the client closes it."""

    def __init__(self, stream: trio.abc.Stream, service: WyomingService) -> None:
        self._stream = stream
        self._service = service
        self._engine = service.engine
        self._send_lock = trio.StrictFIFOLock()
        self._request: Transcribe | Detect | None = None
        self._audio: _AudioIn | None = None
        self._speaking: tuple[_Job, SentenceChunker, trio.MemorySendChannel[str]] | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        """Read events and answer them until the client closes the connection (or sends bytes
        that are not events). Cancelling it cancels what the connection was doing; it does not
        close the stream (the caller owns it)."""
        decoder = EventDecoder()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while True:
                    try:
                        for event in decoder.events():
                            await self._handle(event)
                    except FramingError as exc:
                        await self._error(exc.code, str(exc))
                        return
                    with trio.move_on_after(_IDLE_TIMEOUT_S) as idle:
                        data = await self._stream.receive_some(_RECEIVE_BYTES)
                    if idle.cancelled_caught:
                        log.info("wyoming: closing a connection idle for %g s", _IDLE_TIMEOUT_S)
                        return
                    if not data:
                        return
                    decoder.feed(data)
            finally:
                self._abandon()
                nursery.cancel_scope.cancel()

    def _abandon(self) -> None:
        """The client is gone: stop what it asked for."""
        if self._audio is not None:
            self._audio.abandon()
            self._audio = None
        if self._speaking is not None:
            self._speaking[0].scope.cancel()
            self._speaking = None

    # ---------------------------------------------------------------- sending

    async def _send(self, event: Event) -> None:
        data = encode_event(event)
        async with self._send_lock:
            with trio.move_on_after(_SEND_TIMEOUT_S) as deadline:
                await self._stream.send_all(data)
        if deadline.cancelled_caught:
            raise ClientTooSlow(f"the client read nothing for {_SEND_TIMEOUT_S:g} s")

    async def _error(self, code: str, message: str) -> None:
        log.info("wyoming: %s: %s", code, message)
        await self._send(Error(text=message, code=code).event())

    # ---------------------------------------------------------------- dispatch

    async def _handle(self, event: Event) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is None:
            await self._error("unknown_event", f"this server does not serve {event.type!r} events")
            return
        try:
            await handler(self, event)
        except Refused as exc:
            await self._error(exc.code, str(exc))

    async def _on_describe(self, event: Event) -> None:
        await self._send(describe(self._engine).event())

    async def _on_ping(self, event: Event) -> None:
        await self._send(Pong(text=event.data.get("text")).event())

    async def _on_select_program(self, event: Event) -> None:
        name = event.data.get("name")
        if name != PROGRAM:
            raise Refused("unknown_program", f"this server's programs are all named {PROGRAM!r}")

    async def _on_transcribe(self, event: Event) -> None:
        self._not_streaming_audio(event.type)
        request = _parse(Transcribe.from_event, event)
        _optional_str(request.language, "'language'")
        self._request = request

    async def _on_detect(self, event: Event) -> None:
        self._not_streaming_audio(event.type)
        request = _parse(Detect.from_event, event)
        names = request.names
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise Refused("invalid_event", "'names' must be a list of wake word names")
        self._request = request

    def _not_streaming_audio(self, what: str) -> None:
        if self._audio is not None:
            raise Refused("unexpected_event", f"{what!r} while an audio stream is open")

    # ---------------------------------------------------------------- audio in

    async def _on_audio_start(self, event: Event) -> None:
        if self._audio is not None:
            raise Refused("unexpected_event", "audio-start while an audio stream is open")
        self._open_audio(event.data)

    def _open_audio(self, data: dict[str, Any]) -> _AudioIn:
        """Start the stream the last request asked for (by default a transcription). A
        stream that cannot start is refused, and the rest of it dropped up to its
        ``audio-stop``: one error per stream, not one per chunk."""
        request, self._request = self._request, None
        try:
            try:
                converter = PcmConverter(AudioFormat.from_data(data), STT_RATE)
            except UnsupportedAudio as exc:
                raise Refused("unsupported_audio_format", str(exc)) from exc
            if isinstance(request, Detect):
                self._audio = self._open_detection(request, converter)
            else:
                self._audio = self._open_transcription(request, converter)
        except Refused:
            self._audio = _AudioIn(None, _nothing, _nothing, _ignore, discarding=True)
            raise
        return self._audio

    async def _on_audio_chunk(self, event: Event) -> None:
        audio = self._audio
        if audio is None:  # audio-start is optional for some clients: start here
            audio = self._open_audio(event.data)
        if audio.discarding:
            return
        assert audio.converter is not None
        try:
            fmt = AudioFormat.from_data(event.data)
        except UnsupportedAudio as exc:
            self._discard(audio)
            raise Refused("unsupported_audio_format", str(exc)) from exc
        pcm = audio.converter.convert(event.payload or b"", fmt)
        if audio.limited and audio.converter.ms_in > self._service.max_audio_ms:
            self._discard(audio)
            raise Refused(
                "audio_too_long",
                f"the audio stream is longer than {self._service.max_audio_ms / 1000:g} s",
            )
        await audio.feed(pcm)

    async def _on_audio_stop(self, event: Event) -> None:
        audio, self._audio = self._audio, None
        if audio is None:
            raise Refused("unexpected_event", "audio-stop without an audio stream")
        if audio.discarding:
            await audio.settle()
            return
        assert audio.converter is not None
        tail = audio.converter.flush()
        if tail:
            await audio.feed(tail)
        await audio.finish()

    def _discard(self, audio: _AudioIn) -> None:
        audio.abandon()
        audio.discarding = True

    # ---------------------------------------------------------------- transcription

    def _open_transcription(self, request: Transcribe | None, converter: PcmConverter) -> _AudioIn:
        language = self._service.language(request.language if request else None)
        audio_send, audio_recv = trio.open_memory_channel[bytes](_AUDIO_QUEUE)
        job = _Job()
        assert self._nursery is not None
        asked = SttRequest(sample_rate=STT_RATE, language=language, word_timings=False)
        self._nursery.start_soon(self._transcribe, asked, audio_recv, job)
        stream: _AudioIn

        async def feed(pcm: bytes) -> None:
            if not pcm:
                return
            try:
                await audio_send.send(pcm)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                stream.discarding = True  # the recogniser stopped: its job says why

        async def finish() -> None:
            audio_send.close()
            with trio.move_on_after(_STT_DEADLINE_S) as deadline:
                await job.done.wait()
            if deadline.cancelled_caught:
                job.scope.cancel()
                raise Refused("timeout", "speech recognition took too long")

        def abandon() -> None:
            audio_send.close()
            job.scope.cancel()

        async def settle() -> None:
            audio_send.close()
            with trio.move_on_after(_STT_DEADLINE_S):
                await job.done.wait()

        stream = _AudioIn(converter, feed, finish, abandon, settle)
        return stream

    async def _transcribe(
        self, request: SttRequest, audio: trio.MemoryReceiveChannel[bytes], job: _Job
    ) -> None:
        try:
            with job.scope:
                await self._recognise(request, audio)
        except Refused as exc:
            await self._error(exc.code, str(exc))
        finally:
            job.done.set()

    async def _recognise(
        self, request: SttRequest, audio: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        """The transcript events of one stream: with a recogniser that gives interim results,
        ``transcript-start``, a ``transcript-chunk`` per new text, then ``transcript`` and
        ``transcript-stop``; without, ``transcript`` alone."""
        streaming = self._engine.stt.capabilities.interim_results
        started = False
        last = ""

        async def interim(text: str) -> None:
            nonlocal started, last
            if not streaming:
                return
            if not started:
                started = True
                await self._send(TranscriptStart(language=request.language).event())
            last = text
            await self._send(TranscriptChunk(text=text).event())

        final = await self._service.recognise(request, audio, interim)
        text = final.text.strip()
        language = final.language or request.language
        if streaming:
            if not started:
                await self._send(TranscriptStart(language=language).event())
            if text and text != last:
                await self._send(TranscriptChunk(text=text).event())
        await self._send(Transcript(text=text, language=language).event())
        if streaming:
            await self._send(TranscriptStop().event())

    # ---------------------------------------------------------------- wake words

    def _open_detection(self, request: Detect, converter: PcmConverter) -> _AudioIn:
        feature = wake_feature(self._engine)
        if feature is None:
            raise Refused(
                "wake_word_unavailable",
                "no server-side wake-word detector is installed: pip install 'scaivoice[wake]'",
            )
        offered = wake_keywords(feature)
        names = tuple(dict.fromkeys(str(n) for n in request.names)) if request.names else None
        unknown = [n for n in names or () if n not in offered]
        if unknown:
            raise Refused(
                "unknown_wake_word",
                f"unknown wake word(s) {', '.join(unknown)}; this server offers "
                f"{', '.join(offered)}",
            )
        context = SessionContext(tenant=self._service.tenant, wake_word=names)
        try:
            session: FeatureSession = open_feature_session(
                feature, sample_rate=STT_RATE, context=context
            )
        except ConfigError as exc:
            raise Refused("unknown_wake_word", str(exc)) from exc
        detections = 0

        async def feed(pcm: bytes) -> None:
            nonlocal detections
            if not pcm:
                return
            for found in await session.process(pcm):
                if isinstance(found, WakeDetected):
                    detections += 1
                    heard_ms = round(converter.ms_in)
                    await self._send(
                        Detection(name=found.keyword or None, timestamp=heard_ms).event()
                    )

        async def finish() -> None:
            if not detections:
                await self._send(NotDetected().event())

        return _AudioIn(converter, feed, finish, lambda: None, limited=False)

    # ---------------------------------------------------------------- synthesis

    async def _on_synthesize(self, event: Event) -> None:
        if self._speaking is not None:
            return  # the compatibility copy of a streamed request: its text came in chunks
        request = _parse(Synthesize.from_event, event)
        _check_format(request.text_format)
        _check_voice(request.voice)
        if not isinstance(request.text, str) or not request.text.strip():
            raise Refused("invalid_event", "'text' must be a non-empty string")
        self._check_length(request.text)
        voice = self._service.voice(request.voice)
        chunker = SentenceChunker()
        pieces = [*chunker.feed(request.text), *chunker.flush()]
        out = _AudioOut(self._send)
        try:
            for piece in pieces:
                await self._service.speak(voice, piece, out.write)
        except Refused as exc:
            if out.rate is None:
                raise
            await self._error(exc.code, str(exc))  # mid-audio: the audio is closed after it
        await out.close(empty_rate=self._service.sample_rate(voice))

    async def _on_synthesize_start(self, event: Event) -> None:
        if self._speaking is not None:
            raise Refused("unexpected_event", "synthesize-start while a synthesis is streaming")
        request = _parse(SynthesizeStart.from_event, event)
        _check_format(request.text_format)
        _check_voice(request.voice)
        voice = self._service.voice(request.voice)
        text_send, text_recv = trio.open_memory_channel[str](_TEXT_QUEUE)
        job = _Job()
        self._speaking = (job, SentenceChunker(), text_send)
        assert self._nursery is not None
        self._nursery.start_soon(self._speak_stream, voice, text_recv, job)

    async def _on_synthesize_chunk(self, event: Event) -> None:
        request = _parse(SynthesizeChunk.from_event, event)
        if self._speaking is None:
            raise Refused("unexpected_event", "synthesize-chunk without synthesize-start")
        if not isinstance(request.text, str):
            raise Refused("invalid_event", "'text' must be a string")
        job, chunker, text_send = self._speaking
        self._check_length(request.text)
        for piece in chunker.feed(request.text):
            await self._queue_text(job, text_send, piece)

    async def _on_synthesize_stop(self, event: Event) -> None:
        speaking, self._speaking = self._speaking, None
        if speaking is None:
            raise Refused("unexpected_event", "synthesize-stop without synthesize-start")
        job, chunker, text_send = speaking
        for piece in chunker.flush():
            await self._queue_text(job, text_send, piece)
        text_send.close()
        with trio.move_on_after(_TTS_DEADLINE_S) as deadline:
            await job.done.wait()
        if deadline.cancelled_caught:
            job.scope.cancel()
            await self._error("timeout", "speech synthesis took too long")
        await self._send(SynthesizeStopped().event())  # after an error too: the client waits

    async def _queue_text(
        self, job: _Job, text_send: trio.MemorySendChannel[str], text: str
    ) -> None:
        if job.done.is_set():
            return  # the synthesis failed (its error was sent): the rest is not spoken
        try:
            await text_send.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _speak_stream(
        self, voice: Voice, texts: trio.MemoryReceiveChannel[str], job: _Job
    ) -> None:
        try:
            with job.scope:
                async with texts:
                    async for text in texts:
                        out = _AudioOut(self._send)
                        try:
                            await self._service.speak(voice, text, out.write)
                        except Refused as exc:
                            await self._error(exc.code, str(exc))
                            await out.close()  # mid-audio: closed after the error
                            return  # the rest is not spoken
                        await out.close()
        finally:
            job.done.set()

    def _check_length(self, text: str) -> None:
        limit = self._service.max_text_chars
        if len(text) > limit:
            raise Refused("input_too_long", f"text is limited to {limit} characters")


_Handler = Callable[[WyomingConnection, Event], Awaitable[None]]
_HANDLERS: Mapping[str, _Handler] = MappingProxyType(
    {
        "describe": WyomingConnection._on_describe,
        "ping": WyomingConnection._on_ping,
        "select-program": WyomingConnection._on_select_program,
        "transcribe": WyomingConnection._on_transcribe,
        "detect": WyomingConnection._on_detect,
        "audio-start": WyomingConnection._on_audio_start,
        "audio-chunk": WyomingConnection._on_audio_chunk,
        "audio-stop": WyomingConnection._on_audio_stop,
        "synthesize": WyomingConnection._on_synthesize,
        "synthesize-start": WyomingConnection._on_synthesize_start,
        "synthesize-chunk": WyomingConnection._on_synthesize_chunk,
        "synthesize-stop": WyomingConnection._on_synthesize_stop,
    }
)
"""The events a connection serves, by type."""


def _parse(parser: Callable[[Event], _T], event: Event) -> _T:
    """``parser(event)`` (a ``from_event``), a missing or mistyped field refused."""
    try:
        return parser(event)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Refused("invalid_event", f"invalid {event.type!r} event: {exc!r}") from exc


def _optional_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Refused("invalid_event", f"{what} must be a string")
    return value


def _check_voice(voice: SynthesizeVoice | None) -> SynthesizeVoice | None:
    if voice is not None:
        for key in ("name", "language", "speaker"):
            _optional_str(getattr(voice, key), f"'voice.{key}'")
    return voice


def _check_format(text_format: Any) -> None:
    fmt = getattr(text_format, "value", text_format)
    if fmt is not None and fmt != "text":
        raise Refused(
            "unsupported_text_format", f"text_format {fmt!r} is not supported: plain text only"
        )
