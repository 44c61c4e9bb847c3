"""The operator's HTTP surface: admin session telemetry, live events, metrics, probes.

Admin routes need ``scaivoice:admin`` and only ever show the caller's own tenant: another
tenant's session is "not found", never "forbidden", so its existence does not leak.
"""

from __future__ import annotations

import json
import time
from typing import Any

import trio

from .._host.auth import PERMISSION_ADMIN, Principal
from .._host.engine import Engine
from .http import HttpProblem, Receive, Send, send_bytes, send_json
from .runtime import RuntimeMonitor

__all__ = ["AdminApi"]

_HEARTBEAT_S = 15.0


class AdminApi:
    """Handlers for the admin routes of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.monitor = RuntimeMonitor()
        """Samples the event-loop lag while its ``run`` task runs (the server starts it)."""

    async def sessions(self, principal: Principal, send: Send, query: dict[str, str]) -> None:
        """``GET /v1/admin/sessions[?status=live|ended]``: the tenant's sessions, newest first."""
        principal.require(PERMISSION_ADMIN)
        status = query.get("status")
        if status not in (None, "live", "ended"):
            raise HttpProblem(400, "invalid_request", "status must be 'live' or 'ended'")
        now = time.time()
        records = self.engine.telemetry.sessions(principal.tenant)
        data = [r.summary(now) for r in records]
        document: dict[str, Any] = {"object": "list"}
        cluster = self.engine.cluster
        if cluster is not None:  # every replica's, each summary naming its replica
            others = await cluster.sessions(principal.tenant)
            data = _newest_first(
                [d | {"replica": cluster.replica_id} for d in data] + (others or [])
            )
            if others is None:
                document["partial"] = True  # Redis is down: this replica's sessions only
        data = [d for d in data if status is None or status == d["status"]]
        await send_json(send, 200, {**document, "data": data})

    async def session(self, principal: Principal, send: Send, session_id: str) -> None:
        """``GET /v1/admin/sessions/{id}``: one session in detail."""
        principal.require(PERMISSION_ADMIN)
        record = self.engine.telemetry.find(principal.tenant, session_id)
        if record is None:
            raise HttpProblem(404, "not_found", f"no session {session_id!r}")
        await send_json(send, 200, record.detail(time.time()))

    async def events(self, principal: Principal, receive: Receive, send: Send) -> None:
        """``GET /v1/admin/events``: the tenant's session events as server-sent events.

        Runs until the client disconnects (or the server shuts down).
        """
        principal.require(PERMISSION_ADMIN)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        async with self.engine.watch_events(principal.tenant) as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                await _chunk(send, b": connected\n\n")
                while True:
                    with trio.move_on_after(_HEARTBEAT_S) as quiet:
                        event = await events.receive()
                    if quiet.cancelled_caught:
                        await _chunk(send, b": heartbeat\n\n")
                        continue
                    await _chunk(send, _sse(event))

    async def runtime(self, principal: Principal, send: Send) -> None:
        """``GET /v1/admin/runtime``: this server process's tasks, memory, descriptors, lag.

        With several workers it is the worker that answered (``pid``).
        """
        principal.require(PERMISSION_ADMIN)
        sessions_live = len(self.engine.sessions.live)
        await send_json(send, 200, self.monitor.snapshot(sessions_live=sessions_live))

    async def metrics(self, send: Send) -> None:
        """``GET /metrics``: Prometheus text format."""
        await send_bytes(
            send,
            200,
            self.engine.telemetry.prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        )

    async def readiness(self, send: Send) -> None:
        """``GET /readyz``: 200 when taking sessions; 503 while draining or a backend is down."""
        draining = self.engine.sessions.draining
        backends = await self.engine.health()
        down = sorted(name for name, entry in backends.items() if not entry["ok"])
        ready = not draining and not down
        await send_json(
            send,
            200 if ready else 503,
            {"ready": ready, "draining": draining, "backends_down": down},
        )


def _newest_first(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live sessions by start, newest first, then ended ones by end, newest first."""
    live = sorted((d for d in summaries if d["status"] == "live"), key=lambda d: -d["started_at"])
    ended = sorted((d for d in summaries if d["status"] != "live"), key=lambda d: -d["ended_at"])
    return live + ended


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


def _sse(event: dict[str, Any]) -> bytes:
    kind = str(event.get("event", "message"))
    return f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode()
