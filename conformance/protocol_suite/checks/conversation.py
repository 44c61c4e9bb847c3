"""Checks judging the reference conversation (a typed turn, then a spoken turn ended by
``audio.commit``): states, transcripts, agent audio and the order of a turn's frames."""

from __future__ import annotations

from ..capture import Capture, conversation
from ..context import SuiteContext
from ..invariants import (
    audio_bracketing,
    speaking_before_audio,
    text_deltas,
    transcripts,
    words,
)
from ..outcome import Failed, Notes, Skipped
from ..registry import check
from ..session import Turn
from ._common import shown, states


def _incomplete(capture: Capture, notes: Notes) -> None:
    if capture.error is not None:
        notes.violation(f"the reference conversation did not complete: {capture.error}")


def _turn(capture: Capture, which: str) -> Turn:
    turn = capture.typed if which == "typed" else capture.spoken
    if turn is None:
        raise Failed(f"the reference conversation did not get to its {which} turn: {capture.error}")
    return turn


@check(
    "state.typed_turn",
    "a typed turn: thinking -> speaking -> idle, turn ids from 1",
    "§3 states, §3.1 transitions (idle + text -> thinking)",
)
async def typed_turn(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    turn = _turn(capture, "typed")
    n = turn.turn_id
    if n != 1:
        notes.violation(f"the first turn of the session has turn_id {n} (§3: ids start at 1)")
    seen = states(turn.frames)
    expected = [("thinking", n), ("speaking", n)]
    if seen[:2] != expected or len(seen) != 3 or seen[2][0] != "idle":
        notes.violation(
            f"states of the typed turn: {shown(seen)}; expected thinking({n}) -> speaking({n}) "
            "-> idle"
        )
    notes.note(f"states: {shown(seen)}")


@check(
    "state.spoken_turn",
    "a spoken turn ended by audio.commit: listening -> thinking -> (final) -> speaking -> idle",
    "§3.1 transitions (idle + audio, listening + audio.commit, thinking + final transcript)",
)
async def spoken_turn(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    turn = _turn(capture, "spoken")
    n = turn.turn_id
    typed = capture.typed.turn_id if capture.typed else 0
    if n <= typed:
        notes.violation(f"the spoken turn has turn_id {n}, not above the typed turn's {typed}")
    seen = states(turn.frames)
    replied = bool(turn.final_text and turn.final_text.strip())
    expected = [("listening", n), ("thinking", n)]
    expected += [("speaking", n)] if replied else []
    if seen[: len(expected)] != expected or len(seen) != len(expected) + 1 or seen[-1][0] != "idle":
        tail = f" -> speaking({n})" if replied else ""
        notes.violation(
            f"states of the spoken turn: {shown(seen)}; expected listening({n}) -> "
            f"thinking({n}){tail} -> idle"
        )
    order = [
        i
        for i in turn.frames
        if (i.is_state("thinking") and i.get("turn_id") == n)
        or (i.type == "transcript" and i.get("final") is True)
    ]
    if order and order[0].type == "transcript":
        notes.violation("the final transcript came before state thinking (§3.1: it follows)")
    notes.note(
        f"states: {shown(seen)}; final transcript {turn.final_text!r}"
        + ("" if replied else " (empty: no reply, as §3.1 allows)")
    )


@check(
    "transcript.ordering",
    "interim transcripts precede the single final one; nothing of the turn's transcript after it",
    "§2.2 transcript, §4.2",
)
async def transcript_ordering(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    notes.violations_from(transcripts(capture.items))
    turn = _turn(capture, "spoken")
    mine = [i for i in capture.items if i.type == "transcript" and i.get("turn_id") == turn.turn_id]
    finals = [i for i in mine if i.get("final") is True]
    if len(finals) != 1:
        notes.violation(f"the spoken turn has {len(finals)} final transcripts, expected 1 (§2.2)")
    others = [
        i for i in capture.items if i.type == "transcript" and i.get("turn_id") != turn.turn_id
    ]
    if others:
        notes.violation(
            f"transcripts for turns that were not spoken: {', '.join(i.describe() for i in others[:3])}"
        )
    for item in mine:
        end = item.get("end_ms")
        if isinstance(end, int) and end > turn.audio_ms + 1000:
            notes.violation(
                f"a transcript ends at {end} ms, but the turn had {turn.audio_ms:.0f} ms of audio "
                "(§2.2: times are relative to the start of the turn's audio)"
            )
    notes.note(f"{len(mine) - len(finals)} interim transcript(s) before the final one")
    _incomplete(capture, notes)


@check(
    "audio.bracketing",
    "agent audio only between agent.audio.start and .done of its turn; PCM16 at the output rate",
    "§2 binary frames, §2.2 agent.audio.*, §4.3",
)
async def bracketing(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    notes.violations_from(
        audio_bracketing(capture.items, output_rate=capture.output_rate, complete=capture.complete)
    )
    audio = sum(i.size for i in capture.items if i.binary)
    starts = sum(1 for i in capture.items if i.type == "agent.audio.start")
    if starts == 0:
        notes.note("the server sent no agent audio (a text-only server)")
    rate = capture.output_rate or 1
    notes.note(f"{starts} audio turn(s), {audio / 2 / rate:.2f} s of agent audio")
    _incomplete(capture, notes)


@check(
    "ordering.speaking_before_audio",
    "state speaking of a turn precedes its agent.audio.start",
    "§3.1 (thinking -> speaking), §4.4",
)
async def speaking_first(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    notes.violations_from(speaking_before_audio(capture.items))
    _incomplete(capture, notes)


@check(
    "ordering.text_deltas",
    "agent.text deltas precede agent.text.done, whose text is the deltas joined",
    "§2.2 agent.text, agent.text.done, §4.6",
)
async def deltas(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    notes.violations_from(text_deltas(capture.items))
    _incomplete(capture, notes)


@check(
    "turn.closing_frames",
    "each reply ends with one agent.text.done, one metrics, and agent.audio.done iff audio began",
    "§2.2 agent.text.done, agent.audio.done, metrics",
)
async def closing_frames(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    replied = [t for t in (capture.typed, capture.spoken) if t is not None and t.replied]
    if not replied:
        raise Failed(f"no turn of the reference conversation was answered: {capture.error}")
    for turn in replied:
        n = turn.turn_id
        mine = [i for i in capture.items if i.get("turn_id") == n]
        count = {
            kind: sum(1 for i in mine if i.type == kind)
            for kind in ("agent.text.done", "metrics", "agent.audio.start", "agent.audio.done")
        }
        if count["agent.text.done"] != 1:
            notes.violation(f"turn {n}: {count['agent.text.done']} agent.text.done frames")
        if count["metrics"] != 1:
            notes.violation(f"turn {n}: {count['metrics']} metrics frames (§2.2: sent once)")
        if count["agent.audio.done"] != count["agent.audio.start"]:
            notes.violation(
                f"turn {n}: {count['agent.audio.start']} agent.audio.start but "
                f"{count['agent.audio.done']} agent.audio.done"
            )
        for item in mine:
            if item.type in ("agent.text.done", "agent.audio.done") and item.get("interrupted"):
                notes.violation(f"turn {n} was not interrupted, but {item.type} says it was")
        done = [i for i in mine if i.type == "agent.text.done"]
        if done:
            notes.note(f"turn {n} reply: {str(done[0].get('text'))[:80]!r}")
    _incomplete(capture, notes)


@check(
    "content.transcript",
    "the final transcript of the spoken fixture contains its words (optional)",
    "§2.2 transcript",
)
async def content_transcript(ctx: SuiteContext, notes: Notes) -> None:
    if not ctx.options.content_checks:
        raise Skipped("content checks are off (--content-checks)")
    expected = ctx.fixture().text
    if not expected:
        raise Skipped(f"the speech fixture ({ctx.fixture_source}) has no known text")
    capture = await conversation(ctx)
    turn = _turn(capture, "spoken")
    got = words(turn.final_text or "")
    wanted = words(expected)
    found = [w for w in wanted if w in got]
    notes.note(f"said {expected!r}, transcribed {turn.final_text!r}")
    if len(found) * 2 < len(wanted):
        notes.violation(
            f"the final transcript {turn.final_text!r} has {len(found)} of the {len(wanted)} words "
            f"of {expected!r}"
        )
