"""Driving one backend call from outside and recording what it did.

Every streaming call is driven the way the engine drives it: the backend gets a fresh
unbuffered send channel (so a chunk's arrival time is the time it was sent), a consumer reads
it, and the call runs in its own cancel scope that the kit may cancel (at the first output, or
after a delay). When the call returns, the kit records whether the channel was closed, then
closes it itself so that a backend that forgot cannot hang the kit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from scaivoice.engine import (
    AudioChunk,
    BackendError,
    LlmBackend,
    LlmRequest,
    SttBackend,
    SttRequest,
    ToolCall,
    Transcript,
    TtsBackend,
    TtsRequest,
)

from ._kit import Failed

__all__ = [
    "Run",
    "describe_error",
    "expect_cancelled",
    "expect_completed",
    "generate",
    "is_backend_error",
    "respond",
    "synthesize",
    "transcribe",
]

T = TypeVar("T")


@dataclass(slots=True)
class Run(Generic[T]):
    """What one backend call did, seen from outside.

    Times are seconds after the call started.

    Attributes:
        items: what the backend sent, in order.
        arrivals: when each item arrived.
        error: the exception the call raised (``None``: it returned, or was cancelled).
        returned_s: when the call returned (or raised).
        closed: whether the output channel was closed when the call returned.
        cancelled_s: when the kit cancelled the call (``None``: it did not).
        input_closed_s: STT only: when the kit closed the audio channel (the utterance ended).
    """

    items: list[T] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    error: Exception | None = None
    returned_s: float = 0.0
    closed: bool = False
    cancelled_s: float | None = None
    input_closed_s: float | None = None

    @property
    def cancel_latency_s(self) -> float | None:
        """How long the call took to return after the kit cancelled it."""
        if self.cancelled_s is None:
            return None
        return self.returned_s - self.cancelled_s


def describe_error(exc: BaseException) -> str:
    """``TypeName: message``; for an exception group, what it holds."""
    if isinstance(exc, BaseExceptionGroup):
        inner = ", ".join(describe_error(e) for e in exc.exceptions)
        return f"{type(exc).__name__} [{inner}] (groups must be unwrapped inside the backend)"
    return f"{type(exc).__name__}: {exc}"


def is_backend_error(exc: BaseException | None) -> bool:
    """A bare :class:`BackendError` (a group holding one does not count: the engine's
    ``except BackendError`` would not catch it)."""
    return isinstance(exc, BackendError)


async def _drive(
    call: Callable[[trio.MemorySendChannel[T]], Awaitable[None]],
    run: Run[T],
    *,
    feed: Callable[[float], Awaitable[None]] | None = None,
    cancel_at_first: bool = False,
    cancel_after_s: float | None = None,
) -> Run[T]:
    send, receive = trio.open_memory_channel[T](0)
    start = trio.current_time()
    call_scope = trio.CancelScope()
    helpers_scope = trio.CancelScope()

    def cancel() -> None:
        if run.cancelled_s is None:
            run.cancelled_s = trio.current_time() - start
            call_scope.cancel()

    async def consume() -> None:
        async for item in receive:
            run.items.append(item)
            run.arrivals.append(trio.current_time() - start)
            if cancel_at_first:
                cancel()

    async def cancel_later(delay: float) -> None:
        await trio.sleep(delay)
        cancel()

    async def helpers() -> None:
        with helpers_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                if feed is not None:
                    nursery.start_soon(feed, start)
                if cancel_after_s is not None:
                    nursery.start_soon(cancel_later, cancel_after_s)

    with receive:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(helpers)
            with call_scope:
                try:
                    await call(send)
                except Exception as exc:
                    run.error = exc
            run.returned_s = trio.current_time() - start
            run.closed = send.statistics().open_send_channels == 0
            send.close()  # a backend that forgot to close it must not hang the kit
            helpers_scope.cancel()
    return run


async def transcribe(
    backend: SttBackend,
    request: SttRequest,
    chunks: Sequence[bytes],
    *,
    pace: float = 0.0,
    chunk_ms: int = 100,
    cancel_at_first: bool = False,
    cancel_after_s: float | None = None,
) -> Run[Transcript]:
    """Feed ``chunks`` to ``backend.transcribe`` and record its results.

    Args:
        pace: feed the audio at this multiple of real time (one chunk every ``chunk_ms /
            pace``); 0 feeds it as fast as the backend reads it.
    """
    audio_send, audio_receive = trio.open_memory_channel[bytes](256)
    run: Run[Transcript] = Run()

    async def feed(start: float) -> None:
        step = chunk_ms / 1000 / pace if pace > 0 else 0.0
        try:
            async with audio_send:
                for index, chunk in enumerate(chunks):
                    if step:
                        await trio.sleep_until(start + (index + 1) * step)
                    await audio_send.send(chunk)
        except trio.BrokenResourceError:
            pass  # the backend closed its end early: it has heard enough
        run.input_closed_s = trio.current_time() - start

    async def call(results: trio.MemorySendChannel[Transcript]) -> None:
        await backend.transcribe(request, audio_receive, results)

    with audio_receive, audio_send:
        return await _drive(
            call, run, feed=feed, cancel_at_first=cancel_at_first, cancel_after_s=cancel_after_s
        )


async def synthesize(
    backend: TtsBackend,
    request: TtsRequest,
    *,
    cancel_at_first: bool = False,
    cancel_after_s: float | None = None,
) -> Run[AudioChunk]:
    """Run ``backend.synthesize(request)`` and record the chunks it sends."""

    async def call(audio: trio.MemorySendChannel[AudioChunk]) -> None:
        await backend.synthesize(request, audio)

    return await _drive(call, Run(), cancel_at_first=cancel_at_first, cancel_after_s=cancel_after_s)


async def generate(
    backend: LlmBackend,
    request: LlmRequest,
    *,
    cancel_at_first: bool = False,
    cancel_after_s: float | None = None,
) -> Run[str]:
    """Run ``backend.generate(request)`` and record the deltas it sends."""

    async def call(deltas: trio.MemorySendChannel[str]) -> None:
        await backend.generate(request, deltas)

    return await _drive(call, Run(), cancel_at_first=cancel_at_first, cancel_after_s=cancel_after_s)


async def respond(
    backend: LlmBackend,
    request: LlmRequest,
    *,
    cancel_at_first: bool = False,
    cancel_after_s: float | None = None,
) -> Run[str | ToolCall]:
    """Run ``backend.respond(request)`` and record the text deltas and tool calls it sends."""

    async def call(output: trio.MemorySendChannel[str | ToolCall]) -> None:
        await backend.respond(request, output)

    return await _drive(call, Run(), cancel_at_first=cancel_at_first, cancel_after_s=cancel_after_s)


def expect_completed(run: Run[T], what: str) -> None:
    """Fail unless the call returned normally and closed its output channel."""
    if run.error is not None:
        hint = "" if is_backend_error(run.error) else " (failures must be BackendError subclasses)"
        raise Failed(f"{what} raised {describe_error(run.error)}{hint}")
    if not run.closed:
        raise Failed(f"{what} returned without closing its output channel")


def expect_cancelled(run: Run[T], what: str, *, deadline_s: float) -> str:
    """Fail unless a cancelled call returned within ``deadline_s``, cleanly, channel closed.

    Returns a one-line description of what happened.
    """
    latency = run.cancel_latency_s
    if latency is None:
        expect_completed(run, what)
        raise Failed(f"{what} finished before the kit could cancel it (make the input longer)")
    if latency > deadline_s:
        raise Failed(
            f"{what} took {latency:.2f} s to return after being cancelled (> {deadline_s:g} s)"
        )
    if run.error is not None:
        raise Failed(
            f"{what} raised {describe_error(run.error)} when cancelled (let Cancelled through)"
        )
    if not run.closed:
        raise Failed(f"{what} was cancelled and returned without closing its output channel")
    return f"returned {latency * 1000:.0f} ms after the cancel, after {len(run.items)} output(s)"
