"""An OpenAI-compatible stub server for ``bench latency``: fixed answers after fixed delays.

A real HTTP/1.1 server (h11 on trio, keep-alive) on loopback, so the ``openai`` backends talk
to it as to any inference server; what it answers costs nothing, so a benchmark against it
measures the engine, not the models. Each answer starts after its route's delay (counted from
the end of the request body):

- ``POST /v1/audio/transcriptions``: ``{"text": ...}``, the transcripts in turn (the n-th
  request gets the n-th, the last repeats: one fixed transcript by default);
- ``POST /v1/chat/completions``: the reply streamed as server-sent events, one
  ``chat.completion.chunk`` a word, ``data: [DONE]`` (``stream: false`` is not read: every
  answer streams);
- ``POST /v1/audio/speech``: ``tts_seconds`` of audio, a quiet 220 Hz tone, as raw PCM16LE
  24 kHz (``response_format: pcm``) or a WAV, sent in 100 ms pieces as fast as the
  connection takes them, whatever the input text;
- ``GET /v1/models``, ``GET /v1/audio/voices``: one model, one voice (``alloy``);
- ``GET /stats``: what was asked, per route: ``requests``, ``completed`` (the whole answer was
  sent) and ``abandoned`` (the client went away first: a cancelled request).

Run it on its own (for another engine, or to watch it)::

    python -m scaivoice.conformance.bench.latency --port 8000 --delay-ms 100

It prints ``http://127.0.0.1:PORT/v1`` once it listens; :func:`running_stub` starts it in a
process of its own and reads that line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import selectors
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import h11
import numpy as np
import trio

from scaivoice.engine import ScaiVoiceError

__all__ = [
    "ROUTES",
    "RouteStats",
    "StubConfig",
    "StubStats",
    "running_stub",
    "serve_stub",
    "stub_argv",
]

TTS_RATE = 24000
ROUTES = {
    "/v1/audio/transcriptions": "stt",
    "/v1/chat/completions": "llm",
    "/v1/audio/speech": "tts",
}
"""The POST routes and the name each is counted under."""

_PIECE_S = 0.1
_MAX_BODY = 64 * 1024 * 1024
_RECEIVE = 65536
_TONE_DBFS = -20.0
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class StubConfig:
    """What the stub answers, and after how long."""

    stt_delay_ms: float = 100.0
    llm_delay_ms: float = 100.0
    tts_delay_ms: float = 100.0
    transcripts: tuple[str, ...] = ("What time does the pharmacy open today?",)
    """The n-th transcription request gets the n-th; the last repeats."""
    reply: str = "The pharmacy opens at nine in the morning and closes at six in the evening."
    tts_seconds: float = 8.0
    """The audio each speech request gets, whatever its text."""

    def delay_s(self, route: str) -> float:
        ms = {"stt": self.stt_delay_ms, "llm": self.llm_delay_ms, "tts": self.tts_delay_ms}[route]
        return ms / 1000.0


@dataclass(slots=True)
class RouteStats:
    """The requests one route got."""

    requests: int = 0
    completed: int = 0
    abandoned: int = 0
    """The client closed the connection before the whole answer was sent."""


@dataclass(slots=True)
class StubStats:
    """The requests of each POST route (``stt``, ``llm``, ``tts``)."""

    stt: RouteStats = field(default_factory=RouteStats)
    llm: RouteStats = field(default_factory=RouteStats)
    tts: RouteStats = field(default_factory=RouteStats)
    _changed: trio.Event = field(default_factory=trio.Event, compare=False, repr=False)

    def count(self, route: str, what: str) -> None:
        """Count a request (``what``: ``requests``, ``completed`` or ``abandoned``)."""
        stats = self.route(route)
        setattr(stats, what, getattr(stats, what) + 1)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[StubStats], bool]) -> None:
        """Return once ``predicate(self)`` holds (checked after each count)."""
        while not predicate(self):
            await self._changed.wait()

    def route(self, name: str) -> RouteStats:
        stats: RouteStats = getattr(self, name)
        return stats

    def minus(self, earlier: StubStats) -> StubStats:
        """The requests since ``earlier``."""

        def since(name: str) -> RouteStats:
            now, then = self.route(name), earlier.route(name)
            return RouteStats(
                now.requests - then.requests,
                now.completed - then.completed,
                now.abandoned - then.abandoned,
            )

        return StubStats(stt=since("stt"), llm=since("llm"), tts=since("tts"))

    def to_json(self) -> dict[str, dict[str, int]]:
        return {name: asdict(self.route(name)) for name in ("stt", "llm", "tts")}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StubStats:
        return cls(
            stt=RouteStats(**doc["stt"]), llm=RouteStats(**doc["llm"]), tts=RouteStats(**doc["tts"])
        )


# ====================================================================== answers


def _tone(seconds: float) -> bytes:
    """A 220 Hz tone at -20 dBFS, PCM16LE at 24 kHz."""
    t = np.arange(round(seconds * TTS_RATE)) / TTS_RATE
    amplitude = 32767 * 10 ** (_TONE_DBFS / 20)
    return (amplitude * np.sin(2 * np.pi * 220.0 * t)).astype("<i2").tobytes()


def _wav_header(rate: int) -> bytes:
    """A streaming WAV header: PCM16 mono, sizes unknown (0xFFFFFFFF), as TTS servers send."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def _sse_chunks(reply: str) -> list[bytes]:
    """The reply as ``chat.completion.chunk`` events, one a word, then ``[DONE]``."""
    words = reply.split(" ")
    deltas = [{"role": "assistant", "content": ""}]
    deltas += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
    events = []
    for index, delta in enumerate(deltas):
        last = index == len(deltas) - 1
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
        chunk = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "stub",
            "choices": [choice],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    content_type: str
    pieces: Sequence[bytes]


