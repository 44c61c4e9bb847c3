"""Tool calls written as text (bare JSON, fenced, tagged) found in a stream of deltas."""

from __future__ import annotations

import pytest

from scaivoice.backends._tool_text import FoundCall, ToolTextScanner

WEATHER = FoundCall("get_weather", '{"city": "Paris"}')


def scan(text: str, step: int) -> list[str | FoundCall]:
    """Feed ``text`` in pieces of ``step`` characters; text pieces joined where adjacent."""
    scanner = ToolTextScanner()
    items: list[str | FoundCall] = []
    for start in range(0, len(text), step):
        items += scanner.feed(text[start : start + step])
    items += scanner.close()
    joined: list[str | FoundCall] = []
    for item in items:
        if isinstance(item, str) and joined and isinstance(joined[-1], str):
            joined[-1] += item
        else:
            joined.append(item)
    return joined


CASES = [
    # What Qwen2.5-Coder-0.5B writes.
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}', [WEATHER]),
    # What Qwen2.5-Coder-1.5B writes.
    (
        '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```',
        [WEATHER],
    ),
    # The chat template's own format, when the server leaves it in the text.
    (
        'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call>",
        ["Let me check. ", WEATHER],
    ),
    # Several calls, one after another or in a list; "parameters" for "arguments".
    (
        '{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {"x": "}"}}',
        [FoundCall("a", "{}"), "\n", FoundCall("b", '{"x": "}"}')],
    ),
    (
        '[{"name": "a", "arguments": {}}, {"name": "b", "parameters": {"x": 1}}]',
        [FoundCall("a", "{}"), FoundCall("b", '{"x": 1}')],
    ),
    # Doubled braces (seen from Qwen2.5-Coder-1.5B).
    ('{{"name": "get_weather", "arguments": {"city": "Paris"}}}', [WEATHER]),
    ("{{x}}", ["{{x}}"]),
    # Arguments written as a string are kept as written.
    ('{"name": "a", "arguments": "{\\"x\\": 1}"}', [FoundCall("a", '{"x": 1}')]),
    # Not calls: text, as it came.
    (
        "It is 18 degrees {cool} and a < b, `x` fine.",
        ["It is 18 degrees {cool} and a < b, `x` fine."],
    ),
    ('{"temperature_c": 18}', ['{"temperature_c": 18}']),
    ('{"name": "Bob", "age": 3}', ['{"name": "Bob", "age": 3}']),
    ("```\nprint(1)\n```", ["```\nprint(1)\n```"]),
    ("Use <b>bold</b>.", ["Use <b>bold</b>."]),
    # A call cut short by the end of the stream is repaired once.
    ('{"name": "get_weather", "arguments": {"city": "Paris', [WEATHER]),
    # Text held back as a possible call start is released at the end.
    ("a <tool", ["a <tool"]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_calls_are_found_however_the_text_is_cut(
    text: str, expected: list[str | FoundCall], step: int
) -> None:
    assert scan(text, step) == expected


def test_plain_text_passes_through_at_once() -> None:
    scanner = ToolTextScanner()
    assert scanner.feed("Hello ") == ["Hello "]
    assert scanner.feed("there. {") == ["there. "]  # the brace may open a call: held
    assert scanner.feed("x}") == ["{x}"]  # not a key: text
    assert scanner.close() == []


def test_a_possible_call_is_held_until_complete() -> None:
    scanner = ToolTextScanner()
    assert scanner.feed('{"name": "get_weather", ') == []
    assert scanner.feed('"arguments": {"city": "Paris"}}') == [WEATHER]
    assert scanner.feed(" Done.") == [" Done."]
