"""``scaivoice bench realtime``: the OpenAI Realtime endpoint's latency against the native protocol.

Starts ``scaivoice serve`` in its own process on loopback (or uses ``--url``) and runs two
clients of it side by side, one turn each per round, so both see the same machine: the native
protocol on ``/v1/session`` (the Python client) and Realtime events on ``/v1/realtime`` (a plain
WebSocket client, as any Realtime app is). Both time, at the client, the end of the user's turn
-> the first audio of the reply, then cut the reply (``interrupt`` / ``response.cancel``).

- ``--stack test`` (default): the test backends at zero latency. 200 ms of audio, then
  ``audio.commit`` (native) or ``input_audio_buffer.commit`` + ``response.create`` (Realtime,
  turn detection off; timed from ``response.create``): the adapter's own cost, isolated.
- ``--stack embedded``: Whisper, Silero VAD, ``echo`` and hibari. A question spoken by the
  server's voice (``POST /v1/audio/speech``, ``pcm``) streamed in real time at 24 kHz with
  server VAD; timed from its last speech sample sent.

Both clients send 24 kHz audio (the Realtime rate), so the session's work is the same.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
from typing import Any

import httpx
import numpy as np
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from ._server import local_server

__all__ = ["measure_realtime", "run_realtime_benchmark"]

_RATE = 24000
_FRAME = _RATE * 2 * 20 // 1000  # 20 ms
_QUESTION = "What time does the museum open on Sunday?"
_TURN_TIMEOUT_S = 60.0

_CONFIGS = {
    "test": """\
[backends]
stt = "test-stt"
llm = "test-llm"
tts = "test-tts"
""",
    "embedded": """\
