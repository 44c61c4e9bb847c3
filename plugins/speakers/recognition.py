"""Live speaker identification with enrolment, as the session feature ``speaker-recognition``.

A session that sets ``speaker_recognition`` (allowed only for tenants that opted in:
``[tenants.NAME] speaker_recognition = true``) gets, on each final transcript, the enrolled
speaker whose voice matches the turn (``speaker_id``) and the similarity (``speaker_score``), or
``speaker_id: null`` for a voice that matches no one closely enough: unknown voices are rejected,
never forced onto the nearest enrolled speaker.

Enrolment (:class:`SpeakerDirectory`, served as ``/v1/speakers``) turns one or more clips into
one stored embedding per speaker: each clip must hold at least ``min_enrol_speech_s`` of speech
by the Silero VAD (music, noise and silence hold none: ``no_speech``), the clips must agree with
each other (``inconsistent_clips``), and the mean of their embeddings (L2-normalised) is kept
with the number of clips. Audio is never stored nor logged, and neither are embeddings (see
``_store.py`` for the file and deletion).

Identification embeds the turn's audio (silence trimmed by level; under ``min_turn_speech_s``
of speech there is nothing to say) and compares it with the tenant's enrolled embeddings
(cosine). The best match above ``threshold`` is the speaker.

The threshold, 0.725, was chosen on generated voices (``scaivoice bench speakers``, section
"speaker identification": 14 voices, hibari "heart", piper "joe" and 12 espeak-ng variants,
each enrolled from three sentences and tested on nine others). It sits in the gap between the
two distributions: no impostor trial reached it (highest 0.69, at any turn length) while false
rejects stay at 0 for whole sentences and 0.4 % for turns of 2 s of speech (1.6 % at 1.5 s,
12 % at 1 s). espeak-ng variants that keep the default voice's source and change only its
pitch or formant scale sound alike to the model (mean scores 0.72 to 0.90): they pass for each
other (see the operator guide, "Who is speaking").

The operator's options (``[backends.feature_options.speaker-recognition]``)::

    store_path = "~/.local/share/scaivoice/speakers.sqlite3"   # or ":memory:"
    threshold = 0.725          # cosine similarity that identifies a speaker
    min_turn_speech_s = 1.0    # shorter speech in a turn: no answer
    min_enrol_speech_s = 1.0   # each enrolment clip needs this much speech
    max_clips = 10             # clips per enrolment
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import trio

from scaivoice.engine import (
    BackendOptions,
    BackendUnavailable,
    ConfigError,
    EnrolledSpeaker,
    EnrolmentRejected,
    FeatureEvent,
    FeatureSession,
    FeatureSpec,
    SessionContext,
    SessionFeature,
    TurnSpeaker,
    hookimpl,
    pcm16_to_float,
    resample_pcm16,
)

from .._silero_model import FRAME, SAMPLE_RATE, SileroModel
from ._dvector import MODEL_SHA256
from ._store import MEMORY, SpeakerStore, StoredSpeaker, StoreError
from .embedder import NoSpeechError, SpeakerEmbedder, speech_ms

__all__ = [
    "DEFAULT_STORE_PATH",
    "DEFAULT_THRESHOLD",
    "SpeakerRecognition",
    "SpeakerRecognitionOptions",
    "SpeakerRecognitionSession",
    "scaivoice_session_features",
]

NAME = "speaker-recognition"
log = logging.getLogger("scaivoice.plugins.speakers.recognition")

DEFAULT_STORE_PATH = "~/.local/share/scaivoice/speakers.sqlite3"
DEFAULT_THRESHOLD = 0.725
"""Chosen on measured figures: see the module docstring and the operator guide."""

_MODEL_ID = f"dvector-{MODEL_SHA256[:16]}"
"""Which embedding model made a stored embedding: only those of this model are compared."""

_SPEAKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_MAX_DISPLAY_NAME = 100
_SESSION_OPTIONS = frozenset({"threshold", "min_turn_speech_s"})
_SPEECH_PROBABILITY = 0.5  # a Silero frame at or above this is speech
_NO_SPEECH_S = 0.5  # a clip with less speech than this holds none (music, noise, silence)

_Seconds = Annotated[float, msgspec.Meta(gt=0, le=60)]
_F32 = npt.NDArray[np.float32]
_T = TypeVar("_T")


class SpeakerRecognitionOptions(BackendOptions, frozen=True):
    """Options of the ``speaker-recognition`` feature (see the module docstring)."""

    store_path: str | None = None
    threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = DEFAULT_THRESHOLD
    min_turn_speech_s: _Seconds = 1.0
    min_enrol_speech_s: _Seconds = 1.0
    max_clips: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10


class Embedder(Protocol):
    """What the feature needs of a speaker embedder (:class:`SpeakerEmbedder`)."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def embed_many(self, clips: Sequence[bytes], *, trim: bool = True) -> list[_F32]: ...


