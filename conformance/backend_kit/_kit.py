"""The kit's frame: its settings, the backend under test, and what a check is.

A check is an async function of a :class:`Subject` that returns a one-line detail when the
contract holds and raises :class:`Failed` (or :class:`Skipped`) when it does not (or does not
apply). :func:`contract_check` wraps it into a :class:`Check`: calling that returns a
:class:`CheckResult`, skips the check when the capability it tests is not declared, times it,
and bounds it by ``KitConfig.check_timeout_s`` (:func:`run_check_body`, which the tool checks
share).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from scaivoice.engine import (
    Backend,
    BackendKind,
    BackendSpec,
    LlmBackend,
    NormaliserBackend,
    SttBackend,
    TtsBackend,
)

from ._report import CheckResult, CheckStatus
from ._speech import SpeechFixtures, render_speech

__all__ = [
    "Check",
    "Failed",
    "KitConfig",
    "Skipped",
    "Subject",
    "backend_kind",
    "capabilities_of",
    "contract_check",
    "open_subject",
    "require",
    "run_check_body",
]

B = TypeVar("B", bound=Backend)


@dataclass(frozen=True, slots=True)
class KitConfig:
    """The kit's thresholds. The defaults are the contract; loosen them only knowingly.

    Attributes:
        cancel_deadline_s: a cancelled call must return within this (barge-in budget).
        leak_grace_s: how long threads and tasks may take to wind down after a call returns
            or the backend closes before they count as leaked.
        check_timeout_s: a check still running after this fails (a hung backend). A backend
            that shields itself from cancellation cannot be stopped by it.
        concurrency: calls run at once by the concurrency checks.
        stt_pace: audio is fed at this multiple of real time where timing matters (interim
            results, streaming); 1.0 is a microphone.
        stt_chunk_ms: the size of the audio chunks fed to STT backends.
        check_content: also check *what* an STT backend hears (needs real speech, rendered
            with hibari-tts); otherwise only the structure of its results is checked.
        max_voices: at most this many listed voices are synthesised by ``tts.voices``.
        max_chunk_ms: the longest TTS chunk accepted (the contract asks for 20-250 ms).
        streaming_ratio: a streaming TTS's first chunk must arrive before this fraction of
            the time its last chunk takes.
        timing_resolution_s: a synthesis faster than this is too fast to tell streaming from
            batch; ``tts.streaming`` then passes and says so.
        tool_cancel_deadline_s: a cancelled server skill (a ``ToolSpec``'s handler) must
            return within this: the user interrupted, the engine waits for nothing.
        tool_timeout_s: the longest a tool's example call may take when its spec sets no
            ``timeout_s`` (the engine's default ``[tools] call_timeout_s``).
    """

    cancel_deadline_s: float = 2.0
    leak_grace_s: float = 2.0
    check_timeout_s: float = 120.0
    concurrency: int = 3
    stt_pace: float = 1.0
    stt_chunk_ms: int = 100
    check_content: bool = False
    max_voices: int = 10
    max_chunk_ms: float = 250.0
    streaming_ratio: float = 0.5
    timing_resolution_s: float = 0.05
    tool_cancel_deadline_s: float = 0.1
    tool_timeout_s: float = 10.0


class Failed(Exception):
    """Raised by a check body: the contract does not hold. The message is the detail."""


class Skipped(Exception):
    """Raised by a check body: the check does not apply. The message says why."""


def require(condition: bool, detail: str) -> None:
    """Raise :class:`Failed` with ``detail`` unless ``condition`` holds."""
    if not condition:
        raise Failed(detail)


def capabilities_of(backend: Backend) -> Any:
    """The capabilities record a backend declares (each kind's base class defines one)."""
    return getattr(backend, "capabilities", None)


def backend_kind(backend: Backend) -> BackendKind:
    """The kind of ``backend``, from the base class it derives from.

    Raises:
        TypeError: it is not an STT, LLM, TTS or normaliser backend.
    """
    if isinstance(backend, SttBackend):
        return "stt"
    if isinstance(backend, LlmBackend):
        return "llm"
    if isinstance(backend, TtsBackend):
        return "tts"
    if isinstance(backend, NormaliserBackend):
        return "normaliser"
    raise TypeError(f"{backend!r} is not an STT, LLM, TTS or normaliser backend")


class Subject(Generic[B]):
    """A backend under test: one opened instance shared by the checks, and its factory.

    Checks that need a fresh instance (closing it twice, counting threads around a whole
    lifetime) call :attr:`factory`; every other check uses :attr:`backend`.

    Attributes:
        backend: the shared instance, opened.
        factory: makes a new, unopened instance with the same options.
        config: the kit's thresholds.
        speech: speech for STT checks (``None`` for other kinds).
        spec: the spec the backend was made from, when it came from a plugin.
        memo: results a check may share with later checks of the same run (an expensive
            real-time transcription, for instance).
    """

    def __init__(
        self,
        backend: B,
        factory: Callable[[], B],
        *,
        config: KitConfig,
        speech: SpeechFixtures | None = None,
        spec: BackendSpec | None = None,
    ) -> None:
        self.backend = backend
        self.factory = factory
        self.config = config
        self.speech = speech
        self.spec = spec
        self.kind = backend_kind(backend)
        self.memo: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.backend.name or type(self.backend).__name__

    def require_speech(self) -> SpeechFixtures:
        if self.speech is None:
            raise Failed("the kit was given no speech fixtures for an STT check")
        return self.speech


@asynccontextmanager
async def open_subject(
    factory: Callable[[], B],
    *,
    config: KitConfig | None = None,
    speech: SpeechFixtures | None = None,
    spec: BackendSpec | None = None,
) -> AsyncIterator[Subject[B]]:
    """Make a backend with ``factory``, open it and yield it as a :class:`Subject`.

    For an STT backend without ``speech``, speech is rendered first (see
    :func:`~scaivoice.conformance.render_speech`). Cancelling abandons the open; the backend
    is closed (shielded) on the way out.

    Raises:
        BackendError: opening the backend failed (whatever ``open`` raised).
    """
    backend = factory()
    if isinstance(backend, SttBackend) and speech is None:
        speech = await render_speech()
    async with backend:
        yield Subject(backend, factory, config=config or KitConfig(), speech=speech, spec=spec)


Body = Callable[[Subject[B]], Awaitable[str]]


class Check(Generic[B]):
    """One contract check. ``await check(subject)`` returns a :class:`CheckResult`.

    Attributes:
        name: ``"<kind>.<check>"``.
        kind: the backend kind it applies to.
        requires: the capability field that must be declared (truthy) for the check to run,
            or ``None`` for checks every backend must pass.
        description: one line: what the check asserts.
    """

    def __init__(self, name: str, body: Body[B], *, requires: str | None) -> None:
        self.name = name
        self.kind = name.split(".", 1)[0]
        self.requires = requires
        self.description = _first_line(body.__doc__)
        self._body = body
        self.__doc__ = body.__doc__
        self.__name__ = getattr(body, "__name__", name)

    def __repr__(self) -> str:
        return f"<Check {self.name}>"

    async def __call__(self, subject: Subject[B]) -> CheckResult:
        """Run the check against ``subject``.

        Never raises for a backend's misbehaviour: that is a failed result. Cancelling the
        call cancels the check (and the backend call in progress).
        """
        if self.requires is not None:
            declared = getattr(capabilities_of(subject.backend), self.requires, None)
            if not declared:
                detail = f"{self.requires!r} is not declared"
                return CheckResult(self.name, CheckStatus.SKIPPED, detail, 0.0)
        return await run_check_body(
            self.name,
            functools.partial(self._body, subject),
            timeout_s=subject.config.check_timeout_s,
            culprit="the backend",
        )


async def run_check_body(
    name: str, body: Callable[[], Awaitable[str]], *, timeout_s: float, culprit: str
) -> CheckResult:
    """Run one check body and turn what it did into a :class:`CheckResult`.

    :class:`Failed` and :class:`Skipped` give their message as the detail; any other exception
    fails the check, naming it (``culprit`` says whose it was: ``"the backend"``); a body still
    running after ``timeout_s`` fails (hung). Cancelling the call cancels the body.
    """
    start = trio.current_time()

    def result(status: CheckStatus, detail: str) -> CheckResult:
        return CheckResult(name, status, detail, trio.current_time() - start)

    try:
        with trio.move_on_after(timeout_s) as scope:
            detail = await body()
    except Failed as exc:
        return result(CheckStatus.FAILED, str(exc))
    except Skipped as exc:
        return result(CheckStatus.SKIPPED, str(exc))
    except Exception as exc:  # the subject broke the kit's expectations in a new way
        return result(CheckStatus.FAILED, f"unexpected {type(exc).__name__} from {culprit}: {exc}")
    if scope.cancelled_caught:
        return result(CheckStatus.FAILED, f"did not finish within {timeout_s:g} s (hung?)")
    return result(CheckStatus.PASSED, detail)


def contract_check(name: str, *, requires: str | None = None) -> Callable[[Body[B]], Check[B]]:
    """Turn a check body into a :class:`Check` named ``name``.

    Example::

        @contract_check("tts.speed", requires="speed")
        async def check_tts_speed(subject: Subject[TtsBackend]) -> str:
            \"\"\"A faster speed gives shorter audio.\"\"\"
            ...
            return "1.5x speed: 1.9 s instead of 2.9 s"
    """

    def wrap(body: Body[B]) -> Check[B]:
        return Check(name, body, requires=requires)

    return wrap


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""
