"""``scaivoice bench load``: how many live voice sessions a server holds in real time.

N sessions each stream microphone audio in real time (20 ms PCM16 frames at 16 kHz by default;
``--frame-ms`` 50 or 100): a loop of an utterance (about 1.5 s of speech) and a silence that
alternates between 1 s and 3 s. With ``vad_enabled`` the server's VAD ends each user turn and
the agent replies with text and paced audio; after a 1 s silence the next utterance starts
while the agent still talks (a barge-in), after a 3 s one the reply ends first. The speech is
hibari's voice when hibari is importable, else a synthetic voiced signal (harmonics of a gliding
pitch shaped by changing vowel formants) that Silero VAD scores as speech.

What is measured, at the client, over a window that follows the connection ramp and a warm-up:

- **transport lag**: each session sends a ``ping`` every 200 ms between its audio frames; the
  ``pong`` round trip shows how late the server reads that connection. The session's reader
  answers pings itself, ahead of the audio it has queued for the dialogue task;
- **audio-path lag**: every second, an empty ``session.update``. The dialogue task handles it
  in order with the audio before it (where the VAD runs), so ``session.updated`` comes back as
  late as the audio is handled. A run *holds* when the p99 of both lags is at most 50 ms and
  nothing went wrong;
- **end of speech -> first reply audio** and **-> thinking**: from sending the utterance's last
  frame (the VAD hang time included), with the server's own ``metrics`` figure beside them;
- **barge-in**: from the first frame of an utterance sent while the agent speaks to
  ``state: interrupted`` (the VAD's ``min_speech_ms`` included);
- **errors**: ``error`` and ``warning`` frames (``feature_unavailable``: no VAD), refusals,
  unexpected closes, failed connects, pings and probes left unanswered;
- **CPU and memory**: the server's CPU (``/proc/PID/stat``: all threads, and the main thread,
  which runs the event loop) and resident set (``/proc/PID/status``) when its process id is
  known (always in self-contained mode); the CPU of each load-generator process; the machine's
  busy time, so other processes' share shows.

The load generator is lean so that it does not compete with the server it loads: one ticker
per process sends every session's due frame over a plain non-blocking socket (frames built
once, masked with the all-zero key), and server frames are parsed by hand. ``--clients K``
spreads the sessions over K processes. It only loads ``ws://`` servers on loopback, and every
loop is bounded: a run stops by itself.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import errno
import heapq
import ipaddress
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import trio

from scaivoice.engine import (
    ProtocolViolation,
    ScaiVoiceError,
    float_to_pcm16,
    resample_pcm16,
)
from scaivoice.engine.client import frames

from ..turns import _free_port, _wait_healthy

__all__ = [
    "LoadReport",
    "LoadRun",
    "SpeechKind",
    "plan",
    "run_load",
    "run_load_benchmark",
    "search_capacity",
    "speech_utterance",
    "synthetic_speech",
]

SpeechKind = Literal["auto", "hibari", "synthetic"]

RATE = 16000
FRAME_MS = 20
PING_EVERY_MS = 200
PROBE_EVERY_MS = 1000
GAPS_MS = (1000, 3000)  # silence after each utterance, alternating: barge-in, then not
LAG_LIMIT_MS = 50.0
_SPEECH_LEVEL = 328  # |sample| above this (-40 dBFS) is speech
_HIBARI_SENTENCE = "Could you book a table for two?"
_REPLY_GRACE_S = 2.0  # utterances that end this close to the window's end are not counted
_DRAIN_S = 5.0
_CLOSE_S = 5.0
_CONNECT_TIMEOUT_S = 30.0
_SESSION_CONFIG: Mapping[str, Any] = {"vad_enabled": True}

_SERVER_CONFIG = """\
[backends]
stt = "test-stt"
llm = "test-llm"
tts = "test-tts"

