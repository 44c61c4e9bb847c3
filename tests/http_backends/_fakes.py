"""``httpx.MockTransport`` scripts for the failure paths (never for the happy paths)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from scaivoice.backends.openai_llm import OpenAILlmBackend, OpenAILlmOptions
from scaivoice.backends.openai_stt import OpenAISttBackend, OpenAISttOptions
from scaivoice.backends.openai_tts import OpenAITtsBackend, OpenAITtsOptions

BASE_URL = "http://fake.invalid/v1"

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Body(httpx.AsyncByteStream):
    """A response body: ``pieces``, then ``error`` raised, or a stall until closed.

    Records whether it was closed, and when (``trio.current_time()``).
    """

    def __init__(self, *pieces: bytes, error: Exception | None = None, stall: bool = False) -> None:
        self.pieces = pieces
        self.error = error
        self.stall = stall
        self.sent = 0
        self.closed_at: float | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.sent += 1
            yield piece
        if self.error is not None:
            raise self.error
        if self.stall:
            await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closed_at = trio.current_time()


@dataclass
class Script:
    """A transport handler answering request *n* with ``steps[n]`` (the last one repeats)."""

    steps: list[Step]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps[min(len(self.requests), len(self.steps) - 1)]
        self.requests.append(request)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def error(status: int, message: str = "nope", **headers: str) -> httpx.Response:
    """An OpenAI-style error answer."""
    body = {"error": {"message": message, "type": "invalid_request_error"}}
    return httpx.Response(status, json=body, headers=headers)


def sse(*events: Any, done: bool = True) -> bytes:
    """Server-sent events: each item JSON-encoded (or a ``str`` sent as it is)."""
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def delta(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice."""
    body: dict[str, Any] = {} if content is None else {"content": content}
    body.update(extra)
    choice = {"index": 0, "delta": body, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "choices": [choice]}


def event_stream(body: bytes | Body, content_type: str = "text/event-stream") -> httpx.Response:
    stream = body if isinstance(body, Body) else Body(body)
    return httpx.Response(200, headers={"content-type": content_type}, stream=stream)


def audio(body: bytes | Body, content_type: str = "audio/pcm") -> httpx.Response:
    stream = body if isinstance(body, Body) else Body(body)
    return httpx.Response(200, headers={"content-type": content_type}, stream=stream)


def transcription(text: str = "hello there") -> httpx.Response:
    return httpx.Response(200, json={"text": text, "language": "en", "segments": []})


GOOD_SSE = sse(delta("Hello"), delta(" there", finish="stop"))


def llm(script: Script, **options: Any) -> OpenAILlmBackend:
    settings = {"base_url": BASE_URL, "model": "m", "retry_backoff_s": 0.1, **options}
    return OpenAILlmBackend(OpenAILlmOptions(**settings), transport=script.transport)


def stt(script: Script, **options: Any) -> OpenAISttBackend:
    settings = {"base_url": BASE_URL, "retry_backoff_s": 0.1, **options}
    return OpenAISttBackend(OpenAISttOptions(**settings), transport=script.transport)


def tts(script: Script, **options: Any) -> OpenAITtsBackend:
    settings = {"base_url": BASE_URL, "retry_backoff_s": 0.1, **options}
    return OpenAITtsBackend(OpenAITtsOptions(**settings), transport=script.transport)
