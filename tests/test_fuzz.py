"""A bounded, seeded fuzzer against a real in-process server (the engine's own HTTP/1.1 and
WebSocket server, on loopback, port 0, with the deterministic test backends).

Each class of hostile input is one test, with its own server:

- ``ws_frames``: garbled WebSocket frames after a valid handshake (bad opcodes, reserved bits,
  unmasked frames, announced lengths past the limit or past what is sent, long or fragmented
  control frames, broken fragment sequences, bad close frames, invalid UTF-8, random bytes);
- ``handshakes``: malformed upgrade requests;
- ``json_frames``: every client frame type with wrong field types, missing, extra and unknown
  fields, mangled tags, documents that are not objects, broken JSON;
- ``unicode``: escaped lone surrogates, NUL, bidi controls, non-characters, long strings;
- ``nesting``: arrays and objects nested 64 to 100,000 deep, in frames and HTTP bodies;
- ``floods``: frame, ping, audio and fragment floods, idle connections;
- ``http``: malformed requests to the HTTP API (bad multipart, wrong content types, broken
  JSON, bad credentials, huge or broken heads, bad framing).

The invariants, checked for every case: the server answers every bad input with a clear error
(an ``error`` event with a documented code, a close code of 1002, 1007, 1008, 1009 or 4000-4999,
an echo of the client's own close, or an HTTP 4xx) and never with 1011, ``internal_error`` or an
HTTP 5xx; no case hangs; the server logs no traceback and no ERROR; afterwards a fresh session
runs a whole turn and the HTTP API answers. Every case's outcome is counted and printed
(``-s`` is not needed), so a run can be quoted.

The seed is ``SCAIVOICE_FUZZ_SEED`` (default 1010); a failure names the seed and the case.
``pytest -m fuzz`` runs only these tests.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio

from scaivoice.conformance.protocol_suite.spec import ERROR_CODES
from scaivoice.engine import RunningServer
from scaivoice.engine.client import connect, frames
from scaivoice.engine.frames import CLIENT_FRAME_TYPES

from .test_server import KEY_ACME, TENANTS, running_server

SEED = int(os.environ.get("SCAIVOICE_FUZZ_SEED", "1010"))
CASE_TIMEOUT_S = 5.0
CLASS_TIMEOUT_S = 20.0

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(90)]

SERVER = {
    **TENANTS,
    "server": {
        "port": 0,
        "drain_timeout_s": 0.3,
        "head_timeout_s": 1.0,
        "body_grace_s": 0.5,
        "keep_alive_timeout_s": 1.0,
    },
    "session": {"warm_up": False, "start_timeout_s": 2.0},
}
MAX_MESSAGE_BYTES = 4 * 256 * 1024  # 4 x [session] max_frame_bytes: the WebSocket layer's cap
CLEAR_CLOSES = frozenset({1002, 1007, 1008, 1009})
BAD_ERROR_CODES = frozenset({"internal_error"})


# =========================================================================== outcomes


@dataclass
class Seen:
    """What the server did with one case."""

    errors: list[str] = field(default_factory=list)
    close: int | None = None
    echoed_close: int | None = None  # the client closed with this code first
    alive: bool = False
    eof: bool = False
    status: int | None = None
    served_by_design: bool = False  # a 2xx for input the endpoint accepts on purpose
    hang: bool = False

    def outcome(self) -> str:
        if self.hang:
            return "hang"
        if self.served_by_design:
            return f"http {self.status} (lenient by design)"
        if self.status is not None:
            return f"http {self.status}"
        if self.close is not None:
            return f"close {self.close}"
        if self.alive:
            return "alive"
        return "eof" if self.eof else "nothing"

    def problems(self) -> list[str]:
        """What breaks the invariants (empty: the case passed)."""
        found = []
        if self.hang:
            found.append("no answer within the case's deadline")
        for code in self.errors:
            if code in BAD_ERROR_CODES or code not in ERROR_CODES:
                found.append(f"error code {code!r}")
        if self.close is not None:
            clear = self.close in CLEAR_CLOSES or 3000 <= self.close <= 4999  # 3xxx: echoes
            if not clear and self.close != self.echoed_close:
                found.append(f"close code {self.close}")
        if self.status is not None and not 400 <= self.status <= 499 and not self.served_by_design:
            found.append(f"HTTP status {self.status}")
        return found


@dataclass
class Tally:
    """Cases and outcomes of one class, and the cases that broke an invariant."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    cases: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, case: str, seen: Seen, *, expect: Callable[[Seen], bool] | None = None) -> None:
        self.cases += 1
        self.outcomes[seen.outcome()] += 1
        self.errors.update(seen.errors)
        problems = seen.problems()
        if expect is not None and not problems and not expect(seen):
            problems.append(f"unexpected outcome {seen.outcome()} (errors {seen.errors})")
        if problems:
            self.failures.append(f"{case}: {'; '.join(problems)}")

    def report(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        elapsed = time.monotonic() - self.started
        return (
            f"fuzz {self.name} (seed {SEED}): {self.cases} cases in {elapsed:.1f} s; "
            f"outcomes: {outcomes}; error events: {errors}; failures: {len(self.failures)}"
        )


def closes(*codes: int) -> Callable[[Seen], bool]:
    return lambda seen: seen.close in codes


def errors_or_alive(seen: Seen) -> bool:
    return seen.alive or bool(seen.errors) or seen.close is not None


# =========================================================================== a raw client


def mask_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """A client frame, with every field under control: ``length`` announces a size other than
    the payload's, ``length_form`` (7, 16, 64) forces the length encoding."""
    size = len(payload) if length is None else length
    form = length_form or (7 if size < 126 else 16 if size < 1 << 16 else 64)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if masked else 0
    if form == 7:
        head = bytes((first, bit | size))
    elif form == 16:
        head = bytes((first, bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(doc: Any) -> bytes:
    raw = doc if isinstance(doc, str | bytes) else json.dumps(doc)
    return mask_frame(0x1, raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)


class RawSocket:
    """A WebSocket (or plain HTTP) connection that sends whatever it is told to."""

    def __init__(self, stream: trio.SocketStream, buffered: bytes = b"") -> None:
        self.stream = stream
        self.buffer = buffered
        self.probes = 0

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        self.buffer += data
        return bool(data)

    async def frame(self) -> tuple[int, bytes] | None:
        """The next server frame (opcode, payload); ``None`` at the end of the stream."""
        while True:
            buf = self.buffer
            if len(buf) >= 2:
                size, pos = buf[1] & 0x7F, 2
                if size == 126 and len(buf) >= 4:
                    size, pos = int.from_bytes(buf[2:4], "big"), 4
                elif size == 127 and len(buf) >= 10:
                    size, pos = int.from_bytes(buf[2:10], "big"), 10
                if size < 126 or pos > 2:
                    if len(buf) >= pos + size:
                        self.buffer = buf[pos + size :]
                        return buf[0] & 0x0F, buf[pos : pos + size]
            if not await self._more():
                return None

    async def watch(self, seen: Seen, *, probe: str | None = None, start: bool = False) -> None:
        """Read until the probe's pong (alive), ``session.started`` (with ``start``), a close
        frame or the end of the stream, noting error events on the way."""
        while True:
            item = await self.frame()
            if item is None:
                seen.eof = True
                return
            opcode, payload = item
            if opcode == 0x8:
                seen.close = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                return
            if opcode != 0x1:
                continue
            doc = json.loads(payload)
            if doc.get("type") == "error":
                seen.errors.append(doc["code"])
            elif doc.get("type") == "pong" and probe is not None and doc.get("id") == probe:
                seen.alive = True
                return
            elif doc.get("type") == "session.started" and start:
                seen.alive = True
                return

    async def probe(self, seen: Seen, *, started: bool = True) -> None:
        """Check that the session goes on: a ``ping`` answered by its pong, or, before the
        session started, a ``session.start`` answered by ``session.started``."""
        self.probes += 1
        probe = f"probe-{self.probes}"
        frame = (
            {"type": "ping", "id": probe} if started else {"type": "session.start", "protocol": 1}
        )
        try:
            await self.send(text(frame))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server closed already: what it sent is still there to read
        await self.watch(seen, probe=probe, start=not started)

    async def http_response(self) -> tuple[int, dict[str, str], bytes] | None:
        """The next HTTP response (status, headers, body); ``None`` if the server closed first."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._more():
                return None
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        while len(rest) < size:
            if not await self._more():
                break
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[size:]
        return status, headers, rest[:size]


def _host_port(server: RunningServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@asynccontextmanager
async def raw(server: RunningServer) -> AsyncIterator[RawSocket]:
    host, port = _host_port(server)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        yield RawSocket(stream)


def upgrade_request(path: str = "/v1/session", **fields: str | None) -> bytes:
    headers: dict[str, str | None] = {
        "Host": "fuzz",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Authorization": f"Bearer {KEY_ACME}",
    }
    headers.update(fields)
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@asynccontextmanager
async def websocket(server: RunningServer, *, start: bool = True) -> AsyncIterator[RawSocket]:
    """A raw WebSocket on the session endpoint, the session started when ``start``."""
    async with raw(server) as sock:
        await sock.send(upgrade_request())
        response = await sock.http_response()
        assert response is not None and response[0] == 101, response
        if start:
            await sock.send(text({"type": "session.start", "protocol": 1}))
            seen = Seen()
            await sock.watch(seen, start=True)
            assert seen.alive, seen
        yield sock


async def run_case(coro: Callable[[Seen], Any]) -> Seen:
    """Run one case under its deadline; a case past it is a hang."""
    seen = Seen()
    with trio.move_on_after(CASE_TIMEOUT_S) as scope:
        await coro(seen)
    seen.hang = scope.cancelled_caught
    return seen


# =========================================================================== the harness


@asynccontextmanager
async def fuzz_server(
    name: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[tuple[RunningServer, Tally]]:
    """A server, a tally, and the invariants checked after the cases ran."""
    caplog.set_level(logging.INFO, logger="scaivoice")
    tally = Tally(name)
    with trio.fail_after(CLASS_TIMEOUT_S + 15):
        async with running_server(SERVER) as (server, _):
            with trio.fail_after(CLASS_TIMEOUT_S):
                yield server, tally
            await _a_fresh_session_works(server)
    with capsys.disabled():
        print("\n" + tally.report())
        for failure in tally.failures:
            print(f"  FAILED {failure}")
    tracebacks = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("scaivoice") and (r.exc_info or r.levelno >= logging.ERROR)
    ]
    assert not tracebacks, f"the server logged errors / tracebacks (seed {SEED}): {tracebacks}"
    assert not tally.failures, f"seed {SEED}: " + "; ".join(tally.failures[:10])


async def _a_fresh_session_works(server: RunningServer) -> None:
    with trio.fail_after(15):
        async with connect(server.ws_url, api_key=KEY_ACME) as session:
            await session.send_text("hello")
            async for event in session.events():
                if isinstance(event, frames.AgentTextDone):
                    assert event.text == "You said: hello."
                    break
        async with httpx.AsyncClient(base_url=server.url) as http:
            voices = await http.get("/v1/voices", headers={"Authorization": f"Bearer {KEY_ACME}"})
            assert voices.status_code == 200


# =========================================================================== ws_frames


def _ws_frame_cases(rng: random.Random) -> Iterator[tuple[str, bytes, Callable[[Seen], bool]]]:
    """(name, bytes, expectation); cases whose name ends in '+eof' are followed by the client's
    end of stream (the server cannot know the frame is cut short)."""
    ping = json.dumps({"type": "ping", "id": 1}).encode()
    for opcode in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF):
        yield (
            f"opcode {opcode:#x}",
            mask_frame(opcode, rng.randbytes(rng.randrange(20))),
            closes(1002),
        )
    for rsv in range(1, 8):
        yield f"rsv {rsv}", mask_frame(0x1, ping, rsv=rsv), closes(1002)
    for opcode in (0x1, 0x2, 0x9):
        yield f"unmasked {opcode:#x}", mask_frame(opcode, ping, masked=False), closes(1002)
    for size in (MAX_MESSAGE_BYTES + 1, 1 << 32, (1 << 63) - 1, (1 << 64) - 1):
        yield f"announces {size} bytes", mask_frame(0x2, b"", length=size), closes(1009, 1002)
    half = MAX_MESSAGE_BYTES // 2 + 1
    yield (
        "fragments past the cap",
        mask_frame(0x2, bytes(half), fin=False) + mask_frame(0x0, b"", length=half),
        closes(1009),
    )
    for opcode in (0x8, 0x9, 0xA):
        yield f"control {opcode:#x} of 126 bytes", mask_frame(opcode, b"x" * 126), closes(1002)
        yield f"fragmented control {opcode:#x}", mask_frame(opcode, b"hi", fin=False), closes(1002)
    yield "continuation first", mask_frame(0x0, ping), closes(1002)
    yield (
        "new message mid-fragments",
        mask_frame(0x1, b'{"type":', fin=False) + mask_frame(0x1, ping),
        closes(1002),
    )
    yield (
        "a text message left open",
        mask_frame(0x1, b"\xce", fin=False) + mask_frame(0x0, b"\xba", fin=False),
        closes(1002),  # the probe comes while the message is still open
    )
    yield "close with one byte", mask_frame(0x8, b"\x03"), closes(1002)
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535):
        yield f"close code {code}", mask_frame(0x8, struct.pack("!H", code)), closes(1002)
    yield "close reason not UTF-8", mask_frame(0x8, b"\x03\xe8\xff\xfe"), closes(1007)
    for _ in range(12):
        bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8"])
        body = rng.randbytes(rng.randrange(8)).replace(b"\x80", b"a")
        good = "κόσμε".encode()
        if rng.random() < 0.5:
            frames_ = mask_frame(0x1, good + bad + body)
        else:  # in a later fragment, the message unfinished
            frames_ = mask_frame(0x1, good, fin=False) + mask_frame(0x0, bad + body, fin=False)
        yield f"invalid UTF-8 {bad.hex()}", frames_, closes(1007)
    for form in (16, 64):
        yield (
            f"ping in the {form}-bit length form",
            mask_frame(0x1, ping, length_form=form),
            (lambda s: s.alive or bool(s.errors)),
        )
    for _ in range(8):
        cut = rng.randrange(1, 200)
        yield (
            f"announces {cut + 10} sends {cut}+eof",
            mask_frame(0x1, b"x" * cut, length=cut + 10),
            lambda s: s.eof or s.close is not None,
        )
    for i in range(150):
        garbage = rng.randbytes(rng.randrange(1, 300))
        yield f"random bytes #{i}+eof", garbage, lambda s: True


async def test_fuzz_ws_frames(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    async with fuzz_server("ws_frames", caplog, capsys) as (server, tally):
        for name, data, expect in _ws_frame_cases(rng):
            started = rng.random() < 0.7

            async def case(
                seen: Seen,
                data: bytes = data,
                eof: bool = name.endswith("+eof"),
                started: bool = started,
            ) -> None:
                async with websocket(server, start=started) as sock:
                    try:
                        await sock.send(data)
                        if eof:
                            await sock.stream.send_eof()
                    except trio.BrokenResourceError:
                        pass  # the server failed the connection before it took all of it
                    if eof:
                        await sock.watch(seen)
                    else:
                        await sock.probe(seen, started=started)

            tally.add(
                f"{name} ({'started' if started else 'before start'})",
                await run_case(case),
                expect=expect,
            )


# =========================================================================== handshakes


def _handshake_cases(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    yield "version 8", upgrade_request(**{"Sec-WebSocket-Version": "8"})
    yield "no version", upgrade_request(**{"Sec-WebSocket-Version": None})
    yield "version junk", upgrade_request(**{"Sec-WebSocket-Version": "13, 8, x"})
    yield "no key", upgrade_request(**{"Sec-WebSocket-Key": None})
    for key in ("short", "", "!!!!", base64.b64encode(os.urandom(15)).decode(), "é" * 24):
        yield f"key {key!r}", upgrade_request(**{"Sec-WebSocket-Key": key})
    yield (
        "two keys",
        upgrade_request().replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n"
        ),
    )
    for path in ("/", "/v1/sessions", "/v1/session/x", "/V1/SESSION", "/%761/session", "*"):
        yield f"path {path}", upgrade_request(path)
    yield "POST upgrade", upgrade_request().replace(b"GET ", b"POST ", 1)
    yield "HTTP/1.0", upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    yield "no host", upgrade_request(Host=None)
    yield "upgrade h2c", upgrade_request(Upgrade="h2c")
    yield "body with the upgrade", upgrade_request(**{"Content-Length": "5"}) + b"hello"
    yield "bad credentials", upgrade_request(Authorization="Bearer sk-nope")
    yield "token junk", upgrade_request("/v1/session?token=" + "%FF" * 40, Authorization=None)
    yield "token twice", upgrade_request("/v1/session?token=a&token=b", Authorization=None)
    yield "header without colon", upgrade_request().replace(b"\r\n\r\n", b"\r\nnocolon\r\n\r\n")
    yield "NUL in a header", upgrade_request(**{"X-Junk": "a\x00b"})
    yield "head of 70 KiB", upgrade_request(**{"X-Big": "x" * 70_000})
    yield (
        "1000 headers",
        upgrade_request().replace(
            b"\r\n\r\n", b"".join(b"\r\nX-H%d: v" % i for i in range(1000)) + b"\r\n\r\n"
        ),
    )
    for i in range(40):
        line = rng.randbytes(rng.randrange(1, 120)).replace(b"\r\n", b"")
        yield f"random request #{i}", line + b"\r\n\r\n"


async def test_fuzz_handshakes(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    async with fuzz_server("handshakes", caplog, capsys) as (server, tally):
        for name, data in _handshake_cases(rng):

            async def case(seen: Seen, data: bytes = data) -> None:
                async with raw(server) as sock:
                    await sock.send(data)
                    response = await sock.http_response()
                    if response is None:
                        seen.eof = True
                        return
                    seen.status = response[0]
                    if response[0] == 101:  # accepted: the session refuses it in-band, or it
                        seen.status = None  # was a valid upgrade after all and starts
                        await sock.probe(seen, started=False)

            seen = await run_case(case)
            # every malformed upgrade is answered: an HTTP 4xx or a WebSocket refusal; the
            # valid ones among them (credentials refused in-band, many headers) start
            valid = name in ("1000 headers",)
            tally.add(
                name,
                seen,
                expect=lambda s, valid=valid: (
                    s.status is not None or s.close is not None or (valid and s.alive)
                ),
            )


# =========================================================================== json_frames

VALID: dict[str, dict[str, Any]] = {
    "session.start": {"type": "session.start", "protocol": 1, "config": {"speed": 1.0}},
    "session.update": {"type": "session.update", "config": {"speed": 1.5}},
    "interrupt": {"type": "interrupt"},
    "vad": {"type": "vad", "speaking": True},
    "wake": {"type": "wake", "confidence": 0.5},
    "audio.commit": {"type": "audio.commit"},
    "text": {"type": "text", "text": "hi"},
    "playback": {"type": "playback", "turn_id": 1, "played_ms": 100},
    "tool.result": {"type": "tool.result", "call_id": "c1", "result": {"a": 1}},
    "session.end": {"type": "session.end"},
    "ping": {"type": "ping", "id": 1},
}
WRONG: list[Any] = [
    None, True, False, 0, -1, 2**64, -(2**63) - 1, 1.5, -0.0, 1e308, "", "x", "1",
    [], [1, "a"], {}, {"a": {"b": []}}, "ü" * 50,
]  # fmt: skip
CONFIG_KEYS = ["voice_id", "speed", "input_sample_rate", "output_sample_rate", "language",
               "vad_enabled", "warmup_trim_ms", "system_prompt", "cfg_value", "tools_enabled"]  # fmt: skip


def test_the_json_fuzzer_knows_every_client_frame_type() -> None:
    assert set(VALID) == {t.__struct_config__.tag for t in CLIENT_FRAME_TYPES}


def _json_cases(rng: random.Random) -> Iterator[tuple[str, str]]:
    for _ in range(400):
        tag = rng.choice(sorted(VALID))
        doc = json.loads(json.dumps(VALID[tag]))
        fields = [k for k in doc if k != "type"]
        kind = rng.choice(["wrong type", "wrong type", "unknown field", "missing", "config", "tag"])
        if kind == "wrong type" and fields:
            name = rng.choice(fields)
            doc[name] = rng.choice(WRONG)
        elif kind == "unknown field":
            doc[rng.choice(["extra", "Type", "", "config2"])] = rng.choice(WRONG)
        elif kind == "missing" and fields:
            del doc[rng.choice(fields)]
        elif kind == "config":
            doc.setdefault("config", {})
            if isinstance(doc["config"], dict):
                key = rng.choice([*CONFIG_KEYS, "no_such_key"])
                doc["config"][key] = rng.choice(WRONG)
        else:
            doc["type"] = rng.choice([tag.upper(), f" {tag}", 1, None, [tag], "", "x" * 300])
        yield f"{tag}: {kind}", json.dumps(doc)
    for raw_doc in ("[]", "1", '"text"', "null", "true", "{", '{"type": "ping"', "{}}", "",
                    '{"type":"ping","id":1} trailing', '{"type":"ping","type":"text"}', "\ufeff{}",
                    '{"type":"ping","id":1,"id":2}', "{'type': 'ping'}", "NaN", "[" * 5):  # fmt: skip
        yield f"not a frame: {raw_doc[:20]!r}", raw_doc


async def test_fuzz_json_frames(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    cases = list(_json_cases(rng))
    async with fuzz_server("json_frames", caplog, capsys) as (server, tally):
        index = 0
        while index < len(cases):
            started = rng.random() < 0.8
            async with websocket(server, start=started) as sock:
                # a started session takes a dozen cases (within the control burst); before
                # session.start, one case a connection (its probe starts the session)
                for name, raw_doc in cases[index : index + (12 if started else 1)]:
                    index += 1

                    async def case(
                        seen: Seen,
                        raw_doc: str = raw_doc,
                        sock: RawSocket = sock,
                        started: bool = started,
                    ) -> None:
                        await sock.send(text(raw_doc))
                        await sock.probe(seen, started=started)

                    seen = await run_case(case)
                    if '"session.end"' in raw_doc:
                        seen.echoed_close = 1000  # a valid session.end is answered with 1000
                    tally.add(
                        f"{name} ({'started' if started else 'before start'})",
                        seen,
                        expect=errors_or_alive,
                    )
                    if not seen.alive:
                        break  # the session ended (session.end, a fatal error): a new one


# =========================================================================== unicode

UNICODE_VALUES = [
    "\\ud800", "\\udfff", "\\ud800\\ud800", "a\\udc00b", "\\u0000", "nul\\u0000in the middle",
    "\u202eevil\u202c", "\u200f\u200e\u2066x\u2069", "\ufeff", "\uffff\ufffe", "\U0010ffff",
    "e\u0301" * 500, "😀" * 300, "\u0000" * 100, "x" * 10_001, "y" * 200_000, "z" * 300_000,
    "\\u", "\\x41", "\\\\", "\t\n\r\x0b\x0c", "ｆｕｌｌｗｉｄｔｈ",
]  # fmt: skip


def _unicode_cases(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    for value in UNICODE_VALUES:
        escaped = value if "\\" in value else json.dumps(value, ensure_ascii=False)[1:-1]
        for template in (
            '{{"type": "text", "text": "{v}"}}',
            '{{"type": "ping", "id": "{v}"}}',
            '{{"type": "session.update", "config": {{"voice_id": "{v}"}}}}',
            '{{"type": "session.update", "config": {{"language": "{v}", "system_prompt": "{v}"}}}}',
            '{{"type": "tool.result", "call_id": "{v}"}}',
            '{{"type": "{v}"}}',
        ):
            if len(value) > 10_000 and rng.random() < 0.7:
                continue  # a few long ones are enough
            raw_doc = template.format(v=escaped)
            yield f"{template[10:24]} {value[:12]!r}", raw_doc.encode("utf-8", "surrogatepass")
    for raw_bytes in (b"\xc0\xaf", b"\xed\xa0\x80", b"\xef\xbf\xbf", b"\xf0\x9f\x98"):
        yield f"raw bytes {raw_bytes.hex()}", b'{"type":"text","text":"' + raw_bytes + b'"}'


async def test_fuzz_unicode(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    async with fuzz_server("unicode", caplog, capsys) as (server, tally):
        for name, payload in _unicode_cases(rng):

            async def case(seen: Seen, payload: bytes = payload) -> None:
                async with websocket(server) as sock:
                    await sock.send(mask_frame(0x1, payload))
                    await sock.probe(seen)

            try:
                payload.decode("utf-8")
                expect = errors_or_alive
            except UnicodeDecodeError:
                expect = closes(1007)
            tally.add(name, await run_case(case), expect=expect)


# =========================================================================== nesting


def _nested(rng: random.Random, depth: int) -> str:
    opens = "".join(rng.choice(["[", '{"k":']) for _ in range(depth))
    return (
        opens
        + "0"
        + "".join("]" if c == "[" else "}" for c in reversed(opens.replace('{"k":', "{")))
    )


async def test_fuzz_nesting(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    templates = [
        "{v}",
        '{{"type": "text", "text": {v}}}',
        '{{"type": "session.start", "protocol": 1, "config": {{"voice_id": {v}}}}}',
        '{{"type": "session.update", "config": {v}}}',
        '{{"type": "tool.result", "call_id": "c", "result": {v}}}',
        '{{"type": "nope", "x": {v}}}',
        '{{"type": "ping", "id": {v}}}',
    ]
    async with fuzz_server("nesting", caplog, capsys) as (server, tally):
        for depth in (64, 500, 1000, 5000, 40_000):
            for template in templates:
                doc = template.format(v=_nested(rng, depth))
                started = rng.random() < 0.5

                async def case(seen: Seen, doc: str = doc, started: bool = started) -> None:
                    async with websocket(server, start=started) as sock:
                        await sock.send(text(doc))
                        await sock.probe(seen, started=started)

                # tool.result's result is any JSON: shallow enough, the frame is valid (and
                # refused by the dialogue, tools_unavailable, maybe after the probe's pong)
                valid = depth < 1000 and "tool.result" in template
                tally.add(
                    f"depth {depth} in {template[:30]!r}",
                    await run_case(case),
                    expect=lambda s, valid=valid: (
                        (valid or bool(s.errors)) and (s.alive or s.close is not None)
                    ),
                )
        async with httpx.AsyncClient(base_url=server.url, timeout=CASE_TIMEOUT_S) as http:
            for depth in (1000, 10_000):
                for path in ("/v1/audio/speech", "/v1/session-tokens"):
                    body = '{"input": ' + _nested(rng, depth) + "}"
                    response = await http.post(
                        path,
                        content=body,
                        headers={
                            "Authorization": f"Bearer {KEY_ACME}",
                            "Content-Type": "application/json",
                        },
                    )
                    tally.add(f"POST {path} nested {depth}", Seen(status=response.status_code))


# =========================================================================== floods


async def test_fuzz_floods(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fuzz_server("floods", caplog, capsys) as (server, tally):

        async def pings(seen: Seen) -> None:  # past the control burst (200): 4429
            async with websocket(server) as sock:
                burst = b"".join(text({"type": "ping", "id": i}) for i in range(1000))
                await sock.send(burst)
                await sock.probe(seen)

        tally.add("1000 ping frames at once", await run_case(pings), expect=closes(4429))

        async def ws_pings(seen: Seen) -> None:  # WebSocket pings are answered, not counted
            async with websocket(server) as sock:
                await sock.send(b"".join(mask_frame(0x9, b"%d" % i) for i in range(2000)))
                await sock.probe(seen)

        tally.add("2000 WebSocket pings", await run_case(ws_pings), expect=lambda s: s.alive)

        async def audio(seen: Seen) -> None:  # past 120 s of audio at once: 4429
            async with websocket(server) as sock:
                chunk = mask_frame(0x2, bytes(64_000))
                for _ in range(70):
                    await sock.send(chunk)
                await sock.probe(seen)

        tally.add("140 s of audio at once", await run_case(audio), expect=closes(4429))

        async def fragments(seen: Seen) -> None:  # one message in 5000 fragments
            async with websocket(server) as sock:
                message = json.dumps({"type": "ping", "id": "fragmented"}).encode()
                message += b" " * (5000 - len(message))
                parts = [mask_frame(0x1, message[:1], fin=False)]
                parts += [mask_frame(0x0, message[i : i + 1], fin=False) for i in range(1, 4999)]
                parts.append(mask_frame(0x0, message[4999:]))
                await sock.send(b"".join(parts))
                await sock.watch(seen, probe="fragmented")

        tally.add(
            "one message in 5000 fragments", await run_case(fragments), expect=lambda s: s.alive
        )

        async def odd_audio(seen: Seen) -> None:
            async with websocket(server) as sock:
                await sock.send(b"".join(mask_frame(0x2, b"\x01" * 3) for _ in range(20)))
                await sock.probe(seen)

        tally.add("odd-length audio frames", await run_case(odd_audio), expect=errors_or_alive)

        async def idle(seen: Seen) -> None:  # connections that never send: closed in time
            host, port = _host_port(server)
            streams = [await trio.open_tcp_stream(host, port) for _ in range(40)]
            answers = set()
            for stream in streams:
                async with stream:
                    response = await RawSocket(stream).http_response()
                    answers.add(response[0] if response else None)
            # each one answered 408, or closed without a word: it said nothing wrong
            seen.status = max((a for a in answers if a is not None), default=None)
            seen.eof = None in answers

        tally.add(
            "40 idle connections", await run_case(idle), expect=lambda s: s.status in (408, None)
        )

        async def sessions(seen: Seen) -> None:  # many sessions opened at once
            async with trio.open_nursery() as nursery:
                for _ in range(30):
                    nursery.start_soon(_open_and_end, server)
            seen.alive = True

        tally.add("30 sessions at once", await run_case(sessions), expect=lambda s: s.alive)


async def _open_and_end(server: RunningServer) -> None:
    async with websocket(server) as sock:
        await sock.send(text({"type": "session.end"}))
        seen = Seen()
        await sock.watch(seen)
        assert seen.close == 1000, seen


# =========================================================================== http


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


LENIENT = {
    # OpenAI-compatible: the speech endpoint reads its body as JSON whatever the declared type
    # (curl -d sends application/x-www-form-urlencoded), so this request is served.
    "speech: form content type": "200 by design",
}


def _http_cases(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    auth = f"Authorization: Bearer {KEY_ACME}\r\n"

    def request(
        method: str, path: str, body: bytes = b"", headers: str = "", *, length: bool = True
    ) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n{headers}"
        if length:
            head += f"Content-Length: {len(body)}\r\n"
        return head.encode("latin-1") + b"\r\n" + body

    transcriptions = "/v1/audio/transcriptions"
    good_form = _multipart(
        "b0undary", [("file", "a.wav", rng.randbytes(200)), ("model", None, b"whisper-1")]
    )
    yield "form: no content type", request("POST", transcriptions, good_form, auth)
    yield (
        "form: text/plain",
        request("POST", transcriptions, good_form, auth + "Content-Type: text/plain\r\n"),
    )
    yield (
        "form: no boundary",
        request("POST", transcriptions, good_form, auth + "Content-Type: multipart/form-data\r\n"),
    )
    yield (
        "form: wrong boundary",
        request(
            "POST",
            transcriptions,
            good_form,
            auth + "Content-Type: multipart/form-data; boundary=other\r\n",
        ),
    )
    yield (
        "form: garbage audio",
        request(
            "POST",
            transcriptions,
            good_form,
            auth + "Content-Type: multipart/form-data; boundary=b0undary\r\n",
        ),
    )
    yield (
        "form: no file",
        request(
            "POST",
            transcriptions,
            _multipart("b", [("model", None, b"x")]),
            auth + "Content-Type: multipart/form-data; boundary=b\r\n",
        ),
    )
    yield (
        "form: truncated",
        request(
            "POST",
            transcriptions,
            good_form[: len(good_form) // 2],
            auth + "Content-Type: multipart/form-data; boundary=b0undary\r\n",
        ),
    )
    yield (
        "form: header line of 20 KB",
        request(
            "POST",
            transcriptions,
            b"--b\r\nX: " + b"y" * 20_000 + b"\r\n\r\nz\r\n--b--\r\n",
            auth + "Content-Type: multipart/form-data; boundary=b\r\n",
        ),
    )
    yield (
        "form: json",
        request(
            "POST", transcriptions, b'{"file": 1}', auth + "Content-Type: application/json\r\n"
        ),
    )
    for i in range(20):
        junk = rng.randbytes(rng.randrange(10, 2000))
        yield (
            f"form: random body #{i}",
            request(
                "POST",
                transcriptions,
                junk,
                auth + "Content-Type: multipart/form-data; boundary=b\r\n",
            ),
        )
    speech = "/v1/audio/speech"
    for body in (b"", b"{", b"[]", b'{"input": 5}', b'{"input": ""}', b'{"input": "hi", "speed": "fast"}',
                 b'{"input": "hi", "response_format": "exe"}', b'{"input": "hi", "voice": []}',
                 b'{"input": "hi", "voice": "no:such"}', b'{"input": "' + b"x" * 5001 + b'"}',
                 b'{"input": "\\ud800"}', b"\xff\xfe", b'{"input": "hi", "speed": 1e999}'):  # fmt: skip
        yield (
            f"speech: {body[:24]!r}",
            request("POST", speech, body, auth + "Content-Type: application/json\r\n"),
        )
    yield (
        "speech: form content type",
        request("POST", speech, b'{"input": "hi"}', auth + "Content-Type: multipart/form-data\r\n"),
    )
    tokens = "/v1/session-tokens"
    for body, ctype in ((b'{"ttl_s": -1}', "application/json"), (b"ttl_s=5", "application/x-www-form-urlencoded"),
                        (b"\x00\x01", "application/json"), (b'{"ttl_s": 5}', "text/html")):  # fmt: skip
        yield (
            f"tokens: {body[:16]!r} as {ctype}",
            request("POST", tokens, body, auth + f"Content-Type: {ctype}\r\n"),
        )
    for header in ("Authorization: Bearer\r\n", "Authorization: Basic Zm9vOmJhcg==\r\n",
                   "Authorization: Bearer " + "k" * 8000 + "\r\n", "Authorization: Bearer \xe9\xff\r\n",
                   "Authorization: bearer  sk-nope  \r\n"):  # fmt: skip
        yield f"voices: {header[:30]!r}", request("GET", "/v1/voices", headers=header, length=False)
    yield "voices: ?token=", request("GET", "/v1/voices?token=sv1.a.b", length=False)
    yield (
        "admin: ../",
        request("GET", "/v1/admin/sessions/../../etc/passwd", headers=auth, length=False),
    )
    yield (
        "admin: bad status",
        request("GET", "/v1/admin/sessions?status=%FF%00", headers=auth, length=False),
    )
    yield "no such path", request("GET", "/v1/%00%ff", length=False)
    yield "wrong method", request("PUT", "/v1/voices", b"x", auth)
    yield (
        "head of 70 KiB",
        request("GET", "/health", headers="X-Big: " + "x" * 70_000 + "\r\n", length=False),
    )
    yield "URL of 70 KiB", request("GET", "/health?" + "a" * 70_000, length=False)
    yield "header without colon", b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"
    yield (
        "two content lengths",
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    )
    yield (
        "bad chunk size",
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    yield (
        "length and chunked",
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    yield (
        "body shorter than its length",
        request("POST", speech, b'{"in', auth + "Content-Length: 500\r\n", length=False),
    )
    yield "bad method token", b"G\x00T /health HTTP/1.1\r\nHost: x\r\n\r\n"
    yield "HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    yield "HTTP/1.1 without Host", b"GET /health HTTP/1.1\r\n\r\n"
    yield "absolute URL", b"GET http://evil.example/health HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(30):
        yield f"random head #{i}", rng.randbytes(rng.randrange(1, 200)) + b"\r\n\r\n"


async def test_fuzz_http(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    async with fuzz_server("http", caplog, capsys) as (server, tally):
        for name, data in _http_cases(rng):

            async def case(seen: Seen, data: bytes = data) -> None:
                async with raw(server) as sock:
                    try:
                        await sock.send(data)
                    except trio.BrokenResourceError:
                        pass  # the server answered and closed before it took all of it
                    response = await sock.http_response()
                    if response is None:
                        seen.eof = True
                        return
                    seen.status = response[0]

            seen = await run_case(case)
            seen.served_by_design = name in LENIENT and seen.status == 200
            tally.add(name, seen, expect=lambda s: s.status is not None)
