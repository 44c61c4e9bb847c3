"""The rounds of ``bench latency``: a question, the reply, the same question over the reply.

Each round is a session of its own (``vad_enabled: true``, nothing else set). The client
streams PCM16 16 kHz in 20 ms frames in real time:

1. ``lead_s`` (0.6 s) of noise;
2. the question (speech plus noise); **end of speech** is when the frame holding its last
   speech sample is sent;
3. noise until the first agent audio byte arrives;
4. ``barge_in_after_s`` (0.4 s) later, the same question again, over the agent's audio (a
   barge-in by voice: no ``interrupt`` frame); **onset** is when its first frame is sent;
5. ``tail_s`` (1 s) of noise, then the session ends.

Every time is the client's clock (``trio.current_time()``) when a frame was sent or a message
was received, so loopback and the client's own parsing count.

The naive client's playback model: it plays every byte of the reply's audio it received, in
order and in real time, from the moment the first arrived, ignoring ``interrupted``. A piece
starts when it arrives or when the piece before it has been played, whichever is later; the
client goes silent when the last piece has been played.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from scaivoice.engine import ScaiVoiceError
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from .audio import FRAME_MS, NoiseLoop, Question

__all__ = ["RoundPlan", "RoundRecord", "run_round"]

_SESSION_CONFIG = {"vad_enabled": True}
_REPLY_TIMEOUT_S = 20.0
_READY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """The workload of one round."""

    question: Question
    noise: list[bytes]
    """The noise frames (looped)."""
    lead_s: float = 0.6
    barge_in_after_s: float = 0.4
    tail_s: float = 1.0


@dataclass(slots=True)
class RoundRecord:
    """What the client saw in one round (seconds of ``trio.current_time()``)."""

    speech_end: float | None = None
    thinking: float | None = None
    first_audio: float | None = None
    reply_turn: int | None = None
    onset: float | None = None
    interrupted: float | None = None
    reply_audio: list[tuple[float, float]] = field(default_factory=list)
    """The reply turn's audio: (arrival, seconds of audio) of each binary frame."""
    errors: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ the rows, in ms

    @property
    def end_to_first_audio_ms(self) -> float | None:
        """End of speech -> first agent audio byte."""
        if self.speech_end is None or self.first_audio is None:
            return None
        return (self.first_audio - self.speech_end) * 1000

    @property
    def end_to_thinking_ms(self) -> float | None:
        """End of speech -> ``state: thinking`` (the end of the user's turn, at the client)."""
        if self.speech_end is None or self.thinking is None:
            return None
        return (self.thinking - self.speech_end) * 1000

    @property
    def onset_to_interrupted_ms(self) -> float | None:
        """Barge-in speech onset -> ``state: interrupted``."""
        if self.onset is None or self.interrupted is None:
            return None
        return (self.interrupted - self.onset) * 1000

    @property
    def onset_to_last_audio_ms(self) -> float | None:
        """Barge-in speech onset -> the reply's last audio byte received."""
        if self.onset is None or not self.reply_audio:
            return None
        return (self.reply_audio[-1][0] - self.onset) * 1000

    @property
    def naive_silence_ms(self) -> float | None:
        """Onset -> silence, for a client that plays all it received and ignores
        ``interrupted``."""
        if self.onset is None or not self.reply_audio:
            return None
        played_until = 0.0
        for arrival, seconds in self.reply_audio:
            played_until = max(played_until, arrival) + seconds
        return (played_until - self.onset) * 1000


async def run_round(
    url: str, api_key: str | None, plan: RoundPlan, noise: NoiseLoop
) -> RoundRecord:
    """One round over a session of its own. Failures are noted in the record's ``errors``.

    Raises:
        ScaiVoiceError: the server cannot end turns by itself (no VAD) or refused the session.
    """
    record = RoundRecord()
    replied = trio.Event()
    async with connect(url, api_key=api_key, config=_SESSION_CONFIG) as session:
        with trio.fail_after(_READY_TIMEOUT_S):
            await _until_idle(session)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_listen, session, record, replied)
            await _speak(session, plan, noise, record, replied)
            nursery.cancel_scope.cancel()
        await session.end()
    return record


async def _until_idle(session: VoiceClient) -> None:
    while True:
        event = await session.receive()
        if isinstance(event, frames.WarningFrame) and event.code == "feature_unavailable":
            raise ScaiVoiceError(f"the server cannot end turns by itself: {event.message}")
        if isinstance(event, frames.ErrorFrame):
            raise ScaiVoiceError(f"the server reported {event.code}: {event.message}")
        if isinstance(event, frames.State) and event.state == "idle":
            return


async def _speak(
    session: VoiceClient,
    plan: RoundPlan,
    noise: NoiseLoop,
    record: RoundRecord,
    replied: trio.Event,
) -> None:
    """Stream the round's audio in real time (see the module's docstring)."""
    frame_s = FRAME_MS / 1000
    start = trio.current_time()
    index = 0

    async def send(frame: bytes) -> float:
        nonlocal index
        await trio.sleep_until(start + index * frame_s)
        sent = trio.current_time()
        await session.send_audio(frame)
        index += 1
        return sent

    for _ in range(round(plan.lead_s / frame_s)):
        await send(noise.next())
    last = start
    for frame in plan.question.frames(noise):
        last = await send(frame)
    record.speech_end = last
    if record.first_audio is not None:
        record.errors.append("agent audio came before the question ended")
    deadline = last + _REPLY_TIMEOUT_S
    while not replied.is_set():
        if await send(noise.next()) > deadline:
            record.errors.append(f"no agent audio {_REPLY_TIMEOUT_S:g} s after the question")
            return
    assert record.first_audio is not None
    while start + index * frame_s < record.first_audio + plan.barge_in_after_s:
        await send(noise.next())
    for position, frame in enumerate(plan.question.frames(noise)):
        sent = await send(frame)
        if position == 0:
            record.onset = sent
    for _ in range(round(plan.tail_s / frame_s)):
        await send(noise.next())


async def _listen(session: VoiceClient, record: RoundRecord, replied: trio.Event) -> None:
    """Note when the reply's audio and the states arrive."""
    async for event in session.events():
        now = trio.current_time()
        if isinstance(event, AgentAudio):
            if not replied.is_set():
                record.first_audio = now
                record.reply_turn = event.turn_id
                replied.set()
            if event.turn_id == record.reply_turn:
                record.reply_audio.append((now, len(event.pcm) / 2 / event.sample_rate))
        elif isinstance(event, frames.State):
            if event.state == "thinking" and record.thinking is None:
                if record.speech_end is not None:
                    record.thinking = now
            elif event.state == "interrupted" and record.onset is not None:
                if record.interrupted is None:
                    record.interrupted = now
        elif isinstance(event, frames.ErrorFrame | frames.WarningFrame):
            record.errors.append(f"{event.code}: {event.message}")
