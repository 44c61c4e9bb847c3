"""``scaivoice serve --workers N``: processes sharing one port, supervised, metrics summed;
and ``GET /v1/admin/runtime``, which tells the workers apart.

The servers are real ``scaivoice serve`` processes on the test backends, on a free loopback
port. Which worker takes a connection is the kernel's choice (a hash of the connection's
addresses): the tests open fresh connections until they have met every worker, bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from scaivoice.engine._host.auth import hash_key
from scaivoice.engine._server.workers import available_cores, default_workers
from scaivoice.engine.client import connect

from .test_server import running_server

ROOT = Path(__file__).resolve().parent.parent
CONFIG = (
    "[server]\ndrain_timeout_s = 0.5\n"
    '[backends]\nstt = "test-stt"\nllm = "test-llm"\ntts = "test-tts"\n'
    "[session]\nwarm_up = false\n"
)
ATTEMPTS = 200
"""Fresh connections tried to meet every worker: each lands on one of two at random, so
missing one 200 times in a row is a 2**-199 chance."""


@dataclass
class ServerLog:
    """The server's stderr, read as it comes; ``wait_for`` a line without polling."""

    text: str = ""
    changed: trio.Event = field(default_factory=trio.Event)

    async def read(self, stream: trio.abc.ReceiveStream) -> None:
        while chunk := await stream.receive_some():
            self.text += chunk.decode(errors="replace")
            self.changed.set()
            self.changed = trio.Event()
        self.changed.set()

    async def wait_for(self, pattern: str, start: int = 0) -> re.Match[str]:
        while (found := re.compile(pattern).search(self.text, start)) is None:
            await self.changed.wait()
        return found


@dataclass
class Server:
    process: trio.Process
    url: str
    log: ServerLog

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/v1/session"


@asynccontextmanager
async def scaivoice_serve(tmp_path: Path, *arguments: str) -> AsyncIterator[Server]:
    """``scaivoice serve ARGUMENTS`` on a free port; yields once it listens; SIGTERM at the end
    (the test asserts how it exits)."""
    config = tmp_path / "scaivoice.toml"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "scaivoice.engine.cli", "serve", "--config", str(config)]
    command += ["--port", "0", *arguments]
    env = {**os.environ, "SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    log = ServerLog()
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process, command, stderr=subprocess.PIPE, env=env, cwd=ROOT, check=False
            )
        )
        assert process.stderr is not None
        nursery.start_soon(log.read, process.stderr)
        with trio.fail_after(60):
            found = await log.wait_for(r"listening on (http://\S+)( with \d+ workers)?|exited")
        assert found.group(1), log.text
        try:
            yield Server(process, found.group(1), log)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)


def _fresh() -> httpx.AsyncClient:
    """A client that opens a new connection for every request (so the kernel picks a worker
    again each time)."""
    return httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=10)


async def _workers(url: str, count: int) -> dict[int, dict[str, Any]]:
    """A ``/v1/admin/runtime`` snapshot of each of ``count`` workers, by pid."""
    seen: dict[int, dict[str, Any]] = {}
    async with _fresh() as http:
        for _ in range(ATTEMPTS):
            response = await http.get(url + "/v1/admin/runtime")
            assert response.status_code == 200, response.text
            seen[response.json()["pid"]] = response.json()
            if len(seen) == count:
                return seen
    raise AssertionError(f"met {len(seen)} of {count} workers in {ATTEMPTS} connections")


async def _sessions_metrics(url: str) -> tuple[float, float]:
    """(``scaivoice_sessions_active``, ``scaivoice_sessions_total``) of one scrape."""
    async with _fresh() as http:
        response = await http.get(url + "/metrics")
    assert response.status_code == 200
    values = {"scaivoice_sessions_active": 0.0, "scaivoice_sessions_total": 0.0}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in values:
                values[sample.name] += sample.value
    return values["scaivoice_sessions_active"], values["scaivoice_sessions_total"]


