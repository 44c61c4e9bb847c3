"""Who is speaking: diarization labels and speaker identification in transcripts (§2.2, §2.3).

Each check runs only against a server that lists the feature in ``session.started``'s
``capabilities.features``; a server without it is skipped, not failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..context import SuiteContext
from ..outcome import Notes, Skipped
from ..registry import check
from ..session import LiveSession
from ._common import features


def _finals(live: LiveSession, start: int) -> list[Mapping[str, Any]]:
    return [
        i.frame
        for i in live.items[start:]
        if i.type == "transcript" and i.get("final") is True and i.frame is not None
    ]


@check(
    "speakers.diarize",
    "with diarize, the final transcript of a spoken turn carries a speaker label",
    "§2.2 transcript, §2.3 diarize",
)
async def diarize(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("speakers-diarize", {"diarize": True}) as live:
        if "diarize" not in features(live):
            raise Skipped("the server does not list diarize in capabilities.features")
        start = len(live.items)
        await live.spoken_turn()
        finals = _finals(live, start)
        if not finals:
            notes.violation("no final transcript for the spoken turn")
        for final in finals:
            label = final.get("speaker")
            if not (final.get("text") or "").strip():
                notes.note("the final transcript is empty: the label may be absent")
            elif not isinstance(label, str) or not label:
                notes.violation(f"a final transcript without a speaker label: {dict(final)}")
            if "speaker_id" in final or "speaker_score" in final:
                notes.violation("speaker_id / speaker_score without speaker_recognition")
        await live.end()


@check(
    "speakers.recognition_shape",
    "with speaker_recognition (where permitted), finals carry speaker_id (string or null)",
    "§2.2 transcript, §2.3 speaker_recognition",
)
async def recognition(ctx: SuiteContext, notes: Notes) -> None:
    async with ctx.session("speakers-recognition") as live:
        if "speaker_recognition" not in features(live):
            raise Skipped("the server does not list speaker_recognition in capabilities.features")
        await live.conn.send({"type": "session.update", "config": {"speaker_recognition": True}})
        answer = await live.conn.expect(
            "session.updated or an error",
            lambda i: i.type in ("session.updated", "error"),
            ctx.options.frame_timeout_s,
        )
        if answer.type == "error":
            if answer.get("code") == "not_permitted":
                raise Skipped("this tenant has not opted into speaker recognition (not_permitted)")
            notes.violation(f"speaker_recognition was refused: {answer.describe()}")
            return
        start = len(live.items)
        await live.spoken_turn()
        for final in _finals(live, start):
            if "speaker_id" not in final:
                notes.violation(f"a final transcript without speaker_id: {dict(final)}")
            score = final.get("speaker_score")
            if score is not None and not (isinstance(score, int | float) and 0 <= score <= 1):
                notes.violation(f"speaker_score {score!r} is not a number in 0..1")
        await live.end()
