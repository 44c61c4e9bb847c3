"""Degraded start: a backend or feature that is unavailable at start leaves the server running.

Each case starts the real server (in-process ``serve``, or the ``scaivoice serve`` command) with
one upstream or model unavailable and checks that ``/health`` names it, that sessions are served
without it with the documented warning, and that it recovers without a restart once the
upstream answers. The upstream is a small OpenAI-compatible server on loopback (real HTTP).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import numpy as np
import pytest
import trio

from scaivoice.backends import http as http_backends
from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendRejected,
    BackendSpec,
    BackendUnavailable,
    ConfigError,
    FeatureSession,
    FeatureSpec,
    NormaliserBackend,
    NormaliseRequest,
    RunningServer,
    SessionFeature,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
    Voice,
    config_from_mapping,
    hookimpl,
    serve,
)
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames
from scaivoice.engine.testing import (
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
    test_engine_config,
)

from .conftest import host_with
from .http_backends._servers import free_port

ROOT = Path(__file__).resolve().parent.parent
TONE = (np.sin(np.arange(16000) / 4) * 9000).astype("<i2").tobytes()  # 1 s at 16 kHz, loud
UPSTREAM_VOICE = "bell"
UPSTREAM_TRANSCRIPT = "the upstream heard you"


# --------------------------------------------------------------------------- an upstream server


class Upstream:
    """An OpenAI-compatible server with every endpoint the ``openai`` backends use."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        route = (scope["method"], scope["path"])
        if route == ("GET", "/v1/models"):
            await _answer(send, {"object": "list", "data": [{"id": "model"}]})
        elif route == ("GET", "/v1/audio/voices"):
            await _answer(send, {"voices": [{"id": UPSTREAM_VOICE}]})
        elif route == ("POST", "/v1/audio/transcriptions"):
            await _answer(send, {"text": UPSTREAM_TRANSCRIPT})
        elif route == ("POST", "/v1/chat/completions"):
            events = [{"choices": [{"delta": {"content": word}}]} for word in ("Hi ", "there.")]
            body = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
            await _answer(send, body + b"data: [DONE]\n\n", "text/event-stream")
        elif route == ("POST", "/v1/audio/speech"):
            pcm = (np.sin(np.arange(6000) / 3) * 8000).astype("<i2").tobytes()  # 250 ms, 24 kHz
            await _answer(send, pcm, "audio/pcm")
        else:
            await _answer(send, {"error": {"message": "no such route"}}, status=404)


async def _answer(
    send: Any, body: Any, content_type: str = "application/json", status: int = 200
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@asynccontextmanager
async def upstream(port: int) -> AsyncIterator[None]:
    """Serve :class:`Upstream` on ``127.0.0.1:port`` while the block runs."""
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    serve_upstream: Any = partial(hypercorn.trio.serve, Upstream(), config)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_upstream, shutdown_trigger=stop.wait))
        yield
        stop.set()


def openai_options(port: int, **extra: Any) -> dict[str, Any]:
    """Options of an ``openai`` backend at ``127.0.0.1:port`` that give up quickly."""
    return {
        "base_url": f"http://127.0.0.1:{port}/v1",
        "max_retries": 0,
        "connect_timeout_s": 2,
        **extra,
    }


# --------------------------------------------------------------------------- broken plugins


class BrokenNormaliser(NormaliserBackend):
    """A normaliser whose model never loads."""

    class Options(BackendOptions, frozen=True):
        pass

    def __init__(self, options: Options) -> None:
        pass

    async def open(self) -> None:
        raise BackendUnavailable("the normaliser model did not load", backend=self.name)

    async def normalise(self, text: str, request: NormaliseRequest) -> str:
        raise AssertionError("never called: it never opened")


