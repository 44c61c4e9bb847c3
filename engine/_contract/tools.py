"""Tools the language model may call: what a tool is, what a call is, and server skills.

Three kinds of tools reach the model, all through the same records:

* **client tools**: the app declares them in the session config (``tools``) and runs them; the
  engine sends ``tool.call`` and waits for ``tool.result``;
* **server skills**: a plugin yields :class:`ToolSpec` from the ``scaivoice_tools`` hook, with an
  async handler the engine calls;
* **tool providers**: a :class:`ToolProvider` (an MCP server the operator lists) offers a set of
  :class:`ToolSpec` that may change while the engine runs.

The model sees a :class:`ToolDefinition` (OpenAI's function shape: name, description, JSON
Schema parameters) and answers with :class:`ToolCall` records (see
:meth:`~scaivoice.engine.LlmBackend.respond`). Handlers receive the arguments already parsed and
validated against the schema.

Cancelling a handler (barge-in: the user interrupted the turn; the call's deadline) cancels the
call at its next checkpoint: handlers must be cancellable and must not shield long work.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends import API_VERSION
from .resource import Resource

__all__ = [
    "TOOL_NAME_PATTERN",
    "ToolCall",
    "ToolContext",
    "ToolDefinition",
    "ToolHandler",
    "ToolProvider",
    "ToolSpec",
]

#: A tool's name: what OpenAI-compatible servers accept for a function name.
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """What the language model is told about a tool (OpenAI's function shape).

    Attributes:
        name: matches :data:`TOOL_NAME_PATTERN`.
        description: when to use the tool, for the model.
        parameters: a JSON Schema of ``type: object`` for the arguments.
    """

    name: str
    description: str
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for.

    Attributes:
        id: the call's id (unique within the conversation; tool results refer to it).
        name: the tool's name.
        arguments: the arguments as the JSON text the model wrote: not validated, maybe not
            even JSON. The engine repairs and validates it against the tool's schema.
    """

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who a server skill is called for.

    Attributes:
        tenant: the session's tenant.
        session_id: the session's id.
        turn_id: the agent turn that made the call.
        call_id: the call's id.
    """

    tenant: str
    session_id: str
    turn_id: int
    call_id: str


ToolHandler = Callable[[Mapping[str, Any], ToolContext], Awaitable[Any]]
"""A server skill's implementation: ``await handler(arguments, context)``.

Returns the result the model reads: anything JSON-serialisable (a string is passed as it is).
Raise :class:`~scaivoice.engine.ToolFailed` to tell the model the tool failed with a message of
your choosing; any other exception is reported as ``tool_failed`` and logged. Cancelling (the
user interrupted, the call's deadline) cancels the handler at its next checkpoint.
"""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A server skill: yielded by a plugin's ``scaivoice_tools`` hook, or by a provider.

    Attributes:
        name: the name the model calls it by (:data:`TOOL_NAME_PATTERN`); unique per engine.
        description: when to use it, for the model.
        parameters: JSON Schema (``type: object``) of the arguments; checked when loaded.
        handler: the implementation (see :data:`ToolHandler`).
        permissions: permissions the session's credential must hold for the tool to be offered
            (``{"scaivoice:admin"}``); empty: any session whose tenant allows the tool.
        timeout_s: the longest a call may take; ``None``: the engine's ``[tools] call_timeout_s``.
        api_version: the backend API version the plugin was written against.
    """

    name: str
    description: str
    handler: ToolHandler
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    permissions: frozenset[str] = frozenset()
    timeout_s: float | None = None
    api_version: int = API_VERSION

    @property
    def definition(self) -> ToolDefinition:
        """What the model is told about this skill."""
        return ToolDefinition(self.name, self.description, self.parameters)


class ToolProvider(Resource):
    """A source of tools that is opened, may go down and may change: an MCP server.

    The engine opens it like a backend (retrying while it is down: the server keeps running)
    and asks for its tools when a session starts an agent turn.
    """

    name: str = ""

    @abc.abstractmethod
    async def list_tools(self) -> Sequence[ToolSpec]:
        """The tools offered now. Raise a ``BackendError`` when the provider is down."""

    async def check_health(self) -> None:
        """Return if the provider can serve now; raise a ``BackendError`` if not."""
