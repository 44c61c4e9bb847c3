"""Speech probabilities per frame in, ``SpeechStarted`` / ``SpeechStopped`` out (sans-IO).

Two thresholds give hysteresis, two durations debounce:

- **start**: a run that begins at a frame with probability ``>= threshold`` and lasts
  ``min_speech_ms`` without a frame below ``neg_threshold`` starts speech, dated at the run's
  first frame. A cough or click shorter than ``min_speech_ms`` starts nothing.
- **stop**: while speaking, a run that begins at a frame below ``neg_threshold`` and lasts
  ``min_silence_ms`` (the hang time) without a frame at or above ``threshold`` stops speech,
  dated at the run's first frame (where the speech ended).

Frames between the two thresholds neither begin nor break a run. Frame ``i`` covers
``[i * frame_ms, (i + 1) * frame_ms)`` of the input audio.
"""

from __future__ import annotations

from collections.abc import Iterable

from scaivoice.engine import SpeechStarted, SpeechStopped

__all__ = ["SpeechSegmenter"]


class SpeechSegmenter:
    """Debounces per-frame speech probabilities into speech start / stop events.

    Args:
        threshold: probability at or above which a frame is speech.
        neg_threshold: probability below which a frame is silence; default
            ``threshold - 0.15`` (at least 0.01).
        min_speech_ms: how long speech must last before it counts.
        min_silence_ms: how long silence must last before speech stops (hang time).
        frame_ms: the duration of one frame (512 samples at 16 kHz: 32 ms).

    Raises:
        ValueError: thresholds out of order or out of [0, 1], or negative durations.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_ms: float = 250.0,
        min_silence_ms: float = 300.0,
        frame_ms: float = 32.0,
    ) -> None:
        low = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        if not 0.0 <= low <= threshold <= 1.0:
            raise ValueError(f"need 0 <= neg_threshold ({low}) <= threshold ({threshold}) <= 1")
        if min_speech_ms < 0 or min_silence_ms < 0 or frame_ms <= 0:
            raise ValueError("durations must not be negative, frame_ms must be positive")
        self.threshold = threshold
        self.neg_threshold = low
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms
        self.frame_ms = frame_ms
        self._frame = 0
        self._speaking = False
        self._run_start: int | None = None

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not stopped."""
        return self._speaking

    def push(self, probability: float) -> SpeechStarted | SpeechStopped | None:
        """Take the next frame's probability; return the event it completes, if any."""
        index = self._frame
        self._frame += 1
        if self._speaking:
            opens, breaks, needed = (
                probability < self.neg_threshold,
                probability >= self.threshold,
                self.min_silence_ms,
            )
        else:
            opens, breaks, needed = (
                probability >= self.threshold,
                probability < self.neg_threshold,
                self.min_speech_ms,
            )
        if breaks:
            self._run_start = None
            return None
        if self._run_start is None:
            if not opens:
                return None
            self._run_start = index
        if (self._frame - self._run_start) * self.frame_ms < needed:
            return None
        at_ms = round(self._run_start * self.frame_ms)
        self._run_start = None
        self._speaking = not self._speaking
        return SpeechStarted(at_ms) if self._speaking else SpeechStopped(at_ms)

    def push_many(self, probabilities: Iterable[float]) -> list[SpeechStarted | SpeechStopped]:
        """:meth:`push` each probability; return the events in order."""
        return [event for p in probabilities if (event := self.push(p)) is not None]
