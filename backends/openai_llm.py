"""A chat model behind an OpenAI-compatible ``POST /chat/completions`` endpoint, streamed.

The request asks for ``stream: true``; the answer is a stream of server-sent events (parsed by
httpx-sse), each a JSON ``chat.completion.chunk``, ended by ``data: [DONE]``. Content deltas go
into the delta channel as they arrive. Tool-call deltas are assembled into :class:`ToolCall`
records, returned by :meth:`OpenAILlmBackend.complete` and never sent as text (tools are not
wired into sessions yet). A server that ignores ``stream`` and answers one JSON completion is
accepted too: its content is sent as one delta.

A stream that ends before ``[DONE]`` (and without a finish reason), a chunk that is not JSON or
not a completion chunk, and an ``error`` object inside the stream are raised as errors; the
deltas already sent stay sent. Nothing is retried once a delta went out.

Operator options (``[backends.options.llm.openai]``, see :mod:`scaivoice.backends.openai_http`)::

    [backends.options.llm.openai]
    base_url = "http://127.0.0.1:8000/v1"
    model = "gpt-4o-mini"
    max_tokens = 256
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import httpx
import httpx_sse
import msgspec
import trio

from scaivoice.engine import (
    BackendError,
    BackendOptions,
    LlmBackend,
    LlmCapabilities,
    LlmRequest,
)

from .openai_http import OpenAIHttpBackend, OpenAIOptions, error_for_status, log

__all__ = ["Completion", "OpenAILlmBackend", "OpenAILlmOptions", "ToolCall"]

_DONE = "[DONE]"
_DRAIN_S = 1.0  # how long the rest of a body after [DONE] is read for


class OpenAILlmOptions(OpenAIOptions, frozen=True, kw_only=True):
    """Options of the ``openai`` LLM backend (besides those of :class:`OpenAIOptions`).

    Attributes:
        model: the model id the server knows (required).
        max_tokens: longest reply, unless the request asks for less; ``None``: the server's.
        max_tokens_field: ``"max_tokens"``, or ``"max_completion_tokens"`` for servers that
            want that name.
        temperature, top_p, seed: sampling; ``None``: the server's default.
    """

    kind: ClassVar[str] = "llm"

    model: str
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for.

    Attributes:
        id: the call id the server gave (answers refer to it).
        name: the function's name.
        arguments: the arguments as the JSON text the model wrote (not validated).
    """

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Completion:
    """What a completed reply held besides its text deltas.

    Attributes:
        text: the whole reply text.
        finish_reason: ``"stop"``, ``"length"``, ``"tool_calls"``... or ``None`` when the
            server gave none.
        tool_calls: the tool calls, in the order of their index.
    """

    text: str
    finish_reason: str | None
    tool_calls: tuple[ToolCall, ...] = ()


# --------------------------------------------------------------------------- wire records
# Only the fields used are declared; unknown ones are ignored.


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _StreamChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _StreamError(msgspec.Struct):
    message: str = ""
    code: int | str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_StreamChoice] = msgspec.field(default_factory=list)
    error: _StreamError | str | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    finish_reason: str | None = None


class _ChatCompletion(msgspec.Struct):
    choices: list[_Choice]


