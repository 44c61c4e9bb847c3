"""Client input: typed text, ping / pong, and the error codes for bad frames (§2.1, §7)."""

from __future__ import annotations

import json

from .. import spec
from ..capture import conversation
from ..context import SuiteContext
from ..outcome import Failed, Notes
from ..registry import check
from ._common import expect_error, states, survives


@check(
    "input.typed_text",
    "a text frame is a whole user turn and gets a reply; text of 0 or 10001 chars is refused",
    "§2.1 text, §7 invalid_frame",
)
async def typed_text(ctx: SuiteContext, notes: Notes) -> None:
    capture = await conversation(ctx)
    if capture.typed is None or not capture.typed.replied:
        raise Failed(f"the typed turn of the reference conversation got no reply: {capture.error}")
    done = [
        i
        for i in capture.typed.frames
        if i.type == "agent.text.done" and i.get("turn_id") == capture.typed.turn_id
    ]
    if not done or not str(done[0].get("text") or "").strip():
        notes.violation("the reply to the typed turn has no text")
    if any(i.type == "transcript" for i in capture.typed.frames):
        notes.violation("a typed turn got a transcript")
    timeout = ctx.options.frame_timeout_s
    async with ctx.session("text-limits") as live:
        mark = len(live.items)
        for text, what in (
            ("", "a text frame with empty text"),
            ("a" * (spec.TEXT_MAX_CHARS + 1), f"a text frame of {spec.TEXT_MAX_CHARS + 1} chars"),
        ):
            await live.conn.send({"type": "text", "text": text})
            await expect_error(live.conn, "invalid_frame", what, timeout, notes)
        await survives(live.conn, "refused text frames", timeout, notes)
        if states(live.items[mark:]):
            notes.violation(f"a refused text frame changed the state: {states(live.items[mark:])}")
        await live.end()


@check(
    "ping.pong",
    "ping is answered with pong carrying the same id (string, integer, or none)",
    "§2.1 ping, §2.2 pong",
)
async def ping_pong(ctx: SuiteContext, notes: Notes) -> None:
    timeout = ctx.options.frame_timeout_s
    async with ctx.session("ping") as live:
        for ping_id in ("conformance-1", 42, None):
            doc: dict[str, object] = {"type": "ping"}
            if ping_id is not None:
                doc["id"] = ping_id
            await live.conn.send(doc)
            pong = await live.conn.expect("pong", lambda i: i.type == "pong", timeout)
            if pong.frame is None:
                continue
            got = pong.frame.get("id")
            if ping_id is None:
                if got is not None:
                    notes.violation(f"a ping without id was answered with pong id {got!r}")
            elif "id" not in pong.frame:
                notes.violation(f"ping id {ping_id!r} was answered with a pong without an id")
            elif got != ping_id or type(got) is not type(ping_id):
                notes.violation(f"ping id {ping_id!r} was answered with pong id {got!r}")
        await live.end()


_BAD_FRAMES: tuple[tuple[str | bytes, str, str], ...] = (
    ("{not json", "invalid_json", "a text frame that is not JSON"),
    (json.dumps({"type": "conformance.unknown"}), "unknown_type", "an unknown frame type"),
    (json.dumps({"type": "text", "text": 5}), "invalid_frame", "a text frame whose text is 5"),
    (json.dumps({"type": "interrupt", "conformance": 1}), "invalid_frame", "an unknown field"),
    (json.dumps([1, 2, 3]), "invalid_frame", "a JSON array"),
    (json.dumps({"text": "no type"}), "invalid_frame", "a frame without a type"),
    (b"\x00\x01\x02", "odd_audio_length", "a binary frame of 3 bytes"),
    (json.dumps({"type": "session.start", "protocol": 1}), "already_started", "a second start"),
)


@check(
    "errors.bad_input",
    "bad frames get invalid_json / unknown_type / invalid_frame / odd_audio_length / "
    "already_started; the session survives",
    "§2 (servers reject unknown types and fields), §7",
)
async def bad_input(ctx: SuiteContext, notes: Notes) -> None:
    timeout = ctx.options.frame_timeout_s
    async with ctx.session("bad-input") as live:
        mark = len(live.items)
        for message, code, what in _BAD_FRAMES:
            await live.conn.send_raw(message)
            codes: tuple[str, ...] = (code,)
            if what == "a frame without a type":
                codes = ("invalid_frame", "unknown_type")
            await expect_error(live.conn, codes, what, timeout, notes)
            if live.conn.closed:
                raise Failed(f"the server closed the session after {what}")
        await survives(live.conn, "bad frames", timeout, notes)
        await live.conn.read_for(0.3)
        changed = states(live.items[mark:])
        if changed:
            notes.violation(
                f"bad frames changed the state ({changed}); the odd-length audio frame must be "
                "dropped (§7)"
            )
        await live.end()
