"""Session features: opt-in behaviour that observes a session's audio (VAD, wake word, ...).

A feature plugin yields a :class:`FeatureSpec` naming the session config key that switches it on
(``vad_enabled``, ``wake_word_enabled`` ...). The engine creates the feature once (shared model),
opens it with ``async with``, and asks it for one :class:`FeatureSession` per session that turns
the key on. The session feeds it the user's audio, in order, and acts on the events it returns.
A session config key whose feature is not installed gets a ``feature_unavailable`` warning.

Features that tell *who* is speaking (diarization, speaker recognition) also answer
:meth:`FeatureSession.identify` with a :class:`TurnSpeaker` for each user turn. A feature may
offer more to the HTTP API by implementing :class:`SpeakerDirectory` (enrolment for speaker
recognition) or :class:`RecordingDiarizer` (speaker segments of a voice note).
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .backends import API_VERSION
from .resource import Resource

__all__ = [
    "DiarizedSegment",
    "EnrolledSpeaker",
    "FeatureEvent",
    "FeatureSession",
    "FeatureSpec",
    "RecordingDiarizer",
    "SessionContext",
    "SessionFeature",
    "SpeakerDirectory",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "SpeechStopped",
    "TranscribedSpan",
    "TurnSpeaker",
    "WakeDetected",
]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The user started speaking ``at_ms`` into the session's input audio."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The user stopped speaking (after the feature's own hang time) at ``at_ms``."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class WakeDetected:
    """A wake word was heard.

    Attributes:
        confidence: the detector's confidence, 0..1.
        keyword: which keyword.
        after_ms: how much of the audio given to the feature so far came after the keyword
            ended (detectors fire a little late): the session keeps it as the start of the
            user turn, so "hey jarvis, what time is it" keeps its "what".
            *Added in API version 1 (wake word).*
    """

    confidence: float
    keyword: str = ""
    after_ms: int = 0


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """The user went quiet at ``at_ms`` while speaking: a pause, not yet an end of speech.

    Optional for a VAD: sent after a short stretch of silence (about 100 ms), before the hang
    time that makes it a :class:`SpeechStopped`. The engine starts the reply speculatively
    (nothing reaches the client) so that it is ready when the turn ends.

    .. versionadded:: 1 (speculative replies)
    """

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """The user spoke again at ``at_ms`` after a :class:`SpeechPaused`, before it became a
    :class:`SpeechStopped`: the speculative reply is withdrawn.

    .. versionadded:: 1 (speculative replies)
    """

    at_ms: int


FeatureEvent = SpeechStarted | SpeechStopped | SpeechPaused | SpeechResumed | WakeDetected


@dataclass(frozen=True, slots=True)
class TurnSpeaker:
    """Who spoke a user turn, as far as one feature can tell.

    Attributes:
        label: an anonymous label stable for the session (``"S1"``, ``"S2"`` ...): diarization.
        speaker_id: the enrolled speaker recognised, or ``None`` for a voice not enrolled.
        score: the similarity behind ``speaker_id`` (0..1; for an unknown voice, the best score
            that fell short of the threshold).
    """

    label: str | None = None
    speaker_id: str | None = None
    score: float | None = None


class FeatureSession(abc.ABC):
    """Per-session state of a feature. Not shared between sessions."""

    @abc.abstractmethod
    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Consume the next PCM16LE mono chunk at the session's rate; return what happened.

        Cancelling abandons the chunk (the session is ending).
        """

    async def identify(self, pcm: bytes, *, final: bool) -> TurnSpeaker | None:
        """Say who spoke a user turn, from its audio (PCM16LE mono at the session's rate).

        Called with the turn's audio so far: once while the turn goes on (``final=False``, when
        about two seconds are in: a provisional answer for interim transcripts, which should not
        change the feature's state) and once when the turn has ended (``final=True``: the answer
        the final transcript carries; a diarizer learns from it). ``None``: nothing to say.
        The default says nothing. Cancelling abandons the answer.

        .. versionadded:: 1 (diarization and speaker recognition)
        """
        return None

    async def end_of_turn(self) -> float | None:
        """How likely it is that the user has finished their turn (0-1), judged from the
        audio fed so far; ``None``: no opinion (the default).

        An end-of-turn feature (config key ``turn_detection``) answers it at each pause of a
        user turn when the session's ``turn_detection`` is ``semantic``; the engine ends the
        turn early when the answer is high and waits longer when it is low. Must not change the
        feature's state. Cancelling abandons the answer.

        .. versionadded:: 1 (semantic end of turn)
        """
        return None

    def forget_speech(self) -> None:
        """A wake word was just heard: what follows is the request, not more of the speech
        in progress. A VAD forgets that the user is speaking, so that the pause people leave
        after the keyword does not read as the end of their request, and speech that runs on
        from the keyword starts anew. The default does nothing (the engine then waits for a
        start of speech after the keyword, and ends a request that runs on without one when
        the wake window closes). No I/O.

        .. versionadded:: 1 (wake word)
        """


