"""The benchmarks' one launcher: ``scaivoice serve`` in its own process, on a free loopback port.

Every benchmark that starts its own server goes through :func:`local_server`: it writes the
configuration to a temporary file, starts the server with the built-in plugins only
(``SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD=1``), waits until ``/health`` answers 200, and stops the
server when the block is left. The server's output goes to a log file whose tail is in the
error when it does not start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from scaivoice.engine import ScaiVoiceError

__all__ = ["LocalServer", "local_server"]

_HOST = "127.0.0.1"
_POLL_S = 0.1
_STOP_TIMEOUT_S = 30.0
_LOG_TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class LocalServer:
    """A started server: where to reach it and its process id (for ``/proc`` figures)."""

    http_url: str
    """``http://127.0.0.1:PORT``: health, metrics, the HTTP API."""
    pid: int

    @property
    def session_url(self) -> str:
        """``ws://127.0.0.1:PORT/v1/session``: the WebSocket session endpoint."""
        return self.http_url.replace("http://", "ws://", 1) + "/v1/session"


@contextmanager
def local_server(
    config_text: str, *, start_timeout_s: float = 60.0, log_path: Path | None = None
) -> Iterator[LocalServer]:
    """Run ``scaivoice serve`` with ``config_text`` (TOML) on a free loopback port.

    Yields once ``/health`` answers 200. Leaving the block terminates the server (and kills it
    when it has not exited within 30 s).

    Args:
        config_text: the server's configuration file.
        start_timeout_s: how long loading may take (the embedded models take minutes).
        log_path: where the server's output goes (kept); default: a temporary file.

    Raises:
        ScaiVoiceError: the server exited at start-up or did not become healthy in time (the
            error ends with its log's tail).
    """
    with tempfile.TemporaryDirectory(prefix="scaivoice-bench-") as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(config_text)
        log_path = log_path if log_path is not None else Path(tmp) / "server.log"
        port = _free_port()
        command = [sys.executable, "-m", "scaivoice.engine.cli", "serve", "--config", str(config)]
        command += ["--host", _HOST, "--port", str(port), "--workers", "1"]  # one pid to measure
        env = {**os.environ, "SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD": "1"}
        with log_path.open("wb") as log:
            server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            http_url = f"http://{_HOST}:{port}"
            problem = _wait_healthy(http_url + "/health", server, start_timeout_s)
            if problem is not None:
                raise ScaiVoiceError(f"{problem}; its log ends with:\n{_tail(log_path)}")
            yield LocalServer(http_url=http_url, pid=server.pid)
        finally:
            _stop(server)


def _free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """Poll ``url`` until it answers 200 -> None, or what went wrong."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"the benchmark server exited at start-up (exit status {server.returncode})"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(_POLL_S)
    return f"the benchmark server did not become healthy in {timeout_s:g} s"


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])
