"""``scaivoice bench llm``: the embedded language models' speed and tool-call accuracy.

For each model of the ``llama-cpp`` backend that is installed (``qwen2.5-coder-0.5b``,
``qwen2.5-coder-1.5b``, ``smollm2``; and any GGUF file given with ``--gguf``), created through
the plugin host as the engine creates it, greedy (``temperature = 0``):

1. **Load.** The first open (which joins and checks a split model's parts if that was not done
   yet), then a second open of the joined file: the load time of a server start.
2. **First-token latency** on a typical voice prompt: the engine's default system prompt, three
   turns of history and a question. *Cold*: nothing of the prompt in the KV cache. Then the
   conversation's next turn (the reply and one more question), with the KV cache
   (``cache_prompt``, the default: only the new messages are read) and without it.
3. **Tokens/s out**: generated tokens over the time from the first token to the last.
4. **Tool calls**: requests that need one of five tools (right tool and right arguments) and
   requests that need none (no call), each in a fresh conversation with all five tools offered;
   then, for each right call, its result given back: the model should answer in words that name
   what the result says, without calling again or reading JSON out.

Timings are wall-clock on this machine, with the backend's ``n_threads`` (2); other load on the
machine slows them. Medians over ``--conversations`` conversations.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from scaivoice.engine import (
    BackendUnavailable,
    ChatMessage,
    LlmBackend,
    LlmRequest,
    PluginHost,
    ScaiVoiceError,
    ToolCall,
    ToolDefinition,
)

__all__ = [
    "CONVERSATIONS",
    "MODELS",
    "SYSTEM_PROMPT",
    "TOOLS",
    "TOOL_REQUESTS",
    "LlmReport",
    "ModelFigures",
    "ToolRequest",
    "measure",
    "print_report",
    "run_llm_benchmark",
]

MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2")
"""The named models tried by default; those not installed are reported as skipped."""

SYSTEM_PROMPT = "You are a helpful voice assistant. Answer briefly."
"""The engine's default system prompt."""

CONVERSATIONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        (
            "Hi, I'm planning a trip to Lisbon next month.",
            "That sounds lovely! How can I help you plan it?",
            "What should I pack?",
            "Light layers, comfortable walking shoes for the hills and a rain jacket.",
            "Are there good day trips from there?",
            "Yes, Sintra and Cascais are both easy day trips by train.",
        ),
        "How long does the train to Sintra take?",
        "And what is there to see?",
    ),
    (
        (
            "I want to cook something for dinner tonight.",
            "Great idea. Do you have any ingredients in mind?",
            "I have chicken, rice and some peppers.",
            "You could make a simple chicken and pepper stir fry with rice.",
            "How long does that take?",
            "About thirty minutes, including cooking the rice.",
        ),
        "Which spices should I use?",
        "Can I make it without soy sauce?",
    ),
    (
        (
            "I'd like to start running again.",
            "Good plan! How much have you been running lately?",
            "Not at all for a year.",
            "Then start gently: three short runs a week, mixing running and walking.",
            "How long should each run be?",
            "Twenty to thirty minutes is a good start.",
        ),
        "What should I eat before a run?",
        "And how do I avoid sore knees?",
    ),
)
"""(history: three user/assistant turns, the question, the next turn's question)."""


def _tool(name: str, description: str, **properties: Mapping[str, Any]) -> ToolDefinition:
    schema = {"type": "object", "properties": dict(properties), "required": list(properties)}
    return ToolDefinition(name, description, schema)


TOOLS = (
    _tool("get_weather", "Get the current weather for a city", city={"type": "string"}),
    _tool("set_timer", "Start a countdown timer", minutes={"type": "number"}),
    _tool("add_to_shopping_list", "Add an item to the shopping list", item={"type": "string"}),
    _tool(
        "set_lights",
        "Switch the lights of a room on or off",
        room={"type": "string"},
        on={"type": "boolean"},
    ),
    _tool("play_music", "Play music of a genre", genre={"type": "string"}),
)


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """A request and the call it needs (``tool = None``: no call).

    ``arguments``: each must be present; strings match if the expected text is in the
    argument (case-insensitive), numbers and booleans must be equal. ``result``: what the tool
    returns; the answer to it must be text (no call, no JSON) naming one of ``mentions``.
    """

    text: str
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] = field(default_factory=dict)
    mentions: tuple[str, ...] = ()


_DONE: Mapping[str, Any] = {"ok": True}

