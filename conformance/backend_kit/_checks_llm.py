"""Contract checks for LLM backends (``LlmBackend.generate``, and ``respond`` with tools)."""

from __future__ import annotations

from collections.abc import Hashable

from scaivoice.engine import ChatMessage, LlmBackend, LlmRequest, ToolCall, ToolDefinition

from ._checks_common import concurrency_check, lifecycle_checks
from ._drive import (
    Run,
    describe_error,
    expect_cancelled,
    expect_completed,
    generate,
    is_backend_error,
    respond,
)
from ._kit import Failed, Subject, contract_check, require

__all__ = [
    "LLM_CHECKS",
    "check_llm_aclose_idempotent",
    "check_llm_cancellation",
    "check_llm_concurrency",
    "check_llm_declaration",
    "check_llm_empty_conversation",
    "check_llm_health",
    "check_llm_history",
    "check_llm_no_leaks",
    "check_llm_reply",
    "check_llm_streaming",
    "check_llm_tool_cancellation",
    "check_llm_tool_history",
    "check_llm_tools",
]

_SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Answer briefly.")
#: What the engine sends: the system prompt first, then the user's turn.
QUESTION = LlmRequest(
    messages=(_SYSTEM, ChatMessage("user", "Say hello to Ada in a short sentence.")),
    max_tokens=32,
)
LONG_ANSWER = LlmRequest(
    messages=(
        _SYSTEM,
        ChatMessage(
            "user",
            "Count from one to twenty in words, separated by commas, and then say what "
            "comes after twenty.",
        ),
    ),
    max_tokens=64,
)
HISTORY = LlmRequest(
    messages=(
        _SYSTEM,
        ChatMessage("user", "My name is Ada."),
        ChatMessage("assistant", "Nice to meet you, Ada."),
        ChatMessage("user", "What is my name?"),
    ),
    max_tokens=32,
)


WEATHER = ToolDefinition(
    "get_weather",
    "The current weather in a city: sky and temperature.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "the city's name"}},
        "required": ["city"],
    },
)
CLOCK = ToolDefinition("get_time", "The current local time.")
_TOOL_SYSTEM = ChatMessage(
    "system",
    "You are a voice assistant. Use the tools to answer questions about the weather or the "
    "time. Answer briefly.",
)
#: A question a tool answers, with the tools offered.
TOOL_QUESTION = LlmRequest(
    messages=(_TOOL_SYSTEM, ChatMessage("user", "What is the weather in Paris right now?")),
    tools=(WEATHER, CLOCK),
    max_tokens=64,
)
#: The same after the engine ran the call: the model answers from the tool's result.
HISTORY_CALL = ToolCall("call_kit_1", "get_weather", '{"city": "Paris"}')
TOOL_HISTORY = LlmRequest(
    messages=(
        _TOOL_SYSTEM,
        ChatMessage("user", "What is the weather in Paris right now?"),
        ChatMessage("assistant", "", tool_calls=(HISTORY_CALL,)),
        ChatMessage("tool", '{"sky": "clear", "temperature_c": 21}', tool_call_id="call_kit_1"),
    ),
    tools=(WEATHER, CLOCK),
    max_tokens=48,
)
#: A long answer with tools offered (none needed): something to cancel mid-stream.
LONG_TOOL_ANSWER = LlmRequest(
    messages=LONG_ANSWER.messages, tools=(WEATHER, CLOCK), max_tokens=LONG_ANSWER.max_tokens
)


def _reply(run: Run[str], what: str) -> str:
    """Validate a generation: returned, closed, text deltas, a non-empty reply."""
    expect_completed(run, what)
    wrong = [type(d).__name__ for d in run.items if not isinstance(d, str)]
    require(not wrong, f"{what} sent {wrong[0] if wrong else ''} instead of str deltas")
    text = "".join(run.items)
    require(bool(text.strip()), f"{what} gave an empty reply ({len(run.items)} deltas)")
    return text


@contract_check("llm.reply")
async def check_llm_reply(subject: Subject[LlmBackend]) -> str:
    """A system prompt and a question (what the engine sends) give a non-empty text reply."""
    run = await generate(subject.backend, QUESTION)
    text = _reply(run, "answering a question")
    return f"{len(run.items)} deltas: {_clip(text)}"


@contract_check("llm.history")
async def check_llm_history(subject: Subject[LlmBackend]) -> str:
    """A multi-turn history (system, user, assistant, user) gives a reply."""
    run = await generate(subject.backend, HISTORY)
    text = _reply(run, "answering with a history")
    return _clip(text)


@contract_check("llm.streaming", requires="streaming")
async def check_llm_streaming(subject: Subject[LlmBackend]) -> str:
    """A long answer comes as more than one delta."""
    run = await generate(subject.backend, LONG_ANSWER)
    text = _reply(run, "a long answer")
    require(
        len(run.items) > 1,
        f"a long answer ({len(text)} characters) came as one delta: not streamed",
    )
    span = run.arrivals[-1] - run.arrivals[0]
    return f"{len(run.items)} deltas over {span:.2f} s ({len(text)} characters)"