class _Stub:
    """The routes' answers (built once) and the counters."""

    def __init__(self, config: StubConfig) -> None:
        self.config = config
        self.stats = StubStats()
        self._llm = _sse_chunks(config.reply)
        tone = _tone(config.tts_seconds)
        step = round(_PIECE_S * TTS_RATE) * 2
        self._pcm = [tone[i : i + step] for i in range(0, len(tone), step)]

    def answer(self, method: str, path: str, body: bytes) -> tuple[str | None, _Answer]:
        """(the counted route or None, the answer)."""
        path = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == "/v1/models":
            return None, _json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        if method == "GET" and path == "/v1/audio/voices":
            return None, _json(200, {"voices": [{"id": "alloy", "name": "Alloy"}]})
        if method == "GET" and path == "/stats":
            return None, _json(200, self.stats.to_json())
        route = ROUTES.get(path) if method == "POST" else None
        if route is None:
            return None, _error(404, f"no route {method} {path}")
        if route == "stt":
            transcripts = self.config.transcripts
            text = transcripts[min(self.stats.stt.requests, len(transcripts) - 1)]
            return route, _json(200, {"text": text})
        if route == "llm":
            return route, _Answer(200, "text/event-stream", self._llm)
        try:
            fmt = json.loads(body).get("response_format", "mp3")
        except (ValueError, AttributeError):
            return route, _error(400, "the body is not a JSON object")
        if fmt == "pcm":
            return route, _Answer(200, "audio/pcm", self._pcm)
        if fmt == "wav":
            return route, _Answer(200, "audio/wav", [_wav_header(TTS_RATE), *self._pcm])
        return route, _error(400, f"response_format {fmt!r}: the stub answers pcm or wav")


def _json(status: int, doc: Any) -> _Answer:
    return _Answer(status, "application/json", [json.dumps(doc).encode()])


def _error(status: int, message: str) -> _Answer:
    return _json(status, {"error": {"message": message, "type": "invalid_request_error"}})


# ====================================================================== the server


