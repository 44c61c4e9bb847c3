"""What ``bench load`` reports: the samples the clients took, the server's CPU and memory over
the measured window, and the verdict (``ok``: both lags' p99 within the limit, no error)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .._proc import CLOCK_TICKS, MachineTicks, machine_ticks, process_ticks, rss_mib

__all__ = ["LAG_LIMIT_MS", "ClientResult", "LoadReport", "ServerProbe", "ServerUsage"]

LAG_LIMIT_MS = 50.0


@dataclass(slots=True)
class ClientResult:
    """What one load-generator process saw (plain data: it crosses process boundaries)."""

    sessions: int = 0
    connected: int = 0
    lags_ms: list[float] = field(default_factory=list)
    audio_lags_ms: list[float] = field(default_factory=list)
    eot_to_audio_ms: list[float] = field(default_factory=list)
    eot_to_thinking_ms: list[float] = field(default_factory=list)
    server_eot_to_audio_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    connect_ms: list[float] = field(default_factory=list)
    tick_late_ms: list[float] = field(default_factory=list)
    utterances: int = 0
    replies: int = 0
    interrupted: int = 0
    barge_in_too_late: int = 0
    unanswered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: ClientResult) -> None:
        """Add ``other``'s samples and counts to these."""
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                for kind, count in theirs.items():
                    mine[kind] = mine.get(kind, 0) + count
            else:
                setattr(self, item.name, mine + theirs)


@dataclass(frozen=True, slots=True)
class _CpuSample:
    """CPU ticks so far: the machine's, and the server process's (all threads, main thread)."""

    machine: MachineTicks
    process: int | None
    main_thread: int | None


def _cpu_sample(pid: int | None) -> _CpuSample | None:
    """The machine's and (if ``pid``) the server's CPU ticks; None where /proc is missing."""
    machine = machine_ticks()
    if machine is None:
        return None
    if not pid:
        return _CpuSample(machine, None, None)
    return _CpuSample(machine, process_ticks(pid), process_ticks(pid, thread=pid))


class ServerProbe:
    """CPU samples of the server (when its pid is known) and the machine at the window's
    edges, and the server's resident set before the run and at the window's end."""

    def __init__(self, pid: int | None, rss_idle: float | None = None) -> None:
        self.pid = pid
        self.rss_idle = rss_idle if rss_idle is not None else rss_mib(pid) if pid else None
        self.before: _CpuSample | None = None
        self.after: _CpuSample | None = None
        self.rss: float | None = None

    def at_start(self) -> None:
        self.before = _cpu_sample(self.pid)

    def at_end(self) -> None:
        self.after = _cpu_sample(self.pid)
        self.rss = rss_mib(self.pid) if self.pid else None

    def usage(self, seconds: float) -> ServerUsage:
        return _usage(self.before, self.after, seconds, self.rss, self.rss_idle)


@dataclass(frozen=True, slots=True)
class ServerUsage:
    """The server's and the machine's CPU over the measured window, and the server's memory."""

    cores: float | None
    """CPU seconds per second of the server process, all threads (1.0 = one core busy)."""
    main_thread_cores: float | None
    """The same for its main thread alone (the event loop; 1.0 = saturated)."""
    machine_busy: float | None
    """Busy share of all the machine's cores (1.0 = every core busy)."""
    cpu_count: int
    rss_mib: float | None
    rss_idle_mib: float | None


def _usage(
    before: _CpuSample | None,
    after: _CpuSample | None,
    seconds: float,
    rss: float | None,
    rss_idle: float | None,
) -> ServerUsage:
    cores = main = busy = None
    if before is not None and after is not None and seconds > 0:
        if before.process is not None and after.process is not None:
            cores = (after.process - before.process) / CLOCK_TICKS / seconds
        if before.main_thread is not None and after.main_thread is not None:
            main = (after.main_thread - before.main_thread) / CLOCK_TICKS / seconds
        total = after.machine.total - before.machine.total
        busy = (after.machine.busy - before.machine.busy) / total if total else None
    return ServerUsage(cores, main, busy, os.cpu_count() or 1, rss, rss_idle)


