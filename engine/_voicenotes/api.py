"""Voice notes for chat gateways: OpenAI-compatible transcription and speech over HTTP.

``POST /v1/audio/transcriptions`` takes an audio file (OGG/Opus voice notes, WAV, MP3, WebM,
M4A, FLAC) and answers its transcript; ``POST /v1/audio/speech`` takes text and answers audio
(``opus`` is an OGG/Opus file messaging apps play as a native voice note). OpenAI's model names
are aliases of the configured backends, so the official SDK works unchanged. Speech is cached by
content (see ``_cache``).

With the diarization feature (config key ``diarize``) installed, ``gpt-4o-transcribe-diarize``
and ``response_format=diarized_json`` answer OpenAI's speaker segments: the recording's words go
to the feature's :class:`RecordingDiarizer`, with OpenAI's ``known_speaker_names[]`` /
``known_speaker_references[]`` (audio data URLs) to name speakers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, get_args

import trio

from .._audio import resample_pcm16
from .._contract.backends import (
    AudioChunk,
    NormaliseRequest,
    SttRequest,
    Transcript,
    TtsRequest,
    Word,
)
from .._contract.calls import call_backend
from .._contract.features import DiarizedSegment, RecordingDiarizer, TranscribedSpan
from .._errors import BackendError, BackendRejected, ConfigError, EnrolmentRejected
from .._host.auth import PERMISSION_USE, Principal
from .._host.engine import Engine
from .._server.http import FormPart, HttpProblem
from .cache import SpeechCache, cache_key
from .codecs import (
    CONTENT_TYPES,
    AudioDecodeError,
    AudioTooLong,
    SpeechFormat,
    decode_audio_in_worker,
    encode_audio,
)

__all__ = ["SpeechResult", "VoiceNotes"]

log = logging.getLogger("scaivoice.voicenotes")

STT_ALIASES = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
TTS_ALIASES = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
#: OpenAI's voice names: accepted and served with the tenant's (or engine's) default voice.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}
)
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json", "srt", "vtt", "diarized_json")
#: OpenAI's diarizing model: the configured recogniser plus the ``diarize`` feature.
DIARIZE_MODEL = "gpt-4o-transcribe-diarize"
DIARIZE_FEATURE_KEY = "diarize"
_MAX_KNOWN_SPEAKERS = 4  # as OpenAI
_DIARIZE_DEADLINE_S = 300.0
_STT_RATE = 16000
_FEED_BYTES = _STT_RATE // 10 * 2  # the decoded file goes to STT in 100 ms chunks
_STT_DEADLINE_S = 300.0
_TTS_DEADLINE_S = 120.0


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """Encoded speech and how it was obtained."""

    data: bytes
    content_type: str
    cache_hit: bool
    voice_id: str
    warnings: tuple[str, ...]
    key: str = ""
    """Its key in the speech cache (see :meth:`SpeechCache.path`)."""


class VoiceNotes:
    """The voice-note API of one engine."""

    def __init__(self, engine: Engine, *, cache: SpeechCache | None = None) -> None:
        self.engine = engine
        settings = engine.config.voice_notes
        self.settings = settings
        self.cache = (
            cache
            if cache is not None
            else SpeechCache(
                None if settings.cache_dir is None else Path(settings.cache_dir).expanduser(),
                settings.cache_max_bytes,
            )
        )
        self._codec_limiter = trio.CapacityLimiter(2)

    # ---------------------------------------------------------------- models

    def models(self) -> list[dict[str, Any]]:
        """What ``GET /v1/models`` lists: the backends and the OpenAI aliases they answer to."""
        engine = self.engine
        entries: list[tuple[str, str]] = []
        if self.settings.transcription_enabled:
            entries += [
                (engine.stt.name, "stt"),
                *((alias, "stt") for alias in sorted(STT_ALIASES)),
            ]
            if self._diarizer() is not None:
                entries.append((DIARIZE_MODEL, "stt"))
        entries += [(name, "tts") for name in engine.tts]
        entries += [(alias, "tts") for alias in sorted(TTS_ALIASES)]
        return [
            {"id": model, "object": "model", "created": 0, "owned_by": "scaivoice", "kind": kind}
            for model, kind in entries
        ]

    # ---------------------------------------------------------------- transcription

    def _diarizer(self) -> RecordingDiarizer | None:
        """The ``diarize`` feature, when it is installed, open and offers voice notes."""
        entry = self.engine.features.get(DIARIZE_FEATURE_KEY)
        if entry is None or not isinstance(entry[1], RecordingDiarizer):
            return None
        return entry[1]

    async def transcribe(
        self,
        principal: Principal,
        form: dict[str, FormPart],
        *,
        parts: Sequence[FormPart] = (),
    ) -> tuple[str, Any]:
        """Transcribe the form's ``file``; returns (response_format, transcript document).

        ``parts`` are the form's parts in order, for the fields that repeat
        (``known_speaker_names[]``, ``known_speaker_references[]``).

        Raises:
            HttpProblem: bad input (400/404/413), diarization asked of a server without it
                (501), or the recogniser or diarizer failing (502/503/504).
        """
        principal.require(PERMISSION_USE)
        if not self.settings.transcription_enabled:
            raise HttpProblem(404, "transcription_disabled", "voice transcription is disabled")
        upload = form.get("file")
        if upload is None or upload.filename is None:
            raise HttpProblem(400, "missing_file", "send the audio as the multipart field 'file'")
        model = _field(form, "model")
        known = (
            model is None
            or model in STT_ALIASES
            or model == self.engine.stt.name
            or model == DIARIZE_MODEL
        )
        if not known:
            raise HttpProblem(
                400, "unknown_model", f"unknown transcription model {model!r}; see GET /v1/models"
            )
        response_format = _field(form, "response_format") or "json"
        if response_format not in TRANSCRIPT_FORMATS:
            raise HttpProblem(
                400,
                "invalid_request",
                f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}",
            )
        diarizer = self._diarizer()
        if diarizer is None and (model == DIARIZE_MODEL or response_format == "diarized_json"):
            raise HttpProblem(
                501,
                "diarization_unavailable",
                "speaker diarization is not available on this server (it needs the "
                "speaker-diarization feature: pip install 'scaivoice[speakers]')",
            )
        known_names, known_clips = _known_speakers(parts or list(form.values()))
        if known_names and response_format != "diarized_json":
            raise HttpProblem(
                400,
                "invalid_request",
                "known_speaker_names[] needs response_format=diarized_json",
            )
        language = _field(form, "language") or None
        name = upload.filename or "the file"
        try:
            with trio.move_on_after(self.settings.decode_timeout_s) as decode_deadline:
                pcm = await decode_audio_in_worker(
                    upload.data,
                    max_duration_s=self.settings.max_audio_s,
                    limiter=self._codec_limiter,
                )
        except AudioTooLong as exc:
            raise HttpProblem(413, "audio_too_long", f"{name}: {exc}") from exc
        except AudioDecodeError as exc:
            raise HttpProblem(400, "invalid_audio", f"{name}: {exc}") from exc
        if decode_deadline.cancelled_caught:
            raise HttpProblem(
                422,
                "audio_decode_timeout",
                f"{name}: decoding took longer than {self.settings.decode_timeout_s:g} s",
            )
        transcript = await self._recognise(pcm, language)
        duration_s = len(pcm) / 2 / _STT_RATE
        if response_format == "diarized_json":
            assert diarizer is not None
            references = {
                name: await self._reference(name, clip)
                for name, clip in zip(known_names, known_clips, strict=True)
            }
            segments = await self._diarize(diarizer, pcm, transcript, duration_s, references)
            return response_format, _diarized_document(transcript, segments, duration_s)
        return response_format, _transcript_document(
            response_format, transcript, duration_s, language
        )

    async def _reference(self, name: str, data_url: str) -> bytes:
        """A known speaker's reference clip (an audio data URL) as 16 kHz PCM16."""
        what = f"the reference of known speaker {name!r}"
        head, comma, payload = data_url.partition(",")
        if not comma or not head.startswith("data:") or not head.endswith(";base64"):
            raise HttpProblem(
                400,
                "invalid_known_speaker_reference",
                f"{what} must be a data URL: data:audio/wav;base64,...",
            )
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HttpProblem(
                400, "invalid_known_speaker_reference", f"{what} is not valid base64"
            ) from exc
        try:
            with trio.move_on_after(self.settings.decode_timeout_s) as deadline:
                pcm = await decode_audio_in_worker(
                    audio, max_duration_s=30.0, limiter=self._codec_limiter
                )
        except (AudioDecodeError, AudioTooLong) as exc:
            raise HttpProblem(400, "invalid_known_speaker_reference", f"{what}: {exc}") from exc
        if deadline.cancelled_caught:
            raise HttpProblem(
                400, "invalid_known_speaker_reference", f"{what}: decoding took too long"
            )
        return pcm

    async def _diarize(
        self,
        diarizer: RecordingDiarizer,
        pcm: bytes,
        transcript: Transcript,
        duration_s: float,
        references: dict[str, bytes],
    ) -> list[DiarizedSegment]:
        """Speaker segments of the transcript: by word where the recogniser timed its words."""
        if transcript.words:
            spans = [TranscribedSpan(w.start_ms, w.end_ms, w.text) for w in transcript.words]
        elif transcript.text.strip():
            spans = [TranscribedSpan(0, round(duration_s * 1000), transcript.text.strip())]
        else:
            spans = []
        with trio.move_on_after(_DIARIZE_DEADLINE_S) as deadline:
            try:
                segments = await diarizer.diarize(pcm, spans, known_speakers=references or None)
            except EnrolmentRejected as exc:
                raise HttpProblem(400, "invalid_known_speaker_reference", str(exc)) from exc
        if deadline.cancelled_caught:
            raise HttpProblem(504, "diarization_timeout", "speaker diarization took too long")
        return segments

    async def _recognise(self, pcm: bytes, language: str | None) -> Transcript:
        stt = self.engine.stt
        audio_send, audio_recv = trio.open_memory_channel[bytes](8)
        results_send, results_recv = trio.open_memory_channel[Transcript](8)
        final: Transcript | None = None
        failure: BackendError | None = None

        async def recognise() -> None:
            nonlocal failure
            request = SttRequest(sample_rate=_STT_RATE, language=language)
            call = partial(stt.transcribe, request, audio_recv, results_send)
            failure = await call_backend(
                stt, call, results_send, audio_recv, counter=self.engine.telemetry
            )

        async def feed() -> None:
            async with audio_send:
                for start in range(0, len(pcm), _FEED_BYTES):
                    await audio_send.send(pcm[start : start + _FEED_BYTES])

        with trio.move_on_after(_STT_DEADLINE_S) as deadline:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(recognise)
                nursery.start_soon(feed)
                async with results_recv:
                    async for result in results_recv:
                        if result.final:
                            final = result
        if deadline.cancelled_caught:
            raise HttpProblem(504, "stt_timeout", "speech recognition took too long")
        if failure is not None:
            raise _backend_problem("speech recognition", failure)
        if final is None:
            raise HttpProblem(502, "stt_failed", "the recogniser produced no final transcript")
        return final

    # ---------------------------------------------------------------- speech

    async def speech(self, principal: Principal, body: bytes) -> SpeechResult:
        """Synthesise the JSON request in ``body``.

        Raises:
            HttpProblem: bad input (400), or synthesis failing (502/503/504).
        """
        principal.require(PERMISSION_USE)
        request = _speech_request(body, self.settings.max_input_chars)
        voice_id, backend_name, voice = self._voice(principal, request)
        tts = self.engine.tts[backend_name]
        caps = tts.capabilities
        warnings: list[str] = []
        speed = float(request.get("speed", 1.0))
        instructions = request.get("instructions") or None
        if speed != 1.0 and not caps.speed:
            warnings.append(f"option_unsupported: speed is not supported by {backend_name!r}")
            speed = 1.0
        if instructions and not caps.instructions:
            warnings.append(
                f"option_unsupported: instructions are not supported by {backend_name!r}"
            )
            instructions = None
        fmt: SpeechFormat = request.get("response_format", "mp3")
        text = await self._normalise(principal, request["input"])
        key = cache_key(
            text=text,
            voice=voice_id,
            model=backend_name,
            format=fmt,
            speed=speed,
            instructions=instructions,
        )

        async def produce() -> bytes:
            pcm, rate = await self._synthesize(
                tts, TtsRequest(text=text, voice_id=voice, speed=speed, instructions=instructions)
            )
            encoded = await trio.to_thread.run_sync(
                encode_audio, pcm, rate, fmt, limiter=self._codec_limiter
            )
            return encoded.data

        data, hit = await self.cache.get_or_create(key, produce)
        return SpeechResult(
            data=data,
            content_type=CONTENT_TYPES[fmt],
            cache_hit=hit,
            voice_id=voice_id,
            warnings=tuple(warnings),
            key=key,
        )

    def _voice(self, principal: Principal, request: dict[str, Any]) -> tuple[str, str, str | None]:
        """(library voice id, tts backend, backend-local voice) for a request."""
        engine = self.engine
        asked = request.get("voice")
        model = request.get("model")
        if asked is None or (asked in OPENAI_VOICES and asked not in _local_ids(engine)):
            asked = engine.config.session_defaults(principal.tenant).voice_id
            if asked is None and isinstance(model, str) and model in engine.tts:
                return model, model, None
        try:
            backend, local = engine.resolve_voice(asked)
        except ConfigError as exc:
            raise HttpProblem(400, "unknown_voice", str(exc)) from exc
        return f"{backend}:{local}" if local else backend, backend, local

    async def _normalise(self, principal: Principal, text: str) -> str:
        normaliser = self.engine.normaliser
        defaults = self.engine.config.session_defaults(principal.tenant)
        if normaliser is None or not defaults.normalize_text:
            return text
        request = NormaliseRequest(
            language=defaults.language,
            lexicon=self.engine.config.lexicon_for(principal.tenant),
        )
        try:
            return await normaliser.normalise(text, request)
        except Exception as exc:  # speak the text as written rather than fail the request
            log.warning("normalisation failed, speaking the text as written: %s", exc)
            return text

    async def _synthesize(self, tts: Any, request: TtsRequest) -> tuple[bytes, int]:
        chunks: list[AudioChunk] = []
        failure: BackendError | None = None
        send, recv = trio.open_memory_channel[AudioChunk](8)

        async def produce() -> None:
            nonlocal failure
            call = partial(tts.synthesize, request, send)
            failure = await call_backend(tts, call, send, counter=self.engine.telemetry)

        with trio.move_on_after(_TTS_DEADLINE_S) as deadline:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                async with recv:
                    async for chunk in recv:
                        chunks.append(chunk)
        if deadline.cancelled_caught:
            raise HttpProblem(504, "tts_timeout", "speech synthesis took too long")
        if failure is not None:
            raise _backend_problem("speech synthesis", failure)
        if not chunks:
            raise HttpProblem(502, "tts_failed", "the voice produced no audio")
        rate = chunks[0].sample_rate
        pcm = b"".join(
            c.pcm if c.sample_rate == rate else resample_pcm16(c.pcm, c.sample_rate, rate)
            for c in chunks
        )
        return pcm, rate


