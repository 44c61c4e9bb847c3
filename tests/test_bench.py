"""The benchmarks' shared parts (the server launcher, the ``/proc`` readers) and ``bench turns``
end to end through the command line. ``bench load`` has its own tests (test_bench_load.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scaivoice.conformance.bench._proc import machine_ticks, process_ticks, rss_mib
from scaivoice.conformance.bench._server import local_server
from scaivoice.engine import ScaiVoiceError

TEST_BACKENDS = '[backends]\nstt = "test-stt"\nllm = "test-llm"\ntts = "test-tts"\n'

# Every step below is bounded: the launcher waits at most start_timeout_s for /health and 30 s
# for the server to stop, each HTTP call has a timeout, and each subprocess.run a timeout.


def test_the_launcher_starts_a_healthy_server_and_stops_it() -> None:
    with local_server(TEST_BACKENDS, start_timeout_s=60) as server:
        assert server.http_url.startswith("http://127.0.0.1:")
        assert server.session_url == server.http_url.replace("http", "ws", 1) + "/v1/session"
        assert httpx.get(server.http_url + "/health", timeout=5).status_code == 200
        pid = server.pid
        assert Path(f"/proc/{pid}").exists() or sys.platform != "linux"
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)


def test_a_server_that_cannot_start_is_an_error_with_its_log() -> None:
    with (
        pytest.raises(ScaiVoiceError, match="exited at start-up") as caught,
        local_server('[backends]\nstt = "no-such-stt"\n', start_timeout_s=60),
    ):
        pytest.fail("the server started")
    assert "no stt backend named 'no-such-stt'" in str(caught.value)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_the_proc_readers() -> None:
    machine = machine_ticks()
    assert machine is not None and 0 <= machine.busy <= machine.total
    ticks = process_ticks(os.getpid())
    thread = process_ticks(os.getpid(), thread=os.getpid())
    assert ticks is not None and thread is not None and 0 <= thread <= ticks
    rss = rss_mib(os.getpid())
    assert rss is not None and 1 < rss < 1 << 20
    assert rss_mib(os.getpid(), "VmNoSuchField") is None
    with subprocess.Popen([sys.executable, "-c", ""]) as gone:
        gone.wait(timeout=30)
    assert rss_mib(gone.pid) is None and process_ticks(gone.pid) is None


@pytest.mark.slow  # a server and its models in a subprocess: minutes on a busy machine
def test_bench_turns_runs_through_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaivoice.engine.cli", "bench", "turns", "--turns", "3"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("3 turns through ws://127.0.0.1:")
    assert sum(line.strip().startswith("n=3 ") for line in lines) == 5, result.stdout
