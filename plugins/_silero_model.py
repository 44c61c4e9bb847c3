"""The Silero VAD ONNX model: one shared onnxruntime session, one small state per stream.

The model (MIT, shipped in ``data/`` with its licence) takes 512 samples at 16 kHz plus the 64
samples before them and a (2, 1, 128) recurrent state, and returns the speech probability of the
frame and the next state. ``onnxruntime.InferenceSession.run`` is thread-safe, so one session
serves every stream; the state and context are per stream.

Importing this module does not import onnxruntime; :meth:`SileroModel.load` does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime  # type: ignore[import-untyped]

__all__ = ["CONTEXT", "FRAME", "SAMPLE_RATE", "SileroModel", "SileroStream"]

SAMPLE_RATE = 16000
FRAME = 512
CONTEXT = 64


class SileroModel:
    """A loaded Silero VAD model (one per process is enough)."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session

    @classmethod
    def load(cls, path: Path | None = None) -> SileroModel:
        """Load ``path``, or the bundled ``silero_vad.onnx``, on one CPU thread (blocking).

        Raises:
            ImportError: onnxruntime is not installed.
            OSError / onnxruntime errors: the file is missing or not a model.
        """
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        model: bytes | str
        if path is None:
            model = (
                resources.files(__package__ or "scaivoice.plugins")
                .joinpath("data", "silero_vad.onnx")
                .read_bytes()
            )
        else:
            model = str(path)
        session = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        return cls(session)

    def stream(self) -> SileroStream:
        """Fresh per-stream state."""
        return SileroStream(self._session)


class SileroStream:
    """The recurrent state of one audio stream. Use from one thread at a time."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)
        self._rate = np.array(SAMPLE_RATE, np.int64)

    def probabilities(self, frames: npt.NDArray[np.float32]) -> list[float]:
        """Speech probability of each row of ``frames`` (shape ``(n, 512)``, float32, 16 kHz)."""
        out: list[float] = []
        for frame in frames:
            x = np.concatenate([self._context, frame.reshape(1, FRAME)], axis=1)
            prob, self._state = self._session.run(
                None, {"input": x, "state": self._state, "sr": self._rate}
            )
            self._context = x[:, -CONTEXT:]
            out.append(float(prob[0, 0]))
        return out
