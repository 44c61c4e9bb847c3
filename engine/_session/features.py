"""The session's features: which are on, feeding them audio, and asking them who spoke.

A feature is on for a session while its config key is (``vad_enabled``, ``wake_word_enabled``,
``diarize``, ``speaker_recognition``). One whose ``process`` raises is turned off for the rest of
the session; the dialogue warns the client (``feature_failed``) and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from .._contract.features import (
    FeatureEvent,
    FeatureSession,
    SessionContext,
    open_feature_session,
)
from .._errors import ConfigError
from .._host.engine import Engine
from ..frames import SessionConfig
from .overlap import EndOfTurnPolicy
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
        self._vad_options: dict[str, Any] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._on

    def configure(self, config: SessionConfig, old: SessionConfig, turn_detection: str) -> None:
        """Turn features on and off to match ``config`` and the turn detection in effect
        (reopening the wake-word detector when the keywords changed, the VAD when its pause
        changed). No I/O.

        The VAD is on for barge-in (``vad_enabled``) and for ending turns (``server_vad``,
        ``semantic``); the end-of-turn model for ``semantic``."""
        wake_word = tuple(config.wake_word) if config.wake_word is not None else None
        context = SessionContext(tenant=self._tenant, wake_word=wake_word)
        vad_options = _vad_options(config, turn_detection)
        for key, (_spec, feature) in self._engine.features.items():
            options: dict[str, Any] = {}
            if key == "vad_enabled":
                enabled = config.vad_enabled or turn_detection in ("server_vad", "semantic")
                options = vad_options
                reopen = options != self._vad_options
            elif key == "turn_detection":
                enabled = turn_detection == "semantic"
                reopen = False
            else:
                enabled = bool(getattr(config, key, False))
                reopen = key == "wake_word_enabled" and config.wake_word != old.wake_word
            if enabled and (key not in self._on or reopen):
                try:
                    self._on[key] = open_feature_session(
                        feature, sample_rate=self._sample_rate, context=context, options=options
                    )
                except ConfigError:
                    if not options:
                        raise
                    log.warning("feature %r refuses the options %r; using its own", key, options)
                    self._on[key] = open_feature_session(
                        feature, sample_rate=self._sample_rate, context=context
                    )
                if key == "vad_enabled":
                    self._vad_options = options
            elif not enabled:
                self._on.pop(key, None)

    async def end_of_turn(self) -> float | None:
        """The end-of-turn model's probability that the user finished (``None``: no model, or
        it failed: then a pause ends the turn). Cancelling abandons it."""
        feature = self._on.get("turn_detection")
        if feature is None:
            return None
        try:
            return await feature.end_of_turn()
        except Exception:  # a model's bug: the pause ends the turn, the session goes on
            log.exception("the end-of-turn model failed; this pause ends the turn")
            return None

    def forget_speech(self) -> list[str]:
        """A wake word was heard: every feature forgets the speech in progress. Returns the
        keys of the features that failed (now off), as :meth:`process` does."""
        failed: list[str] = []
        for key, feature in self._on.items():
            try:
                feature.forget_speech()
            except Exception:  # a feature's bug degrades the session, it does not end it
                log.exception("session feature %r failed to forget the speech; it is off", key)
                failed.append(key)
        for key in failed:
            del self._on[key]
        return failed

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


def _vad_options(config: SessionConfig, turn_detection: str) -> dict[str, Any]:
    """The VAD's per-session pause: the policy's under ``semantic`` (the model judges the
    pause), ``silence_ms`` under ``server_vad``; otherwise the operator's."""
    if turn_detection == "semantic":
        return {"min_silence_ms": EndOfTurnPolicy.for_eagerness(config.turn_eagerness).pause_ms}
    if turn_detection == "server_vad" and config.silence_ms is not None:
        return {"min_silence_ms": config.silence_ms}
    return {}
