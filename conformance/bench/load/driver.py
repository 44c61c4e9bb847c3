"""The load generator's sessions: one trio loop drives many sessions, each with its own reader
task, and one ticker sends every session's due frame (frames built once)."""

from __future__ import annotations

import collections
import heapq
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from scaivoice.engine import ProtocolViolation
from scaivoice.engine.client import frames

from .report import ClientResult
from .speech import RATE
from .wire import BINARY, CLOSE, TEXT, Wire, WireClosed, open_socket, target

__all__ = ["FRAME_MS", "LoadRun", "client_process", "plan", "ramp_for", "run_client"]

FRAME_MS = 20
PING_EVERY_MS = 200
PROBE_EVERY_MS = 1000
GAPS_MS = (1000, 3000)  # silence after each utterance, alternating: barge-in, then not
_REPLY_GRACE_S = 2.0  # utterances that end this close to the window's end are not counted
_DRAIN_S = 5.0
_CLOSE_S = 5.0
_CONNECT_TIMEOUT_S = 30.0
_SESSION_CONFIG: Mapping[str, Any] = {"vad_enabled": True}

# A session.update that changes nothing: the server handles it in order with the audio (in
# the session's dialogue task, where the VAD runs), so its answer is as late as the audio is.
_PROBE = '{"type":"session.update","config":{}}'
_SESSION_END = '{"type":"session.end"}'


@dataclass(frozen=True, slots=True)
class LoadRun:
    """The schedule of one run, shared by every client process (times are ``time.time()``).

    Session ``i`` connects at ``start + ramp_s * i / sessions``; every session streams until
    ``window_end``; only ``[window_start, window_end)`` is measured.
    """

    url: str
    sessions: int
    start: float
    ramp_s: float
    warmup_s: float
    duration_s: float
    speech: bytes
    api_key: str | None = None
    token: str | None = None
    frame_ms: int = FRAME_MS

    @property
    def frame_bytes(self) -> int:
        return RATE * self.frame_ms // 1000 * 2

    @property
    def window_start(self) -> float:
        return self.start + self.ramp_s + self.warmup_s

    @property
    def window_end(self) -> float:
        return self.window_start + self.duration_s


def ramp_for(sessions: int) -> float:
    """Connect at about 50 sessions a second, over 0.5 to 10 s."""
    return min(max(sessions / 50.0, 0.5), 10.0)


def plan(
    url: str,
    *,
    sessions: int,
    duration_s: float,
    speech: bytes,
    frame_ms: int = FRAME_MS,
    api_key: str | None = None,
    token: str | None = None,
    lead_s: float = 0.1,
    warmup_s: float = 2.0,
) -> LoadRun:
    """A run that starts ``lead_s`` from now, connecting over :func:`ramp_for` seconds."""
    return LoadRun(
        url=url,
        sessions=sessions,
        start=time.time() + lead_s,
        ramp_s=ramp_for(sessions),
        warmup_s=warmup_s,
        duration_s=duration_s,
        speech=speech,
        api_key=api_key,
        token=token,
        frame_ms=frame_ms,
    )


