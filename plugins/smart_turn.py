"""Semantic end of turn with Smart Turn v3.2, as the session feature ``smart-turn``.

A session whose ``turn_detection`` is ``semantic`` asks :meth:`SmartTurnSession.end_of_turn` at
each pause of a user turn how likely it is that the user has finished; the engine ends the turn
early when the answer is high and waits longer when it is low. The model hears how the words
were said (intonation, a drawn-out last word), not only which words: "my phone number is five
five five" said with a falling, final intonation scores as complete.

The model (``data/smart-turn-v3.2-cpu.onnx``, by Daily, BSD-2-Clause, licence alongside;
checked by sha256 when loaded) is a Whisper encoder over the last 8 s of 16 kHz audio, int8. It
runs on onnxruntime; its input features are computed in numpy (:mod:`._whisper_mel`). The model
is loaded once per engine; every session keeps only the last 8 s of its own audio. One call
costs about 55 ms of CPU on one core (5 ms of it the features; 50-130 ms of wall time on two
busy cores), so calls run in a worker thread, one at a time per engine (a limiter shared by all
sessions), and only when asked: :meth:`SmartTurnSession.process`
never runs the model. The operator's options (``[backends.feature_options.smart-turn]``)::

    threads = 1          # onnxruntime intra-op threads for the model (1 is fastest on 2 cores)
    model_path = "..."   # another Smart Turn v3 ONNX file (not checked; default: the bundled one)
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt
import trio

from scaivoice.engine import (
    BackendOptions,
    ConfigError,
    FeatureEvent,
    FeatureSession,
    FeatureSpec,
    SessionFeature,
    StreamResampler,
    hookimpl,
    pcm16_to_float,
)

from ._whisper_mel import SAMPLE_RATE, WINDOW_SAMPLES, log_mel

SILENCE_DBFS = -50.0
"""A window whose loudest 20 ms is quieter than this holds no speech: no opinion (``None``).
The model itself calls silence complete (0.99 for 8 s of zeros)."""

if TYPE_CHECKING:
    import onnxruntime  # type: ignore[import-untyped]

__all__ = [
    "MODEL_FILE",
    "MODEL_SHA256",
    "SILENCE_DBFS",
    "SmartTurn",
    "SmartTurnModel",
    "SmartTurnOptions",
    "SmartTurnSession",
    "SmartTurnStatistics",
    "loudest_dbfs",
    "scaivoice_session_features",
]

NAME = "smart-turn"
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
_WINDOW_BYTES = WINDOW_SAMPLES * 2
log = logging.getLogger("scaivoice.plugins.smart_turn")

_Threads = Annotated[int, msgspec.Meta(ge=1, le=16)]


class SmartTurnOptions(BackendOptions, frozen=True):
    """Options of the ``smart-turn`` feature (see the module docstring)."""

    threads: _Threads = 1
    model_path: str | None = None


class SmartTurnModel:
    """A loaded Smart Turn v3 model. ``probability`` is thread-safe (one onnxruntime session)."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name

    @classmethod
    def load(cls, path: Path | None = None, *, threads: int = 1) -> SmartTurnModel:
        """Load ``path``, or the bundled model (checked by sha256). Blocking.

        Raises:
            ImportError: onnxruntime is not installed.
            ValueError: the bundled file is not the one this module was written for.
            OSError / onnxruntime errors: the file cannot be read or is not a model.
        """
        import onnxruntime

        if path is None:
            data = (
                resources.files(__package__ or "scaivoice.plugins")
                .joinpath("data", MODEL_FILE)
                .read_bytes()
            )
            digest = hashlib.sha256(data).hexdigest()
            if digest != MODEL_SHA256:
                raise ValueError(
                    f"the bundled {MODEL_FILE} is damaged or replaced "
                    f"(sha256 {digest[:12]}..., expected {MODEL_SHA256[:12]}...)"
                )
        else:
            data = path.read_bytes()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
        return cls(session)

    def probability(self, samples: npt.NDArray[np.float32]) -> float:
        """The probability (0-1) that the turn in ``samples`` (float, 16 kHz, mono; the last 8 s
        are heard) is complete. Blocking: run it in a worker thread."""
        features = log_mel(samples)[None]
        (output,) = self._session.run(None, {self._input: features})
        return float(np.clip(output.reshape(-1)[0], 0.0, 1.0))


def loudest_dbfs(samples: npt.NDArray[np.float32]) -> float:
    """The level of the loudest 20 ms of ``samples`` (float, 16 kHz), in dB below full scale
    (a sine at full scale: -3 dB; digital silence: -inf)."""
    frame = SAMPLE_RATE // 50
    count = len(samples) // frame
    if count == 0:
        power = float(np.mean(np.square(samples))) if len(samples) else 0.0
    else:
        frames = samples[: count * frame].reshape(count, frame)
        power = float(np.max(np.mean(np.square(frames, dtype=np.float64), axis=1)))
    return 10.0 * math.log10(power) if power > 0 else -math.inf


@dataclass(frozen=True, slots=True)
class SmartTurnStatistics:
    """What :meth:`SmartTurn.statistics` reports."""

    calls: int
    """Model calls since :meth:`SmartTurn.open`."""
    seconds: float
    """Wall-clock seconds spent in them (features and model, in the worker thread)."""


