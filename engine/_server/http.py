"""Small HTTP helpers for the ASGI app: bodies with a size limit, forms, JSON and problems."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from .._errors import HttpProblem

__all__ = [
    "FormPart",
    "HttpProblem",
    "Receive",
    "Scope",
    "Send",
    "header",
    "multipart_parts",
    "parse_multipart",
    "read_body",
    "send_bytes",
    "send_json",
    "send_problem",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROBLEM_BASE = "https://scaivoice.dev/problems/"


@dataclass(slots=True)
class FormPart:
    """One part of a multipart/form-data body."""

    name: str
    data: bytes = b""
    filename: str | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the first), or ``None``."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(receive: Receive, *, limit: int) -> bytes:
    """The whole request body.

    Raises:
        HttpProblem: 413 ``payload_too_large`` past ``limit`` bytes.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpProblem(400, "client_disconnected", "the client went away mid-request")
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, "payload_too_large", f"the request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def parse_multipart(body: bytes, content_type: str | None) -> dict[str, FormPart]:
    """The parts of a multipart/form-data body, by field name (the last one wins).

    Raises:
        HttpProblem: 400 ``invalid_form`` when it is not multipart/form-data or is malformed.
    """
    return {part.name: part for part in multipart_parts(body, content_type)}


def multipart_parts(body: bytes, content_type: str | None) -> list[FormPart]:
    """Every part of a multipart/form-data body, in order (a field may repeat).

    Raises:
        HttpProblem: 400 ``invalid_form`` when it is not multipart/form-data or is malformed.
    """
    if content_type is None:
        raise HttpProblem(400, "invalid_form", "expected multipart/form-data")
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise HttpProblem(400, "invalid_form", "expected multipart/form-data with a boundary")
    parts: list[FormPart] = []
    current: dict[str, Any] = {
        "headers": {},
        "data": bytearray(),
        "field": bytearray(),
        "value": bytearray(),
    }

    def on_part_begin() -> None:
        current["headers"] = {}
        current["data"] = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        current["headers"][bytes(current["field"]).decode("latin-1").lower()] = bytes(
            current["value"]
        ).decode("latin-1")
        current["field"], current["value"] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        headers: dict[str, str] = current["headers"]
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        name = disposition.get(b"name")
        if name is None:
            return
        filename = disposition.get(b"filename")
        parts.append(
            FormPart(
                name=name.decode("utf-8"),
                data=bytes(current["data"]),
                filename=filename.decode("utf-8") if filename is not None else None,
                content_type=headers.get("content-type"),
                headers=headers,
            )
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # the parser raises its own error types
        raise HttpProblem(400, "invalid_form", f"malformed multipart body: {exc}") from exc
    return parts


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send a complete response."""
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in extra_headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send,
    status: int,
    doc: Any,
    *,
    content_type: str = "application/json",
    extra_headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send ``doc`` as JSON (never cached)."""
    await send_bytes(
        send,
        status,
        json.dumps(doc).encode(),
        content_type,
        [("cache-control", "no-store"), *extra_headers],
    )


async def send_problem(send: Send, problem: HttpProblem) -> None:
    """Send an RFC 9457 problem document with a stable ``code``."""
    extra = [("retry-after", str(problem.retry_after))] if problem.retry_after else []
    await send_json(
        send,
        problem.status,
        {
            "type": PROBLEM_BASE + problem.code,
            "title": problem.code.replace("_", " "),
            "status": problem.status,
            "detail": problem.detail,
            "code": problem.code,
        },
        content_type="application/problem+json",
        extra_headers=extra,
    )
