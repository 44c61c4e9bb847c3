"""The reference conversation several checks judge: one session with a typed turn and a spoken
turn (ended by ``audio.commit``), then ``session.end``. Recorded once per run."""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import SuiteContext
from .outcome import Failed
from .session import Turn
from .wire import Received

__all__ = ["TYPED_TEXT", "Capture", "conversation"]

TYPED_TEXT = "Hello there."


@dataclass(slots=True)
class Capture:
    items: list[Received] = field(default_factory=list)
    output_rate: int | None = None
    typed: Turn | None = None
    spoken: Turn | None = None
    close_code: int | None = None
    error: str | None = None
    """Why the conversation could not be completed (the checks judging it then fail)."""

    @property
    def complete(self) -> bool:
        return self.error is None


async def conversation(ctx: SuiteContext) -> Capture:
    """The recorded reference conversation (run on first use)."""
    cached = ctx.cache.get("conversation")
    if isinstance(cached, Capture):
        return cached
    capture = Capture()
    ctx.cache["conversation"] = capture
    try:
        async with ctx.session("conversation") as live:
            capture.items = live.items
            capture.output_rate = live.output_rate
            capture.typed = await live.typed_turn(TYPED_TEXT)
            capture.spoken = await live.spoken_turn()
            capture.close_code = await live.end()
    except Failed as exc:
        capture.error = str(exc)
    return capture


def require(capture: Capture, what: str) -> None:
    """Fail when the conversation did not get far enough for ``what``."""
    if capture.error is not None:
        raise Failed(
            f"the reference conversation failed ({what} cannot be judged): {capture.error}"
        )
