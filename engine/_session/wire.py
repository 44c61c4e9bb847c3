"""The session's socket side: the outbox, the reader, the writer and the idle watchdog.

::

    transport ──► reader ──items──► (the dialogue)
    (the dialogue, agent turns) ──► Outbox ──► writer ──► transport

The reader turns client messages into typed items for the dialogue (answering pings and
refusing bad frames itself); the writer is the only task that sends on the socket during the
session. Each task ends the session by raising :class:`SessionOver`, which the runner maps to
goodbye frames and a close code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from .._errors import ProtocolViolation
from .._host.limits import FrameGuard
from ..frames import (
    ClientFrame,
    ErrorFrame,
    Ping,
    Pong,
    ServerFrame,
    SessionEnd,
    SessionStart,
    WarningFrame,
    decode_client_frame,
    encode_server_frame,
)
from .transport import CloseCode, Transport

__all__ = ["AudioIn", "Outbox", "SessionOver", "read_client", "watch_idle", "write_client"]

T = TypeVar("T")


class SessionOver(Exception):
    """Ends the session: raised by a task, caught by the runner's ``except*``."""

    def __init__(self, close_code: int, reason: str, error: ErrorFrame | None = None) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.error = error

    @classmethod
    def fatal(cls, close_code: int, code: str, message: str) -> SessionOver:
        """End with a fatal ``error`` event of ``code`` and close code ``close_code``."""
        return cls(close_code, code, ErrorFrame(code=code, message=message, fatal=True))


@dataclass(frozen=True, slots=True)
class AudioIn:
    """A binary frame of client audio (PCM16LE at the session's input rate)."""

    pcm: bytes


class Outbox:
    """What the session sends, in order: JSON frames and agent audio, queued for the writer.

    Args:
        observe: told of every frame (telemetry).
        size: how many messages may queue before senders wait (back-pressure from the client).
    """

    def __init__(self, observe: Callable[[ServerFrame], None], size: int = 64) -> None:
        self._observe = observe
        self._send, self.receive = trio.open_memory_channel[str | bytes](size)

    async def send(self, frame: ServerFrame) -> None:
        """Queue ``frame``; waits while the queue is full. Cancelling drops it."""
        self._observe(frame)
        await self._send.send(frame_text(frame))

    async def send_audio(self, pcm: bytes) -> None:
        """Queue a binary frame of agent audio; waits while the queue is full."""
        await self._send.send(pcm)

    async def warn(self, code: str, message: str) -> None:
        await self.send(WarningFrame(code=code, message=message))

    async def error(self, code: str, message: str) -> None:
        """A non-fatal ``error`` event: the session goes on."""
        await self.send(ErrorFrame(code=code, message=message, fatal=False))


async def read_client(
    transport: Transport,
    items: trio.MemorySendChannel[ClientFrame | AudioIn],
    outbox: Outbox,
    guard: FrameGuard,
    *,
    max_frame_bytes: int,
    on_activity: Callable[[float], None],
) -> None:
    """Read the socket until the session ends; hand frames and audio to ``items``.

    Answers ``ping`` itself and refuses oversized, malformed and out-of-place frames with a
    non-fatal ``error``. Raises :class:`SessionOver` on ``session.end`` and on a flood.
    """
    while True:
        message = await transport.receive()
        now = trio.current_time()
        on_activity(now)
        if _size(message, max_frame_bytes) > max_frame_bytes:
            await outbox.error("frame_too_large", f"frames are limited to {max_frame_bytes} bytes")
            continue
        allowed = (
            guard.audio(now, len(message)) if isinstance(message, bytes) else guard.control(now)
        )
        if not allowed:
            raise SessionOver.fatal(
                CloseCode.TOO_MANY,
                "rate_limited",
                "too many frames: audio may run at most 10x real time on average, control "
                "frames at 50 a second",
            )
        if isinstance(message, bytes):
            if len(message) % 2:
                await outbox.error(
                    "odd_audio_length", "audio frames are PCM16: an even number of bytes"
                )
            elif message:
                await hand_over(items, AudioIn(message))
            continue
        try:
            frame = decode_client_frame(message)
        except ProtocolViolation as exc:
            await outbox.error(exc.code, str(exc))
            continue
        if isinstance(frame, Ping):
            await outbox.send(Pong(id=frame.id))
        elif isinstance(frame, SessionStart):
            await outbox.error("already_started", "the session has already started")
        elif isinstance(frame, SessionEnd):
            raise SessionOver(CloseCode.NORMAL, "client_ended")
        else:
            await items.send(frame)


async def write_client(
    transport: Transport, messages: trio.MemoryReceiveChannel[str | bytes], *, timeout_s: float
) -> None:
    """Send queued messages on the socket, in order.

    Raises :class:`SessionOver` (``slow_client``) when one send waits ``timeout_s``: a client
    that does not read is closed rather than buffered for.
    """
    async with messages:
        async for message in messages:
            with trio.move_on_after(timeout_s) as timer:
                if isinstance(message, str):
                    await transport.send_text(message)
                else:
                    await transport.send_bytes(message)
            if timer.cancelled_caught:
                raise SessionOver.fatal(
                    CloseCode.SLOW_CLIENT,
                    "slow_client",
                    f"the client read nothing for {timeout_s:g} s",
                )


async def watch_idle(last_activity: Callable[[], float], *, idle_timeout_s: float) -> None:
    """Raise :class:`SessionOver` (``idle_timeout``) once no frame arrived for a while."""
    while True:
        deadline = last_activity() + idle_timeout_s
        if trio.current_time() >= deadline:
            raise SessionOver.fatal(
                CloseCode.TIMEOUT,
                "idle_timeout",
                f"no frame from the client for {idle_timeout_s:g} s",
            )
        await trio.sleep_until(deadline)


async def hand_over(channel: trio.MemorySendChannel[T], item: T) -> None:
    """Send ``item``; a trip through the scheduler only when the channel is full.

    The audio path sends about 50 items a second per session, and the receiving task runs
    soon anyway: skipping the checkpoint of ``send`` saves one task switch per frame.
    """
    try:
        channel.send_nowait(item)
    except trio.WouldBlock:
        await channel.send(item)


def frame_text(frame: ServerFrame) -> str:
    """``frame`` as the text of a WebSocket message."""
    return encode_server_frame(frame).decode("utf-8")


def _size(message: str | bytes, limit: int) -> int:
    """A frame's size in bytes (text is UTF-8 on the wire: up to 4 bytes a character)."""
    if isinstance(message, bytes) or len(message) * 4 <= limit:
        return len(message)
    return len(message.encode("utf-8"))
