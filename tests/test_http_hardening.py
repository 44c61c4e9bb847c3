"""The server's deadlines and limits: request heads, bodies and idle connections time out,
connections are counted, the WebSocket handshake is strict, a finished close handshake closes
the TCP connection at once, and voice-note uploads decode within a duration cap.

Timed tests run on a jumping mock clock against the real server on loopback: once every task
has waited for 50 ms of real time, the clock jumps to the next deadline, so a 10 s deadline
costs no real time, and the virtual time a test reads is when the server acted. (Not trio's
``autojump_clock``, which jumps at once: loopback bytes still in the kernel, on a busy machine,
would let a deadline pass before they arrive.)
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import struct
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import numpy as np
import pytest
import trio
import trio.testing

from scaivoice.engine import RunningServer, config_from_mapping, serve
from scaivoice.engine._voicenotes.codecs import (
    AudioTooLong,
    decode_audio,
    decode_audio_in_worker,
    encode_audio,
)
from scaivoice.engine.testing import test_engine_config

from .bench_decode_bomb import silent_ogg_opus
from .conftest import host_with
from .test_websocket import client_frame, parse_server_frames

# ============================================================================ helpers


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Jumps to the next deadline once every task waited 50 ms of real time (see above)."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@asynccontextmanager
async def running(**server: Any) -> AsyncIterator[RunningServer]:
    """The real server with ``[server]`` settings, on a free loopback port."""
    overrides: dict[str, Any] = {"server": {"port": 0, "drain_timeout_s": 0.5, **server}}
    config = config_from_mapping(test_engine_config(overrides))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        running_server: RunningServer = await nursery.start(
            partial(serve, config, host_with(), shutdown_trigger=stop.wait)
        )
        yield running_server
        stop.set()


def _port(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def open_from(server: RunningServer, source: str = "127.0.0.1") -> trio.SocketStream:
    """A TCP connection to the server from the loopback address ``source`` (any 127.x.y.z)."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", _port(server)))
    return trio.SocketStream(sock)


async def read_to_close(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:  # a reset after the data
        pass
    return data


async def read_response(stream: trio.SocketStream) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body) read off a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"the connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        body += await stream.receive_some(65536)
    return int(lines[0].split(" ")[1]), headers, body


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response.split(b" ")[1])


def body_of(response: bytes) -> Any:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def handshake(
    path: str = "/v1/session", *, version: str = "1.1", method: str = "GET", **overrides: str | None
) -> bytes:
    """A WebSocket opening handshake; an override of ``None`` leaves that header out."""
    fields: dict[str, str | None] = {
        "Host": "test",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    fields.update({k.replace("_", "-"): v for k, v in overrides.items()})
    lines = [f"{method} {path} HTTP/{version}"]
    lines += [f"{k}: {v}" for k, v in fields.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ============================================================================ request heads


async def test_a_head_that_never_ends_gets_408_at_the_head_deadline(
    clock: trio.testing.MockClock,
) -> None:
    """A slowloris client: one header byte a second, never the blank line."""
    async with running(head_timeout_s=5) as server:
        stream = await open_from(server)
        opened = trio.current_time()
        async with stream, trio.open_nursery() as nursery:

            async def drip() -> None:
                await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
                for _ in range(600):
                    await trio.sleep(1)
                    await stream.send_all(b"X")

            nursery.start_soon(drip)
            with trio.fail_after(60):
                response = await read_to_close(stream)
            nursery.cancel_scope.cancel()
        assert status_of(response) == 408
        assert 5 <= trio.current_time() - opened < 6


async def test_a_kept_alive_connection_gets_the_head_deadline_from_its_first_byte(
    clock: trio.testing.MockClock,
) -> None:
    async with running(head_timeout_s=5, keep_alive_timeout_s=20) as server:
        async with await open_from(server) as stream:
            await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(stream))[0] == 200
            await trio.sleep(15)  # idle, within the keep-alive time
            await stream.send_all(b"GET /livez HTTP/1.1\r\n")
            started = trio.current_time()
            with trio.fail_after(60):
                response = await read_to_close(stream)
            assert status_of(response) == 408
            assert 5 <= trio.current_time() - started < 6


async def test_idle_connections_are_closed_silently(clock: trio.testing.MockClock) -> None:
    async with running(head_timeout_s=3, keep_alive_timeout_s=7) as server:
        async with await open_from(server) as fresh:  # never sends a byte
            opened = trio.current_time()
            with trio.fail_after(60):
                assert await read_to_close(fresh) == b""
            assert 3 <= trio.current_time() - opened < 4
        async with await open_from(server) as kept:
            await kept.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(kept))[0] == 200
            answered = trio.current_time()
            with trio.fail_after(60):
                assert await read_to_close(kept) == b""
            assert 7 <= trio.current_time() - answered < 8


