"""An echo server on the engine's own WebSocket path, for the Autobahn|Testsuite fuzzing client.

It runs the server the engine runs (``serve_http``: the h11 connection, the upgrade handshake,
``StreamWebSocketTransport`` over the sans-IO codec of ``_server/websocket.py``), with the session replaced
by an echo loop: every text or binary message comes back as it arrived. The connection then
drains the socket as it does after a session, so the closing handshake is the server's own.

Usage::

    python tests/autobahn/echo_server.py [--host 127.0.0.1] [--port 9001] [--url-file PATH]

``--port 0`` picks a free port; ``--url-file`` receives the ``ws://`` URL of the session path
once the server listens. Stop it with Ctrl-C / SIGTERM. ``run_autobahn.sh`` drives it.
"""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

import trio

from scaivoice.engine import SessionClosed, Transport
from scaivoice.engine._server.connection import serve_http

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # Autobahn's 9.* cases send messages of up to 16 MiB


class EchoApp:
    """Stands in for ``ScaiVoiceApp``: sessions echo, every HTTP request is a 404."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps({"status": 404, "code": "not_found"}).encode()
        headers = [(b"content-type", b"application/problem+json")]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def serve_session(self, scope: Any, transport: Transport) -> None:
        try:
            while True:
                message = await transport.receive()
                if isinstance(message, str):
                    await transport.send_text(message)
                else:
                    await transport.send_bytes(message)
        except SessionClosed:
            pass


async def main(host: str, port: int, url_file: Path | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def stop() -> None:
            async for _ in signals:
                return

        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve_http(
                    EchoApp(),  # type: ignore[arg-type]  # duck-typed: serve_session, __call__
                    host=host,
                    port=port,
                    max_message_bytes=MAX_MESSAGE_BYTES,
                    shutdown_trigger=stop,
                    graceful_timeout_s=1.0,
                    task_status=task_status,
                )
            )
            url = urls[0].replace("http://", "ws://") + "/v1/session"
            print(f"echoing on {url}", flush=True)
            if url_file is not None:  # written whole, then renamed: a reader never sees half
                partial = url_file.with_name(url_file.name + ".partial")
                partial.write_text(url + "\n")
                partial.replace(url_file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--url-file", type=Path)
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.url_file)
