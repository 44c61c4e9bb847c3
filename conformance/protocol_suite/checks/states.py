"""State transitions beyond the reference conversation: no-ops when idle, wake-word mode, and
turns segmented by the client's ``vad`` frames."""

from __future__ import annotations

from ..context import SuiteContext
from ..outcome import Notes, Skipped
from ..registry import check
from ._common import shown, states

_QUIET_S = 0.5


@check(
    "state.idle_noops",
    "when idle: interrupt changes nothing; audio.commit and wake only warn",
    "§3.1 (interrupt with no reply, idle + audio.commit), §7 nothing_to_commit, wake_ignored",
)
async def idle_noops(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("idle-noops") as live:
        conn = live.conn
        mark = len(conn.items)
        await conn.send({"type": "interrupt"})
        after = [i for i in await conn.read_for(_QUIET_S) if not i.binary]
        if after:
            notes.violation(
                "interrupt when idle was answered with "
                + ", ".join(i.describe() for i in after)
                + " (§3.1: no-op, no frame)"
            )
        for frame_type, code in (("audio.commit", "nothing_to_commit"), ("wake", "wake_ignored")):
            await conn.send({"type": frame_type})
            got = await conn.read_for(_QUIET_S)
            codes = [i.get("code") for i in got if i.type == "warning"]
            if code not in codes:
                notes.violation(
                    f"{frame_type} when idle: expected warning {code}, got "
                    + (", ".join(i.describe() for i in got) or "nothing")
                )
            for item in got:
                if item.type not in ("warning",):
                    notes.violation(f"{frame_type} when idle was followed by {item.describe()}")
        seen = states(conn.items[mark:])
        if seen:
            notes.violation(f"the state changed while idle: {shown(seen)}")
        await live.end()


@check(
    "state.wake_word",
    "wake-word mode: audio opens no turn until a wake; asleep again after the reply",
    "§3.2 wake-word mode, §2.1 wake",
)
async def wake_word(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("wake-word", {"wake_word_enabled": True}) as live:
        conn = live.conn
        unavailable = live.warned("feature_unavailable", "wake_word_enabled") or live.warned(
            "feature_limited", "wake_word_enabled"
        )
        speech = ctx.fixture(live.input_rate)
        violations: list[str] = []
        mark = len(conn.items)
        await conn.send_audio(speech.pcm, speech.sample_rate)
        await conn.read_for(_QUIET_S)
        before = states(conn.items[mark:])
        if before:
            violations.append(f"audio before a wake changed the state: {shown(before)} (§3.2)")
        await conn.send({"type": "wake"})
        turn = await live.spoken_turn()
        seen = states(turn.frames)
        if not seen or seen[0][0] != "listening":
            violations.append(f"the wake did not open a user turn: {shown(seen)}")
        if turn.replied:
            mark = len(conn.items)
            await conn.send_audio(speech.pcm, speech.sample_rate)
            await conn.read_for(_QUIET_S)
            again = states(conn.items[mark:])
            if again:
                violations.append(
                    f"after the reply, audio changed the state: {shown(again)} (§3.2: the "
                    "session falls asleep when the reply completes)"
                )
        else:
            notes.note("the spoken turn got an empty transcript: falling asleep not checked")
        await live.end()
    if violations and unavailable:
        raise Skipped(
            "the server warned that wake_word_enabled is unavailable, and wake-word mode is not "
            "in effect: " + "; ".join(violations)
        )
    notes.violations_from(violations)
    if unavailable:
        notes.note("wake frames work although the server warned feature_unavailable")


@check(
    "state.client_vad",
    "vad frames segment user turns: speaking true -> listening, false -> thinking",
    "§2.1 vad, §3.1 (speech starts / stops)",
)
async def client_vad(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("client-vad") as live:
        turn = await live.spoken_turn(segmentation="vad")
        n = turn.turn_id
        seen = states(turn.frames)
        replied = bool(turn.final_text and turn.final_text.strip())
        expected = [("listening", n), ("thinking", n)] + ([("speaking", n)] if replied else [])
        if (
            seen[: len(expected)] != expected
            or len(seen) != len(expected) + 1
            or seen[-1][0] != "idle"
        ):
            notes.violation(
                f"states of a vad-segmented turn: {shown(seen)}; expected "
                f"{shown([*expected, ('idle', None)])}"
            )
        notes.note(f"states: {shown(seen)}")
        await live.end()
