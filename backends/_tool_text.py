"""Tool calls a small model writes as text, found in its stream of text deltas (sans-IO).

Qwen2.5-Coder's chat template asks for ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``,
but the small Coder models answer with the JSON object alone, or in a Markdown fence::

    {"name": "get_weather", "arguments": {"city": "Paris"}}

    ```json
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    ```

llama.cpp's server parses only the tagged form, so :class:`ToolTextScanner` reads what it leaves
as text: it passes plain text through as soon as it can, and holds back what may be a call (a
JSON object or list starting with a key, a fence, a ``<tool_call>`` tag) until it is complete.
A complete block that holds calls becomes :class:`FoundCall` records; any other block is text.
Arguments are kept as the JSON text the model wrote (the engine repairs and validates them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import json_repair

__all__ = ["FoundCall", "ToolTextScanner"]

_TAG_OPEN = "<tool_call>"
_TAG_CLOSE = "</tool_call>"
_FENCE = "```"
_STARTS = "{[`<"


@dataclass(frozen=True, slots=True)
class FoundCall:
    """A call found in the text: the tool's name and its arguments as JSON text."""

    name: str
    arguments: str


class ToolTextScanner:
    """Feed text deltas in; get text to pass on and calls out, in the order the model wrote them.

    Example::

        scanner = ToolTextScanner()
        scanner.feed('{"name": "get_weather", ')  # -> [] (held back: may be a call)
        scanner.feed('"arguments": {"city": "Paris"}}')
        # -> [FoundCall("get_weather", '{"city": "Paris"}')]
        scanner.close()  # -> [] (nothing held back)
    """

    def __init__(self) -> None:
        self._pending = ""
        self._block: str | None = None  # "json", "fence" or "tag" while one is open

    def feed(self, delta: str) -> list[str | FoundCall]:
        """Text that is surely text and calls that are complete, after ``delta``."""
        self._pending += delta
        return self._scan(final=False)

    def close(self) -> list[str | FoundCall]:
        """The end of the stream: what was held back, as calls (repaired) or as text."""
        return self._scan(final=True)

    def _scan(self, *, final: bool) -> list[str | FoundCall]:
        out: list[str | FoundCall] = []
        while self._pending:
            if self._block is None:
                start = _first_start(self._pending)
                if start > 0:
                    _add_text(out, self._pending[:start])
                    self._pending = self._pending[start:]
                    continue
                kind = _classify(self._pending)
                if kind == "wait" and final:
                    kind = "text"
                if kind == "wait":
                    break
                if kind == "text":
                    _add_text(out, self._pending[0])
                    self._pending = self._pending[1:]
                    continue
                self._block = kind
            end = _block_end(self._pending, self._block)
            if end is None and not final:
                break
            block = self._pending if end is None else self._pending[:end]
            self._pending = "" if end is None else self._pending[end:]
            calls = _calls_in(block, self._block, repair=end is None)
            self._block = None
            if calls is None:
                _add_text(out, block)
            else:
                out.extend(calls)
        return out


def _add_text(out: list[str | FoundCall], text: str) -> None:
    if out and isinstance(out[-1], str):
        out[-1] += text
    else:
        out.append(text)


def _first_start(text: str) -> int:
    """Where the first character that may open a call is (``len(text)`` if none)."""
    found = [i for i in (text.find(c) for c in _STARTS) if i >= 0]
    return min(found, default=len(text))


def _classify(text: str) -> str:
    """What ``text`` (starting with one of ``{[`<``) opens: a block kind, "text" or "wait"."""
    first = text[0]
    if first == "{":
        rest = text[1:].lstrip()
        return "wait" if not rest else ("json" if rest[0] in '"{' else "text")
    if first == "[":
        rest = text[1:].lstrip()
        if not rest:
            return "wait"
        if rest[0] != "{":
            return "text"
        inner = rest[1:].lstrip()
        return "wait" if not inner else ("json" if inner[0] == '"' else "text")
    marker, kind = (_FENCE, "fence") if first == "`" else (_TAG_OPEN, "tag")
    if text.startswith(marker):
        return kind
    return "wait" if marker.startswith(text) else "text"


def _block_end(text: str, kind: str) -> int | None:
    """The index just after the block that ``text`` starts with, or ``None`` if still open."""
    if kind == "fence":
        close = text.find(_FENCE, len(_FENCE))
        return None if close < 0 else close + len(_FENCE)
    if kind == "tag":
        close = text.find(_TAG_CLOSE)
        return None if close < 0 else close + len(_TAG_CLOSE)
    depth = 0
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _calls_in(block: str, kind: str, *, repair: bool) -> list[str | FoundCall] | None:
    """The calls a block holds, or ``None`` if it is not made of calls only."""
    body = block
    if kind == "fence":
        body = body[len(_FENCE) :]
        body = body.removesuffix(_FENCE)
        first_line, newline, rest = body.partition("\n")
        if newline and first_line.strip().isalnum():  # ```json
            body = rest
    elif kind == "tag":
        body = body[len(_TAG_OPEN) :].removesuffix(_TAG_CLOSE)
    values = _json_values(body, repair=repair)
    if not values:
        doubled = body.strip()
        if kind == "json" and doubled.startswith("{{") and doubled.endswith("}}"):
            return _calls_in(doubled[1:-1], kind, repair=repair)  # {{"name": ...}}
        return None
    calls: list[str | FoundCall] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            call = _as_call(item)
            if call is None:
                return None
            calls.append(call)
    return calls


def _json_values(text: str, *, repair: bool) -> list[Any]:
    """The JSON values in ``text``, one after another (``[]`` if anything else is there)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    index = 0
    while True:
        while index < len(text) and (text[index].isspace() or text[index] in ",;"):
            index += 1
        if index == len(text):
            return values
        try:
            value, index = decoder.raw_decode(text, index)
        except ValueError:
            if not repair:
                return []
            repaired = json_repair.loads(text[index:])
            return [*values, repaired] if isinstance(repaired, dict | list) else []
        values.append(value)


def _as_call(value: Any) -> FoundCall | None:
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    key = "arguments" if "arguments" in value else "parameters"
    if not isinstance(name, str) or not name or key not in value:
        return None
    arguments = value[key]
    if isinstance(arguments, str):
        return FoundCall(name, arguments)
    return FoundCall(name, json.dumps(arguments, ensure_ascii=False))
