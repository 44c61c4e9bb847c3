"""Tools from MCP servers (``[tools.mcp.NAME]``), called through the official ``mcp`` SDK.

One :class:`McpToolProvider` per configured server: a local server started over stdio
(``command``) or a streamable-HTTP endpoint (``url``). The engine keeps it like a backend (open,
health checks, close); a session asks it for its tools (:meth:`~McpToolProvider.list_tools`) and
calls them through the :class:`ToolSpec` handlers it hands out::

    open() ──► connection task ──► connect (start the stdio server / reach the URL), initialise,
      ▲            │               list the tools (within CONNECT_TIMEOUT_S)
      │            │                  │ ok: connected. Calls go from the caller's task through
      │            │                  │ the MCP session; a tools/list_changed (or a 2026
      │            │                  │ subscriptions/listen event) lists the tools again
      │            │                  ▼
      │            │               connection lost (the stdio server exited, a call found the
      │            │               connection closed, a health check failed, HTTP broke)
      │            │                  │
      │            └── reconnect after a backoff (1 s, doubling up to 30 s) ◄──┘
      │
    a first connection that fails makes open() raise BackendUnavailable (the engine's keeper
    tries again later); aclose() stops the task (a stdio server is stopped as the SDK does it:
    stdin closed, 2 s, SIGTERM, 2 s, SIGKILL)

The connection lives in a task of its own (a trio system task started by ``open``), not in the
task that calls ``open`` and ``aclose``: the SDK holds task groups open for the life of a
connection (the stdio pipes, HTTP requests, the JSON-RPC receive loop), and those must exit
in the order they were entered. The engine's keeper enters its own cancel scopes between
``open`` and ``aclose`` (it closes resources inside a shielded scope), which trio reports as a
corrupted cancel scope stack, and a transport failure inside those groups would cancel the
keeper itself. Calls are made from any task: the MCP session correlates replies itself.

Errors, each a stable code (the session goes on)::

    handler (a tool call)
      not connected, the connection closed,
      the server died mid-call             -> ToolFailed(code="tool_server_unavailable")
      the tool answered isError            -> ToolFailed(code="tool_failed", its text)
      a JSON-RPC error, a malformed result -> ToolFailed(code="tool_failed")
      cancelled (barge-in, the deadline)   -> the SDK sends notifications/cancelled (stdio and
                                              2025 HTTP) or aborts the request (2026 HTTP); the
                                              handler raises trio.Cancelled at once
    list_tools, check_health
      not connected, the connection closed -> BackendUnavailable

Results: the tool's structured content (a JSON object) when it sent one; otherwise its content
blocks as text, joined by blank lines, with images, audio and binary resources described
(``[image: image/png]``).
"""

from __future__ import annotations

import contextvars
import fnmatch
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

import trio

from .._contract.tool_schemas import SchemaInvalid, check_parameters_schema
from .._contract.tools import TOOL_NAME_PATTERN, ToolContext, ToolProvider, ToolSpec
from .._errors import BackendUnavailable, ConfigError, ToolFailed
from .config import McpServerConfig
from .upkeep import Backoff

try:
    import httpx2
    from mcp import Client, StdioServerParameters, stdio_client
    from mcp import types as mcp_types
    from mcp.client import Transport
    from mcp.client.streamable_http import streamable_http_client
    from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
    from mcp.shared.exceptions import MCPError
    from mcp.shared.message import SessionMessage
    from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS
    from pydantic import ValidationError
except ImportError as exc:  # pragma: no cover - the extra is part of the test install
    raise ConfigError("[tools.mcp] needs the MCP SDK: pip install 'scaivoice[mcp]'") from exc

__all__ = ["CONNECT_TIMEOUT_S", "McpToolProvider", "result_value"]

log = logging.getLogger("scaivoice.tools")

CONNECT_TIMEOUT_S = 30.0
"""The longest connecting may take: starting a stdio server (or reaching the URL),
initialising the session and listing the tools."""