class SmartTurn(SessionFeature):
    """Smart Turn v3.2: the probability that the user's turn is complete, for sessions whose
    ``turn_detection`` is ``semantic``.

    Args:
        options: the operator's options.
        model: a model already loaded, used instead of loading one in :meth:`open` (to share
            one model between engines, or a wrapped model in tests).
    """

    def __init__(
        self, options: SmartTurnOptions | None = None, *, model: SmartTurnModel | None = None
    ) -> None:
        self.options = options or SmartTurnOptions()
        self._given = model
        self._scorer: _Scorer | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SmartTurn:
        """The feature factory: validate the operator's option table.

        Raises:
            ConfigError: unknown keys or bad values.
        """
        return cls(SmartTurnOptions.from_mapping(values, backend=NAME))

    async def open(self) -> None:
        """Load the model in a worker thread. Cancelling abandons the load.

        Raises:
            ConfigError: onnxruntime is missing, or the model cannot be loaded (a missing or
                bad file, or a bundled file whose sha256 is not the expected one).
        """
        if self._scorer is not None:
            return
        if self._given is not None:
            self._scorer = _Scorer(self._given)
            return
        path = Path(self.options.model_path).expanduser() if self.options.model_path else None
        threads = self.options.threads
        try:
            model = await trio.to_thread.run_sync(
                lambda: SmartTurnModel.load(path, threads=threads)
            )
        except ImportError as exc:
            raise ConfigError(
                f"the {NAME} feature needs onnxruntime: pip install onnxruntime"
            ) from exc
        except Exception as exc:  # onnxruntime raises its own exception types on bad files
            raise ConfigError(
                f"cannot load the Smart Turn model {path or MODEL_FILE}: {exc}"
            ) from exc
        self._scorer = _Scorer(model)

    async def aclose(self) -> None:
        """Drop the model. Idempotent. Sessions already open keep working until they end."""
        if self._scorer is not None and self._scorer.calls:
            scorer = self._scorer
            log.info(
                "%s: %d calls, %.1f ms each on average",
                NAME,
                scorer.calls,
                1000 * scorer.seconds / scorer.calls,
            )
        self._scorer = None

    def statistics(self) -> SmartTurnStatistics:
        """Model calls and the time they took since :meth:`open` (zero when not open)."""
        if self._scorer is None:
            return SmartTurnStatistics(0, 0.0)
        return SmartTurnStatistics(self._scorer.calls, self._scorer.seconds)

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> SmartTurnSession:
        """Per-session state. The options are engine-wide: a session may not change them.

        Raises:
            ConfigError: the feature is not open, or ``options`` has unknown keys or changes an
                option.
        """
        if self._scorer is None:
            raise ConfigError(f"the {NAME} feature is not open")
        if options:
            values = {**msgspec.structs.asdict(self.options), **options}
            if SmartTurnOptions.from_mapping(values, backend=NAME) != self.options:
                raise ConfigError(
                    f"the options of {NAME!r} are the engine's: a session cannot change them"
                )
        return SmartTurnSession(self._scorer, sample_rate)


class _Scorer:
    """The loaded model, the limiter that runs its calls one at a time, and their counters;
    shared by the feature's sessions."""

    def __init__(self, model: SmartTurnModel) -> None:
        self.model = model
        self.limiter = trio.CapacityLimiter(1)
        self.calls = 0
        self.seconds = 0.0

    async def probability(self, pcm16k: bytes) -> float | None:
        """One model call in a worker thread, after the calls before it; ``None`` for a window
        without speech (no model call)."""

        def run() -> tuple[float | None, float]:
            start = time.perf_counter()
            samples = pcm16_to_float(pcm16k)
            if loudest_dbfs(samples) < SILENCE_DBFS:
                return None, 0.0
            value = self.model.probability(samples)
            return value, time.perf_counter() - start

        # Abandoned on cancel: the call has no side effects, and the limiter stays held until
        # the thread really ends, so an abandoned call still delays the next one.
        value, seconds = await trio.to_thread.run_sync(
            run, limiter=self.limiter, abandon_on_cancel=True
        )
        if value is not None:
            self.calls += 1
            self.seconds += seconds
        return value


class SmartTurnSession(FeatureSession):
    """One session's audio for the model: resampled to 16 kHz, the last 8 s kept."""

    def __init__(self, scorer: _Scorer, sample_rate: int) -> None:
        self._scorer = scorer
        self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self._audio = bytearray()

    @property
    def buffered_ms(self) -> int:
        """How much audio (at most 8 s) the next :meth:`end_of_turn` will hear."""
        return min(len(self._audio), _WINDOW_BYTES) * 1000 // (2 * SAMPLE_RATE)

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Keep the chunk (the last 8 s are kept). Returns no events; never runs the model."""
        self._audio += self._resampler.process(pcm)
        if len(self._audio) >= 2 * _WINDOW_BYTES:
            del self._audio[:-_WINDOW_BYTES]
        return ()

    async def end_of_turn(self) -> float | None:
        """The probability (0-1) that the user's turn is complete, from the last 8 s of audio
        fed so far; ``None`` when those hold no speech (nothing fed yet, or nothing louder than
        :data:`SILENCE_DBFS`).

        Runs the model in a worker thread, after any other session's call of this engine
        (one at a time). The session's state is not changed: asking twice without feeding
        audio in between gives the same answer. Cancelling returns at once; a model call
        already running finishes in its thread (tens of milliseconds), unseen, before the
        engine's next call starts.
        """
        if not self._audio:
            return None
        window = bytes(self._audio[-_WINDOW_BYTES:])
        return await self._scorer.probability(window)


@hookimpl
def scaivoice_session_features() -> Iterator[FeatureSpec]:
    """Declare the Smart Turn feature, used by sessions whose ``turn_detection`` is
    ``semantic``."""
    yield FeatureSpec(
        name=NAME,
        config_key="turn_detection",
        factory=SmartTurn.from_mapping,
        description="Smart Turn v3.2 (ONNX, offline): semantic end of turn at pauses",
    )
