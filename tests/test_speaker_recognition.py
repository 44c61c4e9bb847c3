"""Speaker recognition: the enrolment store, the feature (real models) and ``/v1/speakers``.

Voices are generated with the installed TTS backends (hibari, piper, espeak-ng): two are
enrolled, two others play the unknown visitors. The store tests need no model.
"""

from __future__ import annotations

import io
import sqlite3
import wave
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio

from scaivoice.backends import testing as testing_backends
from scaivoice.conformance.bench.speakers.identification import (
    identification_lines,
    measure_identification,
)
from scaivoice.conformance.bench.speakers.voices import SENTENCES, VOICES, render_voices
from scaivoice.engine import (
    BackendUnavailable,
    EnrolmentRejected,
    PluginHost,
    RunningServer,
    SessionContext,
    SpeakerDirectory,
    TurnSpeaker,
    config_from_mapping,
    frames,
    hash_key,
    serve,
)
from scaivoice.engine.client import connect
from scaivoice.engine.testing import (
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
    test_engine_config,
)
from scaivoice.plugins.speakers import recognition
from scaivoice.plugins.speakers._store import SpeakerStore, StoreError
from scaivoice.plugins.speakers.recognition import (
    DEFAULT_THRESHOLD,
    SpeakerRecognition,
    SpeakerRecognitionOptions,
)

RATE = 16000
ENROLLED = {"heart": "hibari-heart", "us": "espeak-en-us"}
UNKNOWN = ("piper-joe", "espeak-en-us-f3")


# --------------------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def voices() -> dict[str, list[bytes]]:
    """Six sentences in each of four generated voices (16 kHz PCM16)."""
    wanted = set(ENROLLED.values()) | set(UNKNOWN)
    rendered = trio.run(
        partial(render_voices, SENTENCES[:6], [v for v in VOICES if v.name in wanted])
    )
    missing = wanted - set(rendered)
    assert not missing, f"TTS voices not available: {missing}"
    return rendered