class SessionFeature(Resource):
    """A feature, created once per engine and shared by sessions."""

    async def open(self) -> None:
        """Load models. Cancelling abandons the load."""

    async def aclose(self) -> None:
        """Release resources. Idempotent."""

    @abc.abstractmethod
    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        """Create the per-session state. No I/O.

        ``options`` overrides the operator's options for this session (the engine passes the
        VAD a shorter ``min_silence_ms`` when a semantic end-of-turn model decides at pauses). A feature that needs to know about the session (its tenant, the wake words the
        client asked for) adds a keyword parameter ``context: SessionContext``: the engine
        passes it to implementations that accept it, so older plugins keep working.

        .. versionchanged:: 1 the optional ``context`` parameter.
        """


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What a feature may need to know about the session it serves.

    Attributes:
        tenant: the caller's tenant (enrolments and other per-tenant data are kept apart).
        wake_word: the keywords the client asked for (``wake_word``), ``None``: the default.
    """

    tenant: str
    wake_word: tuple[str, ...] | None = None


def open_feature_session(
    feature: SessionFeature,
    *,
    sample_rate: int,
    context: SessionContext,
    options: Mapping[str, Any] | None = None,
) -> FeatureSession:
    """``feature.open_session``, passing ``context`` when the feature accepts it."""
    values = dict(options or {})
    if "context" in inspect.signature(feature.open_session).parameters:
        return feature.open_session(sample_rate=sample_rate, options=values, context=context)  # type: ignore[call-arg]
    return feature.open_session(sample_rate=sample_rate, options=values)


@dataclass(frozen=True, slots=True)
class EnrolledSpeaker:
    """A speaker enrolled for recognition (only an embedding is stored, never audio)."""

    speaker_id: str
    display_name: str | None
    clips: int
    enrolled_at: float


@runtime_checkable
class SpeakerDirectory(Protocol):
    """Enrolment of a tenant's speakers, offered by a speaker-recognition feature.

    The HTTP API (``/v1/speakers``) calls it. Errors are :class:`~scaivoice.engine.EnrolmentRejected`
    with a stable ``code`` (``audio_too_short``, ``no_speech``, ``speaker_exists``,
    ``unknown_speaker`` ...). Tenants never see each other's speakers.
    """

    async def enroll(
        self,
        tenant: str,
        speaker_id: str,
        clips: Sequence[bytes],
        *,
        display_name: str | None = None,
        replace: bool = False,
    ) -> EnrolledSpeaker:
        """Enrol ``speaker_id`` from ``clips`` (PCM16LE mono, 16 kHz)."""
        ...

    async def speakers(self, tenant: str) -> list[EnrolledSpeaker]:
        """The tenant's enrolled speakers."""
        ...

    async def forget(self, tenant: str, speaker_id: str) -> None:
        """Delete ``speaker_id`` and its embedding for good (``unknown_speaker`` if absent)."""
        ...


@dataclass(frozen=True, slots=True)
class TranscribedSpan:
    """A piece of a transcript with its times (a word or a segment), in ms from the start."""

    start_ms: int
    end_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class DiarizedSegment:
    """A stretch of a recording spoken by one speaker."""

    speaker: str
    start_ms: int
    end_ms: int
    text: str


@runtime_checkable
class RecordingDiarizer(Protocol):
    """Speaker segments of a whole recording, offered by a diarization feature (voice notes)."""

    async def diarize(
        self,
        pcm: bytes,
        spans: Sequence[TranscribedSpan],
        *,
        known_speakers: Mapping[str, bytes] | None = None,
    ) -> list[DiarizedSegment]:
        """Split ``spans`` of ``pcm`` (PCM16LE mono, 16 kHz) into segments by speaker.

        Speakers are labelled ``"A"``, ``"B"`` ... (OpenAI's convention) or, where
        ``known_speakers`` (name -> reference clip) has a match, by that name. Changes of
        speaker are found inside spans too, not only at silences.
        """
        ...


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What a feature plugin yields from ``scaivoice_session_features``.

    Attributes:
        name: the feature's name (``"silero-vad"``).
        config_key: the session config key that turns it on (``"vad_enabled"``).
        factory: called with the operator's option table; returns an unopened feature. No I/O.
        description: one line for ``scaivoice plugins``.
        api_version: the API version the plugin was written against.
    """

    name: str
    config_key: str
    factory: Callable[[Mapping[str, Any]], SessionFeature]
    description: str = ""
    api_version: int = API_VERSION
