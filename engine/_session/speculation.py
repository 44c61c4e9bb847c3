"""Replies started before the user's turn surely ended: adopted at once, or withdrawn unseen.

At a pause in the user's speech the session guesses what the final transcript will be and
starts the reply as a *speculative* agent turn (:class:`~.agent_turn.AgentTurn` with
``speculative=True``): the language model generates and the first sentence is synthesised,
while nothing reaches the client. The guess comes from

- the recogniser itself, when it can tell (a *stable* interim, ``Transcript.stable``: a
  streaming recogniser that decoded the pause), or
- a transcription of the turn's audio so far (:func:`transcribe_snapshot`), for a recogniser
  that only transcribes whole utterances (one request to a batch API, at the pause).

When the turn ends and the final transcript matches the guess (same turn, same text, same
request: history, system prompt, language), the speculative turn *goes live*: what it kept is
sent at once and its audio follows, so recognition, the model's first token and synthesis were
all spent inside the end-of-turn wait. When the user speaks on, a new turn opens, or the final
says something else, it is cancelled and nothing of it was ever seen. With a snapshot
transcription and no speech after the pause, the snapshot *is* the final transcript: the
recogniser's own pass over the same audio is not waited for.

The cost of a wrong guess is the backends' work in the background, reported per request kind
(``stt``, ``llm``, ``tts``) as ``adopted`` or ``discarded``; ``[session] early_replies =
false`` turns speculation off (for example for metered APIs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio

from .._contract.backends import LlmRequest, SttBackend, SttRequest, Transcript
from .._contract.calls import BackendCallCounter, call_backend
from .agent_turn import AgentTurn

__all__ = ["Speculations", "transcribe_snapshot"]

Outcome = Callable[[str, str], None]
"""Told ``(kind, outcome)`` for each speculative request that ended: ``kind`` ``stt``, ``llm``
or ``tts``; ``outcome`` ``adopted`` or ``discarded``."""


class Speculations:
    """A session's speculative reply: at most one at a time.

    Args:
        outcome: told how each speculative request ended (see :data:`Outcome`).
        early_reply: told how each speculative reply ended: ``adopted``, ``withdrawn`` (the
            user went on, a new turn opened) or ``mismatched`` (the final differed).
    """

    def __init__(self, outcome: Outcome, early_reply: Callable[[str], None]) -> None:
        self._outcome = outcome
        self._early_reply = early_reply
        self.current: AgentTurn | None = None
        self.started = 0
        """Speculative replies started in this session."""

    def start(
        self, nursery: trio.Nursery, turn: AgentTurn, run: Callable[[AgentTurn], Awaitable[object]]
    ) -> None:
        """Run ``turn`` (speculative) in ``nursery``; a running guess that asks the same keeps
        running, any other is withdrawn first."""
        running = self.current
        if running is not None:
            if (running.turn_id, running.user_text, running.request) == (
                turn.turn_id,
                turn.user_text,
                turn.request,
            ):
                return
            self.withdraw()
        self.current = turn
        self.started += 1
        nursery.start_soon(run, turn)

    def withdraw(self, outcome: str = "withdrawn") -> None:
        """Cancel the speculative reply, if any; nothing of it reaches the client."""
        turn, self.current = self.current, None
        if turn is not None:
            turn.cancel()
            self._early_reply(outcome)

    def withdraw_for(
        self, turn_id: int, outcome: str = "withdrawn", *, unless: str | None = None
    ) -> None:
        """Withdraw the speculative reply if it answers ``turn_id`` (and not the text
        ``unless``): the user spoke on, or the final says something else."""
        turn = self.current
        if turn is not None and turn.turn_id == turn_id and turn.user_text != unless:
            self.withdraw(outcome)

    def take(self, turn_id: int, user_text: str, request: LlmRequest) -> AgentTurn | None:
        """The speculative reply if it answers exactly this (the caller makes it live);
        otherwise withdraw it and return ``None``."""
        turn = self.current
        if turn is None:
            return None
        if (turn.turn_id, turn.user_text, turn.request) != (turn_id, user_text, request):
            self.withdraw("mismatched")
            return None
        self.current = None
        self._early_reply("adopted")
        return turn

    def ended(self, turn: AgentTurn, *, withdrawn: bool) -> None:
        """Count the requests of a speculative turn that ended."""
        outcome = "discarded" if withdrawn else "adopted"
        self._outcome("llm", outcome)
        for _ in range(turn.pieces_synthesised_speculatively):
            self._outcome("tts", outcome)

    def snapshot(self, *, adopted: bool) -> None:
        """Count a snapshot transcription that ended."""
        self._outcome("stt", "adopted" if adopted else "discarded")


async def transcribe_snapshot(
    stt: SttBackend, pcm: bytes, request: SttRequest, *, counter: BackendCallCounter
) -> Transcript | None:
    """Transcribe ``pcm`` (a turn's audio so far) as one utterance: its final, or ``None``
    when the recogniser failed. Cancelling abandons it."""
    audio_send, audio_recv = trio.open_memory_channel[bytes](1)
    results_send, results_recv = trio.open_memory_channel[Transcript](16)
    final: Transcript | None = None

    async def feed() -> None:
        async with audio_send:
            await audio_send.send(pcm)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        call = partial(stt.transcribe, request, audio_recv, results_send)
        nursery.start_soon(
            partial(call_backend, stt, call, results_send, audio_recv, counter=counter)
        )
        async with results_recv:
            async for result in results_recv:
                if result.final:
                    final = result
    return final
