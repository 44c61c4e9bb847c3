"""Operating the engine: permissions between tenants, admin telemetry, metrics, limits, keys,
identity providers and traces."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio

from scaivoice.engine import ProtocolViolation, SessionClosed, hash_key
from scaivoice.engine._host.auth import create_key, revoke_key
from scaivoice.engine.client import connect, frames

from .test_server import _close_of, running_server

ACME_USER, ACME_ADMIN, GLOBEX_ADMIN = "sk-acme-user", "sk-acme-admin", "sk-globex-admin"
JWT_SECRET = "a-shared-secret-for-the-test-idp-0123456789"

TENANTS: dict[str, Any] = {
    "tenants": {
        "acme": {
            "keys": [
                {"id": "acme-user", "hash": hash_key(ACME_USER), "roles": ["user"]},
                {"id": "acme-admin", "hash": hash_key(ACME_ADMIN), "roles": ["admin"]},
            ],
            "expose_transcripts": True,
        },
        "globex": {
            "keys": [{"id": "globex-admin", "hash": hash_key(GLOBEX_ADMIN), "roles": ["admin"]}],
        },
    }
}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _one_turn(url: str, key: str, text: str = "hello") -> str:
    async with connect(url, api_key=key) as session:
        await session.send_text(text)
        with trio.fail_after(10):
            async for event in session.events():
                if isinstance(event, frames.Metrics):
                    break
        await session.end()
        return session.session_id


# --------------------------------------------------------------------------- admin telemetry


async def test_admins_see_their_own_tenants_sessions_and_nothing_else() -> None:
    async with running_server(TENANTS) as (server, _):
        acme_session = await _one_turn(server.ws_url, ACME_USER, "my secret order")
        globex_session = await _one_turn(server.ws_url, GLOBEX_ADMIN)
        with trio.fail_after(5):
            while len(server.engine.telemetry.recent) < 2:
                await trio.sleep(0.01)
        async with httpx.AsyncClient(base_url=server.url) as http:
            listing = (await http.get("/v1/admin/sessions", headers=_auth(ACME_ADMIN))).json()
            assert [s["id"] for s in listing["data"]] == [acme_session]
            assert listing["data"][0]["turns"] == 1 and listing["data"][0]["status"] == "ended"
            detail = (
                await http.get(f"/v1/admin/sessions/{acme_session}", headers=_auth(ACME_ADMIN))
            ).json()
            assert detail["backends"]["llm"] == "test-llm"
            assert detail["turn_metrics"][0]["end_of_turn_to_first_audio_ms"] is not None
            assert detail["transcript"][0]["text"] == "You said: my secret order."  # opted in
            # Another tenant's session does not exist for acme, and vice versa.
            other = await http.get(
                f"/v1/admin/sessions/{globex_session}", headers=_auth(ACME_ADMIN)
            )
            assert (other.status_code, other.json()["code"]) == (404, "not_found")
            mine = await http.get(
                f"/v1/admin/sessions/{globex_session}", headers=_auth(GLOBEX_ADMIN)
            )
            assert mine.status_code == 200 and "transcript" not in mine.json()  # not opted in
            denied = await http.get("/v1/admin/sessions", headers=_auth(ACME_USER))
            assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")


async def test_live_session_events_stream_to_the_tenants_admin() -> None:
    async with running_server(TENANTS) as (server, _):
        events: list[dict[str, Any]] = []
        subscribed = trio.Event()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

            async def follow() -> None:
                async with http.stream("GET", "/v1/admin/events", headers=_auth(ACME_ADMIN)) as r:
                    assert r.headers["content-type"] == "text/event-stream"
                    async for line in r.aiter_lines():
                        if line == ": connected":  # sent once the subscription is in place
                            subscribed.set()
                        if line.startswith("data: "):
                            events.append(json.loads(line[6:]))
                            if events[-1]["event"] == "session.closed":
                                return

            with trio.fail_after(15):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(follow)
                    await subscribed.wait()
                    await _one_turn(server.ws_url, GLOBEX_ADMIN)  # another tenant: not seen
                    session_id = await _one_turn(server.ws_url, ACME_USER)
        kinds = [e["event"] for e in events]
        assert kinds[0] == "session.opened" and kinds[-1] == "session.closed"
        assert {"state", "turn", "agent_text"} <= set(kinds)
        assert {e["session_id"] for e in events} == {session_id}


async def test_prometheus_metrics_liveness_and_readiness() -> None:
    async with running_server(TENANTS) as (server, stop):
        await _one_turn(server.ws_url, ACME_USER)
        async with httpx.AsyncClient(base_url=server.url) as http:
            metrics = (await http.get("/metrics")).text
            assert 'scaivoice_sessions_total{tenant="acme"} 1.0' in metrics
            assert 'scaivoice_turns_total{tenant="acme"} 1.0' in metrics
            assert "scaivoice_stage_latency_seconds_bucket" in metrics
            assert (await http.get("/livez")).status_code == 200
            assert (await http.get("/readyz")).json()["ready"] is True
            async with connect(server.ws_url, api_key=ACME_USER):
                stop.set()
                with trio.fail_after(5):
                    while not server.engine.sessions.draining:
                        await trio.sleep(0.01)
                ready = await http.get("/readyz")
                assert (ready.status_code, ready.json()["draining"]) == (503, True)
                assert (await http.get("/livez")).status_code == 200


# --------------------------------------------------------------------------- limits


async def test_a_tenant_over_its_session_limit_is_refused_and_others_are_not() -> None:
    limits = {"tenants": {**TENANTS["tenants"]}}
    limits["tenants"]["acme"] = {**limits["tenants"]["acme"], "limits": {"max_sessions": 1}}
    async with running_server(limits) as (server, _):
        async with connect(server.ws_url, api_key=ACME_USER):
            assert await _close_of(server.ws_url, api_key=ACME_ADMIN) == (4429, "too_many_sessions")
            async with connect(server.ws_url, api_key=GLOBEX_ADMIN) as other:
                assert other.started is not None
        async with connect(server.ws_url, api_key=ACME_ADMIN) as again:  # the slot is free
            assert again.started is not None


async def test_request_rates_are_limited_per_tenant() -> None:
    async with running_server({**TENANTS, "limits": {"requests_per_minute": 2}}) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            statuses = [
                (await http.get("/v1/models", headers=_auth(ACME_USER))).status_code
                for _ in range(3)
            ]
            assert statuses == [200, 200, 429]
            refused = await http.get("/v1/models", headers=_auth(ACME_USER))
            assert refused.json()["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
            assert (await http.get("/v1/models", headers=_auth(GLOBEX_ADMIN))).status_code == 200


async def test_a_flood_of_frames_ends_the_session_with_4429() -> None:
    codes: list[str] = []

    async def read(session: Any) -> None:
        async for event in session.events():
            if isinstance(event, frames.ErrorFrame):
                codes.append(event.code)

    async with running_server() as (server, _), connect(server.ws_url) as session:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, session)
                with contextlib.suppress(SessionClosed):  # closed before all are sent
                    for _ in range(400):
                        await session.send({"type": "ping"})
        assert codes[-1] == "rate_limited"
        assert session.close_code == 4429


async def test_a_tenant_session_length_limit() -> None:
    limits = {"tenants": {"acme": {**TENANTS["tenants"]["acme"], "limits": {"max_session_s": 0.5}}}}
    async with (
        running_server(limits) as (server, _),
        connect(server.ws_url, api_key=ACME_USER) as s,
    ):
        with trio.fail_after(5):
            errors = [e async for e in s.events() if isinstance(e, frames.ErrorFrame)]
        assert errors[-1].code == "max_duration"
        assert s.close_code == 4410


async def test_speaker_recognition_needs_the_tenants_opt_in() -> None:
    opted = {
        "tenants": {
            **TENANTS["tenants"],
            "globex": {**TENANTS["tenants"]["globex"], "speaker_recognition": True},
        }
    }
    async with running_server(opted) as (server, _):
        with pytest.raises(ProtocolViolation) as refused:
            async with connect(
                server.ws_url, api_key=ACME_USER, config={"speaker_recognition": True}
            ):
                pass
        assert refused.value.code == "not_permitted"
        async with connect(
            server.ws_url, api_key=GLOBEX_ADMIN, config={"speaker_recognition": True}
        ) as session:
            warning = await session.receive()
            assert warning.code == "feature_unavailable"  # allowed, but not installed here


# --------------------------------------------------------------------------- credentials


async def test_keys_from_the_keys_file_work_until_revoked(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    key = create_key(keys, tenant="initech", roles=["user"], key_id="k1", now=time.time())
    assert key not in keys.read_text()
    async with running_server({"auth": {"keys_file": str(keys)}}) as (server, _):
        async with connect(server.ws_url, api_key=key) as session:
            assert session.started is not None
        revoke_key(keys, "k1", now=time.time())
        assert await _close_of(server.ws_url, api_key=key) == (4401, "unauthorized")


def _token(**claims: Any) -> str:
    payload = {"tenant": "acme", "scope": "scaivoice:use", "sub": "alice", "exp": time.time() + 60}
    return jwt.encode({**payload, **claims}, JWT_SECRET, algorithm="HS256")


async def test_an_identity_provider_plugin_authenticates_jwts() -> None:
    overrides = {
        **TENANTS,
        "auth": {
            "identity_provider": "jwt",
            "identity_provider_options": {"secret": JWT_SECRET, "algorithms": ["HS256"]},
        },
    }
    from scaivoice.engine import PluginHost

    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    async with running_server(overrides, host=host) as (server, _):
        async with connect(server.ws_url, api_key=_token()) as session:
            assert session.started is not None
        assert await _close_of(server.ws_url, api_key=_token(exp=time.time() - 120)) == (
            4401,
            "token_expired",
        )
        forged = jwt.encode(
            {"tenant": "acme", "scope": "scaivoice:use", "exp": time.time() + 60},
            "wrong-secret-0123456789-0123456789",
            algorithm="HS256",
        )
        assert await _close_of(server.ws_url, api_key=forged) == (4401, "unauthorized")
        assert await _close_of(server.ws_url, api_key=_token(scope="")) == (4403, "forbidden")
        async with connect(server.ws_url, api_key=ACME_USER) as session:  # API keys still work
            assert session.started is not None


# --------------------------------------------------------------------------- traces


async def test_sessions_are_traced_session_turn_stages() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running_server(tracer=provider.get_tracer("test")) as (server, _):
        async with connect(server.ws_url) as session:
            await session.send_text("hello")
            with trio.fail_after(10):
                async for event in session.events():
                    if isinstance(event, frames.Metrics):
                        break
            await session.end()
        with trio.fail_after(5):
            while not any(s.name == "scaivoice.session" for s in exporter.get_finished_spans()):
                await trio.sleep(0.01)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"scaivoice.session", "scaivoice.turn", "scaivoice.llm", "scaivoice.tts"} <= set(spans)
    assert spans["scaivoice.turn"].parent.span_id == spans["scaivoice.session"].context.span_id
    assert spans["scaivoice.llm"].parent.span_id == spans["scaivoice.turn"].context.span_id
