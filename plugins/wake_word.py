"""A server-side wake word with microWakeWord, as the session feature ``micro-wake-word``.

A session that sets ``wake_word_enabled`` gets a :class:`WakeDetected` event when one of its
keywords is said; the engine then sends the ``wake`` frame and opens the user turn. The models
are the four that ``pymicro-wakeword`` bundles (Apache-2.0, models included: ``okay_nabu``,
``hey_jarvis``, ``alexa``, ``hey_mycroft``), run on the TensorFlow Lite library inside that
wheel (``pip install 'scaivoice[wake]'``; Linux x86-64 / aarch64 with glibc 2.35+, Windows).
Each keyword's model is loaded once per engine; each session has its own detector state.

Which keywords a session listens for: the client's ``wake_word`` config key (a list of names
from :attr:`MicroWakeWordFeature.keywords`), else the operator's ``default_keywords``. The
operator's options (``[backends.feature_options.micro-wake-word]``)::

    default_keywords = ["hey_mycroft"] # what a session listens for when it names none
    keywords = ["hey_jarvis", "alexa"] # offer only these (default: all, plus model_files)
    cutoffs = { hey_jarvis = 0.97 }    # per keyword: the averaged probability that fires
                                       # (default: the model's own; higher = fewer false wakes)
    refractory_ms = 2000               # after a detection, no other for this long
    model_files = ["/models/hey_computer.json"]  # more microWakeWord models (JSON + .tflite);
                                       # the keyword's name is the JSON file's name

Detection: a model gives a probability every 30 ms; the keyword fires when the mean of its last
few (the model's window, 5) passes the cutoff. That happens 100-200 ms after the keyword ends
(measured on Piper and hibari speech), when a request said in the same breath has begun, so
:attr:`WakeDetection.keyword_end_ms` estimates where the keyword itself ended (see
:class:`WakeTrigger`) and :attr:`MicroWakeWordSession.heard_ms` says how much audio the session
has been given: the audio after the keyword is the last ``heard_ms - keyword_end_ms`` of it,
reported as :attr:`WakeDetected.after_ms` (the session keeps it as the start of the turn).
After a detection every keyword of the session is muted for ``refractory_ms`` and until its
averaged probability has fallen below the cutoff again: one utterance never fires twice.

Cost (measured): 3-4 ms of CPU per second of audio for one keyword, 7-10 ms for all four
(0.06-0.2 ms per 20 ms chunk), run inline: less than a hand-off to a worker thread costs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import msgspec
import trio

from scaivoice.engine import (
    BackendOptions,
    ConfigError,
    FeatureEvent,
    FeatureSession,
    FeatureSpec,
    SessionContext,
    SessionFeature,
    StreamResampler,
    WakeDetected,
    hookimpl,
)

from ._micro_wakeword import (
    BUILTIN_KEYWORDS,
    SAMPLE_RATE,
    Frontend,
    KeywordDetector,
    KeywordModel,
    bundled_config,
    load_library,
    read_config,
)

__all__ = [
    "DEFAULT_KEYWORDS",
    "MicroWakeWordFeature",
    "MicroWakeWordOptions",
    "MicroWakeWordSession",
    "WakeDetection",
    "WakeTrigger",
    "scaivoice_session_features",
]

NAME = "micro-wake-word"
INSTALL = "pip install 'scaivoice[wake]'"
DEFAULT_KEYWORDS = ("hey_mycroft",)
"""What a session listens for when neither it nor the operator names keywords: the keyword
detected best in ``scaivoice bench wake`` (every utterance of 12 generated voices, no false or
near-miss wake)."""
log = logging.getLogger("scaivoice.plugins.wake_word")

_Probability = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]


class MicroWakeWordOptions(BackendOptions, frozen=True):
    """Options of the ``micro-wake-word`` feature (see the module docstring)."""

    default_keywords: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_KEYWORDS))
    keywords: list[str] | None = None
    cutoffs: dict[str, _Probability] = msgspec.field(default_factory=dict)
    refractory_ms: Annotated[int, msgspec.Meta(ge=0)] = 2000
    model_files: list[str] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WakeDetection:
    """A keyword heard, with where it was in the session's audio.

    Attributes:
        keyword: the keyword's name.
        confidence: the averaged probability that passed the cutoff (0..1).
        at_ms: when it fired, in ms of the session's audio given to this detector.
        keyword_end_ms: where the keyword itself ended (estimated, same clock): the audio
            after it is what the user said next.
    """

    keyword: str
    confidence: float
    at_ms: int
    keyword_end_ms: int


class WakeTrigger:
    """When probabilities make a detection: averaging, cutoff, refractory period (sans-IO).

    Feed each keyword's probabilities in time order with :meth:`push`; it returns a detection
    when the mean of the keyword's last ``window`` probabilities passes its cutoff, unless the
    session is muted: for ``refractory_ms`` after any detection, and for each keyword until its
    mean has fallen back to the cutoff or below.

    The keyword's end is placed at the start of the audio behind the probability that rose over
    :attr:`RISE` on the way to the detection (``lookback_ms`` before its time): a model's
    probability climbs as the keyword's last sound is heard, and the averaged one passes the
    cutoff two or three model calls (60-120 ms) later.

    Args:
        cutoffs: keyword -> cutoff (the mean must exceed it).
        windows: keyword -> how many probabilities are averaged.
        refractory_ms: the quiet time after a detection.
        lookback_ms: how much audio before a probability's time went into it.
    """

    RISE = 0.5

    def __init__(
        self,
        cutoffs: Mapping[str, float],
        windows: Mapping[str, int],
        refractory_ms: int,
        lookback_ms: int = 0,
    ) -> None:
        self._cutoffs = dict(cutoffs)
        self._recent = {k: deque[float](maxlen=max(windows[k], 1)) for k in cutoffs}
        self._armed = dict.fromkeys(cutoffs, True)
        self._rose_at: dict[str, int | None] = dict.fromkeys(cutoffs)
        self._refractory_ms = refractory_ms
        self._lookback_ms = lookback_ms
        self._muted_until_ms = -1

    def push(self, keyword: str, probability: float, at_ms: int) -> WakeDetection | None:
        """The probability of ``keyword`` for the audio up to ``at_ms``."""
        cutoff = self._cutoffs[keyword]
        recent = self._recent[keyword]
        recent.append(probability)
        if probability <= self.RISE:
            self._rose_at[keyword] = None
        elif self._rose_at[keyword] is None:
            self._rose_at[keyword] = at_ms
        mean = sum(recent) / len(recent) if len(recent) == recent.maxlen else 0.0
        if mean <= cutoff:
            self._armed[keyword] = True
            return None
        if not self._armed[keyword] or at_ms < self._muted_until_ms:
            return None
        for other in self._armed:
            self._armed[other] = False
        self._muted_until_ms = at_ms + self._refractory_ms
        rose_at = self._rose_at[keyword]
        end = max((at_ms if rose_at is None else rose_at) - self._lookback_ms, 0)
        return WakeDetection(keyword, mean, at_ms, end)


class MicroWakeWordFeature(SessionFeature):
    """microWakeWord keyword spotting for sessions that enable ``wake_word_enabled``.

    Attributes:
        keywords: the keywords sessions may ask for (``wake_word``), known before
            :meth:`open` (the engine advertises and validates them).
        default_keywords: what a session listens for when it names none.
    """

    def __init__(self, options: MicroWakeWordOptions | None = None) -> None:
        self.options = options = options or MicroWakeWordOptions()
        extra = {Path(p).expanduser().stem: Path(p).expanduser() for p in options.model_files}
        every = (*BUILTIN_KEYWORDS, *(k for k in extra if k not in BUILTIN_KEYWORDS))
        offered = every if options.keywords is None else tuple(dict.fromkeys(options.keywords))
        self._check_names("keywords", offered, every)
        self.keywords: tuple[str, ...] = offered
        self._check_names("default_keywords", options.default_keywords, offered)
        if not options.default_keywords:
            raise ConfigError(f"invalid options for {NAME!r}: default_keywords is empty")
        self.default_keywords: tuple[str, ...] = tuple(dict.fromkeys(options.default_keywords))
        self._check_names("cutoffs", options.cutoffs, offered)
        self._files = {k: extra[k] for k in offered if k in extra}
        self._models: dict[str, KeywordModel] = {}

    @staticmethod
    def _check_names(
        option: str, names: Iterator[str] | Sequence[str] | Mapping[str, Any], known: Sequence[str]
    ) -> None:
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(
                f"invalid options for {NAME!r}: {option} names unknown keywords "
                f"{', '.join(map(repr, unknown))} (known: {', '.join(known)})"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> MicroWakeWordFeature:
        """The feature factory: validate the operator's option table. No I/O.

        Raises:
            ConfigError: unknown keys, bad values, or keyword names that are not offered.
        """
        return cls(MicroWakeWordOptions.from_mapping(values, backend=NAME))

    async def open(self) -> None:
        """Load the library and each offered keyword's model in a worker thread. Cancelling
        abandons the load.

        Raises:
            ConfigError: pymicro-wakeword is missing or does not load on this platform, or a
                model file cannot be loaded.
        """
        if self._models:
            return
        try:
            self._models = await trio.to_thread.run_sync(self._load)
        except ImportError as exc:
            raise ConfigError(f"the {NAME} feature needs pymicro-wakeword: {INSTALL}") from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the {NAME} models: {exc}") from exc

    def _load(self) -> dict[str, KeywordModel]:
        Frontend()  # pymicro-features is there and works
        tflite = load_library()
        models: dict[str, KeywordModel] = {}
        for name in self.keywords:
            config = read_config(self._files.get(name) or bundled_config(name))
            models[name] = KeywordModel(tflite, replace(config, name=name))
        log.info(
            "%s: keywords %s (default %s)",
            NAME,
            ", ".join(
                f"{m.name} ({self.options.cutoffs.get(m.name, m.config.cutoff):g})"
                for m in models.values()
            ),
            ", ".join(self.default_keywords),
        )
        return models

    async def aclose(self) -> None:
        """Drop the models (sessions still open keep theirs until they end). Idempotent."""
        self._models = {}

    def phrase(self, keyword: str) -> str:
        """What is said for ``keyword`` (``"Hey Jarvis"``), once open; else the name."""
        model = self._models.get(keyword)
        return model.config.phrase if model is not None else keyword

    def open_session(
        self,
        *,
        sample_rate: int,
        options: Mapping[str, Any],
        context: SessionContext | None = None,
    ) -> MicroWakeWordSession:
        """Per-session detectors for the keywords the client asked for (``context.wake_word``),
        or :attr:`default_keywords`. ``options`` may override ``default_keywords``, ``cutoffs``
        and ``refractory_ms`` for this session. No I/O.

        Raises:
            ConfigError: a keyword that is not offered, bad options, or the feature is not open.
        """
        if not self._models:
            raise ConfigError(f"the {NAME} feature is not open")
        merged = self.options
        if options:
            merged = MicroWakeWordOptions.from_mapping(
                {**msgspec.structs.asdict(self.options), **options}, backend=NAME
            )
            if (merged.keywords, merged.model_files) != (
                self.options.keywords,
                self.options.model_files,
            ):
                raise ConfigError(
                    f"invalid options for {NAME!r}: keywords and model_files are the "
                    "operator's (they decide which models are loaded)"
                )
            self._check_names("default_keywords", merged.default_keywords, self.keywords)
            self._check_names("cutoffs", merged.cutoffs, self.keywords)
        wanted = context.wake_word if context is not None else None
        names = tuple(dict.fromkeys(merged.default_keywords if wanted is None else wanted))
        if not names:
            raise ConfigError("wake_word names no keyword")
        unknown = [k for k in names if k not in self._models]
        if unknown:
            raise ConfigError(
                f"unknown wake word {', '.join(map(repr, unknown))}; this server offers "
                f"{', '.join(self.keywords)}"
            )
        models = [self._models[k] for k in names]
        cutoffs = {m.name: merged.cutoffs.get(m.name, m.config.cutoff) for m in models}
        return MicroWakeWordSession(models, cutoffs, sample_rate, merged.refractory_ms)


class MicroWakeWordSession(FeatureSession):
    """One session's keyword spotting: resampling, features, one detector per keyword.

    Attributes:
        keywords: the keywords listened for.
        last_detection: the latest detection, with its timing.
    """

    def __init__(
        self,
        models: Sequence[KeywordModel],
        cutoffs: Mapping[str, float],
        sample_rate: int,
        refractory_ms: int,
    ) -> None:
        self.keywords = tuple(m.name for m in models)
        self._detectors: list[tuple[str, KeywordDetector]] = [
            (m.name, m.detector()) for m in models
        ]
        self._trigger = WakeTrigger(
            cutoffs,
            {m.name: m.config.window for m in models},
            refractory_ms,
            lookback_ms=max(m.lookback_ms for m in models),
        )
        self._frontend = Frontend()
        self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self.last_detection: WakeDetection | None = None
        self.heard_ms = 0
        """How much audio (ms) this session has been given: the clock of the detections."""
        self._heard_samples = 0

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Feed the next chunk; return a :class:`WakeDetected` for each keyword it completes.

        Runs inline (well under a millisecond for 100 ms of audio). Cancelling cannot
        interrupt it.
        """
        return self.process_nowait(pcm)

    def process_nowait(self, pcm: bytes) -> list[FeatureEvent]:
        """:meth:`process`, synchronously (benchmarks, tests)."""
        pcm = self._resampler.process(pcm)
        self._heard_samples += len(pcm) // 2
        self.heard_ms = self._heard_samples * 1000 // SAMPLE_RATE
        rows, ends = self._frontend.process(pcm)
        if not ends:
            return []
        scored = sorted(  # in time order across keywords (stable: keyword order on ties)
            (
                (index, keyword, probability)
                for keyword, detector in self._detectors
                for index, probability in detector.push(rows)
            ),
            key=lambda item: item[0],
        )
        found: list[WakeDetection] = []
        for index, keyword, probability in scored:
            detection = self._trigger.push(keyword, probability, ends[index] * 1000 // SAMPLE_RATE)
            if detection is not None:
                found.append(detection)
        if not found:
            return []
        self.last_detection = found[-1]
        return [
            WakeDetected(
                confidence=round(d.confidence, 3),
                keyword=d.keyword,
                after_ms=max(0, self.heard_ms - d.keyword_end_ms),
            )
            for d in found
        ]


@hookimpl
def scaivoice_session_features() -> Iterator[FeatureSpec]:
    """Declare the wake-word feature, switched on by the session key ``wake_word_enabled``."""
    yield FeatureSpec(
        name=NAME,
        config_key="wake_word_enabled",
        factory=MicroWakeWordFeature.from_mapping,
        description="microWakeWord (TFLite, offline): okay_nabu, hey_jarvis, alexa, hey_mycroft",
    )