_REFRESH_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_MAX_PAGES = 100
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults: a response may stream long
_INVALID_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]")


def _client_info() -> mcp_types.Implementation:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("scaivoice")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        ours = "0"
    return mcp_types.Implementation(name="scaivoice", version=ours)


@dataclass(eq=False)
class _Connection:
    """One connection: the SDK's client and what is known of it."""

    client: Client | None = None
    """Set once the session is initialised."""
    tools: tuple[ToolSpec, ...] = ()
    lost: trio.Event = field(default_factory=trio.Event)
    """Set when the connection is found broken; the connection task then reconnects."""
    error: str = ""
    """Why it was lost."""
    relist: trio.Event = field(default_factory=trio.Event)
    """Set when the server says its tools changed."""

    def lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.error = why
            self.lost.set()


class McpToolProvider(ToolProvider):
    """The tools of one MCP server (``[tools.mcp.NAME]``), kept connected.

    Args:
        name: the server's name in the config (``NAME``); the default tool-name prefix is
            ``NAME_``.
        config: its ``[tools.mcp.NAME]`` table.
        default_timeout_s: the longest one call may take when the table sets no
            ``call_timeout_s`` (``[tools] call_timeout_s``).
        protocol: how the protocol version is chosen: ``"auto"`` asks for the 2026 protocol
            (``server/discover``) and falls back to the 2025 ``initialize`` handshake;
            ``"legacy"`` goes straight to the handshake (the SDK's ``Client`` ``mode``).
    """

    def __init__(
        self,
        name: str,
        config: McpServerConfig,
        *,
        default_timeout_s: float,
        protocol: Literal["auto", "legacy"] = "auto",
    ) -> None:
        self.name = name
        self.config = config
        self.prefix = config.prefix if config.prefix is not None else f"{name}_"
        self.timeout_s = (
            config.call_timeout_s if config.call_timeout_s is not None else default_timeout_s
        )
        self._connection: _Connection | None = None
        self._error = "not connected yet"
        self._scope = trio.CancelScope()
        self._first_try = trio.Event()
        self._changed = trio.Event()
        self._stopped = trio.Event()
        self._started = False
        self._closed = False
        self._client_info = _client_info()
        self.protocol = protocol

    def __repr__(self) -> str:
        where = self.config.url or " ".join(self.config.command or ())
        return f"<McpToolProvider {self.name!r}: {where}>"

    @property
    def connected(self) -> bool:
        """Whether a connection is up now."""
        connection = self._connection
        return connection is not None and not connection.lost.is_set()

    @property
    def protocol_version(self) -> str | None:
        """The protocol version of the connection now (``"2025-11-25"``, ``"2026-07-28"``)."""
        connection = self._connection
        if connection is None or connection.client is None:
            return None
        return connection.client.protocol_version

    async def wait_changed(self) -> None:
        """Return at the provider's next change: connected, disconnected, tools listed again."""
        await self._changed.wait()

    async def wait_connected(self) -> None:
        """Return once a connection is up (at once if one is)."""
        while not self.connected:
            await self.wait_changed()

    def _announce(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---------------------------------------------------------------- Resource

    async def open(self) -> None:
        """Connect: start the stdio server (or reach the URL), initialise, list the tools.

        Cancelling it abandons the connection (the connection task stops in the background).

        Raises:
            BackendUnavailable: the first connection failed (the server did not start, the URL
                does not answer, the handshake failed or took over :data:`CONNECT_TIMEOUT_S`).
        """
        if self._started:
            raise RuntimeError("an McpToolProvider is opened once")
        self._started = True
        trio.lowlevel.spawn_system_task(
            self._run,
            name=f"mcp server {self.name!r}",
            context=contextvars.copy_context(),
        )
        tried = False
        try:
            await self._first_try.wait()
            tried = True
        finally:
            if not tried:  # cancelled: abandon the connection
                self._scope.cancel()
        if self._connection is None:
            raise BackendUnavailable(
                f"the MCP server {self.name!r} is not available: {self._error}",
                backend=self.name,
            )

    async def aclose(self) -> None:
        """Disconnect and stop a stdio server (waits up to about 10 s). Idempotent."""
        self._closed = True
        self._scope.cancel()
        if self._started:
            with trio.move_on_after(_STOP_TIMEOUT_S):
                await self._stopped.wait()

    # ---------------------------------------------------------------- ToolProvider

    async def list_tools(self) -> Sequence[ToolSpec]:
        """The server's tools as listed last (prefixed, filtered, checked).

        Raises:
            BackendUnavailable: not connected now.
        """
        return self._live().tools

    async def check_health(self) -> None:
        """A round trip to the server: ``ping`` (``server/discover`` on 2026 connections).

        Raises:
            BackendUnavailable: not connected, or the server did not answer.
        """
        connection = self._live()
        assert connection.client is not None
        session = connection.client.session
        try:
            version = session.protocol_version
            if version in MODERN_PROTOCOL_VERSIONS:
                assert version is not None
                await session.send_discover(version)
            else:
                await session.send_ping()
        except MCPError as exc:
            if _is_disconnection(exc):
                connection.lose(f"the connection closed ({exc})")
            raise BackendUnavailable(
                f"the MCP server {self.name!r} did not answer a health check: {exc}",
                backend=self.name,
            ) from exc

    def _live(self) -> _Connection:
        connection = self._connection
        if connection is None or connection.lost.is_set():
            why = connection.error if connection is not None else self._error
            raise BackendUnavailable(
                f"the MCP server {self.name!r} is not available: {why}", backend=self.name
            )
        return connection

    # ---------------------------------------------------------------- calls

    async def _call(
        self, tool: str, arguments: Mapping[str, Any], context: ToolContext | None = None
    ) -> Any:
        """Call the server's tool ``tool`` (its own name); the handler of its :class:`ToolSpec`.

        Cancelling it cancels the request on the server (``notifications/cancelled``) and
        returns at once.
        """
        connection = self._connection
        if connection is None or connection.lost.is_set():
            why = connection.error if connection is not None else self._error
            raise ToolFailed(
                f"the tool server {self.name!r} is not available: {why}",
                code="tool_server_unavailable",
            )
        assert connection.client is not None
        try:
            result = await connection.client.call_tool(tool, dict(arguments))
        except MCPError as exc:
            if _is_disconnection(exc):
                connection.lose(f"the connection closed during a call ({exc})")
                raise ToolFailed(
                    f"the tool server {self.name!r} went away during the call",
                    code="tool_server_unavailable",
                ) from exc
            raise ToolFailed(f"{tool}: {exc}", code="tool_failed") from exc
        except ValidationError as exc:
            raise ToolFailed(
                f"{tool}: the tool server answered with a malformed result", code="tool_failed"
            ) from exc
        if result.is_error:
            raise ToolFailed(_content_text(result.content) or f"{tool} failed", code="tool_failed")
        return result_value(result)

    # ---------------------------------------------------------------- the connection task

    async def _run(self) -> None:
        """The connection task: connect, stay connected, reconnect; never raises."""
        try:
            with self._scope:
                await self._keep_connected()
        except* Exception as group:  # a bug: a system task must not raise
            log.error("MCP server %r: the connection task failed", self.name, exc_info=group)
            self._error = f"internal error: {group.exceptions[0]!r}"
        finally:
            self._connection = None
            self._first_try.set()
            self._stopped.set()

    async def _keep_connected(self) -> None:
        backoff = Backoff()
        while True:
            connected = await self._connect_once(backoff)
            if not self._first_try.is_set():  # the first try failed: open() says so
                self._first_try.set()
                return
            if not connected:
                log.warning("MCP server %r is down: %s", self.name, self._error)
            await trio.sleep(backoff.next())
            log.info("MCP server %r: reconnecting", self.name)

    async def _connect_once(self, backoff: Backoff) -> bool:
        """One connection, from connecting to losing it; whether it connected at all."""
        connection = _Connection()

        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                connection.relist.set()
            elif isinstance(message, Exception):
                log.debug("MCP server %r: transport error: %r", self.name, message)
            await trio.lowlevel.checkpoint()

        client = Client(
            _watched(self._transport(), connection),
            mode=self.protocol,
            cache=None,
            client_info=self._client_info,
            message_handler=on_message,
        )
        try:
            with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT_S) as deadline:
                async with client, trio.open_nursery() as nursery:
                    connection.client = client
                    # Listen for changes before listing, so that no change is missed.
                    nursery.start_soon(self._relist_on_change, connection)
                    capabilities = client.server_capabilities.tools
                    modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS
                    if modern and capabilities is not None and capabilities.list_changed:
                        await nursery.start(self._listen_for_changes, connection)
                    connection.tools = await self._fetch_tools(client)
                    deadline.deadline = math.inf
                    self._connection = connection
                    backoff.reset()
                    log.info(
                        "MCP server %r connected (protocol %s): %d tool(s): %s",
                        self.name,
                        client.protocol_version,
                        len(connection.tools),
                        ", ".join(spec.name for spec in connection.tools) or "none",
                    )
                    self._first_try.set()
                    self._announce()
                    await connection.lost.wait()
                    nursery.cancel_scope.cancel()
            if deadline.cancelled_caught:
                connection.lose(f"no answer within {CONNECT_TIMEOUT_S:g} s")
        except Exception as exc:  # the SDK raises ExceptionGroups of its task groups' errors
            connection.lose(_describe(exc))
        finally:
            connected = self._connection is connection
            connection.lose("the connection was closed")
            self._connection = None
            self._error = connection.error
            self._announce()
        return connected

    async def _relist_on_change(self, connection: _Connection) -> None:
        assert connection.client is not None
        while True:
            await connection.relist.wait()
            connection.relist = trio.Event()
            try:
                with trio.fail_after(_REFRESH_TIMEOUT_S):
                    tools = await self._fetch_tools(connection.client)
            except (MCPError, ValidationError, trio.TooSlowError) as exc:
                if isinstance(exc, MCPError) and _is_disconnection(exc):
                    connection.lose(f"the connection closed ({exc})")
                    return
                log.warning("MCP server %r: listing its tools again failed: %s", self.name, exc)
                continue
            connection.tools = tools
            self._announce()
            log.info(
                "MCP server %r: its tools changed: %s",
                self.name,
                ", ".join(spec.name for spec in tools) or "none",
            )

    async def _listen_for_changes(
        self,
        connection: _Connection,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """2026 connections: list changes arrive on a ``subscriptions/listen`` stream.

        Started once the server acknowledged the subscription (or refused it).
        """
        assert connection.client is not None
        listening = False
        try:
            async with connection.client.listen(tools_list_changed=True) as subscription:
                listening = True
                task_status.started()
                async for _event in subscription:
                    connection.relist.set()
        except (MCPError, SubscriptionLost, ListenNotSupportedError, TimeoutError) as exc:
            log.info("MCP server %r: no tool-change events: %s", self.name, exc)
            if not listening:
                task_status.started()

    def _transport(self) -> Transport:
        config = self.config
        if config.command is not None:
            return stdio_client(
                StdioServerParameters(
                    command=config.command[0],
                    args=list(config.command[1:]),
                    env=dict(config.env) or None,
                    cwd=config.cwd,
                )
            )
        assert config.url is not None
        return _http_transport(config.url, dict(config.headers))

    # ---------------------------------------------------------------- tools

    async def _fetch_tools(self, client: Client) -> tuple[ToolSpec, ...]:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return self.tool_specs(listed)

    def tool_specs(self, tools: Sequence[mcp_types.Tool]) -> tuple[ToolSpec, ...]:
        """The specs offered for the server's ``tools``: filtered by the config's ``tools``
        patterns, named ``prefix + name`` (characters a model cannot call replaced by ``_``),
        with a valid parameters schema; the others are left out with a log line."""
        patterns = self.config.tools
        specs: dict[str, ToolSpec] = {}
        for tool in tools:
            if patterns is not None and not any(
                fnmatch.fnmatchcase(tool.name, p) for p in patterns
            ):
                continue
            name = self.prefix + _INVALID_NAME_CHARACTERS.sub("_", tool.name)
            if not TOOL_NAME_PATTERN.match(name):
                log.warning(
                    "MCP server %r: tool %r left out: %r is not a valid tool name (1 to 64 "
                    "letters, digits, _ or -)",
                    self.name,
                    tool.name,
                    name,
                )
                continue
            if name in specs:
                log.warning(
                    "MCP server %r: tool %r left out: another tool is already named %r",
                    self.name,
                    tool.name,
                    name,
                )
                continue
            if name != self.prefix + tool.name:
                log.info("MCP server %r: tool %r is offered as %r", self.name, tool.name, name)
            parameters = dict(tool.input_schema)
            parameters.setdefault("type", "object")
            try:
                check_parameters_schema(parameters)
            except SchemaInvalid as exc:
                log.warning("MCP server %r: tool %r left out: %s", self.name, tool.name, exc)
                continue
            specs[name] = ToolSpec(
                name=name,
                description=tool.description or tool.title or tool.name,
                handler=partial(self._call, tool.name),
                parameters=parameters,
                timeout_s=self.timeout_s,
            )
        return tuple(specs.values())


# --------------------------------------------------------------------------- results


def result_value(result: mcp_types.CallToolResult) -> Any:
    """What the model reads of a tool's result: its structured content when it sent one (a
    JSON object), else its content blocks as text."""
    if result.structured_content is not None:
        return result.structured_content
    return _content_text(result.content)


def _content_text(blocks: Sequence[mcp_types.ContentBlock]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent):
            parts.append(f"[image: {block.mime_type}]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio: {block.mime_type}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource: {block.uri}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource: {resource.uri} ({resource.mime_type or 'binary'})]")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- transports


def _is_disconnection(exc: MCPError) -> bool:
    """Whether ``exc`` says the connection is gone (the stdio server exited, HTTP broke, or a
    2025 HTTP server no longer knows the session: it restarted)."""
    return exc.error.code == CONNECTION_CLOSED or (
        exc.error.code == INVALID_REQUEST and exc.error.message == "Session terminated"
    )


def _describe(exc: BaseException) -> str:
    """One line for an error of a connection attempt (an ExceptionGroup: its first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError):
        return f"the command was not found: {exc.filename or exc}"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MCPError | OSError) else f"{type(exc).__name__}: {text}"


@asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """The streamable-HTTP transport with the config's headers on every request."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=_HTTP_TIMEOUT) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


@asynccontextmanager
async def _watched(transport: Transport, connection: _Connection) -> AsyncIterator[Any]:
    """``transport``, losing ``connection`` when its read stream ends (a stdio server exited)."""
    async with transport as (read_stream, write_stream):
        yield _EndWatch(read_stream, connection), write_stream


class _EndWatch:
    """A transport's read stream that sets an event when it ends (the SDK's ``ReadStream``)."""

    def __init__(self, inner: Any, connection: _Connection) -> None:
        self._inner = inner
        self._connection = connection

    def _end(self) -> None:
        self._connection.lose("the server closed the connection")

    @property
    def last_context(self) -> contextvars.Context | None:
        context: contextvars.Context | None = getattr(self._inner, "last_context", None)
        return context

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except Exception:  # end of stream, closed, broken: the connection is over
            self._end()
            raise
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.__anext__()
        except Exception:  # StopAsyncIteration at the end, or closed, broken
            self._end()
            raise
        return item

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self._end()
        result: bool | None = await self._inner.__aexit__(exc_type, exc_val, exc_tb)
        return result
