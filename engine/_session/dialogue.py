"""The dialogue task: every item of a session goes through the conversation state machine here.

::

    items ──► Dialogue.run ──► Conversation.handle (sans-IO) ──► actions
                  │                                               │
                  │   ┌── per user turn: UserTurn.transcribe ◄────┤ OpenUserTurn
                  │   ├── per agent turn: AgentTurn.run ◄─────────┤ StartAgentTurn
                  │   └── early reply (at the user's pause)       │ CancelAgentTurn: turn.cancel()
                  └── turn tasks run in the dialogue's own nursery and report back as items
                      (TranscriptFinal, AgentOutputStarted, AgentTurnEnded)

The dialogue is the only task that drives the state machine, so its transitions happen in the
order the items arrived. Turn tasks are started with ``nursery.start``: a turn is handed to the
dialogue only once its cancel scope is entered.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import trio

from .._contract.backends import ChatMessage, LlmRequest, SttRequest, Transcript
from .._contract.features import (
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    WakeDetected,
)
from .._errors import ConfigError
from .._host.config import SessionLimits
from .._host.engine import Engine
from .._host.limits import FrameGuard
from ..frames import (
    AudioCommit,
    ClientFrame,
    Interrupt,
    Playback,
    SessionConfig,
    SessionConfigPatch,
    SessionUpdate,
    SessionUpdated,
    State,
    TextInput,
    ToolResult,
    TranscriptFrame,
    VadFrame,
    Wake,
    WakeFrame,
    WarningFrame,
)
from .agent_turn import AgentTurn
from .config import turn_detection, validate_config
from .features import SessionFeatures
from .history import History, TurnRecord
from .overlap import EndOfTurnPolicy, overlap_verdict, spoken_words
from .speculation import Speculations, transcribe_snapshot
from .statemachine import (
    Action,
    AgentInitiated,
    AgentOutputStarted,
    AgentTurnEnded,
    BargeIn,
    CancelAgentTurn,
    Commit,
    Conversation,
    DiscardUserTurn,
    EmitState,
    EmitWarning,
    Event,
    FinalizeUserTurn,
    InterruptRequested,
    OpenUserTurn,
    OpenWakeWindow,
    SpeechStart,
    SpeechStop,
    StartAgentTurn,
    TranscriptFinal,
    TypedText,
    UserAudio,
    WakeWindowClosed,
    WakeWord,
)
from .tools import SessionTools
from .turn_taking import Overlap, OverlapLong, PauseEnded, TurnTaking, UserIdle
from .unfinished import sounds_unfinished
from .user_turn import STT_RATE, InputAudio, UserTurn
from .wire import AudioIn, Outbox

__all__ = ["Dialogue", "Item"]


@dataclass(frozen=True, slots=True)
class InterimHeard:
    """An interim transcript of user turn ``turn_id`` (for speech over the agent)."""

    turn_id: int
    text: str


Item = (
    ClientFrame
    | AudioIn
    | Event
    | SpeechStarted
    | SpeechStopped
    | SpeechPaused
    | SpeechResumed
    | WakeDetected
    | PauseEnded
    | OverlapLong
    | UserIdle
    | InterimHeard
)

_JOIN_MS = 100  # the most queued audio the dialogue joins into one chunk
#: How long the end-of-turn judgement waits for the pause's transcription, once the model has
#: said "complete": the reply needs that transcript before it can start anyway.
PAUSE_TEXT_WAIT_S = 1.0
_COVER_SLACK_MS = 100  # an interim ending this close to the end of speech covers it

log = logging.getLogger("scaivoice.session")


class Dialogue:
    """The conversation of one session: state machine, user turns, agent turns, history.

    Args:
        engine: the opened engine.
        tenant: the caller's tenant (its opt-ins and lexicon apply).
        config: the session config agreed at ``session.start``.
        outbox: where frames go.
        items: this session's item channel (the reader and the turn tasks send to it).
        early_reply_outcome: told how each speculative reply ended (telemetry).
        speculative_request: told ``(kind, outcome)`` of each speculative request (telemetry).
        permissions: the session credential's permissions (server tools may require some).
        session_id: the session's id (tools' context; the model's conversation id).
    """

    def __init__(
        self,
        engine: Engine,
        tenant: str,
        config: SessionConfig,
        outbox: Outbox,
        items: trio.MemorySendChannel[Item],
        early_reply_outcome: Callable[[str], None],
        *,
        speculative_request: Callable[[str, str], None] = lambda kind, outcome: None,
        permissions: frozenset[str] = frozenset(),
        session_id: str = "",
    ) -> None:
        self.engine = engine
        self.limits: SessionLimits = engine.config.session
        self.config = config
        self.history = History(max(self.limits.history_messages, 1))
        self._session_id = session_id
        self.tools = SessionTools(engine, tenant, permissions, session_id, outbox.send)
        self._tenant = tenant
        self._lexicon = engine.config.lexicon_for(tenant)
        self._outbox = outbox
        self._items = items
        self.guard = FrameGuard(sample_rate=config.input_sample_rate)
        """The reader's flood guard: it follows the input sample rate."""
        self._conversation = Conversation()
        self._input = InputAudio(config.input_sample_rate)
        self._features = SessionFeatures(engine, tenant, STT_RATE)
        self._client_vad = False
        self._user_turn: UserTurn | None = None  # the turn whose audio is being collected
        self._recognised: dict[int, UserTurn] = {}  # turns recognised, not yet answered
        self._agent_turn: AgentTurn | None = None
        self._speculation = Speculations(speculative_request, early_reply_outcome)
        self._snapshot: tuple[int, Transcript] | None = (
            None  # a turn's audio transcribed at a pause
        )
        self._snapshot_scope: trio.CancelScope | None = None
        self._snapshot_done: tuple[int, trio.Event] | None = None  # the pause's transcription
        self._interim: tuple[int, Transcript] | None = None  # the open turn's latest interim
        self._interim_heard = trio.Event()  # set (and replaced) at each interim
        self._taking = TurnTaking(items)
        self._mode = "manual"  # the turn detection in effect (see apply_config)
        self._barge_in_by: int | None = None  # the user turn that cut the last agent turn off
        self._unheard = ""  # what the user did not hear of the last agent turn cut off

    # ================================================================ the loop

    async def run(self, items: trio.MemoryReceiveChannel[Item]) -> None:
        """Handle items until the session ends. Turn tasks run in this task's nursery.

        Items already queued are taken without a trip through the scheduler; it waits only
        when the queue is empty. Audio frames that queued up while the dialogue was busy (the
        VAD's model runs in a worker thread) are joined, up to ``_JOIN_MS``, and handled as one
        chunk: one VAD round trip instead of one per frame, so a session that fell behind
        catches up. Control frames keep their place: a join stops at the first one.
        Cancelling stops every turn of the session.
        """
        async with trio.open_nursery() as turns, items:
            receive_nowait = items.receive_nowait
            pending: Item | None = None
            while True:
                if pending is not None:
                    item, pending = pending, None
                else:
                    try:
                        item = receive_nowait()
                    except trio.WouldBlock:
                        try:
                            item = await items.receive()
                        except trio.EndOfChannel:
                            return
                    else:
                        await trio.lowlevel.checkpoint_if_cancelled()
                if type(item) is AudioIn:
                    limit = self.config.input_sample_rate * 2 * _JOIN_MS // 1000
                    pcm = item.pcm
                    while len(pcm) < limit:
                        try:
                            following = receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        if type(following) is not AudioIn:
                            pending = following
                            break
                        pcm += following.pcm
                    await self._on_audio(turns, pcm)
                    continue
                await self._on_item(turns, item)

    async def _on_item(self, turns: trio.Nursery, item: Item) -> None:
        conv = self._conversation
        match item:
            case AudioIn(pcm=pcm):
                await self._on_audio(turns, pcm)
            case VadFrame(speaking=speaking):
                if not self._client_vad:
                    self._client_vad = True
                    self._reconfigure()
                if speaking:
                    await self._speech_started(turns)
                else:
                    await self._speech_stopped(turns, client=True)
            case Interrupt():
                await self._apply(turns, conv.handle(InterruptRequested()))
            case AudioCommit():
                self._taking.user_active()
                await self._apply(turns, conv.handle(Commit()))
            case TextInput(text=text):
                self._taking.user_active()
                await self._apply(turns, conv.handle(TypedText(text)))
            case Wake():
                if not self.config.wake_word_enabled:
                    await self._outbox.warn("wake_ignored", "wake frames need wake_word_enabled")
                self._input.clear_pre_roll()  # the wake word itself is not part of the request
                await self._features_off(self._features.forget_speech())
                await self._apply(turns, conv.handle(WakeWord()))
            case Playback(turn_id=turn_id, played_ms=played_ms):
                turn = self._agent_turn
                if turn is not None and turn.turn_id == turn_id:
                    turn.playback.report_played(played_ms)
            case SessionUpdate(config=patch):
                await self._on_update(patch)
            case ToolResult():
                if not self.config.tools_enabled and not self.tools.calls:
                    await self._outbox.error(
                        "tools_unavailable", "this session has no tools: set tools_enabled"
                    )
                else:
                    await self.tools.deliver(item)
            case SpeechStarted():
                await self._speech_started(turns)
            case SpeechStopped():
                await self._speech_stopped(turns, client=False)
            case SpeechPaused():
                if conv.user_turn is not None:
                    await self._transcribe_at_pause(turns, conv.user_turn)
            case SpeechResumed():
                self._taking.speech_resumed()
                if conv.user_turn is not None:
                    self._speculation.withdraw_for(conv.user_turn)
                self._forget_snapshot()
            case PauseEnded(turn_id=turn_id):
                if conv.user_turn == turn_id:
                    await self._apply(turns, conv.handle(SpeechStop()))
            case InterimHeard(turn_id=turn_id, text=text):
                overlap = self._taking.overlap
                if overlap is not None and overlap.turn_id == turn_id and not overlap.confirmed:
                    if self._verdict(text, overlap) == "interrupt":
                        await self._barge_in(turns, overlap)
            case OverlapLong(turn_id=turn_id):
                overlap = self._taking.overlap
                if overlap is not None and overlap.turn_id == turn_id and not overlap.confirmed:
                    await self._barge_in(turns, overlap)
            case UserIdle():
                await self._apply(turns, conv.handle(AgentInitiated(self.config.user_idle_prompt)))
            case WakeDetected(confidence=confidence, keyword=keyword, after_ms=after_ms):
                await self._outbox.send(WakeFrame(keyword=keyword, confidence=confidence))
                self._input.keep_last(after_ms)  # the keyword is not part of the request
                # A pause after the keyword ends nothing.
                await self._features_off(self._features.forget_speech())
                await self._apply(turns, conv.handle(WakeWord()))
            case AgentOutputStarted(turn_id=turn_id):
                await self._apply(turns, conv.handle(item))
                turn = self._agent_turn
                if turn is not None and turn.turn_id == turn_id:
                    turn.output_acknowledged.set()
            case AgentTurnEnded(turn_id=turn_id, interrupted=interrupted):
                if self._agent_turn is not None and self._agent_turn.turn_id == turn_id:
                    self._agent_turn = None
                await self._apply(turns, conv.handle(item))
                idle_s = self.config.user_idle_timeout_s
                if not interrupted and idle_s is not None and conv.state == "idle":
                    self._taking.arm_idle(turns, idle_s)
            case TranscriptFinal():
                await self._on_final(turns, item)
            case WakeWindowClosed():
                await self._apply(turns, conv.handle(item))
            case _:  # pragma: no cover - exhaustive over Item
                raise AssertionError(f"unhandled dialogue item {item!r}")

    async def _on_audio(self, turns: trio.Nursery, pcm: bytes) -> None:
        pcm = self._input.resample(pcm)
        if not pcm:
            return
        self._input.remember(pcm)
        await self._apply(turns, self._conversation.handle(UserAudio()))
        events, failed = await self._features.process(pcm)
        await self._features_off(failed)
        for event in events:
            await self._on_item(turns, event)
        turn = self._user_turn
        if turn is None:
            self._input.trim_pre_roll()
            return
        for chunk in self._input.take_pre_roll():
            await turn.feed(chunk)
        if turn.speaker is not None:
            turn.speaker.start_provisional(turns)
        if turn.audio_ms >= self.limits.max_user_turn_s * 1000.0:
            await self._outbox.warn(
                "user_turn_too_long",
                f"the user turn reached {self.limits.max_user_turn_s:g} s and was ended "
                "here; what follows belongs to the next turn",
            )
            await self._apply(turns, self._conversation.handle(Commit()))

    async def _features_off(self, failed: list[str]) -> None:
        """Features that failed are off: the session goes on without them, and says so."""
        for key in failed:
            self._reconfigure()
            await self._outbox.warn(
                "feature_failed", f"{key}: the server-side feature failed and is now off"
            )

    async def _apply(self, turns: trio.Nursery, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case EmitState(state=state, turn_id=turn_id):
                    await self._outbox.send(State(state=state, turn_id=turn_id))
                case EmitWarning(code=code, message=message):
                    await self._outbox.warn(code, message)
                case OpenUserTurn(turn_id=turn_id):
                    self._speculation.withdraw()  # a guess for an older turn answers nothing now
                    self._forget_snapshot()
                    self._user_turn = await turns.start(self._run_user_turn, turns, turn_id)
                case FinalizeUserTurn(turn_id=turn_id):
                    user_turn = self._user_turn
                    if user_turn is not None and user_turn.turn_id == turn_id:
                        tail = self._input.flush()
                        if tail:
                            await user_turn.feed(tail)
                        user_turn.end()
                        self._adopt_snapshot(user_turn)
                        if user_turn.speaker is not None:
                            user_turn.speaker.start_final(turns)
                        self._user_turn = None
                case DiscardUserTurn(turn_id=turn_id):
                    user_turn = self._user_turn
                    if user_turn is not None and user_turn.turn_id == turn_id:
                        user_turn.discard()
                        self._user_turn = None
                        # Exactly one final ends every spoken turn: this one was abandoned.
                        await self._outbox.send(
                            TranscriptFrame(
                                turn_id=turn_id,
                                text="",
                                final=True,
                                start_ms=0,
                                end_ms=round(user_turn.audio_ms),
                            )
                        )
                case StartAgentTurn(turn_id=turn_id, user_text=user_text, say=say):
                    guessed = None
                    if say is None:
                        guessed = self._speculation.take(
                            turn_id, user_text, self.llm_request(user_text)
                        )
                    if guessed is not None:
                        self._agent_turn = guessed
                        ended, stt_ms = self._user_turn_timing(turn_id)
                        await guessed.go_live(user_turn_ended=ended, stt_ms=stt_ms)
                    else:
                        agent_turn = self._agent_turn_for(turn_id, user_text, say)
                        self._agent_turn = await turns.start(self._run_agent_turn, agent_turn)
                case OpenWakeWindow(turn_id=turn_id):
                    turns.start_soon(self._wake_window, turn_id)
                case CancelAgentTurn(turn_id=turn_id):
                    if self._agent_turn is not None and self._agent_turn.turn_id == turn_id:
                        self._agent_turn.cancel()

    async def _wake_window(self, turn_id: int) -> None:
        """Stay awake ``wake_window_s`` for a request that follows the wake word after a pause."""
        await trio.sleep(self.limits.wake_window_s)
        await self._items.send(WakeWindowClosed(turn_id))

    # ================================================================ user turns

    async def _run_user_turn(
        self,
        turns: trio.Nursery,
        turn_id: int,
        *,
        task_status: trio.TaskStatus[UserTurn] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One user turn's recognition; its final goes back to the dialogue as an item."""
        turn = UserTurn(turn_id, self._features.speaker_of_turn(self.limits.max_user_turn_s * 1000))
        request = SttRequest(
            sample_rate=STT_RATE, language=self.config.language, word_timings=False
        )
        on_interim = partial(self._on_interim, turns, turn_id)
        text = await turn.transcribe(
            self.engine.stt,
            request,
            self._outbox,
            on_interim,
            counter=self.engine.telemetry,
            task_status=task_status,
        )
        self._speculation.withdraw_for(turn_id, "mismatched", unless=text)
        if turn.ended_at is None and self._user_turn is turn:
            self._user_turn = None  # ended by the STT itself: later audio opens a new turn
        self._recognised[turn_id] = turn
        await self._items.send(TranscriptFinal(turn_id, text))

    async def _judge_pause(self, turn_id: int, policy: EndOfTurnPolicy) -> float | None:
        """The end-of-turn model's probability at a pause, overruled by the words: a turn
        whose transcript so far stops mid-number, on "and", on a comma... is not over however
        finished its intonation sounded: the answer waits until the silence reaches the
        policy's ``unfinished_wait_ms`` (the user speaking again cancels it). Cancelling
        abandons the judgement."""
        started = trio.current_time()
        probability = await self._features.end_of_turn()
        if probability is None or probability < policy.complete_at:
            return probability
        user_turn = self._user_turn
        speech_end_ms = (
            user_turn.audio_ms - policy.pause_ms - (trio.current_time() - started) * 1000.0
            if user_turn is not None and user_turn.turn_id == turn_id
            else math.inf
        )
        text = await self._text_at_pause(turn_id, speech_end_ms)
        if text is not None and sounds_unfinished(text):
            log.debug("turn %d: %r sounds unfinished; waiting for more", turn_id, text)
            silent_s = policy.pause_ms / 1000.0 + (trio.current_time() - started)
            await trio.sleep(max(0.0, policy.unfinished_wait_ms / 1000.0 - silent_s))
        return probability

    async def _text_at_pause(self, turn_id: int, speech_end_ms: float) -> str | None:
        """The turn's words up to the pause: the pause's transcription (batch recognisers),
        or an interim that covers the speech (a stable one, or one whose ``end_ms`` reaches
        ``speech_end_ms``; an older interim stops mid-sentence and would mislead). Waited for
        up to :data:`PAUSE_TEXT_WAIT_S` (the reply needs it first anyway); ``None`` when
        none comes in time, or the recogniser's interims say nothing of where they end."""
        with trio.move_on_after(PAUSE_TEXT_WAIT_S):
            while True:
                snapshot = self._snapshot
                if snapshot is not None and snapshot[0] == turn_id:
                    return snapshot[1].text
                pending = self._snapshot_done
                if pending is not None and pending[0] == turn_id and not pending[1].is_set():
                    await pending[1].wait()
                    continue
                interim = self._interim
                if interim is None or interim[0] != turn_id:
                    return None
                heard = interim[1]
                if heard.stable or heard.end_ms >= speech_end_ms - _COVER_SLACK_MS:
                    return heard.text
                if heard.end_ms <= 0:
                    return None
                await self._interim_heard.wait()
        return None

    def _on_interim(self, turns: trio.Nursery, turn_id: int, result: Transcript) -> None:
        """Start an early reply on a stable interim; withdraw it on any other interim."""
        text = result.text.strip()
        self._interim = (turn_id, result)
        self._interim_heard.set()
        self._interim_heard = trio.Event()
        overlap = self._taking.overlap
        if overlap is not None and overlap.turn_id == turn_id and text:
            try:  # the dialogue decides; a full queue only delays it to the final
                self._items.send_nowait(InterimHeard(turn_id, text))
            except trio.WouldBlock:
                pass
            return  # no early reply to speech over the agent
        if result.stable and text:
            self._speculate(turns, turn_id, text)
            return
        self._speculation.withdraw_for(turn_id)

    # ================================================================ agent turns

    def _tools_on(self) -> bool:
        """Whether the model may call tools: then no reply starts early (a guess must never
        run a tool with side effects)."""
        return self.config.tools_enabled and self.engine.llm.capabilities.tools

    def llm_request(self, user_text: str) -> LlmRequest:
        """What the language model is asked for a reply to ``user_text`` now."""
        system_prompt = self.config.system_prompt or self.limits.system_prompt
        messages = (
            ChatMessage("system", system_prompt),
            *self.history.messages(with_tools=self.engine.llm.capabilities.tools),
            ChatMessage("user", user_text),
        )
        return LlmRequest(
            messages=messages,
            language=self.config.language,
            conversation_id=self._session_id or None,
        )

    def _user_turn_timing(self, turn_id: int) -> tuple[float, float | None]:
        """When user turn ``turn_id`` ended and its STT time (it is answered now)."""
        user_turn = self._recognised.pop(turn_id, None)
        for older in [k for k in self._recognised if k < turn_id]:
            del self._recognised[older]  # recognised before this one: never answered
        if user_turn is None or user_turn.ended_at is None:
            return trio.current_time(), user_turn.stt_ms if user_turn is not None else None
        return user_turn.ended_at, user_turn.stt_ms

    def _agent_turn_for(
        self,
        turn_id: int,
        user_text: str,
        say: str | None = None,
        *,
        speculative: bool = False,
    ) -> AgentTurn:
        request = self.llm_request(user_text)
        ended, stt_ms = (None, None) if speculative else self._user_turn_timing(turn_id)
        return AgentTurn(
            turn_id=turn_id,
            request=request,
            user_text=user_text,
            say=say,
            tools=None if say is not None else self.tools,
            max_tool_rounds=self.engine.config.tools.max_rounds,
            config=self.config,
            engine=self.engine,
            emit=self._outbox.send,
            emit_audio=self._outbox.send_audio,
            output_started=self._output_started,
            lead_ms=self.limits.audio_lead_ms,
            lexicon=self._lexicon,
            user_turn_ended=ended,
            stt_ms=stt_ms,
            speculative=speculative,
        )

    # ================================================================ speculation

    def _speculate(self, turns: trio.Nursery, turn_id: int, text: str) -> None:
        """Start the reply to ``text`` for user turn ``turn_id`` before the turn surely ended."""
        conv = self._conversation
        if (
            not self.limits.early_replies
            or self._tools_on()  # a guess must never run a tool with side effects
            or conv.agent_turn is not None
            or self._taking.overlap is not None
        ):
            return
        turn = self._agent_turn_for(turn_id, text, speculative=True)
        self._speculation.start(turns, turn, self._run_agent_turn)

    async def _transcribe_at_pause(self, turns: trio.Nursery, turn_id: int) -> None:
        """The user paused: with a recogniser that cannot tell at a pause (no stable
        interims), transcribe the turn's audio so far, and speculate on it."""
        user_turn = self._user_turn
        if (
            user_turn is None
            or user_turn.turn_id != turn_id
            or not self.limits.early_replies
            or self.engine.stt.capabilities.interim_results
            or self._tools_on()
            or self._conversation.agent_turn is not None
        ):
            return
        self._forget_snapshot()
        scope = trio.CancelScope()
        self._snapshot_scope = scope
        done = trio.Event()
        self._snapshot_done = (turn_id, done)
        pcm = bytes(user_turn.audio)
        request = SttRequest(
            sample_rate=STT_RATE, language=self.config.language, word_timings=False
        )

        async def run() -> None:
            try:
                await transcribe()
            finally:
                done.set()

        async def transcribe() -> None:
            with scope:
                final = await transcribe_snapshot(
                    self.engine.stt, pcm, request, counter=self.engine.telemetry
                )
                if final is None or not final.text.strip():
                    self._speculation.snapshot(adopted=False)
                    return
                self._snapshot = (turn_id, final)
                self._speculate(turns, turn_id, final.text.strip())
                ended = self._recognised.get(turn_id) or (
                    user_turn if user_turn.ended_at is not None else None
                )
                if ended is not None:
                    self._adopt_snapshot(ended)  # the turn ended while it ran
            if scope.cancelled_caught:
                self._speculation.snapshot(adopted=False)

        turns.start_soon(run)

    def _adopt_snapshot(self, user_turn: UserTurn) -> None:
        """The turn ended with nothing said after its pause: its snapshot is its final."""
        snapshot = self._snapshot
        if snapshot is not None and snapshot[0] == user_turn.turn_id:
            self._snapshot = None
            self._snapshot_scope = None
            user_turn.adopt(snapshot[1])
            self._speculation.snapshot(adopted=True)

    def _forget_snapshot(self) -> None:
        """The user spoke on (or another turn opened): the snapshot is not the final."""
        if self._snapshot_scope is not None:
            self._snapshot_scope.cancel()
            self._snapshot_scope = None
        if self._snapshot is not None:
            self._snapshot = None
            self._speculation.snapshot(adopted=False)

    async def _run_agent_turn(
        self, turn: AgentTurn, *, task_status: trio.TaskStatus[AgentTurn] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """One agent turn; the history keeps what the user heard of it. A speculative turn
        withdrawn before it went live leaves nothing."""
        outcome = await turn.run(task_status=task_status)
        if turn.speculative:
            self._speculation.ended(turn, withdrawn=outcome.withdrawn)
        if outcome.withdrawn:
            return
        said_before_tools = "".join(
            s.content for s in turn.steps if isinstance(s, ChatMessage)
        ).strip()
        reply = outcome.heard_text
        if said_before_tools and reply.startswith(said_before_tools):
            reply = reply[len(said_before_tools) :].strip()
        self.history.record(TurnRecord(turn.user_text, turn.steps, reply))
        if outcome.interrupted:
            said = outcome.text
            heard = outcome.heard_text
            self._unheard = said[len(heard) :].strip() if said.startswith(heard) else said
        await self._items.send(AgentTurnEnded(turn.turn_id, outcome.interrupted))

    async def _output_started(self, turn: AgentTurn) -> None:
        await self._items.send(AgentOutputStarted(turn.turn_id))

    # ================================================================ turn-taking

    async def _speech_started(self, turns: trio.Nursery) -> None:
        """Voice activity began (server VAD or a client ``vad`` frame)."""
        conv = self._conversation
        self._taking.speech_resumed()
        self._taking.user_active()
        agent = self._agent_turn
        overlapping = (
            self.config.vad_enabled
            and self.config.barge_in_min_words > 0
            and self._mode != "manual"
            and conv.state == "speaking"
            and agent is not None
            and self._taking.overlap is None
        )
        if not overlapping or agent is None:
            before = conv.agent_turn
            await self._apply(turns, conv.handle(SpeechStart(barge_in=self.config.vad_enabled)))
            if before is not None and conv.user_turn is not None and self.config.vad_enabled:
                self._barge_in_by = conv.user_turn
            return
        if self.config.echo_cancellation and not self.config.barge_in_hold:
            # Fast: interrupt at the onset; the words decide afterwards whether it was a turn
            # (a backchannel or a noise gets no reply, and the unheard rest is said again).
            await self._apply(turns, conv.handle(SpeechStart(barge_in=True)))
            if conv.user_turn is not None:
                self._barge_in_by = conv.user_turn
                overlap = Overlap(conv.user_turn, agent.turn_id, held=False, confirmed=True)
                self._taking.overlap_started(turns, overlap, confirm_by_length=False)
            return
        # Held: a user turn opens beside the agent's; its words decide before any interruption
        # (without echo cancellation, the agent's own voice must not stop it).
        await self._apply(turns, conv.handle(SpeechStart(barge_in=False)))
        if conv.user_turn is None:
            return
        held = self.config.echo_cancellation
        if held:
            agent.hold()
        overlap = Overlap(conv.user_turn, agent.turn_id, held)
        self._taking.overlap_started(turns, overlap, confirm_by_length=held)

    async def _speech_stopped(self, turns: trio.Nursery, *, client: bool) -> None:
        """Voice activity ended: the turn ends now, after a judged pause, or not at all."""
        conv = self._conversation
        overlap = self._taking.overlap
        if overlap is not None and conv.user_turn == overlap.turn_id:
            self._taking.overlap_speech_stopped()  # its final transcript decides
            await self._apply(turns, conv.handle(SpeechStop()))
            return
        if client or self._client_vad:
            await self._apply(turns, conv.handle(SpeechStop()))
        elif self._mode == "manual":
            return  # only audio.commit ends the turn; the VAD only barges in
        elif self._mode == "semantic" and conv.user_turn is not None:
            policy = EndOfTurnPolicy.for_eagerness(self.config.turn_eagerness)
            judge = partial(self._judge_pause, conv.user_turn, policy)
            self._taking.judge_pause(turns, conv.user_turn, judge, policy)
        else:
            await self._apply(turns, conv.handle(SpeechStop()))

    async def _on_final(self, turns: trio.Nursery, final: TranscriptFinal) -> None:
        """A final transcript: speech over the agent is judged; a false barge-in recovers."""
        conv = self._conversation
        overlap = self._taking.overlap
        if overlap is not None and overlap.turn_id == final.turn_id:
            self._taking.overlap_over()
            if self._verdict(final.text, overlap) == "interrupt":
                if not overlap.confirmed:
                    await self._barge_in(turns, overlap)
                await self._apply(turns, conv.handle(final))
                return
            await self._apply(turns, conv.handle(TranscriptFinal(final.turn_id, final.text, True)))
            if not overlap.confirmed:
                if self._agent_turn is not None:
                    self._agent_turn.resume()  # a backchannel or a noise: go on
                return
            await self._recover(turns)
            return
        await self._apply(turns, conv.handle(final))
        if final.turn_id == self._barge_in_by and not spoken_words(final.text):
            await self._recover(turns)  # a noise cut the agent off: no words came

    async def _barge_in(self, turns: trio.Nursery, overlap: Overlap) -> None:
        overlap.confirmed = True
        self._barge_in_by = overlap.turn_id
        await self._apply(turns, self._conversation.handle(BargeIn()))

    async def _recover(self, turns: trio.Nursery) -> None:
        """The agent was cut off by something that was not a turn: say what was unheard."""
        self._barge_in_by = None
        unheard, self._unheard = self._unheard, ""
        if unheard and self.config.resume_after_false_barge_in:
            await self._apply(turns, self._conversation.handle(AgentInitiated(unheard)))

    def _verdict(self, text: str, overlap: Overlap) -> str:
        agent = self._agent_turn
        agent_text = agent.text_so_far if agent is not None else ""
        return overlap_verdict(
            text,
            agent_text=agent_text,
            min_words=self.config.barge_in_min_words,
            echo_guard=not self.config.echo_cancellation,
        )

    # ================================================================ config

    async def _on_update(self, patch: SessionConfigPatch) -> None:
        try:
            config, warnings = self.validate(patch, self.config)
        except ConfigError as exc:
            await self._outbox.error(exc.code, str(exc))
            return
        self.apply_config(config)
        await self._outbox.send(SessionUpdated(config=self.config))
        for warning in warnings:
            await self._outbox.send(warning)

    def validate(
        self, patch: SessionConfigPatch, base: SessionConfig
    ) -> tuple[SessionConfig, list[WarningFrame]]:
        """See :func:`~.config.validate_config`."""
        tenant = self.engine.config.tenants.get(self._tenant)
        opt_ins: Mapping[str, bool] = {
            "speaker_recognition": bool(tenant is not None and tenant.speaker_recognition)
        }
        return validate_config(self.engine, opt_ins, patch, base)

    def apply_config(self, config: SessionConfig) -> None:
        """Switch to ``config``: input rate, features on or off, turn segmentation."""
        old = self.config
        self.config = config
        if config.input_sample_rate != old.input_sample_rate:
            self._input.set_input_rate(config.input_sample_rate)
            self.guard.sample_rate = config.input_sample_rate
        self._mode = turn_detection(self.engine, config)
        self._features.configure(config, old, self._mode)
        self._reconfigure()

    def _reconfigure(self) -> None:
        server_endpointing = (
            not self._client_vad and self._mode != "manual" and "vad_enabled" in self._features
        )
        self._conversation.configure(
            wake_word_mode=self.config.wake_word_enabled,
            vad_segmentation=self._client_vad or server_endpointing,
            server_endpointing=server_endpointing,
        )
