"""The real server (the engine's own HTTP/1.1 + WebSocket server) on loopback, port 0, with the real clients."""

from __future__ import annotations

import json
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from scaivoice.engine import (
    ConfigError,
    PluginHost,
    Principal,
    ProtocolViolation,
    RunningServer,
    config_from_mapping,
    hash_key,
    serve,
)
from scaivoice.engine._host.auth import Authenticator
from scaivoice.engine._talk import talk
from scaivoice.engine.client import AgentAudio, connect, frames
from scaivoice.engine.testing import test_engine_config

from .conftest import host_with, spoken_ms

KEY_ACME = "sk-test-acme-user"
KEY_AUDITOR = "sk-test-acme-auditor"
KEY_GLOBEX = "sk-test-globex"
SECRET = "test-token-secret"

TENANTS = {
    "auth": {"token_secret": SECRET, "roles": {"auditor": ["scaivoice:admin"]}},
    "tenants": {
        "acme": {
            "keys": [
                {"id": "acme-1", "hash": hash_key(KEY_ACME), "roles": ["user"]},
                {"id": "acme-audit", "hash": hash_key(KEY_AUDITOR), "roles": ["auditor"]},
            ],
            "defaults": {"voice_id": "test-tts:tone-b"},
        },
        "globex": {"keys": [{"id": "globex-1", "hash": hash_key(KEY_GLOBEX)}]},
    },
}


@asynccontextmanager
async def running_server(
    overrides: dict[str, Any] | None = None,
    *,
    host: PluginHost | None = None,
    tracer: Any = None,
) -> AsyncIterator[tuple[RunningServer, trio.Event]]:
    doc = test_engine_config({"server": {"port": 0, "drain_timeout_s": 0.3}, **(overrides or {})})
    config = config_from_mapping(doc)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, host or host_with(), shutdown_trigger=stop.wait, tracer=tracer)
        )
        yield server, stop
        stop.set()


async def _close_of(url: str, **kwargs: Any) -> tuple[int, str]:
    """Connect, expect a refusal: return (close code, error code)."""
    with trio.fail_after(10):
        try:
            async with connect(url, **kwargs):
                pass
        except ProtocolViolation as exc:
            return exc.close_code, exc.code
    raise AssertionError("the session was accepted")


async def test_a_full_turn_through_the_real_server() -> None:
    async with running_server() as (server, _), connect(server.ws_url) as session:
        await session.send_text("hello")
        audio = b""
        kinds = []
        with trio.fail_after(10):
            async for event in session.events():
                if isinstance(event, AgentAudio):
                    audio += event.pcm
                    continue
                kinds.append(event.__struct_config__.tag)
                if (
                    isinstance(event, frames.State)
                    and event.state == "idle"
                    and "agent.text.done" in kinds
                ):
                    break
        assert len(audio) / 2 / 24000 == pytest.approx(
            spoken_ms("You said: hello.") / 1000, abs=0.05
        )
        assert kinds.index("agent.audio.start") < kinds.index("agent.audio.done")


@pytest.mark.parametrize(
    ("kwargs", "close_code", "error_code"),
    [
        ({}, 4401, "unauthorized"),
        ({"api_key": "sk-wrong"}, 4401, "unauthorized"),
        ({"api_key": KEY_AUDITOR}, 4403, "forbidden"),
        ({"token": "sv1.garbage.garbage"}, 4401, "unauthorized"),
        ({"token": "not-a-token"}, 4401, "unauthorized"),
    ],
)
async def test_websocket_refusals_carry_an_error_code_and_a_close_code(
    kwargs: dict[str, Any], close_code: int, error_code: str
) -> None:
    async with running_server(TENANTS) as (server, _):
        closed, code = await _close_of(server.ws_url, **kwargs)
        assert (closed, code) == (close_code, error_code)


async def test_session_tokens_open_a_session_with_the_tenant_defaults() -> None:
    async with running_server(TENANTS) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post(
                "/v1/session-tokens", headers={"Authorization": f"Bearer {KEY_ACME}"}
            )
        assert response.status_code == 201
        token = response.json()["token"]
        async with connect(server.ws_url, token=token) as session:
            assert session.started is not None
            assert session.started.config.voice_id == "test-tts:tone-b"


