"""The raw WebSocket side of the suite: connect with (or without) credentials, send frames as
they are, and record every received frame with its arrival time.

Text frames are kept as plain JSON objects, never decoded into an implementation's types: the
suite judges the server by docs/protocol.md alone, and unknown frame types and fields are
recorded, not rejected (clients must ignore them).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket

from .outcome import Failed

__all__ = ["Connection", "Credentials", "Received", "ServerGone", "open_connection", "session_url"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """How a connection authenticates: an API key (header), a session token (query), or none."""

    api_key: str | None = None
    token: str | None = None

    @property
    def empty(self) -> bool:
        return not self.api_key and not self.token


@dataclass(frozen=True, slots=True, eq=False)
class Received:
    """One frame from the server, with the time it was read (``trio.current_time()``)."""

    t: float
    frame: Mapping[str, Any] | None = None
    """A text frame that is a JSON object."""
    size: int = 0
    """Bytes of a binary frame."""
    binary: bool = False
    raw: str | None = None
    """A text frame that is not a JSON object (a protocol violation by itself)."""

    @property
    def type(self) -> str:
        if self.binary:
            return "binary"
        if self.frame is None:
            return "<not a JSON object>"
        kind = self.frame.get("type")
        return kind if isinstance(kind, str) else "<no type>"

    def get(self, key: str, default: Any = None) -> Any:
        return default if self.frame is None else self.frame.get(key, default)

    def is_state(self, *states: str) -> bool:
        return self.type == "state" and (not states or self.get("state") in states)

    def describe(self) -> str:
        if self.binary:
            return f"<binary {self.size} bytes>"
        if self.frame is None:
            return f"<text {self.raw!r:.80}>"
        text = json.dumps(dict(self.frame), separators=(",", ":"))
        return text if len(text) <= 160 else text[:157] + "..."


class ServerGone(Failed):
    """The server closed the connection while the suite waited for something."""


def session_url(url: str, credentials: Credentials) -> str:
    """``url`` with ``/v1/session`` when no path is given, and ``?token=`` when a token is set."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/v1/session"
    query = parts.query
    if credentials.token:
        token = "token=" + urllib.parse.quote(credentials.token, safe="")
        query = f"{query}&{token}" if query else token
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, query, ""))


