"""The codebase's own rules: a pinned public API, one-way layers, types and lint clean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scaivoice.engine

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = {
    "engine": "engine",
    "backends": "backends",
    "plugins": "plugins",
    "conformance": "conformance",
}

PUBLIC_API = {
    "API_VERSION",
    "AudioChunk",
    "AuthError",
    "Backend",
    "BackendError",
    "BackendKind",
    "BackendOptions",
    "BackendProtocolError",
    "BackendRejected",
    "BackendSpec",
    "BackendTimeout",
    "BackendUnavailable",
    "ChatMessage",
    "ConfigError",
    "FeatureEvent",
    "FeatureSession",
    "FeatureSpec",
    "Forbidden",
    "LlmBackend",
    "LlmCapabilities",
    "LlmRequest",
    "LoadedPlugin",
    "NormaliseRequest",
    "NormaliserBackend",
    "NormaliserCapabilities",
    "PluginContractError",
    "PluginError",
    "PluginHost",
    "PluginLoadError",
    "ProtocolViolation",
    "ScaiVoiceError",
    "SentenceChunker",
    "SessionClosed",
    "SessionError",
    "SessionFeature",
    "SpeechStarted",
    "SpeechStopped",
    "StreamResampler",
    "SttBackend",
    "SttCapabilities",
    "SttRequest",
    "Transcript",
    "TtsBackend",
    "TtsCapabilities",
    "TtsRequest",
    "Unauthorized",
    "Voice",
    "WakeDetected",
    "Word",
    "float_to_pcm16",
    "hookimpl",
    "hookspec",
    "pcm16_to_float",
    "resample_pcm16",
    "IdentityProvider",
    "IdentityProviderSpec",
    "Principal",
    "PERMISSION_USE",
    "PERMISSION_ADMIN",
}


def test_the_public_api_is_pinned() -> None:
    exported = {name for name in vars(scaivoice.engine) if not name.startswith("_")}
    exported -= {"client", "testing", "cli"}  # submodules, imported lazily by their users
    assert exported == PUBLIC_API


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module if node.level == 0 else "." * node.level + node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


@pytest.mark.parametrize("folder", ["backends", "plugins", "conformance"])
def test_backends_and_plugins_use_only_the_engines_public_api(folder: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / folder).rglob("*.py")
        for name in _imports(path)
        if name.startswith("scaivoice.engine._")
    ]
    assert not offenders


def test_the_engine_never_imports_backends_or_plugins() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "engine").rglob("*.py")
        for name in _imports(path)
        if name.startswith(("scaivoice.backends", "scaivoice.plugins"))
    ]
    assert not offenders


def _namespace_tree(tmp_path: Path) -> Path:
    """A ``scaivoice`` package made of links to the source folders (as the install maps them)."""
    package = tmp_path / "scaivoice"
    package.mkdir()
    for name, folder in SOURCE_DIRS.items():
        (package / name).symlink_to(ROOT / folder, target_is_directory=True)
    return tmp_path


def test_types_check_strictly(tmp_path: Path) -> None:
    tree = _namespace_tree(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--namespace-packages",
            "--explicit-package-bases",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "-p",
            "scaivoice.engine",
            "-p",
            "scaivoice.backends",
            "-p",
            "scaivoice.plugins",
            "-p",
            "scaivoice.conformance",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_is_clean() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "engine",
            "backends",
            "plugins",
            "conformance",
            "tests",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