@pytest.mark.parametrize("size", [70 * 1024, 200 * 1024])
async def test_a_head_over_64_kib_gets_431(size: int) -> None:
    """Sent at once: h11 sees a whole head (counted by the server) or an incomplete one over
    its own limit; both are refused."""
    async with running() as server, await open_from(server) as stream:
        padding = "a" * 8000
        fields = "".join(f"X-Pad-{i}: {padding}\r\n" for i in range(size // 8000 + 1))
        with trio.fail_after(10):
            await stream.send_all(f"GET /livez HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
            assert status_of(await read_to_close(stream)) == 431


# ============================================================================ request bodies

_UPLOAD_HEAD = (
    b"POST /v1/session-tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n"
)


@pytest.mark.parametrize(
    ("bytes_per_s", "timed_out_after"),
    [
        (1, 3.0),  # a byte a second: the grace time, then 408
        (50, 5.0),  # half the minimum rate: 3 s + 0.5 s for each of the 4 chunks in time
        (200, None),  # twice the minimum rate: the body arrives
    ],
)
async def test_a_slow_body_gets_408_below_the_minimum_rate(
    clock: trio.testing.MockClock, bytes_per_s: int, timed_out_after: float | None
) -> None:
    body = b"{}" + b" " * 2998
    async with running(min_body_bytes_per_s=100, body_grace_s=3) as server:
        async with await open_from(server) as stream:
            await stream.send_all(_UPLOAD_HEAD % len(body))
            started = trio.current_time()

            async def upload() -> None:
                for start in range(0, len(body), bytes_per_s):
                    await trio.sleep(1)
                    await stream.send_all(body[start : start + bytes_per_s])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload)
                with trio.fail_after(120):
                    status, headers, document = await read_response(stream)
                nursery.cancel_scope.cancel()
            if timed_out_after is None:
                assert status == 201 and "token" in json.loads(document)
                return
            assert status == 408
            assert headers["connection"] == "close"
            assert json.loads(document)["code"] == "request_timeout"
            assert timed_out_after <= trio.current_time() - started < timed_out_after + 0.5
            with trio.fail_after(10):
                await read_to_close(stream)  # and the connection closes


async def test_a_stalled_body_gets_408_after_the_grace_time(clock: trio.testing.MockClock) -> None:
    async with running(min_body_bytes_per_s=100, body_grace_s=4) as server:
        async with await open_from(server) as stream:
            await stream.send_all(_UPLOAD_HEAD % 100_000 + b"{" + b" " * 40_000)  # then nothing
            stalled = trio.current_time()
            with trio.fail_after(60):
                response = await read_to_close(stream)
            assert status_of(response) == 408
            assert body_of(response)["code"] == "request_timeout"
            assert 4 <= trio.current_time() - stalled < 4.5


@pytest.mark.parametrize("how", ["half-close", "reset"])
async def test_a_client_hanging_up_mid_upload_logs_no_traceback(
    caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaivoice")
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
    )
    async with running() as server, await open_from(server) as stream:
        caplog.clear()  # what the start logged
        with trio.fail_after(10):
            await stream.send_all(head + b"x" * 1000)
            if how == "half-close":
                await stream.send_eof()
                response = await read_to_close(stream)  # the server saw it and answered
                assert status_of(response) == 400
                assert body_of(response)["code"] == "client_disconnected"
            else:
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                await trio.testing.wait_all_tasks_blocked()  # the server reads what came
                stream.socket.close()  # SO_LINGER 0: a reset
                await trio.testing.wait_all_tasks_blocked()
    went_away = [r for r in caplog.records if "went away mid-request" in r.getMessage()]
    assert len(went_away) == 1 and went_away[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


# ============================================================================ connection limits


async def test_connections_over_the_limits_get_503_with_retry_after() -> None:
    async with running(max_connections=4, max_connections_per_ip=2) as server:
        held: list[trio.SocketStream] = []
        with trio.fail_after(20):

            async def hold(source: str) -> None:
                stream = await open_from(server, source)
                await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await read_response(stream))[0] == 200  # admitted and counted
                held.append(stream)

            async def refused(source: str) -> None:
                async with await open_from(server, source) as stream:
                    await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                    response = await read_to_close(stream)
                    assert status_of(response) == 503, response
                    assert b"\r\nretry-after: 1\r\n" in response.lower()

            await hold("127.0.0.1")
            await hold("127.0.0.1")
            await refused("127.0.0.1")  # a third from one address
            await hold("127.0.0.2")
            await hold("127.0.0.3")
            await refused("127.0.0.4")  # a fifth in all
            await held[0].send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status_of(await read_to_close(held[0])) == 200  # one closes: room again
            await hold("127.0.0.1")
            await refused("127.0.0.5")
        for stream in held:
            await stream.aclose()


async def test_the_default_limits_let_many_loopback_connections_in() -> None:
    async with running() as server:
        streams = []
        with trio.fail_after(30):
            for _ in range(40):
                stream = await open_from(server)
                await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await read_response(stream))[0] == 200
                streams.append(stream)
        for stream in streams:
            await stream.aclose()


# ============================================================================ the handshake


_KEY = base64.b64encode(b"k" * 16)  # a second, valid key


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (handshake(), 101),
        (handshake(Connection="keep-alive, Upgrade"), 101),  # a token of the list
        (handshake(Upgrade="WebSocket", Connection="UPGRADE"), 101),  # any case
        (handshake(version="1.0"), 400),
        (handshake(method="POST"), 400),
        (handshake(Connection="keep-alive, upgraded"), 400),  # "upgrade" only as a substring
        (handshake(Connection=None), 400),
        (handshake(Host=None), 400),
        (handshake(Content_Length="5"), 400),  # an upgrade with a body
        (handshake(Transfer_Encoding="chunked"), 400),
        (handshake(Sec_WebSocket_Key=None), 400),
        (handshake(Sec_WebSocket_Key=base64.b64encode(b"x" * 15).decode()), 400),
        (handshake().replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: " + _KEY + b"\r\n\r\n"), 400),
        (handshake(Sec_WebSocket_Version=None), 426),
        (handshake(Sec_WebSocket_Version="8"), 426),
        (handshake("/v1%2Fsession"), 403),  # no percent-decoding
        (handshake("/v1/session/"), 403),
    ],
)
async def test_the_opening_handshake_is_strict(request_bytes: bytes, status: int) -> None:
    async with running() as server, await open_from(server) as stream:
        with trio.fail_after(10):
            await stream.send_all(request_bytes)
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                response += chunk
        assert status_of(response) == status, response
        if status == 426:
            assert b"\r\nsec-websocket-version: 13\r\n" in response.lower()


