"""Anonymous diarization, as the session feature ``speaker-diarization`` (config key ``diarize``).

Live sessions: each user turn's audio is embedded at its end (:class:`SpeakerEmbedder`, silence
trimmed) and put with the closest speaker of the session (:class:`OnlineClusters`): the final
transcript carries that label (``"S1"``, ``"S2"`` ... stable for the session), or a new one
when no speaker is ``threshold`` alike. A turn with less than ``min_speech_ms`` of speech is
too short to tell: it keeps the previous turn's label (before the first, the label the first
speaker will get, ``"S1"``: every transcript with words carries a label). The
provisional answer for interim transcripts (``identify(final=False)``) is the closest known
speaker when it reaches the threshold, and changes nothing.

Voice notes (:meth:`SpeakerDiarization.diarize`, the :class:`RecordingDiarizer` of
``POST /v1/audio/transcriptions`` with ``response_format=diarized_json``): embeddings of 1.6 s
windows every 0.2 s, clustered, then re-assigned with a cost per change of speaker
(``clustering.segment_windows``), so a change of speaker is found without a silence at it.
Words (or segments, split where the speaker changes) go to the speaker heard most during them.
Speakers are ``"A"``, ``"B"`` ... or the name of a known speaker whose reference clip is
``known_speaker_threshold`` alike.

The operator's options (``[backends.feature_options.speaker-diarization]``)::

    threshold = 0.6                 # live: cosine to a speaker's centroid to be that speaker
    min_speech_ms = 800             # live: shorter turns keep the previous label
    max_speakers = 16               # live: after this many, turns join the closest speaker
    recording_threshold = 0.6       # voice notes: clustering stops below this similarity
    switch_cost = 1.0               # voice notes: the Viterbi cost of a change of speaker
    known_speaker_threshold = 0.6   # voice notes: a reference clip names a speaker from here
    model_path = "..."              # another d-vector ONNX file (default: the installed one)

Figures behind the thresholds (generated voices: hibari "heart", piper "joe", six espeak-ng
variants; 12 sentences of 2 to 3 s each; 2 shared CPU cores, one onnxruntime thread):

* one sentence against another: same voice cosine min 0.686, 5th percentile 0.787, mean 0.873;
  different voices max 0.678, 95th percentile 0.525, mean 0.267 (no overlap; with 1 s clips the
  equal error rate is 3.6 % at 0.47, hence ``min_speech_ms``).
* resemblyzer's encoder on the same clips (numpy port of its weights): same 0.747 / 0.887
  (min / mean), different voices max 0.864, mean 0.555: a narrower margin, at 4x the cost.
* cost: about 15 ms of one core per second of audio (37 ms for a 2.5 s turn).
* ``scaivoice bench speakers`` prints the diarization accuracy on generated conversations.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np

from scaivoice.engine import (
    BackendOptions,
    ConfigError,
    DiarizedSegment,
    EnrolmentRejected,
    FeatureEvent,
    FeatureSession,
    FeatureSpec,
    SessionFeature,
    TranscribedSpan,
    TurnSpeaker,
    hookimpl,
    resample_pcm16,
)

from .clustering import OnlineClusters, assign_spans, match_known, segment_windows
from .embedder import SAMPLE_RATE, NoSpeechError, SpeakerEmbedder, speech_ms

__all__ = [
    "NAME",
    "DiarizationOptions",
    "DiarizationSession",
    "SpeakerDiarization",
    "scaivoice_session_features",
]

NAME = "speaker-diarization"
log = logging.getLogger("scaivoice.plugins.speakers.diarization")

_Cosine = Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)]
_Millis = Annotated[int, msgspec.Meta(ge=0, le=60_000)]
_MIN_REFERENCE_MS = 1000  # a known speaker's reference clip: at least this much speech


class DiarizationOptions(BackendOptions, frozen=True):
    """Options of the ``speaker-diarization`` feature (see the module docstring)."""

    threshold: _Cosine = 0.6
    min_speech_ms: _Millis = 800
    max_speakers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 16
    recording_threshold: _Cosine = 0.6
    switch_cost: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 1.0
    known_speaker_threshold: _Cosine = 0.6
    window_ms: Annotated[int, msgspec.Meta(ge=800, le=4000)] = 1600
    hop_ms: Annotated[int, msgspec.Meta(ge=100, le=800)] = 200
    model_path: str | None = None


class SpeakerDiarization(SessionFeature):
    """Who is speaking, anonymously: labels for live turns, speaker segments for voice notes.

    Also a :class:`~scaivoice.engine.RecordingDiarizer`.
    """

    def __init__(
        self, options: DiarizationOptions | None = None, *, embedder: SpeakerEmbedder | None = None
    ) -> None:
        self.options = options or DiarizationOptions()
        self._embedder = embedder or SpeakerEmbedder(model_path=self.options.model_path)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SpeakerDiarization:
        """The feature factory: validate the operator's option table.

        Raises:
            ConfigError: unknown keys or bad values.
        """
        return cls(DiarizationOptions.from_mapping(values, backend=NAME))

    @property
    def embedder(self) -> SpeakerEmbedder:
        """The speaker embedder this feature runs (shared by its sessions)."""
        return self._embedder

    async def open(self) -> None:
        """Load the speaker embedding model. Cancelling abandons the load.

        Raises:
            ConfigError: the model or onnxruntime is missing.
        """
        await self._embedder.open()

    async def aclose(self) -> None:
        await self._embedder.aclose()

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> DiarizationSession:
        """Per-session speakers (the session's ``options`` are not used). No I/O.

        Raises:
            ConfigError: the feature is not open.
        """
        if not self._embedder.is_open:
            raise ConfigError(f"the {NAME} feature is not open")
        clusters = OnlineClusters(self.options.threshold, max_speakers=self.options.max_speakers)
        return DiarizationSession(self._embedder, clusters, sample_rate, self.options.min_speech_ms)

    async def diarize(
        self,
        pcm: bytes,
        spans: Sequence[TranscribedSpan],
        *,
        known_speakers: Mapping[str, bytes] | None = None,
    ) -> list[DiarizedSegment]:
        """Split ``spans`` of ``pcm`` (16 kHz PCM16) into segments by speaker.

        Consecutive spans of one speaker are joined into one segment. Cancelling abandons the
        work (a model call in flight finishes in its thread).

        Raises:
            EnrolmentRejected: a known speaker's reference clip has under 1 s of speech
                (``audio_too_short``).
        """
        opts = self.options
        references: dict[str, np.ndarray] = {}
        for name, clip in (known_speakers or {}).items():
            if speech_ms(clip) < _MIN_REFERENCE_MS:
                raise EnrolmentRejected(
                    "audio_too_short",
                    f"the reference clip of {name!r} has under {_MIN_REFERENCE_MS / 1000:g} s "
                    "of speech",
                )
            references[name] = await self._embedder.embed(clip)
        if not spans:
            return []
        windows = await self._embedder.embed_windows(
            pcm, window_ms=opts.window_ms, hop_ms=opts.hop_ms
        )
        timeline = segment_windows(
            windows.vectors,
            windows.voiced,
            hop_ms=opts.hop_ms,
            window_ms=opts.window_ms,
            threshold=opts.recording_threshold,
            switch_cost=opts.switch_cost,
        )
        named = match_known(timeline.centroids, references, opts.known_speaker_threshold)
        pieces = assign_spans(timeline, [(s.start_ms, s.end_ms, s.text) for s in spans])
        labels = _Labels(named)
        segments: list[DiarizedSegment] = []
        previous: int | None = None
        for piece in pieces:
            speaker = piece.speaker if piece.speaker is not None else previous
            previous = speaker
            label = labels.of(speaker)
            if segments and segments[-1].speaker == label:
                last = segments[-1]
                segments[-1] = DiarizedSegment(
                    label, last.start_ms, piece.end_ms, _join(last.text, piece.text)
                )
            else:
                segments.append(DiarizedSegment(label, piece.start_ms, piece.end_ms, piece.text))
        return segments


class _Labels:
    """Speaker index -> "A", "B" ... in order of appearance, or a known speaker's name."""

    def __init__(self, named: Mapping[int, str]) -> None:
        self._named = dict(named)
        self._given: dict[int | None, str] = {}

    def of(self, speaker: int | None) -> str:
        if speaker in self._named:
            return self._named[speaker]
        if speaker not in self._given:
            self._given[speaker] = _letters(len(self._given))
        return self._given[speaker]


def _letters(index: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA" ..."""
    out = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        out = string.ascii_uppercase[rest] + out
    return out


def _join(a: str, b: str) -> str:
    if not a:
        return b
    if not b:
        return a
    return a + b if b[0] in ",.;:!?" or a[-1].isspace() or b[0].isspace() else f"{a} {b}"


class DiarizationSession(FeatureSession):
    """One session's speakers: turn embeddings clustered online."""

    def __init__(
        self,
        embedder: SpeakerEmbedder,
        clusters: OnlineClusters,
        sample_rate: int,
        min_speech_ms: int,
    ) -> None:
        self._embedder = embedder
        self.clusters = clusters
        self._rate = sample_rate
        self._min_speech_ms = min_speech_ms
        self._last: str | None = None

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Diarization needs whole turns (:meth:`identify`): no events from the stream."""
        return ()

    async def identify(self, pcm: bytes, *, final: bool) -> TurnSpeaker | None:
        """The turn's speaker label (see the module docstring). Cancelling abandons it; the
        session's speakers are only updated once the embedding is back."""
        audio = resample_pcm16(pcm[: len(pcm) // 2 * 2], self._rate, SAMPLE_RATE)
        if speech_ms(audio) < self._min_speech_ms:
            return self._too_short(final)
        try:
            vector = await self._embedder.embed(audio)
        except NoSpeechError:
            return self._too_short(final)
        if not final:
            found = self.clusters.identify(vector)
            return TurnSpeaker(label=found[0]) if found is not None else None
        assignment = self.clusters.assign(vector)
        self._last = assignment.label
        return TurnSpeaker(label=assignment.label)

    def _too_short(self, final: bool) -> TurnSpeaker:
        """A turn too short to embed reliably ("yes", "hello there") keeps the previous label;
        the session's first turn gets the label its first speaker will have ("S1"), so every
        transcript with words carries one."""
        if self._last is None:
            label = self.clusters.next_label()
            if final:
                self._last = label
            return TurnSpeaker(label=label)
        return TurnSpeaker(label=self._last)


@hookimpl
def scaivoice_session_features() -> Iterator[FeatureSpec]:
    """Declare anonymous diarization, switched on by the session key ``diarize``."""
    yield FeatureSpec(
        name=NAME,
        config_key="diarize",
        factory=SpeakerDiarization.from_mapping,
        description=(
            "anonymous diarization (d-vector embeddings, ONNX, offline): speaker labels on "
            "final transcripts, speaker segments for voice notes"
        ),
    )
