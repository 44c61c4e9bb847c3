"""The client tools the suite declares (§2.3 ``tools``) and the prompts that ask a model for
them.

Each default prompt is a plain request that any tool-calling model understands, followed by
the ``call NAME with {JSON}`` form that deterministic test models follow. A server whose model
needs other words gets them from :class:`~.options.SuiteOptions` (``--tool-prompt``,
``--parallel-tool-prompt``); the prompts must make the model call these tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "PARALLEL_TOOL_PROMPT",
    "SUITE_TOOLS",
    "TIME_TOOL",
    "TOOL_PROMPT",
    "WEATHER_TOOL",
    "argument_problems",
]

_CITY: Final = {"type": "string", "description": "The city's name, in English."}

WEATHER_TOOL: Final[Mapping[str, Any]] = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city: temperature and sky.",
    "parameters": {
        "type": "object",
        "properties": {"city": _CITY},
        "required": ["city"],
    },
}
TIME_TOOL: Final[Mapping[str, Any]] = {
    "type": "function",
    "name": "get_time",
    "description": "The current local time in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": _CITY},
        "required": ["city"],
    },
}
SUITE_TOOLS: Final = (WEATHER_TOOL, TIME_TOOL)

# No "call " in the plain part: deterministic test models read every "call NAME" as a call.
TOOL_PROMPT: Final = (
    "What is the weather in Paris right now? Use the get_weather tool. "
    'call get_weather with {"city": "Paris"}'
)
PARALLEL_TOOL_PROMPT: Final = (
    "What is the weather in Paris, and what time is it in Tokyo? Use the get_weather and "
    'get_time tools at once. call get_weather with {"city": "Paris"} and call get_time with '
    '{"city": "Tokyo"}'
)


def argument_problems(arguments: Any, tool: Mapping[str, Any]) -> list[str]:
    """Why ``arguments`` do not fit ``tool``'s parameters (the suite's own simple schemas: an
    object of string properties, some required); empty when they fit."""
    if not isinstance(arguments, dict):
        return [f"arguments {arguments!r} are not an object"]
    schema = tool["parameters"]
    out = [
        f"arguments lack the required {key!r}"
        for key in schema.get("required", [])
        if key not in arguments
    ]
    for key, value in arguments.items():
        declared = schema["properties"].get(key)
        if declared is None:
            continue  # additional properties are allowed by the schema
        if declared.get("type") == "string" and not isinstance(value, str):
            out.append(f"argument {key!r} is {value!r}, not a string")
    return out
