"""MCP, both directions: tools from MCP servers ([tools.mcp.NAME]) and `scaivoice mcp`.

The MCP server the provider talks to is tests/mcp_servers/tools_server.py, written with the
official SDK's server API and started as a real subprocess: over stdio, and over streamable HTTP
on a free loopback port.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp import types as mcp_types

from scaivoice.engine import (
    BackendUnavailable,
    ConfigError,
    ToolContext,
    ToolFailed,
    ToolSpec,
)
from scaivoice.engine._contract.tools import TOOL_NAME_PATTERN
from scaivoice.engine._host.config import McpServerConfig, config_from_mapping
from scaivoice.engine._host.mcp_tools import McpToolProvider, result_value
from scaivoice.engine._voicenotes.mcp_server import SYNTHESIS_UNAVAILABLE, serve_mcp

from .conftest import host_with

HERE = Path(__file__).resolve().parent
TOOLS_SERVER = HERE / "mcp_servers" / "tools_server.py"
CONTEXT = ToolContext(tenant="default", session_id="s1", turn_id=1, call_id="c1")


# --------------------------------------------------------------------------- servers


async def _start_http_server(port: int = 0) -> tuple[trio.Process, int]:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(TOOLS_SERVER), "--http", "--port", str(port)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(64)
            assert chunk, "the MCP test server exited before it listened"
            line += chunk
    return process, int(line)


async def _stop(process: trio.Process) -> None:
    process.kill()
    with trio.CancelScope(shield=True):
        await process.wait()


class HttpServer:
    """The test MCP server over streamable HTTP, which a test may kill and start again."""

    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def restart(self) -> None:
        await _stop(self.process)
        self.process, _ = await _start_http_server(self.port)


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    process, port = await _start_http_server()
    server = HttpServer(process, port)
    try:
        yield server
    finally:
        await _stop(server.process)


@pytest.fixture(params=["stdio", "http", "stdio-2025", "http-2025"])
async def mcp_provider(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., McpToolProvider]]:
    """Makes providers of the test server over stdio or streamable HTTP, asking for the 2026
    protocol (as the SDK prefers) or the 2025 handshake (``initialize``, ``ping``,
    ``notifications/tools/list_changed``) that most servers in use speak.

    ``mcp_provider(name="t", **options)``: ``options`` are the ``[tools.mcp.NAME]`` table's.
    """
    transport, _, era = request.param.partition("-")
    protocol: Literal["auto", "legacy"] = "legacy" if era else "auto"
    if transport == "stdio":
        where: dict[str, Any] = {"command": [sys.executable, str(TOOLS_SERVER)]}
        process = None
    else:
        process, port = await _start_http_server()
        where = {"url": f"http://127.0.0.1:{port}/mcp"}

    def make(name: str = "t", **options: Any) -> McpToolProvider:
        return _provider(McpServerConfig(**where, **options), name, protocol=protocol)

    try:
        yield make
    finally:
        if process is not None:
            await _stop(process)


def _provider(
    config: McpServerConfig, name: str = "t", *, protocol: Literal["auto", "legacy"] = "auto"
) -> McpToolProvider:
    return McpToolProvider(name, config, default_timeout_s=7.0, protocol=protocol)


def _specs(tools: Any) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in tools}


async def _timed(call: Awaitable[Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = await call
    return value, time.perf_counter() - started


# --------------------------------------------------------------------------- the provider


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(90)
async def test_lists_and_calls_the_servers_tools(
    mcp_provider: Callable[..., McpToolProvider],
) -> None:
    async with mcp_provider() as provider:
        legacy = provider.protocol == "legacy"
        assert provider.protocol_version == ("2025-11-25" if legacy else "2026-07-28")
        specs = _specs(await provider.list_tools())
        assert {"t_add", "t_echo", "t_weather", "t_fail", "t_picture", "t_slow"} <= set(specs)
        assert all(TOOL_NAME_PATTERN.match(name) for name in specs)
        add = specs["t_add"]
        assert add.description == "Add two integers."
        assert add.parameters["required"] == ["a", "b"]
        assert add.parameters["properties"]["a"]["type"] == "integer"
        assert add.timeout_s == 7.0

        assert await add.handler({"a": 2, "b": 3}, CONTEXT) == {"result": 5}
        assert await specs["t_echo"].handler({"text": "hi", "times": 2}, CONTEXT) == {
            "result": "hi hi"
        }
        weather = await specs["t_weather"].handler({"city": "Oslo"}, CONTEXT)
        assert weather == {"city": "Oslo", "sky": "sunny", "celsius": 21}
        picture = await specs["t_picture"].handler({}, CONTEXT)
        assert picture == "[image: image/png]\n\na single pixel"

        _, seconds = await _timed(add.handler({"a": 1, "b": 1}, CONTEXT))
        assert seconds < 1.0
        await provider.check_health()


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(90)
async def test_a_tool_that_fails_is_tool_failed(
    mcp_provider: Callable[..., McpToolProvider],
) -> None:
    async with mcp_provider() as provider:
        specs = _specs(await provider.list_tools())
        with pytest.raises(ToolFailed) as failed:
            await specs["t_fail"].handler({"message": "the lights are out"}, CONTEXT)
        assert failed.value.code == "tool_failed"
        assert "the lights are out" in str(failed.value)
        # the session goes on: the next call works
        assert await specs["t_add"].handler({"a": 1, "b": 2}, CONTEXT) == {"result": 3}


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(90)
async def test_a_cancelled_call_returns_at_once_and_is_cancelled_on_the_server(
    mcp_provider: Callable[..., McpToolProvider],
) -> None:
    async with mcp_provider() as provider:
        specs = _specs(await provider.list_tools())
        started = time.perf_counter()
        with trio.move_on_after(0.3) as scope:
            await specs["t_slow"].handler({"seconds": 60}, CONTEXT)
        assert scope.cancelled_caught
        assert time.perf_counter() - started < 1.5
        # the server saw the cancellation (notifications/cancelled, or the aborted HTTP request)
        assert await specs["t_wait_cancelled"].handler({"timeout_s": 10}, CONTEXT) == {
            "result": True
        }


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(90)
async def test_the_stdio_server_dying_mid_call_is_tool_server_unavailable_then_it_is_restarted() -> (
    None
):
    async with _provider(McpServerConfig(command=[sys.executable, str(TOOLS_SERVER)])) as provider:
        specs = _specs(await provider.list_tools())
        first_pid = await specs["t_pid"].handler({}, CONTEXT)
        with trio.fail_after(2):
            with pytest.raises(ToolFailed) as failed:
                await specs["t_crash"].handler({}, CONTEXT)
        assert failed.value.code == "tool_server_unavailable"
        with pytest.raises(BackendUnavailable):
            await provider.check_health()
        with pytest.raises(BackendUnavailable):
            await provider.list_tools()
        with pytest.raises(ToolFailed) as again:
            await specs["t_add"].handler({"a": 1, "b": 1}, CONTEXT)
        assert again.value.code == "tool_server_unavailable"

        # the provider starts the server again by itself (after a backoff of about a second);
        # the specs handed out before keep working
        with trio.fail_after(30):
            await provider.wait_connected()
        await provider.check_health()
        assert await specs["t_pid"].handler({}, CONTEXT) != first_pid
        assert await specs["t_add"].handler({"a": 1, "b": 1}, CONTEXT) == {"result": 2}


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(90)
async def test_the_http_server_dying_mid_call_is_tool_server_unavailable_then_it_recovers(
    http_server: HttpServer,
) -> None:
    async with _provider(McpServerConfig(url=http_server.url)) as provider:
        specs = _specs(await provider.list_tools())
        with trio.fail_after(2):
            with pytest.raises(ToolFailed) as failed:
                await specs["t_crash"].handler({}, CONTEXT)
        assert failed.value.code == "tool_server_unavailable"
        with pytest.raises(BackendUnavailable):
            await provider.check_health()

        await http_server.restart()
        with trio.fail_after(30):
            await provider.wait_connected()
        assert await specs["t_add"].handler({"a": 2, "b": 2}, CONTEXT) == {"result": 4}


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(90)
async def test_the_prefix_and_the_tools_filter(
    mcp_provider: Callable[..., McpToolProvider],
) -> None:
    async with mcp_provider("home", prefix="", tools=["a*", "e*", "bad*"]) as provider:
        assert sorted(_specs(await provider.list_tools())) == ["add", "bad_name_", "echo"]
    async with mcp_provider(prefix="lights-", tools=["add"]) as provider:
        specs = _specs(await provider.list_tools())
        assert list(specs) == ["lights-add"]
        assert await specs["lights-add"].handler({"a": 4, "b": 5}, CONTEXT) == {"result": 9}
    async with mcp_provider("home", call_timeout_s=2.5) as provider:
        specs = _specs(await provider.list_tools())
        assert "home_add" in specs
        assert {spec.timeout_s for spec in specs.values()} == {2.5}


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(90)
async def test_the_tools_are_listed_again_when_the_server_says_they_changed(
    mcp_provider: Callable[..., McpToolProvider],
) -> None:
    async with mcp_provider() as provider:
        specs = _specs(await provider.list_tools())
        assert "t_extra" not in specs
        await specs["t_grow"].handler({}, CONTEXT)
        with trio.fail_after(10):
            while "t_extra" not in _specs(await provider.list_tools()):
                await provider.wait_changed()
        extra = _specs(await provider.list_tools())["t_extra"]
        assert await extra.handler({}, CONTEXT) == "extra!"


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(60)
async def test_a_server_that_cannot_start_or_be_reached_is_unavailable() -> None:
    missing = McpToolProvider(
        "gone", McpServerConfig(command=["/nonexistent/mcp-server"]), default_timeout_s=5
    )
    with pytest.raises(BackendUnavailable, match="not found"):
        await missing.open()
    await missing.aclose()

    exits = McpToolProvider(
        "exits", McpServerConfig(command=[sys.executable, "-c", "pass"]), default_timeout_s=5
    )
    with trio.fail_after(20), pytest.raises(BackendUnavailable):
        await exits.open()
    await exits.aclose()

    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = McpToolProvider(
        "closed", McpServerConfig(url=f"http://127.0.0.1:{port}/mcp"), default_timeout_s=5
    )
    with trio.fail_after(10), pytest.raises(BackendUnavailable):
        await closed.open()
    with pytest.raises(BackendUnavailable):
        await closed.list_tools()
    await closed.aclose()


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(60)
async def test_closing_stops_the_stdio_server_and_fails_calls_in_flight() -> None:
    provider = _provider(McpServerConfig(command=[sys.executable, str(TOOLS_SERVER)]))
    await provider.open()
    specs = _specs(await provider.list_tools())
    pid = (await specs["t_pid"].handler({}, CONTEXT))["result"]
    outcome: list[BaseException] = []

    async def slow_call() -> None:
        try:
            await specs["t_slow"].handler({"seconds": 60}, CONTEXT)
        except ToolFailed as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_call)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            await provider.aclose()
    assert [getattr(e, "code", None) for e in outcome] == ["tool_server_unavailable"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(BackendUnavailable):
        await provider.list_tools()
    await provider.aclose()  # idempotent


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(30)
async def test_open_and_aclose_from_one_task_within_other_cancel_scopes() -> None:
    """As the engine's keeper does: open, then close inside a shielded scope of its own."""
    provider = _provider(McpServerConfig(command=[sys.executable, str(TOOLS_SERVER)]))
    with trio.CancelScope():
        await provider.open()
    with trio.move_on_after(5):
        assert await provider.list_tools()
    with trio.CancelScope(shield=True):
        await provider.aclose()