def _tool_reply(
    run: Run[str | ToolCall], what: str, *, taken: frozenset[str] = frozenset()
) -> tuple[str, tuple[ToolCall, ...]]:
    """Validate a ``respond`` run: returned, closed, only ``str`` and well-formed ``ToolCall``
    records (ids non-empty, unique, none of ``taken``; names non-empty; arguments text), and
    something said or called. Returns the text and the calls."""
    expect_completed(run, what)
    wrong = [type(i).__name__ for i in run.items if not isinstance(i, str | ToolCall)]
    require(not wrong, f"{what} sent {wrong[0] if wrong else ''}: only str and ToolCall go out")
    calls = tuple(i for i in run.items if isinstance(i, ToolCall))
    for call in calls:
        require(
            isinstance(call.id, str) and bool(call.id),
            f"{what}: a ToolCall has no id ({call!r})",
        )
        require(
            isinstance(call.name, str) and bool(call.name),
            f"{what}: a ToolCall has no name ({call!r})",
        )
        require(
            isinstance(call.arguments, str),
            f"{what}: ToolCall.arguments is {type(call.arguments).__name__}, not the JSON text",
        )
    ids = [c.id for c in calls]
    require(len(set(ids)) == len(ids), f"{what}: tool call ids repeat: {ids}")
    reused = sorted(set(ids) & taken)
    require(not reused, f"{what}: tool call ids {reused} are already used in the history")
    text = "".join(i for i in run.items if isinstance(i, str))
    require(bool(text.strip()) or bool(calls), f"{what} gave neither text nor a tool call")
    return text, calls


def _said(text: str, calls: tuple[ToolCall, ...]) -> str:
    called = ", ".join(f"{c.name}({_clip(c.arguments)})" for c in calls)
    if not calls:
        return f"answered in words, no call: {_clip(text)}"
    return f"called {called}" + (f" after saying {_clip(text)}" if text.strip() else "")


@contract_check("llm.tools", requires="tools")
async def check_llm_tools(subject: Subject[LlmBackend]) -> str:
    """``respond`` with tools offered sends only text and whole, well-formed tool calls."""
    run = await respond(subject.backend, TOOL_QUESTION)
    text, calls = _tool_reply(run, "a question a tool answers")
    return _said(text, calls)


@contract_check("llm.tool_history", requires="tools")
async def check_llm_tool_history(subject: Subject[LlmBackend]) -> str:
    """A history holding a tool call and its result gives a reply (new calls get new ids)."""
    run = await respond(subject.backend, TOOL_HISTORY)
    text, calls = _tool_reply(
        run, "answering from a tool's result", taken=frozenset({HISTORY_CALL.id})
    )
    return _said(text, calls)


@contract_check("llm.tool_cancellation", requires="tools")
async def check_llm_tool_cancellation(subject: Subject[LlmBackend]) -> str:
    """Cancelling ``respond`` at its first output returns promptly and closes the channel."""
    backend = subject.backend
    run = await respond(backend, LONG_TOOL_ANSWER, cancel_at_first=True, cancel_after_s=1.0)
    detail = expect_cancelled(run, "respond", deadline_s=subject.config.cancel_deadline_s)
    again = await respond(backend, TOOL_QUESTION)
    _tool_reply(again, "a respond after the cancelled one")
    return detail + "; the next respond worked"


@contract_check("llm.empty_conversation")
async def check_llm_empty_conversation(subject: Subject[LlmBackend]) -> str:
    """An empty history gives a reply or a BackendError, never another exception."""
    run = await generate(subject.backend, LlmRequest(messages=(), max_tokens=16))
    if run.error is not None:
        if not is_backend_error(run.error):
            raise Failed(
                f"an empty conversation raised {describe_error(run.error)}; "
                "failures must be BackendError subclasses"
            )
        require(run.closed, "the deltas channel was left open after the error")
        return f"rejected with {type(run.error).__name__}"
    expect_completed(run, "an empty conversation")
    return f"answered: {_clip(''.join(run.items))}"


@contract_check("llm.cancellation")
async def check_llm_cancellation(subject: Subject[LlmBackend]) -> str:
    """Cancelling at the first delta returns promptly, closes the channel, leaves it usable."""
    backend = subject.backend
    run = await generate(backend, LONG_ANSWER, cancel_at_first=True, cancel_after_s=1.0)
    detail = expect_cancelled(run, "generation", deadline_s=subject.config.cancel_deadline_s)
    again = await generate(backend, QUESTION)
    _reply(again, "a generation after the cancelled one")
    return detail + "; the next generation worked"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


async def _exercise(subject: Subject[LlmBackend], backend: LlmBackend) -> None:
    await generate(backend, QUESTION)
    await generate(backend, LONG_ANSWER, cancel_at_first=True, cancel_after_s=1.0)


async def _once(subject: Subject[LlmBackend], backend: LlmBackend) -> Hashable:
    return _reply(await generate(backend, QUESTION), "generation")


check_llm_declaration, check_llm_health, check_llm_aclose_idempotent, check_llm_no_leaks = (
    lifecycle_checks("llm", exercise=_exercise)
)
check_llm_concurrency = concurrency_check("llm", once=_once)

#: Every LLM check, in the order the runner runs them.
LLM_CHECKS = (
    check_llm_declaration,
    check_llm_health,
    check_llm_reply,
    check_llm_history,
    check_llm_streaming,
    check_llm_tools,
    check_llm_tool_history,
    check_llm_tool_cancellation,
    check_llm_empty_conversation,
    check_llm_cancellation,
    check_llm_concurrency,
    check_llm_aclose_idempotent,
    check_llm_no_leaks,
)
