"""The voice-note API: OpenAI-compatible transcription and speech, the cache, gateway settings."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import trio
import trio.testing

from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendSpec,
    BackendUnavailable,
    RunningServer,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
    Voice,
    config_from_mapping,
    hash_key,
    serve,
)
from scaivoice.engine._voicenotes.cache import SpeechCache, cache_key
from scaivoice.engine._voicenotes.codecs import decode_audio, encode_audio
from scaivoice.engine.cli import _gateway_environment
from scaivoice.engine.testing import test_engine_config

from .conftest import host_with

KEY = "sk-test-gateway"
KEYS = {"tenants": {"gw": {"keys": [{"id": "gw", "hash": hash_key(KEY)}]}}}
SPEECH = (np.sin(np.arange(16000) / 4) * 9000).astype("<i2").tobytes()  # 1 s, loud


class CountingTts(TtsBackend):
    """A tone per character, counting its calls; ``down`` makes it unavailable.

    While ``gate`` is set to an unset event, every synthesis waits for it.
    """

    class Options(BackendOptions, frozen=True):
        down: bool = False

    capabilities = TtsCapabilities(streaming=True, voices=True, speed=False)
    calls = 0
    gate: trio.Event | None = None

    def __init__(self, options: Options) -> None:
        self.down = options.down

    async def list_voices(self) -> list[Voice]:
        return [Voice(id="counter", name="Counter", language="en", sample_rate=24000)]

    async def check_health(self) -> None:
        if self.down:
            raise BackendUnavailable("synthesis server unreachable", backend=self.name)

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        async with audio:
            if self.down:
                raise BackendUnavailable("synthesis server unreachable", backend=self.name)
            type(self).calls += 1
            if type(self).gate is not None:
                await type(self).gate.wait()
            samples = int(24000 * 0.05 * len(request.text))
            tone = (np.sin(np.arange(samples) / 3) * 8000).astype("<i2").tobytes()
            await audio.send(AudioChunk(tone, 24000))


COUNTING = BackendSpec.for_class(CountingTts, name="counting-tts")


class BuggyTts(TtsBackend):
    """A backend with a bug: it raises a plain exception, not a backend error."""

    class Options(BackendOptions, frozen=True):
        pass

    capabilities = TtsCapabilities(streaming=True, voices=False)

    def __init__(self, options: Options) -> None:
        pass

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        raise KeyError("a bug inside the voice")  # and it forgets to close its channel


BUGGY = BackendSpec.for_class(BuggyTts, name="buggy-tts")


@asynccontextmanager
async def gateway(overrides: dict[str, Any] | None = None) -> AsyncIterator[RunningServer]:
    doc = test_engine_config({"server": {"port": 0}, **KEYS, **(overrides or {})})
    config = config_from_mapping(doc)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, host_with(COUNTING, BUGGY), shutdown_trigger=trio.sleep_forever)
        )
        yield server
        nursery.cancel_scope.cancel()


def _sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))


# --------------------------------------------------------------------------- the official SDK


async def test_the_openai_sdk_synthesises_a_voice_note() -> None:
    async with gateway() as server:
        client = _sdk(server)
        response = await _in_thread(
            client.audio.speech.create,
            model="tts-1",
            voice="alloy",
            input="Hello there.",
            response_format="opus",
        )
        data = response.content
        assert data[:4] == b"OggS"  # an OGG/Opus voice note
        assert response.response.headers["content-type"] == "audio/ogg"
        pcm = decode_audio(data)
        # alloy maps to the default voice (test-tts): 50 ms per character
        assert len(pcm) / 2 / 16000 == pytest.approx(len("Hello there.") * 0.05, abs=0.05)


async def test_the_openai_sdk_transcribes_an_opus_voice_note() -> None:
    note = encode_audio(SPEECH, 16000, "opus").data
    async with gateway() as server:
        client = _sdk(server)
        transcript = await _in_thread(
            client.audio.transcriptions.create,
            model="whisper-1",
            file=("note.ogg", io.BytesIO(note), "audio/ogg"),
        )
        assert transcript.text == "hello there"
        verbose = await _in_thread(
            client.audio.transcriptions.create,
            model="whisper-1",
            file=("note.ogg", io.BytesIO(note), "audio/ogg"),
            response_format="verbose_json",
        )
        assert verbose.duration == pytest.approx(1.0, abs=0.05)
        assert verbose.segments[0].text == "hello there"
        models = await _in_thread(client.models.list)
        ids = {m.id for m in models.data}
        assert {"whisper-1", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "test-stt", "test-tts"} <= ids


@pytest.mark.parametrize(("fmt", "magic"), [("mp3", b"ID3"), ("flac", b"fLaC"), ("wav", b"RIFF")])
async def test_every_speech_format_decodes(fmt: str, magic: bytes) -> None:
    async with gateway() as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/audio/speech",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "tts-1", "input": "Ten chars.", "response_format": fmt},
        )
    assert response.status_code == 200
    assert response.content.startswith(magic) or fmt == "mp3"
    assert len(decode_audio(response.content)) / 2 / 16000 == pytest.approx(0.5, abs=0.06)


async def test_pcm_is_raw_24k_as_openai_sends_it() -> None:
    async with gateway() as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/audio/speech",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "tts-1", "input": "abcd", "response_format": "pcm"},
        )
    assert response.headers["content-type"] == "audio/pcm"
    assert len(response.content) / 2 / 24000 == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", "hello there"),
        ("srt", "1\n00:00:00,000 --> 00:00:01,000\nhello there\n"),
        ("vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello there\n"),
    ],
)
async def test_subtitle_and_text_transcripts(fmt: str, expected: str) -> None:
    wav = encode_audio(SPEECH, 16000, "wav").data
    async with gateway() as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {KEY}"},
            files={"file": ("a.wav", wav, "audio/wav")},
            data={"model": "whisper-1", "response_format": fmt},
        )
    assert response.status_code == 200
    assert response.text.startswith(expected)


# --------------------------------------------------------------------------- the cache


async def test_cache_hits_skip_synthesis_and_identical_requests_synthesise_once() -> None:
    CountingTts.calls = 0
    overrides = {"backends": {"stt": "test-stt", "llm": "test-llm", "tts": "counting-tts"}}
    async with gateway(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        request = {"model": "tts-1", "input": "Same words.", "response_format": "wav"}
        headers = {"Authorization": f"Bearer {KEY}"}
        results: list[httpx.Response] = []

        async def fetch() -> None:
            results.append(await http.post("/v1/audio/speech", headers=headers, json=request))

        CountingTts.gate = gate = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(fetch)
                # All three requests are in and waiting: one synthesis, held at the gate.
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert CountingTts.calls == 1
                gate.set()
        finally:
            CountingTts.gate = None
        assert CountingTts.calls == 1
        assert len({r.content for r in results}) == 1
        again = await http.post("/v1/audio/speech", headers=headers, json=request)
        assert again.headers["x-scaivoice-cache"] == "hit"
        assert CountingTts.calls == 1
        other = await http.post(
            "/v1/audio/speech", headers=headers, json={**request, "response_format": "flac"}
        )
        assert other.headers["x-scaivoice-cache"] == "miss"
        assert CountingTts.calls == 2


async def test_a_file_cache_is_shared_and_bounded(tmp_path: Path) -> None:
    first = SpeechCache(tmp_path, max_bytes=250)
    second = SpeechCache(tmp_path, max_bytes=250)  # another process on the same volume

    async def produce(value: bytes) -> bytes:
        return value

    key_a, key_b, key_c = (cache_key(text=t) for t in "abc")
    assert await first.get_or_create(key_a, partial(produce, b"a" * 100)) == (b"a" * 100, False)
    assert await second.get_or_create(key_a, partial(produce, b"x")) == (b"a" * 100, True)
    await first.put(key_b, b"b" * 100)
    os.utime(next(tmp_path.glob(f"??/{key_a}")), (1, 1))  # a is the least recently used
    await first.put(key_c, b"c" * 100)
    assert await second.get(key_a) is None  # evicted
    assert await second.get(key_c) == b"c" * 100
    assert not list(tmp_path.glob("??/.tmp-*"))


# --------------------------------------------------------------------------- bad input


def _post_speech(**body: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/audio/speech", {"json": {"model": "tts-1", "input": "Hi.", **body}}


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        (
            "/v1/audio/transcriptions",
            {"files": {"file": ("a.ogg", b"", "audio/ogg")}},
            400,
            "invalid_audio",
        ),
        (
            "/v1/audio/transcriptions",
            {"files": {"file": ("a.ogg", b"\x00garbage" * 99, "audio/ogg")}},
            400,
            "invalid_audio",
        ),
        ("/v1/audio/transcriptions", {"data": {"model": "whisper-1"}}, 400, "invalid_form"),
        (
            "/v1/audio/transcriptions",
            {"files": {"nofile": ("a", b"x", "a/b")}},
            400,
            "missing_file",
        ),
        (
            "/v1/audio/transcriptions",
            {"files": {"file": ("a.wav", b"RIFF", "audio/wav")}, "data": {"model": "gpt-99"}},
            400,
            "unknown_model",
        ),
        (
            "/v1/audio/transcriptions",
            {
                "files": {"file": ("a.wav", b"RIFF", "audio/wav")},
                "data": {"response_format": "xml"},
            },
            400,
            "invalid_request",
        ),
        (
            "/v1/audio/transcriptions",
            {"files": {"file": ("big.wav", b"\0" * 70_000, "audio/wav")}},
            413,
            "payload_too_large",
        ),
        *[
            (p, k, 400, c)
            for (p, k), c in [
                (_post_speech(voice="test-tts:nope"), "unknown_voice"),
                (_post_speech(input="x" * 5001), "input_too_long"),
                (_post_speech(input=""), "invalid_request"),
                (_post_speech(response_format="aiff"), "unsupported_format"),
                (_post_speech(speed=9), "invalid_request"),
            ]
        ],
        ("/v1/audio/speech", {"content": b"{not json"}, 400, "invalid_json"),
    ],
)
async def test_bad_requests_get_problem_documents(
    path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    overrides = {"voice_notes": {"max_upload_bytes": 64_000}}
    async with gateway(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(path, headers={"Authorization": f"Bearer {KEY}"}, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_credentials_are_required() -> None:
    async with gateway() as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi."})
        assert (response.status_code, response.json()["code"]) == (401, "unauthorized")
        response = await http.get("/v1/models")
        assert response.status_code == 401


async def test_synthesis_down_is_503_and_health_says_so() -> None:
    overrides = {
        "backends": {
            "stt": "test-stt",
            "llm": "test-llm",
            "tts": "counting-tts",
            "options": {"counting-tts": {"down": True}},
        }
    }
    async with gateway(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/audio/speech",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "tts-1", "input": "Hi."},
        )
        assert (response.status_code, response.json()["code"]) == (503, "backend_unavailable")
        assert response.headers["retry-after"] == "5"
        health = await http.get("/health")
        assert health.status_code == 503
        assert health.json()["synthesis"] is False


async def test_a_backend_bug_is_a_problem_response_not_a_crash() -> None:
    overrides = {"backends": {"stt": "test-stt", "llm": "test-llm", "tts": "buggy-tts"}}
    async with gateway(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/v1/audio/speech",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "tts-1", "input": "Hi."},
            )
        assert (response.status_code, response.json()["code"]) == (502, "backend_failed")
        assert "KeyError" in response.json()["detail"]
        assert (await http.get("/livez")).status_code == 200  # the server is fine


async def test_transcription_can_be_switched_off() -> None:
    overrides = {"voice_notes": {"transcription_enabled": False}}
    wav = encode_audio(SPEECH, 16000, "wav").data
    async with gateway(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {KEY}"},
            files={"file": ("a.wav", wav, "audio/wav")},
        )
    assert (response.status_code, response.json()["code"]) == (404, "transcription_disabled")


def test_the_gateway_environment_names_configure_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WHISPER_BASE_URL", "http://whisper:8000/v1")
    monkeypatch.setenv("TTS_BASE_URL", "http://kokoro:8880/v1")
    monkeypatch.setenv("TTS_VOICE", "openai:af_heart")
    monkeypatch.setenv("VOICE_TRANSCRIPTION_ENABLED", "false")
    config = config_from_mapping(_gateway_environment())
    assert (config.backends.stt, config.backends.tts) == ("openai", "openai")
    assert config.backends.options_for("stt", "openai") == {"base_url": "http://whisper:8000/v1"}
    assert config.backends.options_for("tts", "openai") == {"base_url": "http://kokoro:8880/v1"}
    assert config.session_defaults(None).voice_id == "openai:af_heart"
    assert config.voice_notes.transcription_enabled is False


# --------------------------------------------------------------------------- real models


@pytest.mark.slow
async def test_a_real_voice_note_round_trip() -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("hibari")
    overrides = {"backends": {"stt": "whisper", "llm": "test-llm", "tts": "hibari"}}
    doc = test_engine_config({"server": {"port": 0}, **KEYS, **overrides})
    from scaivoice.engine import PluginHost

    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config_from_mapping(doc), host, shutdown_trigger=trio.sleep_forever)
        )
        client = _sdk(server)
        text = "Please remind me to buy milk, eggs, and bread on the way home."
        note = await _in_thread(
            client.audio.speech.create,
            model="tts-1",
            voice="heart",
            input=text,
            response_format="opus",
        )
        assert note.content[:4] == b"OggS"
        transcript = await _in_thread(
            client.audio.transcriptions.create,
            model="whisper-1",
            file=("note.ogg", io.BytesIO(note.content), "audio/ogg"),
        )
        words = transcript.text.lower().replace(",", "").replace(".", "").split()
        assert words == text.lower().replace(",", "").replace(".", "").split()
        nursery.cancel_scope.cancel()
