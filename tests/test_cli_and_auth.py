"""The command line, credentials and structured logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import tomllib

import pytest
import trio

from scaivoice.engine import (
    ConfigError,
    Forbidden,
    Principal,
    Unauthorized,
    config_from_mapping,
    hash_key,
    load_config,
)
from scaivoice.engine._host.auth import Authenticator
from scaivoice.engine._host.logs import configure_logging
from scaivoice.engine.testing import memory_transport_pair, open_test_engine, run_memory_session


def _scaivoice(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaivoice.engine.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_plugins_lists_backends_with_capabilities_and_distributions() -> None:
    result = _scaivoice("plugins", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backends"]["tts"]["test-tts"]["capabilities"]["speed"] is True
    names = {p["name"]: p["distribution"] for p in report["plugins"]}
    assert names["builtin-test-backends"] == "scaivoice"
    assert report["failures"] == []


def test_keys_new_prints_a_config_block_holding_only_the_hash() -> None:
    result = _scaivoice("keys", "new", "--tenant", "acme", "--role", "admin", "--id", "k1")
    assert result.returncode == 0
    key = result.stderr.split(": ")[-1].strip()
    block = tomllib.loads(result.stdout)
    entry = block["tenants"]["acme"]["keys"][0]
    assert entry == {"id": "k1", "hash": hash_key(key), "roles": ["admin"]}
    assert key not in result.stdout
    config = config_from_mapping(block)
    principal = Authenticator(config, clock=time.time).authenticate_key(key)
    assert principal.tenant == "acme" and "scaivoice:admin" in principal.permissions


def test_serve_reports_configuration_errors_plainly(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    result = _scaivoice("serve", "--config", str(bad))
    assert result.returncode == 2
    assert "prot" in result.stderr and "Traceback" not in result.stderr
    result = _scaivoice("serve", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "not found" in result.stderr


def test_unknown_backends_are_a_clear_start_up_error(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[backends]\nstt = "nope"\nllm = "test-llm"\ntts = "test-tts"\n')
    result = _scaivoice("serve", "--config", str(config), "--port", "0")
    assert result.returncode == 2
    assert "no stt backend named 'nope'" in result.stderr


def _auth(**auth: object) -> Authenticator:
    config = config_from_mapping(
        {
            "auth": {"token_secret": "s", **auth},
            "tenants": {"t": {"keys": [{"id": "k", "hash": hash_key("secret-key")}]}},
        }
    )
    return Authenticator(config, clock=time.time)


def test_tokens_are_bound_to_their_tenant_and_cannot_be_altered() -> None:
    auth = _auth()
    token, _ = auth.mint_session_token(Principal("t", "k", frozenset({"scaivoice:use"})))
    assert auth.authenticate_token(token).tenant == "t"
    prefix, body, mac = token.split(".")
    forged_body = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(Unauthorized):
        auth.authenticate_token(f"{prefix}.{forged_body}.{mac}")
    other_secret = config_from_mapping({"auth": {"token_secret": "other"}})
    with pytest.raises(Unauthorized):
        Authenticator(other_secret, clock=time.time).authenticate_token(token)


def test_api_keys_and_permissions() -> None:
    auth = _auth()
    assert auth.authenticate_key("secret-key").permissions == frozenset({"scaivoice:use"})
    with pytest.raises(Unauthorized):
        auth.authenticate_key("secret-key ")
    with pytest.raises(Unauthorized):
        auth.authenticate_key(None)
    with pytest.raises(Forbidden):
        auth.authenticate_key("secret-key").require("scaivoice:admin")


@pytest.mark.parametrize(
    "tenants",
    [
        {"t": {"keys": [{"id": "k", "hash": "md5:abc"}]}},
        {"t": {"keys": [{"id": "k", "hash": "sha256:" + "zz" * 32}]}},
        {"t": {"keys": [{"id": "k", "hash": hash_key("x"), "roles": ["wizard"]}]}},
    ],
)
def test_bad_key_configuration_is_a_config_error(tenants: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Authenticator(config_from_mapping({"tenants": tenants}), clock=time.time)


def test_config_files_are_validated(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[session]\naudio_lead_ms = "soon"\n')
    with pytest.raises(ConfigError, match="audio_lead_ms"):
        load_config(path)
    path.write_text("[session\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    path.write_text('[server]\nport = 9000\n[defaults]\nvoice_id = "x:y"\n')
    config = load_config(path, {"server": {"host": "::1"}})
    assert (config.server.host, config.server.port) == ("::1", 9000)
    assert config.session_defaults(None).voice_id == "x:y"


async def test_json_logs_carry_the_session_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", logging.INFO)
    async with open_test_engine() as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            started = await client.start()
            await client.send_json({"type": "session.end"})
            await transport.closed.wait()
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    mine = [r for r in records if r["session_id"] == started.session_id]
    assert any("session opened" in r["message"] for r in mine)
    assert any("session ended" in r["message"] for r in mine)
    logging.getLogger("scaivoice").handlers.clear()
    logging.getLogger("scaivoice").propagate = True
