"""One benchmark conversation at the client: a microphone in real time, the server's events as
they arrive, and a record of each step.

The microphone (:class:`Microphone`) sends a 20 ms frame every 20 ms for the whole session,
as a real one does: the room's low noise, with what the user says mixed in when they speak. In
``manual`` mode it is push-to-talk instead: it sends only while the user speaks (after 100 ms of
lead-in) and commits at the end of speech. Every server frame is logged with the time it
arrived (:class:`Listener`); the records are read off that log.

A step (see :mod:`.plan`):

1. **The user's turn** (:class:`TurnRecord`). *Premature*: the server ended a turn (``state:
   thinking`` or a final transcript arrived) after the utterance began and before its end of
   speech — the turn was cut at an inner pause. *Latency*: from sending the frame that holds the
   utterance's last sound to receiving the reply's first audio (turns not cut only); the
   reply's ``metrics`` frame gives its STT, LLM first-token and TTS first-audio times.
2. **Speech over the reply** (:class:`OverlapRecord`), in the categories that have it: 1-2 s
   after the reply's first audio, the user says a backchannel, makes a noise or interrupts.
   Recorded: whether and when ``state: interrupted`` came for the reply (from the overlap's
   first frame), what the server heard, and whether the agent's audio went on after it.
   A reply that had ended before the overlap makes the step void (``valid`` false).

After each step the client stops what is still playing (``interrupt``) and waits until the
session is idle and quiet, so steps do not run into each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from .plan import Conversation, Step
from .speech import FRAME_BYTES, FRAME_MS, Clip, speech_end

__all__ = [
    "MISSED_AFTER_S",
    "Listener",
    "Microphone",
    "OverlapRecord",
    "TurnRecord",
    "mode_in_use",
    "run_conversation",
]

MISSED_AFTER_S = 2.0
"""A real interruption without ``state: interrupted`` within this long is missed."""
NOISE_DBFS = -55.0
"""The room's noise (RMS), under every frame the microphone sends."""
SHORT_PROMPT = "You are a voice assistant. Answer in one short sentence."
LONG_PROMPT = "You are a voice assistant. Answer in four or five full sentences."
_FRAME_S = FRAME_MS / 1000
_LEAD_IN_FRAMES = 5
_REPLY_TIMEOUT_S = 30.0
_OVERLAP_AFTER_S = (1.0, 2.0)
_OBSERVE_S = 5.0
_AFTER_VERDICT_S = 1.0
_QUIET_S = 0.8
_SETTLE_TIMEOUT_S = 30.0
_INTERRUPT_WAIT_S = 3.0
_GAP_S = (0.5, 1.0)

Event = frames.ServerFrame | AgentAudio


@dataclass(slots=True)
class TurnRecord:
    """A user turn and the start of its reply. Times in milliseconds."""

    mode: str
    conversation: int
    category: str
    kind: str
    voice: str
    text: str
    pauses_ms: tuple[int, ...] = ()
    premature: bool = False
    latency_ms: float | None = None
    """End of speech -> the reply's first audio (None: cut turn, or no reply)."""
    turn_end_ms: float | None = None
    """End of speech -> ``state: thinking`` of the replied turn."""
    metrics: frames.Metrics | None = None
    heard: list[str] = field(default_factory=list)
    """The final transcripts of the turns the utterance made (more than one: it was cut)."""
    reply: str = ""
    note: str = ""


@dataclass(slots=True)
class OverlapRecord:
    """Something said (or a noise made) over the agent's reply. Times in milliseconds."""

    mode: str
    conversation: int
    category: str
    kind: str
    """``backchannel``, ``noise`` or ``interruption``."""
    voice: str
    text: str
    valid: bool = True
    """False: the reply had ended before the overlap (nothing to interrupt)."""
    into_reply_ms: float = math.nan
    """From the reply's first audio to the overlap's onset."""
    interrupted_ms: float | None = None
    """Onset -> ``state: interrupted`` of the reply (None: not interrupted)."""
    heard: str | None = None
    """The final transcript of the user turn the overlap opened (None: it opened none)."""
    answered: bool = False
    """The user turn the overlap opened got a reply (it was taken as a turn of its own)."""
    went_on: bool = False
    """The agent spoke on after the overlap was judged: the reply resumed (held barge-in), or
    a new turn said its unheard rest (barge-in at once), or the reply never stopped."""
    gap_ms: float | None = None
    """When the agent went on: its longest silence (between two audio frames) from the onset
    to the first frame after the verdict."""
    note: str = ""


# ======================================================================= the listener


