"""The ordering guarantees of docs/protocol.md §4 and the frame shapes of §2.2, as pure
functions over a recorded stream of server frames. Each returns the violations it found, as
sentences naming the turn, the frame and the section broken."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import spec
from .wire import Received

__all__ = [
    "audio_bracketing",
    "frame_shapes",
    "interrupted_turns",
    "speaking_before_audio",
    "text_deltas",
    "tool_ordering",
    "transcripts",
    "words",
]


def words(text: str) -> list[str]:
    """Lower-case words without punctuation (for comparing texts loosely)."""
    return re.findall(r"[\w']+", text.lower())


def transcripts(items: Sequence[Received]) -> list[str]:
    """§4.2: interim results precede the turn's final one; nothing of the turn's transcript
    follows the final. Also §2.2: 0 <= start_ms <= end_ms."""
    out: list[str] = []
    finals: set[Any] = set()
    for item in items:
        if item.type != "transcript":
            continue
        turn = item.get("turn_id")
        kind = "final" if item.get("final") is True else "interim"
        if turn in finals:
            out.append(
                f"a{'nother' if kind == 'final' else 'n'} {kind} transcript of turn {turn} after "
                f"its final transcript (§4.2: exactly one final, nothing after it): "
                f"{item.describe()}"
            )
        if kind == "final":
            finals.add(turn)
        start, end = item.get("start_ms"), item.get("end_ms")
        if isinstance(start, int) and isinstance(end, int) and not 0 <= start <= end:
            out.append(f"transcript of turn {turn} has start_ms {start} > end_ms {end} or < 0")
    return out


def audio_bracketing(
    items: Sequence[Received], *, output_rate: int | None, complete: bool
) -> list[str]:
    """§2 / §4.3: binary audio only between ``agent.audio.start`` and ``agent.audio.done`` of the
    same turn, never interleaving turns; PCM16 (an even number of bytes) at the announced rate,
    which is the session's output rate; ``duration_ms`` matching the audio sent.

    ``complete``: the stream ran to the end of its turns (an open audio turn is a violation).
    """
    out: list[str] = []
    open_turn: Any = None
    rate = 0
    sent = 0
    started: set[Any] = set()
    stray = odd = 0
    for item in items:
        kind = item.type
        if kind == "binary":
            if open_turn is None:
                stray += 1
            if item.size % 2:
                odd += 1
            sent += item.size
        elif kind == "agent.audio.start":
            turn = item.get("turn_id")
            if open_turn is not None:
                out.append(
                    f"agent.audio.start of turn {turn} while the audio of turn {open_turn} is "
                    f"still open: agent.audio.done of turn {open_turn} was never sent (§4.3)"
                )
            if turn in started:
                out.append(f"a second agent.audio.start for turn {turn}")
            started.add(turn)
            announced = item.get("sample_rate")
            if output_rate is not None and announced != output_rate:
                out.append(
                    f"agent.audio.start of turn {turn} announces sample_rate {announced}, but the "
                    f"session's output rate is {output_rate} (§2.3 output_sample_rate)"
                )
            if item.get("format") != spec.PCM_ENCODING:
                out.append(f"agent.audio.start of turn {turn} has format {item.get('format')!r}")
            open_turn, rate, sent = turn, announced if isinstance(announced, int) else 0, 0
        elif kind == "agent.audio.done":
            turn = item.get("turn_id")
            if open_turn != turn:
                out.append(
                    f"agent.audio.done of turn {turn} without a matching agent.audio.start "
                    f"(audio open for turn {open_turn}) (§4.3)"
                )
                continue
            duration = item.get("duration_ms")
            if rate > 0 and isinstance(duration, int | float):
                actual = sent / 2 / rate * 1000.0
                if abs(duration - actual) > max(60.0, actual * 0.05):
                    out.append(
                        f"agent.audio.done of turn {turn} says duration_ms {duration}, but "
                        f"{actual:.0f} ms of audio were sent"
                    )
            open_turn = None
    if stray:
        out.append(f"{stray} binary frame(s) outside agent.audio.start / agent.audio.done (§4.3)")
    if odd:
        out.append(f"{odd} binary frame(s) with an odd number of bytes: not PCM16 (§2)")
    if complete and open_turn is not None:
        out.append(
            f"agent.audio.done of turn {open_turn} never sent: its audio was still open when "
            "the turn ended (§4.3)"
        )
    return out


def speaking_before_audio(items: Sequence[Received]) -> list[str]:
    """§4.4: ``state: speaking`` of a turn precedes its ``agent.audio.start``."""
    out: list[str] = []
    speaking: set[Any] = set()
    for item in items:
        if item.is_state("speaking"):
            speaking.add(item.get("turn_id"))
        elif item.type == "agent.audio.start" and item.get("turn_id") not in speaking:
            out.append(
                f"agent.audio.start of turn {item.get('turn_id')} before state speaking of that "
                "turn (§4.4)"
            )
    return out


def interrupted_turns(items: Sequence[Received]) -> list[str]:
    """§3 / §4.5: ``state: interrupted`` is sent once per cut-off turn, after its
    ``agent.audio.done`` (if audio started), ``agent.text.done`` and ``metrics`` (all marked
    ``interrupted: true``); nothing of that turn follows it, not one audio byte."""
    out: list[str] = []
    interrupted: set[Any] = set()
    audio_turn: Any = None
    last_started: Any = None
    started: set[Any] = set()
    closing: dict[Any, dict[str, Mapping[str, Any]]] = {}
    late_audio: dict[Any, int] = {}
    for item in items:
        kind = item.type
        if kind == "binary":
            # Audio outside any start/done pair belongs, if to anything, to the last turn whose
            # audio started.
            owner = audio_turn if audio_turn is not None else last_started
            if owner is not None and owner in interrupted:
                late_audio[owner] = late_audio.get(owner, 0) + item.size
            continue
        turn = item.get("turn_id")
        if kind in spec.TURN_FRAMES:
            if turn in interrupted:
                out.append(f"{kind} of turn {turn} after its state interrupted (§4.5)")
            if kind == "agent.audio.start":
                audio_turn = last_started = turn
                started.add(turn)
            elif kind == "agent.audio.done" and audio_turn == turn:
                audio_turn = None
            if kind in ("agent.audio.done", "agent.text.done", "metrics") and item.frame:
                closing.setdefault(turn, {})[kind] = item.frame
        elif item.is_state("interrupted"):
            if turn is None:
                out.append("state interrupted without a turn_id")
                continue
            if turn in interrupted:
                out.append(f"state interrupted of turn {turn} sent twice (§3: sent once)")
            got = closing.get(turn, {})
            needed = ["agent.text.done", "metrics"]
            if turn in started:
                needed.insert(0, "agent.audio.done")
            for frame_type in needed:
                if frame_type not in got:
                    out.append(f"state interrupted of turn {turn} before its {frame_type} (§4.5)")
                elif frame_type != "metrics" and got[frame_type].get("interrupted") is not True:
                    out.append(
                        f"{frame_type} of interrupted turn {turn} has interrupted: "
                        f"{got[frame_type].get('interrupted')!r} (§2.2)"
                    )
            interrupted.add(turn)
        elif item.is_state("thinking", "speaking") and turn in interrupted:
            out.append(f"state {item.get('state')} of turn {turn} after its state interrupted")
    for turn, size in late_audio.items():
        out.append(
            f"{size} byte(s) of agent audio of turn {turn} after its state interrupted (§4.5: "
            "no audio byte follows it)"
        )
    return out


def text_deltas(items: Sequence[Received]) -> list[str]:
    """§4.6: ``agent.text`` deltas of a turn precede its single ``agent.text.done``, whose
    ``text`` is everything generated (the deltas joined) and whose ``heard_text`` of an
    interrupted turn is a prefix of it in whole words (§2.2)."""
    out: list[str] = []
    deltas: dict[Any, list[str]] = {}
    done: set[Any] = set()
    for item in items:
        turn = item.get("turn_id")
        if item.type == "agent.text":
            if turn in done:
                out.append(f"agent.text of turn {turn} after its agent.text.done (§4.6)")
            delta = item.get("delta")
            deltas.setdefault(turn, []).append(delta if isinstance(delta, str) else "")
        elif item.type == "agent.text.done":
            if turn in done:
                out.append(f"a second agent.text.done for turn {turn}")
            done.add(turn)
            text = item.get("text")
            heard = item.get("heard_text")
            if not isinstance(text, str) or not isinstance(heard, str):
                continue
            joined = "".join(deltas.get(turn, []))
            if item.get("interrupted") is not True and words(joined) != words(text):
                out.append(
                    f"agent.text.done of turn {turn} has text {text[:80]!r}, but its deltas "
                    f"joined are {joined[:80]!r} (§2.2: text is everything generated)"
                )
            if item.get("interrupted") is True and words(heard) != words(text)[: len(words(heard))]:
                out.append(
                    f"heard_text {heard[:80]!r} of interrupted turn {turn} is not a prefix of its "
                    f"text {text[:80]!r} (§2.2)"
                )
    return out


def tool_ordering(
    items: Sequence[Received], answered: Mapping[str, float] | None = None
) -> list[str]:
    """§4.7 (with §2.2 and §5.1): a turn's ``tool.call`` frames come after its
    ``state: thinking`` and before its ``agent.text.done`` (so never after its
    ``state: interrupted``); a call is never sent twice; ``tool.cancel`` names a call that was
    sent, once, and an ``interrupted`` cancel comes before its turn's ``state: interrupted``;
    when a turn is interrupted, every call still waiting got its ``tool.cancel`` before the
    ``state: interrupted``.

    Args:
        items: the recorded stream.
        answered: ``call_id`` -> when the client sent its ``tool.result`` (``trio`` time, as
            :attr:`Received.t`); a call answered before ``state: interrupted`` arrived was no
            longer waiting, so it needs no cancel.
    """
    sent = answered or {}
    out: list[str] = []
    thinking: set[Any] = set()
    done: set[Any] = set()
    interrupted: set[Any] = set()
    calls: dict[Any, Any] = {}  # call_id -> turn_id
    cancelled: set[Any] = set()
    for item in items:
        kind = item.type
        turn = item.get("turn_id")
        if item.is_state("thinking"):
            thinking.add(turn)
        elif kind == "agent.text.done":
            done.add(turn)
        elif kind == "tool.call":
            call_id = item.get("call_id")
            if turn not in thinking:
                out.append(f"tool.call {call_id!r} of turn {turn} before its state thinking (§4.7)")
            if turn in interrupted:
                out.append(
                    f"tool.call {call_id!r} of turn {turn} after its state interrupted (§4.5, §4.7)"
                )
            elif turn in done:
                out.append(f"tool.call {call_id!r} of turn {turn} after its agent.text.done (§4.7)")
            if call_id in calls:
                out.append(f"tool.call {call_id!r} sent twice (§4.7: a call is never sent twice)")
            calls[call_id] = turn
        elif kind == "tool.cancel":
            call_id = item.get("call_id")
            if call_id not in calls:
                out.append(f"tool.cancel for {call_id!r}, a call never sent: {item.describe()}")
                continue
            if call_id in cancelled:
                out.append(f"a second tool.cancel for call {call_id!r}")
            cancelled.add(call_id)
            if item.get("reason") == "interrupted" and calls[call_id] in interrupted:
                out.append(
                    f"tool.cancel of call {call_id!r} after state interrupted of turn "
                    f"{calls[call_id]} (§4.7: before it)"
                )
        elif item.is_state("interrupted") and turn is not None:
            interrupted.add(turn)
            for call_id, call_turn in calls.items():
                answered_at = sent.get(call_id)
                waiting = call_id not in cancelled and (answered_at is None or answered_at > item.t)
                if call_turn == turn and waiting:
                    out.append(
                        f"call {call_id!r} of turn {turn} was still waiting, but no tool.cancel "
                        "came before its state interrupted (§4.7, §5.1)"
                    )
    return out


def _kind_ok(value: Any, kind: str) -> bool:
    for alternative in kind.rstrip("?").split("|"):
        if alternative == "string" and isinstance(value, str):
            return True
        if alternative == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if (
            alternative == "number"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            return True
        if alternative == "boolean" and isinstance(value, bool):
            return True
        if alternative == "object" and isinstance(value, dict):
            return True
        if alternative == "null" and value is None:
            return True
        if alternative == "state" and value in spec.STATES:
            return True
        if alternative == spec.PCM_ENCODING and value == spec.PCM_ENCODING:
            return True
        if alternative == "tool_cancel_reason" and value in spec.TOOL_CANCEL_REASONS:
            return True
    return False


def audio_format_problems(audio: Any) -> list[str]:
    """§2.2 session.started ``audio``: ``{input, output}`` of ``{encoding, sample_rate,
    channels: 1}``."""
    if not isinstance(audio, dict):
        return ["session.started audio is not an object"]
    out: list[str] = []
    low, high = spec.SAMPLE_RATE_RANGE
    for direction in ("input", "output"):
        fmt = audio.get(direction)
        if not isinstance(fmt, dict):
            out.append(f"session.started audio.{direction} is missing")
            continue
        if fmt.get("encoding") != spec.PCM_ENCODING:
            out.append(f"audio.{direction}.encoding is {fmt.get('encoding')!r}")
        rate = fmt.get("sample_rate")
        if not isinstance(rate, int) or isinstance(rate, bool) or not low <= rate <= high:
            out.append(f"audio.{direction}.sample_rate is {rate!r}")
        if fmt.get("channels") != 1:
            out.append(f"audio.{direction}.channels is {fmt.get('channels')!r}")
    return out


def frame_shapes(items: Sequence[Received]) -> tuple[list[str], set[str]]:
    """§2.2: every known server frame carries its fields with the documented types; text frames
    are JSON objects with a ``type``; ``expression_hint`` is never sent. Returns the violations
    and the unknown frame types seen (allowed: clients ignore them)."""
    out: list[str] = []
    unknown: set[str] = set()
    for item in items:
        if item.binary:
            continue
        if item.frame is None:
            out.append(f"a text frame that is not a JSON object: {item.describe()}")
            continue
        kind = item.type
        fields = spec.SERVER_FIELDS.get(kind)
        if fields is None:
            unknown.add(kind)
            continue
        if kind == "expression_hint":
            out.append("expression_hint is reserved: v1 servers never send it (§2.2)")
        for name, field_kind in fields.items():
            if name not in item.frame:
                if not field_kind.endswith("?"):
                    out.append(f"{kind} without its {name!r} field: {item.describe()}")
                continue
            if not _kind_ok(item.frame[name], field_kind):
                out.append(
                    f"{kind}.{name} is {item.frame[name]!r}, expected {field_kind.rstrip('?')}"
                )
        if kind == "session.started":
            out.extend(audio_format_problems(item.get("audio")))
            out.extend(capabilities_problems(item.get("capabilities")))
        if kind == "transcript":
            out.extend(speaker_problems(item.frame))
    return out, unknown


def capabilities_problems(capabilities: Any) -> list[str]:
    """§2.2 session.started ``capabilities`` (optional): ``features``, ``wake_words`` and
    ``tools`` are lists of strings."""
    if capabilities is None:
        return []
    if not isinstance(capabilities, dict):
        return ["session.started capabilities is not an object"]
    out: list[str] = []
    for key in ("features", "wake_words", "tools"):
        value = capabilities.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            out.append(f"session.started capabilities.{key} is {value!r}, expected strings")
    return out


def speaker_problems(frame: Mapping[str, Any]) -> list[str]:
    """§2.2 transcript speaker keys: ``speaker_id`` / ``speaker_score`` only on finals, a score
    within 0..1."""
    out: list[str] = []
    if not frame.get("final") and ("speaker_id" in frame or "speaker_score" in frame):
        out.append(f"an interim transcript carries speaker_id/speaker_score: {frame}")
    score = frame.get("speaker_score")
    if isinstance(score, int | float) and not 0.0 <= score <= 1.0:
        out.append(f"transcript speaker_score {score!r} is outside 0..1")
    return out