[backends.options.test-llm]
reply = "Sure, here is a short answer."
"""


# =============================================================================== speech

_VOWELS = (
    (730.0, 1090.0, 2440.0),
    (270.0, 2290.0, 3010.0),
    (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0),
    (570.0, 840.0, 2410.0),
    (660.0, 1720.0, 2410.0),
)


def _formant_gain(
    freqs: npt.NDArray[np.float64], formants: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    gain = np.zeros_like(freqs)
    for centre, width, weight in zip(formants, (80.0, 100.0, 150.0), (1.0, 0.5, 0.25), strict=True):
        gain += weight / np.sqrt(1.0 + ((freqs - centre) / (width / 2.0)) ** 2)
    return gain


def synthetic_speech(seconds: float = 1.5, seed: int = 0) -> bytes:
    """A voiced, speech-like signal at 16 kHz (PCM16): syllables of gliding pitch whose
    harmonics are shaped by changing vowel formants, separated by short noise consonants.
    Silero VAD scores it as speech (probabilities near 1) from its second frame on."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    pieces: list[npt.NDArray[np.float64]] = []
    done = 0
    syllable = 0
    while done < total:
        consonant = int(rng.uniform(0.03, 0.06) * RATE)
        pieces.append(np.diff(rng.normal(0.0, 1.0, consonant + 1)) * 0.04)
        length = int(rng.uniform(0.16, 0.26) * RATE)
        t = np.arange(length) / RATE
        shape = np.clip(t / t[-1], 0.0, 1.0)
        pitch = (140.0 - 30.0 * done / total) * (1.0 + 0.1 * np.sin(np.pi * shape))
        phase = 2.0 * np.pi * np.cumsum(pitch) / RATE
        start = np.array(_VOWELS[syllable % len(_VOWELS)])
        end = np.array(_VOWELS[(syllable + 2) % len(_VOWELS)])
        voiced = np.zeros(length)
        for harmonic in range(1, 30):
            freqs = harmonic * pitch
            gain = (1.0 - shape) * _formant_gain(freqs, start) + shape * _formant_gain(freqs, end)
            voiced += np.where(freqs < 0.45 * RATE, gain, 0.0) * np.sin(harmonic * phase)
        voiced *= np.sin(np.pi * shape) ** 0.5
        pieces.append(voiced / max(float(np.abs(voiced).max()), 1e-9))
        done += consonant + length
        syllable += 1
    signal = np.concatenate(pieces)[:total]
    return float_to_pcm16(0.5 * signal / float(np.abs(signal).max()))


def _hibari_speech() -> bytes | None:
    try:
        import hibari  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    audio = hibari.Hibari()(_HIBARI_SENTENCE, seed=0)
    pcm = resample_pcm16(float_to_pcm16(np.asarray(audio, dtype=np.float32)), 24000, RATE)
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _SPEECH_LEVEL)
    if loud.size == 0:
        return None
    return samples[loud[0] : loud[-1] + 1].tobytes()


