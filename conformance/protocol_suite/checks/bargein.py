"""Barge-in (§3.1, §4.5, §5): an explicit interrupt while speaking and while thinking, a newer
typed turn, client VAD speech, and the real-time pacing that makes barge-in effective."""

from __future__ import annotations

from dataclasses import dataclass

from ..context import SuiteContext
from ..invariants import (
    audio_bracketing,
    interrupted_turns,
    speaking_before_audio,
    text_deltas,
)
from ..outcome import Failed, Notes, Skipped
from ..registry import check
from ..session import LiveSession, Turn
from ..wire import Received
from ._common import LONG_TEXT, SHORT_TEXT, percentile, shown, states

_STRAGGLERS_S = 0.3
_PACING_SLACK_MS = 250.0


def _judge(live: LiveSession, notes: Notes) -> None:
    items = live.items
    notes.violations_from(interrupted_turns(items))
    notes.violations_from(audio_bracketing(items, output_rate=live.output_rate, complete=True))
    notes.violations_from(speaking_before_audio(items))
    notes.violations_from(text_deltas(items))


def _is_done(item: Received, turn: int) -> bool:
    return item.type == "agent.text.done" and item.get("turn_id") == turn


async def _first_output(live: LiveSession, turn: Turn) -> Received:
    """The first agent audio of ``turn`` (or its agent.text.done, for a reply without audio)."""
    return await live.conn.expect(
        f"the first agent audio of turn {turn.turn_id}",
        lambda i: i.binary or _is_done(i, turn.turn_id),
        live.ctx.options.response_timeout_s,
    )


async def _interrupted(live: LiveSession, turn: Turn) -> Received:
    """Read to ``state: interrupted`` of ``turn`` (or its uninterrupted end)."""
    return await live.conn.expect(
        f"state interrupted of turn {turn.turn_id}",
        lambda i: (
            (i.is_state("interrupted") and i.get("turn_id") == turn.turn_id)
            or (_is_done(i, turn.turn_id) and i.get("interrupted") is False)
        ),
        live.ctx.options.response_timeout_s,
    )


async def _next_state(live: LiveSession, after: Received) -> Received:
    """The first state frame after ``after`` (the last frame read so far)."""
    index = next(k for k in range(len(live.items) - 1, -1, -1) if live.items[k] is after)
    for item in live.items[index + 1 :]:
        if item.is_state():
            return item
    return await live.conn.expect(
        "the state following interrupted", lambda i: i.is_state(), live.ctx.options.frame_timeout_s
    )


def _last_audio_of(items: list[Received], turn: int) -> float | None:
    """Arrival time of the last binary frame belonging to ``turn``."""
    owner = None
    last = None
    for item in items:
        if item.type == "agent.audio.start":
            owner = item.get("turn_id")
        elif item.binary and owner == turn:
            last = item.t
    return last


@dataclass(slots=True)
class _Attempt:
    to_interrupted_ms: float | None = None
    to_last_audio_ms: float | None = None
    why_not: str | None = None


async def _attempt(live: LiveSession, notes: Notes) -> _Attempt:
    conn = live.conn
    start = len(conn.items)
    turn = await live.typed_turn(LONG_TEXT, wait_end=False)
    first = await _first_output(live, turn)
    if not first.binary:
        await live.wait_turn_end(turn)
        return _Attempt(why_not="the reply carried no audio")
    await conn.read_for(live.ctx.options.interrupt_after_ms / 1000.0)
    if any(_is_done(i, turn.turn_id) for i in conn.items[start:]):
        await live.wait_turn_end(turn)
        return _Attempt(why_not="the reply ended before the interrupt")
    sent = await conn.send({"type": "interrupt"})
    got = await _interrupted(live, turn)
    if not got.is_state():
        await live.wait_turn_end(turn)
        return _Attempt(why_not="the reply completed although interrupted while speaking")
    following = await _next_state(live, got)
    if not following.is_state("idle"):
        notes.violation(
            f"after interrupted({turn.turn_id}) came state {following.get('state')} (§3.1: then "
            "idle, no user turn being open)"
        )
    await conn.until_quiet(_STRAGGLERS_S, live.ctx.options.frame_timeout_s)
    last = _last_audio_of(conn.items[start:], turn.turn_id)
    return _Attempt(
        to_interrupted_ms=(got.t - sent) * 1000.0,
        to_last_audio_ms=max(0.0, (last - sent) * 1000.0) if last is not None else 0.0,
    )


