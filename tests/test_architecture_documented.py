"""docs/architecture.md's tree is the source tree: every module it names exists, and the folders
it lists module by module (the engine's sub-packages, backends/, plugins/) list every module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
_ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.]+/|[\w.]+\.py)(?:\s|$)")


def _tree() -> list[str]:
    """The paths of the tree block (folders end with ``/``), from its indentation."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("## The tree", 1)[1].split("```\n", 2)[1]
    paths: list[str] = []
    stack: list[str] = []
    for line in block.splitlines():
        match = _ENTRY.match(line)
        if match is None:
            continue  # a description's second line
        depth = len(match["indent"]) // 2
        del stack[depth:]
        paths.append("".join(stack) + match["name"])
        if match["name"].endswith("/"):
            stack.append(match["name"])
    return paths


def test_the_tree_is_read() -> None:
    paths = _tree()
    assert "engine/_session/runner.py" in paths
    assert "backends/whisper.py" in paths
    assert "conformance/bench/" in paths


def test_every_module_the_tree_names_exists() -> None:
    missing = [p for p in _tree() if p.endswith(".py") and not (ROOT / p).is_file()]
    assert not missing


@pytest.mark.parametrize(
    "folder",
    [
        "engine",
        "engine/_contract",
        "engine/_host",
        "engine/_session",
        "engine/_server",
        "engine/_realtime",
        "engine/_voicenotes",
        "engine/_wyoming",
        "backends",
        "plugins",
    ],
)
def test_the_tree_lists_every_module_of(folder: str) -> None:
    listed = {
        p
        for p in _tree()
        if p.endswith(".py") and p.rsplit("/", 1)[0] == folder and not p.endswith("__init__.py")
    }
    present = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / folder).glob("*.py")
        if path.name != "__init__.py"
    }
    assert listed == present