# --------------------------------------------------------------------------- without a server


def test_tools_a_model_cannot_call_are_renamed_or_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = _provider(McpServerConfig(url="http://127.0.0.1:9/mcp"), name="srv")
    obj = {"type": "object", "properties": {"q": {"type": "string"}}}
    tools = [
        mcp_types.Tool(name="search.web", description="Search.", input_schema=obj),
        mcp_types.Tool(name="search_web", description="Clash.", input_schema=obj),
        mcp_types.Tool(name="x" * 70, description="Too long.", input_schema=obj),
        mcp_types.Tool(
            name="broken",
            description="Bad schema.",
            input_schema={"type": "object", "properties": {"q": {"type": 7}}},
        ),
        mcp_types.Tool(name="untyped", input_schema={"properties": {}}),
    ]
    with caplog.at_level(logging.INFO, logger="scaivoice.tools"):
        specs = _specs(provider.tool_specs(tools))
    assert sorted(specs) == ["srv_search_web", "srv_untyped"]
    assert specs["srv_search_web"].description == "Search."
    assert specs["srv_untyped"].parameters == {"type": "object", "properties": {}}
    assert specs["srv_untyped"].description == "untyped"
    logged = caplog.text
    assert "'search.web' is offered as 'srv_search_web'" in logged
    assert "'search_web' left out: another tool is already named" in logged
    assert "not a valid tool name" in logged
    assert "'broken' left out" in logged


