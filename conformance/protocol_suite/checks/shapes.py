"""Every server text frame the run saw, against the field tables of §2.2."""

from __future__ import annotations

from ..capture import conversation
from ..context import SuiteContext
from ..invariants import frame_shapes
from ..outcome import Notes
from ..registry import check


@check(
    "frames.shape",
    "every server text frame seen in the run is a JSON object with its documented fields",
    "§2.2 server frames, protocol.schema.json",
)
async def shapes(ctx: SuiteContext, notes: Notes) -> None:
    if not any(ctx.recordings):
        await conversation(ctx)
    unknown: set[str] = set()
    count = 0
    for items in ctx.recordings:
        problems, kinds = frame_shapes(items)
        notes.violations_from(problems)
        unknown |= kinds
        count += sum(1 for i in items if not i.binary)
    notes.note(f"{count} text frames checked")
    if unknown:
        notes.note(f"unknown frame types (ignored, as clients must): {', '.join(sorted(unknown))}")
