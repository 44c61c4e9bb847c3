"""``scaivoice bench latency``: its stub server (through the real ``openai`` backends), its
audio, its per-round figures and the playback model, and one short run end to end."""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from typing import Literal

import httpx
import numpy as np
import pytest
import trio

from scaivoice.backends.openai_llm import OpenAILlmBackend, OpenAILlmOptions
from scaivoice.backends.openai_stt import OpenAISttBackend, OpenAISttOptions
from scaivoice.backends.openai_tts import OpenAITtsBackend, OpenAITtsOptions
from scaivoice.conformance.bench._proc import rss_mib
from scaivoice.conformance.bench.latency import (
    LatencyOptions,
    StubConfig,
    measure_latency,
    serve_stub,
)
from scaivoice.conformance.bench.latency.audio import (
    FRAME_BYTES,
    NoiseLoop,
    Question,
    noise_frames,
)
from scaivoice.conformance.bench.latency.processes import tree, tree_rss_mib, tree_ticks
from scaivoice.conformance.bench.latency.report import ROWS, parse_counters
from scaivoice.conformance.bench.latency.rounds import RoundRecord
from scaivoice.conformance.bench.latency.run import add_arguments, options_from_arguments
from scaivoice.conformance.bench.latency.stub import StubStats
from scaivoice.engine import AudioChunk, ChatMessage, LlmRequest, SttRequest, Transcript, TtsRequest

# ====================================================================== the stub


async def _transcribe(url: str) -> str:
    stt = OpenAISttBackend(OpenAISttOptions(base_url=url))
    audio_send, audio_receive = trio.open_memory_channel[bytes](1)
    results_send, results_receive = trio.open_memory_channel[Transcript](math.inf)
    await audio_send.send(bytes(16000))  # 0.5 s at 16 kHz
    audio_send.close()
    async with stt:
        await stt.transcribe(SttRequest(sample_rate=16000), audio_receive, results_send)
    return " ".join([t.text async for t in results_receive if t.final])


async def _synthesize(url: str, response_format: Literal["pcm", "wav"]) -> bytes:
    tts = OpenAITtsBackend(OpenAITtsOptions(base_url=url, response_format=response_format))
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    async with tts:
        await tts.synthesize(TtsRequest(text="Hello."), send)
    return b"".join([chunk.pcm async for chunk in receive])


async def test_the_stub_answers_the_openai_backends_after_its_delays() -> None:
    config = StubConfig(
        stt_delay_ms=0,
        llm_delay_ms=150,
        tts_delay_ms=0,
        transcripts=("first", "second"),
        reply="One two three.",
        tts_seconds=0.5,
    )
    async with trio.open_nursery() as nursery:
        url, stats = await nursery.start(serve_stub, config)
        assert [await _transcribe(url) for _ in range(3)] == ["first", "second", "second"]

        llm = OpenAILlmBackend(OpenAILlmOptions(base_url=url, model="stub"))
        deltas_send, deltas_receive = trio.open_memory_channel[str](math.inf)
        started = time.perf_counter()
        async with llm:
            await llm.generate(LlmRequest(messages=(ChatMessage("user", "hi"),)), deltas_send)
        assert time.perf_counter() - started >= 0.15  # the delay is a lower bound
        assert [d async for d in deltas_receive] == ["One", " two", " three."]

        # 24 kHz PCM16 either way
        assert len(await _synthesize(url, "pcm")) == len(await _synthesize(url, "wav")) == 24000

        async with httpx.AsyncClient() as client:
            voices = await client.get(url + "/audio/voices")
            assert voices.json()["voices"][0]["id"] == "alloy"
            assert (await client.get(url + "/models")).status_code == 200
            assert (await client.get(url + "/nothing")).status_code == 404
            answer = await client.get(url.removesuffix("/v1") + "/stats")
        assert StubStats.from_json(answer.json()) == stats
        assert stats.to_json() == {
            "stt": {"requests": 3, "completed": 3, "abandoned": 0},
            "llm": {"requests": 1, "completed": 1, "abandoned": 0},
            "tts": {"requests": 2, "completed": 2, "abandoned": 0},
        }
        nursery.cancel_scope.cancel()


