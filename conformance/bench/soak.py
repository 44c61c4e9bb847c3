"""``scaivoice bench soak``: many sessions for a long time, and whether anything grows.

N sessions (20 by default) talk to one server for ``--minutes`` (30): each connects with
``vad_enabled``, streams speech in real time (an utterance of about 1.5 s in 20 ms frames,
then 1 s or 3 s of silence in turn: after 1 s the next utterance cuts into the agent's reply, a
barge-in), and after its lifetime (``--session-seconds``, 60, jittered by up to half either way)
leaves, every other time with ``session.end`` and otherwise by closing the socket without a
word, and connects again. Without a URL the server is started on loopback with the test
backends (``--stack test``: the engine's own cost) or the embedded models (``--stack
embedded``).

Every ``--interval`` seconds it reads the server's ``GET /v1/admin/runtime`` (trio tasks, RSS,
open file descriptors, threads, event-loop lag) and prints a line with the sessions' counts so
far. At the end it fits, for each figure, a line over the first half of the samples and one
over the second half (the live sessions at each sample taken into account: a sample taken while
a session reconnects has a few tasks less), and says that a figure *grows* when the second half
still rises by more than its tolerance (a floor, or three standard errors of the fit where the
figure is noisier: the task count moves with what the sessions are doing at that instant): a
warm-up rises in the first half and then flattens, a leak keeps rising. A leak slower than the
floor over half the run goes unseen: a longer run sees a smaller one. Every loop is bounded: a
run stops by itself.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import trio

from scaivoice.engine import ProtocolViolation, SessionClosed
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from ._server import local_server
from .load.speech import RATE, speech_utterance

__all__ = [
    "Growth",
    "Sample",
    "SoakCounts",
    "judge",
    "run_soak",
    "run_soak_benchmark",
]

GAPS_S = (1.0, 3.0)
"""Silence after each utterance, in turn: after 1 s the next one barges in on the reply."""
_SESSION_CONFIG = {"vad_enabled": True}
_CLOSE_S = 5.0
_RETRY_S = 1.0
_LAST_SAMPLE_S = 2.0
_TEST_STACK = """\
[backends]
stt = "test-stt"
llm = "test-llm"
tts = "test-tts"

[backends.options.test-llm]
reply = "Sure, here is a short answer for you."

[session]
warm_up = false
"""
_EMBEDDED_STACK = """\
[backends]
stt = "whisper"
llm = "llama-cpp"
tts = "hibari"

[backends.options.llama-cpp]
max_tokens = 24
seed = 0
"""
FIGURES = ("tasks", "rss_mib", "open_fds", "threads", "lag_p99_ms")
"""The figures judged at the end."""


@dataclass
class SoakCounts:
    """What the sessions did, as the client saw it."""

    connects: int = 0
    ended: int = 0
    """Sessions that left with ``session.end``."""
    dropped: int = 0
    """Sessions that left by closing the socket without a word."""
    utterances: int = 0
    turns: int = 0
    """Agent turns that ended (one ``metrics`` frame each)."""
    replies: int = 0
    """Agent replies that sent audio (``agent.audio.start``)."""
    barge_ins: int = 0
    """``interrupted`` states: the user cut into a reply."""
    errors: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        errors = sum(self.errors.values())
        return (
            f"connects {self.connects:5d}  turns {self.turns:6d}  barge-ins {self.barge_ins:5d}  "
            f"errors {errors}"
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the server's runtime, ``t`` seconds into the run."""

    t: float
    pid: int
    sessions_live: int
    tasks: int
    rss_mib: float
    open_fds: int
    threads: int
    lag_p99_ms: float
    lag_window_s: float = 60.0
    """How far back the server's lag percentile reaches."""

    @classmethod
    def of(cls, t: float, doc: dict[str, Any]) -> Sample:
        return cls(
            t=t,
            pid=int(doc["pid"]),
            sessions_live=int(doc["sessions_live"]),
            tasks=int(doc["tasks"]),
            rss_mib=float(doc["rss_mib"] or 0.0),
            open_fds=int(doc["open_fds"] or 0),
            threads=int(doc["threads"]),
            lag_p99_ms=float(doc["lag_ms"]["p99"] or 0.0),
            lag_window_s=float(doc["lag_ms"]["window_s"]),
        )

    def line(self) -> str:
        return (
            f"{int(self.t // 60):3d}:{int(self.t % 60):02d}  live {self.sessions_live:3d}  tasks {self.tasks:5d}  "
            f"rss {self.rss_mib:7.1f} MiB  fds {self.open_fds:4d}  threads {self.threads:3d}  "
            f"lag p99 {self.lag_p99_ms:6.1f} ms"
        )


