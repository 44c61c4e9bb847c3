"""Voice activity detection with Silero VAD, as the session feature ``silero-vad``.

A session that sets ``vad_enabled`` gets :class:`SpeechStarted` / :class:`SpeechStopped` events
from its microphone audio. The model (``data/silero_vad.onnx``, MIT, licence alongside) is
loaded once per engine and runs on onnxruntime alone: the ``silero_vad`` Python package is never
imported (it imports torch). The operator's options (``[backends.feature_options.silero-vad]``),
which a session's own option table may override::

    threshold = 0.5        # speech probability that starts a speech run
    neg_threshold = 0.35   # below this a frame is silence (default threshold - 0.15)
    min_speech_ms = 250    # shorter bursts (a cough, a click) do not start speech
    min_silence_ms = 500   # hang time: silence this long stops speech
    model_path = "..."     # another Silero VAD ONNX file (default: the bundled one)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
    SessionFeature,
    StreamResampler,
    hookimpl,
    pcm16_to_float,
)

from ._segmenter import SpeechSegmenter
from ._silero_model import FRAME, SAMPLE_RATE, SileroModel, SileroStream

__all__ = [
    "SileroVad",
    "SileroVadOptions",
    "SileroVadSession",
    "SpeechSegmenter",
    "scaivoice_session_features",
]

NAME = "silero-vad"
_FRAME_BYTES = FRAME * 2
# One frame costs about 0.2 ms of CPU, less than handing work to a thread and back. A session
# sends 20-100 ms chunks (1-3 frames), so the model runs inline on the event loop; only an
# unusually large chunk (more than 16 frames, about 3 ms of work) goes to a worker thread.
_INLINE_MAX_FRAMES = 16

_Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Millis = Annotated[int, msgspec.Meta(ge=0)]


class SileroVadOptions(BackendOptions, frozen=True):
    """Options of the ``silero-vad`` feature (see the module docstring)."""

    threshold: _Probability = 0.5
    neg_threshold: _Probability | None = None
    min_speech_ms: _Millis = 250
    min_silence_ms: _Millis = 500
    model_path: str | None = None


class SileroVad(SessionFeature):
    """Silero VAD: speech start / stop events for sessions that enable ``vad_enabled``."""

    def __init__(self, options: SileroVadOptions | None = None) -> None:
        self.options = options or SileroVadOptions()
        _segmenter_for(self.options)  # reject inconsistent thresholds now, not per session
        self._model: SileroModel | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SileroVad:
        """The feature factory: validate the operator's option table.

        Raises:
            ConfigError: unknown keys or bad values.
        """
        return cls(SileroVadOptions.from_mapping(values, backend=NAME))

    async def open(self) -> None:
        """Load the ONNX model in a worker thread. Cancelling abandons the load.

        Raises:
            ConfigError: onnxruntime is missing, or the model file cannot be loaded.
        """
        if self._model is not None:
            return
        path = Path(self.options.model_path).expanduser() if self.options.model_path else None
        try:
            self._model = await trio.to_thread.run_sync(SileroModel.load, path)
        except ImportError as exc:
            raise ConfigError(
                f"the {NAME} feature needs onnxruntime: pip install onnxruntime"
            ) from exc
        except Exception as exc:  # onnxruntime raises its own exception types on bad files
            raise ConfigError(f"cannot load the Silero VAD model {path or ''}: {exc}") from exc

    async def aclose(self) -> None:
        self._model = None

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> SileroVadSession:
        """Per-session state; ``options`` may override the operator's options for this session.

        Raises:
            ConfigError: unknown or bad options, or the feature is not open.
        """
        if self._model is None:
            raise ConfigError(f"the {NAME} feature is not open")
        merged = self.options
        if options:
            values = {**msgspec.structs.asdict(self.options), **options}
            merged = SileroVadOptions.from_mapping(values, backend=NAME)
        return SileroVadSession(self._model.stream(), _segmenter_for(merged), sample_rate)


class SileroVadSession(FeatureSession):
    """One session's VAD: resampling to 16 kHz, 512-sample framing, model state, segmenter."""

    def __init__(self, stream: SileroStream, segmenter: SpeechSegmenter, sample_rate: int) -> None:
        self._stream = stream
        self.segmenter = segmenter
        self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self._carry = b""
        self._pending = bytearray()

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Feed the next chunk; return speech start / stop events it completes.

        Cancelling abandons the chunk (a chunk already in a worker thread finishes first).
        """
        data = self._carry + pcm
        cut = len(data) - len(data) % 2
        self._carry = data[cut:]
        self._pending += self._resampler.process(data[:cut])
        count = len(self._pending) // _FRAME_BYTES
        if count == 0:
            await trio.lowlevel.checkpoint()
            return []
        raw = bytes(self._pending[: count * _FRAME_BYTES])
        del self._pending[: count * _FRAME_BYTES]
        frames = pcm16_to_float(raw).reshape(count, FRAME)
        if count <= _INLINE_MAX_FRAMES:
            probabilities = self._stream.probabilities(frames)
            await trio.lowlevel.checkpoint()
        else:
            probabilities = await trio.to_thread.run_sync(self._stream.probabilities, frames)
        return self.segmenter.push_many(probabilities)


def _segmenter_for(options: SileroVadOptions) -> SpeechSegmenter:
    try:
        return SpeechSegmenter(
            threshold=options.threshold,
            neg_threshold=options.neg_threshold,
            min_speech_ms=options.min_speech_ms,
            min_silence_ms=options.min_silence_ms,
            frame_ms=FRAME * 1000 / SAMPLE_RATE,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid options for {NAME!r}: {exc}") from exc


@hookimpl
def scaivoice_session_features() -> Iterator[FeatureSpec]:
    """Declare the Silero VAD feature, switched on by the session key ``vad_enabled``."""
    yield FeatureSpec(
        name=NAME,
        config_key="vad_enabled",
        factory=SileroVad.from_mapping,
        description="Silero VAD (ONNX, offline): speech start / stop events for barge-in",
    )
