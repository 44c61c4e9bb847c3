"""Keeping the engine's backends and session features up, and recovering them without a restart.

Every backend and session feature the configuration names is a :class:`Component`, kept by one
task of the engine's nursery (:class:`Keeper`). The keeper opens the component, *settles* it
(checks its health, lists a voice backend's voices, warms a language model up) and reports it
up. When opening or settling fails for an upstream reason — a :class:`BackendError`: the server
does not answer, a model did not load — it reports the component down and tries again after a
backoff (1 s, doubling up to 30 s), so the engine recovers on its own::

    open ──ok──► settle ──ok──► up ──── a health check fails ────┐
     ▲ │           ▲  │                                          ▼
     │ fail        │  fail ───────────────────────────────► down: wait for the backoff
     └─┴───────────┴───────────────────────────────────────── (a passing health check cuts it short)

The engine starts listening once every keeper made its first try (``nursery.start``): a
configuration error raised by a first ``open`` (:class:`ConfigError`, or
:class:`BackendRejected`: the backend refused its own options) or a bug stops the start; any
other :class:`BackendError` does not. Some components are optional: their first ``open`` failing
with one of ``skip_on`` means "not installed here", and the keeper ends without them.

While a backend is not open the engine holds a stand-in of its kind (:func:`standby`): every
call fails with :class:`BackendUnavailable` naming why, so sessions degrade through their
ordinary failure paths; once the keeper opens the real backend, the stand-in forwards to it
(sessions that kept a reference to it recover too).

Cancelling a keeper (the engine closing) closes what it opened, shielded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import trio

from .._contract.backends import (
    AudioChunk,
    Backend,
    BackendKind,
    Capabilities,
    LlmBackend,
    LlmRequest,
    NormaliserBackend,
    NormaliseRequest,
    SttBackend,
    SttRequest,
    Transcript,
    TtsBackend,
    TtsRequest,
    Voice,
)
from .._contract.resource import Resource
from .._contract.tools import ToolCall
from .._errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable

__all__ = ["PROBE_TIMEOUT_S", "Backoff", "Component", "ComponentKind", "Keeper", "probe", "standby"]

log = logging.getLogger("scaivoice.engine")

ComponentKind = Literal["stt", "llm", "tts", "normaliser", "feature", "tools"]

PROBE_TIMEOUT_S = 5.0
"""The longest one health check may take before the backend counts as down."""

_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0


class Backoff:
    """Waits between tries: ``first_s``, doubling up to ``max_s``, less a random quarter."""

    def __init__(self, first_s: float = _RETRY_FIRST_S, max_s: float = _RETRY_MAX_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._tries = 0
        self._random = random.Random()

    def next(self) -> float:
        """The wait before the next try."""
        delay = min(self.first_s * 2.0**self._tries, self.max_s)
        self._tries = min(self._tries + 1, 32)
        return delay * self._random.uniform(0.75, 1.0)

    def reset(self) -> None:
        """Start again from ``first_s`` (the component came up)."""
        self._tries = 0


class Component:
    """One backend or feature the engine keeps, and what is known of it now.

    Attributes:
        label: how ``/health`` names it: ``stt``, ``llm``, ``tts:NAME``, ``normaliser``,
            ``feature:NAME``.
        kind: the component's kind.
        name: the backend's or feature's registered name.
        resource: the open backend or feature; ``None`` while it is not open.
        error: why it is down; ``None`` while it is up.
        since: when it last went up or down (seconds since the epoch).
    """

    def __init__(self, label: str, kind: ComponentKind, name: str) -> None:
        self.label = label
        self.kind = kind
        self.name = name
        self.resource: Resource | None = None
        self.error: str | None = "not opened yet"
        self.since = time.time()
        self._reported = False
        self._poke = trio.Event()

    @property
    def up(self) -> bool:
        """Whether the last open, settle or health check of it succeeded."""
        return self.error is None

    def report(self, error: str | None) -> None:
        """Record what a health check found (``None``: it works); a change wakes the keeper.

        A backend found down is tried again after the backoff; one found working again while
        it counted as down is settled at once (its voices listed, for instance).
        """
        if self.record(error):
            self._poke.set()

    def record(self, error: str | None) -> bool:
        """Record what the keeper's own try found; return whether it went up or down."""
        was_up, first = self.up, not self._reported
        self.error = error
        self._reported = True
        if was_up == self.up and not first:
            return False
        self.since = time.time()
        what = "session feature" if self.kind == "feature" else f"{self.kind} backend"
        if error is not None:
            log.warning("%s %r is down: %s", what, self.name, error)
        elif not first:
            log.warning("%s %r is up again", what, self.name)
        return True

    async def wait(self, seconds: float = float("inf")) -> None:
        """Return after ``seconds``, or sooner when :meth:`report` changed its state."""
        with trio.move_on_after(seconds):
            await self._poke.wait()
        self._poke = trio.Event()


