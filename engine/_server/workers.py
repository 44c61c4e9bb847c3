"""``scaivoice serve --workers N``: N server processes on one port, supervised by the parent.

::

    supervisor (the parent: no engine, no models)    worker (``scaivoice serve`` with an
                                                       internal --worker-ready-fd flag)
      holds HOST:PORT (bound with SO_REUSEPORT,
      never listening; port 0 -> one real port)
      makes a fresh PROMETHEUS_MULTIPROC_DIR
      starts N workers ───────────────────────────►  opens the engine (loads its own models)
                                                     listens on HOST:PORT with SO_REUSEPORT
      "listening on" once all are ready ◄── ready ── writes "ready" to its pipe
                                                     serves; /metrics sums every worker
      a worker exits: restarted after 0.5 s,
      doubling to 30 s (reset after 60 s up)
      SIGTERM / SIGINT: SIGTERM to every worker ──►  drains as a single server does, exits
      after drain_timeout_s + 15 s: SIGKILL          (stdin closed = supervisor gone: drains)
      a second signal: SIGKILL at once

The kernel spreads new connections over the workers' listening sockets. A worker that fails
before its first "ready" (a configuration error, a backend that does not exist) stops the whole
server with its exit status: restarting it would fail the same way. Every worker keeps its own
state: without a shared store (``[cluster]``) limits, session tokens and admin telemetry are
per worker. Linux only (:mod:`.reuseport`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
from prometheus_client.multiprocess import mark_process_dead

from .._contract.plugins import PluginHost
from .._host.config import EngineConfig
from .reuseport import bind_shared_port, reuse_port_supported
from .service import serve

__all__ = [
    "WorkerPlan",
    "available_cores",
    "default_workers",
    "run_worker",
    "supervise",
    "wait_for_supervisor_or_sigterm",
]

log = logging.getLogger("scaivoice.server")

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
_STABLE_S = 60.0
"""A worker up this long had a good run: its next restart waits the shortest backoff again."""
_DRAIN_MARGIN_S = 15.0
"""Past ``drain_timeout_s``: a worker's last sessions get 5 s to close, its connections 5 s."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What the supervisor runs."""

    workers: int
    host: str
    port: int
    """0: any free port (one, shared by every worker)."""
    drain_timeout_s: float
    """The workers' ``server.drain_timeout_s``: they are killed ``_DRAIN_MARGIN_S`` after."""
    command: Callable[[int, int], Sequence[str]]
    """``(port, ready_fd)`` -> a worker's command line (``scaivoice serve`` for one worker)."""
    env: Mapping[str, str]
    """The workers' environment (``PROMETHEUS_MULTIPROC_DIR`` is added)."""


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, cut to a cgroup v2 CPU quota
    (a container's CPU limit), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_workers() -> int:
    """``serve``'s workers when none are asked for: :func:`available_cores` where the port can
    be shared (Linux), else 1."""
    return available_cores() if reuse_port_supported() else 1


async def supervise(
    plan: WorkerPlan, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> int:
    """Run ``plan.workers`` workers on one port until SIGTERM or SIGINT, then drain them.

    Reports ``http://host:port`` once every worker is ready. Returns the exit status: 0 when
    every worker drained and exited cleanly, 1 when one had to be killed or failed while
    stopping, or the status of a worker that failed at its first start.

    Raises:
        ConfigError: the port cannot be shared (not Linux) or is taken.
    """
    held, port = bind_shared_port(plan.host, plan.port)
    metrics_dir = tempfile.mkdtemp(prefix="scaivoice-metrics-")
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            supervisor = _Supervisor(plan, held, port, metrics_dir)
            return await supervisor.run(signals, task_status)
    finally:
        for sock in held:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    def __init__(
        self, plan: WorkerPlan, held: Sequence[socket.socket], port: int, metrics_dir: str
    ) -> None:
        self.plan = plan
        self.port = port
        self.metrics_dir = metrics_dir
        self.url = _url(held, port)
        self.env = {**plan.env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        self.processes: dict[int, trio.Process] = {}
        self.ready = 0
        self.settled = trio.Event()
        """Every worker is ready, or the server stops."""
        self.stopping = trio.Event()
        self.failure: int | None = None
        self.unclean = False

    async def run(self, signals: AsyncIterator[int], task_status: trio.TaskStatus[str]) -> int:
        async with trio.open_nursery() as outer:
            outer.start_soon(self._on_signals, signals)
            outer.start_soon(self._escalate)
            async with trio.open_nursery() as slots:
                for slot in range(self.plan.workers):
                    slots.start_soon(self._keep, slot)
                await self.settled.wait()
                if not self.stopping.is_set():
                    log.info(
                        "ScaiVoice listening on %s with %d workers (sessions at %s/v1/session)",
                        self.url,
                        self.plan.workers,
                        self.url.replace("http", "ws", 1),
                    )
                    task_status.started(self.url)
            outer.cancel_scope.cancel()
        if self.failure is not None:
            return self.failure
        return 1 if self.unclean else 0

    # ------------------------------------------------------------------ stopping

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if not self.stopping.is_set():
                log.warning(
                    "received %s: draining %d worker(s)",
                    signal.Signals(signum).name,
                    len(self.processes),
                )
                self._stop(signal.SIGTERM)
            else:
                log.warning("received %s again: killing the workers", signal.Signals(signum).name)
                self._stop(signal.SIGKILL)

    async def _escalate(self) -> None:
        await self.stopping.wait()
        await trio.sleep(self.plan.drain_timeout_s + _DRAIN_MARGIN_S)
        if self.processes:
            log.warning(
                "%d worker(s) still running %.0f s after SIGTERM: killing them",
                len(self.processes),
                self.plan.drain_timeout_s + _DRAIN_MARGIN_S,
            )
            self._stop(signal.SIGKILL)

    def _stop(self, signum: int) -> None:
        self.stopping.set()
        self.settled.set()
        if signum == signal.SIGKILL:
            self.unclean = True
        for process in list(self.processes.values()):
            _signal(process, signum)

    # ------------------------------------------------------------------ workers

    async def _keep(self, slot: int) -> None:
        """Run worker ``slot``, restarting it whenever it exits, until the server stops."""
        backoff = _BACKOFF_FIRST_S
        first = True
        while not self.stopping.is_set():
            began = trio.current_time()
            process, ready = await self._start(slot)
            if ready and first:
                first = False
                self.ready += 1
                if self.ready == self.plan.workers:
                    self.settled.set()
            status = await process.wait()
            await self._forget(slot, process)
            if self.stopping.is_set():
                if status != 0:
                    self.unclean = True
                    log.warning(
                        "worker %d (pid %d) exited with status %d", slot, process.pid, status
                    )
                return
            if first:
                log.error(
                    "worker %d (pid %d) failed to start (exit status %d): stopping",
                    slot,
                    process.pid,
                    status,
                )
                self.failure = status if status > 0 else 1
                self._stop(signal.SIGKILL)
                return
            if trio.current_time() - began >= _STABLE_S:
                backoff = _BACKOFF_FIRST_S
            log.warning(
                "worker %d (pid %d) exited with status %d: restarting it in %.1f s",
                slot,
                process.pid,
                status,
                backoff,
            )
            with trio.move_on_after(backoff):
                await self.stopping.wait()
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _start(self, slot: int) -> tuple[trio.Process, bool]:
        """Start worker ``slot`` -> (its process, whether it reported ready before exiting)."""
        read_fd, write_fd = os.pipe()
        async with trio.lowlevel.FdStream(read_fd) as pipe:
            try:
                process = await trio.lowlevel.open_process(
                    list(self.plan.command(self.port, write_fd)),
                    stdin=subprocess.PIPE,
                    env=self.env,
                    pass_fds=(write_fd,),
                )
            finally:
                os.close(write_fd)  # the worker's copy is the only one left
            self.processes[slot] = process
            log.info("worker %d started (pid %d)", slot, process.pid)
            if self.stopping.is_set():  # stopped while it was being started
                _signal(process, signal.SIGTERM)
            report = b""
            while b"\n" not in report:
                chunk = await pipe.receive_some(64)  # b"" once the worker exited
                if not chunk:
                    break
                report += chunk
        ready = report.startswith(b"ready")
        if ready:
            log.info("worker %d ready (pid %d)", slot, process.pid)
        return process, ready

    async def _forget(self, slot: int, process: trio.Process) -> None:
        """After ``process`` exited: its live gauges leave ``/metrics``, its stdin closes."""
        if self.processes.get(slot) is process:
            del self.processes[slot]
        mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        if process.stdin is not None:
            await trio.aclose_forcefully(process.stdin)


def _signal(process: trio.Process, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:  # exited, not yet reaped
        pass


def _url(held: Sequence[socket.socket], port: int) -> str:
    host = held[0].getsockname()[0]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# ---------------------------------------------------------------------- the worker's side


async def wait_for_supervisor_or_sigterm(
    lifeline: trio.abc.ReceiveStream, signals: AsyncIterator[int]
) -> None:
    """A worker's shutdown trigger: return at the first of ``signals`` (SIGTERM, which the
    supervisor forwards), or when ``lifeline`` (its stdin, a pipe from the supervisor) ends:
    the supervisor is gone.

    The caller keeps ``signals`` open while the worker drains, so that a second SIGTERM (one
    sent to the whole process group, then forwarded) does not kill it: the supervisor
    escalates with SIGKILL if it must.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_lifeline, lifeline, nursery.cancel_scope)
        async for _ in signals:
            log.info("worker %d: SIGTERM: draining", os.getpid())
            nursery.cancel_scope.cancel()
            break


async def _watch_lifeline(lifeline: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
    while await lifeline.receive_some(64):
        pass
    log.warning("worker %d: the supervisor is gone: draining", os.getpid())
    scope.cancel()


def run_worker(
    config: EngineConfig, host: PluginHost, *, ready_fd: int, metrics_dir: str | None
) -> None:
    """A worker's life (the internal ``--worker-ready-fd`` of ``scaivoice serve``): serve on the
    shared port, write ``ready`` to ``ready_fd`` once listening, stop on SIGTERM or when the
    supervisor is gone. SIGINT is left to the supervisor (a terminal's Ctrl-C reaches both).

    Raises:
        ConfigError: as :func:`~.service.serve` (the supervisor then stops with status 2).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.lowlevel.FdStream(os.dup(0)) as lifeline:
                await serve(
                    config,
                    host,
                    shutdown_trigger=partial(wait_for_supervisor_or_sigterm, lifeline, signals),
                    reuse_port=True,
                    metrics_dir=metrics_dir,
                    task_status=_ReportReady(ready_fd),
                )

    trio.run(main)


class _ReportReady:
    """The task status :func:`~.service.serve` reports to: ``ready`` down the pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def started(self, value: object = None) -> None:
        try:
            os.write(self.fd, b"ready\n")
        except OSError:  # the supervisor is gone: the lifeline says so too
            pass
        os.close(self.fd)