@check(
    "bargein.interrupt",
    "interrupt while speaking: closing frames (interrupted: true), then state interrupted, then "
    "nothing of the turn; latency measured",
    "§3.1, §4.5, §5",
)
async def interrupt(ctx: SuiteContext, notes: Notes) -> None:
    attempts = max(1, ctx.options.bargein_attempts)
    to_state: list[float] = []
    to_audio: list[float] = []
    reasons: list[str] = []
    async with ctx.session("bargein") as live:
        for _ in range(attempts):
            result = await _attempt(live, notes)
            if result.why_not is not None:
                reasons.append(result.why_not)
                continue
            assert result.to_interrupted_ms is not None and result.to_last_audio_ms is not None
            to_state.append(result.to_interrupted_ms)
            to_audio.append(result.to_last_audio_ms)
        await live.end()
        _judge(live, notes)
    if not to_state:
        raise Failed(
            f"none of {attempts} replies could be interrupted while speaking: {'; '.join(reasons)}"
        )
    notes.measure("attempts", len(to_state))
    notes.measure("interrupt_to_interrupted_p50_ms", percentile(to_state, 0.5))
    notes.measure("interrupt_to_interrupted_max_ms", max(to_state))
    notes.measure("interrupt_to_last_audio_p50_ms", percentile(to_audio, 0.5))
    notes.measure("interrupt_to_last_audio_max_ms", max(to_audio))
    if reasons:
        notes.note(f"{len(reasons)} attempt(s) not measured: {'; '.join(sorted(set(reasons)))}")


