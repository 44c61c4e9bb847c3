"""The ASGI application: the WebSocket session endpoint and the HTTP API on one port.

Routes::

    GET  /v1/session                WebSocket, protocol v1 (API key or ?token=)
    POST /v1/session-tokens         mint a single-use browser session token (scaivoice:use)
    GET  /v1/voices                 the voice library
    POST /v1/audio/transcriptions   OpenAI-compatible: an audio file in, its transcript out
    POST /v1/audio/speech           OpenAI-compatible: text in, audio (an OGG/Opus note...) out
    GET  /v1/models                 the models those two answer to
    GET  /health                    backends' and features' health; 503 while draining or down
    GET  /livez, /readyz            liveness (the process serves) and readiness (takes sessions)
    GET  /metrics                   Prometheus metrics
    GET  /v1/admin/sessions[/{id}]  the caller's tenant's sessions (scaivoice:admin)
    GET  /v1/admin/events           live session events, server-sent (scaivoice:admin)

HTTP errors are RFC 9457 problem documents (``application/problem+json``) with a stable
``code``. WebSocket refusals are an ``error`` frame followed by a close code, so that browsers,
which cannot read a refused handshake's status, still learn why.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Protocol

import msgspec
import trio

from ._admin import AdminApi
from ._auth import (
    MAX_TOKEN_TTL_S,
    PERMISSION_ADMIN,
    PERMISSION_USE,
    Principal,
    bearer_from_headers,
)
from ._engine import Engine
from ._errors import AuthError, SessionClosed, Unauthorized
from ._frames import ErrorFrame, encode_server_frame
from ._http import (
    HttpProblem,
    Receive,
    Scope,
    Send,
    header,
    parse_multipart,
    read_body,
    send_bytes,
    send_json,
    send_problem,
)
from ._limits import LimitExceeded
from ._session import Session
from ._transport import CloseCode, Transport
from ._voicenotes import VoiceNotes

__all__ = ["ScaiVoiceApp", "SessionSocket"]

log = logging.getLogger("scaivoice.server")

_ADMIN_SESSION = "/v1/admin/sessions/"


class SessionSocket(Transport, Protocol):
    """A session's socket as the server holds it: a transport that can also be drained."""

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Read and drop what the client still sends until it disconnects (or a deadline)."""
        ...


class AsgiWebSocketTransport:
    """The session :class:`~scaivoice.engine._transport.Transport` over an ASGI WebSocket."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closed = False

    async def receive(self) -> str | bytes:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            if message.get("bytes") is not None:
                return bytes(message["bytes"])
            return str(message.get("text") or "")
        self._closed = True
        raise SessionClosed(f"the client disconnected ({message.get('code', 'no code')})")

    async def send_text(self, text: str) -> None:
        if self._closed:
            raise SessionClosed("the socket is closed")
        await self._send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        if self._closed:
            raise SessionClosed("the socket is closed")
        await self._send({"type": "websocket.send", "bytes": data})

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Read and drop what the client still sends until it disconnects (or a deadline).

        The server queues inbound messages for the app; one that stops reading with messages
        queued (a flood just refused) would keep the connection from ever closing.
        """
        with trio.move_on_after(timeout_s):
            while True:
                message = await self._receive()
                if message["type"] == "websocket.disconnect":
                    return

    async def close(self, code: int, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        await self._send({"type": "websocket.close", "code": int(code), "reason": reason[:120]})


class ScaiVoiceApp:
    """The ASGI app serving one opened :class:`Engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.voice_notes = VoiceNotes(engine)
        self._routes: Mapping[
            tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]
        ] = {
            ("GET", "/health"): self._health,
            ("GET", "/v1/voices"): self._voices,
            ("POST", "/v1/session-tokens"): self._session_tokens,
            ("POST", "/v1/audio/transcriptions"): self._transcriptions,
            ("POST", "/v1/audio/speech"): self._speech,
            ("GET", "/v1/models"): self._models,
            ("GET", "/v1/admin/sessions"): self._admin_sessions,
            ("GET", "/v1/admin/events"): self._admin_events,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/livez"): self._liveness,
            ("GET", "/readyz"): self._readiness,
        }
        self.admin = AdminApi(engine)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # ---------------------------------------------------------------- WebSocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        if scope["path"] != "/v1/session":
            await send({"type": "websocket.close", "code": 1008})  # handshake refused: 403
            return
        await send({"type": "websocket.accept"})
        await self.serve_session(scope, AsgiWebSocketTransport(receive, send))

    async def serve_session(self, scope: Scope, transport: SessionSocket) -> None:
        """Admit the caller of an accepted session WebSocket and run its session.

        ``scope`` carries the request's ``headers`` and ``query_string`` (the credentials). A
        refusal (draining, credentials, limits) is an ``error`` frame and a close code. Returns
        once the session ended and the client closed, or a short drain deadline passed.
        """
        if self.engine.sessions.draining:
            await _refuse(
                transport,
                "server_draining",
                "the server is shutting down; reconnect elsewhere",
                CloseCode.TRY_AGAIN_LATER,
            )
            return
        try:
            principal = await self._authenticate(scope)
            principal.require(PERMISSION_USE)
            self.engine.admit_session(principal.tenant)
            token = _query_token(scope)
            if token is not None and not self.engine.auth.open_mode:
                self.engine.auth.consume_session_token(token)  # one session per token
        except AuthError as exc:
            code = CloseCode.FORBIDDEN if exc.code == "forbidden" else CloseCode.UNAUTHORIZED
            await _refuse(transport, exc.code, str(exc), code)
            return
        except LimitExceeded as exc:
            await _refuse(transport, exc.code, str(exc), CloseCode.TOO_MANY)
            return
        await Session(self.engine, principal, transport).run()
        await transport.drain()

    async def _authenticate(self, scope: Scope) -> Principal:
        """The caller of a session WebSocket: a session token (``?token=``) or an API key."""
        return await self.engine.authenticate(
            bearer=bearer_from_headers(scope.get("headers", [])), token=_query_token(scope)
        )

    async def _user(self, scope: Scope, permission: str = PERMISSION_USE) -> Principal:
        """The caller of the HTTP API (an API key: session tokens open sessions only),
        holding ``permission``, within its tenant's request budget."""
        bearer = bearer_from_headers(scope.get("headers", []))
        if bearer is None and _query_token(scope) is not None and not self.engine.auth.open_mode:
            raise Unauthorized(
                "session tokens open sessions only; the HTTP API needs an API key: "
                "'Authorization: Bearer <key>'"
            )
        principal = await self.engine.authenticate(bearer=bearer, token=None)
        principal.require(permission)
        self.engine.admit(principal.tenant)
        return principal

    # ---------------------------------------------------------------- HTTP

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get((scope["method"], scope["path"]))
        if route is None and scope["method"] == "GET" and scope["path"].startswith(_ADMIN_SESSION):
            route = self._admin_session
        try:
            if route is None:
                if any(path == scope["path"] for _, path in self._routes):
                    raise HttpProblem(
                        405, "method_not_allowed", f"{scope['method']} is not allowed here"
                    )
                raise HttpProblem(404, "not_found", f"no route {scope['path']}")
            await route(scope, receive, send)
        except AuthError as exc:
            status = 403 if exc.code == "forbidden" else 401
            await send_problem(send, HttpProblem(status, exc.code, str(exc)))
        except LimitExceeded as exc:
            retry = max(1, math.ceil(exc.retry_after))
            await send_problem(send, HttpProblem(429, exc.code, str(exc), retry_after=retry))
        except HttpProblem as problem:
            await send_problem(send, problem)

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        backends = await self.engine.health()
        features = self.engine.feature_health()
        draining = self.engine.sessions.draining
        down = [label for label, entry in backends.items() if not entry["ok"]]
        down += [f"feature:{name}" for name, entry in features.items() if not entry["ok"]]
        healthy = not down
        default_voice = backends.get(f"tts:{self.engine.default_tts}", {"ok": False})
        status = "draining" if draining else ("ok" if healthy else "degraded")
        await send_json(
            send,
            200 if healthy and not draining else 503,
            {
                "status": status,
                "synthesis": bool(default_voice["ok"]) and not draining,
                "down": down,
                "backends": backends,
                "features": features,
                "sessions": {"live": len(self.engine.sessions.live)},
                "speech_cache": self.voice_notes.cache.describe(),
            },
        )

    async def _voices(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope)
        default = self.engine.config.session_defaults(principal.tenant).voice_id
        data = [
            {
                "id": entry.id,
                "backend": entry.backend,
                "name": entry.voice.name,
                "language": entry.voice.language,
                "sample_rate": entry.voice.sample_rate,
                "description": entry.voice.description,
                "default": entry.id == default,
            }
            for entry in self.engine.voices.values()
        ]
        await send_json(send, 200, {"object": "list", "data": data})

    async def _session_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, limit=64 * 1024)
        principal = await self.engine.authenticate(
            bearer=bearer_from_headers(scope.get("headers", [])), token=None
        )
        principal.require(PERMISSION_USE)
        self.engine.admit(principal.tenant)
        request = _token_request(body, header(scope, b"content-type"))
        lifetime = self.engine.auth.token_lifetime(request.ttl_s)
        token, expires_at = self.engine.auth.mint_session_token(principal, ttl_s=lifetime)
        await send_json(
            send,
            201,
            {
                "token": token,
                "expires_at": expires_at,
                "expires_in": lifetime,
                "url": "/v1/session?token=" + urllib.parse.quote(token),
            },
        )

    # ---------------------------------------------------------------- operators

    async def _admin_sessions(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        principal = await self._user(scope, PERMISSION_ADMIN)
        await self.admin.sessions(principal, send, {k: v[-1] for k, v in query.items()})

    async def _admin_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope, PERMISSION_ADMIN)
        await self.admin.session(principal, send, scope["path"][len(_ADMIN_SESSION) :])

    async def _admin_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope, PERMISSION_ADMIN)
        await self.admin.events(principal, receive, send)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.admin.metrics(send)

    async def _liveness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"live": True})

    async def _readiness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.admin.readiness(send)

    # ---------------------------------------------------------------- voice notes

    async def _transcriptions(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope)
        limit = self.engine.config.voice_notes.max_upload_bytes
        body = await read_body(receive, limit=limit + 64 * 1024)  # room for the form's fields
        form = parse_multipart(body, header(scope, b"content-type"))
        upload = form.get("file")
        if upload is not None and len(upload.data) > limit:
            raise HttpProblem(413, "payload_too_large", f"audio files are limited to {limit} bytes")
        fmt, document = await self.voice_notes.transcribe(principal, form)
        if fmt in ("json", "verbose_json"):
            await send_json(send, 200, document)
            return
        content_type = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
        await send_bytes(send, 200, document.encode(), content_type[fmt] + "; charset=utf-8")

    async def _speech(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope)
        body = await read_body(receive, limit=256 * 1024)
        result = await self.voice_notes.speech(principal, body)
        headers = [
            ("x-scaivoice-cache", "hit" if result.cache_hit else "miss"),
            ("x-scaivoice-voice", result.voice_id),
        ]
        headers += [("x-scaivoice-warning", warning) for warning in result.warnings]
        await send_bytes(send, 200, result.data, result.content_type, headers)

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._user(scope)
        await send_json(send, 200, {"object": "list", "data": self.voice_notes.models()})


class _TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The optional JSON body of ``POST /v1/session-tokens``."""

    ttl_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """The token's lifetime in seconds; at most ``MAX_TOKEN_TTL_S`` (longer is cut to it)."""


def _token_request(body: bytes, content_type: str | None) -> _TokenRequest:
    """Parse a mint request: no body, or a JSON object.

    Raises:
        HttpProblem: 415 ``unsupported_media_type`` for a body that is not JSON by its
            ``Content-Type``; 400 ``invalid_json`` / ``invalid_request`` for a bad one.
    """
    if not body.strip():
        return _TokenRequest()
    media = (content_type or "").partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise HttpProblem(
            415, "unsupported_media_type", "send the request as application/json (or no body)"
        )
    try:
        return msgspec.json.decode(body, type=_TokenRequest)
    except msgspec.ValidationError as exc:
        raise HttpProblem(
            400,
            "invalid_request",
            f'{exc}; the body is {{"ttl_s": <seconds, > 0, at most {MAX_TOKEN_TTL_S:g}>}}',
        ) from exc
    except msgspec.DecodeError as exc:
        raise HttpProblem(400, "invalid_json", f"the body is not JSON: {exc}") from exc
    except RecursionError:
        raise HttpProblem(400, "invalid_json", "the body's JSON is nested too deeply") from None


def _query_token(scope: Scope) -> str | None:
    """The ``token`` of the request's query string, if any."""
    query = urllib.parse.parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


async def _refuse(transport: SessionSocket, code: str, message: str, close: int) -> None:
    frame = ErrorFrame(code=code, message=message, fatal=True)
    await transport.send_text(encode_server_frame(frame).decode())
    await transport.close(close, code)
    await transport.drain()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
