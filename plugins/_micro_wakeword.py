"""microWakeWord keyword models on the TensorFlow Lite C library that pymicro-wakeword ships.

The ``pymicro-wakeword`` wheel (Apache-2.0) carries four streaming keyword models
(``okay_nabu``, ``hey_jarvis``, ``alexa``, ``hey_mycroft``: a ``.tflite`` file of 50-80 KB and a
JSON description each) and ``libtensorflowlite_c``; ``pymicro-features`` computes their input,
40 log-mel features every 10 ms. This module uses the package's files, not its Python classes:
those load the model file and the library again for every detector, while here a model is
loaded once per process and shared.

- :class:`TfLite`: a ctypes binding of the dozen C calls used.
- :class:`KeywordModel`: one keyword's flatbuffer (``TfLiteModel``, read-only, shared by every
  session) and its settings: the probability cutoff and the length of the averaging window.
- :class:`KeywordDetector`: one session's interpreter of one keyword. The models are
  *streaming*: their recurrent state lives in the interpreter's variables, so each session has
  its own interpreter over the shared model (with the frontend, about 160 KB and 0.2 ms to
  create a session for one keyword; 390 KB and 0.7 ms for four).
- :class:`Frontend`: one session's feature extractor (16 kHz PCM16 in, feature rows out).

An interpreter runs every ``stride`` (3) feature rows, that is every 30 ms of audio, and costs
about 0.05 ms; the features cost about 0.01 ms per 10 ms. That is far below what a worker thread
hand-off costs, so the feature runs them inline (see :mod:`scaivoice.plugins.wake_word`).

Importing this module imports neither package; :func:`load_library` and :class:`Frontend` do.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUILTIN_KEYWORDS",
    "FEATURES",
    "SAMPLE_RATE",
    "STEP_MS",
    "STEP_SAMPLES",
    "WINDOW_MS",
    "Frontend",
    "KeywordConfig",
    "KeywordDetector",
    "KeywordModel",
    "TfLite",
    "bundled_config",
    "load_library",
    "read_config",
]

SAMPLE_RATE = 16000
STEP_SAMPLES = 160
"""The frontend's step: one feature row per 10 ms of audio."""
STEP_MS = 10
WINDOW_MS = 30
"""The audio behind one feature row: the 30 ms before its time."""
FEATURES = 40
"""Features in a row."""
BUILTIN_KEYWORDS = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")
"""The keywords pymicro-wakeword 2.5 ships (its ``models/`` folder)."""
_PACKAGE = "pymicro_wakeword"
_INT8, _UINT8 = 9, 3  # TfLiteType
_DTYPES: dict[int, type[np.integer[Any]]] = {_INT8: np.int8, _UINT8: np.uint8}


