"""Running every check of a backend's kind (or of a server skill) and collecting a
:class:`BackendReport`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import trio

from scaivoice.engine import (
    Backend,
    BackendKind,
    BackendSpec,
    ConfigError,
    PluginHost,
    ToolSpec,
)

from ._checks_llm import LLM_CHECKS
from ._checks_normaliser import NORMALISER_CHECKS
from ._checks_stt import STT_CHECKS
from ._checks_tool import TOOL_CHECKS, ToolSubject
from ._checks_tts import TTS_CHECKS
from ._drive import describe_error
from ._kit import Check, KitConfig, Subject, backend_kind, capabilities_of
from ._report import BackendReport, CheckResult, CheckStatus
from ._speech import SpeechFixtures, render_speech

__all__ = [
    "CHECKS",
    "check_installed_backend",
    "check_installed_tool",
    "checks_for",
    "find_backend",
    "run_backend_checks",
    "run_tool_checks",
]

#: Every check, by backend kind, in the order they run.
CHECKS: Mapping[BackendKind, tuple[Check[Any], ...]] = {
    "stt": STT_CHECKS,
    "llm": LLM_CHECKS,
    "tts": TTS_CHECKS,
    "normaliser": NORMALISER_CHECKS,
}

_KINDS: tuple[BackendKind, ...] = ("stt", "llm", "tts", "normaliser")


def checks_for(kind: BackendKind) -> tuple[Check[Any], ...]:
    """The checks a backend of ``kind`` gets."""
    return CHECKS[kind]


async def run_backend_checks(
    factory: Callable[[], Backend],
    *,
    config: KitConfig | None = None,
    speech: SpeechFixtures | None = None,
    spec: BackendSpec | None = None,
    only: Collection[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> BackendReport:
    """Run the contract checks of the backend ``factory`` makes, one after the other.

    One instance is opened and shared by the checks; those that need fresh instances (closing
    twice, counting leaks over a whole lifetime) call ``factory`` again. ``factory`` must do
    no I/O (a spec's factory with its options bound, or ``lambda: MyTts(MyTts.Options())``).

    Args:
        config: thresholds (default: the contract's).
        speech: speech for STT checks; rendered with hibari (or synthesised) when omitted.
        spec: the spec the backend came from, to check it agrees with the backend.
        only: run only the checks of these names (``"tts.streaming"``).
        options: recorded in the report (the options ``factory`` applies).

    Returns:
        The report; a backend whose ``open`` fails gets every check failed.

    Cancelling abandons the run (the shared instance is closed, shielded).
    """
    config = config or KitConfig()
    start = trio.current_time()
    backend = factory()
    kind = backend_kind(backend)
    checks = [c for c in CHECKS[kind] if only is None or c.name in only]
    if kind == "stt" and speech is None:
        speech = await render_speech()
    results: list[CheckResult] = []
    try:
        await backend.open()
    except Exception as exc:
        detail = f"the backend could not be opened: {describe_error(exc)}"
        results = [CheckResult(c.name, CheckStatus.FAILED, detail, 0.0) for c in checks]
    else:
        try:
            subject = Subject(backend, factory, config=config, speech=speech, spec=spec)
            for check in checks:
                results.append(await check(subject))
        finally:
            with trio.move_on_after(config.check_timeout_s, shield=True) as scope:
                closed_at = trio.current_time()
                try:
                    await backend.aclose()
                except Exception as exc:
                    results.append(
                        CheckResult(
                            f"{kind}.aclose_after_checks",
                            CheckStatus.FAILED,
                            f"aclose raised {describe_error(exc)}",
                            trio.current_time() - closed_at,
                        )
                    )
            if scope.cancelled_caught:
                results.append(
                    CheckResult(
                        f"{kind}.aclose_after_checks",
                        CheckStatus.FAILED,
                        f"aclose did not return within {config.check_timeout_s:g} s",
                        trio.current_time() - closed_at,
                    )
                )
    return BackendReport(
        backend=backend.name or type(backend).__name__,
        kind=kind,
        capabilities=_fields(capabilities_of(backend)),
        results=tuple(results),
        duration_s=trio.current_time() - start,
        speech=speech.source if speech is not None and kind == "stt" else None,
        options=dict(options or {}),
    )


def find_backend(host: PluginHost, name: str, *, kind: BackendKind | None = None) -> BackendSpec:
    """The spec of the backend called ``name`` among the host's plugins.

    Raises:
        ConfigError: no backend has that name, or several kinds do and ``kind`` is not given.
    """
    found = [
        spec
        for k in _KINDS
        if kind is None or k == kind
        for n, spec in host.backend_specs(k).items()
        if n == name
    ]
    if not found:
        known = sorted({n for k in _KINDS for n in host.backend_specs(k)})
        raise ConfigError(f"no backend named {name!r}; installed: {', '.join(known) or 'none'}")
    if len(found) > 1:
        kinds = ", ".join(spec.kind for spec in found)
        raise ConfigError(f"{name!r} names backends of several kinds ({kinds}): choose a kind")
    return found[0]


async def check_installed_backend(
    host: PluginHost,
    name: str,
    *,
    kind: BackendKind | None = None,
    options: Mapping[str, Any] | None = None,
    config: KitConfig | None = None,
    speech: SpeechFixtures | None = None,
) -> BackendReport:
    """Run the contract checks against the installed backend ``name``, made with ``options``.

    Raises:
        ConfigError: unknown backend, ambiguous name, or options the backend rejects.
    """
    spec = find_backend(host, name, kind=kind)
    values = dict(options or {})
    spec.factory(values)  # validate the options now: a ConfigError, not a failed report

    def factory() -> Backend:
        return spec.factory(values)

    return await run_backend_checks(
        factory, config=config, speech=speech, spec=spec, options=values
    )


async def run_tool_checks(
    spec: ToolSpec,
    *,
    example_arguments: Mapping[str, Any],
    slow_arguments: Mapping[str, Any] | None = None,
    failing_arguments: Mapping[str, Any] | None = None,
    config: KitConfig | None = None,
    only: Collection[str] | None = None,
) -> BackendReport:
    """Run the contract checks of a server skill (a ``ToolSpec``), one after the other.

    Args:
        example_arguments: arguments the tool serves (valid against its schema).
        slow_arguments: arguments that make a call slow enough to cancel mid-way; without
            them, cancellation is checked at the start of a call only.
        failing_arguments: valid arguments the tool must refuse with ``ToolFailed``; without
            them, ``tool.errors`` is skipped.
        config: thresholds (default: the contract's; ``tool_cancel_deadline_s`` is 100 ms).
        only: run only the checks of these names (``"tool.cancellation"``).

    Returns:
        A report of kind ``"tool"`` named after the tool.

    Cancelling abandons the run (and the handler call in progress).
    """
    config = config or KitConfig()
    start = trio.current_time()
    subject = ToolSubject(
        spec,
        example_arguments=example_arguments,
        slow_arguments=slow_arguments,
        failing_arguments=failing_arguments,
        config=config,
    )
    results = [await c(subject) for c in TOOL_CHECKS if only is None or c.name in only]
    arguments = {"example_arguments": dict(example_arguments)}
    if slow_arguments is not None:
        arguments["slow_arguments"] = dict(slow_arguments)
    if failing_arguments is not None:
        arguments["failing_arguments"] = dict(failing_arguments)
    return BackendReport(
        backend=getattr(spec, "name", repr(spec)),
        kind="tool",
        capabilities={
            "permissions": tuple(sorted(getattr(spec, "permissions", ()))),
            "timeout_s": getattr(spec, "timeout_s", None),
        },
        results=tuple(results),
        duration_s=trio.current_time() - start,
        options=arguments,
    )


async def check_installed_tool(
    host: PluginHost,
    name: str,
    *,
    example_arguments: Mapping[str, Any],
    slow_arguments: Mapping[str, Any] | None = None,
    failing_arguments: Mapping[str, Any] | None = None,
    config: KitConfig | None = None,
) -> BackendReport:
    """Run the contract checks against the installed server skill ``name``.

    Raises:
        ConfigError: no plugin declares a tool of that name.
        PluginContractError: the host refuses the plugins' tools (a bad name or schema).
    """
    specs = host.tool_specs()
    if name not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise ConfigError(f"no tool named {name!r}; installed: {known}")
    return await run_tool_checks(
        specs[name],
        example_arguments=example_arguments,
        slow_arguments=slow_arguments,
        failing_arguments=failing_arguments,
        config=config,
    )


def _fields(record: object) -> dict[str, Any]:
    names = getattr(record, "__dataclass_fields__", {})
    return {name: getattr(record, name) for name in names}