class Listener:
    """Every server frame with its arrival time (``trio.current_time()``), and the last state."""

    def __init__(self) -> None:
        self.log: list[tuple[float, Event]] = []
        self.state = "idle"
        self._changed = trio.Event()

    async def run(self, session: VoiceClient) -> None:
        """Read the session's frames until it closes."""
        async for event in session.events():
            self.log.append((trio.current_time(), event))
            if isinstance(event, frames.State):
                self.state = event.state
            self._changed.set()
            self._changed = trio.Event()

    def mark(self) -> int:
        """Where the log ends now (a start for :meth:`wait_for` and :meth:`since`)."""
        return len(self.log)

    def since(self, start: int) -> list[tuple[float, Event]]:
        return self.log[start:]

    async def wait_for(
        self, match: Callable[[float, Event], bool], start: int
    ) -> tuple[float, Event]:
        """The first logged frame from ``start`` on that ``match``es, waiting for it to come.

        Waits for ever: callers put a deadline around it."""
        index = start
        while True:
            while index < len(self.log):
                at, event = self.log[index]
                if match(at, event):
                    return at, event
                index += 1
            await self._changed.wait()

    async def quiet_for(self, seconds: float) -> bool:
        """Whether no frame arrives in the next ``seconds``."""
        mark = len(self.log)
        with trio.move_on_after(seconds):
            while len(self.log) == mark:
                await self._changed.wait()
        return len(self.log) == mark


# ======================================================================= the microphone


@dataclass(slots=True)
class Played:
    """When the frames of something said were sent (``trio.current_time()``)."""

    onset: float = math.nan
    """Its first frame (after the lead-in)."""
    speech_end: float = math.nan
    """The frame holding its last sound sample."""
    end: float = math.nan
    """Its last frame."""


@dataclass(slots=True)
class _Saying:
    frames: list[bytes]
    first: int
    last_sound: int
    commit: bool
    played: Played = field(default_factory=Played)
    done: trio.Event = field(default_factory=trio.Event)
    position: int = 0


