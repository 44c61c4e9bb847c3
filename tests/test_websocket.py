"""The lean WebSocket path: the sans-IO codec, the socket transport and the server around it."""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from scaivoice.engine import RunningServer, SessionClosed, config_from_mapping, serve
from scaivoice.engine._server.connection import StreamWebSocketTransport
from scaivoice.engine._server.websocket import (
    Close,
    Ping,
    WebSocketCodec,
    WebSocketProtocolError,
    accept_key,
    binary_frame,
    close_frame,
    pong_frame,
    text_frame,
    valid_key,
)
from scaivoice.engine.testing import test_engine_config

from .conftest import host_with


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None
) -> bytes:
    """A client frame, masked with ``mask`` (random by default), as a browser sends it."""
    key = os.urandom(4) if mask is None else mask
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def events(codec: WebSocketCodec, data: bytes) -> list[Any]:
    codec.receive_data(data)
    out = []
    while (event := codec.next_event()) is not None:
        out.append(event)
    return out


def parse_server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server frames: (opcode, payload); every byte must belong to a frame."""
    frames = []
    while data:
        size, pos = data[1] & 0x7F, 2
        assert not data[1] & 0x80, "server frames are never masked"
        if size == 126:
            size, pos = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, pos = int.from_bytes(data[2:10], "big"), 10
        assert len(data) >= pos + size, "a cut frame"
        frames.append((data[0] & 0x0F, data[pos : pos + size]))
        data = data[pos + size :]
    return frames


# ============================================================================ the codec


def test_the_accept_key_is_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not valid_key("c2hvcnQ=") and not valid_key("not base64!")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 511, 512, 640, 65535, 65536, 200_000])
def test_messages_of_every_length_class_arrive_whole(size: int) -> None:
    payload = os.urandom(size)
    codec = WebSocketCodec(max_message_bytes=1 << 20)
    text = "é" * (size // 2)
    data = client_frame(0x2, payload) + client_frame(0x1, text.encode())
    assert events(codec, data) == [payload, text]


def test_bytes_fed_one_at_a_time_give_the_same_messages() -> None:
    stream = client_frame(0x2, b"\x01\x02" * 300) + client_frame(0x1, b'{"type":"ping"}')
    stream += client_frame(0x9, b"hi") + client_frame(0x8, (1000).to_bytes(2, "big") + b"bye")
    codec = WebSocketCodec(max_message_bytes=4096)
    out: list[Any] = []
    for i in range(len(stream)):
        out += events(codec, stream[i : i + 1])
    assert out == [b"\x01\x02" * 300, '{"type":"ping"}', Ping(b"hi"), Close(1000, "bye")]


def test_fragments_join_and_control_frames_may_come_between_them() -> None:
    data = (
        client_frame(0x1, b"hel", fin=False)
        + client_frame(0x9, b"p")
        + client_frame(0xA, b"ignored pong")
        + client_frame(0x0, b"lo", fin=False)
        + client_frame(0x0, b"!", fin=True)
    )
    assert events(WebSocketCodec(max_message_bytes=100), data) == [Ping(b"p"), "hello!"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (bytes((0x82, 0x02)) + b"ab", 1002),  # unmasked
        (bytes((0xC2, 0x80)) + b"\0\0\0\0", 1002),  # RSV1 without an extension
        (client_frame(0x3, b"x"), 1002),  # reserved opcode
        (client_frame(0x9, b"x" * 126), 1002),  # control frame over 125 bytes
        (client_frame(0x9, b"x", fin=False), 1002),  # fragmented control frame
        (client_frame(0x0, b"x"), 1002),  # continuation of nothing
        (client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"), 1002),  # no continuation
        (client_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (client_frame(0x8, b"\x03"), 1002),  # one-byte close payload
        (client_frame(0x8, (1005).to_bytes(2, "big")), 1002),  # a code that may not be sent
        (client_frame(0x8, (1000).to_bytes(2, "big") + b"\xff"), 1007),  # reason not UTF-8
    ],
)
def test_protocol_errors_name_their_close_code(data: bytes, code: int) -> None:
    codec = WebSocketCodec(max_message_bytes=100)
    with pytest.raises(WebSocketProtocolError) as caught:
        events(codec, data)
    assert caught.value.close_code == code
    assert codec.next_event() is None  # nothing more after an error


def test_a_message_over_the_limit_is_refused_from_its_header() -> None:
    codec = WebSocketCodec(max_message_bytes=1000)
    header_only = client_frame(0x2, b"x" * 1001)[:8]  # 2 + 2 length bytes + 4 mask bytes
    with pytest.raises(WebSocketProtocolError) as caught:
        events(codec, header_only)
    assert caught.value.close_code == 1009
    fragmented = WebSocketCodec(max_message_bytes=1000)
    with pytest.raises(WebSocketProtocolError):
        events(fragmented, client_frame(0x2, b"x" * 600, fin=False) + client_frame(0x0, b"x" * 600))
    assert events(WebSocketCodec(max_message_bytes=1000), client_frame(0x2, b"x" * 1000))


def test_a_close_without_a_code_reads_as_1005() -> None:
    assert events(WebSocketCodec(max_message_bytes=10), client_frame(0x8, b"")) == [Close(1005, "")]


def test_server_frames_are_unmasked_with_the_right_length_form() -> None:
    for size in (0, 125, 126, 65535, 65536):
        ((opcode, payload),) = parse_server_frames(binary_frame(b"z" * size))
        assert (opcode, payload) == (0x2, b"z" * size)
    assert parse_server_frames(text_frame("héllo")) == [(0x1, "héllo".encode())]
    assert parse_server_frames(pong_frame(b"p")) == [(0xA, b"p")]
    ((opcode, payload),) = parse_server_frames(close_frame(4420, "é" * 100))
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 4420
    assert len(payload) <= 125 and payload[2:].decode("utf-8")  # cut on a character boundary


# ============================================================================ the transport


@asynccontextmanager
async def transport_pair(
    max_message_bytes: int = 1 << 20,
) -> AsyncIterator[tuple[StreamWebSocketTransport, socket.socket]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    transport = StreamWebSocketTransport(server, max_message_bytes=max_message_bytes)
    try:
        yield transport, client
    finally:
        transport.close_socket()
        client.close()


async def read_all(sock: socket.socket, wait_s: float = 0.05) -> bytes:
    data = b""
    while True:
        with trio.move_on_after(wait_s):
            await trio.lowlevel.wait_readable(sock)
            chunk = sock.recv(1 << 20)
            if not chunk:
                return data
            data += chunk
            continue
        return data


async def test_the_transport_hands_over_messages_in_order_and_answers_pings() -> None:
    async with transport_pair() as (transport, client):
        client.sendall(
            client_frame(0x2, b"\0\0" * 320)
            + client_frame(0x9, b"are you there")
            + client_frame(0x1, b'{"type": "ping", "id": "1"}')
            + client_frame(0x2, b"\1\0" * 320)
        )
        with trio.fail_after(5):
            assert await transport.receive() == b"\0\0" * 320
            assert await transport.receive() == '{"type": "ping", "id": "1"}'
            assert await transport.receive() == b"\1\0" * 320
        assert parse_server_frames(await read_all(client)) == [(0xA, b"are you there")]
        await transport.send_text('{"type": "pong"}')
        await transport.send_bytes(b"\2\0" * 10)
        assert parse_server_frames(await read_all(client)) == [
            (0x1, b'{"type": "pong"}'),
            (0x2, b"\2\0" * 10),
        ]


async def test_a_client_close_is_answered_and_ends_the_session() -> None:
    async with transport_pair() as (transport, client):
        client.sendall(client_frame(0x8, (4000).to_bytes(2, "big") + b"bye"))
        with trio.fail_after(5), pytest.raises(SessionClosed):
            await transport.receive()
        ((opcode, payload),) = parse_server_frames(await read_all(client))
        assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 4000
        with pytest.raises(SessionClosed):
            await transport.send_text("too late")
        await transport.close(1000)  # idempotent: nothing more is sent
        assert await read_all(client) == b""


async def test_an_oversized_message_closes_with_1009() -> None:
    async with transport_pair(max_message_bytes=1000) as (transport, client):
        client.sendall(client_frame(0x2, b"x" * 2000))
        with trio.fail_after(5), pytest.raises(SessionClosed):
            await transport.receive()
        ((opcode, payload),) = parse_server_frames(await read_all(client))
        assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1009
        assert transport.close_code == 1009


async def test_a_send_cut_short_by_a_deadline_keeps_the_frames_whole() -> None:
    """A client that does not read: the writer's deadline cancels a send part way; the next
    sends finish that frame first, so the client reads whole frames when it reads again."""
    async with transport_pair() as (transport, client):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent: list[bytes] = []
        with trio.move_on_after(0.2) as timer:
            for index in range(10_000):
                payload = bytes([index % 251]) * 3000
                sent.append(payload)
                await transport.send_bytes(payload)
        assert timer.cancelled_caught
        reader_done = trio.Event()
        received = b""

        async def reader() -> None:
            nonlocal received
            received = await read_all(client, wait_s=0.3)
            reader_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            with trio.fail_after(10):
                await transport.close(4420, "slow_client")
            await reader_done.wait()
        frames = parse_server_frames(received)
        assert frames[-1][0] == 0x8 and int.from_bytes(frames[-1][1][:2], "big") == 4420
        data_frames = [payload for opcode, payload in frames[:-1]]
        assert data_frames == sent[: len(data_frames)]
        assert len(data_frames) >= len(sent) - 1  # the cut frame was finished first


# ============================================================================ the server


@asynccontextmanager
async def running() -> AsyncIterator[RunningServer]:
    config = config_from_mapping(test_engine_config({"server": {"port": 0}}))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(
            partial(serve, config, host_with(), shutdown_trigger=stop.wait)
        )
        yield server
        stop.set()


async def upgrade(server: RunningServer, path: str, **headers: str) -> tuple[Any, bytes]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    fields = {
        "Host": "test",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    await stream.send_all((head + "\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        response += chunk
    return stream, response


async def test_http_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with running() as server, httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(3):
            assert (await http.get("/livez")).json() == {"live": True}
        assert (await http.get("/nowhere")).status_code == 404
        assert (await http.post("/livez")).status_code == 405


async def test_the_session_handshake_answers_101_with_the_accept_key() -> None:
    async with running() as server:
        key = base64.b64encode(os.urandom(16)).decode()
        with trio.fail_after(10):
            stream, response = await upgrade(server, "/v1/session", **{"Sec-WebSocket-Key": key})
            async with stream:
                head = response.decode("latin-1").lower()
                assert head.startswith("http/1.1 101")
                assert f"sec-websocket-accept: {accept_key(key)}".lower() in head
                assert "sec-websocket-extensions" not in head  # no compression is negotiated
                start = {"type": "session.start", "protocol": 1}
                await stream.send_all(client_frame(0x9, b"hb"))
                await stream.send_all(client_frame(0x1, json.dumps(start).encode()))
                data = response.partition(b"\r\n\r\n")[2]
                while b"session.started" not in data:
                    data += await stream.receive_some(65536)
                assert data.startswith(pong_frame(b"hb"))


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/elsewhere", {}, b"403"),
        ("/v1/session", {"Sec-WebSocket-Version": "8"}, b"426"),
        ("/v1/session", {"Sec-WebSocket-Key": "short"}, b"400"),
    ],
)
async def test_bad_upgrades_are_refused_with_an_http_status(
    path: str, headers: dict[str, str], status: bytes
) -> None:
    async with running() as server:
        with trio.fail_after(10):
            stream, response = await upgrade(server, path, **headers)
            async with stream:
                assert response.split(b" ")[1] == status