async def test_an_upgrade_announcing_a_body_is_refused_at_once_and_closed() -> None:
    """The body never comes; the server does not wait for it."""
    async with running() as server, await open_from(server) as stream:
        with trio.fail_after(5):
            await stream.send_all(handshake(Content_Length="1000"))
            assert status_of(await read_to_close(stream)) == 400


# ============================================================================ the close handshake


async def _session(server: RunningServer) -> tuple[trio.SocketStream, bytes]:
    """A raw WebSocket session past its handshake; the bytes read after the 101."""
    stream = await open_from(server)
    await stream.send_all(handshake())
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return stream, rest


def _close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big")


async def test_a_client_close_is_answered_and_the_server_closes_tcp_at_once(
    clock: trio.testing.MockClock,
) -> None:
    async with running() as server:
        stream, rest = await _session(server)
        async with stream:
            start = {"type": "session.start", "protocol": 1}
            await stream.send_all(client_frame(0x1, json.dumps(start).encode()))
            while b"session.started" not in rest:
                rest += await stream.receive_some(65536)
            await trio.testing.wait_all_tasks_blocked()
            await stream.send_all(client_frame(0x8, (1000).to_bytes(2, "big")))
            closing = trio.current_time()
            with trio.fail_after(10):
                rest += await read_to_close(stream)
            assert trio.current_time() - closing < 0.1
        frames = parse_server_frames(rest)
        assert frames[-1][0] == 0x8 and _close_code(frames[-1][1]) == 1000


async def test_after_a_server_close_the_clients_answer_closes_tcp_at_once(
    clock: trio.testing.MockClock,
) -> None:
    async with running() as server:
        stream, rest = await _session(server)
        async with stream:
            start = {"type": "session.start", "protocol": 99}  # refused: the server closes
            await stream.send_all(client_frame(0x1, json.dumps(start).encode()))
            while not any(op == 0x8 for op, _ in _whole_frames(rest)):
                rest += await stream.receive_some(65536)
            await stream.send_all(client_frame(0x8, (1000).to_bytes(2, "big")))
            answered = trio.current_time()
            with trio.fail_after(10):
                await read_to_close(stream)
            assert trio.current_time() - answered < 0.1