def test_results_as_the_model_reads_them() -> None:
    structured = mcp_types.CallToolResult(
        content=[mcp_types.TextContent(text='{"n": 1}')], structured_content={"n": 1}
    )
    assert result_value(structured) == {"n": 1}
    mixed = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text="first"),
            mcp_types.AudioContent(data="AAAA", mime_type="audio/wav"),
            mcp_types.ResourceLink(name="doc", uri="file:///tmp/doc.txt"),
            mcp_types.EmbeddedResource(
                resource=mcp_types.TextResourceContents(uri="memo://1", text="embedded text")
            ),
            mcp_types.EmbeddedResource(
                resource=mcp_types.BlobResourceContents(
                    uri="memo://2", blob="AAAA", mime_type="application/pdf"
                )
            ),
        ]
    )
    assert result_value(mixed) == (
        "first\n\n[audio: audio/wav]\n\n[resource: file:///tmp/doc.txt]\n\n"
        "embedded text\n\n[resource: memo://2 (application/pdf)]"
    )
    assert result_value(mcp_types.CallToolResult(content=[])) == ""


# --------------------------------------------------------------------------- scaivoice mcp


def _scaivoice_mcp(config: Path, data_dir: Path) -> StdioServerParameters:
    """`scaivoice mcp` over stdio, as an agent's MCP config starts it."""
    return StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "scaivoice.engine.cli",
            "mcp",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
        ],
    )


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(300)
async def test_scaivoice_mcp_voices_a_reply_and_transcribes_it_back(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("hibari")
    config = tmp_path / "scaivoice.toml"
    config.write_text('[backends]\nstt = "whisper"\nllm = "test-llm"\ntts = "hibari"\n')
    data_dir = tmp_path / "data"
    text = "Please remind me to buy milk, eggs, and bread on the way home."
    async with Client(_scaivoice_mcp(config, data_dir)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"transcribe_voice_note", "synthesize_voice_note"}
        assert tools["synthesize_voice_note"].input_schema["required"] == ["text"]

        first = await client.call_tool("synthesize_voice_note", {"text": text})
        assert not first.is_error, first.content
        assert first.structured_content is not None
        path = Path(first.structured_content["path"])
        assert first.content[0].text == str(path)  # type: ignore[union-attr]
        assert path.parent == data_dir / "tts" and path.suffix == ".ogg"
        assert len(path.stem) == 64 and set(path.stem) <= set("0123456789abcdef")
        assert path.read_bytes()[:4] == b"OggS"
        assert first.structured_content["cached"] is False
        before = path.stat()

        second = await client.call_tool("synthesize_voice_note", {"text": text})
        assert second.structured_content == {**first.structured_content, "cached": True}
        after = path.stat()
        assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)  # not rewritten
        assert list((data_dir / "tts").iterdir()) == [path]

        heard = await client.call_tool("transcribe_voice_note", {"path": str(path)})
        assert not heard.is_error, heard.content
        assert heard.structured_content is not None
        words, said = _words(heard.structured_content["text"]), _words(text)
        assert len(set(words) & set(said)) >= 0.8 * len(set(said)), (words, said)

        inline = await client.call_tool(
            "transcribe_voice_note",
            {"audio_base64": base64.b64encode(path.read_bytes()).decode(), "language": "en"},
        )
        assert inline.structured_content == heard.structured_content

        neither = await client.call_tool("transcribe_voice_note", {})
        assert neither.is_error
        missing = await client.call_tool(
            "transcribe_voice_note", {"path": str(tmp_path / "no.ogg")}
        )
        assert missing.is_error and "cannot read" in missing.content[0].text  # type: ignore[union-attr]


