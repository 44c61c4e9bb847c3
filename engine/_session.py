"""One WebSocket session: a trio nursery supervising the reader, dialogue, synthesis and writer.

::

    transport ──► reader ──events──► dialogue (state machine) ──jobs──► synthesis ──┐
                                      │  ▲  └─ per user turn: STT task ─┐            │
                                      │  └──────── TranscriptFinal ◄────┘            │
                                      └──────────── frames ──► outbound ◄── audio ───┘
                                                                  │
                                                               writer ──► transport

Channels are bounded: a client that sends faster than the session consumes is slowed down by
TCP back-pressure; a client that does not read is closed (``slow_client``, 4420). Each agent
turn runs inside its own ``trio.CancelScope``, created by the dialogue task and entered by the
synthesis task; barge-in cancels it.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, cast

import trio

from ._agent_turn import AgentTurn
from ._audio import StreamResampler
from ._auth import Principal
from ._backends import ChatMessage, LlmRequest, SttRequest, Transcript
from ._calls import call_backend
from ._early_reply import EarlyReplies
from ._engine import Engine
from ._errors import BackendError, ConfigError, ProtocolViolation, SessionClosed
from ._features import FeatureSession, SpeechStarted, SpeechStopped, WakeDetected
from ._frames import (
    PROTOCOL_VERSION,
    AudioCommit,
    AudioFormat,
    AudioFormats,
    ClientFrame,
    ErrorFrame,
    Interrupt,
    Ping,
    Playback,
    Pong,
    ServerFrame,
    SessionConfig,
    SessionConfigPatch,
    SessionEnd,
    SessionEnded,
    SessionStart,
    SessionStarted,
    SessionUpdate,
    SessionUpdated,
    State,
    TextInput,
    ToolResult,
    TranscriptFrame,
    VadFrame,
    Wake,
    WarningFrame,
    decode_client_frame,
    encode_server_frame,
)
from ._limits import FrameGuard
from ._logging import session_id_var
from ._statemachine import (
    Action,
    AgentOutputStarted,
    AgentTurnEnded,
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
    SpeechStart,
    SpeechStop,
    StartAgentTurn,
    TranscriptFinal,
    TypedText,
    UserAudio,
    WakeWord,
)
from ._transport import CloseCode, Transport

__all__ = ["Session"]

log = logging.getLogger("scaivoice.session")

E = TypeVar("E", bound=BaseException)
T = TypeVar("T")

_STT_RATE = 16000
_PRE_ROLL_MS = 300
_FINISH_DEADLINE_S = 2.0
_JOIN_MS = 100  # the most queued audio the dialogue joins into one chunk


class _SessionOver(Exception):
    """Ends the session: raised by a task, caught by the runner's ``except*``."""

    def __init__(self, close_code: int, reason: str, error: ErrorFrame | None = None) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.error = error


@dataclass(frozen=True, slots=True)
class _AudioIn:
    pcm: bytes


@dataclass(slots=True)
class _UserTurn:
    turn_id: int
    audio: trio.MemorySendChannel[bytes]
    scope: trio.CancelScope
    audio_ms: float = 0.0
    ended_at: float | None = None


_Item = ClientFrame | _AudioIn | Event | SpeechStarted | SpeechStopped | WakeDetected


