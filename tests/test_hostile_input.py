"""Hostile input, finding by finding: fail-fast UTF-8 in the WebSocket codec, deeply nested JSON,
single-use and revocable session tokens with a requested lifetime, unique key ids."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from scaivoice.engine import Principal, ProtocolViolation, Unauthorized, config_from_mapping
from scaivoice.engine._host.auth import MAX_TOKEN_TTL_S, Authenticator, create_key, revoke_key
from scaivoice.engine._server.websocket import WebSocketCodec, WebSocketProtocolError
from scaivoice.engine.cli import main as cli_main
from scaivoice.engine.client import connect
from scaivoice.engine.frames import decode_client_frame
from scaivoice.engine.testing import test_engine_config

from .conftest import open_session
from .test_server import KEY_ACME, TENANTS, _close_of, running_server
from .test_websocket import client_frame, events

TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0
MASK = b"\x37\xfa\x21\x3d"

# =============================================================================== 1. UTF-8, fail fast


def _codec() -> WebSocketCodec:
    return WebSocketCodec(max_message_bytes=1 << 20)


@pytest.mark.parametrize(
    "bad",
    [
        b"\xf4\x90\x80\x80",  # U+110000: past Unicode (Autobahn 6.4.2)
        b"\xed\xa0\x80",  # a UTF-16 surrogate
        b"\xc0\xaf",  # an overlong '/'
        b"\xff",
    ],
)
def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends(bad: bytes) -> None:
    codec = _codec()
    assert events(codec, client_frame(TEXT, "κόσμε".encode(), fin=False)) == []
    with pytest.raises(WebSocketProtocolError) as error:
        events(codec, client_frame(CONTINUATION, b"ok " + bad, fin=False))
    assert error.value.close_code == 1007
    assert events(codec, client_frame(CONTINUATION, b"the rest")) == []  # it takes no more


@pytest.mark.parametrize("bad", [b"\xf4\x90", b"\xed\xa0", b"\xe0\x80", b"\xfe"])
def test_invalid_utf8_in_a_frame_arriving_in_pieces_fails_at_the_bad_piece(bad: bytes) -> None:
    """Autobahn 6.4.3 / 6.4.4: one frame, sent in chops; the bad chop fails it, before the
    frame's last byte is there (here the bad bytes are an unfinished sequence's prefix)."""
    payload = "κόσμε".encode() + bad + b"\x80\x80 and more text after it"
    frame = client_frame(TEXT, payload, mask=MASK)
    header = len(frame) - len(payload)
    first_chop = header + 5  # the header and a valid start ("κόσ" cut inside a character)
    codec = _codec()
    assert events(codec, frame[:first_chop]) == []
    with pytest.raises(WebSocketProtocolError) as error:
        events(codec, frame[first_chop : header + len("κόσμε".encode()) + len(bad)])
    assert error.value.close_code == 1007


def test_valid_text_cut_anywhere_arrives_whole() -> None:
    """Fragments and chops at every byte offset, inside characters and inside the mask's
    period, give back the text (and binary messages are left alone)."""
    text = "a κόσμε 😀 ש ‮ end"
    data = text.encode()
    for cut in range(len(data) + 1):
        codec = _codec()
        stream = client_frame(TEXT, data[:cut], fin=False, mask=MASK) + client_frame(
            CONTINUATION, data[cut:], mask=MASK
        )
        received: list[Any] = []
        for start in range(0, len(stream), 3):
            received += events(codec, stream[start : start + 3])
        assert received == [text]
    codec = _codec()
    binary = client_frame(BINARY, b"\xff\xfe", fin=False) + client_frame(CONTINUATION, b"\xed")
    assert events(codec, binary) == [b"\xff\xfe\xed"]


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        (0x83, 0x80 | 100, "unknown opcode"),  # a reserved data opcode, 100 bytes announced
        (0x8B, 0x80 | 10, "unknown opcode"),  # a reserved control opcode
        (0x80, 0x80 | 100, "nothing to continue"),  # a continuation, no message open
    ],
)
def test_frame_errors_fail_from_the_header_alone(first: int, second: int, why: str) -> None:
    codec = _codec()
    with pytest.raises(WebSocketProtocolError, match=why) as error:
        events(codec, bytes((first, second)) + MASK)  # no payload byte yet
    assert error.value.close_code == 1002


def test_a_new_message_inside_a_fragmented_one_fails_from_its_header() -> None:
    codec = _codec()
    assert events(codec, client_frame(TEXT, b"part", fin=False)) == []
    with pytest.raises(WebSocketProtocolError, match="before the last one ended"):
        events(codec, bytes((0x81, 0x80 | 50)) + MASK)


# =============================================================================== 2. deep nesting


def _nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize(
    "template",
    [
        "{nested}",
        '{{"type": "text", "text": {nested}}}',
        '{{"type": "session.start", "protocol": 1, "config": {{"voice_id": {nested}}}}}',
        '{{"type": "no.such.type", "x": {nested}}}',
        '{{"type": "tool.result", "call_id": "c1", "result": {nested}}}',
        '{{"type": "ping", "id": {nested}}}',
    ],
)
def test_deeply_nested_json_is_an_invalid_frame_not_a_crash(template: str, depth: int) -> None:
    with pytest.raises(ProtocolViolation) as error:
        decode_client_frame(template.format(nested=_nested(depth)))
    assert error.value.code == "invalid_frame"
    assert not error.value.fatal


async def test_a_2kb_frame_nested_1000_deep_gets_an_error_and_the_session_goes_on() -> None:
    deep = _nested(1000)
    assert len(deep) == 2000
    with trio.fail_after(10):
        async with open_session() as client:
            await client.send_raw(deep)  # before session.start
            error = await client.receive_frame()
            assert (error.__struct_config__.tag, error.code) == ("error", "invalid_frame")
            started = await client.start()
            assert started.__struct_config__.tag == "session.started"
            await client.send_raw(deep)  # and during the session
            seen = await client.receive_until("error")
            assert seen[-1].code == "invalid_frame"  # type: ignore[union-attr]
            await client.send_json({"type": "ping", "id": 7})
            await client.receive_until("pong", id=7)


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/v1/audio/speech", {"content-type": "application/json"}, _nested(100_000)),
        ("/v1/session-tokens", {"content-type": "application/json"}, _nested(20_000)),
        (
            "/v1/session-tokens",
            {"content-type": "application/json"},
            '{"ttl_s": ' + _nested(20_000) + "}",
        ),
    ],
)
async def test_deeply_nested_json_bodies_are_400_problems(
    path: str, headers: dict[str, str], body: str
) -> None:
    async with running_server(TENANTS) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            with trio.fail_after(10):
                response = await http.post(
                    path,
                    content=body,
                    headers={"Authorization": f"Bearer {KEY_ACME}", **headers},
                )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] in ("invalid_json", "invalid_request")


@pytest.mark.parametrize("frame_type", [[], ["text"], {}, {"a": 1}, 1, None, True])
def test_a_type_that_is_not_a_string_is_an_unknown_type(frame_type: Any) -> None:
    """Found by the fuzzer: a list or object as ``type`` crashed the session (unhashable)."""
    with pytest.raises(ProtocolViolation) as error:
        decode_client_frame(json.dumps({"type": frame_type, "x": 1}))
    assert error.value.code == "unknown_type"


async def test_speech_input_with_an_escaped_lone_surrogate_is_a_400() -> None:
    """Found by the fuzzer: JSON may escape a lone surrogate, which is no text (it was a 500)."""
    async with running_server(TENANTS) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            with trio.fail_after(10):
                response = await http.post(
                    "/v1/audio/speech",
                    content=b'{"input": "a\\ud800b"}',
                    headers={"Authorization": f"Bearer {KEY_ACME}"},
                )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


# =============================================================================== 3. session tokens


async def _mint(
    http: httpx.AsyncClient,
    key: str = KEY_ACME,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    fields = {"Authorization": f"Bearer {key}", **(headers or {})}
    return await http.post("/v1/session-tokens", headers=fields, **kwargs)


async def test_a_session_token_opens_one_session_only() -> None:
    async with running_server(TENANTS) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            token = (await _mint(http)).json()["token"]
        with trio.fail_after(10):
            async with connect(server.ws_url, token=token) as session:
                assert session.started is not None
                # a second session while the first is open, and after it
                assert await _close_of(server.ws_url, token=token) == (4401, "token_used")
        assert await _close_of(server.ws_url, token=token) == (4401, "token_used")


async def test_a_token_refused_for_a_limit_is_not_used_up() -> None:
    limited = {**TENANTS, "tenants": {**TENANTS["tenants"]}}
    limited["tenants"]["acme"] = {**TENANTS["tenants"]["acme"], "limits": {"max_sessions": 1}}
    async with running_server(limited) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            first, second = [(await _mint(http)).json()["token"] for _ in range(2)]
        with trio.fail_after(10):
            async with connect(server.ws_url, token=first):
                assert await _close_of(server.ws_url, token=second) == (4429, "too_many_sessions")
            async with connect(server.ws_url, token=second) as session:  # still good
                assert session.started is not None


async def test_revoking_the_minting_key_refuses_its_tokens(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    key = create_key(keys, tenant="initech", roles=["user"], key_id="k1", now=time.time())
    async with running_server({"auth": {"keys_file": str(keys)}}) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            used, unused = [(await _mint(http, key)).json()["token"] for _ in range(2)]
        with trio.fail_after(10):
            async with connect(server.ws_url, token=used) as session:
                assert session.started is not None
        revoke_key(keys, "k1", now=time.time())
        assert await _close_of(server.ws_url, token=unused) == (4401, "token_revoked")


async def test_ttl_s_sets_the_lifetime_up_to_the_maximum() -> None:
    async with running_server(TENANTS) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            default = await _mint(http)
            short = await _mint(http, json={"ttl_s": 5})
            long = await _mint(http, json={"ttl_s": 10 * MAX_TOKEN_TTL_S})
    assert default.status_code == short.status_code == long.status_code == 201
    assert default.json()["expires_in"] == 60.0  # [auth] token_ttl_s
    assert short.json()["expires_in"] == 5
    assert short.json()["expires_at"] == pytest.approx(time.time() + 5, abs=3)
    assert long.json()["expires_in"] == MAX_TOKEN_TTL_S


def test_a_token_expires_after_its_requested_lifetime() -> None:
    now = [1000.0]
    auth = Authenticator(config_from_mapping(test_engine_config(TENANTS)), clock=lambda: now[0])
    principal = Principal("acme", "acme-1", frozenset({"scaivoice:use"}))
    token, expires_at = auth.mint_session_token(principal, ttl_s=5)
    assert expires_at == 1005.0
    now[0] = 1004.9
    assert auth.authenticate_token(token) == principal
    now[0] = 1005.0
    with pytest.raises(Unauthorized) as error:
        auth.authenticate_token(token)
    assert error.value.code == "token_expired"
    with pytest.raises(ValueError, match="positive"):
        auth.mint_session_token(principal, ttl_s=0)


def test_used_tokens_are_forgotten_once_they_expire() -> None:
    now = [0.0]
    auth = Authenticator(config_from_mapping(test_engine_config(TENANTS)), clock=lambda: now[0])
    principal = Principal("acme", "acme-1", frozenset({"scaivoice:use"}))
    for _ in range(100):
        token, _ = auth.mint_session_token(principal, ttl_s=10)
        auth.consume_session_token(token)
        with pytest.raises(Unauthorized, match="already used"):
            auth.consume_session_token(token)
        now[0] += 1
    assert len(auth._used_tokens) <= 11  # only the unexpired ones are remembered


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"ttl_s": 0}', "application/json", 400, "invalid_request"),
        ('{"ttl_s": -5}', "application/json", 400, "invalid_request"),
        ('{"ttl_s": "60"}', "application/json", 400, "invalid_request"),
        ('{"ttl_s": true}', "application/json", 400, "invalid_request"),
        ('{"ttl_s": 1e999}', "application/json", 400, "invalid_request"),
        ('{"ttl": 60}', "application/json", 400, "invalid_request"),
        ("[60]", "application/json", 400, "invalid_request"),
        ('{"ttl_s": ', "application/json", 400, "invalid_json"),
        ('{"ttl_s": 60}', "text/plain", 415, "unsupported_media_type"),
        ("ttl_s=60", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
async def test_bad_mint_requests_are_problems(
    body: str, content_type: str, status: int, code: str
) -> None:
    async with running_server(TENANTS) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await _mint(http, content=body, headers={"content-type": content_type})
            # the same connection still works: a good request after the bad one
            good = await _mint(http, json={"ttl_s": 30})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert good.status_code == 201


async def test_session_tokens_do_not_open_the_http_api() -> None:
    async with running_server(TENANTS) as (server, _):
        async with httpx.AsyncClient(base_url=server.url) as http:
            token = (await _mint(http)).json()["token"]
            response = await http.get("/v1/voices", params={"token": token})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert "sessions only" in response.json()["detail"]


@pytest.mark.parametrize(
    "token",
    ["sv1.é.ü", "sv1." + "a" * 5000 + ".b", "sv1..", "...", "sv1.e30.", "\x00"],
)
def test_garbled_tokens_are_unauthorized(token: str) -> None:
    auth = Authenticator(config_from_mapping(test_engine_config(TENANTS)), clock=time.time)
    with pytest.raises(Unauthorized) as error:
        auth.authenticate_token(token)
    assert error.value.code == "unauthorized"


# =============================================================================== 4. key ids


def test_keys_created_within_one_second_get_distinct_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    for _ in range(3):
        assert cli_main(["keys", "create", "--file", str(keys), "--tenant", "acme"]) == 0
    ids = [entry["id"] for entry in json.loads(keys.read_text())["keys"]]
    assert len(set(ids)) == 3
    assert all(key_id.startswith("acme-") for key_id in ids)
    assert cli_main(["keys", "new", "--tenant", "acme"]) == 0
    assert cli_main(["keys", "new", "--tenant", "acme"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("id = ")]
    assert len(printed) == 2 and printed[0] != printed[1]