class _ToolCalls:
    """Assembles tool-call deltas (by index: the id and name come once, arguments in pieces)."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def add(self, delta: _ToolCallDelta) -> None:
        call_id, name, arguments = self._calls.get(delta.index, ("", "", []))
        function = delta.function or _Function()
        self._calls[delta.index] = (
            delta.id or call_id,
            name + (function.name or ""),
            [*arguments, function.arguments or ""],
        )

    def result(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(call_id, name, "".join(arguments))
            for _, (call_id, name, arguments) in sorted(self._calls.items())
        )


@dataclass(slots=True)
class _Reply:
    """What a reply accumulated so far."""

    text: list[str] = field(default_factory=list)
    tool_calls: _ToolCalls = field(default_factory=_ToolCalls)
    finish_reason: str | None = None


# --------------------------------------------------------------------------- backend


class OpenAILlmBackend(OpenAIHttpBackend, LlmBackend):
    """OpenAI-compatible chat model over HTTP (/chat/completions), streamed as server-sent events."""

    Options: ClassVar[type[BackendOptions]] = OpenAILlmOptions
    capabilities: ClassVar[LlmCapabilities] = LlmCapabilities(
        streaming=True, system_prompt=True, tools=False
    )

    def __init__(
        self, options: OpenAILlmOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(options, transport=transport)
        self.options = options

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        """Stream the reply's text into ``deltas``, then close it.

        Cancelling closes the HTTP response at once (the connection is dropped, so the server
        sees the client go) and closes ``deltas``; the backend stays usable.

        Raises:
            BackendProtocolError: a truncated stream, a chunk that is not JSON, not an event
                stream.
            BackendError: the request failed (see :mod:`scaivoice.backends.openai_http`).
        """
        await self.complete(request, deltas)

    async def complete(
        self, request: LlmRequest, deltas: trio.MemorySendChannel[str]
    ) -> Completion:
        """Like :meth:`generate`, and return the finish reason and the tool calls."""
        async with deltas:
            body = self._body(request)
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            async with self.request(
                "POST", "chat/completions", json=body, headers=headers
            ) as response:
                content_type = response.headers.get("content-type", "").partition(";")[0]
                if content_type.strip().lower() == "application/json":
                    return await self._whole(response, deltas)
                return await self._stream(response, deltas)

    def _body(self, request: LlmRequest) -> dict[str, Any]:
        options = self.options
        body: dict[str, Any] = {
            "model": options.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
        }
        limits = [n for n in (request.max_tokens, options.max_tokens) if n is not None]
        if limits:
            body[options.max_tokens_field] = min(limits)
        for key in ("temperature", "top_p", "seed"):
            value = getattr(options, key)
            if value is not None:
                body[key] = value
        return body

    async def _stream(
        self, response: httpx.Response, deltas: trio.MemorySendChannel[str]
    ) -> Completion:
        reply = _Reply()
        done = False
        # After [DONE] the rest of the body is read (briefly) so the connection can be reused.
        drain = trio.CancelScope()
        events = httpx_sse.EventSource(response).aiter_sse()
        with drain:
            async with aclosing(events):
                async for event in events:
                    if done:
                        continue
                    if event.data.strip() == _DONE:
                        done = True
                        await deltas.aclose()
                        drain.deadline = trio.current_time() + _DRAIN_S
                    else:
                        await self._on_event(event, reply, deltas)
        if not done and reply.finish_reason is None:
            raise self.protocol_error("the event stream ended before [DONE]")
        return self._completion(reply)

    async def _on_event(
        self,
        event: httpx_sse.ServerSentEvent,
        reply: _Reply,
        deltas: trio.MemorySendChannel[str],
    ) -> None:
        if event.event == "error":
            raise self._stream_error(event.data)
        if not event.data:
            return  # an event without data
        chunk = self._decode(event.data)
        if chunk.error:
            raise self._stream_error(chunk.error)
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # one reply is asked for (n = 1)
            reply.finish_reason = choice.finish_reason or reply.finish_reason
            delta = choice.delta or _Delta()
            for call in delta.tool_calls or ():
                reply.tool_calls.add(call)
            if delta.content:
                reply.text.append(delta.content)
                await deltas.send(delta.content)

    async def _whole(
        self, response: httpx.Response, deltas: trio.MemorySendChannel[str]
    ) -> Completion:
        """A server that ignored ``stream: true``: one JSON completion."""
        body = await response.aread()
        try:
            completion = msgspec.json.decode(body, type=_ChatCompletion)
        except msgspec.DecodeError as exc:
            raise self.protocol_error(f"malformed chat completion: {exc}") from exc
        choice = next((c for c in completion.choices if c.index == 0), None)
        if choice is None:
            raise self.protocol_error("the chat completion holds no choice")
        message = choice.message or _Message()
        reply = _Reply(finish_reason=choice.finish_reason)
        for call in message.tool_calls or ():
            reply.tool_calls.add(call)
        if message.content:
            reply.text.append(message.content)
            await deltas.send(message.content)
        return self._completion(reply)

    def _completion(self, reply: _Reply) -> Completion:
        calls = reply.tool_calls.result()
        if calls:
            log.debug("%s: the model asked for tools %s", self.name, [c.name for c in calls])
        return Completion("".join(reply.text), reply.finish_reason, calls)

    def _decode(self, data: str) -> _Chunk:
        try:
            return msgspec.json.decode(data, type=_Chunk)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise self.protocol_error(
                f"malformed chunk in the event stream: {exc}: {data[:100]!r}"
            ) from exc

    def _stream_error(self, error: _StreamError | str) -> BackendError:
        """An error the server reported inside a stream that had started with 200."""
        if isinstance(error, str):
            try:
                error = msgspec.json.decode(error, type=_Chunk).error or error
            except msgspec.DecodeError:
                pass
        if isinstance(error, str):
            return self.protocol_error(f"the server reported an error: {error[:300]}")
        status = error.code if isinstance(error.code, int) else 500
        return error_for_status(status, error.message[:300], backend=self.name)
