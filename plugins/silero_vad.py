"""Voice activity detection with Silero VAD, as the session feature ``silero-vad``.

A session that sets ``vad_enabled`` gets :class:`SpeechStarted` / :class:`SpeechStopped` events
from its microphone audio. The model (``data/silero_vad.onnx``, MIT, licence alongside) is
loaded once per engine and runs on onnxruntime alone: the ``silero_vad`` Python package is never
imported (it imports torch). The operator's options (``[backends.feature_options.silero-vad]``),
which a session's own option table may override::

    threshold = 0.5        # speech probability that starts a speech run
    neg_threshold = 0.35   # below this a frame is silence (default threshold - 0.15)
    min_speech_ms = 64     # shorter bursts (a click) do not start speech; a barge-in needs this
                           # much (about 100-130 ms after the real onset, with the model's lag)
    min_silence_ms = 300   # hang time: silence this long after the end of speech stops it
    pause_ms = 100         # a silence this long while speaking is a pause (SpeechPaused): replies
                           # start speculatively there; SpeechResumed if speech comes back
    energy_gate_dbfs = -50.0  # after 1 s below this level, frames are not scored (-120: off)
    model_path = "..."     # another Silero VAD ONNX file (default: the bundled one)

The hang time counts from where the speech really ended, found from the frames' loudness (see
:mod:`._segmenter`), not from where the model's probability fell (two to six frames later).
The energy gate (see :mod:`._levels`) spares the model the frames of a quiet stream: an idle
session in a quiet room costs no model calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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

from ._levels import SILENCE_DBFS, EnergyGate, frame_levels
from ._segmenter import SpeechSegmenter
from ._silero_model import FRAME, SAMPLE_RATE, SileroModel, SileroStream

__all__ = [
    "SileroVad",
    "SileroVadOptions",
    "SileroVadSession",
    "SileroVadStatistics",
    "SpeechSegmenter",
    "scaivoice_session_features",
]

NAME = "silero-vad"
log = logging.getLogger("scaivoice.plugins.silero_vad")
_FRAME_BYTES = FRAME * 2
# One call of the model costs about 0.2 ms for one frame and 0.05 ms per frame in a batch of
# 16 or more. Sessions therefore hand their frames to one shared batcher: the first session of
# a scheduler tick leads, yields once so that every session with audio this tick adds its
# frames, then runs them all in one call per step, always in a worker thread (onnxruntime
# releases the GIL, so the model runs on another core while the event loop serves sockets).
# While a batch runs, the frames that arrive meanwhile gather in the next one, so batches grow
# with the load. PCM16 to float conversion happens in the worker thread too.

_Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Millis = Annotated[int, msgspec.Meta(ge=0)]
_Dbfs = Annotated[float, msgspec.Meta(ge=SILENCE_DBFS, le=0.0)]
# The gate scores this many quiet frames in a row (about 1 s: the model's state settles on the
# quiet) before it skips, and one skipped frame again before the frame that opens it.
_GATE_SETTLE_FRAMES = 31
_GATE_PREROLL = 1


class SileroVadOptions(BackendOptions, frozen=True):
    """Options of the ``silero-vad`` feature (see the module docstring)."""

    threshold: _Probability = 0.5
    neg_threshold: _Probability | None = None
    min_speech_ms: _Millis = 64
    min_silence_ms: _Millis = 300
    pause_ms: _Millis | None = 100
    """A silence this long while speaking is a pause (``SpeechPaused``): the session starts
    its reply speculatively; ``None``: no pause events."""
    energy_gate_dbfs: _Dbfs | None = -50.0
    model_path: str | None = None


class SileroVad(SessionFeature):
    """Silero VAD: speech start / stop events for sessions that enable ``vad_enabled``."""

    def __init__(self, options: SileroVadOptions | None = None) -> None:
        self.options = options or SileroVadOptions()
        _segmenter_for(self.options)  # reject inconsistent thresholds now, not per session
        self._model: SileroModel | None = None
        self._batcher: _Batcher | None = None

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
            self._batcher = _Batcher(self._model)
        except ImportError as exc:
            raise ConfigError(
                f"the {NAME} feature needs onnxruntime: pip install onnxruntime"
            ) from exc
        except Exception as exc:  # onnxruntime raises its own exception types on bad files
            raise ConfigError(f"cannot load the Silero VAD model {path or ''}: {exc}") from exc

    async def aclose(self) -> None:
        if self._batcher is not None:
            stats = self._batcher.statistics()
            log.info(
                "%s: %d frames in %d batches (%.1f chunks a batch, at most %d), %d skipped",
                NAME,
                stats.frames,
                stats.batches,
                stats.chunks / max(stats.batches, 1),
                stats.largest_batch,
                stats.skipped,
            )
        self._model = None
        self._batcher = None

    def statistics(self) -> SileroVadStatistics:
        """Batching counters since :meth:`open` (all zero when the feature is not open)."""
        if self._batcher is None:
            return SileroVadStatistics(0, 0, 0, 0, 0)
        return self._batcher.statistics()

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> SileroVadSession:
        """Per-session state; ``options`` may override the operator's options for this session.

        Raises:
            ConfigError: unknown or bad options, or the feature is not open.
        """
        if self._model is None or self._batcher is None:
            raise ConfigError(f"the {NAME} feature is not open")
        merged = self.options
        if options:
            values = {**msgspec.structs.asdict(self.options), **options}
            merged = SileroVadOptions.from_mapping(values, backend=NAME)
        gate = EnergyGate(
            merged.energy_gate_dbfs, settle_frames=_GATE_SETTLE_FRAMES, preroll=_GATE_PREROLL
        )
        return SileroVadSession(
            self._model.stream(), _segmenter_for(merged), sample_rate, self._batcher, gate
        )


class SileroVadSession(FeatureSession):
    """One session's VAD: resampling to 16 kHz, 512-sample framing, frame levels, the energy
    gate, model state, segmenter."""

    def __init__(
        self,
        stream: SileroStream,
        segmenter: SpeechSegmenter,
        sample_rate: int,
        batcher: _Batcher,
        gate: EnergyGate | None = None,
    ) -> None:
        self._stream = stream
        self._batcher = batcher
        self.segmenter = segmenter
        self._gate = gate or EnergyGate(None)
        self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self._carry = b""
        self._pending = bytearray()
        self._recent = b""  # the last frames before this chunk, for a pre-roll and its context
        self._in_step = True  # the stream scored the frame before this chunk (or none came)

    def forget_speech(self) -> None:
        """A wake word was heard: the speech in progress is over for the segmenter (the
        model's state goes on: it is only context)."""
        self.segmenter.forget_speech()

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        """Feed the next chunk; return speech start / stop events it completes.

        Cancelling abandons the chunk (frames already handed to the batcher are still run:
        the stream's state moves on as if they had been heard).
        """
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) % 2:
            pcm, self._carry = pcm[:-1], pcm[-1:]
        self._pending += self._resampler.process(pcm)
        count = len(self._pending) // _FRAME_BYTES
        if count == 0:  # less than a model frame so far: nothing to wait for
            return []
        raw = bytes(self._pending[: count * _FRAME_BYTES])
        del self._pending[: count * _FRAME_BYTES]
        levels, blocks = frame_levels(raw, FRAME)
        probabilities = [0.0] * count  # frames the gate skips are silence
        audio = self._recent + raw
        offset = len(self._recent) // _FRAME_BYTES
        scored = 0
        follows = offset if self._in_step else -1  # the frame the stream's context leads into
        for first, stop, preroll in self._gate.plan(levels):
            start = offset + first
            if start != follows and start > 0:  # frames went by unscored
                self._stream.set_context(audio[(start - 1) * _FRAME_BYTES : start * _FRAME_BYTES])
            run = audio[start * _FRAME_BYTES : (offset + stop) * _FRAME_BYTES]
            probabilities[first + preroll : stop] = (
                await self._batcher.probabilities(self._stream, run)
            )[preroll:]
            scored += stop - first - preroll
            follows = offset + stop
        self._in_step = follows == offset + count
        self._batcher.note_skipped(count - scored)
        self._recent = audio[-(self._gate.preroll + 1) * _FRAME_BYTES :]
        return self.segmenter.push_many(probabilities, blocks)