@dataclass(frozen=True, slots=True)
class Growth:
    """A figure's trend: its fitted rise over each half of the run."""

    figure: str
    first_half: float
    """The first half's fitted rise over its span (a warm-up shows here)."""
    second_half: float
    """The second half's fitted rise over its span."""
    tolerance: float
    """The most the second half may rise and count as bounded: a floor, or three standard
    errors of its fit when the figure is noisier than that."""
    start: float
    """The figure's median over the first half."""
    new_high: bool = True
    """The last quarter's median is above every value of the first half: a leak keeps setting
    new highs, noise and a warm-up that flattened do not."""

    @property
    def grows(self) -> bool:
        return self.second_half > self.tolerance and self.new_high

    def line(self) -> str:
        verdict = "GROWS" if self.grows else "bounded"
        high = "" if self.new_high else ", no new high"
        return (
            f"{self.figure:<11} {verdict:<8} first half {self.first_half:+9.2f}, "
            f"second half {self.second_half:+9.2f} (tolerance {self.tolerance:.2f}{high}; "
            f"first-half median {self.start:.1f})"
        )


def _floor(figure: str, start: float) -> float:
    """The least rise over the second half that counts as growth, whatever the noise."""
    if figure == "rss_mib":
        return max(8.0, 0.03 * start)  # allocator and cache noise
    if figure == "lag_p99_ms":
        return max(10.0, 0.5 * start)  # the tail moves with whatever else runs
    return max(3.0, 0.02 * start)  # tasks, descriptors, threads: counts


def _rise(samples: Sequence[Sample], figure: str) -> tuple[float, float]:
    """(rise, its standard error) over ``samples``' span of a line fitted to ``figure``
    against time, with the live sessions as a second regressor when they vary (a sample taken
    mid-reconnect has fewer tasks).

    The lag is a percentile over a sliding window (``lag_window_s``) longer than the sampling
    interval: neighbouring samples share most of their data, so the error counts only one
    sample per window.
    """
    if len(samples) < 3:
        return 0.0, 0.0
    t = np.array([s.t for s in samples])
    live = np.array([float(s.sessions_live) for s in samples])
    values = np.array([float(getattr(s, figure)) for s in samples])
    columns = [np.ones_like(t), t - t[0]]
    if np.ptp(live) > 0:
        columns.append(live)
    x = np.column_stack(columns)
    solution, *_ = np.linalg.lstsq(x, values, rcond=None)
    span = float(t[-1] - t[0])
    free = len(samples) - x.shape[1]
    if free <= 0:
        return float(solution[1] * span), 0.0
    variance = float(np.sum((values - x @ solution) ** 2)) / free
    error = float(np.sqrt(variance * np.linalg.pinv(x.T @ x)[1, 1])) * span
    if figure == "lag_p99_ms" and len(samples) > 1:
        interval = span / (len(samples) - 1)
        error *= float(np.sqrt(max(1.0, samples[-1].lag_window_s / max(interval, 1e-9))))
    return float(solution[1] * span), error


def judge(samples: Sequence[Sample]) -> list[Growth]:
    """Each figure's rise over the first and the second half of ``samples`` (by time).

    A figure grows when the second half's fitted rise is above its floor (8 MiB or 3 % of
    memory, 3 or 2 % of a count, 10 ms or half of the lag) and above three standard errors of
    the fit (the noise of that figure in this run), and the last quarter's median is above
    every value of the first half. Samples from before a server restart
    (another ``pid``) are left out: a restart starts from scratch. Fewer than 6 samples: nothing
    to judge (an empty list).
    """
    if samples:
        samples = [s for s in samples if s.pid == samples[-1].pid]
    if len(samples) < 6:
        return []
    middle = (samples[0].t + samples[-1].t) / 2
    first = [s for s in samples if s.t < middle]
    second = [s for s in samples if s.t >= middle]
    result = []
    for figure in FIGURES:
        start = float(np.median([getattr(s, figure) for s in first]))
        rise, _ = _rise(first, figure)
        later, error = _rise(second, figure)
        last_quarter = [s for s in second if s.t >= (middle + samples[-1].t) / 2]
        late = float(np.median([getattr(s, figure) for s in last_quarter or second]))
        result.append(
            Growth(
                figure=figure,
                first_half=rise,
                second_half=later,
                tolerance=max(_floor(figure, start), 3.0 * error),
                start=start,
                new_high=late > max(getattr(s, figure) for s in first),
            )
        )
    return result