TOOL_REQUESTS = (
    ToolRequest(
        "What's the weather like in Berlin today?",
        "get_weather",
        {"city": "Berlin"},
        {"temperature_c": 14, "sky": "cloudy"},
        ("14", "cloud"),
    ),
    ToolRequest(
        "Set a timer for ten minutes.",
        "set_timer",
        {"minutes": 10},
        {"ok": True, "ends_at": "18:42"},
        ("10", "ten", "18:42"),
    ),
    ToolRequest(
        "Add milk to my shopping list.",
        "add_to_shopping_list",
        {"item": "milk"},
        {"ok": True, "items_on_list": 4},
        ("milk",),
    ),
    ToolRequest(
        "Turn off the lights in the kitchen.",
        "set_lights",
        {"room": "kitchen", "on": False},
        _DONE,
        ("kitchen", "off"),
    ),
    ToolRequest(
        "Play some jazz.",
        "play_music",
        {"genre": "jazz"},
        {"ok": True, "now_playing": "Take Five by Dave Brubeck"},
        ("take five", "brubeck", "jazz"),
    ),
    ToolRequest(
        "Is it going to rain in Tokyo?",
        "get_weather",
        {"city": "Tokyo"},
        {"temperature_c": 22, "sky": "rain"},
        ("rain",),
    ),
    ToolRequest(
        "Put eggs on the shopping list.",
        "add_to_shopping_list",
        {"item": "eggs"},
        {"ok": True, "items_on_list": 5},
        ("egg",),
    ),
    ToolRequest(
        "Switch on the living room lights.",
        "set_lights",
        {"room": "living room", "on": True},
        _DONE,
        ("living room", " on"),
    ),
    ToolRequest(
        "Start a five minute timer.",
        "set_timer",
        {"minutes": 5},
        {"ok": True, "ends_at": "18:37"},
        ("5", "five", "18:37"),
    ),
    ToolRequest("Tell me a joke."),
    ToolRequest("What is the capital of Italy?"),
    ToolRequest("Thank you, that's all for now."),
)


@dataclass(slots=True)
class ModelFigures:
    """One model's figures (times in seconds or milliseconds, as named)."""

    model: str
    first_open_s: float = 0.0
    load_s: float = 0.0
    cold_first_token_ms: float = 0.0
    next_turn_uncached_ms: float = 0.0
    next_turn_cached_ms: float = 0.0
    prompt_tokens: float = 0.0
    next_turn_new_tokens: float = 0.0
    tokens_per_s: float = 0.0
    tool_right: int = 0
    tool_total: int = 0
    no_tool_right: int = 0
    no_tool_total: int = 0
    result_right: int = 0
    result_total: int = 0
    wrong: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LlmReport:
    """Every model's figures, and the models skipped with the reason."""

    models: list[ModelFigures] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    conversations: int = 0


async def measure(
    host: PluginHost,
    *,
    models: Sequence[str] = MODELS,
    gguf: Sequence[str] = (),
    conversations: int = 3,
    requests: Sequence[ToolRequest] = TOOL_REQUESTS,
    reply_tokens: int = 64,
    log: Any = None,
) -> LlmReport:
    """Measure every model that opens; report the others as skipped.

    ``reply_tokens``: the longest reply timed (tokens/s is measured over it).
    """
    report = LlmReport(conversations=conversations)
    targets = [(name, {"model": name}) for name in models]
    targets += [(Path(path).name, {"model_path": path}) for path in gguf]
    for label, options in targets:
        if log is not None:
            print(f"measuring {label} ...", file=log, flush=True)
        try:
            report.models.append(
                await _measure_model(host, label, options, conversations, requests, reply_tokens)
            )
        except BackendUnavailable as exc:
            report.skipped[label] = str(exc)
    return report


def _backend(host: PluginHost, options: Mapping[str, Any]) -> LlmBackend:
    specs = host.backend_specs("llm")
    if "llama-cpp" not in specs:
        raise ScaiVoiceError("the llama-cpp backend is not installed")
    backend = specs["llama-cpp"].factory({"temperature": 0.0, "seed": 0, **options})
    assert isinstance(backend, LlmBackend)
    return backend


