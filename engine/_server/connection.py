"""The server on one port: HTTP/1.1 (h11) for the HTTP API, a lean WebSocket for sessions.

::

    connection ──► h11: request head ──┬─ GET /v1/session, Upgrade: websocket ─► 101, then
                                       │    StreamWebSocketTransport (the sans-IO codec of
                                       │    _websocket) ─► ScaiVoiceApp.serve_session
                                       └─ anything else ─► the ASGI app (http scope), with
                                            keep-alive, until the client or the server closes

The HTTP API is the ASGI app, served through a small bridge (h11 does the HTTP/1.1 framing).
Session WebSockets skip the ASGI layer: a voice session is about 50 small messages a second in
each direction, and per message this path parses one frame header and unmasks the payload,
with the session's reader reading the socket itself. Other WebSocket paths are refused with 403.

Each connection is one task of the server's nursery. Stopping (:func:`serve_http`'s
``shutdown_trigger``) closes the listeners and idle keep-alive connections at once and gives the
others ``graceful_timeout_s`` to finish; draining the sessions before that is the caller's job.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio

from .._errors import SessionClosed
from .app import ScaiVoiceApp
from .http import Message, Scope
from .websocket import (
    Close,
    Ping,
    WebSocketCodec,
    WebSocketProtocolError,
    accept_key,
    binary_frame,
    close_frame,
    pong_frame,
    text_frame,
    valid_key,
)

__all__ = ["StreamWebSocketTransport", "serve_http"]

log = logging.getLogger("scaivoice.server")

_SESSION_PATH = "/v1/session"
_RECEIVE_BYTES = 65536
_MAX_HEAD_BYTES = 64 * 1024


class StreamWebSocketTransport:
    """The session :class:`~scaivoice.engine._session.transport.Transport` over a connected socket.

    Lean by design, since a voice session is many small messages: :meth:`receive` waits for
    the socket and reads it itself (no task in between), and parses every message of a read
    before it reads again; a send goes straight to the socket and waits only while the
    socket's buffer is full. Pings are answered with pongs. Sends from several tasks (the
    writer, a pong, the goodbye frames) go out one at a time, and a send cancelled part way (a
    client that does not read: ``slow_client``) keeps the rest of its frame and sends it first
    next time, so frames never interleave.

    Args:
        sock: the connection's socket (non-blocking), after the 101 response. The transport
            owns it: :meth:`close_socket` closes it.
        max_message_bytes: larger messages close the connection with 1009.
        initial: bytes that followed the handshake in the same read.
    """

    def __init__(
        self, sock: stdlib_socket.socket, *, max_message_bytes: int, initial: bytes = b""
    ) -> None:
        self._sock = sock
        self._codec = WebSocketCodec(max_message_bytes=max_message_bytes)
        if initial:
            self._codec.receive_data(initial)
        self._closed = False  # a close frame was sent or received: no more data frames
        self._lost = False  # the connection failed or ended: nothing more can be read or sent
        self._sending = False
        self._send_done = trio.lowlevel.ParkingLot()
        self._unsent = b""
        self.close_code: int | None = None
        """The close code this side sent, once it closed (for logs and tests)."""

    async def receive(self) -> str | bytes:
        codec = self._codec
        while True:
            try:
                event = codec.next_event()
            except WebSocketProtocolError as exc:
                await self.close(exc.close_code, exc.reason)
                raise SessionClosed(f"WebSocket protocol error: {exc.reason}") from exc
            if event is None:
                codec.receive_data(await self._read())
                continue
            kind = type(event)
            if kind is bytes or kind is str:
                return event  # type: ignore[return-value]  # narrowed by the type test
            if isinstance(event, Ping):
                if not self._closed:
                    await self._send(pong_frame(event.payload))
                continue
            assert isinstance(event, Close)
            if not self._closed:  # the client closes first: answer with its code
                await self.close(1000 if event.code == 1005 else event.code, "")
            self._lost = self._closed = True
            raise SessionClosed(f"the client disconnected ({event.code})")

    async def _read(self) -> bytes:
        if self._lost:
            raise SessionClosed("the client disconnected")
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            try:
                data = self._sock.recv(_RECEIVE_BYTES)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._lost = self._closed = True
                raise SessionClosed(f"the client disconnected ({exc})") from exc
            if not data:
                self._lost = self._closed = True
                raise SessionClosed("the client disconnected (no close frame)")
            return data

    async def send_text(self, text: str) -> None:
        if self._closed:
            raise SessionClosed("the socket is closed")
        await self._send(text_frame(text))

    async def send_bytes(self, data: bytes) -> None:
        if self._closed:
            raise SessionClosed("the socket is closed")
        await self._send(binary_frame(data))

    async def close(self, code: int, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self.close_code = int(code)
        try:
            await self._send(close_frame(int(code), reason[:120]))
        except SessionClosed:
            pass

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Read and drop what the client still sends until its close frame, its disconnect or a
        deadline (the closing handshake)."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    await self.receive()
                except SessionClosed:
                    return

    def close_socket(self) -> None:
        """Close the socket (tasks waiting on it are woken with an error first)."""
        self._lost = self._closed = True
        if self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)
        self._sock.close()

    async def _send(self, frame: bytes) -> None:
        while self._sending:
            await self._send_done.park()
        if self._lost:
            raise SessionClosed("the client disconnected")
        data = self._unsent + frame if self._unsent else frame
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost = self._closed = True
            raise SessionClosed(f"the client disconnected ({exc})") from exc
        if sent == len(data):
            self._unsent = b""
            return
        self._sending = True
        rest = memoryview(data)[sent:]
        try:
            while rest:
                await trio.lowlevel.wait_writable(self._sock)
                try:
                    rest = rest[self._sock.send(rest) :]
                except BlockingIOError:
                    continue
        except OSError as exc:
            self._lost = self._closed = True
            raise SessionClosed(f"the client disconnected ({exc})") from exc
        finally:
            self._unsent = bytes(rest)
            self._sending = False
            self._send_done.unpark()


class _Connection:
    """One client connection: HTTP/1.1 requests until it upgrades to a session or closes."""

    def __init__(
        self,
        stream: trio.SocketStream,
        app: ScaiVoiceApp,
        *,
        max_message_bytes: int,
        keep_alive_s: float,
        server: _ServerState,
    ) -> None:
        self.stream = stream
        self.app = app
        self.max_message_bytes = max_message_bytes
        self.keep_alive_s = keep_alive_s
        self.state = server
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
        sock = stream.socket
        self.client = _address(sock.getpeername())
        self.server = _address(sock.getsockname())

    async def run(self) -> None:
        try:
            while True:
                request = await self._next_request()
                if request is None:
                    return
                if _is_websocket(request):
                    await self._websocket(request)
                    return
                await self._http(request)
                if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                    return
                self.conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            with trio.move_on_after(1, shield=True):
                await self.stream.aclose()

    async def _next_request(self) -> h11.Request | None:
        """The next request's head; ``None`` when the client leaves, idles past the keep-alive
        time or the server stops. A malformed request is answered with 400."""
        if self.state.stopping:
            return None
        scope = trio.CancelScope(deadline=trio.current_time() + self.keep_alive_s)
        self.state.idle.add(scope)
        try:
            with scope:
                while True:
                    try:
                        event = self.conn.next_event()
                    except h11.RemoteProtocolError as exc:
                        await self._simple(exc.error_status_hint, "bad request")
                        return None
                    if event is h11.NEED_DATA:
                        data = await self.stream.receive_some(_RECEIVE_BYTES)
                        self.conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        return event
                    return None  # ConnectionClosed, or PAUSED after a protocol switch
        finally:
            self.state.idle.discard(scope)
        return None

    # ---------------------------------------------------------------- WebSocket

    async def _websocket(self, request: h11.Request) -> None:
        headers = _headers(request)
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        if urllib.parse.unquote(path) != _SESSION_PATH:
            await self._simple(403, "no WebSocket endpoint here")
            return
        key = _header(headers, b"sec-websocket-key")
        if _header(headers, b"sec-websocket-version") != "13":
            await self._simple(
                426, "WebSocket version 13 only", [(b"sec-websocket-version", b"13")]
            )
            return
        if key is None or not valid_key(key):
            await self._simple(400, "a WebSocket upgrade needs a valid Sec-WebSocket-Key")
            return
        while True:  # a GET carries no body: its end follows at once
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(_RECEIVE_BYTES))
                continue
            if isinstance(event, h11.EndOfMessage):
                break
            await self._simple(400, "a WebSocket upgrade carries no body")
            return
        response = h11.InformationalResponse(
            status_code=101,
            headers=[
                (b"upgrade", b"websocket"),
                (b"connection", b"Upgrade"),
                (b"sec-websocket-accept", accept_key(key).encode("ascii")),
            ],
        )
        await self.stream.send_all(self.conn.send(response) or b"")
        initial, _closed = self.conn.trailing_data
        sock = stdlib_socket.socket(fileno=self.stream.socket.detach())
        sock.setblocking(False)
        transport = StreamWebSocketTransport(
            sock, max_message_bytes=self.max_message_bytes, initial=initial
        )
        scope: Scope = {
            "type": "websocket",
            "path": _SESSION_PATH,
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "client": self.client,
            "server": self.server,
        }
        try:
            await self.app.serve_session(scope, transport)
            await transport.drain()
        finally:
            transport.close_socket()

    # ---------------------------------------------------------------- HTTP

    async def _http(self, request: h11.Request) -> None:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode("ascii"),
            "method": request.method.decode("ascii"),
            "scheme": "http",
            "path": urllib.parse.unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": _headers(request),
            "client": self.client,
            "server": self.server,
        }
        exchange = _Exchange(self)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            log.exception("the HTTP handler for %s %s failed", scope["method"], path)
            if exchange.started:
                raise trio.BrokenResourceError("the response was cut short") from None
            await self._simple(500, "internal server error")
            return
        if not exchange.started:
            await self._simple(500, "no response")
        elif self.conn.our_state is not h11.DONE:
            raise trio.BrokenResourceError("the response was left unfinished")
        if self.conn.their_state is h11.SEND_BODY:  # the handler left the body unread
            await exchange.discard_body()

    async def _simple(
        self, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """A short plain-text response, then the connection closes."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (text + "\n").encode("utf-8")
        fields = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *(headers or []),
        ]
        try:
            data = self.conn.send(h11.Response(status_code=status, headers=fields))
            data = (data or b"") + (self.conn.send(h11.Data(data=body)) or b"")
            data += self.conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        await self.stream.send_all(data)


