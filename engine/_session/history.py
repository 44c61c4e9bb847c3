"""The conversation history of a session: what the language model sees of past turns.

Each turn is kept whole: the user's message, then for every tool round the assistant's message
carrying its calls and one :class:`ToolOutcome` per call, then what the user heard of the reply.
A tool outcome is recorded exactly once, when its call ends (answered, failed, timed out or
interrupted); a client result that arrives after that updates the same record (a late result
is marked as such) instead of adding one, so the model never sees a call twice nor a call
without its answer. Old turns are dropped whole, so a call never loses its answer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from .._contract.backends import ChatMessage
from .._contract.tools import ToolCall

__all__ = ["History", "ToolOutcome", "TurnRecord"]

OutcomeStatus = Literal["answered", "failed", "timeout", "interrupted", "late"]


@dataclass(slots=True)
class ToolOutcome:
    """How one tool call ended, as the model is told. Updated in place by a late result."""

    call: ToolCall
    content: str
    status: OutcomeStatus
    repeat: bool = False
    """The same call (tool and arguments) was already answered in this turn: not run again."""

    def message(self) -> ChatMessage:
        return ChatMessage("tool", self.content, tool_call_id=self.call.id)


TurnStep = ChatMessage | ToolOutcome


@dataclass(slots=True)
class TurnRecord:
    """One exchange: the user's text, the tool rounds, the reply as heard."""

    user_text: str
    steps: list[TurnStep]
    reply: str

    def messages(self, *, with_tools: bool) -> list[ChatMessage]:
        # A turn the agent began on its own (an idle prompt) has no user message.
        out = [ChatMessage("user", self.user_text)] if self.user_text else []
        for step in self.steps:
            if isinstance(step, ToolOutcome):
                if with_tools:
                    out.append(step.message())
            elif with_tools:
                out.append(step)
            elif step.content:
                out.append(ChatMessage("assistant", step.content))
        if self.reply:
            out.append(ChatMessage("assistant", self.reply))
        return out


class History:
    """The last turns of a conversation, at most ``max_messages`` messages (whole turns)."""

    def __init__(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self._turns: deque[TurnRecord] = deque()

    def record(self, turn: TurnRecord) -> None:
        """Add a finished turn; drop the oldest turns beyond the limit (the newest stays)."""
        self._turns.append(turn)
        while len(self._turns) > 1 and self._size() > self.max_messages:
            self._turns.popleft()
        if self.max_messages <= 0:
            self._turns.clear()

    def messages(self, *, with_tools: bool = True) -> tuple[ChatMessage, ...]:
        """The history as chat messages. ``with_tools=False`` renders it for a model without
        tools: calls and results are left out, what the assistant said stays."""
        return tuple(m for t in self._turns for m in t.messages(with_tools=with_tools))

    def _size(self) -> int:
        return sum(len(t.messages(with_tools=True)) for t in self._turns)

    def __len__(self) -> int:
        return self._size()
