"""The ``/v1/realtime`` endpoint's socket: a session :class:`Transport` that speaks OpenAI
Realtime events to its client (the trio shell around :class:`.RealtimeTranslator`).

::

    Realtime client ◄──► inner Transport (the WebSocket) ◄──► RealtimeTransport ◄──► Session

The session reads and writes protocol v1 frames as it does on ``/v1/session``; this transport
translates each message on the way. Events that answer a client event at once (an ``error``,
``input_audio_buffer.cleared``, ``conversation.item.added`` ...) are sent by the task that read
it. Each message's events are translated and sent under one lock, so they reach the client in
the order they were translated and never interleave with another message's.

A response whose tool calls are out is ended once the session has sent nothing for
``quiet_s``: :meth:`RealtimeTransport.receive` waits on the socket under a cancel scope whose
deadline each message of the session moves, so no task of its own is needed (cancelling the
socket's ``receive`` only abandons its wait).
"""

from __future__ import annotations

from collections import deque

import trio

from .._session.transport import Transport
from .translator import RealtimeTranslator

__all__ = ["REALTIME_PATH", "RealtimeTransport"]

REALTIME_PATH = "/v1/realtime"
"""The WebSocket path of the OpenAI Realtime-compatible endpoint."""

QUIET_S = 0.3
"""How long the session must send nothing before a response whose tool calls are out ends."""


class RealtimeTransport:
    """A :class:`Transport` for :class:`~scaivoice.engine._session.runner.Session` over a
    socket whose client speaks the OpenAI Realtime API.

    Args:
        inner: the client's socket (text messages: Realtime events).
        model: the connection's ``?model=``, echoed in the session object.
        quiet_s: see the module docs.
    """

    def __init__(self, inner: Transport, *, model: str, quiet_s: float = QUIET_S) -> None:
        self._inner = inner
        self.translator = RealtimeTranslator(model)
        self._to_session: deque[str | bytes] = deque([self.translator.start()])
        self._lock = trio.Lock()
        self._quiet_s = quiet_s
        self._last_output = trio.current_time()
        self._waiting: trio.CancelScope | None = None  # the wait for the client's next message

    async def receive(self) -> str | bytes:
        """The session's next message: translated from the client's events (one event may
        be several messages, or none). Raises ``SessionClosed`` when the client went away;
        cancelling abandons the wait."""
        translator = self.translator
        while True:
            if self._to_session:
                return self._to_session.popleft()
            with trio.CancelScope() as waiting:
                self._waiting = waiting
                if translator.awaiting_quiet:
                    waiting.deadline = self._last_output + self._quiet_s
                try:
                    message = await self._inner.receive()
                finally:
                    self._waiting = None
            if waiting.cancelled_caught:
                await self._quiet()
                continue
            async with self._lock:
                translated = translator.from_client(message)
                for event in translated.to_client:
                    await self._inner.send_text(event)
            self._to_session.extend(translated.to_engine)

    async def _quiet(self) -> None:
        async with self._lock:
            if trio.current_time() < self._last_output + self._quiet_s:
                return  # the session sent something meanwhile
            for event in self.translator.quiet():
                await self._inner.send_text(event)

    async def send_text(self, text: str) -> None:
        """Send a v1 frame of the session, as the Realtime events it becomes."""
        async with self._lock:
            events = self.translator.from_engine(text)
            self._output()
            for event in events:
                await self._inner.send_text(event)

    async def send_bytes(self, data: bytes) -> None:
        """Send agent audio as ``response.output_audio.delta``."""
        async with self._lock:
            events = self.translator.from_engine_audio(data)
            self._output()
            for event in events:
                await self._inner.send_text(event)

    def _output(self) -> None:
        """The session sent something: the quiet period starts again (and the wait for the
        client's next message ends with it, when a response waits for it)."""
        self._last_output = trio.current_time()
        if self._waiting is not None and self.translator.awaiting_quiet:
            self._waiting.deadline = self._last_output + self._quiet_s

    async def close(self, code: int, reason: str = "") -> None:
        await self._inner.close(code, reason)