class Session:
    """A ScaiVoice protocol v1 session over ``transport`` for ``principal``.

    Args:
        engine: the opened engine (backends, features, limits).
        principal: the authenticated caller (its tenant's defaults apply).
        transport: the socket.
    """

    def __init__(self, engine: Engine, principal: Principal, transport: Transport) -> None:
        self.engine = engine
        self.principal = principal
        self.transport = transport
        self.session_id = "sess_" + uuid.uuid4().hex[:20]
        self.limits = engine.config.session
        self.config: SessionConfig = engine.config.session_defaults(principal.tenant)
        self._lexicon = engine.config.lexicon_for(principal.tenant)
        self.history: deque[ChatMessage] = deque(maxlen=max(self.limits.history_messages, 1))
        self._conversation = Conversation()
        self._out_send, self._out_recv = trio.open_memory_channel[str | bytes](64)
        self._events_send, self._events_recv = trio.open_memory_channel[_Item](128)
        self._jobs_send, self._jobs_recv = trio.open_memory_channel[AgentTurn](1)
        self._nursery: trio.Nursery | None = None
        self._last_activity = trio.current_time()
        self._resampler = StreamResampler(self.config.input_sample_rate, _STT_RATE)
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_ms = 0.0
        self._user_turn: _UserTurn | None = None
        self._agent_turn: AgentTurn | None = None
        self._features: dict[str, FeatureSession] = {}
        self._client_vad = False
        self._user_texts: dict[int, str] = {}
        self._record = engine.telemetry.session_opened(
            self.session_id,
            principal,
            {"stt": engine.stt.name, "llm": engine.llm.name, "tts": engine.default_tts},
        )
        self._guard = FrameGuard(sample_rate=self.config.input_sample_rate)
        tenant_limit = engine.config.limits_for(principal.tenant).max_session_s
        self._max_duration_s = min(
            self.limits.max_duration_s, tenant_limit or self.limits.max_duration_s
        )
        self._turn_end_times: dict[int, float] = {}
        self._stt_ms: dict[int, float] = {}
        self._early = EarlyReplies(
            engine.llm, partial(engine.telemetry.early_reply, principal.tenant)
        )

    # ================================================================ the runner

    async def run(self) -> None:
        """Run the session to its end and close the socket with the matching close code.

        Client faults, backend failures and peer disconnects never escape: they end in an
        ``error`` event and / or a close code. Cancelling ``run`` (engine shutdown) closes the
        session with 1001 "going away".
        """
        session_id_var.set(self.session_id)
        outer = trio.CancelScope()
        registry = self.engine.sessions
        registry.add(self.session_id, self.principal.tenant, outer)
        end: _SessionOver | None = _SessionOver(CloseCode.NORMAL, "client_ended")
        log.info("session opened for tenant %s", self.principal.tenant)
        try:
            with outer:
                try:
                    await self._handshake()
                    deadline = trio.current_time() + self._max_duration_s
                    with trio.move_on_at(deadline) as duration:
                        await self._supervise()
                    if duration.cancelled_caught:
                        end = _SessionOver(
                            CloseCode.MAX_DURATION,
                            "max_duration",
                            ErrorFrame(
                                code="max_duration",
                                message=f"the session reached its maximum duration "
                                f"of {self._max_duration_s:g} s",
                                fatal=True,
                            ),
                        )
                except* _SessionOver as group:
                    end = _first(group, _SessionOver)
                except* ProtocolViolation as group:
                    violation = _first(group, ProtocolViolation)
                    end = _SessionOver(
                        violation.close_code,
                        violation.code,
                        ErrorFrame(code=violation.code, message=str(violation), fatal=True),
                    )
                except* SessionClosed:
                    end = None
                except* Exception as group:
                    log.error("session crashed", exc_info=group)
                    end = _SessionOver(
                        CloseCode.INTERNAL_ERROR,
                        "internal_error",
                        ErrorFrame(
                            code="internal_error", message="internal server error", fatal=True
                        ),
                    )
            if outer.cancelled_caught:
                end = _SessionOver(
                    CloseCode.GOING_AWAY,
                    "server_shutdown",
                    ErrorFrame(
                        code="server_shutdown", message="the server is shutting down", fatal=True
                    ),
                )
        finally:
            registry.remove(self.session_id)
            await self._finish(end)

    async def _finish(self, end: _SessionOver | None) -> None:
        # Shielded: this runs while the session is being cancelled (drain, shutdown). The
        # goodbye frames get a deadline of their own so a stuck client cannot block the close.
        with trio.CancelScope(shield=True):
            if end is None:
                log.info("session closed by the client")
                code, reason = int(CloseCode.NORMAL), "client_closed"
            else:
                log.info("session ended: %s (%d)", end.reason, end.close_code)
                code, reason = end.close_code, end.reason
                with trio.move_on_after(_FINISH_DEADLINE_S):
                    try:
                        if end.error is not None:
                            self.engine.telemetry.observe(self._record, end.error)
                            await self.transport.send_text(_text(end.error))
                        await self.transport.send_text(_text(SessionEnded(reason=end.reason)))
                    except SessionClosed:
                        pass
            with trio.move_on_after(_FINISH_DEADLINE_S):
                await self.transport.close(code, reason)
            self.engine.telemetry.session_closed(self._record, code, reason)

    # ================================================================ handshake

    async def _handshake(self) -> None:
        with trio.move_on_after(self.limits.start_timeout_s) as timer:
            while True:
                message = await self.transport.receive()
                if isinstance(message, bytes):
                    await self._send_direct_error("not_started", "send session.start first")
                    continue
                try:
                    frame = decode_client_frame(message)
                except ProtocolViolation as exc:
                    await self._send_direct_error(exc.code, str(exc))
                    continue
                if not isinstance(frame, SessionStart):
                    await self._send_direct_error(
                        "not_started", f"{frame.__struct_config__.tag!r} before session.start"
                    )
                    continue
                if frame.protocol != PROTOCOL_VERSION:
                    raise ProtocolViolation(
                        "unsupported_protocol",
                        f"protocol {frame.protocol} is not supported; this server speaks "
                        f"{PROTOCOL_VERSION}",
                        fatal=True,
                        close_code=CloseCode.UNSUPPORTED_PROTOCOL,
                    )
                try:
                    config, warnings = self._validate_config(frame.config, self.config)
                except ConfigError as exc:
                    await self._send_direct_error(exc.code, str(exc))
                    continue
                break
        if timer.cancelled_caught:
            raise _SessionOver(
                CloseCode.TIMEOUT,
                "start_timeout",
                ErrorFrame(code="start_timeout", message="no session.start in time", fatal=True),
            )
        self._apply_config(config)
        await self.transport.send_text(
            _text(
                SessionStarted(
                    session_id=self.session_id,
                    protocol=PROTOCOL_VERSION,
                    config=self.config,
                    audio=AudioFormats(
                        input=AudioFormat(sample_rate=self.config.input_sample_rate),
                        output=AudioFormat(sample_rate=self.config.output_sample_rate),
                    ),
                )
            )
        )
        for warning in warnings + self.engine.session_warnings(self.config):
            await self.transport.send_text(_text(warning))
        await self.transport.send_text(_text(State(state="idle")))
        self._last_activity = trio.current_time()

    async def _send_direct_error(self, code: str, message: str) -> None:
        await self.transport.send_text(_text(ErrorFrame(code=code, message=message, fatal=False)))

    # ================================================================ the nursery

    async def _supervise(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reader)
            nursery.start_soon(self._writer)
            nursery.start_soon(self._dialogue)
            nursery.start_soon(self._synthesis)
            nursery.start_soon(self._idle_watchdog)

    async def _send(self, frame: ServerFrame) -> None:
        self.engine.telemetry.observe(self._record, frame)
        await self._out_send.send(_text(frame))

    async def _send_audio(self, pcm: bytes) -> None:
        await self._out_send.send(pcm)

    # ---------------------------------------------------------------- reader

    async def _reader(self) -> None:
        max_bytes = self.limits.max_frame_bytes
        while True:
            message = await self.transport.receive()
            now = self._last_activity = trio.current_time()
            if _size(message, max_bytes) > max_bytes:
                await self._error("frame_too_large", f"frames are limited to {max_bytes} bytes")
                continue
            allowed = (
                self._guard.audio(now, len(message))
                if isinstance(message, bytes)
                else self._guard.control(now)
            )
            if not allowed:
                raise _SessionOver(
                    CloseCode.TOO_MANY,
                    "rate_limited",
                    ErrorFrame(
                        code="rate_limited",
                        message="too many frames: audio may run at most 10x real time on "
                        "average, control frames at 50 a second",
                        fatal=True,
                    ),
                )
            if isinstance(message, bytes):
                if len(message) % 2:
                    await self._error(
                        "odd_audio_length", "audio frames are PCM16: an even number of bytes"
                    )
                    continue
                if message:
                    await _hand_over(self._events_send, _AudioIn(message))
                continue
            try:
                frame = decode_client_frame(message)
            except ProtocolViolation as exc:
                await self._error(exc.code, str(exc))
                continue
            if isinstance(frame, Ping):
                await self._send(Pong(id=frame.id))
            elif isinstance(frame, SessionStart):
                await self._error("already_started", "the session has already started")
            elif isinstance(frame, SessionEnd):
                raise _SessionOver(CloseCode.NORMAL, "client_ended")
            else:
                await self._events_send.send(frame)

    # ---------------------------------------------------------------- writer

    async def _writer(self) -> None:
        timeout = self.limits.slow_client_timeout_s
        async with self._out_recv:
            async for item in self._out_recv:
                with trio.move_on_after(timeout) as timer:
                    if isinstance(item, str):
                        await self.transport.send_text(item)
                    else:
                        await self.transport.send_bytes(item)
                if timer.cancelled_caught:
                    raise _SessionOver(
                        CloseCode.SLOW_CLIENT,
                        "slow_client",
                        ErrorFrame(
                            code="slow_client",
                            message=f"the client read nothing for {timeout:g} s",
                            fatal=True,
                        ),
                    )

    # ---------------------------------------------------------------- watchdog

    async def _idle_watchdog(self) -> None:
        while True:
            deadline = self._last_activity + self.limits.idle_timeout_s
            if trio.current_time() >= deadline:
                raise _SessionOver(
                    CloseCode.TIMEOUT,
                    "idle_timeout",
                    ErrorFrame(
                        code="idle_timeout",
                        message=f"no frame from the client for {self.limits.idle_timeout_s:g} s",
                        fatal=True,
                    ),
                )
            await trio.sleep_until(deadline)

    # ================================================================ dialogue

    async def _dialogue(self) -> None:
        # Items already queued are taken without a trip through the scheduler; it waits only
        # when the queue is empty. Audio frames that queued up while the dialogue was busy
        # (the VAD's model runs in a worker thread) are joined, up to _JOIN_MS, and handled as
        # one chunk: one VAD round trip instead of one per frame, so a session that fell
        # behind catches up. Control frames keep their place: a join stops at the first one.
        async with self._events_recv:
            receive_nowait = self._events_recv.receive_nowait
            pending: _Item | None = None
            while True:
                if pending is not None:
                    item, pending = pending, None
                else:
                    try:
                        item = receive_nowait()
                    except trio.WouldBlock:
                        try:
                            item = await self._events_recv.receive()
                        except trio.EndOfChannel:
                            return
                    else:
                        await trio.lowlevel.checkpoint_if_cancelled()
                if type(item) is _AudioIn:
                    limit = self.config.input_sample_rate * 2 * _JOIN_MS // 1000
                    pcm = item.pcm
                    while len(pcm) < limit:
                        try:
                            following = receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        if type(following) is not _AudioIn:
                            pending = following
                            break
                        pcm += following.pcm
                    await self._on_audio(pcm)
                    continue
                await self._on_item(item)

    async def _on_item(self, item: _Item) -> None:
        conv = self._conversation
        match item:
            case _AudioIn(pcm=pcm):
                await self._on_audio(pcm)
            case VadFrame(speaking=speaking):
                if not self._client_vad:
                    self._client_vad = True
                    self._reconfigure()
                event = SpeechStart(barge_in=self.config.vad_enabled) if speaking else SpeechStop()
                await self._apply(conv.handle(event))
            case Interrupt():
                await self._apply(conv.handle(InterruptRequested()))
            case AudioCommit():
                await self._apply(conv.handle(Commit()))
            case TextInput(text=text):
                await self._apply(conv.handle(TypedText(text)))
            case Wake():
                if not self.config.wake_word_enabled:
                    await self._warn("wake_ignored", "wake frames need wake_word_enabled")
                self._clear_pre_roll()  # the wake word itself is not part of the request
                await self._apply(conv.handle(WakeWord()))
            case Playback(turn_id=turn_id, played_ms=played_ms):
                turn = self._agent_turn
                if turn is not None and turn.turn_id == turn_id:
                    turn.playback.report_played(played_ms)
            case SessionUpdate(config=patch):
                await self._on_update(patch)
            case ToolResult():
                await self._error(
                    "tools_unavailable", "tool.result is reserved: this server runs no tools"
                )
            case SpeechStarted():
                await self._apply(conv.handle(SpeechStart(barge_in=self.config.vad_enabled)))
            case SpeechStopped():
                await self._apply(conv.handle(SpeechStop()))
            case WakeDetected():
                self._clear_pre_roll()
                await self._apply(conv.handle(WakeWord()))
            case AgentOutputStarted(turn_id=turn_id):
                await self._apply(conv.handle(item))
                turn = self._agent_turn
                if turn is not None and turn.turn_id == turn_id:
                    turn.output_acknowledged.set()
            case AgentTurnEnded(turn_id=turn_id):
                if self._agent_turn is not None and self._agent_turn.turn_id == turn_id:
                    self._agent_turn = None
                await self._apply(conv.handle(item))
            case TranscriptFinal():
                await self._apply(conv.handle(item))
            case _:  # pragma: no cover - exhaustive over _Item
                raise AssertionError(f"unhandled dialogue item {item!r}")

    async def _on_audio(self, pcm: bytes) -> None:
        pcm = self._resampler.process(pcm)
        if not pcm:
            return
        duration_ms = len(pcm) / 2 / _STT_RATE * 1000.0
        self._pre_roll.append(pcm)
        self._pre_roll_ms += duration_ms
        await self._apply(self._conversation.handle(UserAudio()))
        for feature in self._features.values():
            for event in await feature.process(pcm):
                await self._on_item(event)
        turn = self._user_turn
        if turn is None:
            self._trim_pre_roll()
            return
        while self._pre_roll:
            chunk = self._pre_roll.popleft()
            turn.audio_ms += len(chunk) / 2 / _STT_RATE * 1000.0
            await self._feed_stt(turn, chunk)
        self._pre_roll_ms = 0.0
        if turn.audio_ms >= self.limits.max_user_turn_s * 1000.0:
            await self._warn(
                "user_turn_too_long",
                f"the user turn reached {self.limits.max_user_turn_s:g} s and was ended "
                "here; what follows belongs to the next turn",
            )
            await self._apply(self._conversation.handle(Commit()))

    def _trim_pre_roll(self) -> None:
        """Keep only the last ``_PRE_ROLL_MS`` of audio heard outside a user turn."""
        excess = int((self._pre_roll_ms - _PRE_ROLL_MS) * _STT_RATE / 1000.0) * 2
        while excess > 0 and self._pre_roll:
            head = self._pre_roll[0]
            cut = min(len(head), excess)
            if cut == len(head):
                self._pre_roll.popleft()
            else:
                self._pre_roll[0] = head[cut:]
            excess -= cut
            self._pre_roll_ms -= cut / 2 / _STT_RATE * 1000.0

    def _clear_pre_roll(self) -> None:
        self._pre_roll.clear()
        self._pre_roll_ms = 0.0

    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case EmitState(state=state, turn_id=turn_id):
                    await self._send(State(state=state, turn_id=turn_id))
                case EmitWarning(code=code, message=message):
                    await self._warn(code, message)
                case OpenUserTurn(turn_id=turn_id):
                    self._open_user_turn(turn_id)
                case FinalizeUserTurn(turn_id=turn_id):
                    turn = self._user_turn
                    if turn is not None and turn.turn_id == turn_id:
                        turn.ended_at = trio.current_time()
                        self._turn_end_times[turn_id] = turn.ended_at
                        await self._flush_resampler(turn)
                        turn.audio.close()
                        self._user_turn = None
                case DiscardUserTurn(turn_id=turn_id):
                    user_turn = self._user_turn
                    if user_turn is not None and user_turn.turn_id == turn_id:
                        user_turn.scope.cancel()
                        user_turn.audio.close()
                        self._user_turn = None
                        # Exactly one final ends every spoken turn: this one was abandoned.
                        await self._send(
                            TranscriptFrame(
                                turn_id=turn_id,
                                text="",
                                final=True,
                                start_ms=0,
                                end_ms=round(user_turn.audio_ms),
                            )
                        )
                case StartAgentTurn(turn_id=turn_id, user_text=user_text):
                    await self._start_agent_turn(turn_id, user_text)
                case CancelAgentTurn(turn_id=turn_id):
                    agent_turn = self._agent_turn
                    if agent_turn is not None and agent_turn.turn_id == turn_id:
                        agent_turn.cancel_requested_at = trio.current_time()
                        agent_turn.scope.cancel()

    # ---------------------------------------------------------------- user turns (STT)

    @staticmethod
    async def _feed_stt(turn: _UserTurn, pcm: bytes) -> None:
        """Hand audio to the turn's STT stream; a stream that already ended (it failed and
        reported ``stt_failed``) drops it."""
        try:
            await _hand_over(turn.audio, pcm)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _flush_resampler(self, turn: _UserTurn) -> None:
        """Send the resampler's held-back tail to the ending turn; start a fresh stream."""
        if self._resampler.from_rate == _STT_RATE:
            return
        tail = self._resampler.process(b"", last=True)
        self._resampler = StreamResampler(self.config.input_sample_rate, _STT_RATE)
        if tail:
            turn.audio_ms += len(tail) / 2 / _STT_RATE * 1000.0
            await self._feed_stt(turn, tail)

    def _open_user_turn(self, turn_id: int) -> None:
        assert self._nursery is not None
        audio_send, audio_recv = trio.open_memory_channel[bytes](256)
        turn = _UserTurn(turn_id=turn_id, audio=audio_send, scope=trio.CancelScope())
        self._user_turn = turn
        self._early.withdraw()  # a guess for an older turn answers nothing now
        self._nursery.start_soon(self._transcribe, turn, audio_recv)

    async def _transcribe(self, turn: _UserTurn, audio: trio.MemoryReceiveChannel[bytes]) -> None:
        stt = self.engine.stt
        request = SttRequest(
            sample_rate=_STT_RATE, language=self.config.language, word_timings=False
        )
        results_send, results_recv = trio.open_memory_channel[Transcript](16)
        final_text = ""
        failure: BackendError | None = None

        async def produce() -> None:
            nonlocal failure
            call = partial(stt.transcribe, request, audio, results_send)
            failure = await call_backend(stt.name, call, results_send, audio)

        with turn.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                async with results_recv:
                    last_interim = ""
                    async for result in results_recv:
                        if not result.final:
                            self._on_interim(turn, result)
                            if result.text == last_interim:
                                continue  # a withdrawal of a stable guess: nothing new to show
                            last_interim = result.text
                        await self._send(
                            TranscriptFrame(
                                turn_id=turn.turn_id,
                                text=result.text,
                                final=result.final,
                                start_ms=result.start_ms,
                                end_ms=result.end_ms,
                            )
                        )
                        if result.final:
                            final_text = result.text
            if failure is not None:
                await self._error("stt_failed", f"speech recognition failed: {failure}")
                final_text = ""
            self._early.withdraw_guess_for(
                turn.turn_id, "mismatched", unless_text=final_text.strip()
            )
            if turn.ended_at is not None:
                self._stt_ms[turn.turn_id] = round((trio.current_time() - turn.ended_at) * 1000, 2)
            elif self._user_turn is turn:
                self._user_turn = None  # ended by the STT itself: later audio opens a new turn
            await self._events_send.send(TranscriptFinal(turn.turn_id, final_text.strip()))

    def _on_interim(self, turn: _UserTurn, result: Transcript) -> None:
        """Start an early reply on a stable interim; withdraw it on any other interim."""
        text = result.text.strip()
        if result.stable and text and self.limits.early_replies:
            assert self._nursery is not None
            self._early.start(self._nursery, turn.turn_id, text, self._llm_request(text))
            return
        self._early.withdraw_guess_for(turn.turn_id)

    # ---------------------------------------------------------------- agent turns

    def _llm_request(self, user_text: str) -> LlmRequest:
        """What the language model is asked for a reply to ``user_text`` now."""
        config = self.config
        system_prompt = config.system_prompt or self.limits.system_prompt
        messages = (
            ChatMessage("system", system_prompt),
            *self.history,
            ChatMessage("user", user_text),
        )
        return LlmRequest(messages=messages, language=config.language)

    async def _start_agent_turn(self, turn_id: int, user_text: str) -> None:
        config = self.config
        request = self._llm_request(user_text)
        ended = self._turn_end_times.pop(turn_id, None)
        turn = AgentTurn(
            turn_id=turn_id,
            request=request,
            early_reply=self._early.take(turn_id, user_text, request),
            config=config,
            engine=self.engine,
            emit=self._send,
            emit_audio=self._send_audio,
            output_started=self._output_started,
            lead_ms=self.limits.audio_lead_ms,
            lexicon=self._lexicon,
            user_turn_ended=ended if ended is not None else trio.current_time(),
            stt_ms=self._stt_ms.pop(turn_id, None),
        )
        self._user_texts[turn_id] = user_text
        self._agent_turn = turn
        await self._jobs_send.send(turn)

    async def _output_started(self, turn: AgentTurn) -> None:
        await self._events_send.send(AgentOutputStarted(turn.turn_id))

    async def _synthesis(self) -> None:
        async with self._jobs_recv:
            async for turn in self._jobs_recv:
                outcome = await turn.run()
                user_text = self._user_texts.pop(turn.turn_id, "")
                self.history.append(ChatMessage("user", user_text))
                if outcome.heard_text:
                    self.history.append(ChatMessage("assistant", outcome.heard_text))
                await self._events_send.send(AgentTurnEnded(turn.turn_id, outcome.interrupted))

    # ================================================================ config

    async def _on_update(self, patch: SessionConfigPatch) -> None:
        try:
            config, warnings = self._validate_config(patch, self.config)
        except ConfigError as exc:
            await self._error(exc.code, str(exc))
            return
        self._apply_config(config)
        await self._send(SessionUpdated(config=self.config))
        for warning in warnings:
            await self._send(warning)

    def _validate_config(
        self, patch: SessionConfigPatch, base: SessionConfig
    ) -> tuple[SessionConfig, list[WarningFrame]]:
        """The config after ``patch``, and the warnings it deserves.

        Raises:
            ConfigError: an unknown voice (``unknown_voice``).
        """
        config = patch.apply(base)
        engine = self.engine
        backend_name, _ = engine.resolve_voice(config.voice_id)
        caps = engine.tts[backend_name].capabilities
        warnings: list[WarningFrame] = []
        changed = set(patch.keys())

        def unsupported(key: str, what: str) -> None:
            if key in changed:
                warnings.append(
                    WarningFrame(
                        code="option_unsupported",
                        message=f"{key} is not supported by the {backend_name!r} voice backend "
                        f"({what}); it is ignored",
                    )
                )

        if config.speed != 1.0 and not caps.speed:
            unsupported("speed", "it speaks at its natural rate")
        if config.instructions and not caps.instructions:
            unsupported("instructions", "it takes no style instructions")
        if config.cfg_value is not None and not caps.cfg_value:
            unsupported("cfg_value", "it has no guidance setting")
        if config.normalize_text and engine.normaliser is None and "normalize_text" in changed:
            warnings.append(_unavailable("normalize_text", "no text normaliser is configured"))
        if (
            "speaker_recognition" in changed
            and config.speaker_recognition
            and not self._tenant_opted_in("speaker_recognition")
        ):
            raise ConfigError(
                "speaker_recognition needs the tenant's opt-in (voice biometrics)",
                code="not_permitted",
            )
        for key, hint in (
            ("vad_enabled", "barge-in follows the client's `vad` frames"),
            ("wake_word_enabled", "send `wake` frames from a client-side detector"),
        ):
            if key in changed and getattr(config, key) and key not in engine.features:
                warnings.append(
                    WarningFrame(
                        code="feature_limited",
                        message=f"{key}: no server-side detector is installed; {hint}",
                    )
                )
        for key, hint in (
            ("diarize", "transcripts carry no speaker labels"),
            ("speaker_recognition", "speakers are not identified"),
            ("tools_enabled", "the language model gets no tools"),
        ):
            if key in changed and getattr(config, key) and key not in engine.features:
                warnings.append(
                    _unavailable(key, f"no server-side feature for it is installed; {hint}")
                )
        return config, warnings

    def _tenant_opted_in(self, key: str) -> bool:
        tenant = self.engine.config.tenants.get(self.principal.tenant)
        return bool(tenant is not None and getattr(tenant, key, False))

    def _apply_config(self, config: SessionConfig) -> None:
        old = self.config
        self.config = config
        if config.input_sample_rate != old.input_sample_rate:
            self._resampler = StreamResampler(config.input_sample_rate, _STT_RATE)
            self._guard.sample_rate = config.input_sample_rate
        for key, (_spec, feature) in self.engine.features.items():
            enabled = bool(getattr(config, key, False))
            if enabled and key not in self._features:
                self._features[key] = feature.open_session(sample_rate=_STT_RATE, options={})
            elif not enabled:
                self._features.pop(key, None)
        self._reconfigure()

    def _reconfigure(self) -> None:
        self._conversation.configure(
            wake_word_mode=self.config.wake_word_enabled,
            vad_segmentation=self._client_vad or "vad_enabled" in self._features,
        )

    # ================================================================ helpers

    async def _warn(self, code: str, message: str) -> None:
        await self._send(WarningFrame(code=code, message=message))

    async def _error(self, code: str, message: str) -> None:
        await self._send(ErrorFrame(code=code, message=message, fatal=False))


async def _hand_over(channel: trio.MemorySendChannel[T], item: T) -> None:
    """Send ``item``; a trip through the scheduler only when the channel is full.

    The audio path sends about 50 items a second per session, and the receiving task runs
    soon anyway: skipping the checkpoint of ``send`` saves one task switch per frame.
    """
    try:
        channel.send_nowait(item)
    except trio.WouldBlock:
        await channel.send(item)


def _size(message: str | bytes, limit: int) -> int:
    """A frame's size in bytes (text is UTF-8 on the wire: up to 4 bytes a character)."""
    if isinstance(message, bytes) or len(message) * 4 <= limit:
        return len(message)
    return len(message.encode("utf-8"))


def _text(frame: ServerFrame) -> str:
    return encode_server_frame(frame).decode("utf-8")


def _unavailable(key: str, why: str) -> WarningFrame:
    return WarningFrame(code="feature_unavailable", message=f"{key}: {why}")


def _first(group: BaseExceptionGroup[E], kind: type[E]) -> E:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(cast("BaseExceptionGroup[E]", exc), kind)
        if isinstance(exc, kind):
            return exc
    raise AssertionError("empty exception group")  # pragma: no cover