class SpeakerRecognition(SessionFeature):
    """Speaker identification for sessions, and the tenant's enrolments (a SpeakerDirectory).

    Args:
        options: the operator's options.
        embedder: the speaker embedder to use (default: a :class:`SpeakerEmbedder` of its own,
            opened and closed with the feature).
    """

    def __init__(
        self, options: SpeakerRecognitionOptions | None = None, *, embedder: Embedder | None = None
    ) -> None:
        self.options = options or SpeakerRecognitionOptions()
        self._embedder: Embedder = embedder if embedder is not None else SpeakerEmbedder()
        self._store: SpeakerStore | None = None  # created at the first enrolment
        self._vad: SileroModel | None = None
        self._open = False
        self._store_limiter = trio.CapacityLimiter(1)  # one statement at a time on the file
        self._vad_limiter = trio.CapacityLimiter(1)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SpeakerRecognition:
        """The feature factory: validate the operator's option table.

        Raises:
            ConfigError: unknown keys or bad values.
        """
        return cls(SpeakerRecognitionOptions.from_mapping(values, backend=NAME))

    @property
    def store_path(self) -> str:
        """Where the enrolments are kept (``":memory:"``: nowhere, they end with the process)."""
        path = self.options.store_path or DEFAULT_STORE_PATH
        return path if path == MEMORY else str(Path(path).expanduser())

    async def open(self) -> None:
        """Load the models and open the enrolment store if it exists (in worker threads; a
        store file is created at the first enrolment). Cancelling abandons the open (what it
        opened is closed).

        Raises:
            ConfigError: onnxruntime or a model is missing.
            BackendUnavailable: the store file cannot be opened (corrupt, not a store,
                unreadable): the feature is down until it can be.
        """
        if self._open:
            return
        try:
            await self._embedder.open()
            try:
                self._vad = await trio.to_thread.run_sync(SileroModel.load)
            except ImportError as exc:
                raise ConfigError(f"the {NAME} feature needs onnxruntime") from exc
            if SpeakerStore.exists(self.store_path):
                await self._create_store()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.aclose()
            raise
        self._open = True

    async def _create_store(self) -> SpeakerStore:
        """Open the store, creating its file. Raises BackendUnavailable."""
        async with self._store_limiter:
            if self._store is None:
                try:
                    self._store = await trio.to_thread.run_sync(SpeakerStore.open, self.store_path)
                except StoreError as exc:
                    raise BackendUnavailable(str(exc), backend=NAME) from exc
            return self._store

    async def aclose(self) -> None:
        """Close the store and drop the models. Idempotent."""
        store, self._store, self._vad, self._open = self._store, None, None, False
        if store is not None:
            async with self._store_limiter:
                await trio.to_thread.run_sync(store.close)
        await self._embedder.aclose()

    def open_session(
        self,
        *,
        sample_rate: int,
        options: Mapping[str, Any],
        context: SessionContext | None = None,
    ) -> SpeakerRecognitionSession:
        """Per-session state: the session's tenant (``context``; without one, no answers) and
        its rate. ``options`` may override ``threshold`` and ``min_turn_speech_s``.

        Raises:
            ConfigError: the feature is not open, or bad options.
        """
        if not self._open:
            raise ConfigError(f"the {NAME} feature is not open")
        merged = self.options
        if options:
            unknown = set(options) - _SESSION_OPTIONS
            if unknown:
                raise ConfigError(f"{NAME} takes no session option {sorted(unknown)}")
            values = {**msgspec.structs.asdict(self.options), **options}
            merged = SpeakerRecognitionOptions.from_mapping(values, backend=NAME)
        tenant = context.tenant if context is not None else None
        return SpeakerRecognitionSession(self, tenant, sample_rate, merged)

    # ------------------------------------------------------------ identification

    async def identify(
        self, tenant: str, pcm16k: bytes, *, options: SpeakerRecognitionOptions | None = None
    ) -> TurnSpeaker | None:
        """Who of ``tenant``'s enrolled speakers spoke ``pcm16k`` (PCM16LE mono, 16 kHz).

        ``None`` when the audio holds too little speech to tell; ``speaker_id=None`` when no
        enrolled speaker matches at ``threshold`` or better (``score``: the best similarity,
        ``None`` when the tenant has no one enrolled). ``options``: a session's own (default:
        the feature's). Cancelling abandons the answer.

        Raises:
            BackendUnavailable: the store failed.
        """
        options = options or self.options
        if await trio.to_thread.run_sync(speech_ms, pcm16k) < options.min_turn_speech_s * 1000:
            return None
        ids, matrix = await self._enrolled(tenant)
        if not ids:
            return TurnSpeaker(speaker_id=None, score=None)
        try:
            (vector,) = await self._embedder.embed_many([pcm16k])
        except NoSpeechError:
            return None
        scores = matrix @ vector
        best = int(np.argmax(scores))
        score = round(max(0.0, min(1.0, float(scores[best]))), 4)
        found = ids[best] if scores[best] >= options.threshold else None
        return TurnSpeaker(speaker_id=found, score=score)

    async def _enrolled(self, tenant: str) -> tuple[list[str], _F32]:
        store = self._open_store()
        if store is None:
            return [], np.zeros((0, 0), np.float32)
        return await self._in_store(partial(store.embeddings, tenant, _MODEL_ID))

    # ------------------------------------------------------------ SpeakerDirectory

    async def enroll(
        self,
        tenant: str,
        speaker_id: str,
        clips: Sequence[bytes],
        *,
        display_name: str | None = None,
        replace: bool = False,
    ) -> EnrolledSpeaker:
        """Enrol ``speaker_id`` for ``tenant`` from ``clips`` (PCM16LE mono, 16 kHz).

        Each clip must hold ``min_enrol_speech_s`` of speech; the clips must sound like one
        speaker. Only the mean embedding is stored. Cancelling abandons the enrolment before
        it is stored (the store's write itself is not interrupted).

        Raises:
            EnrolmentRejected: ``invalid_speaker_id``, ``invalid_display_name``,
                ``too_many_clips``, ``audio_too_short``, ``no_speech``,
                ``inconsistent_clips`` or ``speaker_exists`` (unless ``replace``).
            BackendUnavailable: the store failed.
        """
        _check_speaker_id(speaker_id)
        display_name = _checked_display_name(display_name)
        options = self.options
        if not clips:
            raise EnrolmentRejected("audio_too_short", "send at least one audio clip")
        if len(clips) > options.max_clips:
            raise EnrolmentRejected(
                "too_many_clips", f"send at most {options.max_clips} clips per enrolment"
            )
        self._open_store()
        for index, clip in enumerate(clips):
            await self._check_clip(index, len(clips), clip)
        try:
            vectors = await self._embedder.embed_many(list(clips))
        except NoSpeechError as exc:
            raise EnrolmentRejected("no_speech", f"a clip holds no speech: {exc}") from exc
        embedding = _unit(np.mean(np.stack(vectors), axis=0))
        if len(vectors) > 1:
            self._check_agreement(vectors)
        store = self._store or await self._create_store()
        stored = await self._in_store(
            partial(
                store.put,
                tenant,
                speaker_id,
                embedding,
                clips=len(clips),
                model=_MODEL_ID,
                display_name=display_name,
                replace=replace,
            )
        )
        if stored is None:
            raise EnrolmentRejected(
                "speaker_exists",
                f"speaker {speaker_id!r} is already enrolled; delete it first or ask to replace it",
            )
        log.info("a speaker was enrolled for tenant %r from %d clip(s)", tenant, len(clips))
        return _enrolled(stored)

    async def speakers(self, tenant: str) -> list[EnrolledSpeaker]:
        """``tenant``'s enrolled speakers, by id.

        Raises:
            BackendUnavailable: the store failed.
        """
        store = self._open_store()
        if store is None:
            return []
        return [_enrolled(row) for row in await self._in_store(partial(store.speakers, tenant))]

    async def forget(self, tenant: str, speaker_id: str) -> None:
        """Delete ``tenant``'s ``speaker_id`` and its embedding from the store, for good.

        Raises:
            EnrolmentRejected: ``unknown_speaker``: the tenant has no speaker by that id.
            BackendUnavailable: the store failed.
        """
        store = self._open_store()
        if store is None or not await self._in_store(partial(store.delete, tenant, speaker_id)):
            raise EnrolmentRejected("unknown_speaker", f"no speaker {speaker_id!r} is enrolled")
        log.info("a speaker was deleted for tenant %r", tenant)

    # ------------------------------------------------------------ helpers

    def _open_store(self) -> SpeakerStore | None:
        """The store (``None``: no file yet, nothing enrolled).

        Raises:
            BackendUnavailable: the feature is not open.
        """
        if not self._open:
            raise BackendUnavailable(f"the {NAME} feature is not open", backend=NAME)
        return self._store

    async def _in_store(self, call: Callable[[], _T]) -> _T:
        """Run a store call in a worker thread, one at a time; map its errors."""
        async with self._store_limiter:
            try:
                return await trio.to_thread.run_sync(call)
            except StoreError as exc:
                raise BackendUnavailable(str(exc), backend=NAME) from exc

    async def _check_clip(self, index: int, count: int, clip: bytes) -> None:
        """Refuse a clip with too little speech (by the Silero VAD)."""
        which = f"clip {index + 1} of {count}" if count > 1 else "the clip"
        need = self.options.min_enrol_speech_s
        if len(clip) // 2 < need * SAMPLE_RATE:
            raise EnrolmentRejected(
                "audio_too_short",
                f"{which} lasts {len(clip) / 2 / SAMPLE_RATE:.1f} s; "
                f"send at least {need:g} s of speech",
            )
        vad = self._vad
        if vad is None:
            raise BackendUnavailable(f"the {NAME} feature is not open", backend=NAME)
        async with self._vad_limiter:
            speech_s = await trio.to_thread.run_sync(_speech_seconds, vad, clip)
        if speech_s < min(_NO_SPEECH_S, need):
            raise EnrolmentRejected("no_speech", f"{which} holds no speech")
        if speech_s < need:
            raise EnrolmentRejected(
                "audio_too_short",
                f"{which} holds {speech_s:.1f} s of speech; send at least {need:g} s",
            )

    def _check_agreement(self, vectors: Sequence[_F32]) -> None:
        """Each clip must match the mean of the others as a turn would: else the clips are
        probably of different people."""
        stacked = np.stack(vectors)
        for index in range(len(vectors)):
            others = _unit(np.delete(stacked, index, axis=0).mean(axis=0))
            score = float(others @ stacked[index])
            if score < self.options.threshold:
                raise EnrolmentRejected(
                    "inconsistent_clips",
                    f"clip {index + 1} does not sound like the others (similarity "
                    f"{score:.2f}, below {self.options.threshold:g}): send clips of one speaker",
                )


