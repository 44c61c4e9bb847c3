"""Shared state across replicas through Redis ([cluster] redis_url): session limits with leases,
request rates, admin telemetry, single-use session tokens, and Redis going down and coming back.

Every test runs a real redis-server (Debian's ``redis-server``; ``.ci/run`` installs it as root)
on a free loopback port, and real ScaiVoice servers on loopback that share it: in this process,
or a subprocess that is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from scaivoice.engine import ConfigError, hash_key
from scaivoice.engine._host.redis_link import redacted
from scaivoice.engine._server.service import RunningServer
from scaivoice.engine.client import connect, frames
from scaivoice.engine.testing import open_test_engine

from .test_server import _close_of, running_server

redis = pytest.importorskip("redis", reason="the cluster extra: pip install 'scaivoice[cluster]'")

ACME_USER, ACME_ADMIN, GLOBEX_USER = "sk-acme-user", "sk-acme-admin", "sk-globex-user"
LEASE_S = 2.0
TENANTS: dict[str, Any] = {
    "acme": {
        "keys": [
            {"id": "acme-user", "hash": hash_key(ACME_USER), "roles": ["user"]},
            {"id": "acme-admin", "hash": hash_key(ACME_ADMIN), "roles": ["admin"]},
        ],
        "limits": {"max_sessions": 2},
    },
    "globex": {"keys": [{"id": "globex-user", "hash": hash_key(GLOBEX_USER), "roles": ["user"]}]},
}


# --------------------------------------------------------------------------- a real Redis


class RedisServer:
    """A redis-server on a loopback port, without persistence: stop it and start it again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: trio.Process | None = None

    async def start(self) -> None:
        command = [
            _redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            "",
        ]
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None
        self._process = process
        seen = b""
        with trio.fail_after(10):
            while b"Ready to accept connections" not in seen:
                chunk = await process.stdout.receive_some()
                assert chunk, f"redis-server ended: {seen.decode(errors='replace')}"
                seen += chunk
        await process.stdout.aclose()  # it logs little more; the pipe is not read again

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            with trio.fail_after(10):
                await process.wait()

    def client(self) -> Any:
        return redis.Redis.from_url(self.url, decode_responses=True)


def _redis_server() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        reason = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it in CI")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --------------------------------------------------------------------------- replicas


def _config(redis_url: str, replica: str, **cluster: Any) -> dict[str, Any]:
    return {
        "tenants": TENANTS,
        "auth": {"token_secret": "one-secret-for-every-replica"},
        "cluster": {"redis_url": redis_url, "replica_id": replica, "lease_s": LEASE_S, **cluster},
    }


@asynccontextmanager
async def _replicas(
    redis_url: str, *names: str, **cluster: Any
) -> AsyncIterator[list[RunningServer]]:
    async with AsyncExitStack() as stack:
        servers = []
        for name in names:
            server, _ = await stack.enter_async_context(
                running_server(_config(redis_url, name, **cluster))
            )
            assert server.engine.cluster is not None and server.engine.cluster.up
            servers.append(server)
        yield servers


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _hold(stack: AsyncExitStack, server: RunningServer, key: str = ACME_USER) -> Any:
    """A session of ``key`` on ``server``, open until ``stack`` closes (the test's time limit
    bounds the connect: a deadline here would end before the session)."""
    return await stack.enter_async_context(connect(server.ws_url, api_key=key))


async def _end(session: Any) -> None:
    """End ``session`` and read to its close: the server gave its slot back before closing."""
    await session.end()
    with trio.fail_after(10):
        async for _ in session.events():
            pass


async def _redis(command: Any) -> Any:
    return await trio.to_thread.run_sync(command)


# --------------------------------------------------------------------------- session limits


async def test_a_tenant_limited_to_two_sessions_cannot_open_a_third_through_another_replica(
    redis_server: RedisServer,
) -> None:
    async with _replicas(redis_server.url, "a", "b") as (a, b), AsyncExitStack() as held:
        on_a = await _hold(held, a)
        on_b = await _hold(held, b)
        for server in (a, b):
            assert await _close_of(server.ws_url, api_key=ACME_USER) == (4429, "too_many_sessions")
        await _hold(held, b, GLOBEX_USER)  # another tenant is not affected
        await _end(on_b)  # its slot is free for either replica, as soon as the client sees it
        again = await _hold(held, a)
        assert await _close_of(b.ws_url, api_key=ACME_USER) == (4429, "too_many_sessions")
        for session in (on_a, again):
            await _end(session)
        slots = await _redis(lambda: redis_server.client().zcard("scaivoice:sessions:acme"))
        assert slots == 0  # every session gave its slot back


