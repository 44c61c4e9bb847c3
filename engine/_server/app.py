"""The ASGI application: the WebSocket session endpoint and the HTTP API on one port.

Routes::

    GET  /v1/session                WebSocket, protocol v1 (API key or ?token=)
    GET  /v1/realtime               WebSocket, OpenAI Realtime GA events over the same session
                                    (?model= echoed; API key or ?token=)
    POST /v1/session-tokens         mint a single-use browser session token (scaivoice:use)
    GET  /v1/voices                 the voice library
    GET  /client/scaivoice.js       the browser client, an ES module (static.py)
    GET  /playground                the browser playground, when enabled ([server] playground)
    POST /v1/audio/transcriptions   OpenAI-compatible: an audio file in, its transcript out
    POST /v1/audio/speech           OpenAI-compatible: text in, audio (an OGG/Opus note...) out
    GET  /v1/models                 the models those two answer to
    GET  /health                    backends' and features' health; 503 while draining or down
    GET  /livez, /readyz            liveness (the process serves) and readiness (takes sessions)
    GET  /metrics                   Prometheus metrics
    GET  /v1/admin/sessions[/{id}]  the caller's tenant's sessions (scaivoice:admin)
    GET  /v1/admin/events           live session events, server-sent (scaivoice:admin)
    GET  /v1/admin/runtime          this process's tasks, memory, descriptors, loop lag (admin)
    POST /v1/speakers               enrol a speaker for recognition (scaivoice:admin)
    GET  /v1/speakers               the tenant's enrolled speakers (scaivoice:admin)
    DELETE /v1/speakers/{id}        delete an enrolled speaker for good (scaivoice:admin)

HTTP errors are RFC 9457 problem documents (``application/problem+json``) with a stable
``code``. WebSocket refusals are an ``error`` frame followed by a close code, so that browsers,
which cannot read a refused handshake's status, still learn why.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

import msgspec

from .._errors import AuthError, LimitExceeded, Unauthorized
from .._host.auth import (
    MAX_TOKEN_TTL_S,
    PERMISSION_ADMIN,
    PERMISSION_USE,
    Principal,
    bearer_from_headers,
)
from .._host.cluster import SessionSlot
from .._host.engine import Engine
from .._realtime.transport import REALTIME_PATH, RealtimeTransport
from .._session.runner import Session
from .._session.transport import CloseCode, Transport
from .._voicenotes.api import VoiceNotes
from ..frames import ErrorFrame, encode_server_frame
from .admin import AdminApi
from .http import (
    HttpProblem,
    Message,
    Receive,
    Scope,
    Send,
    header,
    multipart_parts,
    read_body,
    send_bytes,
    send_json,
    send_problem,
)
from .speakers import SPEAKERS, SpeakersApi
from .static import CLIENT_PATH, PLAYGROUND_PATH, WebAssets, send_static

__all__ = ["ScaiVoiceApp"]

log = logging.getLogger("scaivoice.server")

_ADMIN_SESSION = "/v1/admin/sessions/"
_SPEAKER = SPEAKERS + "/"


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
            ("GET", "/v1/admin/runtime"): self._admin_runtime,
            ("POST", SPEAKERS): self._enrol_speaker,
            ("GET", SPEAKERS): self._list_speakers,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/livez"): self._liveness,
            ("GET", "/readyz"): self._readiness,
            ("GET", CLIENT_PATH): self._client_script,
        }
        self.web = WebAssets.load(engine.config)
        if self.web.playground is not None:
            self._routes = {**self._routes, ("GET", PLAYGROUND_PATH): self._playground}
        self.admin = AdminApi(engine)
        self.speakers = SpeakersApi(engine)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, self._counting(scope, send))

    # ---------------------------------------------------------------- sessions

    async def serve_session(self, scope: Scope, transport: Transport) -> None:
        """Admit the caller of an accepted session WebSocket and run its session.

        ``scope`` carries the request's ``headers`` and ``query_string`` (the credentials). A
        refusal (draining, credentials, limits) is an ``error`` frame and a close code. Returns
        once the session ended and its socket was closed (the connection drains what follows).
        On ``/v1/realtime`` the socket speaks OpenAI Realtime events: the same session runs over
        a translating transport, refusals included.
        """
        if scope.get("path") == REALTIME_PATH:
            model = _query_value(scope, "model") or "scaivoice"
            transport = RealtimeTransport(transport, model=model)
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
            slot = await self.engine.admit_session(principal.tenant)
        except AuthError as exc:
            code = CloseCode.FORBIDDEN if exc.code == "forbidden" else CloseCode.UNAUTHORIZED
            await _refuse(transport, exc.code, str(exc), code)
            return
        except LimitExceeded as exc:
            await _refuse(transport, exc.code, str(exc), CloseCode.TOO_MANY)
            return
        async with slot:  # the tenant's slot, held until the session ends
            token = _query_token(scope)
            if token is not None and not self.engine.auth.open_mode:
                try:
                    await self.engine.consume_session_token(token)  # one session per token
                except AuthError as exc:
                    await _refuse(transport, exc.code, str(exc), CloseCode.UNAUTHORIZED)
                    return
            if slot.shared:
                transport = _SlotReleasing(transport, slot)
            await Session(self.engine, principal, transport).run()

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
        await self.engine.admit(principal.tenant)
        return principal

    # ---------------------------------------------------------------- HTTP

    def _counting(self, scope: Scope, send: Send) -> Send:
        """``send``, counting the response's status under the route's path (a session id in the
        path, or an unknown path, does not make a new series)."""
        path = scope["path"]
        if any(known == path for _, known in self._routes):
            route = path
        elif path.startswith(_ADMIN_SESSION):
            route = _ADMIN_SESSION + "{id}"
        elif path.startswith(_SPEAKER):
            route = _SPEAKER + "{id}"
        else:
            route = "other"

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.engine.telemetry.http_request(route, message["status"])
            await send(message)

        return counted

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get((scope["method"], scope["path"]))
        if route is None and scope["method"] == "GET" and scope["path"].startswith(_ADMIN_SESSION):
            route = self._admin_session
        if route is None and scope["method"] == "DELETE" and scope["path"].startswith(_SPEAKER):
            route = self._forget_speaker
        try:
            if route is None:
                if scope["path"].startswith(_SPEAKER):
                    raise HttpProblem(
                        405, "method_not_allowed", f"{scope['method']} is not allowed here"
                    )
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
        cluster = self.engine.cluster.health() if self.engine.cluster is not None else None
        if cluster is not None and not cluster["ok"]:
            down.append("cluster")
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
            }
            | ({} if cluster is None else {"cluster": cluster}),
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
        await self.engine.admit(principal.tenant)
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

    async def _admin_runtime(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope, PERMISSION_ADMIN)
        await self.admin.runtime(principal, send)

    async def _enrol_speaker(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope, PERMISSION_ADMIN)
        limit = self.engine.config.voice_notes.max_upload_bytes
        body = await read_body(receive, limit=limit + 64 * 1024)  # room for the form's fields
        parts = multipart_parts(body, header(scope, b"content-type"))
        status, document = await self.speakers.enroll(principal, parts, max_clip_bytes=limit)
        await send_json(send, status, document)

    async def _list_speakers(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope, PERMISSION_ADMIN)
        await send_json(send, 200, await self.speakers.speakers(principal))

    async def _forget_speaker(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope, PERMISSION_ADMIN)
        await send_json(send, 200, await self.speakers.forget(principal, scope["path"]))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.admin.metrics(send)

    async def _client_script(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_static(scope, send, self.web.client)

    async def _playground(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.web.playground is not None  # routed only when enabled
        await send_static(scope, send, self.web.playground)

    async def _liveness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"live": True})

    async def _readiness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.admin.readiness(send)

    # ---------------------------------------------------------------- voice notes

    async def _transcriptions(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._user(scope)
        limit = self.engine.config.voice_notes.max_upload_bytes
        body = await read_body(receive, limit=limit + 64 * 1024)  # room for the form's fields
        parts = multipart_parts(body, header(scope, b"content-type"))
        form = {part.name: part for part in parts}  # the last one of a name wins
        upload = form.get("file")
        if upload is not None and len(upload.data) > limit:
            raise HttpProblem(413, "payload_too_large", f"audio files are limited to {limit} bytes")
        fmt, document = await self.voice_notes.transcribe(principal, form, parts=parts)
        if fmt in ("json", "verbose_json", "diarized_json"):
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
    return _query_value(scope, "token")


def _query_value(scope: Scope, name: str) -> str | None:
    """The first ``name`` of the request's query string, if any."""
    query = urllib.parse.parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    values = query.get(name)
    return values[0] if values else None


class _SlotReleasing:
    """A session's transport that gives the tenant's shared slot back before it closes, so
    that a client that saw its session end may open the next one at once, on any replica."""

    def __init__(self, transport: Transport, slot: SessionSlot) -> None:
        self._transport = transport
        self._slot = slot

    async def receive(self) -> str | bytes:
        return await self._transport.receive()

    async def send_text(self, text: str) -> None:
        await self._transport.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._transport.send_bytes(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self._slot.release()
        await self._transport.close(code, reason)


async def _refuse(transport: Transport, code: str, message: str, close: int) -> None:
    frame = ErrorFrame(code=code, message=message, fatal=True)
    await transport.send_text(encode_server_frame(frame).decode())
    await transport.close(close, code)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