class SpeakerRecognitionSession(FeatureSession):
    """One session's speaker identification: stateless apart from its tenant and rate."""

    def __init__(
        self,
        feature: SpeakerRecognition,
        tenant: str | None,
        sample_rate: int,
        options: SpeakerRecognitionOptions,
    ) -> None:
        self._feature = feature
        self._tenant = tenant
        self._sample_rate = sample_rate
        self._options = options

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Nothing to do per chunk: the work happens per turn (:meth:`identify`)."""
        return ()

    async def identify(self, pcm: bytes, *, final: bool) -> TurnSpeaker | None:
        """The enrolled speaker of the turn, ``speaker_id=None`` for an unknown voice, or
        ``None`` (too little speech, or no tenant). The provisional and the final answer are
        computed alike; nothing is remembered. Cancelling abandons the answer.

        Raises:
            BackendUnavailable: the store failed.
        """
        if self._tenant is None:
            return None
        if self._sample_rate != SAMPLE_RATE:
            pcm = resample_pcm16(pcm, self._sample_rate, SAMPLE_RATE)
        return await self._feature.identify(self._tenant, pcm, options=self._options)


def _speech_seconds(vad: SileroModel, pcm16k: bytes) -> float:
    """Seconds of speech in ``pcm16k`` by the Silero VAD (blocking: a worker thread)."""
    samples = pcm16_to_float(pcm16k[: len(pcm16k) // 2 * 2])
    count = len(samples) // FRAME
    if count == 0:
        return 0.0
    probabilities = vad.stream().probabilities(samples[: count * FRAME].reshape(count, FRAME))
    voiced = sum(1 for p in probabilities if p >= _SPEECH_PROBABILITY)
    return voiced * FRAME / SAMPLE_RATE


def _unit(vector: _F32) -> _F32:
    norm = float(np.linalg.norm(vector))
    out: _F32 = (vector / norm if norm > 1e-12 else vector).astype(np.float32)
    return out


def _check_speaker_id(speaker_id: str) -> None:
    if not isinstance(speaker_id, str) or _SPEAKER_ID.fullmatch(speaker_id) is None:
        raise EnrolmentRejected(
            "invalid_speaker_id",
            "a speaker id is 1 to 64 characters: letters, digits and . _ @ -, "
            "starting with a letter or digit",
        )


def _checked_display_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name:
        return None
    if len(name) > _MAX_DISPLAY_NAME or any(
        unicodedata.category(char).startswith("C") for char in name
    ):
        raise EnrolmentRejected(
            "invalid_display_name",
            f"a display name is at most {_MAX_DISPLAY_NAME} printable characters",
        )
    return name


def _enrolled(row: StoredSpeaker) -> EnrolledSpeaker:
    return EnrolledSpeaker(row.speaker_id, row.display_name, row.clips, row.enrolled_at)


@hookimpl
def scaivoice_session_features() -> Iterator[FeatureSpec]:
    """Declare speaker recognition, switched on by the session key ``speaker_recognition``."""
    yield FeatureSpec(
        name=NAME,
        config_key="speaker_recognition",
        factory=SpeakerRecognition.from_mapping,
        description=(
            "speaker identification against enrolled voices (d-vector, offline); "
            "enrolment at /v1/speakers; tenant opt-in"
        ),
    )