async def probe(backend: Backend) -> None:
    """One health check of ``backend``, under :data:`PROBE_TIMEOUT_S`.

    Raises:
        BackendError: the backend's own, or :class:`BackendTimeout` when it took too long.
    """
    try:
        with trio.fail_after(PROBE_TIMEOUT_S):
            await backend.check_health()
    except trio.TooSlowError:
        raise BackendTimeout(
            f"no answer to a health check in {PROBE_TIMEOUT_S:g} s", backend=backend.name
        ) from None


class Keeper:
    """Opens one component, keeps it settled, and tries again while it is down.

    Args:
        component: what it keeps, and where it records the state.
        first: the instance to open first (created by the engine, so that bad options stop the
            start before anything opens).
        create: a fresh instance for each later try (a failed ``open`` may leave one unusable).
        install: publishes the open resource to the engine, or ``None``: it is not open.
        settle: what must also succeed, once open, for the component to be up (raises
            ``BackendError`` otherwise). Called again after each failure or reported outage.
        skip_on: errors of the first ``open`` that mean "not installed": the keeper ends
            without the component (``remove`` is called), it is not retried.
        remove: takes a skipped component out of the engine.
    """

    def __init__(
        self,
        component: Component,
        first: Resource,
        create: Callable[[], Resource],
        *,
        install: Callable[[Resource | None], None],
        settle: Callable[[Resource], Awaitable[None]],
        skip_on: tuple[type[Exception], ...] = (),
        remove: Callable[[], None] = lambda: None,
    ) -> None:
        self.component = component
        self._next: Resource | None = first
        self._create = create
        self._install = install
        self._settle = settle
        self._skip_on = skip_on
        self._remove = remove
        self._backoff = Backoff()
        self._started: Callable[[], None] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the component until cancelled; report started after the first try.

        Raises:
            ConfigError: the first ``open`` failed for a configuration reason (not in
                ``skip_on``). A ``BackendRejected`` (the backend refused its own options) and
                any other exception that is not a ``BackendError`` (a bug) are raised too.
        """
        self._started = lambda: task_status.started()
        component = self.component
        what = "session feature" if component.kind == "feature" else f"{component.kind} backend"
        while True:
            resource = self._next if self._next is not None else self._fresh()
            self._next = None
            if resource is not None:
                log.info("opening %s %r", what, component.name)
                try:
                    await resource.open()
                except Exception as exc:
                    if self._started is not None:  # the first try
                        if isinstance(exc, self._skip_on):
                            log.warning("%s %r is not available: %s", what, component.name, exc)
                            self._remove()
                            self._ready()
                            return
                        if isinstance(exc, BackendRejected) or not isinstance(exc, BackendError):
                            raise  # its own settings were refused (or a bug): not an outage
                    elif not isinstance(exc, BackendError):
                        log.error("%s %r failed to open", what, component.name, exc_info=exc)
                    component.record(str(exc))
                else:
                    await self._keep_open(resource)  # returns only when cancelled
            self._install(None)
            self._ready()
            await component.wait(self._backoff.next())

    def _fresh(self) -> Resource | None:
        try:
            return self._create()
        except Exception as exc:  # the options were valid at start: this is odd, not fatal
            log.error("cannot create %r again", self.component.name, exc_info=exc)
            self.component.record(f"cannot be created: {exc}")
            return None

    async def _keep_open(self, resource: Resource) -> None:
        component = self.component
        try:
            component.resource = resource
            self._install(resource)
            while True:
                try:
                    await self._settle(resource)
                except BackendError as exc:
                    component.record(str(exc))
                except Exception as exc:  # a backend bug in a health check or voice list
                    log.error("%r failed while settling", component.name, exc_info=exc)
                    component.record(f"{type(exc).__name__}: {exc}")
                else:
                    component.record(None)
                    self._backoff.reset()
                self._ready()
                while component.up:
                    await component.wait()  # until a health check finds it down
                await component.wait(self._backoff.next())
        finally:
            component.resource = None
            with trio.CancelScope(shield=True):
                await resource.aclose()

    def _ready(self) -> None:
        if self._started is not None:
            started, self._started = self._started, None
            started()


# --------------------------------------------------------------------------- stand-ins


class _Standby:
    """What the engine holds for a backend that is not open: calls fail with the reason;
    once the keeper opened the real backend, calls are forwarded to it."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.name = component.name

    def _unavailable(self) -> BackendUnavailable:
        why = self.component.error or "not open"
        return BackendUnavailable(
            f"the {self.component.kind} backend {self.name!r} is not available: {why}",
            backend=self.name,
        )

    def _open(self) -> Resource | None:
        return self.component.resource

    async def check_health(self) -> None:
        resource = self._open()
        if not isinstance(resource, Backend):
            raise self._unavailable()
        await resource.check_health()


