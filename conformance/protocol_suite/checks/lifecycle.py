"""Ending a session: session.end, and the idle timeout (§2.1, §6, §8)."""

from __future__ import annotations

import trio

from .. import spec
from ..context import SuiteContext
from ..outcome import Failed, Notes, Skipped
from ..registry import check


@check(
    "session.end",
    "session.end is answered by session.ended, the last frame, then close 1000",
    "§2.1 session.end, §4.1, §8 1000",
)
async def session_end(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("session-end") as live:
        conn = live.conn
        mark = len(conn.items)
        await conn.send({"type": "session.end"})
        closed = await conn.until_closed(ctx.options.frame_timeout_s * 2)
        after = [i for i in conn.items[mark:] if not i.binary]
        ended = [i for i in after if i.type == "session.ended"]
        if not ended:
            notes.violation(
                "session.end was not answered with session.ended; got "
                + (", ".join(i.describe() for i in after) or "nothing")
            )
        elif after[-1].type != "session.ended":
            notes.violation(
                f"frames after session.ended: {', '.join(i.describe() for i in after[after.index(ended[0]) + 1 :])} (§4.1)"
            )
        elif not isinstance(ended[0].get("reason"), str):
            notes.violation(f"session.ended has reason {ended[0].get('reason')!r}")
        if not closed:
            notes.violation("the server did not close the connection after session.ended")
        elif conn.close_code != spec.CLOSE_CODES["normal"]:
            notes.violation(
                f"closed with {conn.close_code}, expected 1000 after session.end (§2.1, §8)"
            )
        notes.note(f"reason {ended[0].get('reason')!r}" if ended else "no session.ended")


@check(
    "session.idle_timeout",
    "no client frame for idle_timeout_s: error idle_timeout, session.ended, close 4408 (optional)",
    "§6 limits, §7 idle_timeout, §8 4408",
)
async def idle_timeout(ctx: SuiteContext, notes: Notes) -> None:
    limit = ctx.options.idle_timeout_s
    if limit is None:
        raise Skipped("needs the server's idle_timeout_s (--idle-timeout SECONDS)")
    async with ctx.session("idle-timeout") as live:
        conn = live.conn
        start = trio.current_time()
        item = await conn.expect(
            "error idle_timeout",
            lambda i: i.type == "error",
            limit + 5 + ctx.options.frame_timeout_s,
        )
        elapsed = trio.current_time() - start
        notes.measure("elapsed_s", elapsed)
        if item.get("code") != "idle_timeout" or item.get("fatal") is not True:
            notes.violation(f"got {item.describe()}, expected a fatal error idle_timeout")
        if elapsed < limit - 1.0:
            notes.violation(f"the session timed out after {elapsed:.1f} s, before {limit:g} s")
        if not await conn.until_closed(ctx.options.frame_timeout_s):
            raise Failed("the server did not close the connection after idle_timeout")
        if conn.close_code != spec.CLOSE_CODES["timeout"]:
            notes.violation(f"closed with {conn.close_code}, expected 4408 (§8)")
        if not any(i.type == "session.ended" for i in conn.items):
            notes.violation("no session.ended after the fatal error (§2.2 error)")
