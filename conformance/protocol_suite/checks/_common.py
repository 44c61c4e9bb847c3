"""Helpers shared by the check modules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import spec
from ..outcome import Failed, Notes
from ..wire import Connection, Received

if TYPE_CHECKING:
    from ..context import SuiteContext
    from ..session import LiveSession

# A prompt whose reply takes seconds to speak with any model: the echo of a test model, or a
# story from a real one.
LONG_TEXT = (
    "Please tell me a long story about a brave little dragon who learns to fly over the high "
    "mountains, the deep forests and the wide blue sea."
)
SHORT_TEXT = "Hello there."


def states(frames: Iterable[Received]) -> list[tuple[str, object]]:
    """``(state, turn_id)`` of the state frames, consecutive repeats collapsed."""
    out: list[tuple[str, object]] = []
    for item in frames:
        if item.is_state():
            entry = (str(item.get("state")), item.get("turn_id"))
            if not out or out[-1] != entry:
                out.append(entry)
    return out


def features(live: LiveSession) -> list[str]:
    """``capabilities.features`` of the session's ``session.started`` (§2.2; empty if absent)."""
    capabilities = live.started.get("capabilities")
    if not isinstance(capabilities, Mapping):
        return []
    listed = capabilities.get("features")
    return [f for f in listed if isinstance(f, str)] if isinstance(listed, list) else []


def shown(sequence: Sequence[tuple[str, object]]) -> str:
    return " -> ".join(f"{s}({t})" if t is not None else s for s, t in sequence) or "no state"


async def expect_error(
    conn: Connection,
    codes: str | tuple[str, ...],
    what: str,
    timeout: float,
    notes: Notes,
    *,
    fatal: bool = False,
) -> Received | None:
    """Wait for the ``error`` answering ``what``; record a violation unless its code is one of
    ``codes`` and its ``fatal`` flag is ``fatal``."""
    wanted = (codes,) if isinstance(codes, str) else codes
    label = " or ".join(wanted)
    try:
        item = await conn.expect(
            f"error {label} for {what}",
            lambda i: i.type in ("error", "session.started", "session.updated", "pong"),
            timeout,
        )
    except Failed as exc:
        notes.violation(f"{what}: {exc}")
        return None
    if item.type != "error":
        notes.violation(f"{what} was answered with {item.describe()}, expected error {label}")
    elif item.get("code") not in wanted:
        notes.violation(
            f"{what} was answered with error {item.get('code')!r}, expected {label} (§7)"
        )
    elif item.get("fatal") is not fatal:
        notes.violation(
            f"error {item.get('code')} for {what} has fatal: {item.get('fatal')!r}, expected "
            f"{str(fatal).lower()}"
        )
    return item


async def survives(conn: Connection, what: str, timeout: float, notes: Notes) -> None:
    """The session still answers a ``ping`` after ``what``."""
    await conn.send({"type": "ping", "id": "conformance-alive"})
    try:
        await conn.expect(
            "pong",
            lambda i: i.type == "pong",
            timeout,
        )
    except Failed as exc:
        notes.violation(f"the session did not survive {what}: {exc}")


async def refused_start(
    ctx: SuiteContext,
    conn: Connection,
    config: Mapping[str, Any],
    codes: tuple[str, ...],
    notes: Notes,
) -> None:
    """``session.start`` with ``config`` is refused with one of ``codes`` (not fatal), and the
    connection stays open for another start (§7)."""
    what = f"session.start with config {_short(config)}"
    await conn.send({"type": "session.start", "protocol": spec.PROTOCOL_VERSION, "config": config})
    item = await expect_error(conn, codes, what, ctx.options.frame_timeout_s, notes)
    if item is not None and item.type == "session.started":
        raise Failed(f"{what} was accepted; §7: the start is refused ({' or '.join(codes)})")
    if conn.closed:
        raise Failed(f"the server closed the connection after {what}; §7: send it again")


async def refused_update(
    live: LiveSession, config: Mapping[str, Any], codes: tuple[str, ...], notes: Notes
) -> None:
    """``session.update`` with ``config`` is refused with one of ``codes`` (not fatal): no
    ``session.updated``, and the session still answers a ping."""
    what = f"session.update with config {_short(config)}"
    await live.conn.send({"type": "session.update", "config": config})
    item = await expect_error(live.conn, codes, what, live.ctx.options.frame_timeout_s, notes)
    if item is not None and item.type == "session.updated":
        notes.violation(f"{what} was applied (session.updated)")
    await survives(live.conn, what, live.ctx.options.frame_timeout_s, notes)


def _short(config: Mapping[str, Any], limit: int = 200) -> str:
    text = str(dict(config))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