def http_base(url: str) -> str:
    """``http(s)://host:port`` of a session URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


@dataclass(slots=True)
class Connection:
    """An open WebSocket to the server; everything received lands in :attr:`items`."""

    ws: trio_websocket.WebSocketConnection
    label: str
    items: list[Received] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    closed: bool = False
    send_failed: bool = False

    # ---------------------------------------------------------------- sending

    async def send(self, doc: Mapping[str, Any]) -> float:
        """Send a JSON text frame; return the time it was handed to the socket."""
        return await self.send_raw(json.dumps(dict(doc)))

    async def send_raw(self, message: str | bytes) -> float:
        """Send any text or binary frame as is (a closed socket is remembered, not raised)."""
        now = trio.current_time()
        try:
            await self.ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            self.send_failed = True
            self._closed(exc.reason)
        return now

    async def send_audio(self, pcm: bytes, sample_rate: int, frame_ms: int = 20) -> None:
        """Stream ``pcm`` in ``frame_ms`` frames, as fast as the socket takes them."""
        step = sample_rate * frame_ms // 1000 * 2
        for offset in range(0, len(pcm), step):
            await self.send_raw(pcm[offset : offset + step])
            if self.closed:
                return

    # ---------------------------------------------------------------- receiving

    async def receive(self, timeout: float) -> Received | None:
        """The next frame, or ``None`` after ``timeout`` s. Raises :class:`ServerGone` once the
        connection is closed and every frame sent before the close was read."""
        with trio.move_on_after(timeout):
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self._closed(exc.reason)
                raise ServerGone(self._gone_message()) from None
            now = trio.current_time()
            if isinstance(message, bytes):
                item = Received(now, size=len(message), binary=True)
            else:
                item = _parse(now, message)
            self.items.append(item)
            return item
        return None

    async def expect(
        self, what: str, predicate: Callable[[Received], bool], timeout: float
    ) -> Received:
        """Read until a frame matches ``predicate``; fail naming ``what`` after ``timeout`` s."""
        deadline = trio.current_time() + timeout
        start = len(self.items)
        while True:
            left = deadline - trio.current_time()
            if left <= 0:
                raise Failed(
                    f"timed out after {timeout:g} s waiting for {what}; "
                    f"received meanwhile: {self.summary(start)}"
                )
            try:
                item = await self.receive(left)
            except ServerGone as exc:
                raise ServerGone(f"waiting for {what}: {exc}") from None
            if item is not None and predicate(item):
                return item

    async def read_for(self, seconds: float) -> list[Received]:
        """Everything received in the next ``seconds`` (less if the server closes)."""
        start = len(self.items)
        deadline = trio.current_time() + seconds
        while (left := deadline - trio.current_time()) > 0:
            try:
                await self.receive(left)
            except ServerGone:
                break
        return self.items[start:]

    async def until_quiet(self, quiet_s: float, limit_s: float) -> list[Received]:
        """Read until no frame arrives for ``quiet_s`` (at most ``limit_s`` in all)."""
        start = len(self.items)
        deadline = trio.current_time() + limit_s
        while (left := deadline - trio.current_time()) > 0:
            try:
                item = await self.receive(min(quiet_s, left))
            except ServerGone:
                break
            if item is None:
                break
        return self.items[start:]

    async def until_closed(self, timeout: float) -> bool:
        """Read until the server closes (True) or ``timeout`` passes (False)."""
        deadline = trio.current_time() + timeout
        while (left := deadline - trio.current_time()) > 0:
            try:
                await self.receive(left)
            except ServerGone:
                return True
        return False

    def summary(self, start: int = 0, limit: int = 12) -> str:
        """The frames received since index ``start``, shortened, for failure messages."""
        items = self.items[start:]
        if not items:
            return "nothing"
        shown = [i.describe() for i in _squash_binary(items[-limit:])]
        more = f"({len(items) - limit} earlier frames) " if len(items) > limit else ""
        return more + ", ".join(shown)

    # ---------------------------------------------------------------- internals

    def _closed(self, reason: trio_websocket.CloseReason | None) -> None:
        if not self.closed:
            self.closed = True
            if reason is not None:
                self.close_code, self.close_reason = reason.code, reason.reason

    def _gone_message(self) -> str:
        reason = f" {self.close_reason!r}" if self.close_reason else ""
        return f"the server closed the connection (close code {self.close_code}{reason})"


def _parse(now: float, message: str) -> Received:
    try:
        doc = json.loads(message)
    except ValueError:
        return Received(now, raw=message)
    if not isinstance(doc, dict):
        return Received(now, raw=message)
    return Received(now, frame=doc)


def _squash_binary(items: list[Received]) -> list[Received]:
    """Runs of binary frames as one entry (their total size)."""
    out: list[Received] = []
    for item in items:
        if item.binary and out and out[-1].binary:
            out[-1] = Received(out[-1].t, size=out[-1].size + item.size, binary=True)
        else:
            out.append(item)
    return out


@asynccontextmanager
async def open_connection(
    url: str, credentials: Credentials, *, label: str, connect_timeout: float = 10.0
) -> AsyncIterator[Connection]:
    """Open a WebSocket to the session endpoint (no ``session.start`` is sent).

    Raises:
        Failed: the connection or the WebSocket upgrade failed.
    """
    headers = (
        [(b"authorization", f"Bearer {credentials.api_key}".encode())]
        if credentials.api_key
        else []
    )
    target = session_url(url, credentials)
    try:
        async with trio_websocket.open_websocket_url(
            target,
            extra_headers=headers,
            message_queue_size=4096,
            max_message_size=16 * 1024 * 1024,
            connect_timeout=connect_timeout,
            disconnect_timeout=5.0,
        ) as ws:
            yield Connection(ws, label)
    except trio_websocket.ConnectionRejected as exc:
        raise Failed(
            f"the WebSocket upgrade to {target} was refused with HTTP {exc.status_code} (is the "
            "URL right? §1: a refused session is an error frame and a close code, not an HTTP "
            "status)"
        ) from None
    except trio_websocket.HandshakeError as exc:
        cause = exc.__cause__ or exc.__context__
        why = str(exc) or (f"{type(cause).__name__}: {cause}" if cause else type(exc).__name__)
        raise Failed(f"could not open a WebSocket to {url}: {why}") from None
    except OSError as exc:
        raise Failed(f"could not connect to {url}: {exc}") from None
