"""``echo``: a demo "language model" that answers with what the user said.

It needs no model and no download, so a voice loop runs end to end with nothing installed
(and tests are deterministic). It is a demonstration, not an assistant.
"""

from __future__ import annotations

import re
from typing import ClassVar

import trio

from scaivoice.engine import BackendOptions, LlmBackend, LlmCapabilities, LlmRequest

__all__ = ["EchoLlm", "EchoOptions"]

_WORD = re.compile(r"\s*\S+")


class EchoOptions(BackendOptions, frozen=True):
    """Options of the ``echo`` backend.

    Attributes:
        prefix: put before the echoed words.
        silence_reply: the answer when the user said nothing.
    """

    prefix: str = "You said: "
    silence_reply: str = "I did not hear anything."


class EchoLlm(LlmBackend):
    """Demo LLM: repeats the user's last message, word by word (no model)."""

    Options: ClassVar[type[BackendOptions]] = EchoOptions
    capabilities: ClassVar[LlmCapabilities] = LlmCapabilities(
        streaming=True, system_prompt=False, tools=False
    )
    name = "echo"

    def __init__(self, options: EchoOptions | None = None) -> None:
        self.options = options or EchoOptions()

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        """Stream ``prefix`` + the last user message, one word per delta, then close ``deltas``.

        Cancelling stops before the next word and closes ``deltas``.
        """
        async with deltas:
            said = next(
                (m.content.strip() for m in reversed(request.messages) if m.role == "user"), ""
            )
            reply = f"{self.options.prefix}{said}" if said else self.options.silence_reply
            for word in _WORD.findall(reply):
                await deltas.send(word)
