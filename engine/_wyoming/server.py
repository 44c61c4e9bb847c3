"""``scaivoice wyoming``: the engine as a Wyoming server, for Home Assistant and its satellites.

Home Assistant's Wyoming integration (and any Wyoming client) gets speech to text, text to
speech and wake word detection from one server: the recogniser, the voice library and the
server-side wake-word feature of an engine opened in-process from the same configuration as
``scaivoice serve``. The language model is not used (the configured one is not loaded: Home
Assistant runs its own conversation agent).

Wyoming's own server classes are asyncio; the engine is trio. The server listens with trio
(:func:`trio.serve_listeners`) and speaks the wire format itself (:mod:`.framing`), with the
``wyoming`` package's event classes: no second event loop, no thread between the two.

Wyoming has no authentication: the server listens on loopback unless told otherwise
(``allow_remote``), and then anyone who can reach the port may use it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlparse

import msgspec
import trio

from .._contract.plugins import PluginHost
from .._errors import ConfigError
from .._host.config import EngineConfig
from .._host.engine import Engine
from .._server.service import is_loopback, wait_for_termination

try:
    import wyoming  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is part of the test install
    raise ConfigError(
        "scaivoice wyoming needs the wyoming package: pip install 'scaivoice[wyoming]'"
    ) from exc

from wyoming.error import Error

from .framing import encode_event
from .handler import ClientTooSlow, WyomingConnection
from .service import WyomingService

__all__ = ["DEFAULT_URI", "WyomingAddress", "parse_uri", "serve_wyoming"]

log = logging.getLogger("scaivoice.wyoming")

DEFAULT_URI = "tcp://127.0.0.1:10300"
"""Where the server listens by default (10300: Wyoming's usual speech-to-text port)."""
MAX_CONNECTIONS = 64
"""Connections served at once; one more is told ``too_many_connections`` and closed."""
_GOODBYE_TIMEOUT_S = 2.0
_UNUSED_LLM = "echo"


@dataclass(frozen=True, slots=True)
class WyomingAddress:
    """Where to listen: ``tcp`` on ``host``:``port``, or ``unix`` at ``path``."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def uri(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_uri(uri: str) -> WyomingAddress:
    """``tcp://HOST:PORT`` (port 0: any free one) or ``unix://PATH``.

    Raises:
        ConfigError: any other URI.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError as exc:
            raise ConfigError(f"bad port in {uri!r}") from exc
        if not parsed.hostname or port is None:
            raise ConfigError(f"a tcp:// URI needs a host and a port: {uri!r}")
        return WyomingAddress("tcp", host=parsed.hostname, port=port)
    if parsed.scheme == "unix":
        path = parsed.netloc + parsed.path
        if not path:
            raise ConfigError(f"a unix:// URI needs a socket path: {uri!r}")
        return WyomingAddress("unix", path=path)
    raise ConfigError(f"scaivoice wyoming serves tcp:// or unix:// URIs, not {uri!r}")


async def serve_wyoming(
    config: EngineConfig,
    host: PluginHost,
    *,
    uri: str = DEFAULT_URI,
    allow_remote: bool = False,
    tenant: str = "default",
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_termination,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the engine and serve it over Wyoming at ``uri`` until ``shutdown_trigger`` returns.

    ``task_status`` reports the URI served (with the port chosen, for port 0) once clients can
    connect. Returning or cancelling closes every connection (what they were doing is
    cancelled) and the engine.

    Raises:
        ConfigError: a bad configuration or URI, or a ``tcp://`` address that is not loopback
            without ``allow_remote`` (Wyoming has no credentials).
    """
    address = parse_uri(uri)
    if address.scheme == "tcp" and not allow_remote and not is_loopback(address.host):
        raise ConfigError(
            f"Wyoming has no authentication: scaivoice wyoming listens on a loopback address "
            f"unless told --allow-remote, not {address.host!r}"
        )
    # The language model is Home Assistant's business: do not load the configured one.
    config = msgspec.structs.replace(
        config, backends=msgspec.structs.replace(config.backends, llm=_UNUSED_LLM)
    )
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(Engine.open(config, host))
        service = WyomingService(engine, tenant=tenant)
        listeners = await _listen(address)
        served = _served(address, listeners)
        limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    trio.serve_listeners, partial(_connection, service, limiter), listeners
                )
                log.info("scaivoice wyoming: serving %s", served)
                task_status.started(served)
                await shutdown_trigger()
                nursery.cancel_scope.cancel()
        finally:
            if address.scheme == "unix":
                _unlink(address.path)


async def _listen(address: WyomingAddress) -> list[trio.SocketListener]:
    if address.scheme == "tcp":
        try:
            return await trio.open_tcp_listeners(address.port, host=address.host)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address.uri()}: {exc.strerror or exc}") from exc
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        _unlink(address.path)  # a socket file left by a server that did not stop cleanly
        await sock.bind(address.path)
        sock.listen()
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {address.uri()}: {exc.strerror or exc}") from exc
    return [trio.SocketListener(sock)]


def _unlink(path: str) -> None:
    """Remove the socket file at ``path`` (never anything else)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _served(address: WyomingAddress, listeners: list[trio.SocketListener]) -> str:
    if address.scheme == "unix":
        return address.uri()
    port = listeners[0].socket.getsockname()[1]
    return WyomingAddress("tcp", host=address.host, port=port).uri()


async def _connection(
    service: WyomingService, limiter: trio.CapacityLimiter, stream: trio.SocketStream
) -> None:
    """Serve one connection; whatever happens, the server goes on (never raises)."""
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        with trio.move_on_after(_GOODBYE_TIMEOUT_S, shield=True):
            refusal = Error(text="the server is serving too many connections", code="busy")
            try:
                await stream.send_all(encode_event(refusal.event()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await stream.aclose()
        return
    try:
        async with stream:
            await WyomingConnection(stream, service).run()
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("wyoming: a client went away mid-stream")
    except* ClientTooSlow as group:
        log.warning("wyoming: closing a connection: %s", group.exceptions[0])
    except* Exception:  # a bug: logged, this connection only
        log.exception("wyoming: a connection failed")
    finally:
        limiter.release()
