"""The load generator's wire: a client WebSocket (wsproto) over a non-blocking socket.

wsproto does the framing (masking, fragments, UTF-8, the close handshake, answering pings);
this module does the socket: a frame goes out with one ``send`` call on a non-blocking socket
(what does not fit waits in a buffer for the next send), so one ticker can send every
session's due frame without a task switch.

Why wsproto rather than a hand-written codec (which the load generator had before): it
must stay far cheaper than the server it loads. Measured on 2 shared cores (CPython 3.11,
wsproto 1.3.2), client CPU per frame: wsproto frames and masks a 640-byte audio frame in about
8 us and parses a server frame in 9-13 us, where the hand-written codec took 0.03-0.9 us and
0.6-1.6 us. A session at 20 ms frames sends about 55 frames a second and receives about 20.
End to end, both generators loading the same server at once (sessions interleaved, 40 and 60
in all, 7 rounds): 0.26-0.56 % of a core per session with wsproto against 0.17-0.38 % by hand,
1.3x to 1.8x (median 1.47x). At the 60 sessions a 2-core box holds that is a fifth to a third
of a core, far from saturating the generator's process (``--clients`` spreads more sessions).
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import os
import socket
import urllib.parse

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError

from scaivoice.engine import ScaiVoiceError

__all__ = ["BINARY", "CLOSE", "TEXT", "Wire", "WireClosed", "open_socket", "target"]

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
_RECEIVE_BYTES = 1 << 16


class WireClosed(Exception):
    """The socket reached end of file or failed, or the server broke the protocol."""


class Wire:
    """One client WebSocket connection over a connected non-blocking socket.

    Sends never wait (:meth:`send_bytes`, :meth:`send_text`); :meth:`receive` returns whole
    messages. Pings are answered, and a close frame from the server is answered and returned
    as ``(CLOSE, b"")`` with its code in :attr:`close_code`; so is a frame that breaks the
    protocol (code 1002, as wsproto reports it). End of file and socket errors raise
    :class:`WireClosed`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.close_code: int | None = None
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._out = bytearray()
        self._text: list[str] = []
        self._binary: list[bytes | bytearray] = []
        self._ready: collections.deque[tuple[int, str | bytes]] = collections.deque()

    def send_bytes(self, payload: bytes) -> None:
        """Send a binary message now (what the socket does not take goes with the next send)."""
        self._send(BytesMessage(data=payload))

    def send_text(self, text: str) -> None:
        """Send a text message now (what the socket does not take goes with the next send)."""
        self._send(TextMessage(data=text))

    async def flush(self) -> None:
        """Wait until everything sent so far is in the socket."""
        while self._out:
            await trio.lowlevel.wait_writable(self.sock)
            self._write(b"")

    async def handshake(self, host: str, target: str, api_key: str | None) -> None:
        """The HTTP upgrade. Raises :class:`WireClosed` when the server refuses it."""
        headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
        self._send(Request(host=host, target=target, extra_headers=headers))
        await self.flush()
        while True:
            # One event at a time: the messages after the upgrade stay for receive().
            try:
                for event in self._ws.events():
                    if isinstance(event, AcceptConnection):
                        return
                    if isinstance(event, RejectConnection):
                        raise WireClosed(f"handshake refused: HTTP {event.status_code}")
            except ProtocolError as exc:
                raise WireClosed(f"handshake failed: {exc}") from exc
            await self._fill()

    async def receive(self) -> tuple[int, str | bytes]:
        """The next whole message: ``(TEXT, str)``, ``(BINARY, bytes)`` or ``(CLOSE, b"")``."""
        while not self._ready:
            self._take_events()
            if not self._ready:
                await self._fill()
        return self._ready.popleft()

    def _send(self, event: Event) -> None:
        try:
            data = self._ws.send(event)
        except ProtocolError as exc:
            raise WireClosed(str(exc)) from exc
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self._out:
            self._out += data
            data = bytes(self._out)
            self._out.clear()
        if not data:
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise WireClosed(str(exc)) from exc
        if sent < len(data):
            self._out += data[sent:]

    def _take_events(self) -> None:
        ready = self._ready
        try:
            for event in self._ws.events():
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        ready.append((TEXT, "".join(self._text)))
                        self._text.clear()
                elif isinstance(event, BytesMessage):
                    self._binary.append(event.data)
                    if event.message_finished:
                        ready.append((BINARY, b"".join(self._binary)))
                        self._binary.clear()
                elif isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    self._send(event.response())
                    ready.append((CLOSE, b""))
        except ProtocolError as exc:
            raise WireClosed(str(exc)) from exc

    async def _fill(self) -> None:
        """Wait for bytes from the server and hand them to wsproto."""
        await trio.lowlevel.wait_readable(self.sock)
        try:
            data = self.sock.recv(_RECEIVE_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            raise WireClosed(str(exc)) from exc
        if not data:
            raise WireClosed("end of file")
        try:
            self._ws.receive_data(data)
        except ProtocolError as exc:
            raise WireClosed(str(exc)) from exc


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket. Cancelling closes it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    connected = False
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((host, port))
        if error not in (0, errno.EINPROGRESS):
            raise OSError(error, os.strerror(error))
        await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        connected = True
        return sock
    finally:
        if not connected:
            sock.close()


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def target(url: str, token: str | None) -> tuple[str, int, str]:
    """``ws://host:port/path`` -> (host, port, request target with the token)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ScaiVoiceError(f"bench load needs a ws:// URL, not {url!r}")
    if not _is_loopback(parts.hostname):
        raise ScaiVoiceError(
            f"bench load runs on the server's machine, against a loopback address; "
            f"{parts.hostname!r} is not one"
        )
    target = parts.path or "/"
    query = parts.query
    if token:
        query = (query + "&" if query else "") + "token=" + urllib.parse.quote(token)
    return parts.hostname, parts.port or 80, target + ("?" + query if query else "")
