"""Frame size limits (§6): frames over max_frame_bytes are dropped with an error; frames over
four times that close the connection with 1009."""

from __future__ import annotations

import json

from .. import spec
from ..context import SuiteContext
from ..outcome import Notes
from ..registry import check
from ._common import expect_error, states, survives


@check(
    "limits.frame_too_large",
    "frames over max_frame_bytes: error frame_too_large, dropped; over 4x: close 1009",
    "§6 flow control and limits, §7 frame_too_large, §8 1009",
)
async def frame_too_large(ctx: SuiteContext, notes: Notes) -> None:
    limit = ctx.options.max_frame_bytes
    timeout = ctx.options.frame_timeout_s
    async with ctx.session("frame-too-large") as live:
        mark = len(live.items)
        await live.conn.send_raw(b"\x10\x00" * (limit // 2 + 1))
        await expect_error(
            live.conn, "frame_too_large", f"a binary frame of {limit + 2} bytes", timeout, notes
        )
        padding = "x" * (limit + 16)
        await live.conn.send_raw(json.dumps({"type": "ping", "id": padding}))
        await expect_error(
            live.conn,
            "frame_too_large",
            f"a text frame of {limit + 40} bytes (a ping with a long id)",
            timeout,
            notes,
        )
        await survives(live.conn, "frames over max_frame_bytes", timeout, notes)
        await live.conn.read_for(0.3)
        if states(live.items[mark:]):
            notes.violation(
                f"a frame over the limit changed the state ({states(live.items[mark:])}); §6: "
                "it is dropped"
            )
        await live.end()
    async with ctx.session("frame-too-large-hard") as live:
        await live.conn.send_raw(b"\x10\x00" * (2 * limit + 1))
        if not await live.conn.until_closed(timeout * 2):
            notes.violation(f"a frame of {4 * limit + 2} bytes did not close the connection")
        elif live.conn.close_code != spec.CLOSE_CODES["too_big"]:
            notes.violation(
                f"a frame of {4 * limit + 2} bytes closed the connection with "
                f"{live.conn.close_code}, expected 1009 (§6, §8)"
            )
    notes.note(f"max_frame_bytes {limit} (--max-frame-bytes)")