# ---------------------------------------------------------------------- the sessions


@dataclass
class _Run:
    url: str
    api_key: str | None
    end: float
    """``trio.current_time()`` when every session leaves for good."""
    session_s: float
    frame_ms: int
    speech: bytes
    counts: SoakCounts = field(default_factory=SoakCounts)


async def _session_loop(run: _Run, index: int, start_at: float) -> None:
    """Session ``index``: connect, talk for its lifetime, leave, again, until the run ends."""
    rng = random.Random(index)
    await trio.sleep_until(start_at)
    round_ = 0
    while trio.current_time() < run.end - 1.0:
        lifetime = run.session_s * rng.uniform(0.5, 1.5)
        leave_at = min(trio.current_time() + lifetime, run.end)
        graceful = (index + round_) % 2 == 0
        round_ += 1
        try:
            async with connect(run.url, api_key=run.api_key, config=_SESSION_CONFIG) as session:
                run.counts.connects += 1
                closed = trio.Event()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_listen, run, session, closed, nursery.cancel_scope)
                    with trio.move_on_at(leave_at):
                        await _talk(run, session, index + round_)
                    nursery.cancel_scope.cancel()
                if closed.is_set():  # the server closed it (counted as an error)
                    pass
                elif graceful:
                    await _end(run, session)
                else:
                    run.counts.dropped += 1
        except ProtocolViolation as exc:
            run.counts.errors[f"refused:{exc.code}"] += 1
            await trio.sleep(_RETRY_S)
        except SessionClosed:
            run.counts.errors["closed"] += 1
            await trio.sleep(_RETRY_S)
        except OSError as exc:
            run.counts.errors[f"connect:{type(exc).__name__}"] += 1
            await trio.sleep(_RETRY_S)


async def _talk(run: _Run, session: VoiceClient, phase: int) -> None:
    """Stream an utterance, then silence, in real time, in turn, until cancelled."""
    step = RATE * run.frame_ms // 1000 * 2
    speech = [run.speech[i : i + step] for i in range(0, len(run.speech), step)]
    silence = b"\0" * step
    due = trio.current_time()
    for turn in range(phase, phase + 1_000_000):  # bounded by the caller's deadline
        gap = int(GAPS_S[turn % len(GAPS_S)] * 1000) // run.frame_ms
        for frame in [*speech, *([silence] * gap)]:
            await trio.sleep_until(due)
            await session.send_audio(frame)
            due += run.frame_ms / 1000.0
        run.counts.utterances += 1


async def _listen(
    run: _Run, session: VoiceClient, closed: trio.Event, scope: trio.CancelScope
) -> None:
    """Count what the server sends; when it closes the session, stop the talking too."""
    counts = run.counts
    try:
        while True:
            event = await session.receive()
            if isinstance(event, AgentAudio):
                continue
            if isinstance(event, frames.AgentAudioStart):
                counts.replies += 1
            elif isinstance(event, frames.Metrics):
                counts.turns += 1
            elif isinstance(event, frames.State) and event.state == "interrupted":
                counts.barge_ins += 1
            elif isinstance(event, frames.ErrorFrame):
                counts.errors[f"error:{event.code}"] += 1
            elif isinstance(event, frames.WarningFrame):
                counts.errors[f"warning:{event.code}"] += 1
    except SessionClosed:
        counts.errors[f"closed:{session.close_code}"] += 1
        closed.set()
        scope.cancel()


async def _end(run: _Run, session: VoiceClient) -> None:
    """``session.end``, then read until the server closes (bounded)."""
    with trio.move_on_after(_CLOSE_S) as waiting:
        await session.end()
        async for _ in session.events():
            pass
    if waiting.cancelled_caught:
        run.counts.errors["close_timeout"] += 1
    elif session.close_code not in (1000, None):
        run.counts.errors[f"closed:{session.close_code}"] += 1
    else:
        run.counts.ended += 1


# ---------------------------------------------------------------------- sampling and the run