def _local_ids(engine: Engine) -> set[str]:
    return {entry.voice.id for entry in engine.voices.values()}


def _field(form: dict[str, FormPart], name: str) -> str | None:
    part = form.get(name)
    return part.text.strip() if part is not None else None


def _known_speakers(parts: Sequence[FormPart]) -> tuple[list[str], list[str]]:
    """OpenAI's ``known_speaker_names[]`` and ``known_speaker_references[]``, checked in pairs."""
    names = [
        p.text.strip() for p in parts if p.name in ("known_speaker_names[]", "known_speaker_names")
    ]
    clips = [
        p.text.strip()
        for p in parts
        if p.name in ("known_speaker_references[]", "known_speaker_references")
    ]
    if len(names) != len(clips):
        raise HttpProblem(
            400,
            "known_speakers_mismatch",
            f"{len(names)} known_speaker_names[] but {len(clips)} known_speaker_references[]: "
            "give one reference clip per name",
        )
    if len(names) > _MAX_KNOWN_SPEAKERS:
        raise HttpProblem(
            400, "too_many_known_speakers", f"at most {_MAX_KNOWN_SPEAKERS} known speakers"
        )
    if any(not name for name in names) or len(set(names)) != len(names):
        raise HttpProblem(
            400, "known_speakers_mismatch", "known_speaker_names[] must be distinct, non-empty"
        )
    return names, clips