async def test_an_expired_session_token_is_refused_with_token_expired() -> None:
    async with running_server(TENANTS) as (server, _):
        config = config_from_mapping(test_engine_config(TENANTS))
        an_hour_ago = Authenticator(config, clock=lambda: time.time() - 3600)
        principal = Principal("acme", "acme-1", frozenset({"scaivoice:use"}))
        token, _ = an_hour_ago.mint_session_token(principal)
        assert await _close_of(server.ws_url, token=token) == (4401, "token_expired")


async def test_api_keys_work_as_bearer_headers_and_select_the_tenant() -> None:
    async with running_server(TENANTS) as (server, _):
        async with connect(server.ws_url, api_key=KEY_GLOBEX) as session:
            assert session.started is not None
            assert session.started.config.voice_id is None  # globex has no default voice


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("POST", "/v1/session-tokens", {}, 401, "unauthorized"),
        ("POST", "/v1/session-tokens", {"Authorization": "Bearer nope"}, 401, "unauthorized"),
        (
            "POST",
            "/v1/session-tokens",
            {"Authorization": f"Bearer {KEY_AUDITOR}"},
            403,
            "forbidden",
        ),
        ("GET", "/v1/voices", {}, 401, "unauthorized"),
        ("GET", "/v1/nothing-here", {}, 404, "not_found"),
        ("DELETE", "/health", {}, 405, "method_not_allowed"),
    ],
)
async def test_http_errors_are_problem_documents(
    method: str, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    async with (
        running_server(TENANTS) as (server, _),
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        response = await http.request(method, path, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"].endswith(code)


async def test_health_and_voices() -> None:
    async with (
        running_server(TENANTS) as (server, _),
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        health = await http.get("/health")
        voices = await http.get("/v1/voices", headers={"Authorization": f"Bearer {KEY_ACME}"})
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["backends"]["stt"] == {"ok": True, "backend": "test-stt"}
    data = voices.json()["data"]
    assert [v["id"] for v in data] == ["test-tts:tone-a", "test-tts:tone-b"]
    assert [v["default"] for v in data] == [False, True]  # acme's default voice


async def test_an_open_server_refuses_to_bind_beyond_loopback() -> None:
    config = config_from_mapping(test_engine_config({"server": {"host": "0.0.0.0", "port": 0}}))
    with pytest.raises(ConfigError, match="refuses to listen"):
        await serve(config, host_with(), shutdown_trigger=trio.sleep_forever)


async def test_sigterm_drains_new_sessions_refused_live_ones_closed_going_away() -> None:
    async with running_server() as (server, stop):
        async with connect(server.ws_url) as live:
            stop.set()  # what SIGTERM does
            with trio.fail_after(5):
                while not server.engine.sessions.draining:
                    await trio.sleep(0.01)
            async with httpx.AsyncClient(base_url=server.url) as http:
                health = await http.get("/health")
            assert (health.status_code, health.json()["status"]) == (503, "draining")
            assert await _close_of(server.ws_url) == (1013, "server_draining")
            with trio.fail_after(5):
                events = [e async for e in live.events()]
            errors = [e for e in events if isinstance(e, frames.ErrorFrame)]
            assert errors[-1].code == "server_shutdown"
            assert live.close_code == 1001


async def test_talk_streams_a_wav_and_writes_the_reply(tmp_path: Path, capsys: Any) -> None:
    source = tmp_path / "question.wav"
    with wave.open(str(source), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x00\x10" * 4000)  # 0.5 s at 8 kHz: exercises resampling
    out = tmp_path / "reply.wav"
    async with running_server() as (server, _):
        code = await talk(
            str(source),
            url=server.ws_url,
            api_key=None,
            token=None,
            out=str(out),
            as_json=True,
            config={},
            timeout_s=20,
        )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = [line["event"] for line in lines]
    assert "heard" in events and "agent" in events
    assert next(line for line in lines if line["event"] == "heard")["text"] == "hello there"
    with wave.open(str(out), "rb") as reply:
        assert reply.getframerate() == 24000
        assert reply.getnframes() / 24000 == pytest.approx(
            spoken_ms("You said: hello there.") / 1000, abs=0.05
        )
