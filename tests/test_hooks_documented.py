"""Every hook is documented: a section of the plugin guide's hook reference per hookspec, each
with a complete example that implements the hook, runs, and prints what its comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from scaivoice.engine._contract import hooks

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _hookspecs() -> list[str]:
    manager = pluggy.PluginManager(hooks.PROJECT_NAME)
    return sorted(name for name in dir(hooks) if manager.parse_hookspec_opts(hooks, name))


HOOKSPECS = _hookspecs()


def _reference() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    assert "\n## Hook reference\n" in text, "the plugin guide has no hook reference"
    return text.split("\n## Hook reference\n", 1)[1].split("\n## ", 1)[0]


def _sections() -> dict[str, str]:
    """The hook reference's ``### `name``` sections, by name."""
    parts = re.split(r"^### `(\w+)`\s*$", _reference(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _example(section: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"expected one python example, found {len(blocks)}"
    return str(blocks[0])


def _expected_output(example: str) -> list[str]:
    """What the example's ``print`` calls print, as the comment after each one says
    (on the same line, or on the line right after it)."""
    lines = example.splitlines()
    expected: list[str] = []
    for index, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        comment = line.partition("  # ")[2]
        if not comment and index + 1 < len(lines) and lines[index + 1].lstrip().startswith("#"):
            comment = lines[index + 1].lstrip().removeprefix("#").strip()
        assert comment, f"say what this prints in a comment: {line.strip()}"
        expected.append(comment.strip())
    return expected


def test_the_hook_specifications_are_found() -> None:
    assert "scaivoice_tts_backends" in HOOKSPECS
    assert "scaivoice_identity_providers" in HOOKSPECS
    assert "hookimpl" not in HOOKSPECS and "PROJECT_NAME" not in HOOKSPECS


def test_the_reference_documents_exactly_the_hooks_there_are() -> None:
    assert sorted(_sections()) == HOOKSPECS
    count = _NUMBERS[len(HOOKSPECS)]
    assert f"ScaiVoice defines {count} hooks" in _reference()
    assert f"one or more of the {count} hooks" in GUIDE.read_text(encoding="utf-8")


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_each_hook_has_a_runnable_example(hook: str, tmp_path: Path) -> None:
    section = _sections().get(hook)
    assert section is not None, f"docs/plugins.md has no hook reference section for {hook}"
    assert "Added in" in " ".join(section.split()), f"say in which version {hook} was added"
    example = _example(section)
    assert re.search(rf"^@hookimpl\ndef {hook}\(", example, flags=re.MULTILINE), (
        f"the example for {hook} does not implement it"
    )
    script = tmp_path / f"{hook}.py"
    script.write_text(example, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == _expected_output(example)
