"""Tools in the ``openai`` LLM backend: what is sent, how streamed calls are assembled.

The server is a ``httpx.MockTransport`` script (a fake OpenAI-compatible server inside the
test); timed behaviour runs on trio's autojump clock.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from scaivoice.backends.openai_llm import OpenAILlmBackend
from scaivoice.conformance import CheckStatus, run_backend_checks
from scaivoice.engine import (
    BackendProtocolError,
    BackendRejected,
    BackendUnavailable,
    ChatMessage,
    LlmRequest,
    ToolCall,
    ToolDefinition,
)

from ._fakes import GOOD_SSE, Body, Script, delta, event_stream, llm, sse

WEATHER = ToolDefinition(
    "get_weather",
    "The weather in a city now.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolDefinition("get_time", "The time now.")
ASK = LlmRequest(
    (ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Paris?")),
    tools=(WEATHER, TIME),
)

Item = str | ToolCall


async def respond(backend: OpenAILlmBackend, request: LlmRequest = ASK) -> list[Item]:
    send, receive = trio.open_memory_channel[Item](100)
    await backend.respond(request, send)
    return [item async for item in receive]


def body_of(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.content)
    return body


def call_delta(index: int, **fields: Any) -> dict[str, Any]:
    """A streamed tool-call delta: ``id``, ``name``, ``arguments`` as given."""
    function = {k: fields[k] for k in ("name", "arguments") if k in fields}
    wire: dict[str, Any] = {"index": index, "function": function}
    if "id" in fields:
        wire.update(id=fields["id"], type="function")
    return delta(tool_calls=[wire])


PARIS = ToolCall("call_w", "get_weather", '{"city": "Paris"}')
#: PARIS, its arguments in three pieces over three chunks.
WEATHER_CALL = [
    call_delta(0, id="call_w", name="get_weather", arguments=""),
    call_delta(0, arguments='{"ci'),
    call_delta(0, arguments='ty": "Pa'),
    call_delta(0, arguments='ris"}'),
]


# --------------------------------------------------------------------------- what is sent


async def test_tools_are_offered_in_the_openai_function_shape() -> None:
    script = Script([event_stream(GOOD_SSE)])
    async with llm(script) as backend:
        assert await respond(backend) == ["Hello", " there"]
    body = body_of(script.requests[0])
    assert body["stream"] is True
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city now.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "The time now.",
                "parameters": {"type": "object", "properties": {}},
            },
        },
    ]


async def test_no_tools_key_without_tools_and_generate_offers_none() -> None:
    script = Script([lambda _: event_stream(GOOD_SSE)])
    async with llm(script) as backend:
        await respond(backend, LlmRequest(ASK.messages))
        send, receive = trio.open_memory_channel[str](100)
        async with receive:
            await backend.generate(ASK, send)
    assert "tools" not in body_of(script.requests[0])
    assert "tools" not in body_of(script.requests[1])


async def test_tool_traffic_in_the_history_is_serialised_for_chat_completions() -> None:
    calls = (
        PARIS,
        ToolCall("call_t", "get_time", "{}"),
    )
    history = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather and time in Paris?"),
        ChatMessage("assistant", "", tool_calls=calls),
        ChatMessage("tool", '{"sky": "clear", "c": 21}', tool_call_id="call_w"),
        ChatMessage("tool", '"14:05"', tool_call_id="call_t"),
        ChatMessage("assistant", "Clear, 21 degrees, and it is 14:05."),
        ChatMessage("user", "And in Oslo?"),
        ChatMessage("assistant", "Let me look.", tool_calls=calls[:1]),
        ChatMessage("tool", "the weather service is down", tool_call_id="call_w"),
    )
    script = Script([event_stream(GOOD_SSE)])
    async with llm(script) as backend:
        await respond(backend, LlmRequest(history, tools=(WEATHER, TIME)))
    messages = body_of(script.requests[0])["messages"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": None,  # it said nothing before calling
            "tool_calls": [
                {
                    "id": "call_w",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_t",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "content": '{"sky": "clear", "c": 21}', "tool_call_id": "call_w"},
        {"role": "tool", "content": '"14:05"', "tool_call_id": "call_t"},
        {"role": "assistant", "content": "Clear, 21 degrees, and it is 14:05."},
        {"role": "user", "content": "And in Oslo?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_w",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "the weather service is down", "tool_call_id": "call_w"},
    ]


# --------------------------------------------------------------------------- what comes back


async def test_streamed_tool_call_deltas_are_assembled_into_one_call() -> None:
    events = [delta("Let me check."), *WEATHER_CALL, delta(finish="tool_calls")]
    script = Script([event_stream(sse(*events))])
    async with llm(script) as backend:
        items = await respond(backend)
    assert items == ["Let me check.", PARIS]


async def test_two_parallel_calls_in_one_reply_come_whole_in_index_order() -> None:
    events = [
        call_delta(0, id="call_w", name="get_weather"),
        call_delta(1, id="call_t", name="get_", arguments=""),
        call_delta(0, arguments='{"city":'),
        call_delta(1, name="time", arguments="{}"),
        call_delta(0, arguments=' "Oslo"}'),
        delta(finish="tool_calls"),
    ]
    async with llm(Script([event_stream(sse(*events))])) as backend:
        items = await respond(backend)
    assert items == [
        ToolCall("call_w", "get_weather", '{"city": "Oslo"}'),
        ToolCall("call_t", "get_time", "{}"),
    ]


async def test_calls_go_out_at_the_finish_reason_before_the_stream_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The server sends the finish reason, then keeps the stream open: the calls are whole,
    # so the engine gets them without waiting for [DONE].
    stalled = Body(sse(*WEATHER_CALL, delta(finish="tool_calls"), done=False), stall=True)
    send, receive = trio.open_memory_channel[Item](0)
    async with llm(Script([event_stream(stalled)])) as backend:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.respond, ASK, send)
            assert await receive.receive() == ToolCall("call_w", "get_weather", '{"city": "Paris"}')
            nursery.cancel_scope.cancel()
    assert stalled.closed_at is not None


async def test_a_server_that_numbers_every_call_zero_still_gives_two_calls() -> None:
    events = [
        call_delta(0, id="a", name="get_time", arguments="{}"),
        call_delta(0, id="b", name="get_weather", arguments={"city": "Rome"}),
        delta(finish="tool_calls"),
    ]
    async with llm(Script([event_stream(sse(*events))])) as backend:
        items = await respond(backend)
    # Arguments a server decoded into an object are sent on as JSON text.
    assert items == [
        ToolCall("a", "get_time", "{}"),
        ToolCall("b", "get_weather", '{"city": "Rome"}'),
    ]


async def test_calls_without_ids_or_with_repeated_ids_get_unique_ids() -> None:
    events = [
        call_delta(0, name="get_time", arguments="{}"),
        call_delta(1, id="x", name="get_time", arguments="{}"),
        call_delta(2, id="x", name="get_time", arguments="{}"),
        delta(finish="tool_calls"),
    ]
    async with llm(Script([event_stream(sse(*events))])) as backend:
        items = await respond(backend)
    ids = [item.id for item in items if isinstance(item, ToolCall)]
    assert len(ids) == 3 and len(set(ids)) == 3 and all(ids)
    assert ids[1] == "x" and ids[0].startswith("call_") and ids[2].startswith("call_")


async def test_a_non_streamed_completion_with_tool_calls() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_w",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'},
            },
            {"id": "call_t", "type": "function", "function": {"name": "get_time"}},
        ],
    }
    answer = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    async with llm(Script([httpx.Response(200, json=answer)])) as backend:
        items = await respond(backend)
    assert items == [
        ToolCall("call_w", "get_weather", '{"city": "Lima"}'),
        ToolCall("call_t", "get_time", ""),
    ]


# --------------------------------------------------------------------------- malformed streams


@pytest.mark.parametrize(
    ("events", "error", "match"),
    [
        # The stream ends in the middle of the call's arguments: no finish reason, no [DONE].
        ([*WEATHER_CALL[:2], None], BackendProtocolError, "ended before"),
        ([call_delta(0, id="c", arguments="{}"), delta(finish="tool_calls")],
         BackendProtocolError, "no function name"),
        ([*WEATHER_CALL, delta(finish="tool_calls"), call_delta(0, arguments="}")],
         BackendProtocolError, "after the model had finished"),
        ([*WEATHER_CALL[:2], "{not json"], BackendProtocolError, "malformed chunk"),
        ([*WEATHER_CALL[:2], {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]}],
         BackendProtocolError, "malformed chunk"),
        ([*WEATHER_CALL[:2], '{"error": {"message": "tool grammar", "code": 400}}'],
         BackendRejected, "tool grammar"),
        ([*WEATHER_CALL[:2], '{"error": {"message": "worker died"}}'],
         BackendUnavailable, "worker died"),
    ],
    ids=["truncated", "no-name", "delta-after-finish", "not-json", "wrong-shape",
         "error-400", "error-500"],
)  # fmt: skip
async def test_malformed_tool_streams_raise_and_close_the_channel(
    events: list[Any], error: type[Exception], match: str
) -> None:
    truncated = events[-1] is None  # the body ends without [DONE]
    body = sse(*[e for e in events if e is not None], done=not truncated)
    send, receive = trio.open_memory_channel[Item](100)
    async with llm(Script([event_stream(body)])) as backend:
        with pytest.raises(error, match=match):
            await backend.respond(ASK, send)
    received = [item async for item in receive]  # ends: the channel was closed
    assert all(isinstance(item, str) or item == PARIS for item in received)  # none partial


async def test_cancelling_mid_tool_call_is_prompt_sends_no_partial_call_and_reuses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stalled = Body(sse(delta("One moment."), *WEATHER_CALL[:2], done=False), stall=True)
    script = Script([event_stream(stalled), event_stream(sse(*WEATHER_CALL, delta(finish="stop")))])
    send, receive = trio.open_memory_channel[Item](100)
    async with llm(script) as backend:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.respond, ASK, send)
            assert await receive.receive() == "One moment."
            await trio.testing.wait_all_tasks_blocked()  # the call's first pieces are read
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert stalled.closed_at == cancelled_at  # at once: no timeout waited for
        assert [item async for item in receive] == []  # closed, and no partial call sent
        assert await respond(backend) == [PARIS]


# --------------------------------------------------------------------------- the contract kit


def scripted_model(request: httpx.Request) -> httpx.Response:
    """A fake tool-using model: offered tools after a user's turn, it calls the first one
    (arguments in pieces); otherwise it answers in words, streamed."""
    if request.method == "GET":
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
    body = body_of(request)
    last = body["messages"][-1] if body["messages"] else {"role": "user", "content": ""}
    if body.get("tools") and last["role"] == "user":
        name = body["tools"][0]["function"]["name"]
        events: list[Any] = [
            delta("Checking."),
            call_delta(0, id=f"call_{len(body['messages'])}", name=name, arguments='{"ci'),
            call_delta(0, arguments='ty": "Paris"}'),
            delta(finish="tool_calls"),
        ]
    else:
        heard = last.get("content") or ""
        words = f"You said {heard or 'nothing'} and that is all there is to say".split()
        events = [delta(w if i == 0 else " " + w) for i, w in enumerate(words)]
        events.append(delta(finish="stop"))
    return event_stream(sse(*events))


async def test_the_backend_passes_the_kit_with_tools_on_a_scripted_server() -> None:
    def factory() -> OpenAILlmBackend:
        return llm(Script([scripted_model]))

    report = await run_backend_checks(factory)
    assert report.ok, report.format_text()
    for name in ("llm.tools", "llm.tool_history", "llm.tool_cancellation"):
        assert report.result(name).status is CheckStatus.PASSED, report.format_text()
    assert "get_weather" in report.result("llm.tools").detail
