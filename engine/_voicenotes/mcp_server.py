"""``scaivoice mcp``: voice notes as MCP tools, for the agents behind chat gateways.

An agent that chats over a messaging app gets two tools from one MCP server:

- ``transcribe_voice_note(path | audio_base64, language?)``: the text of a voice note (OGG/Opus,
  WAV, MP3, WebM, M4A, FLAC: what :mod:`.codecs` decodes);
- ``synthesize_voice_note(text, voice?)``: the path of an OGG/Opus file to send back as a voice
  note, from the content-addressed cache ``<data_dir>/tts/<sha256>.ogg`` (the same text and voice
  give the same file, synthesised once). When synthesis is down it answers an error result that
  starts ``synthesis unavailable, send text``, so the agent replies in text instead.

Both run through the voice-note API of an engine opened in-process from the same configuration
as ``scaivoice serve`` (:class:`~.api.VoiceNotes`: the same decoding limits, voices, text
normalisation and cache keys), as the configured ``[voice_notes]`` settings allow. The server
speaks MCP over stdio (the agent starts it) or streamable HTTP on a loopback address (it has no
credentials of its own), through the official ``mcp`` SDK; HTTP is served by Hypercorn on trio.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import trio

from .._contract.identity import PERMISSION_USE, Principal
from .._contract.plugins import PluginHost
from .._errors import ConfigError, HttpProblem
from .._host.config import EngineConfig
from .._host.engine import Engine
from .._server.http import FormPart
from .._server.service import is_loopback, wait_for_termination
from .api import VoiceNotes
from .cache import SpeechCache

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.types import CallToolResult, TextContent
    from pydantic import Field
except ImportError as exc:  # pragma: no cover - the extra is part of the test install
    raise ConfigError("scaivoice mcp needs the MCP SDK: pip install 'scaivoice[mcp]'") from exc

__all__ = ["SYNTHESIS_UNAVAILABLE", "McpTransport", "VoiceNoteTools", "build_server", "serve_mcp"]

log = logging.getLogger("scaivoice.mcp")

McpTransport = Literal["stdio", "streamable-http"]

SYNTHESIS_UNAVAILABLE = "synthesis unavailable, send text"
"""How an error result of ``synthesize_voice_note`` starts when the voice cannot be made now."""

_TENANT = "default"
_NOTE_SUFFIX = ".ogg"


class VoiceNoteTools:
    """The two tools over one engine's voice notes, as MCP results.

    Args:
        engine: an open engine.
        data_dir: the notes go to ``data_dir/tts/<sha256>.ogg``.
        tenant: whose defaults (voice, normalisation, lexicon) apply.
    """

    def __init__(self, engine: Engine, data_dir: Path, *, tenant: str = _TENANT) -> None:
        settings = engine.config.voice_notes
        cache = SpeechCache(data_dir / "tts", settings.cache_max_bytes, suffix=_NOTE_SUFFIX)
        self.notes = VoiceNotes(engine, cache=cache)
        self.principal = Principal(
            tenant=tenant, key_id="mcp", permissions=frozenset({PERMISSION_USE})
        )

    async def transcribe(
        self, path: str | None, audio_base64: str | None, language: str | None
    ) -> CallToolResult:
        """The text of a voice note, or an error result saying why not."""
        if (path is None) == (audio_base64 is None):
            return _error("give either `path` (an audio file) or `audio_base64`, not both")
        limit = self.notes.settings.max_upload_bytes
        if path is not None:
            name = Path(path).name
            try:
                data = await (await trio.Path(path).expanduser()).read_bytes()
            except OSError as exc:
                return _error(f"cannot read {path!r}: {exc.strerror or exc}")
        else:
            assert audio_base64 is not None
            name = "voice note"
            try:
                data = base64.b64decode(audio_base64, validate=True)
            except (binascii.Error, ValueError):
                return _error("`audio_base64` is not valid base64")
        if len(data) > limit:
            return _error(f"{name}: the file is larger than {limit} bytes")
        form = {"file": FormPart(name="file", data=data, filename=name)}
        if language:
            form["language"] = FormPart(name="language", data=language.encode("utf-8"))
        try:
            _, document = await self.notes.transcribe(self.principal, form)
        except HttpProblem as problem:
            return _error(f"transcription failed ({problem.code}): {problem.detail}")
        text = str(document["text"])
        return CallToolResult(content=[TextContent(text=text)], structured_content={"text": text})

    async def synthesize(self, text: str, voice: str | None) -> CallToolResult:
        """The path of an OGG/Opus voice note of ``text``, or an error result."""
        request: dict[str, object] = {"input": text, "response_format": "opus"}
        if voice:
            request["voice"] = voice
        try:
            result = await self.notes.speech(self.principal, json.dumps(request).encode("utf-8"))
        except HttpProblem as problem:
            if problem.status >= 500:
                return _error(f"{SYNTHESIS_UNAVAILABLE} ({problem.code}): {problem.detail}")
            return _error(f"cannot voice this text ({problem.code}): {problem.detail}")
        path = self.notes.cache.path(result.key)
        assert path is not None
        if not await trio.Path(path).is_file():  # larger than the whole cache: not kept
            return _error(
                f"{SYNTHESIS_UNAVAILABLE}: the note does not fit in the voice-note cache "
                "([voice_notes] cache_max_bytes)"
            )
        return CallToolResult(
            content=[TextContent(text=str(path))],
            structured_content={
                "path": str(path),
                "cached": result.cache_hit,
                "voice": result.voice_id,
            },
        )


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(text=message)], is_error=True)


def build_server(tools: VoiceNoteTools) -> MCPServer:
    """The MCP server offering ``tools`` (the SDK's server API)."""
    server = MCPServer(
        "scaivoice",
        instructions=(
            "Voice notes: transcribe_voice_note turns a voice note the user sent into text; "
            "synthesize_voice_note turns your reply into an OGG/Opus voice note to send back "
            "(a file path). When it answers an error starting "
            f"'{SYNTHESIS_UNAVAILABLE}', reply in text."
        ),
        log_level="WARNING",
    )

    @server.tool(description="Transcribe a voice note (an audio file) to text.")
    async def transcribe_voice_note(
        path: Annotated[
            str | None, Field(description="An audio file on this machine (OGG/Opus, WAV, MP3 ...)")
        ] = None,
        audio_base64: Annotated[
            str | None, Field(description="The audio file's bytes in base64, instead of a path")
        ] = None,
        language: Annotated[
            str | None, Field(description="The language spoken, as an ISO 639-1 code ('en')")
        ] = None,
    ) -> CallToolResult:
        return await tools.transcribe(path, audio_base64, language)

    @server.tool(
        description=(
            "Speak text as a voice note: returns the path of an OGG/Opus file to send. The same "
            "text and voice give the same file. If the result is an error starting "
            f"'{SYNTHESIS_UNAVAILABLE}', send your reply as text."
        )
    )
    async def synthesize_voice_note(
        text: Annotated[str, Field(description="What to say")],
        voice: Annotated[
            str | None, Field(description="A voice id of the server's voice library")
        ] = None,
    ) -> CallToolResult:
        return await tools.synthesize(text, voice)

    return server


async def serve_mcp(
    config: EngineConfig,
    host: PluginHost,
    *,
    data_dir: Path,
    transport: McpTransport = "stdio",
    bind: str = "127.0.0.1",
    port: int = 8766,
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_termination,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the engine and serve the voice-note tools over MCP.

    Over stdio it returns when the client closes the server's stdin; over streamable HTTP
    (``http://BIND:PORT/mcp``) when ``shutdown_trigger`` returns. ``task_status`` reports the
    URL (``"stdio"`` over stdio) once the tools are served. Cancelling it stops the server and
    closes the engine.

    Raises:
        ConfigError: a bad configuration, or a ``bind`` address that is not loopback (the
            server has no credentials of its own).
    """
    if transport == "streamable-http" and not is_loopback(bind):
        raise ConfigError(
            f"scaivoice mcp has no credentials of its own: it serves HTTP on a loopback "
            f"address only, not {bind!r}"
        )
    async with AsyncExitStack() as stack:
        # Over stdio, stdout is the protocol's: while the engine opens, what a model library
        # prints goes to stderr (while serving, the SDK's stdio transport does the same).
        with _stdout_to_stderr() if transport == "stdio" else nullcontext():
            engine = await stack.enter_async_context(Engine.open(config, host))
        tools = VoiceNoteTools(engine, data_dir.expanduser())
        server = build_server(tools)
        if transport == "stdio":
            log.info("scaivoice mcp: serving voice-note tools over stdio")
            task_status.started("stdio")
            await server.run_stdio_async()
            return
        await _serve_http(server, bind, port, shutdown_trigger, task_status)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no file descriptor 1: nothing to protect
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


async def _serve_http(
    server: MCPServer,
    bind: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[str],
) -> None:
    try:
        from hypercorn.config import Config
        from hypercorn.trio import serve
    except ImportError as exc:  # pragma: no cover - in the mcp extra
        raise ConfigError(
            "scaivoice mcp over HTTP needs Hypercorn: pip install 'scaivoice[mcp]'"
        ) from exc
    settings = Config()
    settings.bind = [f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"]
    settings.accesslog = None
    app = server.streamable_http_app(host=bind)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, app, settings, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        )
        url = binds[0].rstrip("/") + "/mcp"
        log.info("scaivoice mcp: serving voice-note tools at %s", url)
        task_status.started(url)
