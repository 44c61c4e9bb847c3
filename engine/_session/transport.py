"""The one interface a session needs from its socket, and the close codes it may use."""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["CloseCode", "Transport"]


class CloseCode(enum.IntEnum):
    """WebSocket close codes used by ScaiVoice (docs/protocol.md lists when each is sent)."""

    NORMAL = 1000
    """``session.end`` from the client, answered."""
    GOING_AWAY = 1001
    """The server is shutting down (drain deadline passed)."""
    MESSAGE_TOO_BIG = 1009
    """A frame over the hard size limit (the WebSocket layer refuses it)."""
    INTERNAL_ERROR = 1011
    """A bug in the server; the error event says ``internal_error``."""
    TRY_AGAIN_LATER = 1013
    """The server is draining and takes no new sessions."""
    PROTOCOL_ERROR = 4400
    """A fatal protocol violation (see the preceding ``error`` event)."""
    UNAUTHORIZED = 4401
    """Missing, wrong or expired credentials."""
    FORBIDDEN = 4403
    """Credentials without the ``scaivoice:use`` permission."""
    TIMEOUT = 4408
    """No ``session.start`` in time, or the session was idle too long."""
    MAX_DURATION = 4410
    """The session reached its maximum duration."""
    SLOW_CLIENT = 4420
    """The client did not read the server's frames in time."""
    TOO_MANY = 4429
    """A limit: too many sessions for the tenant, or too many requests / frames."""
    UNSUPPORTED_PROTOCOL = 4426
    """``session.start`` asked for a protocol version this server does not speak."""


class Transport(Protocol):
    """A message-oriented, bidirectional socket (a WebSocket, or memory in tests)."""

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for text frames, ``bytes`` for binary ones.

        Raises:
            SessionClosed: the peer went away. Cancelling abandons the wait.
        """
        ...

    async def send_text(self, text: str) -> None:
        """Send a text frame. Raises ``SessionClosed`` if the peer is gone."""
        ...

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame. Raises ``SessionClosed`` if the peer is gone."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Close the socket with ``code``. Idempotent; never raises for a gone peer."""
        ...
