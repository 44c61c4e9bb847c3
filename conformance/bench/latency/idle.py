"""Idle sessions in ``bench latency``: N sessions stream a room's noise, and what that costs.

Each session (``vad_enabled: true``) streams noise in real time in 20 ms frames, so the server
runs its VAD on every frame and never hears speech. The sessions connect at about 50 a second;
after a warm-up the server process's CPU time (``/proc/PID/stat``, all threads) is read over a
window, and its resident set (``VmRSS``) at the window's end:

- **CPU per session-second**: the server's CPU time over the window / (sessions x window);
- **audio-path lag**: every second each session sends an empty ``session.update``, which the
  server handles in order with the audio before it, so its answer is as late as the audio is.
  A lag that grows means the server fell behind real time: it then did less work than the
  sessions asked for, and its CPU figure is a lower bound.

The client is lean (the load generator's wire: wsproto over non-blocking sockets, one ticker
sending every session's due frame) so that it takes little from the server on a small machine;
its own CPU is reported too.
"""

from __future__ import annotations

import heapq
import socket
import statistics
import time
from dataclasses import dataclass, field

import msgspec
import trio

from scaivoice.engine.client import frames

from .._proc import CLOCK_TICKS, process_ticks, rss_mib
from ..load.wire import CLOSE, TEXT, Wire, WireClosed, open_socket, target
from .audio import FRAME_MS, NoiseLoop

__all__ = ["IdleFigures", "measure_idle"]

_CONNECT_PER_S = 50.0
_CONNECT_TIMEOUT_S = 30.0
_PROBE_EVERY_S = 1.0
_LAG_LIMIT_MS = 100.0
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
    probes: list[float] = field(default_factory=list)
    streaming: bool = False


@dataclass(slots=True)
class _Tally:
    lags_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    measuring: bool = False


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
    tally = _Tally()
    ready: list[_Session] = []
    wake = trio.Event()
    frame_s = FRAME_MS / 1000
    ramp_s = sessions / _CONNECT_PER_S

    async def drive(session: _Session, task_status: trio.TaskStatus[None]) -> None:
        nonlocal wake
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
                tally.errors.append(f"connect: {exc or type(exc).__name__}")
                task_status.started()
                return
            now = trio.current_time()
            session.due = now
            session.next_probe = now + _PROBE_EVERY_S * (session.index % 10 + 1) / 10
            session.streaming = True
            ready.append(session)
            wake.set()
            task_status.started()
            await _read(session, tally)
        finally:
            session.streaming = False
            if sock is not None:
                trio.lowlevel.notify_closing(sock)
                sock.close()

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
                    session.wire.send_bytes(session.noise.next())
                    if now >= session.next_probe:
                        session.probes.append(now)
                        session.wire.send_text(_PROBE)
                        session.next_probe += _PROBE_EVERY_S
                except WireClosed:
                    tally.errors.append("closed while streaming")
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
            await trio.sleep_until(opened + ramp_s * session.index / max(sessions, 1))
            await nursery.start(drive, session)
        connected = sum(s.streaming for s in all_sessions)
        await trio.sleep(warmup_s)
        ticks0 = process_ticks(server_pid) if server_pid is not None else None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        tally.measuring = True
        await trio.sleep(window_s)
        tally.measuring = False
        ticks1 = process_ticks(server_pid) if server_pid is not None else None
        wall = time.perf_counter() - wall0
        client_cores = (time.process_time() - cpu0) / wall
        rss = rss_mib(server_pid) if server_pid is not None else None
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
    cpu_s = (ticks1 - ticks0) / CLOCK_TICKS if ticks0 is not None and ticks1 is not None else None
    lags = sorted(tally.lags_ms)
    return IdleFigures(
        sessions=sessions,
        connected=connected,
        window_s=wall,
        cpu_ms_per_session_s=cpu_s * 1000 / (connected * wall)
        if cpu_s is not None and connected
        else None,
        server_cores=cpu_s / wall if cpu_s is not None else None,
        client_cores=client_cores,
        rss_mib=rss,
        lag_p50_ms=statistics.median(lags) if lags else None,
        lag_p99_ms=lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else None,
        errors=tuple(sorted(set(tally.errors))),
    )


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


async def _read(session: _Session, tally: _Tally) -> None:
    """Read the session's messages until it closes: probe answers, errors."""
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
            if session.probes:
                sent = session.probes.pop(0)
                if tally.measuring:
                    tally.lags_ms.append((trio.current_time() - sent) * 1000)
        elif isinstance(frame, frames.ErrorFrame | frames.WarningFrame):
            tally.errors.append(f"{frame.code}")