def music(seconds: float = 4.0) -> bytes:
    """Chords, a melody with vibrato and drums: no speech in it."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    signal = np.zeros_like(t)
    for start in np.arange(0.0, seconds, 0.5):
        part = (t >= start) & (t < start + 0.5)
        local = t[part] - start
        envelope = np.minimum(1.0, local / 0.02) * np.exp(-local * 1.5)
        root = rng.choice([220.0, 246.9, 261.6, 293.7, 329.6])
        for ratio in (1.0, 1.26, 1.5, 2.0):
            for harmonic in range(1, 6):
                frequency = root * ratio * harmonic
                vibrato = 1 + 0.01 * np.sin(2 * np.pi * 5.5 * local)
                signal[part] += (
                    envelope * np.sin(2 * np.pi * frequency * vibrato * local) / harmonic
                )
        hit = part & (t < start + 0.06)
        signal[hit] += rng.normal(0.0, 1.0, int(hit.sum())) * np.exp(-(t[hit] - start) * 60)
    signal = 0.6 * signal / np.abs(signal).max()
    return (signal * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(RATE)
        file.writeframes(pcm)
    return out.getvalue()


# --------------------------------------------------------------------------- the store


def test_the_store_keeps_tenants_apart(tmp_path: Path) -> None:
    store = SpeakerStore.open(tmp_path / "speakers.sqlite3")
    vector = np.ones(256, np.float32) / 16
    stored = store.put("a", "ann", vector, clips=2, model="m", display_name="Ann", replace=False)
    assert stored is not None and stored.clips == 2
    assert [s.speaker_id for s in store.speakers("a")] == ["ann"]
    assert store.speakers("b") == []
    assert store.embeddings("b", "m")[0] == []
    assert store.delete("b", "ann") is False  # another tenant's id is unknown
    assert store.put("b", "ann", -vector, clips=1, model="m", display_name=None, replace=False)
    ids, matrix = store.embeddings("a", "m")
    assert ids == ["ann"] and matrix[0] @ vector == pytest.approx(1.0, abs=1e-6)
    assert store.embeddings("a", "another-model")[0] == []  # other models' vectors are not compared
    assert (
        store.put("a", "ann", vector, clips=1, model="m", display_name=None, replace=False) is None
    )
    store.close()


def traces(vector: bytes, data: bytes) -> int:
    """How many 32-byte pieces of ``vector`` appear in ``data`` (an overflow page may hold a
    part of it)."""
    return sum(vector[i : i + 32] in data for i in range(0, len(vector) - 31, 32))


def test_a_deleted_embedding_is_gone_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "speakers.sqlite3"
    marker = np.linspace(0.123, 0.456, 256).astype(np.float32)  # bytes unlikely elsewhere
    other = np.linspace(-0.9, -0.8, 256).astype(np.float32)
    store = SpeakerStore.open(path)
    store.put("a", "ann", marker, clips=3, model="m", display_name=None, replace=False)
    store.put("a", "bob", other, clips=3, model="m", display_name=None, replace=False)
    store.close()
    assert marker.astype("<f4").tobytes() in path.read_bytes()
    store = SpeakerStore.open(path)
    assert store.delete("a", "ann") is True
    store.close()
    remains = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the file and any journal
    assert traces(marker.astype("<f4").tobytes(), remains) == 0
    assert other.astype("<f4").tobytes() in remains
    assert [p.name for p in tmp_path.iterdir()] == ["speakers.sqlite3"]
    assert path.stat().st_mode & 0o077 == 0  # readable by its owner only


def test_a_replaced_embedding_is_gone_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "speakers.sqlite3"
    first = np.linspace(0.123, 0.456, 256).astype(np.float32)
    store = SpeakerStore.open(path)
    store.put("a", "ann", first, clips=1, model="m", display_name=None, replace=False)
    store.put("a", "ann", -first, clips=2, model="m", display_name=None, replace=True)
    store.close()
    assert traces(first.astype("<f4").tobytes(), path.read_bytes()) == 0


def test_a_corrupt_store_file_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"not usable|damaged"):
        SpeakerStore.open(garbage)
    # A real store with a page overwritten in the middle.
    damaged = tmp_path / "damaged.sqlite3"
    store = SpeakerStore.open(damaged)
    for index in range(60):
        vector = np.full(256, index, np.float32)
        store.put("a", f"s{index}", vector, clips=1, model="m", display_name=None, replace=False)
    store.close()
    good = damaged.read_bytes()
    assert len(good) > 8 * 4096
    in_a_vector = good.index(np.full(256, 30, np.float32).tobytes())
    for offset, what in ((in_a_vector + 8, "checksum"), (4096, "damaged")):
        data = bytearray(good)
        data[offset : offset + 4] = b"\x07\xff\xff\x07"
        damaged.write_bytes(bytes(data))
        with pytest.raises(StoreError, match=what):
            SpeakerStore.open(damaged)


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "speakers.sqlite3"
    SpeakerStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SpeakerStore.open(path)


# --------------------------------------------------------------------------- the feature


@asynccontextmanager
async def feature(path: Path | str, **options: Any) -> AsyncIterator[SpeakerRecognition]:
    opened = SpeakerRecognition(SpeakerRecognitionOptions(store_path=str(path), **options))
    async with opened:
        yield opened


@pytest.mark.slow
async def test_the_feature_is_a_speaker_directory_and_needs_no_file_until_an_enrolment(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    path = tmp_path / "sub" / "speakers.sqlite3"
    async with feature(path) as opened:
        assert isinstance(opened, SpeakerDirectory)
        assert not path.exists()
        assert await opened.speakers("t") == []
        with pytest.raises(EnrolmentRejected) as caught:
            await opened.forget("t", "nobody")
        assert caught.value.code == "unknown_speaker"
        session = opened.open_session(sample_rate=RATE, options={}, context=SessionContext("t"))
        assert await session.identify(voices["piper-joe"][0], final=True) == TurnSpeaker()
        await opened.enroll("t", "heart", voices["hibari-heart"][:3])
        assert path.exists()


@pytest.mark.slow
async def test_enrolled_voices_are_recognised_and_unknown_voices_rejected(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    async with feature(tmp_path / "speakers.sqlite3") as opened:
        for speaker_id, voice in ENROLLED.items():
            enrolled = await opened.enroll(
                "t", speaker_id, voices[voice][:3], display_name=speaker_id.title()
            )
            assert (enrolled.speaker_id, enrolled.clips) == (speaker_id, 3)
        listed = await opened.speakers("t")
        assert [(s.speaker_id, s.display_name, s.clips) for s in listed] == [
            ("heart", "Heart", 3),
            ("us", "Us", 3),
        ]
        session = opened.open_session(sample_rate=RATE, options={}, context=SessionContext("t"))
        for speaker_id, voice in ENROLLED.items():
            for clip in voices[voice][3:]:
                for final in (False, True):
                    found = await session.identify(clip, final=final)
                    assert found is not None and found.speaker_id == speaker_id
                    assert found.score is not None and found.score >= DEFAULT_THRESHOLD
        for voice in UNKNOWN:
            for clip in voices[voice]:
                found = await session.identify(clip, final=True)
                assert found is not None and found.speaker_id is None, voice
                assert found.score is not None and found.score < DEFAULT_THRESHOLD
        # Another rate: resampled to 16 kHz first.
        from scaivoice.engine import resample_pcm16

        at_24k = opened.open_session(sample_rate=24000, options={}, context=SessionContext("t"))
        clip = resample_pcm16(voices["hibari-heart"][4], RATE, 24000)
        found = await at_24k.identify(clip, final=True)
        assert found is not None and found.speaker_id == "heart"


@pytest.mark.slow
async def test_a_foreign_tenants_speakers_are_unknown(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    async with feature(tmp_path / "speakers.sqlite3") as opened:
        await opened.enroll("a", "heart", voices["hibari-heart"][:3])
        assert await opened.speakers("b") == []
        with pytest.raises(EnrolmentRejected) as caught:
            await opened.forget("b", "heart")
        assert caught.value.code == "unknown_speaker"
        b = opened.open_session(sample_rate=RATE, options={}, context=SessionContext("b"))
        found = await b.identify(voices["hibari-heart"][4], final=True)
        assert found is not None and found.speaker_id is None
        # b may use the same id for its own speaker: a different person.
        await opened.enroll("b", "heart", voices["piper-joe"][:3])
        a = opened.open_session(sample_rate=RATE, options={}, context=SessionContext("a"))
        found = await a.identify(voices["piper-joe"][4], final=True)
        assert found is not None and found.speaker_id is None
        assert [s.speaker_id for s in await opened.speakers("a")] == ["heart"]
        await opened.forget("b", "heart")
        assert [s.speaker_id for s in await opened.speakers("a")] == ["heart"]


@pytest.mark.slow
async def test_bad_enrolments_are_refused_with_a_code(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    speech = voices["hibari-heart"]

    async def refused(clips: Sequence[bytes], speaker_id: str = "x", **kw: Any) -> str:
        with pytest.raises(EnrolmentRejected) as caught:
            await opened.enroll("t", speaker_id, clips, **kw)
        return caught.value.code

    async with feature(tmp_path / "speakers.sqlite3") as opened:
        assert await refused([silence(3.0)]) == "no_speech"
        assert await refused([music()]) == "no_speech"
        assert await refused([speech[0], music()]) == "no_speech"
        assert await refused([speech[0][: RATE * 2 // 5]]) == "audio_too_short"  # 0.2 s
        assert await refused([speech[0][: int(RATE * 0.8) * 2]]) == "audio_too_short"
        assert await refused([speech[0][: RATE // 2 * 2] + silence(2.0)]) == "audio_too_short"
        assert await refused([]) == "audio_too_short"
        assert await refused([speech[0]] * 11) == "too_many_clips"
        assert await refused([speech[0], voices["piper-joe"][1]]) == "inconsistent_clips"
        for bad_id in ("", " ", "a b", "../etc", "é", "x" * 65, "-x"):
            assert await refused(speech[:2], speaker_id=bad_id) == "invalid_speaker_id"
        assert await refused(speech[:2], display_name="bad\x00name") == "invalid_display_name"
        assert await refused(speech[:2], display_name="x" * 101) == "invalid_display_name"
        assert await opened.speakers("t") == []  # nothing of the above was stored

        await opened.enroll("t", "heart", speech[:2])
        assert await refused(speech[2:4], speaker_id="heart") == "speaker_exists"
        replaced = await opened.enroll("t", "heart", speech[2:5], replace=True)
        assert replaced.clips == 3
        assert [s.clips for s in await opened.speakers("t")] == [3]


@pytest.mark.slow
async def test_a_turn_with_too_little_speech_gets_no_answer(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    async with feature(tmp_path / "speakers.sqlite3") as opened:
        await opened.enroll("t", "heart", voices["hibari-heart"][:3])
        session = opened.open_session(sample_rate=RATE, options={}, context=SessionContext("t"))
        half_second = voices["hibari-heart"][4][: RATE // 2 * 2]
        assert await session.identify(half_second + silence(2.0), final=True) is None
        assert await session.identify(silence(3.0), final=True) is None
        no_tenant = opened.open_session(sample_rate=RATE, options={})  # no context
        assert await no_tenant.identify(voices["hibari-heart"][4], final=True) is None


@pytest.mark.slow
async def test_deleting_a_speaker_removes_its_embedding_from_the_file(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    path = tmp_path / "speakers.sqlite3"
    async with feature(path) as opened:
        await opened.enroll("t", "heart", voices["hibari-heart"][:3])
        await opened.enroll("t", "us", voices["espeak-en-us"][:3])
    with sqlite3.connect(path) as db:
        (blob,) = db.execute("SELECT embedding FROM speakers WHERE speaker_id = 'heart'").fetchone()
    assert blob in path.read_bytes()
    async with feature(path) as opened:
        session = opened.open_session(sample_rate=RATE, options={}, context=SessionContext("t"))
        found = await session.identify(voices["hibari-heart"][4], final=True)
        assert found is not None and found.speaker_id == "heart"  # kept across restarts
        await opened.forget("t", "heart")
        found = await session.identify(voices["hibari-heart"][4], final=True)
        assert found is not None and found.speaker_id is None  # at once
        assert [s.speaker_id for s in await opened.speakers("t")] == ["us"]
    assert traces(blob, b"".join(p.read_bytes() for p in tmp_path.iterdir())) == 0


async def test_a_corrupt_store_makes_the_feature_fail_to_open(tmp_path: Path) -> None:
    path = tmp_path / "speakers.sqlite3"
    path.write_bytes(b"\x00garbage" * 512)
    broken = SpeakerRecognition(SpeakerRecognitionOptions(store_path=str(path)))
    with pytest.raises(BackendUnavailable, match="speaker store"):
        await broken.open()
    with pytest.raises(Exception, match="not open"):
        broken.open_session(sample_rate=RATE, options={}, context=SessionContext("t"))


# --------------------------------------------------------------------------- the HTTP API

ADMIN_A, ADMIN_B, USER_A = "sk-admin-a", "sk-admin-b", "sk-user-a"


def _host(*, with_feature: bool = True) -> PluginHost:
    host = PluginHost()
    host.register(testing_backends, name="builtin-test-backends", distribution="scaivoice")
    if with_feature:
        host.register(recognition, name="builtin-speaker-recognition", distribution="scaivoice")
    return host


@asynccontextmanager
async def running(
    overrides: Mapping[str, Any], *, host: PluginHost | None = None
) -> AsyncIterator[RunningServer]:
    doc = test_engine_config({"server": {"port": 0, "drain_timeout_s": 0.3}, **overrides})
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            server = await nursery.start(
                partial(
                    serve, config_from_mapping(doc), host or _host(), shutdown_trigger=stop.wait
                )
            )
        yield server
        stop.set()


def _store_options(path: Path) -> dict[str, Any]:
    return {"feature_options": {"speaker-recognition": {"store_path": str(path)}}}


def _keyed_tenants(*, b_opted_in: bool = True) -> dict[str, Any]:
    return {
        "a": {
            "speaker_recognition": True,
            "keys": [
                {"id": "admin", "hash": hash_key(ADMIN_A), "roles": ["admin"]},
                {"id": "user", "hash": hash_key(USER_A), "roles": ["user"]},
            ],
        },
        "b": {
            "speaker_recognition": b_opted_in,
            "keys": [{"id": "admin", "hash": hash_key(ADMIN_B), "roles": ["admin"]}],
        },
    }


def _files(*clips: bytes, **fields: str) -> dict[str, Any]:
    return {
        "files": [("file", (f"clip{i}.wav", wav(c), "audio/wav")) for i, c in enumerate(clips)],
        "data": fields,
    }


@pytest.mark.slow
async def test_the_speakers_api_in_open_mode(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    overrides = {
        "backends": {
            "stt": "test-stt",
            "llm": "test-llm",
            "tts": "test-tts",
            **_store_options(tmp_path / "s.sqlite3"),
        },
        "tenants": {"default": {"speaker_recognition": True}},
    }
    heart = voices["hibari-heart"]
    async with running(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/v1/speakers")
        assert response.status_code == 200 and response.json() == {"object": "list", "data": []}

        response = await http.post(
            "/v1/speakers", **_files(*heart[:3], speaker_id="heart", display_name="Heart")
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["speaker_id"] == "heart" and body["clips"] == 3
        assert body["display_name"] == "Heart"

        response = await http.post("/v1/speakers", **_files(heart[3], speaker_id="heart"))
        assert response.status_code == 409 and response.json()["code"] == "speaker_exists"
        response = await http.post(
            "/v1/speakers", **_files(*heart[3:5], speaker_id="heart", replace="true")
        )
        assert response.status_code == 201 and response.json()["clips"] == 2

        refusals = [
            (_files(silence(3.0), speaker_id="x"), 400, "no_speech"),
            (_files(music(), speaker_id="x"), 400, "no_speech"),
            (_files(heart[0][: RATE * 2 // 5], speaker_id="x"), 400, "audio_too_short"),
            (_files(heart[0], speaker_id="no spaces"), 400, "invalid_speaker_id"),
            (_files(heart[0]), 400, "invalid_speaker_id"),
            ({"data": {"speaker_id": "x"}, "files": {"other": ("a", b"1")}}, 400, "missing_file"),
            (
                {
                    "files": [("file", ("x.wav", b"not audio at all", "audio/wav"))],
                    "data": {"speaker_id": "x"},
                },
                400,
                "invalid_audio",
            ),
            (_files(heart[0], speaker_id="x", replace="perhaps"), 400, "invalid_request"),
        ]
        for request, status, code in refusals:
            response = await http.post("/v1/speakers", **request)
            assert (response.status_code, response.json()["code"]) == (status, code), code
            assert response.headers["content-type"] == "application/problem+json"
        response = await http.post("/v1/speakers", content=b"{}")
        assert (response.status_code, response.json()["code"]) == (400, "invalid_form")

        response = await http.get("/v1/speakers")
        assert [s["speaker_id"] for s in response.json()["data"]] == ["heart"]
        response = await http.delete("/v1/speakers/nobody")
        assert response.status_code == 404 and response.json()["code"] == "unknown_speaker"
        response = await http.get("/v1/speakers/heart")
        assert response.status_code == 405
        response = await http.delete("/v1/speakers/heart")
        assert response.status_code == 200 and response.json()["deleted"] is True
        assert (await http.get("/v1/speakers")).json()["data"] == []
        metrics = (await http.get("/metrics")).text
        assert 'route="/v1/speakers/{id}"' in metrics


@pytest.mark.slow
async def test_the_speakers_api_needs_an_admin_key_and_keeps_tenants_apart(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    overrides = {
        "backends": {
            "stt": "test-stt",
            "llm": "test-llm",
            "tts": "test-tts",
            **_store_options(tmp_path / "s.sqlite3"),
        },
        "tenants": _keyed_tenants(b_opted_in=False),
    }
    heart = voices["hibari-heart"]

    def key(value: str) -> dict[str, str]:
        return {"authorization": f"Bearer {value}"}

    async with running(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/v1/speakers")).status_code == 401
        response = await http.get("/v1/speakers", headers=key(USER_A))
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
        response = await http.post(
            "/v1/speakers", headers=key(ADMIN_A), **_files(*heart[:2], speaker_id="heart")
        )
        assert response.status_code == 201
        # b has not opted in: it may not enrol, but may list and delete (its own: none).
        response = await http.post(
            "/v1/speakers", headers=key(ADMIN_B), **_files(*heart[:2], speaker_id="heart")
        )
        assert response.status_code == 403 and response.json()["code"] == "not_permitted"
        response = await http.get("/v1/speakers", headers=key(ADMIN_B))
        assert response.json()["data"] == []
        response = await http.delete("/v1/speakers/heart", headers=key(ADMIN_B))
        assert response.status_code == 404 and response.json()["code"] == "unknown_speaker"
        response = await http.get("/v1/speakers", headers=key(ADMIN_A))
        assert [s["speaker_id"] for s in response.json()["data"]] == ["heart"]


async def test_the_speakers_api_without_the_feature_answers_501() -> None:
    overrides = {"tenants": {"default": {"speaker_recognition": True}}}
    async with (
        running(overrides, host=_host(with_feature=False)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        for response in (
            await http.get("/v1/speakers"),
            await http.delete("/v1/speakers/x"),
            await http.post("/v1/speakers", **_files(silence(1.0), speaker_id="x")),
        ):
            assert response.status_code == 501
            assert response.json()["code"] == "speaker_recognition_unavailable"


async def test_a_corrupt_store_takes_the_feature_down_and_the_api_answers_503(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"garbage, not a database " * 200)
    overrides = {
        "backends": {
            "stt": "test-stt",
            "llm": "test-llm",
            "tts": "test-tts",
            **_store_options(path),
        },
        "tenants": {"default": {"speaker_recognition": True}},
    }
    async with running(overrides) as server, httpx.AsyncClient(base_url=server.url) as http:
        health = await http.get("/health")
        assert health.status_code == 503
        assert "feature:speaker-recognition" in health.json()["down"]
        entry = health.json()["features"]["speaker-recognition"]
        assert entry["ok"] is False and "speaker store" in entry["error"]
        response = await http.get("/v1/speakers")
        assert response.status_code == 503
        assert response.json()["code"] == "speaker_recognition_unavailable"
        assert response.headers["retry-after"] == "5"
        async with connect(server.ws_url, config={"speaker_recognition": True}) as client:
            warnings: list[str] = []
            with trio.fail_after(10):
                async for event in client.events():
                    if isinstance(event, frames.WarningFrame):
                        warnings.append(event.code)
                    elif isinstance(event, frames.State):
                        break
            await client.end()
        assert warnings == ["feature_unavailable"]


# --------------------------------------------------------------------------- a session


@pytest.mark.slow
async def test_a_sessions_final_transcripts_name_the_enrolled_speaker(
    tmp_path: Path, voices: dict[str, list[bytes]]
) -> None:
    overrides = {
        "backends": {
            "stt": "test-stt",
            "llm": "test-llm",
            "tts": "test-tts",
            **_store_options(tmp_path / "s.sqlite3"),
        },
        "tenants": {"default": {"speaker_recognition": True}},
    }
    async with open_test_engine(overrides, host=_host()) as engine:
        _, feature_of_engine = engine.features["speaker_recognition"]
        assert isinstance(feature_of_engine, SpeakerDirectory)
        await feature_of_engine.enroll("default", "heart", voices["hibari-heart"][:3])
        transport, client = memory_transport_pair()
        finals: list[frames.TranscriptFrame] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            started = await client.start(speaker_recognition=True)
            assert "speaker_recognition" in started.capabilities.features  # type: ignore[attr-defined]
            for clip in (voices["hibari-heart"][4], voices["piper-joe"][4]):
                for offset in range(0, len(clip), 640):  # 20 ms messages
                    await client.send_raw(clip[offset : offset + 640])
                await client.send_json({"type": "audio.commit"})
                received = await client.receive_until("transcript", final=True, timeout=20)
                finals.append(received[-1])  # type: ignore[arg-type]
                await client.receive_until("state", state="idle", timeout=20)
            nursery.cancel_scope.cancel()
    heart, visitor = finals
    assert heart.speaker_id == "heart"
    assert heart.speaker_score is not None and heart.speaker_score >= DEFAULT_THRESHOLD
    assert visitor.speaker_id is None
    assert visitor.speaker_score is not None and visitor.speaker_score < DEFAULT_THRESHOLD


# --------------------------------------------------------------------------- the benchmark


@pytest.mark.slow
async def test_the_identification_benchmark_section(voices: dict[str, list[bytes]]) -> None:
    report = await measure_identification(voices, host=_host(), lookalikes={})
    assert report.threshold == DEFAULT_THRESHOLD
    assert [d.turns for d in report.calibration] == [
        "whole sentences",
        *(f"{s:g} s of speech" for s in (1.0, 1.5, 2.0)),
    ]
    at_threshold = next(o for o in report.open_set if o.threshold == DEFAULT_THRESHOLD)
    assert at_threshold.right == 1.0 and at_threshold.false_accept == 0.0
    assert at_threshold.known_turns == at_threshold.unknown_turns == 4 * 3
    assert report.cpu_ms_per_identification > 0
    lines = identification_lines(report)
    assert any(line.startswith("CPU:") for line in lines)
