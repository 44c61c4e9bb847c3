"""How user turns end: the ``turn_detection`` mode in use and its keys (§2.3, §3.3).

Structure checks only: which mode a server defaults to depends on what it has installed, so the
suite checks that the effective config names a mode the protocol defines, that the keys are
accepted and echoed, and that bad values are refused — not how long any pause lasts.
"""

from __future__ import annotations

from .. import spec
from ..context import SuiteContext
from ..outcome import Notes
from ..registry import check
from ._common import refused_update


@check(
    "turns.detection_shape",
    "session.started names the turn detection in use; manual and the turn keys are echoed",
    "§2.3 turn_detection, turn_eagerness, silence_ms; §3.3",
)
async def detection_shape(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("turns-shape") as live:
        config = live.started.get("config") or {}
        mode = config.get("turn_detection")
        if mode not in spec.TURN_DETECTION_MODES:
            notes.violation(
                f"session.started config.turn_detection is {mode!r}; §3.3: the mode in use, one "
                f"of {sorted(spec.TURN_DETECTION_MODES)}"
            )
        if config.get("turn_eagerness") not in spec.EAGERNESS:
            notes.violation(f"turn_eagerness {config.get('turn_eagerness')!r} is not a §2.3 value")
        wanted = {"turn_detection": "manual", "turn_eagerness": "high", "barge_in_min_words": 2}
        await live.conn.send({"type": "session.update", "config": wanted})
        answer = await live.conn.expect(
            "session.updated or an error",
            lambda i: i.type in ("session.updated", "error"),
            ctx.options.frame_timeout_s,
        )
        if answer.type == "error":
            notes.violation(f"valid turn keys were refused: {answer.describe()}")
        else:
            echoed = answer.get("config") or {}
            for key, value in wanted.items():
                if echoed.get(key) != value:
                    notes.violation(f"session.updated config has {key} {echoed.get(key)!r}")
        for bad in ({"turn_detection": "push_to_talk"}, {"turn_eagerness": "eager"}):
            await refused_update(live, bad, ("invalid_frame",), notes)
        await live.end()