class _Session:
    """One session: its frames are sent by the client's ticker (:meth:`tick`), its server
    frames read by its own task (:meth:`drive`); both note what they see in ``result``."""

    def __init__(self, client: _Client, index: int) -> None:
        self.client = client
        self.run = client.run
        self.index = index
        self.result = client.result
        self.wire: Wire | None = None
        self.frame_index = 0
        self.base = 0.0  # when frame 0 was due
        self.script: list[bytes] = []
        self.position = 0
        self.turn = 0
        self.pings: dict[int, float] = {}
        self.probes: collections.deque[float] = collections.deque()
        self.agent_speaking = False
        self.speech_end: float | None = None  # the utterance's last frame, until answered
        self.turn_measured = False
        self.thinking_pending = False
        self.barge_at: float | None = None
        self.streaming = False
        self.ending = False
        self.close_code: int | None = None

    def measured(self, when: float) -> bool:
        return self.client.window_start <= when < self.client.window_end

    # ------------------------------------------------------------------ sending (ticker)

    def _next_script(self) -> None:
        gap = GAPS_MS[(self.turn + self.index) % len(GAPS_MS)] // self.run.frame_ms
        self.script = [*self.client.speech_frames, *([self.client.silence] * gap)]
        self.position = 0
        self.turn += 1

    def due(self) -> float:
        return self.base + self.frame_index * self.run.frame_ms / 1000.0

    def tick(self, now: float) -> None:
        """Send the frame that is due (the ticker calls this at or after :meth:`due`)."""
        assert self.wire is not None
        due = self.due()
        if self.position >= len(self.script):
            self._next_script()
        speech_frames = len(self.client.speech_frames)
        if self.position == 0:
            self._utterance_starts(now)
        self.wire.send_bytes(self.script[self.position])
        if self.position == speech_frames - 1:
            self.speech_end = now
            self.thinking_pending = True
            self.turn_measured = self.client.turn_window_start <= now < self.client.turn_window_end
            if self.turn_measured:
                self.result.utterances += 1
        client = self.client
        if self.frame_index % client.ping_every == 0:
            self.pings[self.frame_index] = now
            self.wire.send_text(f'{{"type":"ping","id":{self.frame_index}}}')
            if self.measured(now):
                self.result.tick_late_ms.append((now - due) * 1000.0)
        if self.frame_index % client.probe_every == client.probe_phase:
            self.probes.append(now)
            self.wire.send_text(_PROBE)
        self.position += 1
        self.frame_index += 1

    def _utterance_starts(self, now: float) -> None:
        if self.speech_end is not None and self.turn_measured:
            self.result.unanswered += 1  # no reply audio before the user spoke again
        self.speech_end = None
        self.thinking_pending = False
        self.barge_at = now if self.agent_speaking else None

    # ------------------------------------------------------------------ the session task

    async def drive(self) -> None:
        run = self.run
        client = self.client
        await trio.sleep_until(client.start + run.ramp_s * self.index / run.sessions)
        began = trio.current_time()
        sock: socket.socket | None = None
        try:
            try:
                with trio.fail_after(_CONNECT_TIMEOUT_S):
                    sock = await open_socket(client.host, client.port)
                    wire = self.wire = Wire(sock)
                    await self._start(wire)
            except trio.TooSlowError:
                self.result.error("connect_timeout")
                return
            except (OSError, WireClosed):
                self.result.error("connect_failed")
                return
            except ProtocolViolation as exc:
                self.result.error(f"refused:{exc.code}")
                return
            self.result.connected += 1
            self.result.connect_ms.append((trio.current_time() - began) * 1000.0)
            try:
                await self._converse(wire)
            except WireClosed:
                if not self.ending:
                    self.result.error("closed:no_close_frame")
        finally:
            self.streaming = False
            if sock is not None:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def _start(self, wire: Wire) -> None:
        await wire.handshake(self.client.host_header, self.client.target, self.run.api_key)
        start = {"type": "session.start", "protocol": frames.PROTOCOL_VERSION}
        wire.send_text(msgspec.json.encode({**start, "config": dict(_SESSION_CONFIG)}).decode())
        await wire.flush()
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
                raise ProtocolViolation(frame.code, frame.message, fatal=frame.fatal)

    async def _converse(self, wire: Wire) -> None:
        self.base = trio.current_time() + self.run.frame_ms / 1000.0
        self._next_script()
        self.streaming = True
        self.client.schedule(self)
        with trio.move_on_at(self.client.window_end + _DRAIN_S + _CLOSE_S):
            while True:
                kind, payload = await wire.receive()
                if kind == CLOSE:
                    self._closed(wire)
                    return
                self._on_message(kind, payload)
        self.result.error("close_timeout")

    async def finish(self) -> None:
        """After the window: wait (bounded) for the last pongs, then ``session.end``."""
        assert self.wire is not None
        with trio.move_on_after(_DRAIN_S):
            while (self.pings or self.probes) and self.close_code is None:
                await trio.sleep(0.05)
        now = trio.current_time()  # a lower bound for each unanswered round trip
        late = [sent for sent in self.pings.values() if self.measured(sent)]
        if late:
            self.result.error("ping_unanswered")
            self.result.lags_ms.extend((now - sent) * 1000.0 for sent in late)
        late = [sent for sent in self.probes if self.measured(sent)]
        if late:
            self.result.error("probe_unanswered")
            self.result.audio_lags_ms.extend((now - sent) * 1000.0 for sent in late)
        self.pings.clear()
        self.probes.clear()
        self.ending = True
        if self.close_code is None:
            try:
                self.wire.send_text(_SESSION_END)
            except WireClosed:
                pass

    def _closed(self, wire: Wire) -> None:
        code = wire.close_code if wire.close_code is not None else 1005
        self.close_code = code
        if not self.ending:
            self.result.error(f"closed:{code}")

    def _on_message(self, kind: int, payload: str | bytes) -> None:
        now = trio.current_time()
        result = self.result
        measured = self.measured(now)
        if kind == BINARY:
            if self.speech_end is not None:
                if self.turn_measured:
                    result.eot_to_audio_ms.append((now - self.speech_end) * 1000.0)
                    result.replies += 1
                self.speech_end = None
            return
        event = frames.decode_server_frame(payload)
        if isinstance(event, frames.Pong):
            sent = self.pings.pop(event.id, None) if isinstance(event.id, int) else None
            if sent is not None and self.measured(sent):
                result.lags_ms.append((now - sent) * 1000.0)
        elif isinstance(event, frames.SessionUpdated):
            if self.probes:
                sent = self.probes.popleft()
                if self.measured(sent):
                    result.audio_lags_ms.append((now - sent) * 1000.0)
        elif isinstance(event, frames.State):
            self._on_state(event.state, now)
        elif isinstance(event, frames.Metrics):
            value = event.end_of_turn_to_first_audio_ms
            if value is not None and measured:
                result.server_eot_to_audio_ms.append(value)
        elif isinstance(event, frames.ErrorFrame):
            result.error(f"error:{event.code}")
        elif isinstance(event, frames.WarningFrame):  # feature_unavailable: no VAD to load
            result.error(f"warning:{event.code}")

    def _on_state(self, state: str, now: float) -> None:
        result = self.result
        if state == "thinking" and self.thinking_pending and self.speech_end is not None:
            self.thinking_pending = False
            if self.turn_measured:
                result.eot_to_thinking_ms.append((now - self.speech_end) * 1000.0)
        if state == "interrupted":
            if self.barge_at is not None and self.measured(self.barge_at):
                result.barge_in_ms.append((now - self.barge_at) * 1000.0)
                result.interrupted += 1
            self.barge_at = None
        elif state in ("idle", "listening") and self.agent_speaking and self.barge_at is not None:
            if self.measured(self.barge_at):
                result.barge_in_too_late += 1  # the reply ended before the VAD heard the user
            self.barge_at = None
        self.agent_speaking = state == "speaking"


