"""One port, several processes: sockets bound with ``SO_REUSEPORT``.

Every worker binds its own listening socket to the same address with ``SO_REUSEPORT`` set
before ``bind``; the kernel then spreads new connections over the listening sockets (by a hash
of the connection's addresses). The supervisor holds the port with sockets that are bound but
never listen: they take no connections, keep the port while a worker restarts, and turn a port
0 into one real port that every worker then binds. Linux only (elsewhere ``SO_REUSEPORT`` does
not spread connections, or does not exist).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import trio

from .._errors import ConfigError

__all__ = ["bind_shared_port", "open_shared_listeners", "reuse_port_supported"]

_BACKLOG = 0xFFFF  # the kernel caps it at net.core.somaxconn


def reuse_port_supported() -> bool:
    """Whether this system spreads connections over ``SO_REUSEPORT`` sockets (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


_Infos = list[tuple[Any, Any, Any, Any, Any]]


def _addresses(infos: _Infos) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, socket address) of each IPv4 / IPv6 address, once each."""
    seen: list[tuple[int, tuple[Any, ...]]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in seen:
            seen.append((family, tuple(sockaddr)))
    return seen


def _options(sock: socket.socket | trio.socket.SocketType, family: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def bind_shared_port(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind (without listening) every address of ``host`` at ``port`` -> (sockets, port).

    A port 0 is resolved by the first bind; the other addresses are bound to the same port.

    Raises:
        ConfigError: the system cannot share a port, or the port is taken.
    """
    if not reuse_port_supported():
        raise ConfigError("several workers need SO_REUSEPORT (Linux); run with --workers 1")
    held: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, sockaddr in _addresses(infos):
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)
            _options(sock, family)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in held:
            sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
    if not held:
        raise ConfigError(f"{host!r} has no IPv4 or IPv6 address to bind")
    return held, port


async def open_shared_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listen on every address of ``host`` at ``port`` with ``SO_REUSEPORT`` (set before bind).

    Raises:
        OSError: an address cannot be bound (another program holds the port without sharing
            it).
    """
    pending: list[trio.socket.SocketType] = []
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, sockaddr in _addresses(infos):
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            pending.append(sock)
            _options(sock, family)
            await sock.bind(sockaddr)
            sock.listen(_BACKLOG)
        listeners = [trio.SocketListener(sock) for sock in pending]
        pending = []
        return listeners
    finally:
        for sock in pending:  # a bind failed (or was cancelled): close what was opened
            sock.close()