async def test_a_protocol_error_closes_with_1002_and_tcp_at_once(
    clock: trio.testing.MockClock,
) -> None:
    """Failing the connection: the server does not wait out a drain deadline for the client's
    close frame (which it can no longer parse) before closing TCP."""
    async with running() as server:
        stream, rest = await _session(server)
        async with stream:
            await stream.send_all(bytes((0x82, 0x02)) + b"ab")  # unmasked: a protocol error
            while not any(op == 0x8 for op, _ in _whole_frames(rest)):
                rest += await stream.receive_some(65536)
            failed = trio.current_time()
            await stream.send_all(client_frame(0x8, (1002).to_bytes(2, "big")))
            with trio.fail_after(10):
                await read_to_close(stream)
            assert trio.current_time() - failed < 0.1
        ((_, payload),) = [f for f in _whole_frames(rest) if f[0] == 0x8]
        assert _close_code(payload) == 1002


def _whole_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The complete server frames at the start of ``data``."""
    frames = []
    while len(data) >= 2:
        size, pos = data[1] & 0x7F, 2
        if size == 126:
            size, pos = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, pos = int.from_bytes(data[2:10], "big"), 10
        if len(data) < pos + size:
            break
        frames.append((data[0] & 0x0F, data[pos : pos + size]))
        data = data[pos + size :]
    return frames


# ============================================================================ decoding uploads


def _wav(seconds: float, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.zeros(int(seconds * rate), dtype="<i2").tobytes())
    return out.getvalue()


def test_a_decompression_bomb_is_refused_by_its_header_without_decoding() -> None:
    bomb = silent_ogg_opus(1200)  # 20 minutes of silence in about 450 KB
    assert len(bomb) < 500_000
    with pytest.raises(AudioTooLong, match="header says 1200 s"):
        decode_audio(bomb, max_duration_s=600)


def test_the_cap_applies_while_decoding_whatever_the_header_says() -> None:
    """A WAV of 2 s under a 1.5 s cap: its header is within the slack the header check
    allows, so the decoding itself stops at the cap."""
    with pytest.raises(AudioTooLong, match=r"longer than 1\.5 s$"):
        decode_audio(_wav(2.0), max_duration_s=1.5)
    assert len(decode_audio(_wav(1.4), max_duration_s=1.5)) == 1.4 * 16000 * 2


async def test_the_decode_stops_between_steps_when_its_caller_is_cancelled() -> None:
    note = silent_ogg_opus(600)  # 10 minutes: seconds of decoding
    with trio.move_on_after(0.2) as deadline:
        before = trio.current_time()
        await decode_audio_in_worker(note, step_s=0.02)
    assert deadline.cancelled_caught
    assert trio.current_time() - before < 1.0  # one step more at most, not the whole file


async def test_uploads_over_the_cap_are_413_audio_too_long() -> None:
    overrides = {"server": {"port": 0}, "voice_notes": {"max_audio_s": 1.5}}
    config = config_from_mapping(test_engine_config(overrides))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(
            partial(serve, config, host_with(), shutdown_trigger=stop.wait)
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for audio in (_wav(2.0), encode_audio(b"\0\0" * 16000 * 5, 16000, "opus").data):
                response = await http.post(
                    "/v1/audio/transcriptions", files={"file": ("note.ogg", audio)}
                )
                assert response.status_code == 413
                assert response.json()["code"] == "audio_too_long"
            short = await http.post(
                "/v1/audio/transcriptions", files={"file": ("note.wav", _wav(1.0))}
            )
            assert short.status_code == 200
        stop.set()


async def test_a_decode_past_its_deadline_is_422() -> None:
    overrides = {"server": {"port": 0}, "voice_notes": {"decode_timeout_s": 0.05}}
    config = config_from_mapping(test_engine_config(overrides))
    note = silent_ogg_opus(600)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(
            partial(serve, config, host_with(), shutdown_trigger=stop.wait)
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            with trio.fail_after(20):
                response = await http.post(
                    "/v1/audio/transcriptions", files={"file": ("note.ogg", note)}
                )
        assert response.status_code == 422
        assert response.json()["code"] == "audio_decode_timeout"
        stop.set()
