"""Starting the language model at the user's pause, before the end of their turn is certain.

A user's turn ends after the VAD's hang time (300 ms of silence by default). An STT backend that
decodes at the pause already knows, during that hang, what the final transcript will be if the
user stays quiet: it says so with a *stable* interim (``Transcript.stable``). The session then
starts the reply's generation at once, into a buffer, without showing anything to the client.
When the final transcript arrives:

- it matches (same turn, same text, same request: history, system prompt and language): the
  agent turn adopts the running generation, so the language model's first-token latency has
  already been spent inside the hang time;
- it does not, or the user went on speaking (a later interim that is not stable), or a new user
  turn opened: the early generation is cancelled, and the agent turn starts its own.

Nothing reaches the client from an early reply that is not adopted: the cost of a wrong guess
is the language model's work in the background (``[session] early_replies = false`` turns the
feature off, for example for a metered language-model API).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from .._contract.backends import LlmBackend, LlmRequest
from .._contract.calls import BackendCallCounter, call_backend
from .._errors import BackendError

__all__ = ["EarlyReplies", "EarlyReply"]

_BUFFERED_DELTAS = 1024  # more than a reply holds; past it the generation waits


@dataclass(slots=True)
class EarlyReply:
    """One early generation: its deltas so far and to come, and how it ended.

    Attributes:
        scope: cancels the generation (the adopting agent turn cancels it when it ends).
        done: set once the generation returned; ``failure`` is final from then on.
    """

    turn_id: int
    user_text: str
    request: LlmRequest
    deltas: trio.MemoryReceiveChannel[str]
    started_at: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    failure: BackendError | None = None

    async def forward(self, deltas: trio.MemorySendChannel[str]) -> BackendError | None:
        """Pass every delta on to ``deltas`` (then close it); return the generation's failure.

        Cancelling (or returning) cancels the generation: a reply nobody reads stops at once.
        """
        try:
            async with deltas, self.deltas:
                async for delta in self.deltas:
                    await deltas.send(delta)
            await self.done.wait()
            return self.failure
        except trio.BrokenResourceError:
            return None  # the turn stopped reading: it is ending anyway
        finally:
            self.scope.cancel()


class EarlyReplies:
    """A session's early reply: at most one at a time, started in the session's nursery.

    Args:
        llm: the language model.
        outcome: told how each early reply ended: ``"adopted"``, ``"withdrawn"`` (the user
            went on, or a new turn opened) or ``"mismatched"`` (the final was another text).
        counter: where each early generation is counted as a language-model call.
    """

    def __init__(
        self,
        llm: LlmBackend,
        outcome: Callable[[str], None] = lambda _: None,
        *,
        counter: BackendCallCounter,
    ) -> None:
        self._llm = llm
        self._outcome = outcome
        self._counter = counter
        self._current: EarlyReply | None = None

    def withdraw_guess_for(
        self, turn_id: int, outcome: str = "withdrawn", *, unless_text: str | None = None
    ) -> None:
        """Withdraw the early reply if it is for ``turn_id`` (and its text is not
        ``unless_text``): the user spoke on, or the turn's final says something else."""
        reply = self._current
        if reply is not None and reply.turn_id == turn_id and reply.user_text != unless_text:
            self.withdraw(outcome)

    def start(
        self, nursery: trio.Nursery, turn_id: int, user_text: str, request: LlmRequest
    ) -> None:
        """Start generating ``request`` for ``turn_id`` now (cancelling an earlier guess).

        A guess equal to the running one keeps the running one.
        """
        running = self._current
        if running is not None:
            if (running.turn_id, running.user_text, running.request) == (
                turn_id,
                user_text,
                request,
            ):
                return
            self.withdraw()
        send, receive = trio.open_memory_channel[str](_BUFFERED_DELTAS)
        reply = EarlyReply(turn_id, user_text, request, receive, trio.current_time())
        self._current = reply
        nursery.start_soon(self._generate, reply, send)

    def withdraw(self, outcome: str = "withdrawn") -> None:
        """Cancel the early reply, if any (the user went on speaking, or a new turn opened)."""
        if self._current is not None:
            self._current.scope.cancel()
            self._current.deltas.close()
            self._current = None
            self._outcome(outcome)

    def take(self, turn_id: int, user_text: str, request: LlmRequest) -> EarlyReply | None:
        """The early reply if it answers exactly this; otherwise cancel it and return ``None``."""
        reply, self._current = self._current, None
        if reply is None:
            return None
        if (reply.turn_id, reply.user_text, reply.request) != (turn_id, user_text, request):
            reply.scope.cancel()
            reply.deltas.close()
            self._outcome("mismatched")
            return None
        self._outcome("adopted")
        return reply

    async def _generate(self, reply: EarlyReply, deltas: trio.MemorySendChannel[str]) -> None:
        with reply.scope:
            call = partial(self._llm.generate, reply.request, deltas)
            reply.failure = await call_backend(self._llm, call, deltas, counter=self._counter)
        deltas.close()
        reply.done.set()
