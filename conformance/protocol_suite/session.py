"""Driving a started session: open it, run typed and spoken turns to their end, end it.

Turn ids are learnt from the server (the first state of a new turn, or its final transcript),
never assumed. A turn has ended when its ``agent.text.done`` arrived and the reported state is
back to ``idle`` or ``listening`` (§3.1), whatever order those two came in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .fixtures import SpeechFixture
from .outcome import Failed
from .wire import Connection, Received

if TYPE_CHECKING:
    from .context import SuiteContext

__all__ = ["LiveSession", "Turn", "start_session"]

_SETTLE_S = 0.2


@dataclass(slots=True)
class Turn:
    """One turn as the suite saw it: ``items[start:end]`` of the session's stream."""

    turn_id: int
    start: int
    end: int = -1
    final_text: str | None = None
    """The final transcript (spoken turns)."""
    audio_ms: float = 0.0
    """User audio sent (spoken turns)."""
    replied: bool = False
    """An agent reply ran (``agent.text.done`` was seen)."""
    frames: list[Received] = field(default_factory=list)


def max_turn(items: Sequence[Received]) -> int:
    turns = [i.get("turn_id") for i in items if isinstance(i.get("turn_id"), int)]
    return max(turns, default=0)


async def start_session(
    ctx: SuiteContext, conn: Connection, config: Mapping[str, Any] | None = None
) -> LiveSession:
    """Send ``session.start`` and read ``session.started``, any warnings and ``state: idle``.

    Raises:
        Failed: the start was refused or answered out of order (§2.1).
    """
    doc: dict[str, Any] = {"type": "session.start", "protocol": 1}
    if config is not None:
        doc["config"] = dict(config)
    await conn.send(doc)
    timeout = ctx.options.frame_timeout_s
    first = await conn.expect("session.started", lambda i: True, timeout)
    if first.type == "error":
        code = first.get("code")
        hint = (
            " (give the suite credentials: --api-key, or a fresh --token)"
            if code in ("unauthorized", "token_expired", "token_used", "token_revoked", "forbidden")
            else ""
        )
        raise Failed(
            f"session.start{_shown(config)} was refused: {code}: {first.get('message')}{hint}"
        )
    if first.type != "session.started":
        raise Failed(f"the first frame after session.start is {first.describe()}")
    warnings: list[Mapping[str, Any]] = []
    while True:
        item = await conn.expect("state idle after session.started", lambda i: True, timeout)
        if item.type == "warning" and item.frame is not None:
            warnings.append(item.frame)
            continue
        if not item.is_state("idle"):
            raise Failed(
                f"session.started must be followed by warnings, then state idle (§2.1); got "
                f"{item.describe()}"
            )
        break
    assert first.frame is not None
    return LiveSession(ctx, conn, first.frame, warnings)


def _shown(config: Mapping[str, Any] | None) -> str:
    return f" with config {dict(config)}" if config else ""


class LiveSession:
    """A started session."""

    def __init__(
        self,
        ctx: SuiteContext,
        conn: Connection,
        started: Mapping[str, Any],
        warnings: list[Mapping[str, Any]],
    ) -> None:
        self.ctx = ctx
        self.conn = conn
        self.started = started
        self.warnings = warnings

    @property
    def items(self) -> list[Received]:
        return self.conn.items

    def _rate(self, direction: str, default: int) -> int:
        audio = self.started.get("audio")
        fmt = audio.get(direction) if isinstance(audio, dict) else None
        rate = fmt.get("sample_rate") if isinstance(fmt, dict) else None
        return rate if isinstance(rate, int) else default

    @property
    def input_rate(self) -> int:
        return self._rate("input", 16000)

    @property
    def output_rate(self) -> int:
        return self._rate("output", 24000)

    def warned(self, code: str, key: str) -> bool:
        """Whether a ``warning`` with ``code`` naming ``key`` came (at start or since)."""
        warnings = list(self.warnings) + [
            i.frame for i in self.items if i.type == "warning" and i.frame
        ]
        return any(w.get("code") == code and key in str(w.get("message", "")) for w in warnings)

    # ---------------------------------------------------------------- turns

    async def typed_turn(self, text: str, *, wait_end: bool = True) -> Turn:
        """Send a ``text`` user turn; learn its id from its first state; wait for its end."""
        start = len(self.items)
        before = max_turn(self.items)
        await self.conn.send({"type": "text", "text": text})
        first = await self.conn.expect(
            "the first state of the typed turn",
            lambda i: i.is_state() and _newer(i, before),
            self.ctx.options.response_timeout_s,
        )
        turn = Turn(first.get("turn_id"), start)
        if wait_end:
            await self.wait_turn_end(turn)
        return turn

    async def spoken_turn(
        self, fixture: SpeechFixture | None = None, *, segmentation: str = "commit"
    ) -> Turn:
        """Stream the utterance and end the turn with ``audio.commit`` (or ``vad`` frames, with
        ``segmentation="vad"``); wait for the final transcript and the reply, if any."""
        speech = fixture or self.ctx.fixture(self.input_rate)
        start = len(self.items)
        before = max_turn(self.items)
        if segmentation == "vad":
            await self.conn.send({"type": "vad", "speaking": True})
        await self.conn.send_audio(speech.pcm, speech.sample_rate)
        if segmentation == "vad":
            await self.conn.send({"type": "vad", "speaking": False})
        else:
            await self.conn.send({"type": "audio.commit"})
        final = await self.conn.expect(
            "the final transcript of the spoken turn",
            lambda i: i.type == "transcript" and i.get("final") is True and _newer(i, before),
            self.ctx.options.response_timeout_s,
        )
        text = final.get("text")
        turn = Turn(final.get("turn_id"), start, final_text=text if isinstance(text, str) else "")
        turn.audio_ms = speech.duration_ms
        if turn.final_text and turn.final_text.strip():
            await self.wait_turn_end(turn)
        else:
            await self.conn.expect(
                "state idle after an empty final transcript",
                lambda i: i.is_state("idle", "listening"),
                self.ctx.options.response_timeout_s,
            )
            await self._settle(turn)
        return turn

    async def wait_turn_end(self, turn: Turn) -> None:
        """Read until ``agent.text.done`` of the turn came and the state is idle / listening."""

        def ended(_: Received) -> bool:
            segment = self.items[turn.start :]
            done = any(
                i.type == "agent.text.done" and i.get("turn_id") == turn.turn_id for i in segment
            )
            states = [i for i in segment if i.is_state()]
            return done and bool(states) and states[-1].get("state") in ("idle", "listening")

        await self.conn.expect(
            f"the end of turn {turn.turn_id} (its agent.text.done, then state idle)",
            ended,
            self.ctx.options.response_timeout_s,
        )
        turn.replied = True
        await self._settle(turn)

    async def _settle(self, turn: Turn) -> None:
        await self.conn.until_quiet(_SETTLE_S, self.ctx.options.frame_timeout_s)
        turn.end = len(self.items)
        turn.frames = self.items[turn.start : turn.end]

    async def end(self) -> int | None:
        """``session.end``; read to the close; return the close code (None: not closed)."""
        await self.conn.send({"type": "session.end"})
        await self.conn.until_closed(self.ctx.options.frame_timeout_s * 2)
        return self.conn.close_code


def _newer(item: Received, before: int) -> bool:
    turn = item.get("turn_id")
    return isinstance(turn, int) and not isinstance(turn, bool) and turn > before