def _speech_request(body: bytes, max_chars: int) -> dict[str, Any]:
    try:
        request = json.loads(body)
        json.dumps(request, ensure_ascii=False).encode("utf-8")  # an escaped lone surrogate
    except UnicodeEncodeError as exc:
        raise HttpProblem(400, "invalid_json", "the body's JSON escapes a lone surrogate") from exc
    except ValueError as exc:
        raise HttpProblem(400, "invalid_json", f"the body is not JSON: {exc}") from exc
    except RecursionError:  # arrays / objects nested about a thousand deep
        raise HttpProblem(400, "invalid_json", "the body's JSON is nested too deeply") from None
    if not isinstance(request, dict):
        raise HttpProblem(400, "invalid_request", "the body must be a JSON object")
    text = request.get("input")
    if not isinstance(text, str) or not text.strip():
        raise HttpProblem(400, "invalid_request", "'input' must be a non-empty string")
    if len(text) > max_chars:
        raise HttpProblem(
            400, "input_too_long", f"'input' is limited to {max_chars} characters (got {len(text)})"
        )
    fmt = request.get("response_format", "mp3")
    if fmt not in get_args(SpeechFormat):
        raise HttpProblem(
            400,
            "unsupported_format",
            f"response_format must be one of {', '.join(get_args(SpeechFormat))}",
        )
    speed = request.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        raise HttpProblem(400, "invalid_request", "'speed' must be a number from 0.25 to 4.0")
    for name in ("voice", "model", "instructions"):
        if request.get(name) is not None and not isinstance(request[name], str):
            raise HttpProblem(400, "invalid_request", f"'{name}' must be a string")
    return request


