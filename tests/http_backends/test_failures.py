"""Failure paths of the ``openai`` backends, on ``httpx.MockTransport`` scripts.

Timed behaviour (backoff, Retry-After, prompt cancellation) runs on trio's autojump clock.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import httpx
import httpx_sse
import pytest
import trio
import trio.testing

from scaivoice.backends.openai_http import error_for_status, map_httpx_error
from scaivoice.backends.openai_llm import OpenAILlmBackend
from scaivoice.backends.openai_stt import OpenAISttBackend
from scaivoice.backends.openai_tts import OpenAITtsBackend
from scaivoice.engine import (
    AudioChunk,
    BackendError,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ChatMessage,
    LlmRequest,
    SttRequest,
    ToolCall,
    Transcript,
    TtsRequest,
)

from ._fakes import (
    GOOD_SSE,
    Body,
    Script,
    audio,
    delta,
    error,
    event_stream,
    llm,
    sse,
    stt,
    transcription,
    tts,
)
from ._servers import free_port

REQUEST = LlmRequest((ChatMessage("user", "Hi"),))
SECOND = 16000 * 2  # bytes of one second of 16 kHz PCM16


async def generate(backend: OpenAILlmBackend) -> list[str]:
    send, receive = trio.open_memory_channel[str](100)
    await backend.generate(REQUEST, send)
    return [d async for d in receive]


async def transcribe(backend: OpenAISttBackend, pcm: bytes = b"\1\0" * 16000) -> list[Transcript]:
    audio_send, audio_receive = trio.open_memory_channel[bytes](10)
    results_send, results_receive = trio.open_memory_channel[Transcript](10)
    async with audio_send:
        await audio_send.send(pcm)
    await backend.transcribe(SttRequest(16000), audio_receive, results_send)
    return [r async for r in results_receive]


async def synthesize(backend: OpenAITtsBackend, text: str = "Hello.") -> list[AudioChunk]:
    send, receive = trio.open_memory_channel[AudioChunk](1000)
    await backend.synthesize(TtsRequest(text), send)
    return [c async for c in receive]


def good(kind: str) -> httpx.Response:
    if kind == "llm":
        return event_stream(GOOD_SSE)
    if kind == "stt":
        return transcription()
    return audio(b"\0\1" * 2400)


async def call(kind: str, script: Script, **options: Any) -> Any:
    """Open the backend of ``kind`` on ``script`` and make one call."""
    if kind == "llm":
        async with llm(script, **options) as backend:
            return await generate(backend)
    if kind == "stt":
        async with stt(script, **options) as backend:
            return await transcribe(backend)
    async with tts(script, **options) as backend:
        return await synthesize(backend)


KINDS = ["llm", "stt", "tts"]


# --------------------------------------------------------------------------- error mapping


def _concrete_subclasses(root: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    todo = [root]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("httpx"):
            found.add(cls)
        todo += cls.__subclasses__()
    return found


EXPECTED: dict[type[BaseException], tuple[type[BackendError], bool]] = {
    httpx.RequestError: (BackendUnavailable, True),
    httpx.TransportError: (BackendUnavailable, True),
    httpx.TimeoutException: (BackendTimeout, True),
    httpx.ConnectTimeout: (BackendTimeout, True),
    httpx.ReadTimeout: (BackendTimeout, True),
    httpx.WriteTimeout: (BackendTimeout, True),
    httpx.PoolTimeout: (BackendTimeout, True),
    httpx.NetworkError: (BackendUnavailable, True),
    httpx.ConnectError: (BackendUnavailable, True),
    httpx.ReadError: (BackendUnavailable, True),
    httpx.WriteError: (BackendUnavailable, True),
    httpx.CloseError: (BackendUnavailable, True),
    httpx.ProxyError: (BackendUnavailable, True),
    httpx.UnsupportedProtocol: (BackendUnavailable, False),
    httpx.ProtocolError: (BackendUnavailable, True),
    httpx.LocalProtocolError: (BackendRejected, False),
    httpx.RemoteProtocolError: (BackendProtocolError, False),
    httpx.DecodingError: (BackendProtocolError, False),
    httpx.TooManyRedirects: (BackendProtocolError, False),
    httpx_sse.SSEError: (BackendProtocolError, False),
}


def test_every_httpx_request_error_is_mapped() -> None:
    """Every httpx request-error class (and httpx-sse's) has an expected mapping: a class a
    newer httpx adds fails here until it is looked at."""
    classes = _concrete_subclasses(httpx.RequestError)
    assert classes == set(EXPECTED)
    request = httpx.Request("GET", "http://x.invalid/")
    for cls, (expected, retryable) in EXPECTED.items():
        exc = cls("boom", request=request)  # type: ignore[call-arg]
        mapped = map_httpx_error(exc, backend="openai")  # type: ignore[arg-type]
        assert type(mapped) is expected, cls
        assert mapped.retryable is retryable, cls
        assert mapped.backend == "openai" and "boom" in str(mapped)


def test_http_status_errors_are_mapped_by_status() -> None:
    request = httpx.Request("GET", "http://x.invalid/")
    response = httpx.Response(503, request=request)
    exc = httpx.HTTPStatusError("bad", request=request, response=response)
    mapped = map_httpx_error(exc, backend="openai")
    assert isinstance(mapped, BackendUnavailable) and mapped.retryable


@pytest.mark.parametrize(
    ("status", "expected", "retryable"),
    [
        (400, BackendRejected, False),
        (401, BackendRejected, False),
        (403, BackendRejected, False),
        (404, BackendRejected, False),
        (408, BackendTimeout, True),
        (413, BackendRejected, False),
        (422, BackendRejected, False),
        (429, BackendUnavailable, True),
        (500, BackendUnavailable, True),
        (502, BackendUnavailable, True),
        (503, BackendUnavailable, True),
        (504, BackendTimeout, True),
        (302, BackendProtocolError, False),
    ],
)
def test_statuses_are_mapped(status: int, expected: type[BackendError], retryable: bool) -> None:
    mapped = error_for_status(status, "why", backend="openai")
    assert type(mapped) is expected
    assert mapped.retryable is retryable
    assert str(status) in str(mapped) and "why" in str(mapped)


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("kind", KINDS)
async def test_5xx_then_success_is_retried(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    script = Script([error(503), error(500), good(kind)])
    result = await call(kind, script)
    assert result
    assert len(script.requests) == 3
    # The retried requests are the same request again (multipart boundaries aside).
    assert len({_same(r) for r in script.requests}) == 1


def _same(request: httpx.Request) -> tuple[str, str, bytes]:
    boundary = request.headers["content-type"].partition("boundary=")[2].encode()
    body = request.content.replace(boundary, b"") if boundary else request.content
    return request.method, str(request.url), body


@pytest.mark.parametrize("kind", KINDS)
async def test_4xx_is_not_retried(kind: str, autojump_clock: trio.testing.MockClock) -> None:
    script = Script([error(400, "bad voice or model")])
    with pytest.raises(BackendRejected, match="400: bad voice or model") as caught:
        await call(kind, script)
    assert not caught.value.retryable
    expected = 2 if kind == "stt" else 1  # STT tries plain json once (see its own test)
    assert len(script.requests) == expected


@pytest.mark.parametrize("kind", KINDS)
async def test_retries_stop_after_max_retries(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    script = Script([error(502, "upstream down")])
    with pytest.raises(BackendUnavailable, match="502: upstream down") as caught:
        await call(kind, script, max_retries=3)
    assert caught.value.retryable
    assert len(script.requests) == 4


@pytest.mark.parametrize("kind", KINDS)
async def test_timeouts_are_retried_then_raised(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    timeout = httpx.ReadTimeout("timed out")
    script = Script([timeout, good(kind)])
    assert await call(kind, script)
    assert len(script.requests) == 2

    script = Script([timeout])
    with pytest.raises(BackendTimeout) as caught:
        await call(kind, script, max_retries=2)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(script.requests) == 3


async def test_backoff_doubles_and_retry_after_is_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    def step(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) == 1:
            return error(429, "slow down", **{"Retry-After": "2"})
        if len(times) < 4:
            return error(503)
        return event_stream(GOOD_SSE)

    script = Script([step])
    assert await call("llm", script, max_retries=3, retry_backoff_s=0.5, retry_backoff_max_s=3)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] == pytest.approx(2.0, abs=0.01)  # Retry-After
    assert 0.5 * 2 * 0.75 <= gaps[1] <= 0.5 * 2  # attempt 1: base * 2, less up to a quarter
    assert 0.5 * 4 * 0.75 <= gaps[2] <= 0.5 * 4


async def test_a_kept_alive_connection_the_server_closed_is_replaced_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # llama.cpp's server closes the connection after a streamed answer while promising
    # keep-alive: the next request on it gets no response at all. It is sent again at once.
    stale = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    script = Script([stale, event_stream(GOOD_SSE)])
    async with llm(script) as backend:
        start = trio.current_time()
        assert await generate(backend) == ["Hello", " there"]
        assert trio.current_time() == start  # no backoff waited
    assert len(script.requests) == 2


async def test_a_second_disconnect_in_a_row_is_a_protocol_error() -> None:
    stale = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    script = Script([stale, stale, event_stream(GOOD_SSE)])
    async with llm(script) as backend:
        with pytest.raises(BackendProtocolError, match="disconnected"):
            await generate(backend)
    assert len(script.requests) == 2


async def test_connection_refused_is_unavailable() -> None:
    """A real refused connection (a closed loopback port), no retries."""
    from scaivoice.backends.openai_llm import OpenAILlmOptions

    options = OpenAILlmOptions(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")
    options = OpenAILlmOptions(**{**_fields(options), "max_retries": 0})
    async with OpenAILlmBackend(options) as backend:
        with pytest.raises(BackendUnavailable, match="cannot reach") as caught:
            await generate(backend)
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        assert caught.value.retryable
        with pytest.raises(BackendUnavailable):
            await backend.check_health()


def _fields(options: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(options)


async def test_connect_errors_are_retried(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([httpx.ConnectError("refused"), httpx.ConnectError("refused"), good("llm")])
    assert await call("llm", script) == ["Hello", " there"]
    assert len(script.requests) == 3


async def test_no_retry_once_the_stream_has_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broken = Body(sse(delta("Hello"), done=False), error=httpx.RemoteProtocolError("cut"))
    script = Script([event_stream(broken), event_stream(GOOD_SSE)])
    send, receive = trio.open_memory_channel[str](100)
    async with llm(script) as backend:
        with pytest.raises(BackendProtocolError, match="cut"):
            await backend.generate(REQUEST, send)
    assert [d async for d in receive] == ["Hello"]  # what was sent stays sent, once
    assert len(script.requests) == 1

    broken_audio = Body(b"\0\0" * 100, error=httpx.ReadTimeout("stalled"))
    script = Script([audio(broken_audio), audio(b"\0\0" * 100)])
    async with tts(script) as backend:
        with pytest.raises(BackendTimeout):
            await synthesize(backend)
    assert len(script.requests) == 1


# --------------------------------------------------------------------------- lifecycle, health


@pytest.mark.parametrize("kind", KINDS)
async def test_aclose_is_idempotent_and_reopen_works(kind: str) -> None:
    script = Script([good(kind)])
    backend = {"llm": llm, "stt": stt, "tts": tts}[kind](script)
    with pytest.raises(BackendUnavailable, match="not open"):
        await backend.check_health()
    await backend.open()
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(BackendUnavailable, match="not open") as caught:
        await backend.check_health()
    assert not caught.value.retryable
    async with backend:
        await backend.check_health()
    await backend.aclose()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(200, json={"data": []}), None),
        (httpx.Response(404), None),  # no /models endpoint: reachable is healthy
        (error(401, "bad key"), BackendRejected),
        (error(503), BackendUnavailable),
        (httpx.ConnectTimeout("slow"), BackendTimeout),
    ],
)
async def test_health_check(answer: Any, expected: type[BackendError] | None) -> None:
    script = Script([answer, httpx.Response(200)])
    async with llm(script) as backend:
        if expected is None:
            await backend.check_health()
        else:
            with pytest.raises(expected):
                await backend.check_health()
    assert len(script.requests) == 1  # never retried
    assert script.requests[0].url.path == "/v1/models"


# --------------------------------------------------------------------------- LLM streams


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (sse(delta("Hel"), done=False), "ended before \\[DONE\\]"),
        (sse(delta("Hel"), "{not json", done=False), "malformed chunk"),
        (sse(delta("Hel"), '{"choices": "none"}'), "malformed chunk"),
        (sse(delta("Hel"), '{"choices": [{"delta": {"content": 3}}]}'), "malformed chunk"),
    ],
)
async def test_malformed_or_truncated_streams_are_protocol_errors(body: bytes, match: str) -> None:
    script = Script([event_stream(body)])
    send, receive = trio.open_memory_channel[str](100)
    async with llm(script) as backend:
        with pytest.raises(BackendProtocolError, match=match) as caught:
            await backend.generate(REQUEST, send)
    assert not caught.value.retryable
    assert [d async for d in receive] == ["Hel"]  # the channel is closed either way
    assert len(script.requests) == 1


async def test_a_body_cut_mid_event_is_a_protocol_error() -> None:
    body = Body(
        b'data: {"choices": [{"delta": {"content": "Hel',
        error=httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        ),
    )
    async with llm(Script([event_stream(body)])) as backend:
        with pytest.raises(BackendProtocolError, match="peer closed"):
            await generate(backend)


async def test_a_finish_reason_without_done_is_accepted() -> None:
    script = Script([event_stream(sse(delta("Hi"), delta(finish="stop"), done=False))])
    async with llm(script) as backend:
        assert await generate(backend) == ["Hi"]


async def test_not_an_event_stream_is_a_protocol_error() -> None:
    script = Script([event_stream(b"<html>proxy login</html>", content_type="text/html")])
    async with llm(script) as backend:
        with pytest.raises(BackendProtocolError, match="not an event stream"):
            await generate(backend)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ('{"error": {"message": "context too long", "code": 400}}', BackendRejected),
        ('{"error": {"message": "worker died"}}', BackendUnavailable),
        ('{"error": "worker died"}', BackendProtocolError),
    ],
)
async def test_errors_inside_a_stream_are_raised(event: str, expected: type[BackendError]) -> None:
    script = Script([event_stream(sse(delta("Hi"), event))])
    async with llm(script) as backend:
        with pytest.raises(expected):
            await generate(backend)


async def test_tool_call_deltas_are_assembled_not_spoken() -> None:
    calls = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather"}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 1, "id": "call_2", "function": {"name": "get_time", "arguments": "{}"}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
    events = [delta("Let me check."), *[delta(tool_calls=[c]) for c in calls]]
    script = Script([event_stream(sse(*events, delta(finish="tool_calls")))])
    send, receive = trio.open_memory_channel[str](100)
    async with llm(script) as backend:
        completion = await backend.complete(REQUEST, send)
    assert [d async for d in receive] == ["Let me check."]
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "get_time", "{}"),
    )


async def test_a_server_that_ignores_stream_true_is_read_whole() -> None:
    answer = {"choices": [{"index": 0, "message": {"content": "Hi!"}, "finish_reason": "stop"}]}
    async with llm(Script([httpx.Response(200, json=answer)])) as backend:
        assert await generate(backend) == ["Hi!"]
    async with llm(Script([httpx.Response(200, json={"choices": "x"})])) as backend:
        with pytest.raises(BackendProtocolError, match="malformed chat completion"):
            await generate(backend)


async def test_cancelling_mid_stream_closes_promptly_and_the_backend_is_reusable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stalled = Body(sse(delta("Hello"), done=False), stall=True)
    script = Script([event_stream(stalled), event_stream(GOOD_SSE)])
    send, receive = trio.open_memory_channel[str](100)
    async with llm(script) as backend:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.generate, REQUEST, send)
            assert await receive.receive() == "Hello"
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert stalled.closed_at == cancelled_at  # closed at once, no timeout waited for
        with pytest.raises(trio.EndOfChannel):
            await receive.receive()  # the deltas channel was closed too
        assert await generate(backend) == ["Hello", " there"]


# --------------------------------------------------------------------------- STT answers


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"{oops"),
        httpx.Response(200, json={"segments": []}),  # no text
        httpx.Response(200, json={"text": "hi", "segments": [{"start": "zero"}]}),
        httpx.Response(200, content=b"hello", headers={"content-type": "text/plain"}),
    ],
)
async def test_malformed_transcriptions_are_protocol_errors(answer: httpx.Response) -> None:
    async with stt(Script([answer])) as backend:
        with pytest.raises(BackendProtocolError, match="malformed transcription"):
            await transcribe(backend)


async def test_a_server_refusing_verbose_json_is_asked_for_json_from_then_on() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if b"verbose_json" in request.content:
            return error(400, "response_format 'verbose_json' is not supported")
        return transcription("plain")

    script = Script([answer])
    async with stt(script) as backend:
        assert [t.text for t in await transcribe(backend)] == ["plain"]
        assert [t.text for t in await transcribe(backend)] == ["plain"]
    formats = [b"verbose_json" in r.content for r in script.requests]
    assert formats == [True, False, False]


async def test_stt_rejects_bad_rates_and_skips_tiny_audio() -> None:
    script = Script([AssertionError("no request expected")])
    async with stt(script) as backend:
        assert await transcribe(backend, b"\0\0" * 800) == [Transcript("", final=True, end_ms=50)]
        results_send, _ = trio.open_memory_channel[Transcript](1)
        _, audio_receive = trio.open_memory_channel[bytes](1)
        with pytest.raises(BackendRejected, match="sample rate"):
            await backend.transcribe(SttRequest(4000), audio_receive, results_send)
    assert not script.requests


async def test_cancelling_a_transcription_closes_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    async with stt(Script([hang])) as backend:  # type: ignore[list-item]
        audio_send, audio_receive = trio.open_memory_channel[bytes](10)
        results_send, results_receive = trio.open_memory_channel[Transcript](10)
        async with audio_send:
            await audio_send.send(b"\0\0" * SECOND)
        with trio.move_on_after(1):
            await backend.transcribe(SttRequest(16000), audio_receive, results_send)
        assert [r async for r in results_receive] == []


# --------------------------------------------------------------------------- TTS answers


@pytest.mark.parametrize(
    "content_type", ["application/json", "audio/mpeg", "text/html", "audio/ogg; codecs=opus"]
)
async def test_wrong_audio_content_types_are_protocol_errors(content_type: str) -> None:
    body = Body(b"\0\0" * 1000)
    async with tts(Script([audio(body, content_type)])) as backend:
        with pytest.raises(BackendProtocolError, match="content type"):
            await synthesize(backend)
    assert body.sent == 0  # refused on the headers, before reading the body


def _wav(rate: int = 24000, bits: int = 16, channels: int = 1, tag: int = 1) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, 2, bits)
    return b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<I", 16) + fmt + b"data\xff\xff\xff\xff"


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"\0\0" * 100 + b"\0", "audio/pcm", "half a 16-bit sample"),
        (b"", "audio/pcm", "no audio"),
        (_wav(bits=8) + b"\0" * 100, "audio/wav", "8-bit"),
        (_wav(channels=2) + b"\0" * 100, "audio/wav", "2 channel"),
        (_wav(tag=3, bits=32) + b"\0" * 100, "audio/wav", "format 0x3"),
        (_wav(rate=96000) + b"\0" * 100, "audio/wav", "96000 Hz"),
        (b"ID3\x03" + b"\0" * 100, "audio/wav", "not a WAV"),
        (_wav()[:30], "audio/wav", "incomplete"),
    ],
)
async def test_odd_audio_is_a_protocol_error(body: bytes, content_type: str, match: str) -> None:
    async with tts(Script([audio(body, content_type)])) as backend:
        with pytest.raises(BackendProtocolError, match=match):
            await synthesize(backend)


async def test_cancelling_mid_audio_closes_promptly_and_the_backend_is_reusable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stalled = Body(b"\0\1" * 2400, stall=True)
    script = Script([audio(stalled), audio(b"\0\1" * 4800)])
    send, receive = trio.open_memory_channel[AudioChunk](100)
    async with tts(script) as backend:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.synthesize, TtsRequest("Hello."), send)
            first = await receive.receive()
            assert first.sample_rate == 24000
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert stalled.closed_at == cancelled_at
        chunks = await synthesize(backend)
        assert sum(len(c.pcm) for c in chunks) == 2 * 4800


async def test_voices_fall_back_when_the_server_cannot_list_them() -> None:
    async with tts(Script([httpx.Response(404)]), voice="nova") as backend:
        assert [v.id for v in await backend.list_voices()] == ["nova"]
    async with tts(Script([httpx.Response(200, content=b"<html>")]), voice="nova") as backend:
        assert [v.id for v in await backend.list_voices()] == ["nova"]
    async with tts(Script([error(503)]), max_retries=0) as backend:
        with pytest.raises(BackendUnavailable):
            await backend.list_voices()
    script = Script([AssertionError("the voices option needs no request")])
    async with tts(script, voices=["alloy", "nova", "alloy"]) as backend:
        assert [v.id for v in await backend.list_voices()] == ["alloy", "nova"]
