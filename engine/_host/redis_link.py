"""Redis from trio: redis-py's synchronous client in worker threads, and a pub/sub thread.

No trio-native Redis client is kept up; redis-py is, so commands run in worker threads
(:meth:`RedisLink.run`, at most ``max_threads`` at once, each with a pooled connection) and one
thread listens to pub/sub channels (:class:`Listener`), handing each message to trio with
``trio.from_thread``. Every redis-py error (refused, timed out, a script error, ``READONLY``
during a fail-over ...) is mapped to :class:`RedisDown` at this edge, chained with ``from``.

Threads cannot be cancelled: a command holds its caller for at most ``timeout_s`` (the socket
timeout), once more if a stale pooled connection is retried. Only the ``cluster`` extra
(``redis``) is needed, and only when ``[cluster] redis_url`` is set.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import trio

from .._errors import ConfigError

__all__ = ["Listener", "RedisDown", "RedisLink", "redacted"]

log = logging.getLogger("scaivoice.cluster")

T = TypeVar("T")

_POLL_S = 0.1
"""How long the listener waits for a message before it looks at its channels again (so a
subscription starts, and the thread stops, within this long)."""
_RETRY_FIRST_S = 0.25
_RETRY_MAX_S = 5.0


class RedisDown(Exception):
    """Redis did not answer, or refused: the shared state is out of reach for now."""


def redacted(url: str) -> str:
    """``url`` without its password (for logs and ``/health``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisLink:
    """A redis-py client whose commands run in worker threads.

    Args:
        url: the Redis URL (``redis://``, ``rediss://``, ``unix://``).
        timeout_s: the longest a connect or a command may take.
        max_threads: commands in flight at once (each has a connection of the pool).

    Raises:
        ConfigError: redis-py is not installed (the ``cluster`` extra), or ``url`` is not a
            Redis URL.
    """

    def __init__(self, url: str, *, timeout_s: float, max_threads: int = 8) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise ConfigError(
                "[cluster] redis_url needs the Redis client: pip install 'scaivoice[cluster]'"
            ) from exc
        self._errors = redis.RedisError
        try:
            pool = redis.ConnectionPool.from_url(
                url,
                # One command in a thread at a time per connection, plus the listener's.
                max_connections=max_threads + 2,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # A pooled connection that went stale (Redis restarted) is retried once, at
                # once; a Redis that is down is not waited for.
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigError(f"[cluster] redis_url is not a Redis URL: {exc}") from exc
        self.client = redis.Redis(connection_pool=pool)
        self.url = redacted(url)
        self._limiter = trio.CapacityLimiter(max_threads)

    async def run(self, command: Callable[[Any], T]) -> T:
        """``command(client)`` in a worker thread; its result.

        Cancelling it waits for the command to end (at most the socket timeout): a thread
        cannot be stopped.

        Raises:
            RedisDown: any redis-py error.
        """
        return await trio.to_thread.run_sync(self._guarded, command, limiter=self._limiter)

    def _guarded(self, command: Callable[[Any], T]) -> T:
        try:
            return command(self.client)
        except self._errors as exc:
            raise RedisDown(describe(exc)) from exc

    def register_script(self, source: str) -> Any:
        """A Lua script, run with EVALSHA (loaded when Redis does not have it)."""
        return self.client.register_script(source)

    def listener(
        self,
        on_message: Callable[[str, str], None],
        on_subscribed: Callable[[str], None],
        on_error: Callable[[str], None],
    ) -> Listener:
        """A pub/sub listener on this client's pool (see :class:`Listener`)."""
        return Listener(self.client, self._errors, on_message, on_subscribed, on_error)

    def close(self) -> None:
        """Close the pool's connections (no I/O beyond closing sockets)."""
        self.client.close()
        self.client.connection_pool.disconnect()


def describe(exc: BaseException) -> str:
    """A redis-py error in a few words: its class and message."""
    text = str(exc).strip() or "no details"
    return f"{type(exc).__name__}: {text}"


class Listener:
    """A thread subscribed to the channels trio wants, handing their messages to trio.

    ``want`` / ``unwant`` change the channels (the thread applies them within
    :data:`_POLL_S`); ``on_subscribed(channel)`` runs in trio once Redis confirmed a
    subscription, ``on_message(channel, data)`` for every message, ``on_error(text)`` when the
    connection broke (the thread then connects again, with backoff, and subscribes again).
    """

    def __init__(
        self,
        client: Any,
        errors: type[Exception],
        on_message: Callable[[str, str], None],
        on_subscribed: Callable[[str], None],
        on_error: Callable[[str], None],
    ) -> None:
        self._client = client
        self._errors = errors
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_error = on_error
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._stop = threading.Event()

    def want(self, channel: str) -> None:
        with self._lock:
            self._wanted.add(channel)

    def unwant(self, channel: str) -> None:
        with self._lock:
            self._wanted.discard(channel)

    def stop(self) -> None:
        """Ask the thread to end (within :data:`_POLL_S`); safe from any thread."""
        self._stop.set()

    async def run(self) -> None:
        """Listen in a worker thread until :meth:`stop`.

        Cancelling this waits for the thread: call :meth:`stop` first (the cluster does, on
        the way out), or it ends at the next :meth:`stop`.
        """
        await trio.to_thread.run_sync(self._loop, limiter=trio.CapacityLimiter(1))

    def _loop(self) -> None:
        delay = _RETRY_FIRST_S
        while not self._stop.is_set():
            pubsub = self._client.pubsub()
            try:
                self._listen(pubsub)
                delay = _RETRY_FIRST_S
            except self._errors as exc:
                self._to_trio(self._on_error, describe(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            finally:
                try:
                    pubsub.close()
                except self._errors:  # closing a broken connection
                    pass

    def _listen(self, pubsub: Any) -> None:
        current: set[str] = set()
        while not self._stop.is_set():
            with self._lock:
                wanted = set(self._wanted)
            self._apply(pubsub, sorted(wanted - current), sorted(current - wanted))
            current = wanted
            message = pubsub.get_message(timeout=_POLL_S)
            if message is None:
                continue
            kind, channel = message["type"], str(message["channel"])
            if kind == "message":
                self._to_trio(self._on_message, channel, str(message["data"]))
            elif kind == "subscribe":
                self._to_trio(self._on_subscribed, channel)

    @staticmethod
    def _apply(pubsub: Any, add: Iterable[str], remove: Iterable[str]) -> None:
        add, remove = list(add), list(remove)
        if add:
            pubsub.subscribe(*add)
        if remove:
            pubsub.unsubscribe(*remove)

    def _to_trio(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            trio.from_thread.run_sync(fn, *args)
        except trio.RunFinishedError:  # trio is gone: nobody to tell
            self._stop.set()