class _StandbyStt(_Standby, SttBackend):
    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        resource = self._open()
        if not isinstance(resource, SttBackend):
            results.close()
            raise self._unavailable()
        await resource.transcribe(request, audio, results)


class _StandbyLlm(_Standby, LlmBackend):
    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        resource = self._open()
        if not isinstance(resource, LlmBackend):
            deltas.close()
            raise self._unavailable()
        await resource.generate(request, deltas)

    async def respond(
        self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
    ) -> None:
        resource = self._open()
        if not isinstance(resource, LlmBackend):
            output.close()
            raise self._unavailable()
        await resource.respond(request, output)


class _StandbyTts(_Standby, TtsBackend):
    async def list_voices(self) -> Sequence[Voice]:
        resource = self._open()
        if not isinstance(resource, TtsBackend):
            raise self._unavailable()
        return await resource.list_voices()

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        resource = self._open()
        if not isinstance(resource, TtsBackend):
            audio.close()
            raise self._unavailable()
        await resource.synthesize(request, audio)


class _StandbyNormaliser(_Standby, NormaliserBackend):
    async def normalise(self, text: str, request: NormaliseRequest) -> str:
        resource = self._open()
        if not isinstance(resource, NormaliserBackend):
            raise self._unavailable()
        return await resource.normalise(text, request)


_STANDBYS: dict[str, type[_Standby]] = {
    "stt": _StandbyStt,
    "llm": _StandbyLlm,
    "tts": _StandbyTts,
    "normaliser": _StandbyNormaliser,
}


def standby(kind: BackendKind, component: Component, capabilities: Capabilities) -> Backend:
    """The stand-in for a backend that is not open, declaring its spec's ``capabilities`` (so
    session options are judged as the real backend would judge them)."""
    stand_in = _STANDBYS[kind](component)
    stand_in.capabilities = capabilities  # type: ignore[attr-defined]  # the spec's, per instance
    assert isinstance(stand_in, Backend)
    return stand_in