@check(
    "bargein.during_thinking",
    "interrupt right after a typed turn (thinking): agent.text.done and metrics, then interrupted",
    "§3.1 (thinking + interrupt -> interrupted), §4.5",
)
async def during_thinking(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("bargein-thinking") as live:
        turn = await live.typed_turn(LONG_TEXT, wait_end=False)
        await live.conn.send({"type": "interrupt"})
        got = await _interrupted(live, turn)
        if not got.is_state():
            notes.violation(f"the reply to turn {turn.turn_id} completed although interrupted")
        else:
            following = await _next_state(live, got)
            if not following.is_state("idle"):
                notes.violation(f"after interrupted came state {following.get('state')}")
        await live.conn.until_quiet(_STRAGGLERS_S, ctx.options.frame_timeout_s)
        audio = any(i.type == "agent.audio.start" for i in live.items)
        notes.note("audio had started" if audio else "interrupted before any audio")
        await live.end()
        _judge(live, notes)


@check(
    "bargein.newer_turn",
    "a typed turn while the agent speaks interrupts the reply, then the newer turn is answered",
    "§3.1 (a newer user turn), §4.5",
)
async def newer_turn(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("bargein-newer") as live:
        turn = await live.typed_turn(LONG_TEXT, wait_end=False)
        first = await _first_output(live, turn)
        if not first.binary:
            raise Skipped("the reply carried no audio")
        newer = await live.typed_turn(SHORT_TEXT, wait_end=False)
        if newer.turn_id <= turn.turn_id:
            notes.violation(f"the newer turn has id {newer.turn_id}")
        answered = await live.conn.expect(
            f"the reply to the newer turn {newer.turn_id}",
            lambda i: (
                (i.is_state("speaking") and i.get("turn_id") == newer.turn_id)
                or _is_done(i, newer.turn_id)
            ),
            ctx.options.response_timeout_s,
        )
        if answered.is_state():
            # Answered: cut it short (a real model's reply may be long); judged like any other.
            await live.conn.send({"type": "interrupt"})
            await _interrupted(live, newer)
        await live.conn.until_quiet(_STRAGGLERS_S, ctx.options.response_timeout_s)
        mine = live.items[turn.start :]
        if not any(i.is_state("interrupted") and i.get("turn_id") == turn.turn_id for i in mine):
            notes.violation(f"turn {turn.turn_id} was not interrupted by the newer turn")
        notes.note(f"states: {shown(states(mine))}")
        await live.end()
        _judge(live, notes)


@check(
    "bargein.client_vad",
    "with vad_enabled, vad speaking:true while the agent speaks barges in; without it, it does not",
    "§2.1 vad, §2.3 vad_enabled, §3.1 (speech with vad_enabled; speaking + speech without barge-in)",
)
async def client_vad(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("bargein-vad", {"vad_enabled": True}) as live:
        unavailable = live.warned("feature_unavailable", "vad_enabled") or live.warned(
            "feature_limited", "vad_enabled"
        )
        turn = await live.typed_turn(LONG_TEXT, wait_end=False)
        first = await _first_output(live, turn)
        if not first.binary:
            raise Skipped("the reply carried no audio")
        await live.conn.send({"type": "vad", "speaking": True})
        got = await _interrupted(live, turn)
        if not got.is_state():
            if unavailable:
                raise Skipped(
                    "the server warned that vad_enabled is unavailable, and client vad frames "
                    "do not barge in"
                )
            notes.violation("vad speaking:true with vad_enabled did not interrupt the reply")
        else:
            if unavailable:
                notes.note("vad frames barge in although the server warned feature_unavailable")
            following = await _next_state(live, got)
            if not following.is_state("listening") or following.get("turn_id") == turn.turn_id:
                notes.violation(
                    f"after interrupted({turn.turn_id}) came {following.describe()}; §3.1: "
                    "listening, since the speech opened a user turn"
                )
        await live.conn.send({"type": "vad", "speaking": False})
        await live.conn.until_quiet(_STRAGGLERS_S * 2, ctx.options.response_timeout_s)
        await live.end()
        _judge(live, notes)
    async with ctx.session("no-bargein-vad") as live:
        turn = await live.typed_turn(SHORT_TEXT, wait_end=False)
        first = await _first_output(live, turn)
        if first.binary:
            await live.conn.send({"type": "vad", "speaking": True})
        await live.wait_turn_end(turn)
        mine = live.items[turn.start :]
        if any(i.is_state("interrupted") for i in mine):
            notes.violation("vad speaking:true without vad_enabled interrupted the reply (§3.1)")
        last_state = [i for i in mine if i.is_state()][-1]
        if first.binary and not last_state.is_state("listening"):
            notes.violation(
                f"after the reply the state is {last_state.get('state')}; §3.1: the user turn "
                "opened by the speech is listening"
            )
        await live.conn.send({"type": "vad", "speaking": False})
        await live.conn.until_quiet(_STRAGGLERS_S * 2, ctx.options.response_timeout_s)
        await live.end()
        _judge(live, notes)


@check(
    "pacing.realtime",
    "agent audio is paced to real time, at most audio_lead_ms ahead of playback",
    "§5 barge-in, pacing",
)
async def pacing(ctx: SuiteContext, notes: Notes) -> None:
    window_s = 2.5
    async with ctx.session("pacing") as live:
        turn = await live.typed_turn(LONG_TEXT, wait_end=False)
        first = await _first_output(live, turn)
        if not first.binary:
            raise Skipped("the reply carried no audio")
        await live.conn.read_for(window_s)
        rate = live.output_rate
        for item in live.items[turn.start :]:
            if item.type == "agent.audio.start" and isinstance(item.get("sample_rate"), int):
                rate = item.get("sample_rate")
        index = next(k for k, i in enumerate(live.items) if i is first)
        frames = [i for i in live.items[index:] if i.binary]
        received_ms = 0.0
        lead = 0.0
        largest = 0.0
        for item in frames:
            ms = item.size / 2 / rate * 1000.0
            received_ms += ms
            largest = max(largest, ms)
            lead = max(lead, received_ms - (item.t - first.t) * 1000.0)
        await live.conn.send({"type": "interrupt"})
        await live.conn.until_quiet(_STRAGGLERS_S, ctx.options.response_timeout_s)
        await live.end()
    elapsed_ms = (frames[-1].t - first.t) * 1000.0 if frames else 0.0
    notes.measure("max_lead_ms", lead)
    notes.measure("audio_received_ms", received_ms)
    notes.measure("window_ms", elapsed_ms)
    if received_ms < 1000.0:
        raise Skipped(f"the reply had only {received_ms:.0f} ms of audio: pacing not observable")
    # The lead is measured from the first frame's arrival: a first frame read late makes the
    # others look early, hence the slack beyond one frame. An unpaced server is seconds ahead.
    allowed = ctx.options.audio_lead_ms + largest + _PACING_SLACK_MS
    if lead > allowed:
        notes.violation(
            f"agent audio ran {lead:.0f} ms ahead of real-time playback; §5 allows audio_lead_ms "
            f"({ctx.options.audio_lead_ms:g} ms, --audio-lead-ms) plus one frame "
            f"(+{_PACING_SLACK_MS:g} ms slack for delivery jitter)"
        )
