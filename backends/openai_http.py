"""What the OpenAI-compatible HTTP backends (``openai`` stt / llm / tts) share.

One pooled :class:`httpx.AsyncClient` per backend, created in ``open`` and closed in
``aclose``; requests retried with exponential backoff where that is safe; and one mapping of
everything that can go wrong on the wire into the ScaiVoice error tree, chained ``from`` the
httpx exception::

    httpx exception / server answer                       ScaiVoice error (retryable?)
    ├── ConnectError, ReadError, WriteError, CloseError,
    │   ProxyError                                        BackendUnavailable (yes)
    ├── UnsupportedProtocol                               BackendUnavailable (no)
    ├── ConnectTimeout, ReadTimeout, WriteTimeout,
    │   PoolTimeout                                       BackendTimeout (yes)
    ├── RemoteProtocolError (a truncated body, a broken
    │   HTTP message), DecodingError, TooManyRedirects,
    │   httpx_sse.SSEError (not an event stream)          BackendProtocolError (no)
    ├── LocalProtocolError (we could not send it)         BackendRejected (no)
    ├── status 408, 504                                   BackendTimeout (yes)
    ├── status 429, 5xx                                   BackendUnavailable (yes)
    ├── any other 4xx                                     BackendRejected (no)
    └── a body that does not parse, a wrong content type  BackendProtocolError (no)

Retries: a request is sent again (after ``retry_backoff_s``, doubling up to
``retry_backoff_max_s``, less a random quarter; longer when the server says ``Retry-After``)
only when the error is retryable *and* nothing of its response has been handed on yet: the
inference endpoints change nothing on the server, so sending one again is safe until its answer
starts streaming out. Once a streamed body is being consumed, errors are raised at once. A
request whose pooled connection the server had closed (``RemoteProtocolError`` before any
response: llama.cpp's server closes the connection after a streamed answer while promising
keep-alive) is sent again at once, on a fresh connection, without counting as a retry.
Deadlines belong to the caller: wrap calls in ``trio.move_on_after`` / ``fail_after``; the
timeout options only bound a connect or a silent read.

Operator options: the three kinds share the name ``openai``, so each has its own table under
its kind (a plain ``[backends.options.openai]`` table is used by the kinds that have none)::

    [backends]
    stt = "openai"
    llm = "openai"
    tts = "openai"

    [backends.options.llm.openai]
    base_url = "http://127.0.0.1:8080/v1"
    api_key = "sk-..."
    model = "gpt-4o-mini"

    [backends.options.stt.openai]
    base_url = "http://127.0.0.1:8000/v1"
    model = "whisper-1"

No backend reads the environment: the API key comes from the options only.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar, Self

import httpx
import httpx_sse
import msgspec
import trio

from scaivoice.engine import (
    Backend,
    BackendError,
    BackendOptions,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)

__all__ = [
    "OpenAIHttpBackend",
    "OpenAIOptions",
    "error_for_status",
    "map_httpx_error",
]

log = logging.getLogger("scaivoice.backends.openai")

_CLOSE_TIMEOUT_S = 2.0  # closing a response: shielded, under this deadline
_ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error answer read for its message
_MESSAGE_LIMIT = 300  # characters of a server's error message quoted in ours


class OpenAIOptions(BackendOptions, frozen=True):
    """Options every ``openai`` backend takes.

    Attributes:
        base_url: the API root, ``/v1`` included (``http://127.0.0.1:8000/v1``). Required.
        api_key: sent as ``Authorization: Bearer <api_key>``; none when unset.
        connect_timeout_s: the longest wait for a connection (to open one, or a free one of
            the pool).
        read_timeout_s: the longest silence while sending a request or reading an answer.
        max_retries: how many times a failed request is sent again when that is safe.
        retry_backoff_s: the wait before the first retry; it doubles for each next one.
        retry_backoff_max_s: the longest wait between two tries.
        max_connections: connections kept to the server (shared by all sessions).
    """

    #: The kind these options are for, named in configuration errors.
    kind: ClassVar[str] = ""

    base_url: str
    api_key: str | None = None
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    retry_backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    retry_backoff_max_s: Annotated[float, msgspec.Meta(ge=0)] = 4.0
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 100

    def __post_init__(self) -> None:
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"base_url {self.base_url!r} is not a URL: {exc}") from exc
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError(f"base_url {self.base_url!r} is not an http(s) URL")
        if self.api_key is not None and not self.api_key.isprintable():
            raise ValueError("api_key holds characters that cannot go in a header")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, backend: str) -> Self:
        """Validate an option table; errors name the backend and its kind (``openai (llm)``).

        Raises:
            ConfigError: unknown keys or wrong values.
        """
        label = f"{backend} ({cls.kind})" if cls.kind else backend
        return super().from_mapping(values, backend=label)


# --------------------------------------------------------------------------- error mapping


def map_httpx_error(exc: httpx.HTTPError, *, backend: str) -> BackendError:
    """The ScaiVoice error for an httpx exception (see the module docstring for the tree).

    Raise it ``from exc``.
    """
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx_sse.SSEError):  # a TransportError subclass: check it first
        return BackendProtocolError(f"not an event stream ({detail})", backend=backend)
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"the server did not answer in time ({detail})", backend=backend)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return BackendUnavailable(
            f"cannot speak to this URL ({detail})", backend=backend, retryable=False
        )
    if isinstance(exc, httpx.NetworkError | httpx.ProxyError):
        return BackendUnavailable(f"cannot reach the server ({detail})", backend=backend)
    if isinstance(exc, httpx.LocalProtocolError):
        return BackendRejected(f"the request could not be sent ({detail})", backend=backend)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError | httpx.TooManyRedirects):
        return BackendProtocolError(f"malformed answer ({detail})", backend=backend)
    if isinstance(exc, httpx.HTTPStatusError):
        return error_for_status(exc.response.status_code, "", backend=backend)
    # TransportError itself, or a subclass a newer httpx adds: the connection failed somehow.
    return BackendUnavailable(f"the request failed ({detail})", backend=backend)


def error_for_status(status: int, message: str, *, backend: str) -> BackendError:
    """The ScaiVoice error for an HTTP error status; ``message`` is the server's own words."""
    text = f"the server answered {status}" + (f": {message}" if message else "")
    if status in {408, 504}:
        return BackendTimeout(text, backend=backend)
    if status == 429 or status >= 500:
        return BackendUnavailable(text, backend=backend)
    if 400 <= status < 500:
        return BackendRejected(text, backend=backend)
    # 1xx/3xx as a final answer: not something an OpenAI-compatible API does.
    return BackendProtocolError(text, backend=backend)


def _error_message(body: bytes) -> str:
    """The server's error message: OpenAI's ``{"error": {"message"}}``, FastAPI's
    ``{"detail"}``, or the start of the body."""
    message: Any
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        message = body.decode("utf-8", "replace").strip()
    else:
        message = data
        if isinstance(data, dict):
            message = data.get("error") or data.get("detail") or data.get("message") or data
            if isinstance(message, dict):
                message = message.get("message") or message
    text = message if isinstance(message, str) else msgspec.json.encode(message).decode()
    return text[:_MESSAGE_LIMIT]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


# --------------------------------------------------------------------------- base class


class OpenAIHttpBackend(Backend):
    """Base of the ``openai`` backends: the pooled client, retries, health, error mapping.

    Args:
        options: the validated options.
        transport: the httpx transport to send through (``httpx.MockTransport`` in tests);
            default: httpx's connection pool.
    """

    name = "openai"

    def __init__(
        self, options: OpenAIOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.http_options = options
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._random = random.Random()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the connection pool. No request is sent: use :meth:`check_health`."""
        if self._client is not None:
            return
        options = self.http_options
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=options.base_url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=options.connect_timeout_s,
                read=options.read_timeout_s,
                write=options.read_timeout_s,
                pool=options.connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=options.max_connections,
                max_keepalive_connections=options.max_connections,
            ),
            transport=self._transport,
        )

    async def aclose(self) -> None:
        """Close the pool and its connections. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await client.aclose()

    async def check_health(self) -> None:
        """``GET {base_url}/models``, once, without retries.

        A server without that endpoint (404, 405) is reachable, so healthy.

        Raises:
            BackendUnavailable: not open, unreachable, or answering 429 / 5xx.
            BackendTimeout: no answer in time.
            BackendRejected: the API key was refused (401, 403).
        """
        client = self._require_client()
        try:
            response = await client.get("models")
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, backend=self.name) from exc
        if response.is_success or response.status_code in {404, 405}:
            return
        raise error_for_status(
            response.status_code, _error_message(response.content), backend=self.name
        )

    # ------------------------------------------------------------------ requests

    @asynccontextmanager
    async def request(
        self, method: str, path: str, *, stream: bool = True, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """Send a request (retried when safe) and yield its successful response.

        ``path`` is relative to ``base_url``; ``kwargs`` go to ``httpx.AsyncClient.
        build_request`` (``json``, ``data``, ``files``, ``headers``). With ``stream`` the body
        is not read yet: errors while reading it inside the block are mapped too, but never
        retried. Without it the body is read before the block, and a failure while reading
        it is retried like any other. The response is closed on leaving the block (shielded,
        under a deadline), so cancelling closes the connection promptly.

        Raises:
            BackendError: mapped from httpx exceptions and error statuses, after the retries.
        """
        response = await self._send_with_retries(method, path, stream=stream, **kwargs)
        try:
            yield response
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, backend=self.name) from exc
        finally:
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await response.aclose()

    async def request_body(self, method: str, path: str, **kwargs: Any) -> bytes:
        """Send a request (retried when safe) and return its whole successful body."""
        async with self.request(method, path, stream=False, **kwargs) as response:
            return response.content

    async def _send_with_retries(
        self, method: str, path: str, *, stream: bool, **kwargs: Any
    ) -> httpx.Response:
        client = self._require_client()
        attempt = 0
        stale_connection = False
        while True:
            retry_after: float | None = None
            try:
                request = client.build_request(method, path, **kwargs)
                try:
                    response = await client.send(request, stream=stream)
                except httpx.RemoteProtocolError as exc:
                    if stale_connection:
                        raise map_httpx_error(exc, backend=self.name) from exc
                    # No response at all: a kept-alive connection the server had closed.
                    stale_connection = True
                    log.debug("%s %s %s: %s; sent again at once", self.name, method, path, exc)
                    continue
                except httpx.HTTPError as exc:
                    raise map_httpx_error(exc, backend=self.name) from exc
                if response.is_success:
                    return response
                retry_after = _retry_after(response)
                raise await self._status_error(response)
            except BackendError as exc:
                if not exc.retryable or attempt >= self.http_options.max_retries:
                    raise
                delay = self._backoff(attempt, retry_after)
                log.info(
                    "%s %s %s failed (%s); retry %d in %.2f s",
                    self.name,
                    method,
                    path,
                    exc,
                    attempt + 1,
                    delay,
                )
            await trio.sleep(delay)
            attempt += 1

    async def _status_error(self, response: httpx.Response) -> BackendError:
        """Read (a bounded part of) an error answer, close it, and build its error."""
        body = b""
        try:
            async for data in response.aiter_bytes():
                body += data
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass  # the status says enough
        finally:
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await response.aclose()
        return error_for_status(response.status_code, _error_message(body), backend=self.name)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        options = self.http_options
        delay = options.retry_backoff_s * 2.0**attempt * self._random.uniform(0.75, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, options.retry_backoff_max_s)

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise BackendUnavailable(
                f"the {self.name} backend is not open", backend=self.name, retryable=False
            )
        return self._client

    def protocol_error(self, message: str) -> BackendProtocolError:
        """A :class:`BackendProtocolError` naming this backend."""
        return BackendProtocolError(message, backend=self.name)