class Microphone:
    """Streams 20 ms frames in real time: the room's noise, and what the user says over it.

    Args:
        session: where the frames go.
        rng: the noise's random generator.
        push_to_talk: send only while the user speaks (then commit), not all the time.
    """

    def __init__(
        self, session: VoiceClient, rng: np.random.Generator, *, push_to_talk: bool
    ) -> None:
        self._session = session
        self._rng = rng
        self._push_to_talk = push_to_talk
        self._saying: _Saying | None = None
        self._wake = trio.Event()
        self._rms = 32768 * 10 ** (NOISE_DBFS / 20)

    async def say(self, clip: Clip) -> Played:
        """Say ``clip`` from the next frame on; returns when its last frame was sent.

        Push-to-talk: 100 ms of lead-in first, and ``audio.commit`` right after the frame
        holding its last sound."""
        padded = clip.pcm + bytes(-len(clip.pcm) % FRAME_BYTES)
        chunks = [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]
        lead = _LEAD_IN_FRAMES if self._push_to_talk else 0
        last_sound = max(speech_end(padded) // FRAME_BYTES - 1, 0)
        if self._push_to_talk:  # the button is let go at the end of speech
            chunks = chunks[: last_sound + 1]
        saying = _Saying(
            frames=[bytes(FRAME_BYTES)] * lead + chunks,
            first=lead,
            last_sound=lead + last_sound,
            commit=self._push_to_talk,
        )
        self._saying = saying
        self._wake.set()
        await saying.done.wait()
        return saying.played

    async def run(self) -> None:
        """Send frames until cancelled."""
        start = trio.current_time()
        index = 0
        while True:
            saying = self._saying
            if saying is None and self._push_to_talk:
                await self._wake.wait()
                self._wake = trio.Event()
                start, index = trio.current_time(), 0
                continue
            speech = saying.frames[saying.position] if saying is not None else bytes(FRAME_BYTES)
            await trio.sleep_until(start + index * _FRAME_S)
            await self._session.send_audio(self._over_noise(speech))
            index += 1
            if saying is not None:
                await self._sent(saying, trio.current_time())

    def _over_noise(self, speech: bytes) -> bytes:
        noise = self._rng.standard_normal(FRAME_BYTES // 2) * self._rms
        total = np.frombuffer(speech, "<i2").astype(np.float64) + noise
        return np.clip(total, -32768, 32767).astype("<i2").tobytes()

    async def _sent(self, saying: _Saying, now: float) -> None:
        if saying.position == saying.first:
            saying.played.onset = now
        if saying.position == saying.last_sound:
            saying.played.speech_end = now
            if saying.commit:
                await self._session.commit()
        saying.position += 1
        if saying.position == len(saying.frames):
            saying.played.end = now
            self._saying = None
            saying.done.set()


# ======================================================================= a conversation


def mode_in_use(started: frames.SessionStarted) -> str:
    """The turn detection the session got: what it asked, as far as the server can
    (``capabilities.features``: ``vad_enabled`` for a VAD, ``turn_detection`` for the model),
    and with ``vad_enabled`` how speech over the agent barges in (``held`` or ``at once``)."""
    config = started.config
    features = set(started.capabilities.features)
    if config.turn_detection == "manual" or "vad_enabled" not in features:
        return "manual"
    turns = "semantic" if "turn_detection" in features else "server_vad"
    if config.turn_detection == "server_vad":
        turns = "server_vad"
    if not config.vad_enabled:
        return turns
    return f"{turns}, {'held' if config.barge_in_hold else 'at once'}"


def session_config(spec: str, *, long_replies: bool) -> dict[str, Any]:
    """The session keys of a mode spec: ``semantic``, ``server_vad``, ``manual``, or one of the
    first two with ``+hold`` (``barge_in_hold``); ``vad_enabled`` unless ``manual``."""
    mode, _, variant = spec.partition("+")
    config: dict[str, Any] = {
        "turn_detection": mode,
        "vad_enabled": mode != "manual",
        "system_prompt": LONG_PROMPT if long_replies else SHORT_PROMPT,
    }
    if variant == "hold":
        config["barge_in_hold"] = True
    elif variant:
        raise ValueError(f"a mode is MODE or MODE+hold, not {spec!r}")
    return config


async def run_conversation(
    url: str,
    api_key: str | None,
    mode: str,
    conversation: Conversation,
    *,
    seed: int,
    on_record: Callable[[TurnRecord | OverlapRecord], None] | None = None,
) -> tuple[str, list[TurnRecord | OverlapRecord]]:
    """Run ``conversation`` in a session of its own, configured by ``mode`` (see
    :func:`session_config`).

    Returns:
        The mode the session got (see :func:`mode_in_use`), and a record per turn and overlap.
    """
    overlaps = any(step.over is not None for step in conversation.steps)
    config = session_config(mode, long_replies=overlaps)
    rng = np.random.default_rng(seed)
    records: list[TurnRecord | OverlapRecord] = []
    async with connect(url, api_key=api_key, config=config) as session:
        assert session.started is not None
        in_use = mode_in_use(session.started)
        listener = Listener()
        mic = Microphone(session, rng, push_to_talk=config["turn_detection"] == "manual")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.run, session)
            nursery.start_soon(mic.run)
            await _settle(session, listener)
            for step in conversation.steps:
                for record in await _step(session, listener, mic, mode, conversation, step, rng):
                    records.append(record)
                    if on_record is not None:
                        on_record(record)
                await trio.sleep(rng.uniform(*_GAP_S))
            nursery.cancel_scope.cancel()
    return in_use, records


async def _step(
    session: VoiceClient,
    listener: Listener,
    mic: Microphone,
    mode: str,
    conversation: Conversation,
    step: Step,
    rng: np.random.Generator,
) -> list[TurnRecord | OverlapRecord]:
    clip = step.clip
    turn = TurnRecord(
        mode, conversation.number, conversation.category, clip.kind, clip.voice, clip.spoken,
        clip.pauses_ms,
    )  # fmt: skip
    start = listener.mark()
    played = await mic.say(clip)
    turn.premature = any(
        played.onset <= at < played.speech_end
        and (
            (isinstance(event, frames.State) and event.state == "thinking")
            or (isinstance(event, frames.TranscriptFrame) and event.final)
        )
        for at, event in listener.since(start)
    )
    first: tuple[float, Event] | None = None
    with trio.move_on_after(_REPLY_TIMEOUT_S):
        first = await listener.wait_for(
            lambda at, e: isinstance(e, AgentAudio) and at >= played.speech_end, start
        )
    records: list[TurnRecord | OverlapRecord] = [turn]
    reply_turn = (
        first[1].turn_id if first is not None and isinstance(first[1], AgentAudio) else None
    )
    if first is None or reply_turn is None:
        turn.note = "no reply"
    elif turn.premature:
        turn.note = "cut at a pause"
    else:
        turn.latency_ms = (first[0] - played.speech_end) * 1000
    overlap_at = math.inf
    vad = mode.partition("+")[0] != "manual"
    if first is not None and reply_turn is not None and step.over is not None and vad:
        over = await _overlap(
            listener, mic, mode, conversation, step.over, reply_turn, first[0], rng
        )
        records.append(over)
        if over.valid:
            overlap_at = first[0] + over.into_reply_ms / 1000
    await _settle(session, listener)
    _fill_turn(turn, listener.since(start), played, reply_turn, overlap_at)
    return records


def _fill_turn(
    turn: TurnRecord,
    log: list[tuple[float, Event]],
    played: Played,
    reply_turn: int | None,
    overlap_at: float,
) -> None:
    """What the log says of the turn: transcripts (until the overlap's onset), the reply's
    text, state and metrics."""
    for at, event in log:
        if isinstance(event, frames.TranscriptFrame) and event.final:
            if played.onset <= at < overlap_at:
                turn.heard.append(event.text)
        elif reply_turn is None or getattr(event, "turn_id", None) != reply_turn:
            continue
        elif isinstance(event, frames.State) and event.state == "thinking":
            if turn.turn_end_ms is None and not turn.premature:
                turn.turn_end_ms = (at - played.speech_end) * 1000
        elif isinstance(event, frames.AgentTextDone):
            turn.reply = event.text
        elif isinstance(event, frames.Metrics):
            turn.metrics = event


async def _overlap(
    listener: Listener,
    mic: Microphone,
    mode: str,
    conversation: Conversation,
    clip: Clip,
    reply_turn: int,
    first_audio: float,
    rng: np.random.Generator,
) -> OverlapRecord:
    """Say ``clip`` over reply ``reply_turn`` 1-2 s into its audio, and see what it did."""
    record = OverlapRecord(
        mode, conversation.number, conversation.category, clip.kind, clip.voice, clip.spoken
    )

    def reply_over(_at: float, event: Event) -> bool:
        return isinstance(event, frames.AgentAudioDone) and event.turn_id == reply_turn

    with trio.move_on_at(first_audio + rng.uniform(*_OVERLAP_AFTER_S)):
        await listener.wait_for(reply_over, 0)
    if any(reply_over(at, e) for at, e in listener.log) or listener.state != "speaking":
        record.valid, record.note = False, "the reply ended before the overlap"
        return record
    start = listener.mark()
    played = await mic.say(clip)
    record.into_reply_ms = (played.onset - first_audio) * 1000

    def heard(_at: float, event: Event) -> bool:
        return (
            isinstance(event, frames.TranscriptFrame)
            and event.final
            and event.turn_id != reply_turn
        )

    verdict_at = math.inf
    with trio.move_on_at(played.onset + _OBSERVE_S):
        verdict_at, _ = await listener.wait_for(heard, start)
    await trio.sleep_until(min(verdict_at, played.onset + _OBSERVE_S) + _AFTER_VERDICT_S)
    _judge_overlap(record, listener.since(start), reply_turn, played, verdict_at)
    return record


def _judge_overlap(
    record: OverlapRecord,
    log: list[tuple[float, Event]],
    reply_turn: int,
    played: Played,
    verdict_at: float,
) -> None:
    """What the log says the overlap did: interrupted, heard, answered, went on."""
    user_turn: int | None = None
    for at, event in log:
        if isinstance(event, frames.TranscriptFrame) and event.final and user_turn is None:
            if event.turn_id != reply_turn:
                user_turn, record.heard = event.turn_id, event.text
        elif isinstance(event, frames.State) and event.state == "interrupted":
            if event.turn_id == reply_turn and record.interrupted_ms is None:
                record.interrupted_ms = (at - played.onset) * 1000
        elif (
            isinstance(event, frames.AgentAudioDone)
            and event.turn_id == reply_turn
            and not event.interrupted
            and at < played.onset + 0.25
        ):
            record.valid, record.note = False, "the reply ended as the overlap began"
    judged = max(played.end, verdict_at if math.isfinite(verdict_at) else played.end)
    last = played.onset
    gap = 0.0
    for at, event in log:
        if at < played.onset:
            continue
        if isinstance(event, frames.AgentAudioDone) and event.turn_id == reply_turn:
            if not event.interrupted:  # never stopped: it said all it had to say
                record.went_on, record.gap_ms = True, max(gap, at - last) * 1000
                break
        if not isinstance(event, AgentAudio):
            continue
        if user_turn is not None and event.turn_id == user_turn:
            record.answered = True
            continue
        gap = max(gap, at - last)
        last = at
        if at > judged:
            record.went_on, record.gap_ms = True, gap * 1000
            break
    # A reply to it: the agent spoke in the overlap's turn. (``thinking`` with its turn id is
    # not one: that is also the state while the overlap's words are being recognised.)
    record.answered = record.answered or any(
        isinstance(e, frames.State) and e.state == "speaking" and e.turn_id == user_turn
        for _, e in log
    )


async def _settle(session: VoiceClient, listener: Listener) -> None:
    """Stop the agent if it is still talking; return once the session is idle and quiet."""
    busy = ("speaking", "thinking")

    def calmer(_at: float, event: Event) -> bool:
        return isinstance(event, frames.State) and event.state not in busy

    with trio.move_on_after(_SETTLE_TIMEOUT_S):
        while True:
            if listener.state in busy:
                mark = listener.mark()
                await session.interrupt()
                with trio.move_on_after(_INTERRUPT_WAIT_S):
                    await listener.wait_for(calmer, mark)
            elif await listener.quiet_for(_QUIET_S) and listener.state == "idle":
                return