@pytest.mark.slow  # real MCP servers in subprocesses
@pytest.mark.timeout(120)
async def test_scaivoice_mcp_says_send_text_when_synthesis_is_down(tmp_path: Path) -> None:
    config = tmp_path / "scaivoice.toml"
    config.write_text(
        '[backends]\nstt = "test-stt"\nllm = "test-llm"\ntts = "openai"\n'
        '[backends.options.tts.openai]\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    async with Client(_scaivoice_mcp(config, tmp_path / "data")) as client:
        result = await client.call_tool("synthesize_voice_note", {"text": "Hello there."})
        assert result.is_error
        message = result.content[0].text  # type: ignore[union-attr]
        assert message.startswith(SYNTHESIS_UNAVAILABLE), message
        assert not (tmp_path / "data" / "tts").exists() or not any(
            (tmp_path / "data" / "tts").iterdir()
        )


@pytest.mark.timeout(120)
async def test_scaivoice_mcp_over_streamable_http_feeds_an_mcp_tool_provider(
    tmp_path: Path,
) -> None:
    """Both directions at once: the engine's MCP tool provider calling `scaivoice mcp`."""
    config = config_from_mapping(
        {"backends": {"stt": "test-stt", "llm": "test-llm", "tts": "test-tts"}}
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            partial(
                serve_mcp,
                config,
                host_with(),
                data_dir=tmp_path,
                transport="streamable-http",
                port=0,
                shutdown_trigger=stop.wait,
            )
        )
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        async with _provider(McpServerConfig(url=url), name="voice") as provider:
            specs = _specs(await provider.list_tools())
            assert set(specs) == {"voice_transcribe_voice_note", "voice_synthesize_voice_note"}
            note = await specs["voice_synthesize_voice_note"].handler(
                {"text": "Hi there."}, CONTEXT
            )
            assert Path(note["path"]).read_bytes()[:4] == b"OggS"
            heard = await specs["voice_transcribe_voice_note"].handler(
                {"path": note["path"]}, CONTEXT
            )
            assert heard == {"text": "hello there"}  # test-stt's transcript
            with pytest.raises(ToolFailed, match="either `path`"):
                await specs["voice_transcribe_voice_note"].handler({}, CONTEXT)
        stop.set()


async def test_scaivoice_mcp_serves_http_on_loopback_only(tmp_path: Path) -> None:
    config = config_from_mapping({"backends": {"stt": "test-stt", "tts": "test-tts"}})
    with pytest.raises(ConfigError, match="loopback"):
        await serve_mcp(
            config, host_with(), data_dir=tmp_path, transport="streamable-http", bind="0.0.0.0"
        )