def speech_utterance(kind: SpeechKind = "auto") -> tuple[str, bytes]:
    """The user's utterance -> (what it is, 16 kHz PCM16 padded to whole 20 ms frames).

    ``auto``: hibari's voice when hibari is importable, else the synthetic signal.

    Raises:
        ScaiVoiceError: ``hibari`` was asked for and is not importable.
    """
    pcm = _hibari_speech() if kind in ("auto", "hibari") else None
    if pcm is None and kind == "hibari":
        raise ScaiVoiceError("--speech hibari: hibari is not importable (pip install hibari-tts)")
    label = f"hibari ({_HIBARI_SENTENCE!r})" if pcm is not None else "synthetic voiced signal"
    pcm = pcm if pcm is not None else synthetic_speech()
    pad = -len(pcm) % (RATE * 100 // 1000 * 2)  # whole frames of 20, 50 and 100 ms
    return label, pcm + b"\0" * pad


# =============================================================================== the plan


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


# =============================================================================== the wire


class _WireClosed(Exception):
    """The socket reached end of file or failed."""


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame. Masked, as clients must, with the all-zero key: the payload goes
    out as is (the server unmasks it all the same), so frames can be built once and reused."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def _text_frame(doc: Mapping[str, Any]) -> bytes:
    return _client_frame(0x1, msgspec.json.encode(doc))


# A session.update that changes nothing: the server handles it in order with the audio (in
# the session's dialogue task, where the VAD runs), so its answer is as late as the audio is.
_PROBE = _text_frame({"type": "session.update", "config": {}})


class _Wire:
    """A lean client WebSocket over a non-blocking socket, so that the load generator costs
    far less CPU than the server it loads: frames are sent with one ``send`` call (a frame
    that does not fit waits in a buffer for the next send), and server frames are parsed by
    hand (servers send them unmasked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.inbox = bytearray()
        self._fragments: list[bytes] = []
        self._opcode = 0
        self._ready: collections.deque[tuple[int, bytes]] = collections.deque()

    def send(self, data: bytes) -> None:
        """Send now what the socket takes; buffer the rest (sent by the next call)."""
        if self.out:
            self.out += data
            data = bytes(self.out)
            self.out.clear()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _WireClosed(str(exc)) from exc
        if sent < len(data):
            self.out += data[sent:]

    async def send_all(self, data: bytes) -> None:
        self.send(data)
        while self.out:
            await trio.lowlevel.wait_writable(self.sock)
            self.send(b"")

    async def receive(self) -> tuple[int, bytes]:
        """The next complete message: (opcode, payload)."""
        while True:
            if self._ready:
                return self._ready.popleft()
            self._parse()
            if self._ready:
                return self._ready.popleft()
            await self._fill()

    async def _fill(self) -> None:
        """Wait for bytes from the server and add them to ``inbox``."""
        await trio.lowlevel.wait_readable(self.sock)
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            raise _WireClosed(str(exc)) from exc
        if not data:
            raise _WireClosed("end of file")
        self.inbox += data

    def _parse(self) -> None:
        messages = self._ready
        buf = self.inbox
        while len(buf) >= 2:
            size, pos = buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, pos = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, pos = int.from_bytes(buf[2:10], "big"), 10
            if buf[1] & 0x80:
                raise _WireClosed("the server sent a masked frame")
            if len(buf) < pos + size:
                break
            fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
            payload = bytes(buf[pos : pos + size])
            del buf[: pos + size]
            if opcode >= 0x8:  # control frames are never fragmented
                messages.append((opcode, payload))
                continue
            if opcode:
                self._opcode = opcode
            self._fragments.append(payload)
            if fin:
                messages.append((self._opcode, b"".join(self._fragments)))
                self._fragments.clear()

    async def handshake(self, host: str, target: str, api_key: str | None) -> None:
        """The HTTP upgrade. Raises ``_WireClosed`` when the server refuses it."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if api_key:
            lines.append(f"Authorization: Bearer {api_key}")
        await self.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in self.inbox:
            if len(self.inbox) > 65536:
                raise _WireClosed("no end to the handshake response")
            await self._fill()
        head, _, rest = bytes(self.inbox).partition(b"\r\n\r\n")
        self.inbox = bytearray(rest)
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split()[1:2] != ["101"]:
            raise _WireClosed(f"handshake refused: {status}")


async def _open_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket. Cancelling closes it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    connected = False
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((host, port))
        if error not in (0, errno.EINPROGRESS):
            raise OSError(error, os.strerror(error))
        await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        connected = True
        return sock
    finally:
        if not connected:
            sock.close()


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _target(url: str, token: str | None) -> tuple[str, int, str]:
    """``ws://host:port/path`` -> (host, port, request target with the token)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ScaiVoiceError(f"bench load needs a ws:// URL, not {url!r}")
    if not _is_loopback(parts.hostname):
        raise ScaiVoiceError(
            f"bench load runs on the server's machine, against a loopback address; "
            f"{parts.hostname!r} is not one"
        )
    target = parts.path or "/"
    query = parts.query
    if token:
        query = (query + "&" if query else "") + "token=" + urllib.parse.quote(token)
    return parts.hostname, parts.port or 80, target + ("?" + query if query else "")


# =============================================================================== one client


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


class _Session:
    """One session: its frames are sent by the client's ticker (:meth:`tick`), its server
    frames read by its own task (:meth:`drive`); both note what they see in ``result``."""

    def __init__(self, client: _Client, index: int) -> None:
        self.client = client
        self.run = client.run
        self.index = index
        self.result = client.result
        self.wire: _Wire | None = None
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
        self.wire.send(self.script[self.position])
        if self.position == speech_frames - 1:
            self.speech_end = now
            self.thinking_pending = True
            self.turn_measured = self.client.turn_window_start <= now < self.client.turn_window_end
            if self.turn_measured:
                self.result.utterances += 1
        client = self.client
        if self.frame_index % client.ping_every == 0:
            self.pings[self.frame_index] = now
            self.wire.send(_text_frame({"type": "ping", "id": self.frame_index}))
            if self.measured(now):
                self.result.tick_late_ms.append((now - due) * 1000.0)
        if self.frame_index % client.probe_every == client.probe_phase:
            self.probes.append(now)
            self.wire.send(_PROBE)
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
                    sock = await _open_socket(client.host, client.port)
                    wire = self.wire = _Wire(sock)
                    await self._start(wire)
            except trio.TooSlowError:
                self.result.error("connect_timeout")
                return
            except (OSError, _WireClosed):
                self.result.error("connect_failed")
                return
            except ProtocolViolation as exc:
                self.result.error(f"refused:{exc.code}")
                return
            self.result.connected += 1
            self.result.connect_ms.append((trio.current_time() - began) * 1000.0)
            try:
                await self._converse(wire)
            except _WireClosed:
                if not self.ending:
                    self.result.error("closed:no_close_frame")
        finally:
            self.streaming = False
            if sock is not None:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def _start(self, wire: _Wire) -> None:
        await wire.handshake(self.client.host_header, self.client.target, self.run.api_key)
        start = {"type": "session.start", "protocol": frames.PROTOCOL_VERSION}
        await wire.send_all(_text_frame({**start, "config": dict(_SESSION_CONFIG)}))
        while True:
            opcode, payload = await wire.receive()
            if opcode == 0x8:
                raise _WireClosed("closed before session.started")
            if opcode != 0x1:
                continue
            frame = frames.decode_server_frame(payload)
            if isinstance(frame, frames.SessionStarted):
                return
            if isinstance(frame, frames.ErrorFrame):
                raise ProtocolViolation(frame.code, frame.message, fatal=frame.fatal)

    async def _converse(self, wire: _Wire) -> None:
        self.base = trio.current_time() + self.run.frame_ms / 1000.0
        self._next_script()
        self.streaming = True
        self.client.schedule(self)
        with trio.move_on_at(self.client.window_end + _DRAIN_S + _CLOSE_S):
            while True:
                opcode, payload = await wire.receive()
                if opcode == 0x8:
                    self._closed(wire, payload)
                    return
                self._on_message(opcode, payload)
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
                self.wire.send(_text_frame({"type": "session.end"}))
            except _WireClosed:
                pass

    def _closed(self, wire: _Wire, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self.close_code = code
        if not self.ending:
            self.result.error(f"closed:{code}")
        try:
            wire.send(_client_frame(0x8, payload[:2]))
        except _WireClosed:
            pass

    def _on_message(self, opcode: int, payload: bytes) -> None:
        now = trio.current_time()
        result = self.result
        measured = self.measured(now)
        if opcode == 0x2:
            if self.speech_end is not None:
                if self.turn_measured:
                    result.eot_to_audio_ms.append((now - self.speech_end) * 1000.0)
                    result.replies += 1
                self.speech_end = None
            return
        if opcode == 0x9 and self.wire is not None:
            self.wire.send(_client_frame(0xA, payload))
            return
        if opcode != 0x1:
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
        self.host, self.port, self.target = _target(run.url, run.token)
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
        self.speech_frames = [
            _client_frame(0x2, run.speech[i : i + step]) for i in range(0, len(run.speech), step)
        ]
        self.silence = _client_frame(0x2, b"\0" * step)
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
                except _WireClosed:
                    continue
                heapq.heappush(heap, (session.due(), index, session))
            # At most one wake-up per millisecond: frames due within it go out together. A
            # session that starts streaming wakes the ticker early.
            target = min(max(heap[0][0], now + 0.001), self.window_end) if heap else self.window_end
            self._wake = trio.Event()
            with trio.move_on_at(target):
                await self._wake.wait()
        self.result.cpu_s = time.process_time() - (cpu_start or time.process_time())


async def _run_client(run: LoadRun, indices: Sequence[int]) -> ClientResult:
    """Drive the sessions ``indices`` of ``run`` in this trio loop."""
    return await _Client(run, indices).run_all()


def _client_process(run: LoadRun, indices: Sequence[int]) -> ClientResult:
    """The entry point of an extra load-generator process (``--clients``)."""
    return trio.run(_run_client, run, indices)


# =============================================================================== the server


@dataclass(frozen=True, slots=True)
class _CpuSample:
    machine_busy: int
    machine_total: int
    process: int
    main_thread: int


def _ticks(stat_path: str) -> int:
    """User + system CPU time from a ``stat`` file, in clock ticks."""
    stat = Path(stat_path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _cpu_sample(pid: int | None) -> _CpuSample | None:
    """The machine's and (if ``pid``) a process's CPU ticks; None where /proc is missing."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle = ticks[3] + ticks[4]
        process = _ticks(f"/proc/{pid}/stat") if pid else 0
        main = _ticks(f"/proc/{pid}/task/{pid}/stat") if pid else 0
    except (OSError, ValueError, IndexError):
        return None
    return _CpuSample(sum(ticks) - idle, sum(ticks), process, main)


def rss_mib(pid: int, field_name: str = "VmRSS") -> float | None:
    """A memory field of ``/proc/PID/status`` in MiB; None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


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
    has_pid: bool,
) -> ServerUsage:
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    cores = main = busy = None
    if before is not None and after is not None and seconds > 0:
        if has_pid:
            cores = (after.process - before.process) / hz / seconds
            main = (after.main_thread - before.main_thread) / hz / seconds
        total = after.machine_total - before.machine_total
        busy = (after.machine_busy - before.machine_busy) / total if total else None
    return ServerUsage(cores, main, busy, os.cpu_count() or 1, rss, rss_idle)


# =============================================================================== the report


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


# =============================================================================== running


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


class _ServerProbe:
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
        return _usage(self.before, self.after, seconds, self.rss, self.rss_idle, bool(self.pid))


async def run_load(
    run: LoadRun, *, speech_label: str = "", server_pid: int | None = None
) -> LoadReport:
    """Run the load from this trio loop (one client) and report. Cancelling abandons the run
    (the sessions' sockets are closed as their scopes unwind)."""
    probe = _ServerProbe(server_pid)
    clock = trio.current_time() - time.time()

    async def sample() -> None:
        await trio.sleep_until(run.window_start + clock)
        probe.at_start()
        await trio.sleep_until(run.window_end + clock)
        probe.at_end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        result = await _run_client(run, range(run.sessions))
    return _report(run, [result], speech_label, probe)


def _run_processes(
    run: LoadRun,
    *,
    clients: int,
    pool: concurrent.futures.ProcessPoolExecutor,
    speech_label: str,
    server_pid: int | None,
    rss_idle: float | None,
) -> LoadReport:
    """Run the load from ``clients`` processes of ``pool``; sample the server from here."""
    probe = _ServerProbe(server_pid, rss_idle)
    futures = [
        pool.submit(_client_process, run, range(c, run.sessions, clients)) for c in range(clients)
    ]
    time.sleep(max(run.window_start - time.time(), 0.0))
    probe.at_start()
    time.sleep(max(run.window_end - time.time(), 0.0))
    probe.at_end()
    return _report(run, [f.result() for f in futures], speech_label, probe)


def _report(
    run: LoadRun, parts: Sequence[ClientResult], speech_label: str, probe: _ServerProbe
) -> LoadReport:
    merged = ClientResult()
    for part in parts:
        merged.merge(part)
    return LoadReport(
        url=run.url,
        sessions=run.sessions,
        clients=len(parts),
        duration_s=run.duration_s,
        speech=speech_label,
        frame_ms=run.frame_ms,
        result=merged,
        client_cpu_cores=tuple(part.cpu_s / run.duration_s for part in parts),
        server=probe.usage(run.duration_s),
    )


@contextmanager
def _local_server() -> Iterator[tuple[str, int]]:
    """``scaivoice serve`` on a free loopback port, test backends, Silero VAD: (URL, pid)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(_SERVER_CONFIG)
        log_path = Path(tmp) / "server.log"
        port = _free_port()
        env = {**os.environ, "SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD": "1"}
        command = [
            sys.executable,
            "-m",
            "scaivoice.engine.cli",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with log_path.open("wb") as log:
            server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                _wait_healthy(f"http://127.0.0.1:{port}/health", server)
            except RuntimeError as exc:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ScaiVoiceError(f"{exc}; its log ends with:\n{tail}") from exc
            yield f"ws://127.0.0.1:{port}/v1/session", server.pid
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def run_load_benchmark(
    *,
    url: str | None,
    sessions: int,
    duration_s: float,
    clients: int = 1,
    token: str | None = None,
    api_key: str | None = None,
    server_pid: int | None = None,
    speech: SpeechKind = "auto",
    frame_ms: int = FRAME_MS,
    capacity: bool = False,
    as_json: bool = False,
) -> int:
    """Run the benchmark (or the capacity search) and print its figures.

    Returns 0 when the (last) run held the lag limit without errors, else 1.
    """
    if url is not None:
        _target(url, token)  # refuse a URL that is not ws:// on loopback before anything starts
    label, pcm = speech_utterance(speech)
    clients = max(1, clients)
    with (
        _maybe_server(url) as (session_url, pid),
        concurrent.futures.ProcessPoolExecutor(
            max_workers=clients, mp_context=multiprocessing.get_context("spawn")
        ) as pool,
    ):
        pid = pid or server_pid
        # Measured once, before the first run: later runs start from what earlier ones left.
        rss_idle = rss_mib(pid) if pid else None

        def measure(n: int) -> LoadReport:
            run = plan(
                session_url,
                sessions=n,
                duration_s=duration_s,
                speech=pcm,
                frame_ms=frame_ms,
                api_key=api_key,
                token=token,
                lead_s=1.0,  # the client processes' start-up
            )
            report = _run_processes(
                run,
                clients=min(clients, n),
                pool=pool,
                speech_label=label,
                server_pid=pid,
                rss_idle=rss_idle,
            )
            if as_json:
                import json

                print(json.dumps(report.to_json()), flush=True)
            else:
                print(report.format_text(), flush=True)
            return report

        if not capacity:
            return 0 if measure(sessions).ok else 1
        best = search_capacity(lambda n: measure(n).ok, sessions)
        print(
            f"capacity: {best} sessions hold p99 lag <= {LAG_LIMIT_MS:g} ms with no errors "
            f"({duration_s:g} s runs, {frame_ms} ms frames)",
            flush=True,
        )
        return 0 if best > 0 else 1


@contextmanager
def _maybe_server(url: str | None) -> Iterator[tuple[str, int | None]]:
    if url is not None:
        yield url, None
        return
    with _local_server() as (local_url, pid):
        yield local_url, pid


def search_capacity(passes: Callable[[int], bool], start: int, limit: int = 4096) -> int:
    """The largest N for which ``passes(N)``, assuming it holds up to some N and fails above:
    double from ``start`` until a run fails (or halve until one passes), then bisect to
    within 5 %. Returns 0 when even one session fails."""
    passed, failed = 0, 0
    n = max(start, 1)
    while n <= limit:
        if passes(n):
            passed = n
            if failed:
                break
            n *= 2
        else:
            failed = n
            if passed:
                break
            n //= 2
            if n == 0:
                return 0
    if not failed:
        return passed
    while failed - passed > max(1, math.ceil(passed * 0.05)):
        n = (passed + failed) // 2
        if passes(n):
            passed = n
        else:
            failed = n
    return passed
