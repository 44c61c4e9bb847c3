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
with the session's reader reading the socket itself. ``/v1/realtime`` takes the same path (its
session speaks OpenAI Realtime events through a translating transport). Other WebSocket paths
are refused with 403.

Each connection is one task of the server's nursery. Stopping (:func:`serve_http`'s
``shutdown_trigger``) closes the listeners and idle keep-alive connections at once and gives the
others ``graceful_timeout_s`` to finish; draining the sessions before that is the caller's job.

Every read has a deadline (``[server]`` settings, :class:`~scaivoice.engine._host.config.ServerConfig`):

- a request head must arrive whole within ``head_timeout_s`` (of the connection's opening for
  its first request, of its first byte on a kept-alive connection), else ``408`` and close; a
  head over 64 KiB is ``431`` and close;
- a kept-alive connection idle for ``keep_alive_timeout_s`` is closed;
- a request body must keep arriving: every byte buys ``1 / min_body_bytes_per_s`` seconds,
  banked for at most ``body_grace_s`` (the time it may stall); past its deadline the request is
  answered ``408`` (a problem document, ``request_timeout``) and the connection closes.

Connections are counted, in all (``max_connections``) and per client address
(``max_connections_per_ip``); one over either limit is answered ``503`` with ``Retry-After``
before anything is read from it, and closed. A client hanging up mid-request is the peer going
away (one debug line), not an error.

