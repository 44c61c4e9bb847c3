"""A chat model behind an OpenAI-compatible ``POST /chat/completions`` endpoint, streamed.

The request asks for ``stream: true``; the answer is a stream of server-sent events (parsed by
httpx-sse), each a JSON ``chat.completion.chunk``, ended by ``data: [DONE]``. Content deltas go
into the output channel as they arrive. A server that ignores ``stream`` and answers one JSON
completion is accepted too: its content is sent as one delta.

Tools (:meth:`OpenAILlmBackend.respond`): ``LlmRequest.tools`` are offered as OpenAI
``tools`` (``{"type": "function", "function": {name, description, parameters}}``); the
history's tool traffic is sent as the chat-completions API wants it (an assistant message with
``tool_calls`` and ``content`` ``null`` when it said nothing, then ``role: "tool"`` messages
with their ``tool_call_id``). Streamed tool-call deltas are keyed by their ``index``: the id and
name come first, the arguments in pieces. Each call is sent into the output channel once, whole,
as a :class:`~scaivoice.engine.ToolCall`, when the model has finished (the finish reason, or
the end of the stream). A call without an id gets one (``call_...``); a call without a name is a
protocol error. :meth:`~OpenAILlmBackend.generate` offers no tools.

A stream that ends before ``[DONE]`` (and without a finish reason), a chunk that is not JSON or
not a completion chunk, a tool-call delta after the calls were sent, and an ``error`` object
inside the stream are raised as errors; the deltas already sent stay sent. Nothing is retried
once a delta went out.

Operator options (``[backends.options.llm.openai]``, see :mod:`scaivoice.backends.openai_http`)::

    [backends.options.llm.openai]
    base_url = "http://127.0.0.1:8000/v1"
    model = "gpt-4o-mini"
    max_tokens = 256
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
    ChatMessage,
    LlmBackend,
    LlmCapabilities,
    LlmRequest,
    ToolCall,
    ToolDefinition,
)

from .openai_http import OpenAIHttpBackend, OpenAIOptions, error_for_status, log

__all__ = ["Completion", "OpenAILlmBackend", "OpenAILlmOptions"]

_DONE = "[DONE]"
_DRAIN_S = 1.0  # how long the rest of a body after [DONE] is read for

#: What is done with the tool calls of a reply once they are whole (``None``: kept only).
_OnCalls = Callable[[tuple[ToolCall, ...]], Awaitable[None]] | None


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
    arguments: str | dict[str, Any] | None = None  # an object: a server that decoded them


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


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _ToolCalls:
    """Assembles tool-call deltas: keyed by index, the id and name come once, the arguments in
    pieces. A delta whose id differs from the id its index already has starts a new call (a
    server that numbers every call 0)."""

    def __init__(self) -> None:
        self._calls: list[tuple[int, _PartialCall]] = []
        self._current: dict[int, _PartialCall] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, delta: _ToolCallDelta) -> None:
        call = self._current.get(delta.index)
        if call is None or (delta.id and call.id and delta.id != call.id):
            call = self._current[delta.index] = _PartialCall()
            self._calls.append((delta.index, call))
        call.id = delta.id or call.id
        function = delta.function or _Function()
        call.name += function.name or ""
        arguments = function.arguments
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if arguments:
            call.arguments.append(arguments)

    def result(self) -> tuple[ToolCall, ...]:
        """The whole calls, by index (in arrival order within an index).

        Raises:
            ValueError: a call has no name.
        """
        calls: list[ToolCall] = []
        seen: set[str] = set()
        ordered = sorted(enumerate(self._calls), key=lambda item: (item[1][0], item[0]))
        for _, (index, call) in ordered:
            if not call.name:
                raise ValueError(f"the tool call at index {index} has no function name")
            call_id = call.id
            if not call_id or call_id in seen:
                call_id = f"call_{uuid.uuid4().hex[:24]}"
            seen.add(call_id)
            calls.append(ToolCall(call_id, call.name, "".join(call.arguments)))
        return tuple(calls)


@dataclass(slots=True)
class _Reply:
    """What a reply accumulated so far."""

    text: list[str] = field(default_factory=list)
    tool_calls: _ToolCalls = field(default_factory=_ToolCalls)
    finish_reason: str | None = None
    calls: tuple[ToolCall, ...] | None = None  # set once the calls were made whole


# --------------------------------------------------------------------------- request body


def _plain(value: Any) -> Any:
    """``value`` with every mapping a dict and every sequence a list (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _message(message: ChatMessage) -> dict[str, Any]:
    """One history message in the chat-completions shape."""
    if message.role == "tool":
        wire: dict[str, Any] = {"role": "tool", "content": message.content}
        if message.tool_call_id is not None:
            wire["tool_call_id"] = message.tool_call_id
        return wire
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _tool(definition: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": definition.name,
            "description": definition.description,
            "parameters": _plain(definition.parameters),
        },
    }


# --------------------------------------------------------------------------- backend


