"""Test helpers shipped with the engine (like ``trio.testing``): for your tests and ours.

- :func:`memory_transport_pair` — a session transport and the client end, in memory.
- :class:`MemoryClient` — drive a session frame by frame and read typed frames back.
- :func:`open_test_engine` — an engine on the deterministic test backends (or any you name).
- :func:`run_memory_session` — run one protocol session of an engine over a memory transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
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
    "AudioReceived",
    "MemoryClient",
    "MemoryTransport",
    "memory_transport_pair",
    "open_test_engine",
    "run_memory_session",
    "test_engine_config",
]

_Message = str | bytes


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

    async def start(self, **config: Any) -> ServerFrame:
        """Send ``session.start`` with ``config``; return ``session.started``."""
        await self.send_json({"type": "session.start", "protocol": 1, "config": config})
        return await self.receive_frame()

    async def receive(self) -> ServerFrame | AudioReceived:
        """The next server frame. Raises ``EndOfChannel`` once the server closed."""
        message = await self._inbox.receive()
        if isinstance(message, bytes):
            return AudioReceived(message)
        return decode_server_frame(message)

    async def receive_frame(self) -> ServerFrame:
        """The next *text* frame (binary frames before it are skipped)."""
        while True:
            item = await self.receive()
            if not isinstance(item, AudioReceived):
                return item

    async def receive_until(
        self, frame_type: str, **fields: Any
    ) -> list[ServerFrame | AudioReceived]:
        """Everything up to and including the first frame of ``frame_type`` matching ``fields``."""
        seen: list[ServerFrame | AudioReceived] = []
        while True:
            item = await self.receive()
            seen.append(item)
            if (
                not isinstance(item, AudioReceived)
                and item.__struct_config__.tag == frame_type
                and all(getattr(item, k) == v for k, v in fields.items())
            ):
                return seen

    async def aclose(self) -> None:
        """Close the client's side (the server sees the peer go away)."""
        await self._outbox.aclose()


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
