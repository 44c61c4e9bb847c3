"""Who spoke a user turn: the turn's audio kept for the speaker features, and their answers.

A session with ``diarize`` or ``speaker_recognition`` keeps each user turn's audio. About two
seconds in, the features give a provisional answer (interim transcripts carry its label); when
the turn ends they give the final one, computed while the recogniser decodes the final
transcript, which then carries it. Identification never holds a transcript back for long: a
final waits at most ``_FINAL_WAIT_S`` for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from .._contract.features import FeatureSession, TurnSpeaker

__all__ = ["SpeakerOfTurn", "identify_with"]

log = logging.getLogger("scaivoice.session")

_PROVISIONAL_AFTER_MS = 2000.0
_FINAL_WAIT_S = 3.0
_BYTES_PER_MS = 32  # PCM16 mono at 16 kHz

Identify = Callable[[bytes, bool], Awaitable[TurnSpeaker | None]]


async def identify_with(
    features: Sequence[FeatureSession], pcm: bytes, final: bool
) -> TurnSpeaker | None:
    """Ask every feature who spoke ``pcm``; merge their answers (label, id and score).

    A feature that fails is logged and ignored: the transcript goes out without its answer.
    """
    label: str | None = None
    speaker_id: str | None = None
    score: float | None = None
    answered = False
    for feature in features:
        try:
            answer = await feature.identify(pcm, final=final)
        except Exception:  # a feature bug must not end the session or hold the transcript
            log.exception("speaker feature %s failed", type(feature).__name__)
            continue
        if answer is None:
            continue
        answered = True
        label = answer.label if answer.label is not None else label
        if answer.speaker_id is not None or speaker_id is None:
            speaker_id = answer.speaker_id if answer.speaker_id is not None else speaker_id
            score = answer.score if answer.score is not None else score
    return TurnSpeaker(label, speaker_id, score) if answered else None


class SpeakerOfTurn:
    """One user turn's audio and who spoke it.

    Args:
        identify: asks the session's features (``identify_with`` bound to them).
        provisional: asks the features whose early answer interims can show (the diarizer).
        diarize: transcripts carry the anonymous ``speaker`` label.
        recognise: final transcripts carry ``speaker_id`` and ``speaker_score``.
        max_ms: the most audio kept (the user turn's cap).
    """

    def __init__(
        self,
        identify: Identify,
        *,
        provisional: Identify | None = None,
        diarize: bool,
        recognise: bool,
        max_ms: float,
    ):
        self._identify = identify
        self._provisional = provisional
        self._diarize = diarize
        self._recognise = recognise
        self._audio = bytearray()
        self._max_bytes = int(max_ms * _BYTES_PER_MS)
        self._provisional_started = False
        self._final_started = False
        self._final_done = trio.Event()
        self.provisional: TurnSpeaker | None = None
        self.final: TurnSpeaker | None = None

    def add(self, pcm: bytes) -> None:
        """Keep ``pcm`` (16 kHz PCM16) for identification."""
        room = self._max_bytes - len(self._audio)
        if room > 0:
            self._audio += pcm[:room]

    def start_provisional(self, nursery: trio.Nursery) -> None:
        """Start the provisional answer once enough audio is in (once per turn)."""
        if self._provisional_started or self._provisional is None:
            return
        if len(self._audio) < _PROVISIONAL_AFTER_MS * _BYTES_PER_MS:
            return
        self._provisional_started = True
        nursery.start_soon(self._run_provisional, bytes(self._audio))

    def start_final(self, nursery: trio.Nursery) -> None:
        """Start the final answer (the turn ended); the final transcript waits for it."""
        if not self._final_started:
            self._final_started = True
            nursery.start_soon(self._run_final)

    async def wait_final(self) -> None:
        """Wait for the final answer (running it here if the turn ended without a start)."""
        if not self._final_started:
            self._final_started = True
            await self._run_final()
            return
        with trio.move_on_after(_FINAL_WAIT_S):
            await self._final_done.wait()

    def fields(self, *, final: bool) -> dict[str, Any]:
        """The speaker keys of a transcript frame (none for what the session did not ask)."""
        known = self.final if final else (self.final or self.provisional)
        fields: dict[str, Any] = {}
        if self._diarize:
            label = known.label if known is not None else None
            if label is None and self.provisional is not None:
                label = self.provisional.label
            fields["speaker"] = label
        if self._recognise and final:
            fields["speaker_id"] = known.speaker_id if known is not None else None
            fields["speaker_score"] = (
                round(known.score, 3) if known is not None and known.score is not None else None
            )
        return fields

    async def _run_provisional(self, pcm: bytes) -> None:
        assert self._provisional is not None
        self.provisional = await self._provisional(pcm, False)

    async def _run_final(self) -> None:
        try:
            self.final = await self._identify(bytes(self._audio), True)
        finally:
            self._final_done.set()