async def test_a_request_given_up_by_its_client_counts_as_abandoned() -> None:
    async with trio.open_nursery() as nursery:
        url, stats = await nursery.start(serve_stub, StubConfig(stt_delay_ms=60_000))
        async with trio.open_nursery() as client:
            client.start_soon(_transcribe, url)
            await stats.wait_until(lambda s: s.stt.requests == 1)
            client.cancel_scope.cancel()  # the backend closes its connection
        await stats.wait_until(lambda s: s.stt.abandoned == 1)
        assert stats.stt.completed == 0
        nursery.cancel_scope.cancel()


def test_stats_differences() -> None:
    before = StubStats.from_json(
        {n: {"requests": 1, "completed": 1, "abandoned": 0} for n in ("stt", "llm", "tts")}
    )
    after = StubStats.from_json(
        {n: {"requests": 4, "completed": 2, "abandoned": 2} for n in ("stt", "llm", "tts")}
    )
    assert after.minus(before).to_json()["llm"] == {"requests": 3, "completed": 1, "abandoned": 2}


# ====================================================================== audio and figures


def test_the_noise_has_its_level_and_the_question_frames_carry_it() -> None:
    frames = noise_frames(-58.0, seconds=2.0)
    assert len(frames) == 100 and all(len(f) == FRAME_BYTES for f in frames)
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    assert 20 * math.log10(np.sqrt(np.mean(samples**2)) / 32768) == pytest.approx(-58.0, abs=0.2)

    speech = (np.sin(np.arange(8000) / 3) * 8000).astype("<i2").tobytes()  # 0.5 s: 25 frames
    question = Question("q", "a sine", speech)
    loop = NoiseLoop(frames)
    mixed = question.frames(loop)
    assert len(mixed) == 25 and question.duration_s == 0.5
    under = np.frombuffer(b"".join(mixed), dtype="<i2").astype(np.int32) - np.frombuffer(
        speech, dtype="<i2"
    )
    assert np.array_equal(under, np.frombuffer(b"".join(frames[:25]), dtype="<i2"))
    assert loop.next() == frames[25]  # the noise goes on where the question left it


def test_a_rounds_figures_and_the_naive_clients_playback() -> None:
    record = RoundRecord(speech_end=10.0, thinking=10.4, first_audio=10.7, onset=11.1)
    # The reply's audio: 80 ms ahead of real time at first, then in 40 ms pieces, and a last
    # piece late (after a gap the player has caught up with).
    record.reply_audio = [(10.7, 0.08), *((10.7 + 0.04 * i, 0.04) for i in range(1, 11))]
    record.reply_audio.append((11.5, 0.04))
    record.interrupted = 11.25
    assert record.end_to_first_audio_ms == pytest.approx(700)
    assert record.end_to_thinking_ms == pytest.approx(400)
    assert record.onset_to_interrupted_ms == pytest.approx(150)
    assert record.onset_to_last_audio_ms == pytest.approx(400)
    # 0.48 s of audio from 10.7 plays until 11.18; the late piece plays 11.5-11.54.
    assert record.naive_silence_ms == pytest.approx(440)
    assert all(value(RoundRecord()) is None for _, value in ROWS.values())


