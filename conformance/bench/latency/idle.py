"""Idle sessions in ``bench latency``: N sessions stream a room's noise, and what that costs.

Each session (``vad_enabled: true``) streams noise in real time in 20 ms frames, so the server
runs its VAD on every frame and never hears speech. The sessions connect at about 50 a second;
after a warm-up, the server process's CPU time (``/proc/PID/stat``, all threads) is read
between two markers, and its resident set (``VmRSS``) at the end (with ``serve --workers``,
the supervisor's and its workers' together):

- **markers**: an empty ``session.update`` that every session sends after its last audio
  frame. The server handles it in order with the audio before it, so once every session's
  marker is answered, the server has handled all the audio sent. The sessions pause their
  audio for the first marker, so the server starts the window with nothing queued (even when
  it ran behind real time on a busy machine), and stop it for the second: the server's CPU
  time between the two answers is the cost of exactly the audio sent in between;
- **CPU per session-second**: that CPU time / the seconds of audio sent between the markers
  (all sessions together);
- **audio-path lag**: every second each session also sends an empty ``session.update`` and
  times its answer. A p99 above 100 ms means the server could not keep up in real time.

The client is lean (the load generator's wire: wsproto over non-blocking sockets, one ticker
sending every session's due frame) so that it takes little from the server on a small machine;
its own CPU is reported too.
"""

from __future__ import annotations

import collections
import heapq
import socket
import statistics
import time
from dataclasses import dataclass, field

import msgspec
import trio

from scaivoice.engine.client import frames

from .._proc import CLOCK_TICKS
from ..load.wire import CLOSE, TEXT, Wire, WireClosed, open_socket, target
from .audio import FRAME_MS, NoiseLoop
from .processes import tree_rss_mib, tree_ticks

__all__ = ["IdleFigures", "measure_idle"]

_CONNECT_PER_S = 50.0
_CONNECT_TIMEOUT_S = 60.0
_PROBE_EVERY_S = 1.0
_LAG_LIMIT_MS = 100.0
_CATCH_UP_S = 60.0
_START = msgspec.json.encode(
    {"type": "session.start", "protocol": frames.PROTOCOL_VERSION, "config": {"vad_enabled": True}}
).decode()
_PROBE = '{"type":"session.update","config":{}}'
_END = '{"type":"session.end"}'


@dataclass(frozen=True, slots=True)
class IdleFigures:
    """One idle measurement."""

    sessions: int
    connected: int
    window_s: float
    cpu_ms_per_session_s: float | None
    """None without ``/proc``."""
    server_cores: float | None
    """The server's CPU time / wall time over the window."""
    client_cores: float
    rss_mib: float | None
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    errors: tuple[str, ...]

    @property
    def kept_up(self) -> bool:
        """The server handled the audio in real time (p99 audio-path lag <= 100 ms)."""
        return self.lag_p99_ms is not None and self.lag_p99_ms <= _LAG_LIMIT_MS

    def to_json(self) -> dict[str, object]:
        return {
            "sessions": self.sessions,
            "connected": self.connected,
            "window_s": self.window_s,
            "cpu_ms_per_session_s": self.cpu_ms_per_session_s,
            "server_cores": self.server_cores,
            "client_cores": self.client_cores,
            "rss_mib": self.rss_mib,
            "lag_p50_ms": self.lag_p50_ms,
            "lag_p99_ms": self.lag_p99_ms,
            "kept_up": self.kept_up,
            "errors": list(self.errors),
        }


@dataclass(slots=True)
class _Session:
    index: int
    noise: NoiseLoop
    wire: Wire | None = None
    due: float = 0.0
    next_probe: float = 0.0
    frames: int = 0
    """Audio frames sent."""
    marked: list[int] = field(default_factory=list)
    """``frames`` when each marker was sent."""
    pending: collections.deque[tuple[float, int | None]] = field(default_factory=collections.deque)
    """Updates not answered yet: (when sent, marker number or None for a lag probe)."""
    streaming: bool = False


@dataclass(slots=True)
class _Run:
    """What the sessions share: the markers asked for and answered, the tallies."""

    audio: bool = True
    markers: int = 0
    """Markers asked for so far; each session sends the ones it has not sent at its next tick."""
    answers: list[int] = field(default_factory=list)
    done: list[trio.Event] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    measuring: bool = False

    def ask_marker(self, sessions: int) -> trio.Event:
        self.markers += 1
        self.answers.append(0)
        self.expected.append(sessions)
        event = trio.Event()
        self.done.append(event)
        if sessions == 0:
            event.set()
        return event

    def answered(self, marker: int) -> None:
        self.answers[marker] += 1
        if self.answers[marker] >= self.expected[marker]:
            self.done[marker].set()