@pytest.mark.timeout(180)
async def test_two_workers_count_sessions_once_each_and_a_killed_worker_comes_back(
    tmp_path: Path,
) -> None:
    async with scaivoice_serve(tmp_path, "--workers", "2") as server, AsyncExitStack() as stack:
        assert server.url != "http://127.0.0.1:8765"  # --port 0: a free port, one for both
        first = await _workers(server.url, 2)
        assert len(first) == 2 and os.getpid() not in first
        # Open sessions, one connection each, until both workers hold at least one.
        opened = 0
        while True:
            await stack.enter_async_context(connect(server.ws_url))
            opened += 1
            live = {pid: s["sessions_live"] for pid, s in (await _workers(server.url, 2)).items()}
            assert sum(live.values()) == opened
            if all(live.values()):
                break
            assert opened < 20, "every session landed on the same worker"
        # One scrape counts every worker's sessions, each once.
        assert await _sessions_metrics(server.url) == (opened, opened)

        # Kill the worker with the fewest sessions: the other serves on, the dead one restarts.
        victim = min(live, key=lambda pid: live[pid])
        slot = (await server.log.wait_for(rf"worker (\d+) started \(pid {victim}\)")).group(1)
        mark = len(server.log.text)
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(30):  # reaped: its listening socket is closed
            await server.log.wait_for(
                rf"worker {slot} \(pid {victim}\) exited with status -9", mark
            )
        async with _fresh() as http:  # the other worker takes every connection meanwhile
            for _ in range(20):
                assert (await http.get(server.url + "/livez")).status_code == 200
        with trio.fail_after(60):
            found = await server.log.wait_for(rf"worker {slot} ready \(pid (\d+)\)", mark)
        reborn = int(found.group(1))
        assert reborn != victim
        after = await _workers(server.url, 2)
        assert set(after) == (set(first) - {victim}) | {reborn}
        assert after[reborn]["sessions_live"] == 0
        # The dead worker's live sessions left the gauge; the counter keeps its sessions.
        assert await _sessions_metrics(server.url) == (opened - live[victim], opened)

        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await server.process.wait()
    assert server.process.returncode == 0, server.log.text
    assert "received SIGTERM: draining 2 worker(s)" in server.log.text


@pytest.mark.timeout(120)
async def test_one_worker_is_the_server_process_itself(tmp_path: Path) -> None:
    async with scaivoice_serve(tmp_path, "--workers", "1") as server:
        assert "workers" not in server.log.text
        (pid,) = await _workers(server.url, 1)
        assert pid == server.process.pid
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await server.process.wait()
    assert server.process.returncode == 0


@pytest.mark.timeout(120)
async def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(CONFIG.replace('stt = "test-stt"', 'stt = "nope"'))
    command = [sys.executable, "-m", "scaivoice.engine.cli", "serve", "--config", str(config)]
    env = {**os.environ, "SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with trio.fail_after(60):
        result = await trio.run_process(
            [*command, "--port", "0", "--workers", "2"], capture_stderr=True, env=env, check=False
        )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "no stt backend named 'nope'" in stderr
    assert "failed to start (exit status 2): stopping" in stderr


def test_the_default_is_one_worker_per_available_core() -> None:
    cores = available_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert cores <= len(os.sched_getaffinity(0))
    assert default_workers() == (cores if sys.platform.startswith("linux") else 1)


async def test_runtime_is_for_admins_and_shows_the_process() -> None:
    tenants = {
        "acme": {
            "keys": [
                {"id": "user", "hash": hash_key("sk-user"), "roles": ["user"]},
                {"id": "admin", "hash": hash_key("sk-admin"), "roles": ["admin"]},
            ]
        }
    }
    async with (
        running_server({"tenants": tenants}) as (server, _),
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        assert (await http.get("/v1/admin/runtime")).status_code == 401
        user = {"Authorization": "Bearer sk-user"}
        assert (await http.get("/v1/admin/runtime", headers=user)).status_code == 403
        admin = {"Authorization": "Bearer sk-admin"}
        async with connect(server.ws_url, api_key="sk-user"):
            response = await http.get("/v1/admin/runtime", headers=admin)
        assert response.status_code == 200
        doc = response.json()
        assert doc["pid"] == os.getpid() and doc["sessions_live"] == 1
        assert doc["tasks"] > 5 and doc["threads"] >= 1
        assert doc["rss_mib"] > 10 and doc["open_fds"] > 3
        assert set(doc["lag_ms"]) == {"window_s", "samples", "p50", "p99", "max"}


@pytest.mark.timeout(120)
async def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    async with scaivoice_serve(tmp_path, "--workers", "2") as server:
        workers = await _workers(server.url, 2)
        exits = [os.pidfd_open(pid) for pid in workers]
        try:
            server.process.kill()  # SIGKILL: no SIGTERM is forwarded; the workers' stdin closes
            with trio.fail_after(30):
                for fd in exits:
                    await trio.lowlevel.wait_readable(fd)  # readable once the process exited
        finally:
            for fd in exits:
                os.close(fd)
    assert server.log.text.count("the supervisor is gone: draining") == 2
