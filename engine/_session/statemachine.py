"""The conversation state machine: synchronous, sans-IO. Events in, actions out.

It knows nothing of sockets, tasks or backends. The session shell feeds it what happened (the
user started speaking, a final transcript arrived, the agent's turn ended...) and executes the
actions it returns (open an STT stream, start or cancel an agent turn, emit a state).

The reported state is derived from two phases, the user's and the agent's::

    agent turn speaking            -> speaking
    agent turn pending (no output) -> thinking
    user turn finalizing (STT)     -> thinking
    user turn open                 -> listening
    otherwise                      -> idle

``interrupted`` is emitted once when a cancelled agent turn has fully stopped; the derived state
follows it. In wake-word mode no user turn opens before a wake; the session falls back asleep
(idle) when an agent turn completes. docs/protocol.md has the full transition table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..frames import StateName

__all__ = [
    "Action",
    "AgentInitiated",
    "AgentOutputStarted",
    "AgentTurnEnded",
    "BargeIn",
    "CancelAgentTurn",
    "Commit",
    "Conversation",
    "DiscardUserTurn",
    "EmitState",
    "EmitWarning",
    "Event",
    "FinalizeUserTurn",
    "InterruptRequested",
    "OpenUserTurn",
    "OpenWakeWindow",
    "SpeechStart",
    "SpeechStop",
    "StartAgentTurn",
    "TranscriptFinal",
    "TypedText",
    "UserAudio",
    "WakeWindowClosed",
    "WakeWord",
]


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class UserAudio:
    """A chunk of user audio arrived."""


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Voice activity began (server VAD or a client ``vad`` frame).

    ``barge_in`` says whether this speech may interrupt the agent (``vad_enabled``).
    """

    barge_in: bool


@dataclass(frozen=True, slots=True)
class SpeechStop:
    """Voice activity ended: end of the user's turn."""


@dataclass(frozen=True, slots=True)
class Commit:
    """``audio.commit``: the client ends the user's turn."""


@dataclass(frozen=True, slots=True)
class TypedText:
    """A ``text`` frame: a whole user turn as text."""

    text: str


@dataclass(frozen=True, slots=True)
class TranscriptFinal:
    """The STT stream of ``turn_id`` produced its final transcript.

    ``ignored``: the words were said over the agent and were not a turn of their own (a
    backchannel, a noise, the agent's own echo): no reply, as if nothing was said.
    """

    turn_id: int
    text: str
    ignored: bool = False


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The user's speech over the agent was confirmed as an interruption."""


@dataclass(frozen=True, slots=True)
class AgentInitiated:
    """The agent speaks on its own (``text``, no language model): a prompt after the user
    was silent, or the unheard rest of a reply a false interruption cut off."""

    text: str


@dataclass(frozen=True, slots=True)
class InterruptRequested:
    """An explicit ``interrupt`` frame."""


@dataclass(frozen=True, slots=True)
class WakeWord:
    """A wake word was detected (``wake`` frame or server detector)."""


@dataclass(frozen=True, slots=True)
class WakeWindowClosed:
    """The wait for a request after a wake word (``OpenWakeWindow``) is over."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class AgentOutputStarted:
    """The agent turn ``turn_id`` started speaking (first audio, or first text when text-only)."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class AgentTurnEnded:
    """The agent turn ``turn_id`` has fully stopped; ``interrupted`` if it was cancelled."""

    turn_id: int
    interrupted: bool


Event = (
    UserAudio
    | SpeechStart
    | SpeechStop
    | Commit
    | TypedText
    | TranscriptFinal
    | InterruptRequested
    | WakeWord
    | AgentOutputStarted
    | AgentTurnEnded
    | WakeWindowClosed
    | BargeIn
    | AgentInitiated
)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class EmitState:
    state: StateName
    turn_id: int | None