The session handshake is RFC 6455 section 4.2.1, strictly: a ``GET`` over HTTP/1.1 to exactly
``/v1/session`` or ``/v1/realtime`` (no percent-encoding), ``Host``, ``Upgrade: websocket`` and
``Connection: Upgrade`` as tokens of their lists, a ``Sec-WebSocket-Key`` of 16 bytes in base64,
no body (``400`` otherwise), ``Sec-WebSocket-Version: 13`` (else ``426`` naming it).
"""

from __future__ import annotations

import logging
import math
import socket as stdlib_socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any

import h11
import trio

from .._errors import SessionClosed
from .._host.config import ServerConfig
from .._realtime.transport import REALTIME_PATH
from .app import ScaiVoiceApp
from .http import HttpProblem, Message, Scope
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
_BUSY_RETRY_AFTER_S = 1
_BUSY_LINGER_S = 1.0  # a refused client's request is read and dropped this long at most


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
                # Failing the connection (RFC 6455 section 7.1.7): the close frame, then the
                # TCP close; what the client sends after the error is not read any more.
                await self.close(exc.close_code, exc.reason)
                self._lost = True
                self._shutdown_write()
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
            # Both close frames are out: the server closes the TCP connection first (RFC 6455
            # section 7.1.1), now, however long the session takes to wind down.
            self._lost = self._closed = True
            self._shutdown_write()
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
        deadline (the closing handshake). Returns at once when the connection already ended
        (both close frames exchanged, a protocol error, a disconnect)."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    await self.receive()
                except SessionClosed:
                    return

    def close_socket(self) -> None:
        """Close the socket (tasks waiting on it are woken with an error first).

        What the client sent meanwhile is read and dropped first, so that closing does not reset
        the connection (a reset can make the client lose the close frame it has not read yet).
        """
        self._lost = self._closed = True
        sock = self._sock
        if sock.fileno() < 0:
            return
        trio.lowlevel.notify_closing(sock)
        self._shutdown_write()
        try:
            for _ in range(16):  # at most 1 MiB: only what is already buffered
                if not sock.recv(_RECEIVE_BYTES):
                    break
        except OSError:  # nothing (more) buffered, or the connection is gone
            pass
        sock.close()

    def _shutdown_write(self) -> None:
        """Send the FIN after what was sent: the client sees the connection end now."""
        try:
            self._sock.shutdown(stdlib_socket.SHUT_WR)
        except OSError:  # already shut, or the connection is gone
            pass

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
        server: _ServerState,
        client: tuple[str, int] | None,
        local: tuple[str, int] | None,
    ) -> None:
        self.stream = stream
        self.app = app
        self.max_message_bytes = max_message_bytes
        self.state = server
        self.settings = server.settings
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
        self.client = client
        self.server = local

    async def run(self) -> None:
        """Serve requests until the client leaves, a deadline passes or the server stops (the
        caller closes the stream)."""
        try:
            first = True
            while True:
                request = await self._next_request(first)
                first = False
                if request is None:
                    return
                if _is_websocket(request):
                    await self._websocket(request)
                    return
                await self._http(request)
                if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                    return
                self.conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("the connection from %s ended: %s", _who(self.client), exc)
        except h11.ProtocolError as exc:
            log.debug("the connection from %s broke HTTP/1.1: %s", _who(self.client), exc)

    async def _next_request(self, first: bool) -> h11.Request | None:
        """The next request's head; ``None`` when the client leaves, idles past the keep-alive
        time or the server stops. A malformed request is answered with 400, a head too large
        with 431, one that does not arrive whole in time with 408."""
        if self.state.stopping:
            return None
        settings = self.settings
        wait_s = settings.head_timeout_s if first else settings.keep_alive_timeout_s
        scope = trio.CancelScope(deadline=trio.current_time() + wait_s)
        arriving = False  # a byte of the head came
        self.state.idle.add(scope)
        try:
            with scope:
                while True:
                    try:
                        event = self.conn.next_event()
                    except h11.RemoteProtocolError as exc:
                        await self._simple(exc.error_status_hint, f"bad request: {exc}")
                        return None
                    if event is h11.NEED_DATA:
                        data = await self.stream.receive_some(_RECEIVE_BYTES)
                        if data and not arriving:
                            arriving = True
                            if not first:  # the keep-alive wait is over: the head's deadline
                                scope.deadline = trio.current_time() + settings.head_timeout_s
                        self.conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        if _head_bytes(event) > _MAX_HEAD_BYTES:
                            await self._simple(431, "the request head is over 64 KiB")
                            return None
                        return event
                    return None  # ConnectionClosed, or PAUSED after a protocol switch
        finally:
            self.state.idle.discard(scope)
        if arriving and not self.state.stopping:
            log.debug("a request head from %s took too long", _who(self.client))
            await self._simple(408, "the request head took too long")
        return None

    # ---------------------------------------------------------------- WebSocket

    async def _websocket(self, request: h11.Request) -> None:
        """The opening handshake (RFC 6455 section 4.2.1), then the session."""
        headers = _headers(request)
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        if path not in (_SESSION_PATH, REALTIME_PATH):
            await self._simple(403, "no WebSocket endpoint here")
            return
        refusal = _handshake_refusal(request)
        if refusal is not None:
            await self._simple(400, refusal)
            return
        if _header(headers, b"sec-websocket-version") != "13":
            await self._simple(
                426, "WebSocket version 13 only", [(b"sec-websocket-version", b"13")]
            )
            return
        keys = [value for name, value in request.headers if name == b"sec-websocket-key"]
        key = keys[0].decode("latin-1").strip() if len(keys) == 1 else None
        if key is None or not valid_key(key):
            await self._simple(400, "a WebSocket upgrade needs one valid Sec-WebSocket-Key")
            return
        event = self.conn.next_event()  # no body: its end is known from the head
        if not isinstance(event, h11.EndOfMessage):
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
            "path": path,
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
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the client went away while the response was sent: run() notes it
        except HttpProblem as problem:  # from receive (408), when the app did not answer it
            if exchange.started:
                raise trio.BrokenResourceError("the response was cut short") from None
            await self._simple(problem.status, problem.detail)
            return
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
        if self.conn.their_state is h11.SEND_BODY and not exchange.ended:
            await exchange.discard_body()  # the handler left the body unread

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
            data = self.conn.send(
                h11.Response(status_code=status, headers=fields, reason=_reason(status))
            )
            data = (data or b"") + (self.conn.send(h11.Data(data=body)) or b"")
            data += self.conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        await self.stream.send_all(data)


@dataclass(slots=True)
class _ServerState:
    """What connections share: the settings, the cancel scopes of those waiting for a request,
    and the count of open connections, in all and per client address."""

    settings: ServerConfig
    idle: set[trio.CancelScope] = field(default_factory=set)
    stopping: bool = False
    connections: int = 0
    per_address: dict[str, int] = field(default_factory=dict)

    def admit(self, address: str) -> bool:
        """Count one more connection from ``address``; ``False`` (not counted) over a limit."""
        settings = self.settings
        if self.connections >= settings.max_connections:
            return False
        held = self.per_address.get(address, 0)
        if settings.max_connections_per_ip and held >= settings.max_connections_per_ip:
            return False
        self.connections += 1
        self.per_address[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """Count a connection :meth:`admit` counted as closed."""
        self.connections -= 1
        held = self.per_address.pop(address) - 1
        if held:
            self.per_address[address] = held


class _Exchange:
    """One HTTP request's ASGI ``receive`` and ``send``.

    ``receive`` reads the body under its deadline (see the module docs): past it, it raises
    :class:`HttpProblem` 408 ``request_timeout`` and the response closes the connection. A
    client that hangs up mid-body is ``http.disconnect``.
    """

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.started = False
        self.body_done = False
        self.ended = False  # nothing more will be read: the client left, or timed out
        self.timed_out = False  # the body came too slowly
        self._deadline: float | None = None

    async def receive(self) -> Message:
        if self.timed_out:
            raise _body_timeout()
        if self.ended:
            return {"type": "http.disconnect"}
        if not self.body_done:
            return await self._body()
        # The body was read: wait until the client goes away (a streamed response's end).
        connection = self.connection
        pipelined = 0
        while True:
            try:
                data = await connection.stream.receive_some(_RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return {"type": "http.disconnect"}
            pipelined += len(data)
            if not data or pipelined > _MAX_HEAD_BYTES:
                self.ended = True
                return {"type": "http.disconnect"}
            connection.conn.receive_data(data)  # a pipelined request: kept for the next cycle

    async def _body(self) -> Message:
        connection = self.connection
        conn = connection.conn
        settings = connection.settings
        if conn.they_are_waiting_for_100_continue:
            go_on = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            await connection.stream.send_all(go_on or b"")
        if self._deadline is None:
            self._deadline = trio.current_time() + settings.body_grace_s
        rate = settings.min_body_bytes_per_s
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:  # the client hung up mid-body
                return self._gone(str(exc))
            if event is h11.NEED_DATA:
                data: bytes | None = None
                with trio.move_on_at(self._deadline):
                    try:
                        data = await connection.stream.receive_some(_RECEIVE_BYTES)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        return self._gone(str(exc) or type(exc).__name__)
                if data is None:
                    self.ended = self.timed_out = True
                    log.debug("a request body from %s came too slowly", _who(connection.client))
                    raise _body_timeout()
                # Each byte buys 1 / rate seconds, banked for body_grace_s at most.
                now = trio.current_time()
                earned = len(data) / rate if rate else math.inf
                self._deadline = min(self._deadline + earned, now + settings.body_grace_s)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            if isinstance(event, h11.EndOfMessage):
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return self._gone("the connection closed")  # ConnectionClosed before the body ended

    def _gone(self, why: str) -> Message:
        self.ended = True
        log.debug("the client %s went away mid-request: %s", _who(self.connection.client), why)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        conn = self.connection.conn
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            if self.ended:  # the body was cut off: this response ends the connection
                headers.append((b"connection", b"close"))
            status = int(message["status"])
            data = conn.send(
                h11.Response(status_code=status, headers=headers, reason=_reason(status))
            )
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
        try:
            while not self.body_done and not self.ended and left > 0:
                message = await self.receive()
                left -= len(message.get("body", b""))
        except HttpProblem:  # too slow: the connection closes
            return


def _body_timeout() -> HttpProblem:
    return HttpProblem(408, "request_timeout", "the request body arrived too slowly")


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _headers(request: h11.Request) -> list[tuple[bytes, bytes]]:
    return [(bytes(name), bytes(value)) for name, value in request.headers]


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _tokens(request: h11.Request, name: bytes) -> set[str]:
    """The comma-separated tokens of every ``name`` header, lower-cased."""
    tokens: set[str] = set()
    for key, value in request.headers:
        if key == name:
            tokens.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    return tokens


def _is_websocket(request: h11.Request) -> bool:
    """Whether the request asks for a WebSocket (then it must be a valid handshake)."""
    return "websocket" in _tokens(request, b"upgrade")


def _handshake_refusal(request: h11.Request) -> str | None:
    """Why the WebSocket opening handshake is invalid (RFC 6455 section 4.2.1), or ``None``.
    The key and the version are checked apart (they have their own answers)."""
    if request.method != b"GET":
        return "a WebSocket upgrade is a GET"
    if request.http_version != b"1.1":
        return "a WebSocket upgrade needs HTTP/1.1"
    if not any(name == b"host" for name, _ in request.headers):
        return "a WebSocket upgrade needs a Host header"
    if "upgrade" not in _tokens(request, b"connection"):
        return "a WebSocket upgrade needs Connection: Upgrade"
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return "a WebSocket upgrade carries no body"
    return None


def _head_bytes(request: h11.Request) -> int:
    """The size of the request's head as sent (at least: h11 drops optional whitespace)."""
    size = len(request.method) + len(request.target) + 14  # "M T HTTP/1.1\r\n", "\r\n"
    return size + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _address(address: Any) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


