"""The session's features: which are on, feeding them audio, and asking them who spoke.

A feature is on for a session while its config key is (``vad_enabled``, ``wake_word_enabled``,
``diarize``, ``speaker_recognition``). One whose ``process`` raises is turned off for the rest of
the session; the dialogue warns the client (``feature_failed``) and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from .._contract.features import (
    FeatureEvent,
    FeatureSession,
    SessionContext,
    open_feature_session,
)
from .._host.engine import Engine
from ..frames import SessionConfig
from .speakers import SpeakerOfTurn, identify_with

__all__ = ["SessionFeatures"]

log = logging.getLogger("scaivoice.session")

_SPEAKER_KEYS = ("diarize", "speaker_recognition")  # the diarizer first: it answers early


class SessionFeatures:
    """The features one session has on.

    Args:
        engine: the engine whose opened features the session may use.
        tenant: the session's tenant (features get it in their :class:`SessionContext`).
        sample_rate: the rate of the audio they are given.
    """

    def __init__(self, engine: Engine, tenant: str, sample_rate: int) -> None:
        self._engine = engine
        self._tenant = tenant
        self._sample_rate = sample_rate
        self._on: dict[str, FeatureSession] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._on

    def configure(self, config: SessionConfig, old: SessionConfig) -> None:
        """Turn features on and off to match ``config`` (reopening the wake-word detector when
        the keywords changed). No I/O."""
        wake_word = tuple(config.wake_word) if config.wake_word is not None else None
        context = SessionContext(tenant=self._tenant, wake_word=wake_word)
        for key, (_spec, feature) in self._engine.features.items():
            enabled = bool(getattr(config, key, False))
            reopen = key == "wake_word_enabled" and config.wake_word != old.wake_word
            if enabled and (key not in self._on or reopen):
                self._on[key] = open_feature_session(
                    feature, sample_rate=self._sample_rate, context=context
                )
            elif not enabled:
                self._on.pop(key, None)

    async def process(self, pcm: bytes) -> tuple[list[FeatureEvent], list[str]]:
        """Feed ``pcm`` to every feature that is on; return their events and the keys of the
        features that failed (now off)."""
        events: list[FeatureEvent] = []
        failed: list[str] = []
        # Per audio chunk: no copy of the table (only the dialogue task changes it, and it is
        # waiting here); failed features leave it after the loop.
        for key, feature in self._on.items():
            try:
                events.extend(await feature.process(pcm))
            except Exception:  # a feature's bug degrades the session, it does not end it
                log.exception("session feature %r failed; it is off for this session", key)
                failed.append(key)
        for key in failed:
            del self._on[key]
        return events, failed

    def speaker_of_turn(self, max_ms: float) -> SpeakerOfTurn | None:
        """Who-spoke bookkeeping for a new user turn, when the session asked for it."""
        speakers: Sequence[FeatureSession] = [self._on[k] for k in _SPEAKER_KEYS if k in self._on]
        if not speakers:
            return None
        diarize = "diarize" in self._on
        return SpeakerOfTurn(
            partial(identify_with, speakers),
            provisional=partial(identify_with, speakers[:1]) if diarize else None,
            diarize=diarize,
            recognise="speaker_recognition" in self._on,
            max_ms=max_ms,
        )
