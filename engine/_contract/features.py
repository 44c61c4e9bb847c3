"""Session features: opt-in behaviour that observes a session's audio (VAD, wake word, ...).

A feature plugin yields a :class:`FeatureSpec` naming the session config key that switches it on
(``vad_enabled``, ``wake_word_enabled`` ...). The engine creates the feature once (shared model),
opens it with ``async with``, and asks it for one :class:`FeatureSession` per session that turns
the key on. The session feeds it the user's audio, in order, and acts on the events it returns.
A session config key whose feature is not installed gets a ``feature_unavailable`` warning.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .backends import API_VERSION
from .resource import Resource

__all__ = [
    "FeatureEvent",
    "FeatureSession",
    "FeatureSpec",
    "SessionFeature",
    "SpeechStarted",
    "SpeechStopped",
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
    """A wake word was heard."""

    confidence: float
    keyword: str = ""


FeatureEvent = SpeechStarted | SpeechStopped | WakeDetected


class FeatureSession(abc.ABC):
    """Per-session state of a feature. Not shared between sessions."""

    @abc.abstractmethod
    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Consume the next PCM16LE mono chunk at the session's rate; return what happened.

        Cancelling abandons the chunk (the session is ending).
        """


class SessionFeature(Resource):
    """A feature, created once per engine and shared by sessions."""

    async def open(self) -> None:
        """Load models. Cancelling abandons the load."""

    async def aclose(self) -> None:
        """Release resources. Idempotent."""

    @abc.abstractmethod
    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        """Create the per-session state. No I/O."""


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
