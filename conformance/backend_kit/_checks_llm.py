"""Contract checks for LLM backends (``LlmBackend.generate``)."""

from __future__ import annotations

from collections.abc import Hashable

from scaivoice.engine import ChatMessage, LlmBackend, LlmRequest

from ._checks_common import concurrency_check, lifecycle_checks
from ._drive import (
    Run,
    describe_error,
    expect_cancelled,
    expect_completed,
    generate,
    is_backend_error,
)
from ._kit import Failed, Skipped, Subject, contract_check, require

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


@contract_check("llm.tools", requires="tools")
async def check_llm_tools(subject: Subject[LlmBackend]) -> str:
    """(Declared tools cannot be checked: ``LlmRequest`` has no way to pass them yet.)"""
    raise Skipped("tools is declared, but LlmRequest carries no tools: nothing to check")


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
    check_llm_empty_conversation,
    check_llm_cancellation,
    check_llm_concurrency,
    check_llm_aclose_idempotent,
    check_llm_no_leaks,
)
