"""A small MCP server for the tests, written with the official SDK's server API (MCPServer).

Run as a subprocess, over stdio (``python tools_server.py``) or streamable HTTP
(``python tools_server.py --http``: it binds a free loopback port, prints it on one line of
stdout, then serves ``/mcp``). It runs on asyncio, as most MCP servers in the wild do.

Tools: ``add`` (structured output), ``echo`` (text), ``weather`` (a JSON object), ``fail`` (an
error result), ``picture`` (an image and a caption), ``slow`` (sleeps; counts its
cancellations), ``wait_cancelled`` (returns once a ``slow`` call was cancelled), ``crash`` (the
process dies mid-call), ``bad name!`` (a name a language model cannot call).
"""

from __future__ import annotations

import argparse
import base64
import os
import socket

import anyio
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

server = MCPServer("scaivoice-test-tools")
_cancelled = anyio.Event()
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str, times: int = 1) -> str:
    """Say the text back, ``times`` times."""
    return " ".join([text] * times)


@server.tool(structured_output=True)
def weather(city: str) -> dict[str, object]:
    """Today's weather in a city."""
    return {"city": city, "sky": "sunny", "celsius": 21}


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message."""
    raise ToolError(message)


@server.tool(structured_output=False)
def picture() -> list[object]:
    """A one-pixel picture and its caption."""
    return [Image(data=_PNG, format="png"), "a single pixel"]


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then say so. A cancelled call is counted."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _cancelled.set()
        raise
    return f"slept {seconds} s"


@server.tool()
async def wait_cancelled(timeout_s: float) -> bool:
    """Whether a ``slow`` call was cancelled (waits up to ``timeout_s`` for one)."""
    with anyio.move_on_after(timeout_s):
        await _cancelled.wait()
    return _cancelled.is_set()


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """The server process dies while answering."""
    os._exit(3)


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds a tool named ``extra`` and announces the change."""
    server.add_tool(lambda: "extra!", name="extra", description="Added at run time.")
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        await ctx.notify_tools_changed()  # to subscriptions/listen streams
    else:
        await ctx.session.send_tool_list_changed()  # notifications/tools/list_changed
    return "grown"


server.add_tool(lambda: "unreachable", name="bad name!", description="Not a valid tool name.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", action="store_true", help="streamable HTTP on a free port")
    parser.add_argument("--port", type=int, default=0, help="with --http: this port")
    args = parser.parse_args()
    if not args.http:
        server.run("stdio")
        return
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_config=None, log_level="warning")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