def _backend_problem(what: str, exc: BackendError) -> HttpProblem:
    if isinstance(exc, BackendRejected):
        return HttpProblem(422, "backend_rejected", f"{what} refused the input: {exc}")
    if exc.retryable:
        return HttpProblem(
            503, "backend_unavailable", f"{what} is unavailable: {exc}", retry_after=5
        )
    return HttpProblem(502, "backend_failed", f"{what} failed: {exc}")


# --------------------------------------------------------------------------- transcript formats


def _transcript_document(
    fmt: str, transcript: Transcript, duration_s: float, language: str | None
) -> Any:
    text = transcript.text.strip()
    if fmt == "json":
        return {"text": text}
    if fmt == "text":
        return text
    cues = _cues(transcript, duration_s)
    if fmt == "verbose_json":
        doc: dict[str, Any] = {
            "task": "transcribe",
            "language": transcript.language or language or "unknown",
            "duration": round(duration_s, 3),
            "text": text,
            "segments": [
                {"id": i, "start": start, "end": end, "text": cue}
                for i, (start, end, cue) in enumerate(cues)
            ],
        }
        if transcript.words:
            doc["words"] = [
                {"word": w.text, "start": w.start_ms / 1000, "end": w.end_ms / 1000}
                for w in transcript.words
            ]
        return doc
    separator = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for index, (start, end, cue) in enumerate(cues, 1):
        if fmt == "srt":
            lines.append(str(index))
        lines.append(f"{_stamp(start, separator)} --> {_stamp(end, separator)}")
        lines += [cue, ""]
    return "\n".join(lines)


