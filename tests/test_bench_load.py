"""``scaivoice bench load`` against an in-process server, its wire, its capacity search, and the
batched Silero VAD it loads (same probabilities as one stream at a time)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import numpy as np
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from scaivoice.conformance.bench.load import (
    plan,
    run_load,
    search_capacity,
    speech_utterance,
    synthetic_speech,
)
from scaivoice.conformance.bench.load.wire import BINARY, CLOSE, TEXT, Wire, WireClosed, target
from scaivoice.engine import (
    RunningServer,
    ScaiVoiceError,
    SpeechStarted,
    SpeechStopped,
    config_from_mapping,
    hash_key,
    pcm16_to_float,
    serve,
)
from scaivoice.engine.testing import test_engine_config
from scaivoice.plugins import silero_vad

from .conftest import host_with

REPLY = "Sure, here is a short answer."  # 29 characters: 1.45 s of test-tts audio


@asynccontextmanager
async def vad_server(overrides: dict[str, Any] | None = None) -> AsyncIterator[RunningServer]:
    """The real server on loopback, port 0: test backends plus the Silero VAD feature."""
    pytest.importorskip("onnxruntime")
    doc = test_engine_config(
        {
            "server": {"port": 0, "drain_timeout_s": 0.3},
            "backends": {"options": {"test-llm": {"reply": REPLY}}},
            **(overrides or {}),
        }
    )
    host = host_with()
    host.register(silero_vad, name="builtin-silero-vad", distribution="scaivoice")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config_from_mapping(doc), host, shutdown_trigger=stop.wait)
        )
        yield server
        stop.set()


async def test_three_sessions_take_turns_and_barge_in_through_the_real_server() -> None:
    label, speech = speech_utterance("synthetic")
    async with vad_server() as server:
        run = plan(server.ws_url, sessions=3, duration_s=4.0, speech=speech, warmup_s=0.5)
        with trio.fail_after(30):
            report = await run_load(run, speech_label=label)
    r = report.result
    text = report.format_text()
    assert r.errors == {}, text
    assert r.connected == 3
    # Every session pinged every 200 ms and probed the audio path every second. Client and
    # server share this process: the lags are sane, not a measurement.
    assert report.lag["n"] >= 3 * 4.0 / 0.2 - 3
    assert report.audio_lag["n"] >= 3 * 3
    for lag in (report.lag, report.audio_lag):
        assert 0 < lag["p50"] <= lag["p99"] <= lag["max"] < 1000, text  # type: ignore[operator]
    # The server's VAD ended each counted utterance and the agent answered it with audio.
    assert r.utterances >= 3
    assert r.replies == r.utterances and r.unanswered == 0, text
    # The VAD's hang time after the speech (less up to a frame), and its min_speech_ms + a
    # frame or two before a barge-in. Sessions 0 and 2 spoke again 1 s after their first
    # utterance: over the reply.
    options = silero_vad.SileroVadOptions()
    hang, debounce = options.min_silence_ms, options.min_speech_ms
    assert all(hang - 50 < ms < hang + 1500 for ms in r.eot_to_thinking_ms), text
    assert all(hang - 50 < ms < hang + 1500 for ms in r.eot_to_audio_ms), text
    assert r.interrupted >= 1
    assert all(debounce - 50 < ms < debounce + 1500 for ms in r.barge_in_ms), text
    assert len(report.client_cpu_cores) == 1
    assert report.to_json()["errors"] == {}


async def test_refused_sessions_are_errors_and_fail_the_run() -> None:
    tenants = {"tenants": {"acme": {"keys": [{"id": "k", "hash": hash_key("sk-test-acme")}]}}}
    _, speech = speech_utterance("synthetic")
    async with vad_server(tenants) as server:
        run = plan(server.ws_url, sessions=2, duration_s=0.5, speech=speech, warmup_s=0.0)
        with trio.fail_after(30):
            report = await run_load(run)
    assert report.result.errors == {"refused:unauthorized": 2}
    assert report.result.connected == 0
    assert not report.ok
    assert "FAIL" in report.format_text()


def test_only_plain_websockets_on_loopback_are_loaded() -> None:
    assert target("ws://127.0.0.1:8765/v1/session", "a b") == (
        "127.0.0.1",
        8765,
        "/v1/session?token=a%20b",
    )
    with pytest.raises(ScaiVoiceError, match="ws://"):
        target("wss://127.0.0.1/v1/session", None)
    with pytest.raises(ScaiVoiceError, match="loopback"):
        target("ws://192.0.2.1:8765/v1/session", None)


# ---------------------------------------------------------------------------- the wire


class _Peer:
    """The server's end of a socket pair, spoken with wsproto's server side."""

    def __init__(self, sock: socket.socket) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.ws = WSConnection(ConnectionType.SERVER)

    async def events(self) -> list[Any]:
        """Read until wsproto has at least one event."""
        while True:
            events = list(self.ws.events())
            if events:
                return events
            self.ws.receive_data(await self.stream.receive_some(65536))

    async def send(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def answer_upgrade(self, answer: AcceptConnection | RejectConnection) -> Request:
        [request] = await self.events()
        await self.send(answer)
        assert isinstance(request, Request)
        return request


@asynccontextmanager
async def _wire_and_peer() -> AsyncIterator[tuple[Wire, _Peer]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with ours, theirs:
        yield Wire(ours), _Peer(theirs)


async def test_the_wire_upgrades_sends_and_reassembles_messages() -> None:
    async with _wire_and_peer() as (wire, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wire.handshake, "127.0.0.1:1", "/v1/session?token=t", "k")
                request = await peer.answer_upgrade(AcceptConnection())
            assert request.target == "/v1/session?token=t"
            assert (b"authorization", b"Bearer k") in request.extra_headers
            wire.send_bytes(b"\1" * 640)
            wire.send_text('{"type":"ping","id":1}')
            await wire.flush()
            received = []
            while len(received) < 2:
                received += await peer.events()
            assert [(type(e), e.data) for e in received] == [
                (BytesMessage, b"\1" * 640),
                (TextMessage, '{"type":"ping","id":1}'),
            ]
            big = bytes(range(256)) * 300
            await peer.send(TextMessage(data='{"type":"pong","id":1}'))
            await peer.send(BytesMessage(data=big[:1000], message_finished=False))
            await peer.send(Ping(payload=b"are you there"))  # between fragments
            await peer.send(BytesMessage(data=big[1000:]))
            await peer.send(CloseConnection(code=1000))
            assert await wire.receive() == (TEXT, '{"type":"pong","id":1}')
            assert await wire.receive() == (BINARY, big)
            assert await wire.receive() == (CLOSE, b"")
            assert wire.close_code == 1000
            await wire.flush()
            answers = []
            while not any(isinstance(e, CloseConnection) for e in answers):
                answers += await peer.events()
            assert [type(e) for e in answers] == [Pong, CloseConnection]  # both answered
            with pytest.raises(WireClosed):  # nothing more goes out after the close
                wire.send_text('{"type":"session.end"}')


async def test_a_refused_or_garbled_upgrade_is_a_closed_wire() -> None:
    async with _wire_and_peer() as (wire, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer_upgrade, RejectConnection(status_code=401))
        with trio.fail_after(5), pytest.raises(WireClosed, match="HTTP 401"):
            await wire.handshake("127.0.0.1:1", "/v1/session", None)

    async def garble(peer: _Peer) -> None:
        await peer.events()
        await peer.stream.send_all(b"not HTTP at all\r\n\r\n")

    async with _wire_and_peer() as (wire, peer), trio.open_nursery() as nursery:
        nursery.start_soon(garble, peer)
        with trio.fail_after(5), pytest.raises(WireClosed):
            await wire.handshake("127.0.0.1:1", "/v1/session", None)


async def test_a_server_that_breaks_the_protocol_or_hangs_up_closes_the_wire() -> None:
    async with _wire_and_peer() as (wire, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wire.handshake, "127.0.0.1:1", "/v1/session", None)
                await peer.answer_upgrade(AcceptConnection())
            await peer.stream.send_all(b"\x82\x85\0\0\0\0hello")  # servers must not mask
            assert await wire.receive() == (CLOSE, b"")
            assert wire.close_code == 1002  # protocol error, and the wire said so
            await wire.flush()
            [close] = await peer.events()
            assert isinstance(close, CloseConnection) and close.code == 1002
    async with _wire_and_peer() as (wire, peer):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wire.handshake, "127.0.0.1:1", "/v1/session", None)
                await peer.answer_upgrade(AcceptConnection())
            await peer.stream.aclose()
            with pytest.raises(WireClosed, match="end of file"):
                await wire.receive()


def test_the_capacity_search_finds_the_largest_passing_count() -> None:
    tried: list[int] = []

    def passes(n: int) -> bool:
        tried.append(n)
        return n <= 137

    assert 131 <= search_capacity(passes, 20) <= 137
    assert len(tried) < 15
    assert search_capacity(lambda n: n <= 5, 64) == 5
    assert search_capacity(lambda n: False, 8) == 0


# ---------------------------------------------------------------------------- Silero VAD


def starts_and_stops(events: list[Any]) -> list[Any]:
    """The speech starts and stops among ``events`` (pauses are reported too)."""
    return [e for e in events if isinstance(e, SpeechStarted | SpeechStopped)]


def test_the_synthetic_utterance_is_speech_to_silero() -> None:
    pytest.importorskip("onnxruntime")
    from scaivoice.plugins._segmenter import SpeechSegmenter
    from scaivoice.plugins._silero_model import FRAME, SileroModel

    model = SileroModel.load()
    pcm = b"\0" * 32000 + synthetic_speech(1.5) + b"\0" * 32000
    samples = pcm16_to_float(pcm)
    count = len(samples) // FRAME
    probabilities = model.stream().probabilities(samples[: count * FRAME].reshape(count, FRAME))
    events = starts_and_stops(SpeechSegmenter().push_many(probabilities))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert 1000 <= events[0].at_ms <= 1200
    assert 2400 <= events[1].at_ms <= 2700
    # Voiced from its second frame on: well above the threshold, not marginal.
    assert np.mean(np.asarray(probabilities[33:76]) > 0.9) > 0.95


def test_batched_probabilities_equal_one_stream_at_a_time() -> None:
    pytest.importorskip("onnxruntime")
    from scaivoice.plugins._silero_model import FRAME, SileroModel

    model = SileroModel.load()
    rng = np.random.default_rng(1)
    signals = [pcm16_to_float(synthetic_speech(2.0, seed=i)) for i in range(5)]
    signals.append(rng.normal(0.0, 0.1, 2 * 16000).astype(np.float32))
    signals.append(np.zeros(2 * 16000, np.float32))
    frames = [s[: 60 * FRAME].reshape(60, FRAME) for s in signals]
    alone = [model.stream().probabilities(f) for f in frames]
    streams = [model.stream() for _ in frames]
    batched: list[list[float]] = [[] for _ in frames]
    done = [0] * len(frames)
    while min(done) < 60:  # chunks of 0-3 frames per stream per batch, as sessions send them
        work, owners = [], []
        for i, f in enumerate(frames):
            take = min(int(rng.integers(0, 4)), 60 - done[i])
            if take:
                work.append((streams[i], f[done[i] : done[i] + take]))
                owners.append(i)
                done[i] += take
        for i, result in zip(owners, model.probabilities_batch(work), strict=True):
            batched[i] += result
    assert np.abs(np.asarray(alone) - np.asarray(batched)).max() <= 1e-5


async def test_concurrent_sessions_batch_and_keep_their_own_events() -> None:
    pytest.importorskip("onnxruntime")
    utterance = b"\0" * 16000 + synthetic_speech(1.5) + b"\0" * 32000
    pieces = [utterance[i : i + 640] for i in range(0, len(utterance), 640)]  # 20 ms
    async with silero_vad.SileroVad.from_mapping({}) as vad:
        single = vad.open_session(sample_rate=16000, options={})
        expected = [e for piece in pieces for e in await single.process(piece)]
        assert [type(e) for e in starts_and_stops(expected)] == [SpeechStarted, SpeechStopped]
        before = vad.statistics()

        results: dict[int, list[Any]] = {}

        async def session(index: int) -> None:
            state = vad.open_session(sample_rate=16000, options={})
            events = []
            for piece in pieces[index:] + pieces[:index] if index % 2 else pieces:
                events += await state.process(piece)
            results[index] = events

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for index in range(8):
                    nursery.start_soon(session, index)
        stats = vad.statistics()
    for index in range(0, 8, 2):  # the sessions that heard the same audio heard the same
        assert results[index] == expected
    for index in range(1, 8, 2):  # rotated audio: speech later, still one start and stop
        assert [type(e) for e in starts_and_stops(results[index])] == [
            SpeechStarted,
            SpeechStopped,
        ]
    assert stats.largest_batch >= 4  # sessions with audio in the same tick ran together
    assert stats.batches - before.batches < (stats.chunks - before.chunks) / 2
    heard = (stats.frames + stats.skipped) - (before.frames + before.skipped)
    assert heard == 8 * (len(utterance) // 1024)  # scored, or skipped by the energy gate