async def _sample(
    http: httpx.AsyncClient, run: _Run, began: float, interval_s: float, samples: list[Sample]
) -> None:
    """Read the server's runtime every ``interval_s`` until the run ends."""
    at = began
    while at + interval_s < run.end - _LAST_SAMPLE_S:  # not while the sessions leave
        at += interval_s
        await trio.sleep_until(at)
        try:
            response = await http.get("/v1/admin/runtime")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            print(f"runtime not read: {exc}", flush=True)
            continue
        sample = Sample.of(trio.current_time() - began, response.json())
        samples.append(sample)
        print(f"{sample.line()}  | {run.counts.line()}", flush=True)


async def run_soak(
    url: str,
    *,
    sessions: int,
    duration_s: float,
    interval_s: float,
    session_s: float = 60.0,
    frame_ms: int = 20,
    api_key: str | None = None,
    speech: bytes | None = None,
) -> tuple[list[Sample], SoakCounts]:
    """Run the soak against the session URL ``url`` (``ws://host:port/v1/session``) from this
    trio loop -> (the runtime samples, the sessions' counts). Cancelling abandons the run."""
    if speech is None:
        speech = speech_utterance("auto")[1]
    began = trio.current_time()
    run = _Run(url, api_key, began + duration_s, session_s, frame_ms, speech)
    base = url.replace("ws://", "http://", 1).split("/v1/", 1)[0]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    samples: list[Sample] = []
    ramp_s = min(max(sessions / 10.0, 0.5), 10.0)
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_sample, http, run, began, interval_s, samples)
        for index in range(sessions):
            nursery.start_soon(_session_loop, run, index, began + ramp_s * index / sessions)
    return samples, run.counts


def run_soak_benchmark(
    *,
    url: str | None,
    sessions: int,
    minutes: float,
    interval_s: float,
    session_s: float,
    stack: str = "test",
    frame_ms: int = 20,
    api_key: str | None = None,
    as_json: bool = False,
    server_log: Path | None = None,
) -> int:
    """The ``bench soak`` command: run, print the samples and the verdict. ``server_log``:
    where the started server's output goes (kept, to read what a session error was).

    Returns 0 when nothing grew and no session saw an error, else 1.
    """
    label, speech = speech_utterance("auto")
    began = time.strftime("%Y-%m-%d %H:%M:%S")
    with _maybe_server(url, stack, server_log) as session_url:
        print(
            f"soak: {sessions} sessions for {minutes:g} min against {session_url} "
            f"({'its own server, ' + stack + ' stack' if url is None else 'given server'}; "
            f"{label} speech, {frame_ms} ms frames, sessions of about {session_s:g} s; "
            f"started {began})",
            flush=True,
        )
        samples, counts = trio.run(
            lambda: run_soak(
                session_url,
                sessions=sessions,
                duration_s=minutes * 60.0,
                interval_s=interval_s,
                session_s=session_s,
                frame_ms=frame_ms,
                api_key=api_key,
                speech=speech,
            )
        )
    growth = judge(samples)
    errors = sum(counts.errors.values())
    if as_json:
        doc = {
            "sessions": sessions,
            "minutes": minutes,
            "counts": {**asdict(counts), "errors": dict(counts.errors)},
            "samples": [asdict(s) for s in samples],
            "growth": [asdict(g) | {"grows": g.grows} for g in growth],
        }
        print(json.dumps(doc))
    else:
        print(
            f"sessions: {counts.connects} connects ({counts.ended} ended with session.end, "
            f"{counts.dropped} dropped), {counts.utterances} utterances, {counts.turns} turns, "
            f"{counts.replies} replies with audio, {counts.barge_ins} barge-ins"
        )
        print(
            "errors: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.errors.items())) or "none")
        )
        if not growth:
            print(
                "verdict: too few samples to judge (at least 6: a longer run or a shorter --interval)"
            )
        for entry in growth:
            print(entry.line())
        grew = [g.figure for g in growth if g.grows]
        print("verdict: " + (f"GROWS: {', '.join(grew)}" if grew else "nothing grew without bound"))
    return 1 if errors or not growth or any(g.grows for g in growth) else 0


@contextmanager
def _maybe_server(url: str | None, stack: str, log_path: Path | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    config = _EMBEDDED_STACK if stack == "embedded" else _TEST_STACK
    timeout_s = 300.0 if stack == "embedded" else 60.0
    with local_server(config, start_timeout_s=timeout_s, log_path=log_path) as server:
        yield server.session_url