def _percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    p50, p99 = np.percentile(array, [50, 99])
    return {
        "n": int(array.size),
        "p50": round(float(p50), 2),
        "p99": round(float(p99), 2),
        "max": round(float(array.max()), 2),
    }


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The figures of one run. ``ok``: p99 frame lag within the limit and no error at all."""

    url: str
    sessions: int
    clients: int
    duration_s: float
    speech: str
    frame_ms: int
    result: ClientResult
    client_cpu_cores: tuple[float, ...]
    server: ServerUsage | None
    lag_limit_ms: float = LAG_LIMIT_MS

    @property
    def lag(self) -> dict[str, float | int | None]:
        """Transport lag: ``ping`` -> ``pong`` (answered by the session's reader task)."""
        return _percentiles(self.result.lags_ms)

    @property
    def audio_lag(self) -> dict[str, float | int | None]:
        """Audio-path lag: an empty ``session.update`` -> ``session.updated``, handled by the
        session's dialogue task in order with the audio frames before it (VAD included)."""
        return _percentiles(self.result.audio_lags_ms)

    @property
    def worst_p99_ms(self) -> float | None:
        values = [v for v in (self.lag["p99"], self.audio_lag["p99"]) if v is not None]
        return max(values) if values else None

    @property
    def errors(self) -> int:
        return sum(self.result.errors.values())

    @property
    def ok(self) -> bool:
        """Every session connected, no error, and the p99 of both lags within the limit."""
        worst = self.worst_p99_ms
        return (
            self.errors == 0
            and self.result.connected == self.sessions
            and worst is not None
            and worst <= self.lag_limit_ms
        )

    @property
    def rss_per_session_mib(self) -> float | None:
        server = self.server
        if server is None or server.rss_mib is None or server.rss_idle_mib is None:
            return None
        return (server.rss_mib - server.rss_idle_mib) / max(self.sessions, 1)

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "url": self.url,
            "sessions": self.sessions,
            "connected": r.connected,
            "clients": self.clients,
            "duration_s": self.duration_s,
            "speech": self.speech,
            "ok": self.ok,
            "lag_limit_ms": self.lag_limit_ms,
            "frame_ms": self.frame_ms,
            "transport_lag_ms": self.lag,
            "audio_lag_ms": self.audio_lag,
            "end_of_turn_to_first_audio_ms": _percentiles(r.eot_to_audio_ms),
            "end_of_turn_to_thinking_ms": _percentiles(r.eot_to_thinking_ms),
            "server_end_of_turn_to_first_audio_ms": _percentiles(r.server_eot_to_audio_ms),
            "barge_in_ms": _percentiles(r.barge_in_ms),
            "connect_ms": _percentiles(r.connect_ms),
            "client_tick_late_ms": _percentiles(r.tick_late_ms),
            "utterances": r.utterances,
            "replies": r.replies,
            "interrupted": r.interrupted,
            "barge_in_too_late": r.barge_in_too_late,
            "unanswered": r.unanswered,
            "errors": dict(sorted(r.errors.items())),
            "client_cpu_cores": [round(c, 3) for c in self.client_cpu_cores],
            "server": None if self.server is None else asdict(self.server),
            "server_rss_per_session_mib": self.rss_per_session_mib,
        }

    def format_text(self) -> str:
        r = self.result
        lines = [
            f"{self.sessions} sessions ({r.connected} connected) through {self.url}, "
            f"{self.clients} client process(es), {self.frame_ms} ms frames, "
            f"{self.duration_s:g} s measured; speech: {self.speech}",
        ]

        def row(title: str, values: Sequence[float]) -> None:
            p = _percentiles(values)
            if p["n"]:
                lines.append(
                    f"  {title:<44} n={p['n']:<6} p50={p['p50']:>8.1f}  p99={p['p99']:>8.1f}  "
                    f"max={p['max']:>8.1f} ms"
                )
            else:
                lines.append(f"  {title:<44} n=0")

        row("transport lag (ping -> pong)", r.lags_ms)
        row("audio-path lag (session.update -> updated)", r.audio_lags_ms)
        row("end of speech -> first reply audio", r.eot_to_audio_ms)
        row("end of speech -> thinking (VAD hang)", r.eot_to_thinking_ms)
        row("end of turn -> first audio (server metrics)", r.server_eot_to_audio_ms)
        row("barge-in: speech start -> interrupted", r.barge_in_ms)
        row("connect -> session.started", r.connect_ms)
        row("client tick lateness", r.tick_late_ms)
        lines.append(
            f"  turns: {r.utterances} utterances, {r.replies} answered with audio, "
            f"{r.unanswered} not answered before the next one; {r.interrupted} barge-ins, "
            f"{r.barge_in_too_late} replies ended before the barge-in was heard"
        )
        errors = ", ".join(f"{k}={v}" for k, v in sorted(r.errors.items())) or "none"
        lines.append(f"  errors: {errors}")
        client = ", ".join(f"{c * 100:.0f}%" for c in self.client_cpu_cores)
        lines.append(f"  load generator CPU (per process, % of one core): {client}")
        if any(c >= 0.9 for c in self.client_cpu_cores):
            lines.append(
                "  WARNING: a load-generator process saturates its core; the client may be "
                "the bottleneck (try --clients 2)"
            )
        server = self.server
        if server is not None:
            if server.cores is not None:
                lines.append(
                    f"  server CPU: {server.cores * 100:.0f}% of one core in all threads, "
                    f"{(server.main_thread_cores or 0) * 100:.0f}% in the event loop thread; "
                    f"{server.cores * 100 / max(self.sessions, 1):.2f}% per session"
                )
            if server.machine_busy is not None:
                busy = server.machine_busy * server.cpu_count
                line = f"  machine: {busy * 100:.0f}% of {server.cpu_count} cores' time busy"
                if server.cores is not None:
                    others = busy - server.cores - sum(self.client_cpu_cores)
                    line += f"; other processes: {max(others, 0.0) * 100:.0f}% of one core"
                lines.append(line)
            if server.rss_mib is not None:
                per = self.rss_per_session_mib
                extra = f", {per:.2f} MiB per session" if per is not None else ""
                lines.append(
                    f"  server RSS: {server.rss_mib:.0f} MiB "
                    f"(before the first session: {server.rss_idle_mib or 0:.0f} MiB){extra}"
                )
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(
            f"  {verdict}: p99 lag {self.worst_p99_ms} ms (limit {self.lag_limit_ms:g} ms), "
            f"{self.errors} errors"
        )
        return "\n".join(lines)
