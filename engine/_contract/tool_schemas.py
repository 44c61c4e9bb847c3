"""Tool schemas and arguments: check a parameters schema, repair and validate what a model wrote.

Sans-IO and pure: used when a plugin's skills are loaded, when a client declares tools in its
session config, and for every call a model makes. JSON Schema is checked with ``jsonschema``
(Draft 2020-12, the dialect OpenAI-style function parameters use); arguments a small model wrote
with a slip (a missing brace, single quotes, a trailing comma) are repaired once with
``json-repair`` before they are validated.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import json_repair

__all__ = [
    "ArgumentsInvalid",
    "SchemaInvalid",
    "check_parameters_schema",
    "parse_arguments",
    "result_text",
]

_MAX_SCHEMA_BYTES = 64 * 1024


class SchemaInvalid(ValueError):
    """A tool's parameters are not a valid JSON Schema of an object."""


class ArgumentsInvalid(ValueError):
    """A model's arguments for a call are not JSON, even repaired, or break the schema.

    Attributes:
        repaired: whether a repair was tried (the text was not JSON as written).
    """

    def __init__(self, message: str, *, repaired: bool) -> None:
        super().__init__(message)
        self.repaired = repaired


def check_parameters_schema(schema: Mapping[str, Any]) -> None:
    """Check that ``schema`` is a JSON Schema (Draft 2020-12) whose instances are objects.

    Raises:
        SchemaInvalid: not a mapping, too large, not a valid schema, or not ``type: object``.
    """
    if not isinstance(schema, Mapping):
        raise SchemaInvalid("parameters must be a JSON Schema object")
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError) as exc:
        raise SchemaInvalid(f"parameters are not JSON: {exc}") from exc
    if size > _MAX_SCHEMA_BYTES:
        raise SchemaInvalid(f"parameters schema is {size} bytes; the limit is {_MAX_SCHEMA_BYTES}")
    if schema.get("type") != "object":
        raise SchemaInvalid('parameters must be a schema of "type": "object"')
    validator, schema_error = _jsonschema()
    try:
        validator.check_schema(schema)
    except schema_error as exc:
        raise SchemaInvalid(f"parameters are not a valid JSON Schema: {exc.message}") from exc


def parse_arguments(text: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a model wrote, parsed (repaired once if need be) and validated.

    An empty text means no arguments (``{}``).

    Raises:
        ArgumentsInvalid: not a JSON object even after repair, or not valid against ``schema``.
    """
    repaired = False
    stripped = text.strip()
    if not stripped:
        value: Any = {}
    else:
        try:
            value = json.loads(stripped)
        except ValueError:
            repaired = True
            value = json_repair.loads(stripped)
    if not isinstance(value, dict):
        raise ArgumentsInvalid(
            f"the arguments are not a JSON object: {text[:200]!r}", repaired=repaired
        )
    errors = sorted(_jsonschema()[0](schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(arguments)"
        raise ArgumentsInvalid(f"{where}: {first.message}", repaired=repaired)
    return value


@functools.cache
def _jsonschema() -> tuple[Any, Any]:
    """The Draft 2020-12 validator class and the schema error, imported at the first tool:
    jsonschema and its referencing machinery cost a server ~9 MiB that sessions without tools
    do not need."""
    import jsonschema  # type: ignore[import-untyped]
    import jsonschema.exceptions  # type: ignore[import-untyped]

    return jsonschema.Draft202012Validator, jsonschema.exceptions.SchemaError


def result_text(result: Any) -> str:
    """A tool's result as the text the model reads: a string as it is, anything else as JSON.

    Raises:
        TypeError: the result is not JSON-serialisable.
    """
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the tool's result is not JSON-serialisable: {exc}") from exc
