"""Shared fixtures: engines on the test backends, in-memory sessions, protocol invariants.

Also the time limit of every test. pytest-timeout (``timeout`` in pyproject.toml, or
``@pytest.mark.timeout(seconds)`` on a test) ends any test that runs too long, sync or async,
fixtures included. A trio test fails first, inside trio, at half its limit: a
``trio.TooSlowError`` caused by the ``Cancelled`` of the await that hung (its traceback shows
where), while the rest of the run goes on. That limit is real time, kept by a timer thread, even
under ``autojump_clock``: a deadline on trio's clock would change what a virtual-time test does
(the clock jumps to any pending deadline while a worker thread runs). Tests marked ``slow`` (real
models, real servers) get ``SLOW_TEST_TIMEOUT_S`` unless they say otherwise. The limits apply to
every test this session collects, the example plugin's included.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio

from scaivoice.backends import testing as testing_backends
from scaivoice.engine import BackendSpec, PluginHost, SentenceChunker, hookimpl
from scaivoice.engine.frames import ServerFrame
from scaivoice.engine.testing import (
    AudioReceived,
    MemoryClient,
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
)

SLOW_TEST_TIMEOUT_S = 600
"""pytest-timeout's limit for a test marked ``slow`` with no ``timeout`` mark of its own."""

TRIO_SHARE_OF_TIMEOUT = 0.5
"""A trio test's own limit, as a share of its pytest-timeout limit (the rest is for fixtures)."""

TRIO_TIME_LIMIT = pytest.StashKey[float]()
"""Where an async test's item keeps the limit its function was wrapped in."""


def timeout_of(item: pytest.Item) -> float:
    """The pytest-timeout limit of ``item`` in seconds, as pytest-timeout reads it (0: none)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
    else:
        value = (
            item.config.getoption("timeout", None)
            or os.environ.get("PYTEST_TIMEOUT")
            or item.config.getini("timeout")
        )
    return float(value or 0)


def with_time_limit(test: Callable[..., Awaitable[None]], seconds: float) -> Any:
    """``test`` (an async test function) failing with ``TooSlowError`` after ``seconds``."""

    @functools.wraps(test)
    async def limited(**kwargs: Any) -> None:
        __tracebackhide__ = True
        token = trio.lowlevel.current_trio_token()
        hung: BaseException | None = None
        with trio.CancelScope() as scope:

            def cancel() -> None:
                with suppress(trio.RunFinishedError):
                    token.run_sync_soon(scope.cancel)

            timer = threading.Timer(seconds, cancel)
            timer.daemon = True
            if seconds < float("inf"):
                timer.start()
            try:
                await test(**kwargs)
            except BaseException as exc:  # recorded for the report, and re-raised
                hung = exc
                raise
            finally:
                timer.cancel()
        if scope.cancelled_caught:
            raise trio.TooSlowError(
                f"{test.__name__} ran past its time limit of {seconds:g} s: the exception "
                "above shows what it was waiting for. A slow test raises its limit with "
                "@pytest.mark.timeout(seconds)."
            ) from hung

    return limited


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))
        seconds = timeout_of(item) * TRIO_SHARE_OF_TIMEOUT or float("inf")
        hypothesis = getattr(item.obj, "hypothesis", None)
        if hypothesis is not None and inspect.iscoroutinefunction(hypothesis.inner_test):
            hypothesis.inner_test = with_time_limit(hypothesis.inner_test, seconds)
        elif inspect.iscoroutinefunction(item.obj):
            item.obj = with_time_limit(item.obj, seconds)
        else:
            continue
        item.stash[TRIO_TIME_LIMIT] = seconds


class ExtraBackends:
    """A plugin object registering test-only backend specs."""

    def __init__(self, *specs: BackendSpec) -> None:
        self.specs = specs

    def _of(self, kind: str) -> Iterator[BackendSpec]:
        return (s for s in self.specs if s.kind == kind)

    @hookimpl
    def scaivoice_stt_backends(self) -> Iterator[BackendSpec]:
        return self._of("stt")

    @hookimpl
    def scaivoice_llm_backends(self) -> Iterator[BackendSpec]:
        return self._of("llm")

    @hookimpl
    def scaivoice_tts_backends(self) -> Iterator[BackendSpec]:
        return self._of("tts")

    @hookimpl
    def scaivoice_normalisers(self) -> Iterator[BackendSpec]:
        return self._of("normaliser")


def host_with(*specs: BackendSpec) -> PluginHost:
    """Only the deterministic test backends (+ ``specs``): independent of installed extras."""
    host = PluginHost()
    host.register(testing_backends, name="builtin-test-backends", distribution="scaivoice")
    if specs:
        host.register(ExtraBackends(*specs), name="test-extra-backends")
    return host


@asynccontextmanager
async def open_session(
    overrides: dict[str, Any] | None = None,
    *,
    specs: Sequence[BackendSpec] = (),
    start: dict[str, Any] | None = None,
) -> AsyncIterator[MemoryClient]:
    """An engine + one running in-memory session, started with ``start`` config."""
    async with open_test_engine(overrides, host=host_with(*specs)) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            if start is not None:
                started = await client.start(**start)
                assert started.__struct_config__.tag == "session.started", started
            client.engine = engine  # type: ignore[attr-defined]
            yield client
            nursery.cancel_scope.cancel()


def tag(item: ServerFrame | AudioReceived) -> str:
    return "audio" if isinstance(item, AudioReceived) else item.__struct_config__.tag


def check_invariants(items: Sequence[ServerFrame | AudioReceived]) -> None:
    """The protocol's ordering guarantees over a captured stream of server frames."""
    interrupted: set[int] = set()
    audio_open: int | None = None
    finals: set[int] = set()
    for item in items:
        kind = tag(item)
        turn = getattr(item, "turn_id", None)
        if kind == "state" and item.state == "interrupted":
            interrupted.add(turn)
            continue
        if kind == "audio":
            assert audio_open is not None, "audio outside agent.audio.start/done"
            assert audio_open not in interrupted, "audio after the interrupted state"
            continue
        if kind in {
            "agent.text",
            "agent.text.done",
            "agent.audio.start",
            "agent.audio.done",
            "metrics",
        }:
            assert turn not in interrupted, f"{kind} of turn {turn} after interrupted"
        if kind == "agent.audio.start":
            assert audio_open is None
            audio_open = turn
        elif kind == "agent.audio.done":
            assert audio_open == turn
            audio_open = None
        elif kind == "transcript":
            assert turn not in finals, "transcript after the final of the same turn"
            if item.final:
                finals.add(turn)


@pytest.fixture
def invariants() -> Callable[[Sequence[ServerFrame | AudioReceived]], None]:
    return check_invariants


def spoken_ms(text: str, ms_per_char: float = 50.0) -> float:
    """How long test-tts speaks a reply: each speakable piece, stripped, at ``ms_per_char``."""
    chunker = SentenceChunker()
    pieces = chunker.feed(text) + chunker.flush()
    return sum(len(piece.strip()) for piece in pieces) * ms_per_char
