"""The codebase's own rules: a pinned public API, one-way layers, types and lint clean."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import traceback
from pathlib import Path

import pytest
import trio
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import scaivoice.engine

from .conftest import SLOW_TEST_TIMEOUT_S, TRIO_TIME_LIMIT, with_time_limit

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = {
    "engine": "engine",
    "backends": "backends",
    "plugins": "plugins",
    "conformance": "conformance",
}

PUBLIC_API = {
    "ArgumentsInvalid",
    "SchemaInvalid",
    "check_parameters_schema",
    "parse_arguments",
    "result_text",
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
    "ToolCall",
    "ToolContext",
    "ToolDefinition",
    "ToolFailed",
    "ToolHandler",
    "ToolProvider",
    "ToolSpec",
    "SessionFeature",
    "SpeechPaused",
    "SpeechResumed",
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
    # who is speaking (features)
    "DiarizedSegment",
    "EnrolledSpeaker",
    "EnrolmentRejected",
    "RecordingDiarizer",
    "SessionContext",
    "SpeakerDirectory",
    "TranscribedSpan",
    "TurnSpeaker",
    # embedding the engine
    "AudioDecodeError",
    "CloseCode",
    "Engine",
    "EngineConfig",
    "HttpProblem",
    "LimitExceeded",
    "RunningServer",
    "Transport",
    "config_from_mapping",
    "hash_key",
    "load_config",
    "new_key",
    "serve",
}


def test_the_public_api_is_pinned() -> None:
    exported = {name for name in vars(scaivoice.engine) if not name.startswith("_")}
    exported -= {"client", "frames", "testing", "cli"}  # public submodules
    assert exported == PUBLIC_API


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module if node.level == 0 else "." * node.level + node.module)
        elif isinstance(node, ast.ImportFrom):  # from .. import _host: the names are modules
            names += ["." * node.level + alias.name for alias in node.names]
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


#: The engine's layers, top to bottom: server -> session -> host -> contract -> frames, errors,
#: audio. A part may import the parts below it, never one above it.
LAYERING = {
    "_realtime": {"_server"},
    "_session": {"_server", "_realtime"},
    "_host": {"_session", "_server"},
    "_contract": {"_session", "_host", "_server"},
    "frames": {"_contract", "_session", "_host", "_server"},
    "_errors": {"_contract", "_session", "_host", "_server", "frames"},
    "_audio": {"_contract", "_session", "_host", "_server", "frames"},
}


def _engine_parts(path: Path) -> set[str]:
    """The parts of the engine (``_host``, ``frames`` ...) a module of the engine imports."""
    package = ["scaivoice", *path.relative_to(ROOT).parts[:-1]]
    parts: set[str] = set()
    for name in _imports(path):
        level = len(name) - len(name.lstrip("."))
        base = package[: len(package) - level + 1] if level else []
        absolute = [*base, *name[level:].split(".")]
        if absolute[:2] == ["scaivoice", "engine"] and len(absolute) > 2:
            parts.add(absolute[2])
    return parts


@pytest.mark.parametrize("part", sorted(LAYERING))
def test_the_engines_layers_import_only_downwards(part: str) -> None:
    folder = ROOT / "engine" / part
    paths = sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]
    assert paths and all(path.exists() for path in paths)
    offenders = [
        f"{path.relative_to(ROOT)} imports {above}"
        for path in paths
        for above in sorted(_engine_parts(path) & LAYERING[part])
    ]
    assert not offenders


def test_the_layering_check_resolves_relative_imports() -> None:
    assert _engine_parts(ROOT / "engine" / "_session" / "runner.py") >= {"_host", "frames"}
    assert "_contract" in _engine_parts(ROOT / "engine" / "testing.py")


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


def _pins() -> dict[str, list[Requirement]]:
    """``constraints.txt``: every pin by normalised name (a universal lock may fork by marker)."""
    pins: dict[str, list[Requirement]] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            pin = Requirement(line)
            pins.setdefault(canonicalize_name(pin.name), []).append(pin)
    return pins


def test_every_requirement_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for extra in project["optional-dependencies"].values() for r in extra
    ]
    pins = _pins()
    assert all(
        len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "=="
        for versions in pins.values()
        for pin in versions
    ), "constraints.txt pins exact versions"
    problems = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == "scaivoice":
            continue  # an extra that names others
        here = [p for p in pins.get(name, []) if p.marker is None or p.marker.evaluate()]
        if not here:
            problems.append(f"{requirement.name}: not pinned")
        for pin in here:
            version = next(iter(pin.specifier)).version
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{requirement.name}: {version} outside {requirement.specifier}")
    assert not problems, f"{problems}: run .ci/lock (docs/operator-guide.md, Pinned versions)"


def test_ci_runs_the_readmes_commands_with_the_pins() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^pip install .*$", readme, flags=re.MULTILINE)
    assert len(commands) == 2, commands
    assert all(c.startswith("pip install -c constraints.txt ") for c in commands), commands
    test_command = commands[1]
    assert test_command.endswith("&& python -m pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert f"{test_command} || status=$?" in ci_lines


# --------------------------------------------------------------------------- time limits


def test_every_test_has_a_time_limit(request: pytest.FixtureRequest) -> None:
    """pytest-timeout for every test, and a trio limit on every async test collected."""
    config = request.config
    assert float(config.getini("timeout")) > 0, "pyproject.toml: [tool.pytest.ini_options] timeout"
    assert config.getini("timeout_method") == "signal"  # fails the test; "thread" ends the run
    unlimited = [
        item.nodeid
        for item in request.session.items
        if item.get_closest_marker("trio") and not item.stash.get(TRIO_TIME_LIMIT, 0) > 0
    ]
    assert not unlimited, "tests/conftest.py wraps every trio test in a time limit"


async def test_this_trio_test_runs_under_half_its_timeout(request: pytest.FixtureRequest) -> None:
    assert request.node.stash[TRIO_TIME_LIMIT] == float(request.config.getini("timeout")) / 2


@pytest.mark.slow
async def test_slow_tests_get_the_slow_limit(request: pytest.FixtureRequest) -> None:
    assert request.node.stash[TRIO_TIME_LIMIT] == SLOW_TEST_TIMEOUT_S / 2


async def test_a_hung_trio_test_fails_with_too_slow_error_naming_the_await() -> None:
    never = trio.Event()

    async def hangs() -> None:
        await never.wait()

    with pytest.raises(trio.TooSlowError, match=r"ran past its time limit of 0\.05 s") as info:
        await with_time_limit(hangs, 0.05)()
    cause = info.value.__cause__
    assert isinstance(cause, trio.Cancelled)
    assert "never.wait()" in "".join(traceback.format_tb(cause.__traceback__))


async def test_a_test_within_its_limit_is_untouched() -> None:
    async def fails() -> None:
        await trio.lowlevel.checkpoint()
        raise LookupError("its own failure")

    with pytest.raises(LookupError, match="its own failure"):
        await with_time_limit(fails, 5)()