@dataclass(frozen=True, slots=True)
class EmitWarning:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class OpenUserTurn:
    """Start an STT stream for ``turn_id``; route user audio to it."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class FinalizeUserTurn:
    """End the audio of ``turn_id``'s STT stream; its final transcript will follow."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class DiscardUserTurn:
    """Abandon ``turn_id``'s STT stream (superseded by typed text)."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class StartAgentTurn:
    """Reply to ``user_text`` as agent turn ``turn_id`` (or say ``say``, without a model)."""

    turn_id: int
    user_text: str
    say: str | None = None


@dataclass(frozen=True, slots=True)
class OpenWakeWindow:
    """Wait a while for the request after a wake word; ``WakeWindowClosed`` ends the wait.

    Asked for when a wake word opens a turn under VAD segmentation (the turn waits for speech
    after the keyword; if none starts, the window's close ends it), and when the turn a wake
    word opened ended with no words (the session stays awake for the request)."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class CancelAgentTurn:
    """Cancel the running agent turn (barge-in). ``AgentTurnEnded`` follows."""

    turn_id: int


Action = (
    EmitState
    | EmitWarning
    | OpenUserTurn
    | FinalizeUserTurn
    | DiscardUserTurn
    | StartAgentTurn
    | CancelAgentTurn
    | OpenWakeWindow
)


class _Agent(enum.Enum):
    NONE = "none"
    PENDING = "pending"
    SPEAKING = "speaking"
    CANCELLING = "cancelling"


class Conversation:
    """The state machine of one session.

    Args:
        wake_word_mode: stay idle until a wake word.
        vad_segmentation: user turns open on speech start (VAD) rather than on any audio.
        server_endpointing: the server's VAD ends user turns (not the client's ``vad``
            frames): a turn a wake word opens then waits for speech after the keyword.
            Default: as ``vad_segmentation``.
    """

    def __init__(
        self,
        *,
        wake_word_mode: bool = False,
        vad_segmentation: bool = False,
        server_endpointing: bool | None = None,
    ) -> None:
        self.wake_word_mode = wake_word_mode
        self.vad_segmentation = vad_segmentation
        self.server_endpointing = (
            vad_segmentation if server_endpointing is None else server_endpointing
        )
        self.awake = False
        self.last_turn_id = 0
        self._open_turn: int | None = None
        self._finalizing: set[int] = set()
        self._suppressed: set[int] = set()  # interrupted while still being recognised
        self._agent = _Agent.NONE
        self._agent_turn: int | None = None
        self._queued: StartAgentTurn | None = None
        self._woken_turn: int | None = None  # the user turn a wake word opened
        # The woken turn while no speech has started since the wake (VAD segmentation): the
        # pause after the keyword does not end it; its wake window does, if nothing is said.
        self._awaiting_request: int | None = None
        self._reported: StateName = "idle"
        self._reported_turn: int | None = None

    # ---------------------------------------------------------------- queries

    @property
    def state(self) -> StateName:
        """The state last reported to the client."""
        return self._reported

    @property
    def user_turn(self) -> int | None:
        """The turn whose audio is being collected, if any."""
        return self._open_turn

    @property
    def agent_turn(self) -> int | None:
        """The agent turn running (or stopping), if any."""
        return self._agent_turn

    def configure(
        self, *, wake_word_mode: bool, vad_segmentation: bool, server_endpointing: bool
    ) -> list[Action]:
        """Apply a config change; takes effect for the next user turn."""
        self.wake_word_mode = wake_word_mode
        self.vad_segmentation = vad_segmentation
        self.server_endpointing = server_endpointing
        if not wake_word_mode:
            self.awake = False
        return []

    # ---------------------------------------------------------------- the table

    def handle(self, event: Event) -> list[Action]:
        """Advance on ``event``; return the actions for the shell, in order."""
        actions: list[Action] = []
        match event:
            case UserAudio():
                if not self.vad_segmentation:
                    self._open_user_turn(actions)
            case SpeechStart(barge_in=barge_in):
                if barge_in and self._agent in (_Agent.PENDING, _Agent.SPEAKING):
                    self._cancel_agent(actions)
                self._open_user_turn(actions)
                self._awaiting_request = None  # the request (or something) is being said
            case SpeechStop() if (
                self._open_turn is not None and self._open_turn == self._awaiting_request
            ):
                pass  # the end of the keyword, or the pause after it: wait for the request
            case SpeechStop() | Commit():
                self._awaiting_request = None
                if self._open_turn is not None:
                    self._finalizing.add(self._open_turn)
                    actions.append(FinalizeUserTurn(self._open_turn))
                    self._open_turn = None
                elif isinstance(event, Commit):
                    actions.append(
                        EmitWarning(
                            "nothing_to_commit", "audio.commit with no user audio to commit"
                        )
                    )
            case TypedText(text=text):
                self._awaiting_request = None
                if self._open_turn is not None:
                    actions.append(DiscardUserTurn(self._open_turn))
                    self._open_turn = None
                self.last_turn_id += 1
                self._start_agent(StartAgentTurn(self.last_turn_id, text), actions)
            case TranscriptFinal(turn_id=turn_id, text=text, ignored=ignored):
                if turn_id == self._awaiting_request:
                    self._awaiting_request = None
                if turn_id == self._open_turn:
                    # The STT stream ended on its own (it failed, or it does its own
                    # endpointing): the user turn is over.
                    self._open_turn = None
                    self._finalizing.add(turn_id)
                if turn_id in self._suppressed:
                    # Interrupted before its reply could start: no reply, and the turn ends
                    # (after its final transcript) as interrupted.
                    self._suppressed.discard(turn_id)
                    self._finalizing.discard(turn_id)
                    self._report(actions, "interrupted", turn_id)
                elif turn_id in self._finalizing:
                    self._finalizing.discard(turn_id)
                    if text.strip() and not ignored:
                        self._start_agent(StartAgentTurn(turn_id, text), actions)
                    elif self.wake_word_mode and self._agent is _Agent.NONE:
                        if turn_id == self._woken_turn:
                            actions.append(OpenWakeWindow(turn_id))  # a pause after the keyword
                        else:
                            self.awake = False
                    self._woken_turn = None
            case BargeIn():
                if self._agent in (_Agent.PENDING, _Agent.SPEAKING):
                    self._cancel_agent(actions)
            case AgentInitiated(text=text):
                if self._agent is _Agent.NONE and self._open_turn is None and not self._finalizing:
                    self.last_turn_id += 1
                    self._launch_agent(StartAgentTurn(self.last_turn_id, "", say=text), actions)
            case InterruptRequested():
                if self._agent in (_Agent.PENDING, _Agent.SPEAKING):
                    self._cancel_agent(actions)
                self._suppressed |= self._finalizing
                if self._queued is not None:
                    self._queued = None  # the superseding reply is not wanted either
            case WakeWord():
                if self.wake_word_mode:
                    self.awake = True
                    if self._open_turn is None:
                        self._open_user_turn(actions)
                        self._woken_turn = self._open_turn
                        if self.server_endpointing and self._open_turn is not None:
                            self._awaiting_request = self._open_turn
                            actions.append(OpenWakeWindow(self._open_turn))
            case WakeWindowClosed(turn_id=turn_id) if (
                turn_id == self._awaiting_request and turn_id == self._open_turn
            ):
                # Nothing was said after the keyword: the turn ends (with what it heard), and
                # an empty one sends the session back to sleep.
                self._awaiting_request = None
                self._woken_turn = None
                self._finalizing.add(turn_id)
                actions.append(FinalizeUserTurn(turn_id))
                self._open_turn = None
            case WakeWindowClosed(turn_id=turn_id):
                if (
                    self.wake_word_mode
                    and self.last_turn_id == turn_id
                    and self._open_turn is None
                    and self._agent is _Agent.NONE
                ):
                    self.awake = False  # nothing was asked: back to sleep
            case AgentOutputStarted(turn_id=turn_id):
                if self._agent is _Agent.PENDING and self._agent_turn == turn_id:
                    self._agent = _Agent.SPEAKING
            case AgentTurnEnded(turn_id=turn_id, interrupted=interrupted):
                if self._agent_turn == turn_id and self._agent is not _Agent.NONE:
                    # A turn that completed before a late cancel took effect was not interrupted.
                    self._agent = _Agent.NONE
                    self._agent_turn = None
                    if interrupted:
                        self._report(actions, "interrupted", turn_id)
                    elif self.wake_word_mode and self._open_turn is None:
                        self.awake = False
                    queued, self._queued = self._queued, None
                    if queued is not None:
                        self._launch_agent(queued, actions)
        self._report_derived(actions)
        return actions

    # ---------------------------------------------------------------- helpers

    def _open_user_turn(self, actions: list[Action]) -> None:
        if self._open_turn is not None:
            return
        if self.wake_word_mode and not self.awake:
            return
        self.last_turn_id += 1
        self._open_turn = self.last_turn_id
        actions.append(OpenUserTurn(self.last_turn_id))

    def _start_agent(self, start: StartAgentTurn, actions: list[Action]) -> None:
        if self._agent is _Agent.NONE:
            self._launch_agent(start, actions)
            return
        # A newer user turn supersedes the running agent turn: stop it, then start this one.
        self._queued = start
        if self._agent is not _Agent.CANCELLING:
            self._cancel_agent(actions)

    def _launch_agent(self, start: StartAgentTurn, actions: list[Action]) -> None:
        self._agent = _Agent.PENDING
        self._agent_turn = start.turn_id
        actions.append(start)

    def _cancel_agent(self, actions: list[Action]) -> None:
        assert self._agent_turn is not None
        self._agent = _Agent.CANCELLING
        actions.append(CancelAgentTurn(self._agent_turn))

    def _derived(self) -> tuple[StateName, int | None]:
        if self._agent is _Agent.SPEAKING:
            return "speaking", self._agent_turn
        if self._agent is _Agent.PENDING:
            return "thinking", self._agent_turn
        if self._agent is _Agent.CANCELLING:
            return self._reported, self._reported_turn  # hold until the turn has stopped
        if self._open_turn is not None:
            return "listening", self._open_turn
        if self._finalizing:
            return "thinking", max(self._finalizing)
        return "idle", None

    def _report_derived(self, actions: list[Action]) -> None:
        state, turn_id = self._derived()
        if (state, turn_id) != (self._reported, self._reported_turn):
            self._report(actions, state, turn_id)

    def _report(self, actions: list[Action], state: StateName, turn_id: int | None) -> None:
        self._reported, self._reported_turn = state, turn_id
        actions.append(EmitState(state, turn_id))