@dataclass(frozen=True, slots=True)
class SileroVadStatistics:
    """What :meth:`SileroVad.statistics` reports: how well the sessions' frames batch."""

    batches: int
    """Batches run (one or more model calls each: one per frame of its longest chunk)."""
    chunks: int
    """Session chunks that went through them."""
    frames: int
    """512-sample frames scored."""
    largest_batch: int
    """The most chunks in one batch."""
    skipped: int = 0
    """512-sample frames the energy gate spared the model (counted as silence)."""


@dataclass(slots=True)
class _Batch:
    work: list[tuple[SileroStream, bytes]] = field(default_factory=list)
    results: list[list[float]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)


class _Batcher:
    """Runs the frames of every session that has some in the same scheduler tick together.

    No background task: the first caller of a tick leads the batch. It yields once (every
    other runnable session adds its frames meanwhile), waits for the previous batch to leave
    the worker thread (more frames join meanwhile), closes the batch, runs it in the worker
    thread and wakes the others. The leader finishes the batch it leads even when its own
    session is cancelled (shielded; bounded by two batches of work), since the other sessions
    wait for it.
    """

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self._open: _Batch | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._batches = self._chunks = self._frames = self._largest = self._skipped = 0

    def statistics(self) -> SileroVadStatistics:
        return SileroVadStatistics(
            self._batches, self._chunks, self._frames, self._largest, self._skipped
        )

    def note_skipped(self, frames: int) -> None:
        """Count frames the energy gate kept from the model."""
        self._skipped += frames

    async def probabilities(self, stream: SileroStream, pcm: bytes) -> list[float]:
        """The speech probability of each 512-sample frame of ``pcm`` (16 kHz PCM16, whole
        frames) for ``stream``, in order."""
        batch = self._open
        if batch is not None:  # follow: the leader runs our frames with its own
            index = len(batch.work)
            batch.work.append((stream, pcm))
            await batch.done.wait()
            if len(batch.results) <= index:
                raise RuntimeError("the Silero VAD batch this chunk was in failed")
            return batch.results[index]
        batch = self._open = _Batch()
        batch.work.append((stream, pcm))
        try:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()
                async with self._limiter:
                    self._open = None
                    rows = sum(len(pcm) for _, pcm in batch.work) // _FRAME_BYTES
                    self._batches += 1
                    self._chunks += len(batch.work)
                    self._frames += rows
                    self._largest = max(self._largest, len(batch.work))
                    batch.results = await trio.to_thread.run_sync(_score, self._model, batch.work)
        finally:
            if self._open is batch:  # pragma: no cover - only if the shielded code raised
                self._open = None
            batch.done.set()
        await trio.lowlevel.checkpoint_if_cancelled()
        return batch.results[0]


def _score(model: SileroModel, work: Sequence[tuple[SileroStream, bytes]]) -> list[list[float]]:
    """Run in the worker thread: PCM16 to float frames, then one batched model run."""
    return model.probabilities_batch(
        [(stream, pcm16_to_float(pcm).reshape(-1, FRAME)) for stream, pcm in work]
    )


def _segmenter_for(options: SileroVadOptions) -> SpeechSegmenter:
    try:
        return SpeechSegmenter(
            threshold=options.threshold,
            neg_threshold=options.neg_threshold,
            min_speech_ms=options.min_speech_ms,
            min_silence_ms=options.min_silence_ms,
            pause_ms=options.pause_ms,
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