async def test_a_killed_replicas_slots_free_themselves_within_the_lease(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with (
        _replicas(redis_server.url, "a") as (a,),
        _subprocess_replica(tmp_path, redis_server.url, "killed") as (killed, process),
    ):
        async with AsyncExitStack() as held:
            await _hold(held, killed)
            await _hold(held, killed)
            assert await _close_of(a.ws_url, api_key=ACME_USER) == (4429, "too_many_sessions")
            process.send_signal(signal.SIGKILL)  # no release, no goodbye: its leases lapse
            killed_at = time.time()
            with trio.fail_after(10):
                await process.wait()
            scores = await _redis(
                lambda: redis_server.client().zrange(
                    "scaivoice:sessions:acme", 0, -1, withscores=True
                )
            )
            assert len(scores) == 2 and all(m.startswith("killed/") for m, _ in scores)
            expiry = max(score for _, score in scores) / 1000.0
            assert expiry <= killed_at + LEASE_S + 0.1
            # Until the leases lapse the slots are taken; then a new session is admitted.
            assert await _close_of(a.ws_url, api_key=ACME_USER) == (4429, "too_many_sessions")
        print(f"the clients saw the end {time.time() - killed_at:.2f} s after SIGKILL")
        await trio.sleep_until(trio.current_time() + max(0.0, expiry - time.time()) + 0.05)
        async with connect(a.ws_url, api_key=ACME_USER) as session:
            assert session.started is not None
        print(f"slots freed {time.time() - killed_at:.2f} s after SIGKILL (lease {LEASE_S} s)")


@asynccontextmanager
async def _subprocess_replica(
    directory: Path, redis_url: str, name: str
) -> AsyncIterator[tuple[RunningServer, trio.Process]]:
    """``scaivoice serve`` in a subprocess (test backends), sharing ``redis_url``."""
    config = directory / f"{name}.toml"
    config.write_text(_toml(_config(redis_url, name)), encoding="utf-8")
    command = [
        sys.executable,
        "-c",
        "from scaivoice.engine.cli import main; main()",
        "serve",
        "--config",
        str(config),
        "--port",
        "0",
        "--workers",
        "1",  # one process: a SIGKILL hits the process that holds the sessions' leases
    ]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        log = b""
        with trio.fail_after(60):
            while b"ScaiVoice listening on " not in log or not log.endswith(b"\n"):
                chunk = await process.stderr.receive_some()
                assert chunk, f"the replica ended: {log.decode(errors='replace')}"
                log += chunk
        url = log.decode().split("ScaiVoice listening on ", 1)[1].split()[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr)
            yield RunningServer(url=url, engine=None), process  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(10, shield=True):
                await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


def _toml(doc: dict[str, Any]) -> str:
    """Enough TOML for these configs (tables of strings, numbers, lists of tables)."""
    lines: list[str] = []

    def table(path: str, values: dict[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict | list)}
        if path:
            lines.append(f"[{path}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in scalars.items())
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{path}.{key}" if path else key, value)
            elif isinstance(value, list):
                for item in value:
                    lines.append(f"[[{path}.{key}]]")
                    lines.extend(f"{k} = {json.dumps(v)}" for k, v in item.items())

    table("", {"backends": {"stt": "test-stt", "llm": "test-llm", "tts": "test-tts"}, **doc})
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- rates, tokens


async def test_a_tenants_request_rate_is_shared_by_the_replicas(
    redis_server: RedisServer,
) -> None:
    tenants = {**TENANTS, "acme": {**TENANTS["acme"], "limits": {"requests_per_minute": 3}}}
    async with AsyncExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            config = _config(redis_server.url, name) | {"tenants": tenants}
            server, _ = await stack.enter_async_context(running_server(config))
            servers.append(server)
        a, b = servers
        statuses = []
        for server in (a, b, a, b, a):
            async with httpx.AsyncClient(base_url=server.url) as http:
                response = await http.get("/v1/models", headers=_auth(ACME_USER))
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["code"] == "rate_limited"
                assert 1 <= int(response.headers["retry-after"]) <= 20
        assert statuses == [200, 200, 200, 429, 429]
        async with httpx.AsyncClient(base_url=b.url) as http:  # another tenant's budget
            assert (await http.get("/v1/models", headers=_auth(GLOBEX_USER))).status_code == 200


async def test_a_session_token_used_on_one_replica_is_refused_on_the_other(
    redis_server: RedisServer,
) -> None:
    async with _replicas(redis_server.url, "a", "b") as (a, b):
        async with httpx.AsyncClient(base_url=a.url) as http:
            response = await http.post("/v1/session-tokens", headers=_auth(ACME_USER))
        token = response.json()["token"]
        with trio.fail_after(10):
            async with connect(a.ws_url, token=token) as session:
                assert session.started is not None
                await _end(session)
        assert await _close_of(b.ws_url, token=token) == (4401, "token_used")
        # ... and refused for that, it did not keep a slot on b
        async with AsyncExitStack() as held:
            await _hold(held, b)
            await _hold(held, b)


# --------------------------------------------------------------------------- admin telemetry


async def test_admins_see_every_replicas_sessions_and_live_events(
    redis_server: RedisServer,
) -> None:
    async with _replicas(redis_server.url, "a", "b") as (a, b):
        events: list[dict[str, Any]] = []
        subscribed, opened_on_b, closed_on_b = trio.Event(), trio.Event(), trio.Event()

        async def follow() -> None:  # a's event stream
            async with (
                httpx.AsyncClient(base_url=a.url, timeout=None) as http,
                http.stream("GET", "/v1/admin/events", headers=_auth(ACME_ADMIN)) as response,
            ):
                async for line in response.aiter_lines():
                    if line == ": connected":
                        subscribed.set()
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        events.append(event)
                        if event["replica"] == "b" and event["event"] == "session.opened":
                            opened_on_b.set()
                        if event["replica"] == "b" and event["event"] == "session.closed":
                            closed_on_b.set()
                            return

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery, AsyncExitStack() as held:
                nursery.start_soon(follow)
                await subscribed.wait()
                await _hold(held, a)
                on_b = await _hold(held, b)
                await opened_on_b.wait()  # b wrote its summaries before it published that
                sessions = await _admin_sessions(a, "live")
                assert sorted((s["replica"], s["tenant"]) for s in sessions) == [
                    ("a", "acme"),
                    ("b", "acme"),
                ]
                assert a.engine.cluster is not None
                await a.engine.cluster.wait_flushed()
                assert len(await _admin_sessions(b, "live")) == 2
                await on_b.send_text("hello")
                async for event in on_b.events():
                    if isinstance(event, frames.Metrics):
                        break
                await on_b.end()
                await closed_on_b.wait()
        b_events = [e["event"] for e in events if e["replica"] == "b"]
        assert b_events[0] == "session.opened" and b_events[-1] == "session.closed"
        assert {"state", "turn"} <= set(b_events)
        # a's session ended when the client left: a writes its summary when it has seen the
        # socket go, which the client does not wait for.
        with trio.fail_after(10):
            while len(ended := await _admin_sessions(a, "ended")) < 2:
                await trio.sleep(0.05)
        assert [(s["replica"], s["turns"]) for s in ended] == [("a", 0), ("b", 1)]  # newest first


async def _admin_sessions(server: RunningServer, status: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(
            "/v1/admin/sessions", params={"status": status}, headers=_auth(ACME_ADMIN)
        )
    assert response.status_code == 200
    document = response.json()
    assert "partial" not in document
    return list(document["data"])


# --------------------------------------------------------------------------- Redis down

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "operator-guide.md"


def _documented_cluster_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """The metrics table of the guide's section "Shared state (Redis)": name -> (type, labels)."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("### Shared state (Redis)", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `scaivoice_"):
            name, kind, labels = (cell.strip() for cell in line.strip("|").split("|")[:3])
            rows[name.strip("`")] = (kind, frozenset(re.findall(r"`(\w+)`", labels)))
    return rows


async def _cluster_metrics(server: RunningServer) -> dict[str, float]:
    """The ``scaivoice_cluster_*`` samples of ``/metrics`` (checked against the guide)."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    documented = _documented_cluster_metrics()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("scaivoice_cluster") or family.name.endswith("_created"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in documented, f"{name} is not in the guide's Shared state table"
        kind, labels = documented[name]
        assert family.type == kind
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert set(sample.labels) == labels
            label_text = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{label_text}}}" if label_text else "")] = sample.value
    assert {name.split("{")[0] for name in samples} <= set(documented)
    return samples


async def test_redis_down_limits_are_per_process_then_shared_again(
    redis_server: RedisServer,
) -> None:
    tenants = {**TENANTS, "acme": {**TENANTS["acme"], "limits": {"max_sessions": 1}}}
    async with AsyncExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            config = _config(redis_server.url, name) | {"tenants": tenants}
            server, _ = await stack.enter_async_context(running_server(config))
            servers.append(server)
        a, b = servers
        held = await stack.enter_async_context(AsyncExitStack())
        assert await _cluster_metrics(a) == {"scaivoice_cluster_up": 1.0}
        await redis_server.stop()
        # Each replica finds Redis down at its next command and keeps serving: the limit
        # holds per process (`when_down = "local"`), so each admits one session.
        on_a = await _hold(held, a)
        assert await _close_of(a.ws_url, api_key=ACME_USER) == (4429, "too_many_sessions")
        on_b = await _hold(held, b)
        async with httpx.AsyncClient(base_url=a.url) as http:
            health = await http.get("/health")
            sessions = (await http.get("/v1/admin/sessions", headers=_auth(ACME_ADMIN))).json()
        assert health.status_code == 503
        document = health.json()
        assert document["status"] == "degraded" and "cluster" in document["down"]
        cluster = document["cluster"]
        assert (cluster["ok"], cluster["limits"], cluster["replica"]) == (False, "local", "a")
        assert "ConnectionError" in cluster["error"]
        assert sessions["partial"] is True and len(sessions["data"]) == 1
        async with httpx.AsyncClient(base_url=a.url) as http:  # still ready: it serves
            assert (await http.get("/readyz")).status_code == 200
        assert await _cluster_metrics(a) == {
            "scaivoice_cluster_up": 0.0,
            'scaivoice_cluster_degraded_checks_total{check="session",outcome="local"}': 1.0,
            'scaivoice_cluster_degraded_checks_total{check="session",outcome="refused"}': 1.0,
        }

        await redis_server.start()  # empty: the replicas write their leases again
        with trio.fail_after(15):
            for server in (a, b):
                assert server.engine.cluster is not None
                await server.engine.cluster.wait_up()
        slots = await _redis(lambda: redis_server.client().zcard("scaivoice:sessions:acme"))
        assert slots == 2  # both sessions hold their slot again: no third is admitted
        for server in (a, b):
            assert await _close_of(server.ws_url, api_key=ACME_USER) == (4429, "too_many_sessions")
        async with httpx.AsyncClient(base_url=a.url) as http:
            health = await http.get("/health")
        assert health.status_code == 200 and health.json()["cluster"]["ok"] is True
        assert (await _cluster_metrics(a))["scaivoice_cluster_up"] == 1.0
        for session in (on_a, on_b):  # both end: their slots are free again
            await _end(session)
        async with connect(b.ws_url, api_key=ACME_USER) as session:
            assert session.started is not None


async def test_redis_down_with_when_down_refuse_refuses_what_a_shared_limit_guards(
    redis_server: RedisServer,
) -> None:
    initech = "sk-initech-user"
    tenants = {
        "acme": {**TENANTS["acme"], "limits": {"max_sessions": 5}},
        "globex": {**TENANTS["globex"], "limits": {"requests_per_minute": 100}},
        "initech": {"keys": [{"id": "initech", "hash": hash_key(initech), "roles": ["user"]}]},
    }
    config = _config(redis_server.url, "a", when_down="refuse") | {"tenants": tenants}
    async with running_server(config) as (a, _):
        await redis_server.stop()
        code, reason = await _close_of(a.ws_url, api_key=ACME_USER)
        assert (code, reason) == (4429, "too_many_sessions")
        async with httpx.AsyncClient(base_url=a.url) as http:
            refused = await http.get("/v1/models", headers=_auth(GLOBEX_USER))
            assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
            assert "Redis" in refused.json()["detail"]
            assert (await http.get("/health")).json()["cluster"]["limits"] == "refuse"
        async with connect(a.ws_url, api_key=initech) as session:  # no limit to check
            assert session.started is not None
        await redis_server.start()
        assert a.engine.cluster is not None
        with trio.fail_after(15):
            await a.engine.cluster.wait_up()
        async with connect(a.ws_url, api_key=ACME_USER) as session:
            assert session.started is not None


async def test_a_replica_started_while_redis_is_down_serves_and_shares_once_it_answers(
    redis_server: RedisServer,
) -> None:
    await redis_server.stop()
    async with running_server(_config(redis_server.url, "late")) as (late, _):
        cluster = late.engine.cluster
        assert cluster is not None and not cluster.up
        async with connect(late.ws_url, api_key=ACME_USER) as session:  # per process meanwhile
            await redis_server.start()
            with trio.fail_after(15):
                await cluster.wait_up()
            members = await _redis(
                lambda: redis_server.client().zrange("scaivoice:sessions:acme", 0, -1)
            )
            assert [m.split("/")[0] for m in members] == ["late"]  # registered on recovery
            await _end(session)


async def test_a_url_that_is_not_redis_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        async with open_test_engine({"cluster": {"redis_url": "http://127.0.0.1:1/"}}):
            pass


def test_the_password_of_a_redis_url_is_never_shown() -> None:
    assert redacted("redis://:s3cret@redis.internal:6379/0") == "redis://:***@redis.internal:6379/0"
    assert redacted("rediss://app:s3cret@10.0.0.5/1") == "rediss://app:***@10.0.0.5/1"
    assert redacted("unix:///run/redis.sock") == "unix:///run/redis.sock"
