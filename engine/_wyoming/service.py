"""The engine's side of the Wyoming server: recognition, synthesis, voices, and the refusals
that become ``error`` events.

Backends are driven as the voice-note API drives them: each streaming call through
:func:`~scaivoice.engine._contract.calls.call_backend` (channels closed, failures mapped and
counted for ``/metrics``), voices resolved from the engine's library, text normalised with the
tenant's defaults. Nothing here knows the wire format.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from wyoming.tts import SynthesizeVoice

from .._contract.backends import AudioChunk, NormaliseRequest, SttRequest, Transcript, TtsRequest
from .._contract.calls import call_backend
from .._errors import BackendError, BackendRejected, ConfigError, ScaiVoiceError
from .._host.engine import Engine

__all__ = ["ERROR_CODES", "Refused", "Voice", "WyomingService", "primary_language"]

log = logging.getLogger("scaivoice.wyoming")

ERROR_CODES = frozenset(
    {
        "invalid_event",  # bytes that are not an event, or an event missing a required field
        "event_too_large",  # a header, data or payload over the limits (the connection closes)
        "unknown_event",  # an event type this server does not serve
        "unexpected_event",  # an event out of order (audio-stop with no audio, ...)
        "unknown_program",  # select-program names a program this server does not have
        "unsupported_audio_format",  # rate / width / channels that cannot be converted
        "audio_too_long",  # more audio than [voice_notes] max_audio_s in one stream
        "unknown_voice",  # a voice that is not in the library
        "unsupported_text_format",  # text_format other than "text"
        "input_too_long",  # more text than [voice_notes] max_input_chars
        "wake_word_unavailable",  # detect without a server-side wake-word feature
        "unknown_wake_word",  # detect names a wake word the feature does not offer
        "backend_unavailable",  # the recogniser / voice is down (retry later)
        "backend_rejected",  # the backend refused this input
        "backend_failed",  # the backend failed
        "timeout",  # recognition or synthesis took too long
        "busy",  # the server serves too many connections (this one is closed)
    }
)
"""The ``code`` of every ``error`` event this server sends."""

Voice = tuple[str, str | None]
"""(TTS backend name, backend-local voice id or ``None`` for its default)."""

_TTS_DEADLINE_S = 120.0
_RESULTS_QUEUE = 16
_AUDIO_QUEUE = 8


class Refused(ScaiVoiceError):
    """A request answered with an ``error`` event (``code`` in :data:`ERROR_CODES`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def primary_language(language: str) -> str:
    """``en-US`` / ``en_US`` / ``EN`` -> ``en``."""
    return language.replace("_", "-").split("-", 1)[0].lower()


def _backend_refusal(what: str, exc: BackendError) -> Refused:
    if isinstance(exc, BackendRejected):
        return Refused("backend_rejected", f"{what} refused the input: {exc}")
    if exc.retryable:
        return Refused("backend_unavailable", f"{what} is unavailable: {exc}")
    return Refused("backend_failed", f"{what} failed: {exc}")


class WyomingService:
    """What every connection shares: the open engine and whose defaults apply.

    Args:
        engine: an open engine.
        tenant: whose session defaults (voice, language, text normalisation, lexicon) apply.
    """

    def __init__(self, engine: Engine, *, tenant: str = "default") -> None:
        self.engine = engine
        self.tenant = tenant
        settings = engine.config.voice_notes
        self.max_audio_ms = settings.max_audio_s * 1000
        self.max_text_chars = settings.max_input_chars

    # ---------------------------------------------------------------- recognition

    def language(self, asked: str | None) -> str | None:
        """The language to recognise: the request's, else the tenant's default (``en``)."""
        if not asked:
            asked = self.engine.config.session_defaults(self.tenant).language
        return primary_language(asked) if asked else None

    async def recognise(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        interim: Callable[[str], Awaitable[None]],
    ) -> Transcript:
        """Recognise ``audio`` (closed by the caller at the end of the stream): ``interim`` is
        awaited with each new non-empty interim text; returns the final transcript. Cancelling
        cancels the recogniser. ``audio`` is closed on return.

        Raises:
            Refused: the recogniser failed (``backend_*``).
        """
        stt = self.engine.stt
        results_send, results_recv = trio.open_memory_channel[Transcript](_RESULTS_QUEUE)
        failure: BackendError | None = None
        final: Transcript | None = None
        last = ""

        async def recognise() -> None:
            nonlocal failure
            call = partial(stt.transcribe, request, audio, results_send)
            failure = await call_backend(
                stt, call, results_send, audio, counter=self.engine.telemetry
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(recognise)
            async with results_recv:
                async for result in results_recv:
                    if result.final:
                        final = result
                        continue
                    text = result.text.strip()
                    if text and text != last:
                        last = text
                        await interim(text)
        if failure is not None:
            raise _backend_refusal("speech recognition", failure)
        if final is None:
            raise Refused("backend_failed", "the recogniser produced no final transcript")
        return final

    # ---------------------------------------------------------------- synthesis

    def voice(self, asked: SynthesizeVoice | None) -> Voice:
        """The voice for a request's ``voice``: by name (a library id such as ``hibari:heart``,
        or a voice name only one backend has), else the default voice when it speaks the asked
        language, else the first library voice that does, else the default.

        Raises:
            Refused: ``unknown_voice``.
        """
        engine = self.engine
        default_id = engine.config.session_defaults(self.tenant).voice_id
        try:
            if asked is not None and asked.name:
                return engine.resolve_voice(asked.name)
            default = engine.resolve_voice(default_id)
        except ConfigError as exc:
            raise Refused("unknown_voice", str(exc)) from exc
        if asked is None or not asked.language:
            return default
        language = primary_language(asked.language)
        speaking = [
            e for e in engine.voices.values() if primary_language(e.voice.language) == language
        ]
        if not speaking or any(
            (e.backend, e.voice.id) == default or (e.backend, None) == default for e in speaking
        ):
            return default
        return speaking[0].backend, speaking[0].voice.id

    def sample_rate(self, voice: Voice) -> int:
        """The rate ``voice`` speaks at (for audio that turned out empty)."""
        backend, local = voice
        entry = self.engine.voices.get(f"{backend}:{local}")
        if entry is not None:
            return entry.voice.sample_rate
        tts = self.engine.tts.get(backend)
        rates = tts.capabilities.sample_rates if tts is not None else ()
        return rates[0] if rates else 24000

    async def normalise(self, text: str) -> str:
        """``text`` as the tenant's text normalisation speaks it (unchanged when it is off)."""
        engine = self.engine
        defaults = engine.config.session_defaults(self.tenant)
        if engine.normaliser is None or not defaults.normalize_text:
            return text
        request = NormaliseRequest(
            language=defaults.language, lexicon=engine.config.lexicon_for(self.tenant)
        )
        try:
            return await engine.normaliser.normalise(text, request)
        except Exception as exc:  # speak the text as written rather than fail the request
            log.warning("normalisation failed, speaking the text as written: %s", exc)
            return text

    async def speak(
        self, voice: Voice, text: str, write: Callable[[AudioChunk], Awaitable[None]]
    ) -> None:
        """Synthesise one piece of text (normalised first): ``write`` is awaited with each
        chunk as it comes. Cancelling cancels the synthesis.

        Raises:
            Refused: the voice failed (``backend_*``) or took too long (``timeout``).
        """
        backend, local = voice
        tts = self.engine.tts.get(backend)
        if tts is None:
            raise Refused("backend_unavailable", f"the voices of {backend!r} are not available")
        spoken = await self.normalise(text)
        if not spoken.strip():
            return
        request = TtsRequest(text=spoken, voice_id=local)
        send, recv = trio.open_memory_channel[AudioChunk](_AUDIO_QUEUE)
        failure: BackendError | None = None

        async def produce() -> None:
            nonlocal failure
            call = partial(tts.synthesize, request, send)
            failure = await call_backend(tts, call, send, counter=self.engine.telemetry)

        with trio.move_on_after(_TTS_DEADLINE_S) as deadline:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                async with recv:
                    async for chunk in recv:
                        await write(chunk)
        if deadline.cancelled_caught:
            raise Refused("timeout", "speech synthesis took too long")
        if failure is not None:
            raise _backend_refusal("speech synthesis", failure)