def _who(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client is not None else "a client"


def _url(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    if listener.socket.family == stdlib_socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _refuse_busy(stream: trio.SocketStream) -> None:
    """Answer 503 with Retry-After before reading anything, then close.

    The client's request is read and dropped for a moment after the response (until it closes),
    so that closing does not reset the connection before the client read the answer.
    """
    body = b"too many connections; retry later\n"
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {_BUSY_RETRY_AFTER_S}\r\n"
        "connection: close\r\n\r\n"
    )
    with trio.move_on_after(_BUSY_LINGER_S):
        try:
            await stream.send_all(head.encode("ascii") + body)
            await stream.send_eof()
            while await stream.receive_some(_RECEIVE_BYTES):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def serve_http(
    app: ScaiVoiceApp,
    *,
    host: str,
    port: int,
    max_message_bytes: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    settings: ServerConfig | None = None,
    graceful_timeout_s: float = 5.0,
    listeners: list[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns.

    ``listeners``, when given, are served instead (already listening: a worker's sockets that
    share the port); they are closed on shutdown like those this opens.

    ``settings`` gives the deadlines and connection limits (``host`` and ``port`` are the
    arguments'); unset, the defaults. Reports the bound URLs (``http://host:port``, the real
    port when 0 was asked) through ``task_status``. On shutdown the listeners close, idle
    connections close, and requests and sessions still running get ``graceful_timeout_s``
    before they are cancelled. Cancelling ``serve_http`` cancels every connection at once.
    """
    if listeners is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    state = _ServerState(settings if settings is not None else ServerConfig())

    async def handle(stream: trio.SocketStream) -> None:
        try:
            sock = stream.socket
            client = _address(sock.getpeername())
            local = _address(sock.getsockname())
        except OSError:  # the client is already gone
            await stream.aclose()
            return
        address = client[0] if client is not None else ""
        if not state.admit(address):
            log.debug("refused a connection from %s: too many connections", address)
            try:
                await _refuse_busy(stream)
            finally:
                await stream.aclose()
            return
        try:
            try:
                stream.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, True)
            except OSError:
                pass
            connection = _Connection(
                stream,
                app,
                max_message_bytes=max_message_bytes,
                server=state,
                client=client,
                local=local,
            )
            await connection.run()
        finally:
            state.release(address)  # before the close: a client that saw it may come back
            with trio.move_on_after(1, shield=True):
                await stream.aclose()

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