async def serve_stub(
    config: StubConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[tuple[str, StubStats]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the stub until cancelled: ``await nursery.start(serve_stub, config)`` gives
    ``(base URL with /v1, the live counters)``. Cancelling closes the listener and every
    connection."""
    stub = _Stub(config)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, lambda s: _connection(stub, s), listeners)
        task_status.started((f"http://{host}:{bound[1]}/v1", stub.stats))


async def _connection(stub: _Stub, stream: trio.SocketStream) -> None:
    """One client connection: requests one after another (keep-alive) until it closes."""
    connection = h11.Connection(h11.SERVER)
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError, h11.ProtocolError):
            while True:
                request = await _read_request(connection, stream)
                if request is None:
                    return
                method, path, body = request
                route, answer = stub.answer(method, path, body)
                if route is not None:
                    stub.stats.count(route, "requests")
                delay = stub.config.delay_s(route) if route is not None else 0.0
                if not await _respond(connection, stream, answer, delay):
                    if route is not None:
                        stub.stats.count(route, "abandoned")
                    return
                if route is not None:
                    stub.stats.count(route, "completed")
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()


async def _read_request(
    connection: h11.Connection, stream: trio.SocketStream
) -> tuple[str, str, bytes] | None:
    """The next whole request -> (method, path, body); None when the client closed."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_RECEIVE)
            if not data and head is None:
                return None
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise h11.RemoteProtocolError("body too large")
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head.method.decode(), head.target.decode(), bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _respond(
    connection: h11.Connection, stream: trio.SocketStream, answer: _Answer, delay_s: float
) -> bool:
    """Wait ``delay_s``, then send ``answer``. False: the client went away first."""
    gone = False

    async def watch(scope: trio.CancelScope) -> None:
        # Nothing more comes before the answer (no pipelining): end of file is the client
        # giving up on this request.
        nonlocal gone
        while True:
            try:
                data = await stream.receive_some(_RECEIVE)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                gone = True
                scope.cancel()
                return
            connection.receive_data(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        try:
            await trio.sleep(delay_s)
            headers = [("content-type", answer.content_type)]
            if len(answer.pieces) == 1:
                headers.append(("content-length", str(len(answer.pieces[0]))))
            else:
                headers.append(("transfer-encoding", "chunked"))
            await stream.send_all(
                connection.send(h11.Response(status_code=answer.status, headers=headers))
            )
            for piece in answer.pieces:
                await stream.send_all(connection.send(h11.Data(data=piece)))
            await stream.send_all(connection.send(h11.EndOfMessage()))
        except trio.BrokenResourceError:
            gone = True
        nursery.cancel_scope.cancel()
    return not gone


# ====================================================================== as a process


def stub_argv(config: StubConfig, *, port: int = 0) -> list[str]:
    """The command line that serves ``config`` in a process of its own."""
    argv = [sys.executable, "-m", "scaivoice.conformance.bench.latency", "--port", str(port)]
    argv += ["--stt-delay-ms", str(config.stt_delay_ms)]
    argv += ["--llm-delay-ms", str(config.llm_delay_ms)]
    argv += ["--tts-delay-ms", str(config.tts_delay_ms)]
    argv += ["--tts-seconds", str(config.tts_seconds), "--reply", config.reply]
    for text in config.transcripts:
        argv += ["--transcript", text]
    return argv


@contextlib.contextmanager
def running_stub(config: StubConfig) -> Iterator[tuple[str, int]]:
    """Serve the stub in a process of its own; yields (its base URL, ``/v1`` included, its
    process id).

    Leaving the block terminates it.

    Raises:
        ScaiVoiceError: it did not print its URL within 30 s.
    """
    process = subprocess.Popen(stub_argv(config), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(_START_TIMEOUT_S):
                raise ScaiVoiceError(f"the stub server did not start in {_START_TIMEOUT_S:g} s")
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise ScaiVoiceError(f"the stub server did not start (exit {process.poll()})")
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _arguments(argv: Sequence[str] | None) -> tuple[StubConfig, str, int]:
    default = StubConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, help="every route's delay")
    for route in ("stt", "llm", "tts"):
        parser.add_argument(f"--{route}-delay-ms", type=float)
    parser.add_argument("--tts-seconds", type=float, default=default.tts_seconds)
    parser.add_argument("--reply", default=default.reply)
    parser.add_argument("--transcript", action="append", help="repeatable: answered in turn")
    args = parser.parse_args(argv)

    def delay(value: float | None) -> float:
        return value if value is not None else args.delay_ms if args.delay_ms is not None else 100

    config = StubConfig(
        stt_delay_ms=delay(args.stt_delay_ms),
        llm_delay_ms=delay(args.llm_delay_ms),
        tts_delay_ms=delay(args.tts_delay_ms),
        transcripts=tuple(args.transcript or default.transcripts),
        reply=args.reply,
        tts_seconds=args.tts_seconds,
    )
    if not math.isfinite(config.tts_seconds) or config.tts_seconds <= 0:
        parser.error("--tts-seconds must be positive")
    return config, args.host, args.port


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted; print the base URL once listening."""
    config, host, port = _arguments(argv)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            url, _ = await nursery.start(
                functools.partial(serve_stub, config, host=host, port=port)
            )
            print(url, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve)