async def _measure_model(
    host: PluginHost,
    label: str,
    options: Mapping[str, Any],
    conversations: int,
    requests: Sequence[ToolRequest],
    reply_tokens: int,
) -> ModelFigures:
    figures = ModelFigures(label)
    start = time.perf_counter()
    async with _backend(host, options):
        figures.first_open_s = time.perf_counter() - start
    chats = [CONVERSATIONS[i % len(CONVERSATIONS)] for i in range(conversations)]
    cold: list[float] = []
    uncached: list[float] = []
    rates: list[float] = []
    prompt_tokens: list[int] = []
    start = time.perf_counter()
    async with _backend(host, {**options, "cache_prompt": False}) as llm:
        figures.load_s = time.perf_counter() - start
        for history, question, follow_up in chats:
            first = _request(history, question, reply_tokens)
            before = _stats(llm)
            ttft, reply, rate = await _generate(llm, first)
            prompt_tokens.append(_stats(llm)["prompt_tokens"] - before["prompt_tokens"])
            cold.append(ttft)
            rates.append(rate)
            ttft, _, rate = await _generate(
                llm, _request((*history, question, reply), follow_up, reply_tokens)
            )
            uncached.append(ttft)
            rates.append(rate)
    cached: list[float] = []
    new_tokens: list[int] = []
    async with _backend(host, options) as llm:
        for history, question, follow_up in chats:
            _, reply, _ = await _generate(llm, _request(history, question, reply_tokens))
            before = _stats(llm)
            ttft, _, _ = await _generate(
                llm, _request((*history, question, reply), follow_up, reply_tokens)
            )
            new_tokens.append(_stats(llm)["prompt_tokens"] - before["prompt_tokens"])
            cached.append(ttft)
        await _tool_calls(llm, requests, figures)
    figures.cold_first_token_ms = statistics.median(cold)
    figures.next_turn_uncached_ms = statistics.median(uncached)
    figures.next_turn_cached_ms = statistics.median(cached)
    figures.prompt_tokens = statistics.median(prompt_tokens)
    figures.next_turn_new_tokens = statistics.median(new_tokens)
    figures.tokens_per_s = statistics.median(r for r in rates if r > 0) if any(rates) else 0.0
    return figures


def _request(turns: Sequence[str], question: str, reply_tokens: int) -> LlmRequest:
    messages = [ChatMessage("system", SYSTEM_PROMPT)]
    for index, text in enumerate((*turns, question)):
        messages.append(ChatMessage("user" if index % 2 == 0 else "assistant", text))
    return LlmRequest(tuple(messages), max_tokens=reply_tokens)


def _stats(llm: LlmBackend) -> dict[str, int]:
    """The backend's token counters (``llama-cpp``'s ``statistics()``)."""
    return asdict(llm.statistics())  # type: ignore[attr-defined]


async def _generate(llm: LlmBackend, request: LlmRequest) -> tuple[float, str, float]:
    """(first-token latency in ms, the reply, tokens/s after the first token)."""
    send, receive = trio.open_memory_channel[str](math.inf)
    before = _stats(llm)["generated_tokens"]
    start = time.perf_counter()
    first = 0.0
    text: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(llm.generate, request, send)
        async with receive:
            async for delta in receive:
                if not text:
                    first = time.perf_counter()
                text.append(delta)
    end = time.perf_counter()
    generated = _stats(llm)["generated_tokens"] - before
    rate = (generated - 1) / (end - first) if text and generated > 1 and end > first else 0.0
    return ((first - start) * 1000 if text else math.nan), "".join(text), rate


