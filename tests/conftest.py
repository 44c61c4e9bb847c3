"""Shared fixtures: engines on the test backends, in-memory sessions, protocol invariants."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from scaivoice.backends import testing as testing_backends
from scaivoice.engine import BackendSpec, PluginHost, hookimpl
from scaivoice.engine._session.sentences import SentenceChunker
from scaivoice.engine.frames import ServerFrame
from scaivoice.engine.testing import (
    AudioReceived,
    MemoryClient,
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
)


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