class OpenAILlmBackend(OpenAIHttpBackend, LlmBackend):
    """OpenAI-compatible chat model over HTTP (/chat/completions), streamed as server-sent events."""

    Options: ClassVar[type[BackendOptions]] = OpenAILlmOptions
    capabilities: ClassVar[LlmCapabilities] = LlmCapabilities(
        streaming=True, system_prompt=True, tools=True
    )

    def __init__(
        self, options: OpenAILlmOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(options, transport=transport)
        self.options = options

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        """Stream the reply's text into ``deltas``, then close it. No tools are offered.

        Cancelling closes the HTTP response at once (the connection is dropped, so the server
        sees the client go) and closes ``deltas``; the backend stays usable.

        Raises:
            BackendProtocolError: a truncated stream, a chunk that is not JSON, not an event
                stream.
            BackendError: the request failed (see :mod:`scaivoice.backends.openai_http`).
        """
        await self.complete(request, deltas)

    async def respond(
        self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
    ) -> None:
        """Offer ``request.tools``; stream text deltas and whole tool calls into ``output``.

        Text goes out as it arrives; each tool call once, whole, when the model has finished
        (its finish reason, or the end of the stream), in the order of the calls' indexes.
        ``output`` is closed at the end.

        Cancelling closes the HTTP response at once and closes ``output``; the backend stays
        usable.

        Raises:
            BackendProtocolError: as :meth:`generate`; also a tool call without a name, or a
                tool-call delta after the calls were sent.
            BackendError: the request failed (see :mod:`scaivoice.backends.openai_http`).
        """

        async def send_calls(calls: tuple[ToolCall, ...]) -> None:
            log.debug("%s: the model calls %s", self.name, [c.name for c in calls])
            for call in calls:
                await output.send(call)

        await self._exchange(request, output, on_calls=send_calls, offer_tools=True)

    async def complete(
        self, request: LlmRequest, deltas: trio.MemorySendChannel[str]
    ) -> Completion:
        """Like :meth:`generate`, and return the finish reason (and any tool calls the server
        made unasked, never sent into ``deltas``)."""
        return await self._exchange(request, deltas, on_calls=None, offer_tools=False)

    async def _exchange(
        self,
        request: LlmRequest,
        deltas: trio.MemorySendChannel[str],
        *,
        on_calls: _OnCalls,
        offer_tools: bool,
    ) -> Completion:
        async with deltas:
            body = self._body(request, offer_tools=offer_tools)
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            async with self.request(
                "POST", "chat/completions", json=body, headers=headers
            ) as response:
                content_type = response.headers.get("content-type", "").partition(";")[0]
                if content_type.strip().lower() == "application/json":
                    return await self._whole(response, deltas, on_calls)
                return await self._stream(response, deltas, on_calls)

    def _body(self, request: LlmRequest, *, offer_tools: bool) -> dict[str, Any]:
        options = self.options
        body: dict[str, Any] = {
            "model": options.model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
        }
        if offer_tools and request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        limits = [n for n in (request.max_tokens, options.max_tokens) if n is not None]
        if limits:
            body[options.max_tokens_field] = min(limits)
        for key in ("temperature", "top_p", "seed"):
            value = getattr(options, key)
            if value is not None:
                body[key] = value
        return body

    async def _stream(
        self, response: httpx.Response, deltas: trio.MemorySendChannel[str], on_calls: _OnCalls
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
                        await self._finish_calls(reply, on_calls)
                        await deltas.aclose()
                        drain.deadline = trio.current_time() + _DRAIN_S
                    else:
                        await self._on_event(event, reply, deltas, on_calls)
        if not done and reply.finish_reason is None:
            raise self.protocol_error("the event stream ended before [DONE]")
        await self._finish_calls(reply, on_calls)
        return self._completion(reply)

    async def _on_event(
        self,
        event: httpx_sse.ServerSentEvent,
        reply: _Reply,
        deltas: trio.MemorySendChannel[str],
        on_calls: _OnCalls,
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
            delta = choice.delta or _Delta()
            if delta.tool_calls and reply.calls is not None:
                raise self.protocol_error("a tool-call delta came after the model had finished")
            for call in delta.tool_calls or ():
                reply.tool_calls.add(call)
            if delta.content:
                reply.text.append(delta.content)
                await deltas.send(delta.content)
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
                await self._finish_calls(reply, on_calls)

    async def _whole(
        self, response: httpx.Response, deltas: trio.MemorySendChannel[str], on_calls: _OnCalls
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
        await self._finish_calls(reply, on_calls)
        return self._completion(reply)

    async def _finish_calls(self, reply: _Reply, on_calls: _OnCalls) -> None:
        """Make the reply's tool calls whole (once) and hand them to ``on_calls``."""
        if reply.calls is not None or not reply.tool_calls:
            return
        try:
            reply.calls = reply.tool_calls.result()
        except ValueError as exc:
            raise self.protocol_error(str(exc)) from exc
        if on_calls is not None:
            await on_calls(reply.calls)
        else:
            log.debug("%s: tool calls not asked for: %s", self.name, [c.name for c in reply.calls])

    def _completion(self, reply: _Reply) -> Completion:
        return Completion("".join(reply.text), reply.finish_reason, reply.calls or ())

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