def _diarized_document(
    transcript: Transcript, segments: Sequence[DiarizedSegment], duration_s: float
) -> dict[str, Any]:
    """OpenAI's ``diarized_json``: the text and its segments by speaker (times in seconds)."""
    return {
        "task": "transcribe",
        "duration": round(duration_s, 3),
        "text": transcript.text.strip(),
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{index}",
                "start": round(segment.start_ms / 1000, 3),
                "end": round(segment.end_ms / 1000, 3),
                "speaker": segment.speaker,
                "text": segment.text.strip(),
            }
            for index, segment in enumerate(segments)
        ],
    }


def _cues(transcript: Transcript, duration_s: float) -> list[tuple[float, float, str]]:
    """Subtitle cues: words grouped into lines of at most ~7 s or 12 words."""
    words: tuple[Word, ...] = transcript.words
    if not words:
        text = transcript.text.strip()
        return [(0.0, round(duration_s, 3), text)] if text else []
    cues: list[tuple[float, float, str]] = []
    group: list[Word] = []
    for word in words:
        group.append(word)
        too_long = group[-1].end_ms - group[0].start_ms >= 7000 or len(group) >= 12
        if too_long or word.text.endswith((".", "?", "!")):
            cues.append(_cue(group))
            group = []
    if group:
        cues.append(_cue(group))
    return cues


def _cue(words: list[Word]) -> tuple[float, float, str]:
    return (
        words[0].start_ms / 1000,
        words[-1].end_ms / 1000,
        " ".join(w.text.strip() for w in words),
    )


def _stamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