class BrokenDiarizer(SessionFeature):
    """A session feature whose model never loads."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    async def open(self) -> None:
        raise BackendUnavailable("the diarization model did not load", backend="test-diarizer")

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        raise AssertionError("never called: it never opened")


class BrokenFeaturePlugin:
    @hookimpl
    def scaivoice_session_features(self) -> Iterator[FeatureSpec]:
        yield FeatureSpec(name="test-diarizer", config_key="diarize", factory=BrokenDiarizer)


class FlakyTts(TtsBackend):
    """A voice whose model fails to load ``failures`` times, then loads."""

    class Options(BackendOptions, frozen=True):
        failures: int = 1
        refuse: str = ""  # "config": ConfigError, "rejected": BackendRejected

    capabilities = TtsCapabilities(streaming=True, voices=True, speed=True)
    opens = 0
    closed = 0

    def __init__(self, options: Options) -> None:
        self.options = options

    async def open(self) -> None:
        type(self).opens += 1
        if self.options.refuse == "config":
            raise ConfigError("flaky-tts needs a setting it does not have")
        if self.options.refuse == "rejected":
            raise BackendRejected("flaky-tts has no voice 'nope'", backend=self.name)
        if type(self).opens <= self.options.failures:
            raise BackendUnavailable("the voice model did not load", backend=self.name)

    async def aclose(self) -> None:
        type(self).closed += 1

    async def list_voices(self) -> list[Voice]:
        return [Voice(id="calm", name="Calm", language="en", sample_rate=24000)]

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        async with audio:
            await audio.send(AudioChunk(b"\x10\x00" * 2400, 24000))


FLAKY = BackendSpec.for_class(FlakyTts, name="flaky-tts")
BROKEN_NORMALISER = BackendSpec.for_class(BrokenNormaliser, name="broken-normaliser")


# --------------------------------------------------------------------------- helpers


@asynccontextmanager
async def running(
    backends: Mapping[str, Any],
    *,
    specs: Sequence[BackendSpec] = (),
    plugins: Sequence[object] = (),
) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    """The real server on loopback with ``backends`` (merged into the test backends)."""
    host = host_with(*specs)
    host.register(http_backends, name="builtin-http-backends", distribution="scaivoice")
    for index, plugin in enumerate(plugins):
        host.register(plugin, name=f"test-plugin-{index}")
    doc = test_engine_config(
        {"server": {"port": 0, "drain_timeout_s": 0.3}, "backends": dict(backends)}
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(20):  # the start does not wait for what is down
            server = await nursery.start(
                partial(serve, config_from_mapping(doc), host, shutdown_trigger=stop.wait)
            )
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            yield server, http
        stop.set()


@asynccontextmanager
async def session(
    server: RunningServer, **config: Any
) -> AsyncIterator[tuple[VoiceClient, list[frames.WarningFrame]]]:
    """A session, with the warnings it got before its first ``state: idle``."""
    async with connect(server.ws_url, config=config) as client:
        warnings: list[frames.WarningFrame] = []
        with trio.fail_after(10):
            async for event in client.events():
                if isinstance(event, frames.WarningFrame):
                    warnings.append(event)
                elif isinstance(event, frames.State):
                    break
        yield client, warnings
        await client.end()


async def turn(client: VoiceClient, *, text: str | None = None) -> list[Any]:
    """One user turn (typed, or a spoken tone when ``text`` is None) and what followed it,
    up to the state ``idle`` that ends it."""
    if text is None:
        await client.send_audio(TONE)
        await client.commit()
    else:
        await client.send_text(text)
    events: list[Any] = []
    with trio.fail_after(20):
        async for event in client.events():
            events.append(event)
            if isinstance(event, frames.State) and event.state == "idle":
                return events
    raise AssertionError(f"the session ended: {events}")


def codes(events: Sequence[Any], kind: type[Any]) -> list[str]:
    return [e.code for e in events if isinstance(e, kind)]


def audio_of(events: Sequence[Any]) -> bytes:
    return b"".join(e.pcm for e in events if isinstance(e, AgentAudio))


async def health(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/health")
    return response.status_code, response.json()


# --------------------------------------------------------------------------- the cases


async def test_tts_upstream_down_the_server_serves_text() -> None:
    backends = {"tts": "openai", "options": {"tts": {"openai": openai_options(free_port())}}}
    async with running(backends) as (server, http):
        status, body = await health(http)
        assert status == 503 and body["status"] == "degraded"
        assert body["synthesis"] is False
        assert body["down"] == ["tts:openai"]
        assert body["backends"]["tts:openai"]["ok"] is False
        assert "cannot reach the server" in body["backends"]["tts:openai"]["error"]
        assert body["backends"]["stt"]["ok"] and body["backends"]["llm"]["ok"]
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["backends_down"] == ["tts:openai"]
        assert (await http.get("/livez")).status_code == 200
        assert (await http.get("/v1/voices")).json()["data"] == []  # not listed yet

        async with session(server) as (client, warnings):
            assert [w.code for w in warnings] == ["tts_unavailable"]
            assert "speech synthesis (openai) is down" in warnings[0].message
            events = await turn(client, text="hello")
        assert "tts_unavailable" in codes(events, frames.WarningFrame)
        done = next(e for e in events if isinstance(e, frames.AgentTextDone))
        assert done.text == "You said: hello."
        assert not audio_of(events)
        assert not [e for e in events if isinstance(e, frames.AgentAudioStart)]


async def test_stt_upstream_down_typed_text_still_works() -> None:
    backends = {"stt": "openai", "options": {"stt": {"openai": openai_options(free_port())}}}
    async with running(backends) as (server, http):
        status, body = await health(http)
        assert status == 503 and body["down"] == ["stt"]
        assert body["synthesis"] is True  # synthesis is fine
        async with session(server) as (client, warnings):
            assert [w.code for w in warnings] == ["stt_unavailable"]
            spoken = await turn(client)
            assert codes(spoken, frames.ErrorFrame) == ["stt_failed"]
            typed = await turn(client, text="hello")
        assert not codes(typed, frames.ErrorFrame)
        assert len(audio_of(typed)) > 0  # the reply is spoken


async def test_llm_upstream_down_transcripts_still_come() -> None:
    options = {"llm": {"openai": openai_options(free_port(), model="m")}}
    async with running({"llm": "openai", "options": options}) as (server, http):
        status, body = await health(http)
        assert status == 503 and body["down"] == ["llm"]
        async with session(server) as (client, warnings):
            assert [w.code for w in warnings] == ["llm_unavailable"]
            spoken = await turn(client)
            typed = await turn(client, text="hello")
        finals = [e for e in spoken if isinstance(e, frames.TranscriptFrame) and e.final]
        assert [f.text for f in finals] == ["hello there"]
        assert codes(spoken, frames.ErrorFrame) == ["llm_failed"]
        assert codes(typed, frames.ErrorFrame) == ["llm_failed"]


async def test_a_normaliser_that_does_not_load_text_is_spoken_as_written() -> None:
    backends = {"normaliser": "broken-normaliser"}
    async with running(backends, specs=[BROKEN_NORMALISER]) as (server, http):
        status, body = await health(http)
        assert status == 503 and body["down"] == ["normaliser"]
        assert "did not load" in body["backends"]["normaliser"]["error"]
        async with session(server, normalize_text=True) as (client, warnings):
            assert [w.code for w in warnings] == ["normaliser_unavailable"]
            events = await turn(client, text="it costs 3 euros")
        assert not codes(events, frames.ErrorFrame)
        assert set(codes(events, frames.WarningFrame)) == {"normaliser_failed"}
        assert len(audio_of(events)) > 0  # spoken as written


async def test_a_feature_that_does_not_load_is_reported_and_sessions_go_on() -> None:
    async with running({}, plugins=[BrokenFeaturePlugin()]) as (server, http):
        status, body = await health(http)
        assert status == 503 and body["down"] == ["feature:test-diarizer"]
        assert body["features"]["test-diarizer"]["ok"] is False
        assert "did not load" in body["features"]["test-diarizer"]["error"]
        assert all(entry["ok"] for entry in body["backends"].values())
        ready = await http.get("/readyz")
        assert ready.status_code == 200  # an optional feature does not take it out of rotation
        async with session(server, diarize=True) as (client, warnings):
            assert [w.code for w in warnings] == ["feature_unavailable"]
            events = await turn(client, text="hello")
        assert len(audio_of(events)) > 0


async def test_upstreams_that_start_after_the_server_are_used_without_a_restart() -> None:
    port = free_port()
    options = {
        "stt": {"openai": openai_options(port)},
        "llm": {"openai": openai_options(port, model="model")},
        "tts": {"openai": openai_options(port)},
    }
    backends = {"stt": "openai", "llm": "openai", "tts": "openai", "options": options}
    async with running(backends) as (server, http):
        status, body = await health(http)
        assert status == 503 and body["down"] == ["stt", "llm", "tts:openai"]
        async with session(server) as (client, warnings):
            assert {w.code for w in warnings} == {
                "stt_unavailable",
                "llm_unavailable",
                "tts_unavailable",
            }
        async with upstream(port):
            with trio.fail_after(20):
                while (await health(http))[0] != 200:
                    await trio.sleep(0.05)
                while not (await http.get("/v1/voices")).json()["data"]:
                    await trio.sleep(0.05)  # the keeper lists the voices once it answers
            voices = (await http.get("/v1/voices")).json()["data"]
            assert [v["id"] for v in voices] == [f"openai:{UPSTREAM_VOICE}"]
            status, body = await health(http)
            assert (status, body["status"], body["down"], body["synthesis"]) == (
                200,
                "ok",
                [],
                True,
            )
            async with session(server, voice_id=f"openai:{UPSTREAM_VOICE}") as (client, warnings):
                assert warnings == []
                events = await turn(client)
        finals = [e for e in events if isinstance(e, frames.TranscriptFrame) and e.final]
        assert [f.text for f in finals] == [UPSTREAM_TRANSCRIPT]
        done = next(e for e in events if isinstance(e, frames.AgentTextDone))
        assert done.text == "Hi there."
        assert len(audio_of(events)) > 0
        assert not codes(events, frames.ErrorFrame) and not codes(events, frames.WarningFrame)


async def test_a_model_that_loads_on_a_later_try_is_installed(autojump_clock: Any) -> None:
    FlakyTts.opens = FlakyTts.closed = 0
    overrides = {"backends": {"tts": "flaky-tts", "options": {"flaky-tts": {"failures": 2}}}}
    async with open_test_engine(overrides, host=host_with(FLAKY)) as engine:
        stand_in = engine.tts["flaky-tts"]
        assert stand_in.capabilities == FlakyTts.capabilities  # options are judged as it would
        report = await engine.health()
        assert report["tts:flaky-tts"] == {
            "ok": False,
            "backend": "flaky-tts",
            "error": "the voice model did not load",
        }
        assert engine.voices == {}
        with pytest.raises(BackendUnavailable, match="did not load"):
            await stand_in.list_voices()
        with trio.fail_after(10):  # tries at about 1 s and 2 s more (virtual time)
            while not (await engine.health())["tts:flaky-tts"]["ok"]:
                await trio.sleep(0.25)
        assert FlakyTts.opens == 3
        assert isinstance(engine.tts["flaky-tts"], FlakyTts)
        assert list(engine.voices) == ["flaky-tts:calm"]
        assert [v.id for v in await stand_in.list_voices()] == ["calm"]  # it forwards now
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start()
            await client.send_json({"type": "text", "text": "hello"})
            items = await client.receive_until("metrics")
            nursery.cancel_scope.cancel()
        assert any(getattr(i, "pcm", b"") for i in items)
        assert not [i for i in items if getattr(i, "code", None) == "tts_unavailable"]
    assert FlakyTts.closed == 1  # the engine closed what it opened


@pytest.mark.parametrize(
    ("refuse", "error", "match"),
    [("config", ConfigError, "needs a setting"), ("rejected", BackendRejected, "no voice")],
)
async def test_a_configuration_error_while_opening_still_stops_the_start(
    refuse: str, error: type[Exception], match: str
) -> None:
    overrides = {"backends": {"tts": "flaky-tts", "options": {"flaky-tts": {"refuse": refuse}}}}
    with trio.fail_after(10), pytest.raises(error, match=match):
        async with open_test_engine(overrides, host=host_with(FLAKY)):
            raise AssertionError("the engine opened")


async def test_an_error_in_the_engines_body_comes_out_as_it_was() -> None:
    with trio.fail_after(10), pytest.raises(KeyError, match="from the body"):
        async with open_test_engine(host=host_with()):
            raise KeyError("from the body")


@pytest.mark.timeout(120)
async def test_scaivoice_serve_stays_up_with_a_dead_tts_upstream(tmp_path: Path) -> None:
    config = tmp_path / "scaivoice.toml"
    config.write_text(
        "[server]\ndrain_timeout_s = 0.5\n"
        '[backends]\nstt = "test-stt"\nllm = "test-llm"\ntts = "openai"\n'
        "[session]\nwarm_up = false\n"
        f'[backends.options.tts.openai]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\n'
        "max_retries = 0\n"
    )
    command = [sys.executable, "-m", "scaivoice.engine.cli", "serve", "--config", str(config)]
    env = {
        **os.environ,
        "SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "SCAIVOICE_PORT": "0",
        "SCAIVOICE_WORKERS": "1",
    }
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                stderr=subprocess.PIPE,
                env=env,
                cwd=ROOT,
                check=False,
            )
        )
        assert process.stderr is not None
        log = b""
        with trio.fail_after(50):
            while (found := re.search(rb"listening on (http://\S+)", log)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, f"scaivoice serve exited: {log.decode(errors='replace')}"
                log += chunk
        async with httpx.AsyncClient(base_url=found.group(1).decode(), timeout=10) as http:
            status, body = await health(http)
        assert process.returncode is None  # still serving
        assert status == 503 and body["down"] == ["tts:openai"]
        assert b"tts backend 'openai' is down" in log
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            while await process.stderr.receive_some():
                pass
            await process.wait()
    assert process.returncode == 0
