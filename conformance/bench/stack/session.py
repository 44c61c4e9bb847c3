"""Parts 2 and 3 of ``bench stack`` at the client: idle sessions (memory) and spoken turns.

Each turn streams an utterance in real time in 20 ms frames, then silence in real time (at
least 1.5 s, and until the turn has ended), and follows the reply until ``state: idle``,
noting when each event arrived (:class:`TurnRecord`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from scaivoice.engine import ScaiVoiceError, SentenceChunker
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from .._proc import rss_mib
from .rtf import FRAME_BYTES, FRAME_MS, RATE, Utterance

__all__ = ["IDLE_SESSIONS", "MemoryFigures", "TurnRecord", "measure_memory", "run_turns"]

SYSTEM_PROMPT = "You are a voice assistant. Answer in one short sentence."
IDLE_SESSIONS = 10
_TRAILING_SILENCE_S = 1.5
_MAX_SILENCE_S = 15.0
_TURN_TIMEOUT_S = 90.0
_SETTLE_S = 1.5
_SESSION_CONFIG: Mapping[str, Any] = {"vad_enabled": True, "system_prompt": SYSTEM_PROMPT}


@dataclass(slots=True)
class TurnRecord:
    """What the client saw of one turn, in seconds of ``trio.current_time()``."""

    text: str
    speech_end: float = math.nan
    thinking: float | None = None
    first_text: float | None = None
    last_text: float | None = None
    first_piece: float | None = None
    first_audio: float | None = None
    metrics: frames.Metrics | None = None
    transcript: str = ""
    reply: str = ""
    errors: list[str] = field(default_factory=list)
    chunker: SentenceChunker = field(default_factory=SentenceChunker)

    @property
    def complete(self) -> bool:
        """The turn produced audio, and every figure of the split is known."""
        m = self.metrics
        return (
            self.thinking is not None
            and self.first_audio is not None
            and self.first_text is not None
            and self.first_piece is not None
            and m is not None
            and None not in (m.stt_ms, m.llm_first_token_ms, m.tts_first_audio_ms)
        )


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """Resident set sizes of the server process, in MiB."""

    after_start: float
    one_session: float
    ten_sessions: float

    @property
    def per_session(self) -> float:
        return (self.ten_sessions - self.one_session) / (IDLE_SESSIONS - 1)


# ====================================================================== memory


async def measure_memory(url: str, api_key: str | None, pid: int) -> MemoryFigures:
    """RSS of the server process ``pid`` after start-up, with one idle session open and with
    ten.

    Raises:
        ScaiVoiceError: the process's ``/proc/PID/status`` cannot be read.
    """
    await trio.sleep(_SETTLE_S)
    after_start = _rss(pid)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(_idle_session(url, api_key))
        await trio.sleep(_SETTLE_S)
        one = _rss(pid)
        for _ in range(IDLE_SESSIONS - 1):
            await stack.enter_async_context(_idle_session(url, api_key))
        await trio.sleep(_SETTLE_S)
        ten = _rss(pid)
    return MemoryFigures(after_start=after_start, one_session=one, ten_sessions=ten)


def _rss(pid: int) -> float:
    value = rss_mib(pid)
    if value is None:
        raise ScaiVoiceError(f"cannot read the resident set of process {pid} (/proc/{pid}/status)")
    return value


@asynccontextmanager
async def _idle_session(url: str, api_key: str | None) -> AsyncIterator[None]:
    """A session with ``vad_enabled`` that has streamed 200 ms of silence and stays idle."""
    async with connect(url, api_key=api_key, config=_SESSION_CONFIG) as session:
        await _until_idle(session)
        await session.stream_pcm(bytes(RATE * 2 // 5), realtime=False, commit=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_discard_events, session)
            yield
            nursery.cancel_scope.cancel()


async def _discard_events(session: VoiceClient) -> None:
    async for _ in session.events():
        pass


# ======================================================================= turns


async def run_turns(
    url: str,
    api_key: str | None,
    utterances: Sequence[Utterance],
    turns: int,
    on_turn: Callable[[int, TurnRecord], None],
) -> list[TurnRecord]:
    """Run ``turns`` spoken turns over one session, cycling through the utterances, and call
    ``on_turn(number, record)`` after each."""
    records: list[TurnRecord] = []
    async with connect(url, api_key=api_key, config=_SESSION_CONFIG) as session:
        await _until_idle(session)
        for index in range(turns):
            with trio.fail_after(_TURN_TIMEOUT_S):
                record = await _one_turn(session, utterances[index % len(utterances)])
            records.append(record)
            on_turn(index + 1, record)
        await session.end()
    return records


async def _until_idle(session: VoiceClient) -> None:
    """Read frames until ``state: idle``.

    Raises:
        ScaiVoiceError: the server has no VAD (``feature_unavailable``) or reported an error.
    """
    while True:
        event = await session.receive()
        if isinstance(event, frames.WarningFrame) and event.code == "feature_unavailable":
            raise ScaiVoiceError(f"the server cannot end turns by itself: {event.message}")
        if isinstance(event, frames.ErrorFrame):
            raise ScaiVoiceError(f"the server reported {event.code}: {event.message}")
        if isinstance(event, frames.State) and event.state == "idle":
            return


async def _one_turn(session: VoiceClient, utterance: Utterance) -> TurnRecord:
    """Speak ``utterance`` and follow the reply until the session is idle again."""
    record = TurnRecord(utterance.text)
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_speak, session, utterance, record, ended)
        await _follow_reply(session, record, ended)
    return record


async def _speak(
    session: VoiceClient, utterance: Utterance, record: TurnRecord, ended: trio.Event
) -> None:
    """Stream the utterance, then silence: 1.5 s at least, and until the user turn has ended."""
    silence = bytes(FRAME_BYTES)
    start = trio.current_time()
    index = 0
    for index, frame in enumerate(utterance.frames()):
        await trio.sleep_until(start + index * FRAME_MS / 1000)
        await session.send_audio(frame)
    record.speech_end = trio.current_time()
    silent_s = 0.0
    while silent_s < _TRAILING_SILENCE_S or not ended.is_set():
        if silent_s >= _MAX_SILENCE_S:
            return
        index += 1
        silent_s += FRAME_MS / 1000
        await trio.sleep_until(start + index * FRAME_MS / 1000)
        await session.send_audio(silence)


async def _follow_reply(session: VoiceClient, record: TurnRecord, ended: trio.Event) -> None:
    """Record the turn's events until ``state: idle`` follows ``state: thinking``."""
    while True:
        event = await session.receive()
        now = trio.current_time()
        if isinstance(event, frames.State):
            if event.state == "thinking" and record.thinking is None:
                record.thinking = now
                ended.set()
            elif event.state == "idle" and record.thinking is not None:
                return
        else:
            _note(record, event, now)


def _note(record: TurnRecord, event: frames.ServerFrame | AgentAudio, now: float) -> None:
    """Record the times and texts of one turn event."""
    if isinstance(event, AgentAudio):
        if record.first_audio is None:
            record.first_audio = now
            # No sentence was complete: the engine spoke the text flushed at the reply's end.
            record.first_piece = record.first_piece or record.last_text
    elif isinstance(event, frames.AgentText):
        record.first_text = record.first_text or now
        record.last_text = now
        if record.first_piece is None and record.chunker.feed(event.delta):
            record.first_piece = now
    elif isinstance(event, frames.AgentTextDone):
        record.reply = event.text
    elif isinstance(event, frames.TranscriptFrame) and event.final:
        record.transcript = event.text
    elif isinstance(event, frames.Metrics):
        record.metrics = event
    elif isinstance(event, frames.ErrorFrame | frames.WarningFrame):
        record.errors.append(f"{event.code}: {event.message}")
