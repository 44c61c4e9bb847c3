"""The timed side of turn-taking: a pause judged, speech over the agent, a silent user.

Three decisions take time, so each runs as a task of the dialogue's nursery under a cancel scope
of its own and reports back as an item the dialogue applies in order:

- **a pause** (``turn_detection: semantic``): the end-of-turn model is asked once; a complete
  turn ends at once (:class:`PauseEnded`), an incomplete one when the silence reaches the
  policy's cap. Speech resuming cancels the wait (:meth:`TurnTaking.speech_resumed`).
- **speech over the agent** (``vad_enabled``): the agent's audio is held while the words are
  checked; speech that goes on long enough counts as an interruption (:class:`OverlapLong`)
  even before any word is recognised, unless the echo guard is on.
- **a silent user** (``user_idle_timeout_s``): once the agent finished and nobody spoke for that
  long, :class:`UserIdle` (once per silence).

Sans-IO judgements (backchannel or not, eagerness) live in :mod:`.overlap`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from .overlap import EndOfTurnPolicy

__all__ = ["Overlap", "OverlapLong", "PauseEnded", "TurnTaking", "UserIdle"]

#: Speech over the agent longer than this interrupts even before its words are known.
OVERLAP_CONFIRM_S = 1.5


@dataclass(frozen=True, slots=True)
class PauseEnded:
    """The pause ends user turn ``turn_id`` (the model said complete, or the cap passed)."""

    turn_id: int
    probability: float | None


@dataclass(frozen=True, slots=True)
class OverlapLong:
    """Speech over the agent in user turn ``turn_id`` went on long enough to interrupt."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class UserIdle:
    """The user said nothing for ``user_idle_timeout_s`` after the agent finished."""


@dataclass(slots=True)
class Overlap:
    """User turn ``turn_id`` began while the agent was speaking agent turn ``agent_turn_id``."""

    turn_id: int
    agent_turn_id: int
    held: bool
    confirmed: bool = False


class TurnTaking:
    """One session's pending turn-taking decisions.

    Args:
        items: the dialogue's item channel (decisions come back through it).
    """

    def __init__(self, items: trio.MemorySendChannel[Any]) -> None:
        self._items = items
        self._pause: trio.CancelScope | None = None
        self._confirm: trio.CancelScope | None = None
        self._idle: trio.CancelScope | None = None
        self.overlap: Overlap | None = None
        self.idle_prompted = False
        """The idle prompt was said and the user has not spoken since."""

    # ---------------------------------------------------------------- a pause

    def judge_pause(
        self,
        nursery: trio.Nursery,
        turn_id: int,
        judge: Callable[[], Awaitable[float | None]],
        policy: EndOfTurnPolicy,
    ) -> None:
        """The user paused in ``turn_id``: ask ``judge`` (the end-of-turn model), then end the
        turn now or at the policy's cap. Cancelled by :meth:`speech_resumed`."""
        self.speech_resumed()
        scope = trio.CancelScope()
        self._pause = scope
        nursery.start_soon(self._judge, scope, turn_id, judge, policy)

    async def _judge(
        self,
        scope: trio.CancelScope,
        turn_id: int,
        judge: Callable[[], Awaitable[float | None]],
        policy: EndOfTurnPolicy,
    ) -> None:
        started = trio.current_time()
        with scope:
            probability = await judge()
            if probability is not None and probability < policy.complete_at:
                waited = (policy.pause_ms / 1000.0) + (trio.current_time() - started)
                await trio.sleep(max(0.0, policy.max_wait_ms / 1000.0 - waited))
            await self._items.send(PauseEnded(turn_id, probability))
        if self._pause is scope:
            self._pause = None

    def speech_resumed(self) -> None:
        """The user speaks again: a pending end of turn is off."""
        if self._pause is not None:
            self._pause.cancel()
            self._pause = None

    # ---------------------------------------------------------------- speech over the agent

    def overlap_started(
        self, nursery: trio.Nursery, overlap: Overlap, *, confirm_by_length: bool
    ) -> None:
        """Speech began over the agent; with ``confirm_by_length``, it interrupts once it
        lasted :data:`OVERLAP_CONFIRM_S` (unless it stops first or its words decide)."""
        self.overlap = overlap
        self.overlap_speech_stopped()
        if confirm_by_length:
            scope = trio.CancelScope()
            self._confirm = scope
            nursery.start_soon(self._confirm_after, scope, overlap.turn_id)

    async def _confirm_after(self, scope: trio.CancelScope, turn_id: int) -> None:
        with scope:
            await trio.sleep(OVERLAP_CONFIRM_S)
            await self._items.send(OverlapLong(turn_id))

    def overlap_speech_stopped(self) -> None:
        """The overlapping speech stopped: only its words decide now."""
        if self._confirm is not None:
            self._confirm.cancel()
            self._confirm = None

    def overlap_over(self) -> Overlap | None:
        """Forget the overlap (decided); return it."""
        overlap, self.overlap = self.overlap, None
        self.overlap_speech_stopped()
        return overlap

    # ---------------------------------------------------------------- a silent user

    def arm_idle(self, nursery: trio.Nursery, seconds: float) -> None:
        """The agent finished: :class:`UserIdle` after ``seconds`` of nobody speaking."""
        self.disarm_idle()
        if self.idle_prompted:
            return  # once per silence
        scope = trio.CancelScope()
        self._idle = scope
        nursery.start_soon(self._idle_after, scope, seconds)

    async def _idle_after(self, scope: trio.CancelScope, seconds: float) -> None:
        with scope:
            await trio.sleep(seconds)
            self.idle_prompted = True
            await self._items.send(UserIdle())

    def disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def user_active(self) -> None:
        """The user spoke or typed: the idle timer stops and may prompt again later."""
        self.disarm_idle()
        self.idle_prompted = False
