"""Running the engine as a service: the HTTP and WebSocket server on one port, graceful drain."""

from __future__ import annotations

import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from .._contract.plugins import PluginHost
from .._errors import ConfigError
from .._host.config import EngineConfig
from .._host.engine import Engine
from .app import ScaiVoiceApp
from .connection import serve_http
from .reuseport import open_shared_listeners

__all__ = ["RunningServer", "serve", "wait_for_termination"]

log = logging.getLogger("scaivoice.server")


@dataclass(frozen=True, slots=True)
class RunningServer:
    """What :func:`serve` reports once it listens."""

    url: str
    """``http://host:port`` of the bound socket (the real port when 0 was asked)."""
    engine: Engine

    @property
    def ws_url(self) -> str:
        """The WebSocket session URL."""
        return self.url.replace("http://", "ws://", 1) + "/v1/session"


async def wait_for_termination() -> None:
    """Return on SIGTERM or SIGINT (main thread only)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.warning("received %s: draining", signal.Signals(signum).name)
            return


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_exposure(config: EngineConfig) -> None:
    """Refuse to serve without API keys on anything but a loopback address.

    Raises:
        ConfigError: no API key is configured and the host is not a loopback address.
    """
    if config.open_mode and not is_loopback(config.server.host):
        raise ConfigError(
            f"no API keys are configured, so the server is open; it refuses to listen on "
            f"{config.server.host!r}. Configure [tenants.NAME] keys (scaivoice keys new) or bind "
            "to 127.0.0.1"
        )


async def serve(
    config: EngineConfig,
    host: PluginHost,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_termination,
    tracer: Any = None,
    reuse_port: bool = False,
    metrics_dir: str | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the engine and serve it until ``shutdown_trigger`` returns, then drain.

    ``tracer`` overrides the OpenTelemetry tracer ``[telemetry]`` would build. A worker of
    ``scaivoice serve --workers N`` listens with ``reuse_port`` (its port shared with the other
    workers, see :mod:`.reuseport`) and serves ``/metrics`` summed over every worker's files in
    ``metrics_dir`` (prometheus_client's multiprocess mode).

    A backend or feature that is unavailable at start (its upstream does not answer, its model
    does not load) does not stop it: the server listens with it down, reports it in ``/health``
    and recovers it in the background (see :meth:`Engine.open`).

    Draining: new sessions are refused (1013) and ``/health`` answers 503; live sessions may go
    on for ``server.drain_timeout_s``, then are closed with 1001 "going away". Cancelling
    ``serve`` stops at once (sessions are closed with 1001 as their scopes unwind).

    Raises:
        ConfigError: no API key is configured and the host is not a loopback address, or a
            backend or feature is not installed or badly configured.
    """
    server = config.server
    refuse_open_exposure(config)
    tracer = tracer if tracer is not None else _tracer(config)
    async with Engine.open(config, host, tracer=tracer) as engine:
        if config.open_mode:
            log.warning(
                "NO API KEYS CONFIGURED: the server is OPEN to anyone who can reach %s "
                "(loopback only). Configure tenants with keys before exposing it.",
                server.host,
            )
        if metrics_dir is not None:
            engine.telemetry.aggregate_processes(metrics_dir)
        stop_http = trio.Event()
        app = ScaiVoiceApp(engine)
        listeners = await open_shared_listeners(server.host, server.port) if reuse_port else None
        sampling = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_in, sampling, app.admin.monitor.run)
            binds = await nursery.start(
                partial(
                    serve_http,
                    app,
                    host=server.host,
                    port=server.port,
                    max_message_bytes=config.session.max_frame_bytes * 4,
                    shutdown_trigger=stop_http.wait,
                    settings=server,
                    graceful_timeout_s=5.0,
                    listeners=listeners,
                )
            )
            url = binds[0]
            log.info(
                "ScaiVoice listening on %s (sessions at %s/v1/session)",
                url,
                url.replace("http", "ws", 1),
            )
            task_status.started(RunningServer(url=url, engine=engine))
            await shutdown_trigger()
            await drain(engine, config.server.drain_timeout_s)
            stop_http.set()
            sampling.cancel()


async def drain(engine: Engine, timeout_s: float) -> None:
    """Refuse new sessions, wait up to ``timeout_s`` for live ones, then close them (1001)."""
    sessions = engine.sessions
    sessions.draining = True
    log.info("draining %d live session(s), up to %.0f s", len(sessions.live), timeout_s)
    with trio.move_on_after(timeout_s):
        await sessions.wait_empty()
    if sessions.live:
        log.warning("closing %d session(s) still live: going away", len(sessions.live))
        sessions.close_all()
        with trio.move_on_after(5):
            await sessions.wait_empty()


async def _run_in(scope: trio.CancelScope, function: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await function()


def _tracer(config: EngineConfig) -> Any:
    """An OpenTelemetry tracer as ``[telemetry] traces`` asks (``None`` for ``none``).

    Raises:
        ConfigError: an unknown exporter, or OpenTelemetry is not installed.
    """
    kind = config.telemetry.traces
    if kind == "none":
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigError("traces need OpenTelemetry: pip install 'scaivoice[otel]'") from exc
    exporter: Any
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = config.telemetry.otlp_endpoint
        exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    else:
        raise ConfigError(f"[telemetry] traces must be none, otlp or console, not {kind!r}")
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.telemetry.service_name})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("scaivoice")