def _package_dir() -> Path:
    """pymicro-wakeword's folder, found without importing it.

    Raises:
        ImportError: the package is not installed.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{_PACKAGE} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class _QuantizationParams(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


class TfLite:
    """The calls of the TensorFlow Lite C API that running a keyword model needs."""

    def __init__(self, path: Path) -> None:
        mode = os.RTLD_GLOBAL if sys.platform != "win32" else ctypes.DEFAULT_MODE
        lib = ctypes.CDLL(str(path), mode=mode)
        p, i32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
        signatures: dict[str, tuple[list[Any], Any]] = {
            "TfLiteModelCreateFromFile": ([ctypes.c_char_p], p),
            "TfLiteModelDelete": ([p], None),
            "TfLiteInterpreterOptionsCreate": ([], p),
            "TfLiteInterpreterOptionsSetNumThreads": ([p, i32], None),
            "TfLiteInterpreterOptionsDelete": ([p], None),
            "TfLiteInterpreterCreate": ([p, p], p),
            "TfLiteInterpreterDelete": ([p], None),
            "TfLiteInterpreterAllocateTensors": ([p], ctypes.c_int),
            "TfLiteInterpreterInvoke": ([p], ctypes.c_int),
            "TfLiteInterpreterGetInputTensor": ([p, i32], p),
            "TfLiteInterpreterGetOutputTensor": ([p, i32], p),
            "TfLiteTensorType": ([p], i32),
            "TfLiteTensorNumDims": ([p], i32),
            "TfLiteTensorDim": ([p, i32], i32),
            "TfLiteTensorByteSize": ([p], size),
            "TfLiteTensorQuantizationParams": ([p], _QuantizationParams),
            "TfLiteTensorCopyFromBuffer": ([p, p, size], ctypes.c_int),
            "TfLiteTensorCopyToBuffer": ([p, p, size], ctypes.c_int),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
        self.lib = lib
        self.path = path


def load_library() -> TfLite:
    """Load the ``libtensorflowlite_c`` inside pymicro-wakeword (blocking).

    Raises:
        ImportError: pymicro-wakeword is not installed.
        OSError: the library is missing or does not load on this platform.
    """
    folder = _package_dir() / "lib"
    found = sorted(folder.glob("*tensorflowlite_c.*"))
    if not found:
        raise OSError(
            f"no libtensorflowlite_c in {folder} (pymicro-wakeword has none for this platform)"
        )
    return TfLite(found[0])


@dataclass(frozen=True, slots=True)
class KeywordConfig:
    """A microWakeWord model's description (its JSON file).

    Attributes:
        name: the keyword's name (the JSON file's name without ``.json``: ``"hey_jarvis"``).
        phrase: what is said (``"Hey Jarvis"``).
        model_path: the ``.tflite`` file.
        cutoff: the averaged probability above which the keyword was said.
        window: how many probabilities (one per 30 ms) are averaged.
        languages: the languages it was trained on.
    """

    name: str
    phrase: str
    model_path: Path
    cutoff: float
    window: int
    languages: tuple[str, ...] = ()


def read_config(path: Path) -> KeywordConfig:
    """Read a microWakeWord JSON description (``"type": "micro"``, version 2).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a microWakeWord description.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        micro = data["micro"]
        return KeywordConfig(
            name=path.stem,
            phrase=str(data.get("wake_word", path.stem)),
            model_path=path.parent / str(data["model"]),
            cutoff=float(micro["probability_cutoff"]),
            window=int(micro["sliding_window_size"]),
            languages=tuple(str(x) for x in data.get("trained_languages", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a microWakeWord model description: {exc!r}") from exc


def bundled_config(name: str) -> Path:
    """The JSON description of the bundled keyword ``name``.

    Raises:
        ImportError: pymicro-wakeword is not installed.
    """
    return _package_dir() / "models" / f"{name}.json"


class _Handle:
    """Owns a C object; frees it when the last Python reference goes."""

    def __init__(self, pointer: int, free: Any, *keep: object) -> None:
        self.pointer = pointer
        self._keep = keep  # what must outlive this object (an interpreter's model)
        self._finalizer = weakref.finalize(self, free, pointer)


class KeywordModel:
    """One keyword's model, loaded once and shared by every session's detector."""

    def __init__(self, tflite: TfLite, config: KeywordConfig) -> None:
        """Load the model file (blocking) and read its tensors' layout.

        Raises:
            OSError: the file cannot be loaded as a TensorFlow Lite model.
            ValueError: its tensors are not the int8 / uint8 ones a microWakeWord model has.
        """
        lib = tflite.lib
        self.tflite = tflite
        self.config = config
        pointer = lib.TfLiteModelCreateFromFile(str(config.model_path).encode())
        if not pointer:
            raise OSError(f"cannot load the TensorFlow Lite model {config.model_path}")
        self._model = _Handle(pointer, lib.TfLiteModelDelete)
        probe = self.detector()  # read the layout from a first interpreter
        self.stride = probe.stride

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def lookback_ms(self) -> int:
        """The audio behind one probability: its ``stride`` rows and their windows."""
        return self.stride * STEP_MS + WINDOW_MS - STEP_MS

    def detector(self) -> KeywordDetector:
        """A fresh detector (its own interpreter and state) over the shared model. No I/O."""
        return KeywordDetector(self.tflite, self._model)


class KeywordDetector:
    """One session's interpreter of one keyword model: feature rows in, probabilities out."""

    def __init__(self, tflite: TfLite, model: _Handle) -> None:
        lib = self._lib = tflite.lib
        options = lib.TfLiteInterpreterOptionsCreate()
        lib.TfLiteInterpreterOptionsSetNumThreads(options, 1)
        try:
            pointer = lib.TfLiteInterpreterCreate(model.pointer, options)
        finally:
            lib.TfLiteInterpreterOptionsDelete(options)
        if not pointer:
            raise OSError("TfLiteInterpreterCreate failed")
        self._interpreter = _Handle(pointer, lib.TfLiteInterpreterDelete, model)
        if lib.TfLiteInterpreterAllocateTensors(pointer) != 0:
            raise OSError("TfLiteInterpreterAllocateTensors failed")
        self._input = lib.TfLiteInterpreterGetInputTensor(pointer, 0)
        self._output = lib.TfLiteInterpreterGetOutputTensor(pointer, 0)
        if not self._input or not self._output:
            raise ValueError("the model has no input or output tensor")
        in_type, out_type = lib.TfLiteTensorType(self._input), lib.TfLiteTensorType(self._output)
        if in_type not in _DTYPES or out_type not in _DTYPES:
            raise ValueError(f"unsupported tensor types (input {in_type}, output {out_type})")
        dims = [
            lib.TfLiteTensorDim(self._input, i) for i in range(lib.TfLiteTensorNumDims(self._input))
        ]
        if len(dims) != 3 or dims[0] != 1 or dims[2] != FEATURES:
            raise ValueError(f"unexpected input shape {dims}")
        self.stride: int = dims[1]
        """Feature rows per model call."""
        quant_in = lib.TfLiteTensorQuantizationParams(self._input)
        quant_out = lib.TfLiteTensorQuantizationParams(self._output)
        self._in_scale, self._in_zero = float(quant_in.scale), int(quant_in.zero_point)
        self._out_scale, self._out_zero = float(quant_out.scale), int(quant_out.zero_point)
        in_dtype = _DTYPES[in_type]
        info = np.iinfo(in_dtype)
        self._in_dtype, self._in_range = in_dtype, (info.min, info.max)
        self._out = np.empty(lib.TfLiteTensorByteSize(self._output), dtype=_DTYPES[out_type])
        self._pending: list[npt.NDArray[np.float32]] = []

    def push(self, rows: npt.NDArray[np.float32]) -> Iterator[tuple[int, float]]:
        """Feed feature rows (shape ``(n, 40)``); yield ``(row index, probability)`` for each
        model call they complete: the row that completed it, and the keyword's probability."""
        lib = self._lib
        pointer = self._interpreter.pointer
        for index in range(len(rows)):
            self._pending.append(rows[index])
            if len(self._pending) < self.stride:
                continue
            block = np.stack(self._pending)
            self._pending.clear()
            quantized = np.clip(
                np.round(block / self._in_scale + self._in_zero), *self._in_range
            ).astype(self._in_dtype)
            lib.TfLiteTensorCopyFromBuffer(
                self._input, quantized.ctypes.data_as(ctypes.c_void_p), quantized.nbytes
            )
            lib.TfLiteInterpreterInvoke(pointer)
            lib.TfLiteTensorCopyToBuffer(
                self._output, self._out.ctypes.data_as(ctypes.c_void_p), self._out.nbytes
            )
            yield index, (float(self._out[0]) - self._out_zero) * self._out_scale


class Frontend:
    """One stream's feature extractor (pymicro-features): 16 kHz PCM16 in, feature rows out.

    Raises:
        ImportError: pymicro-features is not installed.
    """

    def __init__(self) -> None:
        from pymicro_features import MicroFrontend  # type: ignore[import-untyped]

        self._frontend = MicroFrontend()
        self._buffer = b""
        self.samples = 0
        """Samples consumed so far."""

    def process(self, pcm: bytes) -> tuple[npt.NDArray[np.float32], list[int]]:
        """Consume ``pcm`` (whole samples); return the feature rows it completes and, for each,
        the number of samples consumed when it was computed (its end in the stream)."""
        buffer = self._buffer + pcm if self._buffer else pcm
        step = STEP_SAMPLES * 2
        rows: list[list[float]] = []
        ends: list[int] = []
        offset = 0
        while offset + step <= len(buffer):
            result = self._frontend.process_samples(buffer[offset : offset + step])
            offset += result.samples_read * 2
            self.samples += result.samples_read
            if result.features:
                rows.append(result.features)
                ends.append(self.samples)
        self._buffer = buffer[offset:]
        if not rows:
            return np.empty((0, FEATURES), np.float32), ends
        return np.asarray(rows, dtype=np.float32), ends