def test_the_servers_speculative_counters_are_read_from_its_metrics() -> None:
    text = (
        "# HELP scaivoice_speculative_requests_total x\n"
        "# TYPE scaivoice_speculative_requests_total counter\n"
        'scaivoice_speculative_requests_total{tenant="a",outcome="adopted"} 3\n'
        'scaivoice_speculative_requests_total{tenant="b",outcome="adopted"} 2\n'
        'scaivoice_speculative_requests_created{tenant="a",outcome="adopted"} 1.7e9\n'
        "# HELP scaivoice_sessions_total x\n"
        "# TYPE scaivoice_sessions_total counter\n"
        "scaivoice_sessions_total 9\n"
    )
    assert parse_counters(text, ("scaivoice_speculative",)) == {
        'scaivoice_speculative_requests_total{outcome="adopted"}': 5.0
    }
    nothing_yet = (
        "# HELP scaivoice_speculative_requests_total x\n"
        "# TYPE scaivoice_speculative_requests_total counter\n"
    )
    assert parse_counters(nothing_yet, ("scaivoice_speculative",)) == {
        "scaivoice_speculative_requests_total": 0.0
    }
    assert parse_counters(nothing_yet, ("scaivoice_tools",)) == {}


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_a_servers_process_tree_counts_its_workers() -> None:
    script = (
        "import subprocess, sys; c = subprocess.Popen(['sleep', '60'])\n"
        "print(c.pid, flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None and parent.stdin is not None
        child = int(parent.stdout.readline())
        try:
            assert tree(parent.pid) == [parent.pid, child]
            ticks, rss = tree_ticks(parent.pid), tree_rss_mib(parent.pid)
            own = rss_mib(parent.pid)
            assert ticks is not None and rss is not None and own is not None and rss > own
        finally:
            os.kill(child, signal.SIGKILL)
            parent.stdin.close()
            parent.wait(timeout=30)
    assert tree_ticks(parent.pid) is None and tree_rss_mib(parent.pid) is None


def test_the_command_lines_knobs() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = "--rounds 3 --delay-ms 50 --tts-delay-ms 200 --noise-dbfs -47 --idle 10,100"
    argv += " --transcript a --transcript b --tts-format wav"
    options = options_from_arguments(parser.parse_args(argv.split()))
    assert (options.rounds, options.noise_dbfs, options.tts_format) == (3, -47.0, "wav")
    assert options.idle_sessions == (10, 100)
    stub = options.stub
    assert (stub.stt_delay_ms, stub.llm_delay_ms, stub.tts_delay_ms) == (50, 50, 200)
    assert stub.transcripts == ("a", "b") and stub.tts_seconds == 8.0
    default = options_from_arguments(parser.parse_args(["--idle", ""]))
    assert default.idle_sessions == () and default.stub.transcripts == (default.question,)
    assert default == LatencyOptions(idle_sessions=())


# ====================================================================== end to end


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_short_run_prints_and_returns_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    options = LatencyOptions(
        rounds=1,
        stub=StubConfig(tts_seconds=3.0),
        tail_s=0.6,
        idle_sessions=(2,),
        idle_warmup_s=0.5,
        idle_window_s=1.0,
    )
    report = measure_latency(options, verbose=True)
    out = capsys.readouterr().out

    assert len(report.rounds) == 1
    record = report.rounds[0]
    assert record.errors == [], record.errors
    summary = report.summary()
    for key in ROWS:
        assert summary[key].count == 1, (key, out)
    first_audio = summary["end_of_speech_to_first_audio_ms"].median
    assert first_audio is not None and 300 < first_audio < 5000  # stub delays + the VAD hang
    # The barge-in stops the reply long before its 3 s of audio could have been sent.
    last_audio = summary["onset_to_last_audio_ms"].median
    assert last_audio is not None and last_audio < 2500
    per_turn = report.requests_per_turn()
    assert set(per_turn) == {"stt", "llm", "tts"} and per_turn["llm"] >= 0.5
    [idle] = report.idle
    assert idle.sessions == idle.connected == 2 and not idle.errors
    if idle.cpu_ms_per_session_s is not None:  # /proc
        assert idle.cpu_ms_per_session_s > 0 and idle.rss_mib is not None

    assert "  round  1: end of speech -> audio" in out
    for title, _ in ROWS.values():
        assert title in out
    assert "backend requests per user turn (stub, 2 turns): stt " in out
    assert "speculative requests (server metrics, 2 user turns): started " in out
    assert "idle sessions streaming noise (-58 dBFS)" in out
    doc = report.to_json()
    assert doc["summary"]["onset_to_interrupted_ms"]["count"] == 1  # type: ignore[index]
    assert doc["idle"][0]["sessions"] == 2  # type: ignore[index]