@dataclass(slots=True)
class _ServerState:
    """What connections share: the cancel scopes of those waiting for a request."""

    idle: set[trio.CancelScope] = field(default_factory=set)
    stopping: bool = False


class _Exchange:
    """One HTTP request's ASGI ``receive`` and ``send``."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.started = False
        self.body_done = False

    async def receive(self) -> Message:
        connection = self.connection
        conn = connection.conn
        if not self.body_done:
            if conn.they_are_waiting_for_100_continue:
                data = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                await connection.stream.send_all(data or b"")
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await connection.stream.receive_some(_RECEIVE_BYTES)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Data):
                    return {"type": "http.request", "body": bytes(event.data), "more_body": True}
                if isinstance(event, h11.EndOfMessage):
                    self.body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return {"type": "http.disconnect"}  # ConnectionClosed before the body ended
        # The body was read: wait until the client goes away (a streamed response's end).
        while True:
            try:
                data = await connection.stream.receive_some(_RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return {"type": "http.disconnect"}
            if not data:
                return {"type": "http.disconnect"}
            conn.receive_data(data)  # a pipelined request: kept for the next cycle

    async def send(self, message: Message) -> None:
        conn = self.connection.conn
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            data = conn.send(h11.Response(status_code=int(message["status"]), headers=headers))
        elif kind == "http.response.body":
            data = conn.send(h11.Data(data=bytes(message.get("body", b"")))) or b""
            if not message.get("more_body", False):
                data += conn.send(h11.EndOfMessage()) or b""
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if data:
            await self.connection.stream.send_all(data)

    async def discard_body(self) -> None:
        """Read the rest of a request body the handler did not want (keeps the connection
        usable), at most 1 MiB of it; past that the connection closes."""
        left = 1 << 20
        while not self.body_done and left > 0:
            message = await self.receive()
            left -= len(message.get("body", b""))
            if message["type"] == "http.disconnect":
                return


def _headers(request: h11.Request) -> list[tuple[bytes, bytes]]:
    return [(bytes(name), bytes(value)) for name, value in request.headers]


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _is_websocket(request: h11.Request) -> bool:
    upgrade = connection = False
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade = upgrade or b"websocket" in value.lower()
        elif name == b"connection":
            connection = connection or b"upgrade" in value.lower()
    return upgrade and connection and request.method == b"GET"


def _address(address: Any) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


def _url(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    if listener.socket.family == stdlib_socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve_http(
    app: ScaiVoiceApp,
    *,
    host: str,
    port: int,
    max_message_bytes: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    keep_alive_s: float = 30.0,
    graceful_timeout_s: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns.

    Reports the bound URLs (``http://host:port``, the real port when 0 was asked) through
    ``task_status``. On shutdown the listeners close, idle connections close, and requests and
    sessions still running get ``graceful_timeout_s`` before they are cancelled. Cancelling
    ``serve_http`` cancels every connection at once.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    state = _ServerState()

    async def handle(stream: trio.SocketStream) -> None:
        try:
            stream.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, True)
        except OSError:
            pass
        connection = _Connection(
            stream,
            app,
            max_message_bytes=max_message_bytes,
            keep_alive_s=keep_alive_s,
            server=state,
        )
        await connection.run()

    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(
                partial(trio.serve_listeners, handle, listeners, handler_nursery=connections)
            )
            task_status.started([_url(listener) for listener in listeners])
            await shutdown_trigger()
            accepting.cancel_scope.cancel()
        state.stopping = True
        for listener in listeners:
            await listener.aclose()
        for scope in list(state.idle):
            scope.cancel()
        connections.cancel_scope.deadline = trio.current_time() + graceful_timeout_s