[backends]
stt = "whisper"
llm = "echo"
tts = "hibari"
""",
}


def run_realtime_benchmark(*, rounds: int, stack: str, url: str | None, api_key: str | None) -> int:
    """Run the benchmark and print its figures. Returns a process exit code.

    Args:
        rounds: turns per client.
        stack: ``test`` or ``embedded`` (see the module docs).
        url: the server's ``http://host:port``; ``None`` starts one.
        api_key: for ``url``'s server.
    """
    if url is not None:
        return trio.run(_run, url.rstrip("/"), api_key, rounds, stack)
    with local_server(_CONFIGS[stack], start_timeout_s=300.0) as server:
        return trio.run(_run, server.http_url, api_key, rounds, stack)


async def _run(http_url: str, api_key: str | None, rounds: int, stack: str) -> int:
    native, realtime = await measure_realtime(http_url, api_key=api_key, rounds=rounds, stack=stack)
    _report(stack, rounds, native, realtime)
    return 0


async def measure_realtime(
    http_url: str, *, api_key: str | None, rounds: int, stack: str
) -> tuple[list[float], list[float]]:
    """Run ``rounds`` turns on each client of the server at ``http_url``: the seconds from
    the end of each turn to its first audio, (native, Realtime)."""
    ws_url = http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    if stack == "embedded":
        speech = _trim(await _spoken_question(http_url, api_key))
        config: dict[str, Any] = {"turn_detection": "server_vad", "vad_enabled": True}
    else:
        t = np.arange(_RATE // 5) / _RATE  # 200 ms
        speech = (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()
        config = {"turn_detection": "manual"}
    native: list[float] = []
    realtime: list[float] = []
    headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
    async with (
        connect(
            ws_url + "/v1/session", api_key=api_key, config={"input_sample_rate": _RATE, **config}
        ) as session,
        open_websocket_url(
            ws_url + "/v1/realtime?model=bench", extra_headers=headers, max_message_size=1 << 24
        ) as socket,
    ):
        await _native_ready(session)
        await _realtime_ready(socket, manual=stack != "embedded")
        for _ in range(rounds):
            with trio.fail_after(_TURN_TIMEOUT_S):
                native.append(await _native_turn(session, speech, live=stack == "embedded"))
                realtime.append(await _realtime_turn(socket, speech, live=stack == "embedded"))
    return native, realtime


async def _spoken_question(http_url: str, api_key: str | None) -> bytes:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            http_url + "/v1/audio/speech",
            json={"model": "tts-1", "input": _QUESTION, "response_format": "pcm"},
            headers=headers,
        )
        response.raise_for_status()
        return response.content


def _trim(pcm: bytes) -> bytes:
    """``pcm`` without its trailing quiet: the end of speech is its last loud sample."""
    samples = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    loud = np.flatnonzero(samples > 0.02 * 32768)
    return pcm[: 2 * (int(loud[-1]) + 1)] if loud.size else pcm


async def _stream(send: Any, pcm: bytes, silence_ms: int = 1500) -> float:
    """Send ``pcm`` then silence in real-time 20 ms frames; returns when the speech ended."""
    audio = pcm + b"\0\0" * (_RATE * silence_ms // 1000)
    start = time.perf_counter()
    for index, offset in enumerate(range(0, len(audio), _FRAME)):
        await trio.sleep(max(0.0, start + index * 0.02 - time.perf_counter()))
        await send(audio[offset : offset + _FRAME])
    return start + len(pcm) / 2 / _RATE


# --------------------------------------------------------------------------- native


async def _native_ready(session: VoiceClient) -> None:
    while True:
        event = await session.receive()
        if isinstance(event, frames.State) and event.state == "idle":
            return


async def _native_turn(session: VoiceClient, speech: bytes, *, live: bool) -> float:
    ended = trio.Event()
    end = 0.0

    async def talk() -> None:
        nonlocal end
        if live:
            end = await _stream(session.send_audio, speech)
        else:
            await session.send_audio(speech)
            end = time.perf_counter()
            await session.commit()
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(talk)
        while not isinstance(event := await session.receive(), AgentAudio):
            pass
        first = time.perf_counter()
        await ended.wait()
        await session.interrupt()
        while not (isinstance(event, frames.State) and event.state in ("interrupted", "idle")):
            event = await session.receive()  # idle: the reply was over before the interrupt
    return first - end


# --------------------------------------------------------------------------- Realtime


async def _events(socket: WebSocketConnection, kind: str) -> dict[str, Any]:
    """Read events until one of ``kind``; an ``error`` event fails the benchmark."""
    while True:
        event = json.loads(await socket.get_message())
        if event["type"] == kind:
            return dict(event)
        if event["type"] == "error" and event["error"]["code"] != "response_cancel_not_active":
            raise RuntimeError(f"the server answered an error event: {event['error']}")


async def _realtime_ready(socket: WebSocketConnection, *, manual: bool) -> None:
    await _events(socket, "session.created")
    if manual:
        update = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        await socket.send_message(json.dumps({"type": "session.update", "session": update}))
        await _events(socket, "session.updated")


async def _realtime_turn(socket: WebSocketConnection, speech: bytes, *, live: bool) -> float:
    async def append(pcm: bytes) -> None:
        audio = base64.b64encode(pcm).decode("ascii")
        await socket.send_message(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

    ended = trio.Event()
    end = 0.0

    async def talk() -> None:
        nonlocal end
        if live:
            end = await _stream(append, speech)
        else:
            await append(speech)
            await socket.send_message('{"type": "input_audio_buffer.commit"}')
            end = time.perf_counter()
            await socket.send_message('{"type": "response.create"}')
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(talk)
        await _events(socket, "response.output_audio.delta")
        first = time.perf_counter()
        await ended.wait()
        await socket.send_message('{"type": "response.cancel"}')
        await _events(socket, "response.done")
    return first - end


# --------------------------------------------------------------------------- report


def _report(stack: str, rounds: int, native: list[float], realtime: list[float]) -> None:
    what = (
        "end of speech (last sample sent, server VAD) -> first audio"
        if stack == "embedded"
        else "end of the user's turn (commit / response.create) -> first audio"
    )
    print(f"scaivoice bench realtime: {stack} stack, {rounds} turns per client")
    print(f"  {what}, at the client:")
    for name, values in (("native   /v1/session ", native), ("Realtime /v1/realtime", realtime)):
        ms = sorted(v * 1000 for v in values)
        p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
        print(
            f"  {name}  median {statistics.median(ms):8.1f} ms   p90 {p90:8.1f} ms   "
            f"min {ms[0]:8.1f} ms"
        )
    overhead = statistics.median(realtime) * 1000 - statistics.median(native) * 1000
    print(f"  Realtime adapter: {overhead:+.1f} ms (difference of the medians)")
