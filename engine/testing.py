"""Test helpers shipped with the engine (like ``trio.testing``): for your tests and ours.

- :func:`memory_transport_pair` — a session transport and the client end, in memory.
- :class:`MemoryClient` — drive a session frame by frame and read typed frames back.
- :func:`open_test_engine` — an engine on the deterministic test backends (or any you name).
- :func:`run_memory_session` — run one protocol session of an engine over a memory transport.

The waiting methods of :class:`MemoryClient` give up after ``timeout`` seconds
(:data:`DEFAULT_TIMEOUT` unless you say otherwise) with a ``trio.TooSlowError`` that names what was
awaited and what arrived instead, so a dropped frame fails a test rather than hanging it. The
timeout runs on trio's clock: virtual time under ``autojump_clock``. Pass ``timeout=None`` to
wait under a deadline of your own only.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from ._contract.plugins import PluginHost
from ._errors import SessionClosed
from ._host.auth import PERMISSION_USE, Principal
from ._host.config import config_from_mapping
from ._host.engine import Engine
from ._session.runner import Session
from .frames import ServerFrame, decode_server_frame

__all__ = [
    "DEFAULT_TIMEOUT",
    "AudioReceived",
    "MemoryClient",
    "MemoryTransport",
    "memory_transport_pair",
    "open_test_engine",
    "run_memory_session",
    "test_engine_config",
]

_Message = str | bytes

DEFAULT_TIMEOUT = 30.0
"""Seconds a :class:`MemoryClient` waits for what it was asked to wait for (trio's clock)."""


@dataclass(slots=True)
class MemoryTransport:
    """The server side of an in-memory socket; implements the session ``Transport``."""

    _inbox: trio.MemoryReceiveChannel[_Message]
    _outbox: trio.MemorySendChannel[_Message]
    close_code: int | None = None
    close_reason: str = ""
    closed: trio.Event = field(default_factory=trio.Event)

    async def receive(self) -> _Message:
        try:
            return await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise SessionClosed("the client closed the connection") from exc

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def _send(self, message: _Message) -> None:
        if self.close_code is not None:
            raise SessionClosed("the socket is closed")
        try:
            await self._outbox.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise SessionClosed("the client closed the connection") from exc

    async def close(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._outbox.close()
            self.closed.set()
        await trio.lowlevel.checkpoint()


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """A binary frame from the server."""

    pcm: bytes


class MemoryClient:
    """The client end of :func:`memory_transport_pair`."""

    def __init__(
        self,
        outbox: trio.MemorySendChannel[_Message],
        inbox: trio.MemoryReceiveChannel[_Message],
        transport: MemoryTransport,
    ) -> None:
        self._outbox = outbox
        self._inbox = inbox
        self.transport = transport

    async def send_json(self, doc: Mapping[str, Any]) -> None:
        """Send a text frame made from ``doc``."""
        await self._outbox.send(msgspec.json.encode(doc).decode())

    async def send_raw(self, message: _Message) -> None:
        """Send any text or binary frame as is."""
        await self._outbox.send(message)

    async def start(self, *, timeout: float | None = DEFAULT_TIMEOUT, **config: Any) -> ServerFrame:
        """Send ``session.start`` with ``config``; return the reply (``session.started``).

        Raises ``trio.TooSlowError`` when no text frame arrives within ``timeout`` seconds.
        """
        await self.send_json({"type": "session.start", "protocol": 1, "config": config})
        return await self.receive_frame(timeout=timeout)

    async def receive(
        self, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> ServerFrame | AudioReceived:
        """The next server frame.

        Raises ``trio.EndOfChannel`` once the server closed, and ``trio.TooSlowError`` when
        nothing arrives within ``timeout`` seconds (``None``: no limit of its own).
        """
        with _deadline(timeout):
            return await self._receive()
        raise trio.TooSlowError(f"no frame from the server within {_seconds(timeout)}")

    async def receive_frame(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> ServerFrame:
        """The next *text* frame (binary frames before it are skipped).

        Raises ``trio.EndOfChannel`` once the server closed, and ``trio.TooSlowError`` when no
        text frame arrives within ``timeout`` seconds.
        """
        skipped: list[ServerFrame | AudioReceived] = []
        with _deadline(timeout):
            while True:
                item = await self._receive(skipped, "a text frame")
                if not isinstance(item, AudioReceived):
                    return item
                skipped.append(item)
        raise trio.TooSlowError(
            f"no text frame from the server within {_seconds(timeout)}; "
            f"received {_describe_frames(skipped)}"
        )

    async def receive_until(
        self, frame_type: str, *, timeout: float | None = DEFAULT_TIMEOUT, **fields: Any
    ) -> list[ServerFrame | AudioReceived]:
        """Everything up to and including the first frame of ``frame_type`` matching ``fields``.

        Raises ``trio.EndOfChannel`` when the server closes first, and ``trio.TooSlowError``
        when no such frame arrives within ``timeout`` seconds; both name the frame awaited and
        list what arrived instead.
        """
        wanted = _wanted(frame_type, fields)
        seen: list[ServerFrame | AudioReceived] = []
        with _deadline(timeout):
            while True:
                item = await self._receive(seen, wanted)
                seen.append(item)
                if (
                    not isinstance(item, AudioReceived)
                    and item.__struct_config__.tag == frame_type
                    and all(getattr(item, k) == v for k, v in fields.items())
                ):
                    return seen
        raise trio.TooSlowError(
            f"no {wanted} within {_seconds(timeout)}; received {_describe_frames(seen)}"
        )

    async def _receive(
        self, seen: Sequence[ServerFrame | AudioReceived] = (), wanted: str = "a frame"
    ) -> ServerFrame | AudioReceived:
        try:
            message = await self._inbox.receive()
        except trio.EndOfChannel as exc:
            raise trio.EndOfChannel(
                f"the server closed the connection while the client waited for {wanted}; "
                f"received {_describe_frames(seen)}"
            ) from exc
        if isinstance(message, bytes):
            return AudioReceived(message)
        return decode_server_frame(message)

    async def aclose(self) -> None:
        """Close the client's side (the server sees the peer go away)."""
        await self._outbox.aclose()


def _describe_frames(items: Sequence[ServerFrame | AudioReceived], *, last: int = 40) -> str:
    """A short account of ``items`` for error messages: tags, states and codes, runs counted.

    ``[session.started, state(idle), agent.text ×3, audio ×12, state(listening)]``
    """
    names: list[str] = []
    for item in items:
        if isinstance(item, AudioReceived):
            names.append("audio")
            continue
        name = item.__struct_config__.tag
        detail = getattr(item, "state", None) or getattr(item, "code", None)
        names.append(f"{name}({detail})" if isinstance(detail, str) else str(name))
    runs: list[list[Any]] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    shown = [name if count == 1 else f"{name} ×{count}" for name, count in runs]
    if not shown:
        return "nothing"
    if len(shown) > last:
        shown = [f"... {len(shown) - last} more", *shown[-last:]]
    return f"{len(items)} frames: [{', '.join(shown)}]"


def _wanted(frame_type: str, fields: Mapping[str, Any]) -> str:
    matching = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{frame_type!r} frame" + (f" with {matching}" if matching else "")


def _deadline(timeout: float | None) -> trio.CancelScope:
    return trio.move_on_after(math.inf if timeout is None else timeout)


def _seconds(timeout: float | None) -> str:
    return "ever" if timeout is None else f"{timeout:g} s"


def memory_transport_pair(capacity: int = 256) -> tuple[MemoryTransport, MemoryClient]:
    """A connected (server transport, client) pair with bounded buffers."""
    to_server_send, to_server_recv = trio.open_memory_channel[_Message](capacity)
    to_client_send, to_client_recv = trio.open_memory_channel[_Message](capacity)
    transport = MemoryTransport(to_server_recv, to_client_send)
    return transport, MemoryClient(to_server_send, to_client_recv, transport)


def test_engine_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A config document for the deterministic test backends, deep-merged with ``overrides``."""
    doc: dict[str, Any] = {
        "backends": {"stt": "test-stt", "llm": "test-llm", "tts": "test-tts"},
        "session": {"warm_up": False},  # tests count backend calls from the first turn
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


test_engine_config.__test__ = False  # type: ignore[attr-defined]


@asynccontextmanager
async def open_test_engine(
    overrides: Mapping[str, Any] | None = None, *, host: PluginHost | None = None
) -> AsyncIterator[Engine]:
    """An opened engine on the test backends.

    Plugins: the ones shipped with ScaiVoice, or only those of ``host`` when given.
    """
    if host is None:
        host = PluginHost()
        host.load_entry_points(include_third_party=False)
    config = config_from_mapping(test_engine_config(overrides))
    async with Engine.open(config, host) as engine:
        yield engine


async def run_memory_session(
    engine: Engine, transport: MemoryTransport, *, tenant: str = "default"
) -> None:
    """Run one session of ``engine`` over ``transport`` until it ends (start it in a nursery).

    Cancelling it closes the session with 1001, as a server shutdown would.
    """
    principal = Principal(tenant=tenant, key_id="test", permissions=frozenset({PERMISSION_USE}))
    await Session(engine, principal, transport).run()
