"""One agent turn: LLM stream -> agent text -> sentences -> normaliser -> TTS -> paced audio.

The four stages run as tasks of one nursery opened *inside the turn's cancel scope*, so a
barge-in (:meth:`AgentTurn.cancel`) stops generation, normalisation, synthesis and pacing together.
Whatever happens, the turn then sends its closing frames (``agent.audio.done`` when audio began,
``agent.text.done`` with the text the user heard) under a shielded deadline, and only then
returns: the caller emits ``interrupted`` afterwards, so nothing of the turn can follow it.

A failing TTS degrades the turn to text (``warning tts_unavailable``); a failing LLM or
normaliser ends or degrades it with an ``error`` / ``warning``. The session goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

import trio

from .._audio import StreamResampler
from .._contract.backends import (
    AudioChunk,
    ChatMessage,
    LlmRequest,
    NormaliserBackend,
    NormaliseRequest,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
)
from .._contract.calls import call_backend
from .._contract.tools import ToolCall
from .._errors import BackendError
from .._host.engine import Engine
from ..frames import (
    AgentAudioDone,
    AgentAudioStart,
    AgentText,
    AgentTextDone,
    ErrorFrame,
    Metrics,
    ServerFrame,
    SessionConfig,
    WarningFrame,
)
from .history import ToolOutcome, TurnStep
from .playback import PlaybackModel
from .sentences import SentenceChunker
from .tools import OfferedTools, SessionTools

__all__ = ["AgentTurn", "TurnOutcome"]

log = logging.getLogger("scaivoice.session")

_FRAME_MS = 40  # agent audio goes out in frames of this length: the pacing granularity
_CLOSE_DEADLINE_S = 2.0


@dataclass(frozen=True, slots=True)
class _PieceStart:
    text: str
    index: int


@dataclass(frozen=True, slots=True)
class _PieceEnd:
    text: str


@dataclass(frozen=True, slots=True)
class _TextOnly:
    text: str


_PlayItem = _PieceStart | _PieceEnd | _TextOnly | AudioChunk


class _Flush:
    """In the text stream: speak what is buffered now (the model paused for its tools)."""


_FLUSH = _Flush()


@dataclass(slots=True)
class TurnOutcome:
    """How a turn ended."""

    text: str
    heard_text: str
    interrupted: bool
    withdrawn: bool = False
    """A speculative turn that never went live."""


@dataclass(slots=True)
class _Marks:
    started: float
    user_turn_ended: float | None
    stt_ms: float | None
    first_token: float | None = None
    first_text: float | None = None
    first_piece: float | None = None
    first_audio: float | None = None


@dataclass(slots=True)
class AgentTurn:
    """One agent turn. The dialogue creates it and runs it as a task of its own.

    The turn owns its cancel scope: :meth:`run` enters it, :meth:`cancel` (barge-in) cancels
    it, and a cancel before :meth:`run` entered it still takes effect.
    """

    turn_id: int
    request: LlmRequest
    config: SessionConfig
    engine: Engine
    emit: Callable[[ServerFrame], Awaitable[None]]
    emit_audio: Callable[[bytes], Awaitable[None]]
    output_started: Callable[[AgentTurn], Awaitable[None]]
    lead_ms: int
    lexicon: Mapping[str, str] = field(default_factory=dict)
    user_turn_ended: float | None = None
    stt_ms: float | None = None
    user_text: str = ""
    speculative: bool = False
    """Started before the user's turn surely ended: nothing reaches the client (frames are
    kept, audio waits) until :meth:`go_live`; only the first piece is synthesised meanwhile.
    Cancelled before that, it leaves no trace."""
    say: str | None = None
    """Say this instead of asking the language model (an idle prompt, an unheard rest)."""
    tools: SessionTools | None = None
    """The session's tools: offered to the model when the config enables them."""
    max_tool_rounds: int = 4
    steps: list[TurnStep] = field(default_factory=list)
    """Tool rounds for the history: assistant messages with their calls, then outcomes."""
    playback: PlaybackModel = field(init=False)
    output_acknowledged: trio.Event = field(default_factory=trio.Event)
    cancel_requested_at: float | None = None
    _text: list[str] = field(default_factory=list)
    _text_only: list[str] = field(default_factory=list)
    _piece_ms: list[float] = field(default_factory=list)
    _open_piece: tuple[str, float, int] | None = None
    _audio_started: bool = False
    _announced: bool = False
    _tts_warned: bool = False
    _filled: bool = False
    _resume: trio.Event | None = None
    _live: trio.Event = field(default_factory=trio.Event)
    _kept: list[ServerFrame] = field(default_factory=list)
    _client_emit: Callable[[ServerFrame], Awaitable[None]] | None = None
    pieces_synthesised_speculatively: int = 0
    """Pieces sent to the TTS before the turn went live (the cost of a wrong guess)."""
    _marks: _Marks = field(init=False)
    _scope: trio.CancelScope = field(init=False)

    def __post_init__(self) -> None:
        if self.speculative:
            self._client_emit, self.emit = self.emit, self._keep
        else:
            self._live.set()
        self._scope = trio.CancelScope()
        self.playback = PlaybackModel(lead_ms=self.lead_ms)
        self._marks = _Marks(
            started=trio.current_time(), user_turn_ended=self.user_turn_ended, stt_ms=self.stt_ms
        )

    # ---------------------------------------------------------------- the turn

    def cancel(self) -> None:
        """Barge-in: stop generation, normalisation, synthesis and pacing together.

        :meth:`run` then sends the closing frames and returns ``interrupted``.
        """
        if self.cancel_requested_at is None:
            self.cancel_requested_at = trio.current_time()
        self._scope.cancel()

    @property
    def live(self) -> bool:
        """Whether the client sees this turn (always, unless it is speculative)."""
        return self._live.is_set()

    async def _keep(self, frame: ServerFrame) -> None:
        if self._live.is_set():
            assert self._client_emit is not None
            await self._client_emit(frame)
        else:
            self._kept.append(frame)

    async def go_live(self, *, user_turn_ended: float | None, stt_ms: float | None) -> None:
        """Adopt a speculative turn: the user's turn ended as guessed. Send what it kept,
        then let it go on as any turn (its latency counts from ``user_turn_ended``)."""
        self._marks.user_turn_ended = user_turn_ended
        self._marks.stt_ms = stt_ms
        if self._marks.first_text is not None:
            self._marks.first_text = trio.current_time()  # the client sees it now
        assert self._client_emit is not None
        while self._kept:
            await self._client_emit(self._kept.pop(0))
        self._live.set()

    def hold(self) -> None:
        """Stop sending audio until :meth:`resume` (speech over the agent is being checked).

        Generation and synthesis go on; what the client already has plays out."""
        if self._resume is None:
            self._resume = trio.Event()

    def resume(self) -> None:
        """Send audio again, from where :meth:`hold` stopped it."""
        event, self._resume = self._resume, None
        if event is not None:
            event.set()

    @property
    def text_so_far(self) -> str:
        """The reply text generated so far."""
        return "".join(self._text)

    async def run(
        self, *, task_status: trio.TaskStatus[AgentTurn] = trio.TASK_STATUS_IGNORED
    ) -> TurnOutcome:
        """Run the turn to its end or until :meth:`cancel`, then close it.

        Reports itself started (``nursery.start``) once its cancel scope is entered. Returns
        after the closing frames are queued. Cancelling the *caller* (the session ending) also
        ends the turn; closing frames are then attempted under a short deadline.
        """
        with self._scope:
            task_status.started(self)
            deltas_send, deltas_recv = trio.open_memory_channel[str | _Flush](64)
            pieces_send, pieces_recv = trio.open_memory_channel[str](8)
            # A speculative turn keeps its first piece's audio until it goes live.
            play_send, play_recv = trio.open_memory_channel[_PlayItem](
                2 if self._live.is_set() else 4096
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._generate, deltas_send)
                nursery.start_soon(self._chunk_text, deltas_recv, pieces_send)
                nursery.start_soon(self._synthesize, pieces_recv, play_send)
                await self._play(play_recv)
        interrupted = self._scope.cancelled_caught
        if not self._live.is_set():  # a speculation withdrawn: the client never saw it
            return TurnOutcome("".join(self._text), "", interrupted, withdrawn=True)
        with trio.move_on_after(_CLOSE_DEADLINE_S, shield=True):
            if self.tools is not None:
                self.steps.extend(await self.tools.interrupted(self.turn_id))
            return await self._close(interrupted)
        return TurnOutcome("".join(self._text), "", interrupted)  # pragma: no cover

    async def _close(self, interrupted: bool) -> TurnOutcome:
        text = "".join(self._text).strip()
        if interrupted:
            if self._open_piece is not None:
                # Cut off mid-piece: its length is what the TTS had produced so far.
                text_piece, start_ms, index = self._open_piece
                self.playback.add_text(text_piece, start_ms, start_ms + self._piece_ms[index])
            heard = self.playback.heard_text(self.playback.heard_ms(trio.current_time()))
            if self._text_only:
                heard = (heard + " " + " ".join(p.strip() for p in self._text_only)).strip()
            if not self._audio_started and not self._text_only:
                heard = ""
        else:
            heard = text
        if self._audio_started:
            await self.emit(
                AgentAudioDone(
                    turn_id=self.turn_id,
                    duration_ms=round(self.playback.sent_ms),
                    interrupted=interrupted,
                )
            )
        await self.emit(
            AgentTextDone(
                turn_id=self.turn_id, text=text, interrupted=interrupted, heard_text=heard
            )
        )
        await self.emit(self._metrics())
        return TurnOutcome(text=text, heard_text=heard, interrupted=interrupted)

    def _metrics(self) -> Metrics:
        m = self._marks
        now = trio.current_time()

        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000.0, 2)

        return Metrics(
            turn_id=self.turn_id,
            stt_ms=m.stt_ms,
            llm_first_token_ms=ms(m.started, m.first_token),
            tts_first_audio_ms=ms(m.first_piece, m.first_audio),
            end_of_turn_to_first_audio_ms=ms(m.user_turn_ended, m.first_audio),
            end_of_turn_to_first_text_ms=ms(m.user_turn_ended, m.first_text),
            total_ms=ms(m.user_turn_ended or m.started, now),
            barge_in_ms=ms(self.cancel_requested_at, now),
        )

    # ---------------------------------------------------------------- stage 1: LLM

    async def _generate(self, deltas: trio.MemorySendChannel[str | _Flush]) -> None:
        """Generate the reply (or say ``say``); with tools, run the model's calls between
        rounds."""
        llm = self.engine.llm
        if self.say is not None:
            async with deltas:
                await deltas.send(self.say)
            return
        offered = OfferedTools({}, {})
        if self.tools is not None and not self.speculative:
            offered = await self.tools.offer(self.config)
        if offered:
            async with deltas:
                await self._generate_with_tools(offered, deltas)
            return
        call = partial(llm.generate, self.request, deltas)
        failure = await call_backend(llm, call, deltas, counter=self.engine.telemetry)
        if failure is not None:
            await self._report_error("llm_failed", f"language model {llm.name!r} failed: {failure}")

    async def _generate_with_tools(
        self, offered: OfferedTools, deltas: trio.MemorySendChannel[str | _Flush]
    ) -> None:
        """Model, tools, model ...: up to ``max_tool_rounds`` rounds; the last offers none, and
        so does the round after one that only repeated calls already answered."""
        assert self.tools is not None
        llm = self.engine.llm
        messages = list(self.request.messages)
        answered = False  # the model repeated only calls it already had the answers to
        for round_index in range(self.max_tool_rounds):
            last = answered or round_index == self.max_tool_rounds - 1
            request = replace(
                self.request,
                messages=tuple(messages),
                tools=() if last else offered.definitions,
            )
            text: list[str] = []
            calls: list[ToolCall] = []
            out_send, out_recv = trio.open_memory_channel[str | ToolCall](64)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._collect, out_recv, text, calls, deltas)
                call = partial(llm.respond, request, out_send)
                failure = await call_backend(llm, call, out_send, counter=self.engine.telemetry)
            if failure is not None:
                await self._report_error(
                    "llm_failed", f"language model {llm.name!r} failed: {failure}"
                )
                return
            if not calls or last:
                return  # a call in the last round (no tools offered) is not run
            await deltas.send(_FLUSH)  # what the model said before calling is spoken now
            calls = self.tools.prepare(calls)
            assistant = ChatMessage("assistant", "".join(text), tool_calls=tuple(calls))
            self.steps.append(assistant)  # before the calls run: a barge-in records them too
            messages.append(assistant)
            outcomes = await self._run_tools(calls, offered, deltas)
            self.steps.extend(outcomes)
            messages.extend(o.message() for o in outcomes)
            # A model that calls again what it already has the answer to is told to answer:
            # the next round offers no tools (small models otherwise loop on the same call).
            answered = all(o.repeat for o in outcomes)

    @staticmethod
    async def _collect(
        output: trio.MemoryReceiveChannel[str | ToolCall],
        text: list[str],
        calls: list[ToolCall],
        deltas: trio.MemorySendChannel[str | _Flush],
    ) -> None:
        """Text goes on to be spoken as it comes; calls are kept for the end of the round."""
        async with output:
            async for item in output:
                if isinstance(item, ToolCall):
                    calls.append(item)
                elif item:
                    text.append(item)
                    await deltas.send(item)

    async def _run_tools(
        self,
        calls: list[ToolCall],
        offered: OfferedTools,
        deltas: trio.MemorySendChannel[str | _Flush],
    ) -> list[ToolOutcome]:
        """Run one round's calls; say the filler if they take long (once per turn)."""
        assert self.tools is not None
        filler = self.config.tool_filler
        if not filler or self._filled:
            return await self.tools.run_calls(self.turn_id, calls, offered, self.config)
        outcomes: list[ToolOutcome] = []
        async with trio.open_nursery() as nursery:

            async def say_filler() -> None:
                await trio.sleep(self.config.tool_filler_after_ms / 1000.0)
                self._filled = True
                await deltas.send(filler)
                await deltas.send(_FLUSH)

            nursery.start_soon(say_filler)
            outcomes = await self.tools.run_calls(self.turn_id, calls, offered, self.config)
            nursery.cancel_scope.cancel()
        return outcomes

    # ---------------------------------------------------------------- stage 2: text

    async def _chunk_text(
        self, deltas: trio.MemoryReceiveChannel[str | _Flush], pieces: trio.MemorySendChannel[str]
    ) -> None:
        chunker = SentenceChunker()
        after_flush = False
        async with deltas, pieces:
            async for delta in deltas:
                if isinstance(delta, _Flush):
                    for piece in chunker.flush():
                        await pieces.send(piece)
                    after_flush = True
                    continue
                if not delta:
                    continue
                if after_flush and self._text and not self._text[-1][-1:].isspace():
                    delta = delta if delta[:1].isspace() else " " + delta  # a new round
                after_flush = False
                if self._marks.first_token is None:
                    self._marks.first_token = trio.current_time()
                self._text.append(delta)
                await self.emit(AgentText(turn_id=self.turn_id, delta=delta))
                if self._marks.first_text is None:
                    self._marks.first_text = trio.current_time()
                for piece in chunker.feed(delta):
                    await pieces.send(piece)
            for piece in chunker.flush():
                await pieces.send(piece)

    # ---------------------------------------------------------------- stage 3: speech

    async def _synthesize(
        self, pieces: trio.MemoryReceiveChannel[str], play: trio.MemorySendChannel[_PlayItem]
    ) -> None:
        backend_name, voice = self.engine.resolve_voice(self.config.voice_id)
        tts = self.engine.tts[backend_name]
        async with pieces, play:
            async for piece in pieces:
                if self._piece_ms or self._text_only:
                    await self._live.wait()  # a speculation synthesises its first piece only
                if self._marks.first_piece is None:
                    self._marks.first_piece = trio.current_time()
                if not self._live.is_set():
                    self.pieces_synthesised_speculatively += 1
                spoken = await self._normalise(piece)
                if self._tts_warned or not spoken.strip():
                    await play.send(_TextOnly(piece))
                    continue
                self._piece_ms.append(0.0)
                await play.send(_PieceStart(piece, len(self._piece_ms) - 1))
                try:
                    await self._synthesize_piece(tts, spoken, voice, play)
                except BackendError as exc:
                    self._tts_warned = True
                    await self.emit(
                        WarningFrame(
                            code="tts_unavailable",
                            message=f"speech synthesis failed ({exc}); the reply continues as text",
                        )
                    )
                    await play.send(_TextOnly(piece))
                    continue
                await play.send(_PieceEnd(piece))

    async def _normalise(self, text: str) -> str:
        normaliser: NormaliserBackend | None = self.engine.normaliser
        if normaliser is None or not self.config.normalize_text:
            return text
        request = NormaliseRequest(language=self.config.language, lexicon=self.lexicon)
        try:
            return await normaliser.normalise(text, request)
        except Exception as exc:  # a normaliser bug must not end the session
            if not isinstance(exc, BackendError):
                log.exception("normaliser %r raised an unmapped exception", normaliser.name)
            await self.emit(
                WarningFrame(code="normaliser_failed", message=f"text normalisation failed: {exc}")
            )
            return text

    async def _synthesize_piece(
        self,
        tts: TtsBackend,
        text: str,
        voice: str | None,
        play: trio.MemorySendChannel[_PlayItem],
    ) -> None:
        caps = tts.capabilities
        cfg = self.config
        request = _tts_request(text, voice, cfg, caps)
        chunks_send, chunks_recv = trio.open_memory_channel[AudioChunk](1)
        failure: BackendError | None = None

        async def produce() -> None:
            nonlocal failure
            call = partial(tts.synthesize, request, chunks_send)
            failure = await call_backend(tts, call, chunks_send, counter=self.engine.telemetry)

        trim_ms = cfg.warmup_trim_ms if not caps.warmup_trim else 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with chunks_recv:
                async for chunk in chunks_recv:
                    if trim_ms > 0:
                        chunk, trim_ms = _trim_start(chunk, trim_ms)
                    if chunk.pcm:
                        self._piece_ms[-1] += chunk.duration_ms
                        await play.send(chunk)
        if failure is not None:
            raise failure

    # ---------------------------------------------------------------- stage 4: pacing

    async def _play(self, play: trio.MemoryReceiveChannel[_PlayItem]) -> None:
        out_rate = self.config.output_sample_rate
        resampler: StreamResampler | None = None
        frame_bytes = out_rate * _FRAME_MS // 1000 * 2
        pending = b""
        await self._live.wait()
        async with play:
            async for item in play:
                if isinstance(item, AudioChunk):
                    if resampler is None or resampler.from_rate != item.sample_rate:
                        resampler = StreamResampler(item.sample_rate, out_rate)
                    pending += resampler.process(item.pcm)
                    while len(pending) >= frame_bytes:
                        frame, pending = pending[:frame_bytes], pending[frame_bytes:]
                        await self._send_audio(frame, out_rate)
                elif isinstance(item, _PieceStart):
                    self._open_piece = (item.text, self.playback.sent_ms, item.index)
                elif isinstance(item, _PieceEnd):
                    if resampler is not None:
                        pending += resampler.process(b"", last=True)
                        resampler = None
                    if pending:
                        await self._send_audio(pending, out_rate)
                        pending = b""
                    if self._open_piece is not None:
                        self.playback.add_text(
                            item.text, self._open_piece[1], self.playback.sent_ms
                        )
                        self._open_piece = None
                else:
                    self._text_only.append(item.text)
                    await self._announce()

    async def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            await self.output_started(self)
            await self.output_acknowledged.wait()

    async def _send_audio(self, frame: bytes, rate: int) -> None:
        if not self._audio_started:
            await self._announce()
            await self.emit(
                AgentAudioStart(turn_id=self.turn_id, sample_rate=rate, format="pcm_s16le")
            )
            self._audio_started = True
        while self._resume is not None:
            await self._resume.wait()
        await trio.sleep_until(self.playback.send_at(trio.current_time()))
        await self.emit_audio(frame)
        if self._marks.first_audio is None:
            self._marks.first_audio = trio.current_time()
        self.playback.sent(trio.current_time(), len(frame) / 2 / rate * 1000.0)

    async def _report_error(self, code: str, message: str) -> None:
        await self.emit(ErrorFrame(code=code, message=message, fatal=False))


def _tts_request(
    text: str, voice: str | None, cfg: SessionConfig, caps: TtsCapabilities
) -> TtsRequest:
    """The request for one piece, carrying only the options the backend declares."""
    return TtsRequest(
        text=text,
        voice_id=voice,
        speed=cfg.speed if caps.speed else 1.0,
        instructions=cfg.instructions if caps.instructions else None,
        cfg_value=cfg.cfg_value if caps.cfg_value else None,
        language=cfg.language,
        warmup_trim_ms=cfg.warmup_trim_ms if caps.warmup_trim else 0,
    )


def _trim_start(chunk: AudioChunk, trim_ms: int) -> tuple[AudioChunk, int]:
    """Drop up to ``trim_ms`` from the start of ``chunk``; return it and the trim left."""
    available_ms = chunk.duration_ms
    if available_ms <= trim_ms:
        return AudioChunk(b"", chunk.sample_rate), int(trim_ms - available_ms)
    cut = int(chunk.sample_rate * trim_ms / 1000) * 2
    return AudioChunk(chunk.pcm[cut:], chunk.sample_rate), 0
