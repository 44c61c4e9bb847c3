"""Sans-IO bookkeeping of agent audio: pacing, what the user has heard, and which text that was.

All times are in seconds of the caller's clock (``trio.current_time()`` in the shell, plain
numbers in tests); audio positions are in milliseconds of the turn's audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PlaybackModel", "heard_prefix"]


@dataclass(slots=True)
class _Segment:
    text: str
    start_ms: float
    end_ms: float


@dataclass(slots=True)
class PlaybackModel:
    """Models a client that plays agent audio as it arrives, at real-time speed.

    Args:
        lead_ms: how far ahead of real time audio may be sent.
    """

    lead_ms: float
    sent_ms: float = 0.0
    _play_start: float | None = None
    _play_end: float = 0.0
    _played_before_gap_ms: float = 0.0
    _reported_ms: float | None = None
    _segments: list[_Segment] = field(default_factory=list)

    # ---------------------------------------------------------------- pacing

    def send_at(self, now: float) -> float:
        """When the next chunk may be sent: ``now`` or later, keeping at most ``lead_ms`` ahead."""
        if self._play_start is None:
            return now
        return max(now, self._play_end - self.lead_ms / 1000.0)

    def sent(self, now: float, duration_ms: float) -> None:
        """Record a chunk of ``duration_ms`` handed to the socket at ``now``."""
        seconds = duration_ms / 1000.0
        if self._play_start is None or now > self._play_end:
            # Nothing queued at the client: playback (re)starts now.
            self._played_before_gap_ms = self.sent_ms
            self._play_start = now
            self._play_end = now + seconds
        else:
            self._play_end += seconds
        self.sent_ms += duration_ms

    # ---------------------------------------------------------------- what was heard

    def report_played(self, played_ms: float) -> None:
        """The client said it has played ``played_ms`` of this turn (``playback`` frame)."""
        self._reported_ms = max(self._reported_ms or 0.0, min(played_ms, self.sent_ms))

    def heard_ms(self, now: float) -> float:
        """Audio the user has heard by ``now``: the client's report if any, else the model."""
        if self._reported_ms is not None:
            return self._reported_ms
        if self._play_start is None:
            return 0.0
        playing = min(now, self._play_end) - self._play_start
        return min(self.sent_ms, self._played_before_gap_ms + max(0.0, playing) * 1000.0)

    def add_text(self, text: str, start_ms: float, end_ms: float) -> None:
        """``text`` is spoken by the turn's audio from ``start_ms`` to ``end_ms``."""
        self._segments.append(_Segment(text, start_ms, end_ms))

    def heard_text(self, heard_ms: float) -> str:
        """The agent text spoken within the first ``heard_ms`` of the turn's audio."""
        parts: list[str] = []
        for segment in self._segments:
            if heard_ms >= segment.end_ms:
                parts.append(segment.text)
            elif heard_ms > segment.start_ms:
                span = segment.end_ms - segment.start_ms
                fraction = (heard_ms - segment.start_ms) / span if span > 0 else 1.0
                parts.append(heard_prefix(segment.text, fraction))
                break
            else:
                break
        return "".join(parts).strip()


def heard_prefix(text: str, fraction: float) -> str:
    """The whole words of ``text`` spoken in its first ``fraction`` (by character position).

    A word counts as heard only when all of it fits in the fraction.
    """
    if fraction >= 1.0:
        return text
    if fraction <= 0.0:
        return ""
    cut = int(len(text) * fraction)
    head = text[:cut]
    if cut < len(text) and not text[cut].isspace():
        head = head.rsplit(" ", 1)[0] if " " in head.strip() else ""
    return head.rstrip()
