"""``scaivoice bench turns``: barge-in latency and engine overhead through the real server.

Starts ``scaivoice serve`` in its own process on loopback with the deterministic test backends
at zero latency (or uses ``--url``), then runs N turns over one session. Each turn: 200 ms of
audio, ``audio.commit``, wait for the first agent audio byte (engine overhead: end of user turn
-> first agent audio byte), keep listening 0-150 ms into the paced audio, ``interrupt``, and
time ``interrupted`` and the last audio byte of the turn (barge-in latency). All times are taken
at the client, so they include loopback and the client's own parsing: an upper bound.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import trio

from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from ._server import local_server

__all__ = ["run_turn_benchmark"]

_CONFIG = """\
[backends]
stt = "test-stt"
llm = "test-llm"
tts = "test-tts"

[backends.options.test-llm]
reply = "Certainly. Here is a reply that is long enough to be interrupted while it plays."
"""


def run_turn_benchmark(*, turns: int, url: str | None, api_key: str | None) -> int:
    """Run the benchmark and print its figures. Returns a process exit code."""
    try:
        if url is not None:
            return trio.run(_run, url, api_key, turns)
        with local_server(_CONFIG) as server:
            return trio.run(_run, server.session_url, api_key, turns)
    except BenchmarkFailed as failure:
        print(f"benchmark failed: {failure}", file=sys.stderr)
        return 1


class BenchmarkFailed(RuntimeError):
    """The server answered a turn of the benchmark with a warning or an error."""


async def _next(session: VoiceClient) -> frames.ServerFrame | AgentAudio:
    event = await session.receive()
    if isinstance(event, frames.ErrorFrame | frames.WarningFrame):
        raise BenchmarkFailed(f"{event.code}: {event.message}")
    return event


async def _run(url: str, api_key: str | None, turns: int) -> int:
    overhead: list[float] = []
    to_interrupted: list[float] = []
    to_last_audio: list[float] = []
    server_overhead: list[float] = []
    server_barge_in: list[float] = []
    rng = np.random.default_rng(0)
    speech = (np.sin(np.arange(3200) / 5.0) * 8000).astype("<i2").tobytes()  # 200 ms
    # Push-to-talk: each turn ends at ``audio.commit`` (a tone is not speech to a VAD).
    async with connect(url, api_key=api_key, config={"turn_detection": "manual"}) as session:
        await _drain_until(session, "idle")
        for _ in range(turns):
            await session.send_audio(speech)
            committed = time.perf_counter()
            await session.commit()
            while True:  # until the first agent audio byte
                event = await _next(session)
                if isinstance(event, AgentAudio):
                    overhead.append((time.perf_counter() - committed) * 1000)
                    break
            with trio.move_on_after(rng.uniform(0.0, 0.15)):
                while True:
                    await _next(session)
            interrupted_at = time.perf_counter()
            await session.interrupt()
            last_audio = interrupted_at
            while True:
                event = await _next(session)
                if isinstance(event, AgentAudio):
                    last_audio = time.perf_counter()
                elif isinstance(event, frames.Metrics):
                    if event.end_of_turn_to_first_audio_ms is not None:
                        server_overhead.append(event.end_of_turn_to_first_audio_ms)
                    if event.barge_in_ms is not None:
                        server_barge_in.append(event.barge_in_ms)
                elif isinstance(event, frames.State) and event.state == "interrupted":
                    to_interrupted.append((time.perf_counter() - interrupted_at) * 1000)
                    to_last_audio.append((last_audio - interrupted_at) * 1000)
                    break
            await _drain_until(session, "idle")
        await session.end()
    print(f"{turns} turns through {url}; client-side times include loopback and client parsing")
    _report("engine overhead: end of user turn -> first agent audio byte (client)", overhead)
    _report(
        "engine overhead: end of user turn -> first audio frame queued (server)", server_overhead
    )
    _report("barge-in: interrupt sent -> interrupted received (client)", to_interrupted)
    _report("barge-in: interrupt sent -> last audio byte of the turn (client)", to_last_audio)
    _report("barge-in: interrupt handled -> turn fully stopped (server)", server_barge_in)
    return 0


async def _drain_until(session: VoiceClient, state: str) -> None:
    while True:
        event = await _next(session)
        if isinstance(event, frames.State) and event.state == state:
            return


def _report(title: str, values_ms: list[float]) -> None:
    values = np.asarray(values_ms)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    print(
        f"{title}\n  n={values.size}  p50={p50:.2f} ms  p90={p90:.2f} ms  p99={p99:.2f} ms  "
        f"max={values.max():.2f} ms",
        flush=True,
    )