async def _tool_calls(
    llm: LlmBackend, requests: Sequence[ToolRequest], figures: ModelFigures
) -> None:
    for item in requests:
        request = LlmRequest(
            (ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", item.text)),
            max_tokens=64,  # a call's JSON
            tools=TOOLS,
        )
        send, receive = trio.open_memory_channel[str | ToolCall](math.inf)
        await llm.respond(request, send)
        reply = [event async for event in receive]
        calls = [event for event in reply if isinstance(event, ToolCall)]
        right = _is_right(item, calls)
        if item.tool is None:
            figures.no_tool_total += 1
            figures.no_tool_right += right
        else:
            figures.tool_total += 1
            figures.tool_right += right
        if not right:
            figures.wrong.append(f"{item.text!r} -> {_said(reply)}")
        elif item.tool is not None:
            await _answer_from_result(llm, request, calls[0], item, figures)


async def _answer_from_result(
    llm: LlmBackend, request: LlmRequest, call: ToolCall, item: ToolRequest, figures: ModelFigures
) -> None:
    """The call's result given back: the model should answer in words, naming what it says."""
    result = ChatMessage("tool", json.dumps(item.result), tool_call_id=call.id)
    after = (*request.messages, ChatMessage("assistant", "", tool_calls=(call,)), result)
    send, receive = trio.open_memory_channel[str | ToolCall](math.inf)
    await llm.respond(LlmRequest(after, max_tokens=64, tools=TOOLS), send)
    reply = [event async for event in receive]
    text = "".join(e for e in reply if isinstance(e, str)).casefold()
    right = not any(isinstance(e, ToolCall) for e in reply) and "{" not in text
    right = right and any(m.casefold() in text for m in item.mentions)
    figures.result_total += 1
    figures.result_right += right
    if not right:
        figures.wrong.append(f"{item.text!r} + result {json.dumps(item.result)} -> {_said(reply)}")


def _said(reply: Sequence[str | ToolCall]) -> str:
    calls = [f"{e.name} {e.arguments}" for e in reply if isinstance(e, ToolCall)]
    return "; ".join(calls) or repr("".join(e for e in reply if isinstance(e, str)).strip()[:80])


def _is_right(item: ToolRequest, calls: Sequence[ToolCall]) -> bool:
    if item.tool is None:
        return not calls
    if len(calls) != 1 or calls[0].name != item.tool:
        return False
    try:
        arguments = json.loads(calls[0].arguments)
    except ValueError:
        return False
    if not isinstance(arguments, dict):
        return False
    for key, expected in item.arguments.items():
        got = arguments.get(key)
        if isinstance(expected, str):
            if not isinstance(got, str) or expected.casefold() not in got.casefold():
                return False
        elif isinstance(expected, bool):
            if got is not expected:
                return False
        elif isinstance(got, bool) or not isinstance(got, int | float) or got != expected:
            return False
    return True


def print_report(report: LlmReport, file: Any = None) -> None:
    """The figures, one block per model."""
    out = file or sys.stdout
    print(
        f"llama-cpp models, greedy, medians of {report.conversations} conversation(s)",
        file=out,
    )
    for m in report.models:
        print(f"\n{m.model}", file=out)
        print(
            f"  load                  {m.load_s:6.2f} s (first open {m.first_open_s:.2f} s, "
            "which joins and checks the parts if that was not done yet)",
            file=out,
        )
        print(
            f"  first token, cold     {m.cold_first_token_ms:6.0f} ms "
            f"({m.prompt_tokens:.0f} prompt tokens: system, 3 turns, a question)",
            file=out,
        )
        print(f"  next turn, no cache   {m.next_turn_uncached_ms:6.0f} ms", file=out)
        print(
            f"  next turn, KV cache   {m.next_turn_cached_ms:6.0f} ms "
            f"({m.next_turn_new_tokens:.0f} new tokens read)",
            file=out,
        )
        print(f"  tokens/s out          {m.tokens_per_s:6.1f}", file=out)
        total = m.tool_right + m.no_tool_right
        print(
            f"  tool calls            {total}/{m.tool_total + m.no_tool_total} right "
            f"(needing a tool {m.tool_right}/{m.tool_total}, "
            f"needing none {m.no_tool_right}/{m.no_tool_total})",
            file=out,
        )
        print(
            f"  answers from results  {m.result_right}/{m.result_total} (the right calls' results "
            "given back: answered in words, no new call)",
            file=out,
        )
        for wrong in m.wrong:
            print(f"    wrong: {wrong}", file=out)
    for name, reason in report.skipped.items():
        print(f"\nskipped {name}: {reason}", file=out)


def run_llm_benchmark(
    *,
    models: Sequence[str] | None = None,
    gguf: Sequence[str] = (),
    conversations: int = 3,
    requests: int | None = None,
    as_json: bool = False,
) -> int:
    """Run the benchmark and print its figures. Returns a process exit code."""
    host = PluginHost()
    host.load_entry_points()
    chosen = TOOL_REQUESTS if requests is None else _spread(requests)
    try:
        report = trio.run(
            lambda: measure(
                host,
                models=MODELS if models is None else models,
                gguf=gguf,
                conversations=conversations,
                requests=chosen,
                log=sys.stderr,
            )
        )
    except ScaiVoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print_report(report)
    return 0 if report.models else 1


def _spread(count: int) -> tuple[ToolRequest, ...]:
    """``count`` requests, those needing a tool and those needing none taken in turn."""
    tools = [r for r in TOOL_REQUESTS if r.tool is not None]
    none = [r for r in TOOL_REQUESTS if r.tool is None]
    picked: list[ToolRequest] = []
    while len(picked) < min(count, len(TOOL_REQUESTS)):
        source = tools if (len(picked) % 2 == 0 and tools) or not none else none
        picked.append(source.pop(0))
    return tuple(picked)
