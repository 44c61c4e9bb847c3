"""The load generator's wire: a lean client WebSocket over a non-blocking socket."""

from __future__ import annotations

import base64
import collections
import errno
import ipaddress
import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

import msgspec
import trio

from scaivoice.engine import ScaiVoiceError

__all__ = ["Wire", "WireClosed", "client_frame", "open_socket", "target", "text_frame"]


class WireClosed(Exception):
    """The socket reached end of file or failed."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame. Masked, as clients must, with the all-zero key: the payload goes
    out as is (the server unmasks it all the same), so frames can be built once and reused."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def text_frame(doc: Mapping[str, Any]) -> bytes:
    return client_frame(0x1, msgspec.json.encode(doc))


# A session.update that changes nothing: the server handles it in order with the audio (in
# the session's dialogue task, where the VAD runs), so its answer is as late as the audio is.


class Wire:
    """A lean client WebSocket over a non-blocking socket, so that the load generator costs
    far less CPU than the server it loads: frames are sent with one ``send`` call (a frame
    that does not fit waits in a buffer for the next send), and server frames are parsed by
    hand (servers send them unmasked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.inbox = bytearray()
        self._fragments: list[bytes] = []
        self._opcode = 0
        self._ready: collections.deque[tuple[int, bytes]] = collections.deque()

    def send(self, data: bytes) -> None:
        """Send now what the socket takes; buffer the rest (sent by the next call)."""
        if self.out:
            self.out += data
            data = bytes(self.out)
            self.out.clear()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise WireClosed(str(exc)) from exc
        if sent < len(data):
            self.out += data[sent:]

    async def send_all(self, data: bytes) -> None:
        self.send(data)
        while self.out:
            await trio.lowlevel.wait_writable(self.sock)
            self.send(b"")

    async def receive(self) -> tuple[int, bytes]:
        """The next complete message: (opcode, payload)."""
        while True:
            if self._ready:
                return self._ready.popleft()
            self._parse()
            if self._ready:
                return self._ready.popleft()
            await self._fill()

    async def _fill(self) -> None:
        """Wait for bytes from the server and add them to ``inbox``."""
        await trio.lowlevel.wait_readable(self.sock)
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            raise WireClosed(str(exc)) from exc
        if not data:
            raise WireClosed("end of file")
        self.inbox += data

    def _parse(self) -> None:
        messages = self._ready
        buf = self.inbox
        while len(buf) >= 2:
            size, pos = buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, pos = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, pos = int.from_bytes(buf[2:10], "big"), 10
            if buf[1] & 0x80:
                raise WireClosed("the server sent a masked frame")
            if len(buf) < pos + size:
                break
            fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
            payload = bytes(buf[pos : pos + size])
            del buf[: pos + size]
            if opcode >= 0x8:  # control frames are never fragmented
                messages.append((opcode, payload))
                continue
            if opcode:
                self._opcode = opcode
            self._fragments.append(payload)
            if fin:
                messages.append((self._opcode, b"".join(self._fragments)))
                self._fragments.clear()

    async def handshake(self, host: str, target: str, api_key: str | None) -> None:
        """The HTTP upgrade. Raises ``WireClosed`` when the server refuses it."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if api_key:
            lines.append(f"Authorization: Bearer {api_key}")
        await self.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in self.inbox:
            if len(self.inbox) > 65536:
                raise WireClosed("no end to the handshake response")
            await self._fill()
        head, _, rest = bytes(self.inbox).partition(b"\r\n\r\n")
        self.inbox = bytearray(rest)
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split()[1:2] != ["101"]:
            raise WireClosed(f"handshake refused: {status}")


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