class _Client:
    """One load-generator trio loop: the sessions' tasks plus one ticker that sends every
    session's due frame (one task wake-up per millisecond at most, not one per frame)."""

    def __init__(self, run: LoadRun, indices: Sequence[int]) -> None:
        self.run = run
        self.host, self.port, self.target = target(run.url, run.token)
        self.host_header = (
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        )
        clock = trio.current_time() - time.time()
        self.start = run.start + clock
        self.window_start = run.window_start + clock
        self.window_end = run.window_end + clock
        self.turn_window_start = self.window_start
        self.turn_window_end = self.window_end - _REPLY_GRACE_S
        self.result = ClientResult(sessions=len(indices))
        step = run.frame_bytes
        self.speech_frames = [run.speech[i : i + step] for i in range(0, len(run.speech), step)]
        self.silence = b"\0" * step
        self.ping_every = max(PING_EVERY_MS // run.frame_ms, 1)
        self.probe_every = max(PROBE_EVERY_MS // run.frame_ms, 1)
        self.probe_phase = self.probe_every // 2 if self.probe_every > 1 else 0
        self.sessions = [_Session(self, index) for index in indices]
        self._heap: list[tuple[float, int, _Session]] = []
        self._wake = trio.Event()

    def schedule(self, session: _Session) -> None:
        heapq.heappush(self._heap, (session.due(), session.index, session))
        self._wake.set()

    async def run_all(self) -> ClientResult:
        async with trio.open_nursery() as nursery:
            for session in self.sessions:
                nursery.start_soon(session.drive)
            await self._ticker()
            async with trio.open_nursery() as ending:
                for session in self.sessions:
                    if session.streaming:
                        ending.start_soon(session.finish)
        return self.result

    async def _ticker(self) -> None:
        heap = self._heap
        cpu_start: float | None = None
        while True:
            now = trio.current_time()
            if cpu_start is None and now >= self.window_start:
                cpu_start = time.process_time()
            if now >= self.window_end:
                break
            while heap and heap[0][0] <= now:
                _, index, session = heapq.heappop(heap)
                if not session.streaming:
                    continue
                try:
                    session.tick(now)
                except WireClosed:
                    continue
                heapq.heappush(heap, (session.due(), index, session))
            # At most one wake-up per millisecond: frames due within it go out together. A
            # session that starts streaming wakes the ticker early.
            target = min(max(heap[0][0], now + 0.001), self.window_end) if heap else self.window_end
            self._wake = trio.Event()
            with trio.move_on_at(target):
                await self._wake.wait()
        self.result.cpu_s = time.process_time() - (cpu_start or time.process_time())


async def run_client(run: LoadRun, indices: Sequence[int]) -> ClientResult:
    """Drive the sessions ``indices`` of ``run`` in this trio loop."""
    return await _Client(run, indices).run_all()


def client_process(run: LoadRun, indices: Sequence[int]) -> ClientResult:
    """The entry point of an extra load-generator process (``--clients``)."""
    return trio.run(run_client, run, indices)