async def measure_idle(
    url: str,
    api_key: str | None,
    *,
    sessions: int,
    noise: list[bytes],
    server_pid: int | None,
    warmup_s: float,
    window_s: float,
) -> IdleFigures:
    """Open ``sessions`` idle sessions streaming ``noise``, measure, close them.

    Cancelling closes every socket.
    """
    host, port, path = target(url, None)
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    run = _Run()
    ready: list[_Session] = []
    wake = trio.Event()
    frame_s = FRAME_MS / 1000
    ramp_s = sessions / _CONNECT_PER_S

    settled = 0
    all_settled = trio.Event()

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == sessions:
            all_settled.set()

    async def drive(session: _Session, opened: float) -> None:
        """Connect in the session's slot of the ramp, then read until the session closes."""
        await trio.sleep_until(opened + ramp_s * session.index / sessions)
        sock: socket.socket | None = None
        try:
            try:
                with trio.fail_after(_CONNECT_TIMEOUT_S):
                    sock = await open_socket(host, port)
                    wire = session.wire = Wire(sock)
                    await wire.handshake(host_header, path, api_key)
                    wire.send_text(_START)
                    await wire.flush()
                    await _until_started(wire)
            except (trio.TooSlowError, OSError, WireClosed, _Refused) as exc:
                run.errors.append(f"connect: {str(exc) or type(exc).__name__}")
                settle()
                return
            now = trio.current_time()
            session.due = now
            session.next_probe = now + _PROBE_EVERY_S * (session.index % 10 + 1) / 10
            session.streaming = True
            ready.append(session)
            wake.set()
            settle()
            await _read(session, run)
        finally:
            session.streaming = False
            if sock is not None:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    def tick(session: _Session, now: float) -> None:
        assert session.wire is not None
        if run.audio:
            session.wire.send_bytes(session.noise.next())
            session.frames += 1
            if now >= session.next_probe:
                session.pending.append((now, None))
                session.wire.send_text(_PROBE)
                while session.next_probe <= now:  # one probe a second, also after a pause
                    session.next_probe += _PROBE_EVERY_S
        while len(session.marked) < run.markers:
            session.pending.append((now, len(session.marked)))
            session.marked.append(session.frames)
            session.wire.send_text(_PROBE)

    async def ticker(stop: trio.Event) -> None:
        nonlocal wake
        heap: list[tuple[float, int, _Session]] = []
        while not stop.is_set():
            while ready:
                session = ready.pop()
                heapq.heappush(heap, (session.due, session.index, session))
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, index, session = heapq.heappop(heap)
                if not session.streaming or session.wire is None:
                    continue
                try:
                    tick(session, now)
                except WireClosed:
                    run.errors.append("closed while streaming")
                    continue
                session.due += frame_s
                heapq.heappush(heap, (session.due, index, session))
            wake = trio.Event()
            with trio.move_on_at(max(heap[0][0], now + 0.001) if heap else now + 0.05):
                await wake.wait()

    all_sessions = [_Session(i, NoiseLoop(noise, offset=37 * i)) for i in range(sessions)]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker, stop)
        opened = trio.current_time()
        for session in all_sessions:
            nursery.start_soon(drive, session, opened)
        if sessions:
            await all_settled.wait()  # each connects or fails within its timeout
        connected = sum(s.streaming for s in all_sessions)
        await trio.sleep(warmup_s)
        run.audio = False  # the server catches up, and the window starts with nothing queued
        first = await _marker(run, connected)
        run.audio = True
        ticks0 = tree_ticks(server_pid) if server_pid is not None else None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        run.measuring = True
        await trio.sleep(window_s)
        run.measuring = False
        run.audio = False
        second = first and await _marker(run, connected)
        ticks1 = tree_ticks(server_pid) if server_pid is not None else None
        wall = time.perf_counter() - wall0
        client_cores = (time.process_time() - cpu0) / wall
        rss = tree_rss_mib(server_pid) if server_pid is not None else None
        for session in all_sessions:
            if session.streaming and session.wire is not None:
                try:
                    session.wire.send_text(_END)
                except WireClosed:
                    pass
        stop.set()
        with trio.move_on_after(5):
            while any(s.streaming for s in all_sessions):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    if not second:
        run.errors.append(f"the server did not catch up within {_CATCH_UP_S:g} s")
    audio_s = frame_s * sum(s.marked[1] - s.marked[0] for s in all_sessions if len(s.marked) == 2)
    cpu_s = None
    if second and ticks0 is not None and ticks1 is not None:
        cpu_s = (ticks1 - ticks0) / CLOCK_TICKS
    lags = sorted(run.lags_ms)
    return IdleFigures(
        sessions=sessions,
        connected=connected,
        window_s=wall,
        cpu_ms_per_session_s=cpu_s * 1000 / audio_s if cpu_s is not None and audio_s else None,
        server_cores=cpu_s / wall if cpu_s is not None else None,
        client_cores=client_cores,
        rss_mib=rss,
        lag_p50_ms=statistics.median(lags) if lags else None,
        lag_p99_ms=lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else None,
        errors=tuple(sorted(set(run.errors))),
    )


async def _marker(run: _Run, sessions: int) -> bool:
    """Ask every session for a marker and wait until all are answered (False: not in time)."""
    done = run.ask_marker(sessions)
    with trio.move_on_after(_CATCH_UP_S):
        await done.wait()
    return done.is_set()


class _Refused(Exception):
    pass


async def _until_started(wire: Wire) -> None:
    while True:
        kind, payload = await wire.receive()
        if kind == CLOSE:
            raise WireClosed("closed before session.started")
        if kind != TEXT:
            continue
        frame = frames.decode_server_frame(payload)
        if isinstance(frame, frames.SessionStarted):
            return
        if isinstance(frame, frames.ErrorFrame):
            raise _Refused(f"{frame.code}: {frame.message}")


async def _read(session: _Session, run: _Run) -> None:
    """Read the session's messages until it closes: answers to updates, errors."""
    assert session.wire is not None
    while True:
        try:
            kind, payload = await session.wire.receive()
        except WireClosed:
            return
        if kind == CLOSE:
            return
        if kind != TEXT:
            continue
        frame = frames.decode_server_frame(payload)
        if isinstance(frame, frames.SessionUpdated):
            if session.pending:
                sent, marker = session.pending.popleft()
                if marker is not None:
                    run.answered(marker)
                elif run.measuring:
                    run.lags_ms.append((trio.current_time() - sent) * 1000)
        elif isinstance(frame, frames.ErrorFrame | frames.WarningFrame):
            run.errors.append(f"{frame.code}")
