"""Speech probabilities per frame in, ``SpeechStarted`` / ``SpeechStopped`` out (sans-IO).

Two thresholds give hysteresis, two durations debounce:

- **start**: a run that begins at a frame with probability ``>= threshold`` and lasts
  ``min_speech_ms`` without a frame below ``neg_threshold`` starts speech, dated at the run's
  first frame. A cough or click shorter than ``min_speech_ms`` starts nothing.
- **stop**: while speaking, a run that begins at a frame below ``neg_threshold`` and lasts
  ``min_silence_ms`` (the hang time) without a frame at or above ``threshold`` stops speech,
  dated where the speech ended.

**Pauses.** While speaking, a silence run that reaches ``pause_ms`` (shorter than the hang) is a
*pause*: ``SpeechPaused`` (dated where the speech ended) lets the session start its reply
speculatively; speech before the hang is over is ``SpeechResumed``. A silence run that lasts
the hang stops speech without a ``SpeechResumed``.

Frames between the two thresholds neither begin nor break a run. Frame ``i`` covers
``[i * frame_ms, (i + 1) * frame_ms)`` of the input audio.

**Where the speech ended.** The model's probability lags the audio: it falls below
``neg_threshold`` two to six 32 ms frames after the speech ends (later in noise), so a hang
counted from there made ``min_silence_ms = 300`` a wait of 380 ms after digital silence and
440-560 ms in room noise. Given the frames' block levels (:func:`._levels.frame_levels`), the
segmenter dates the end of speech by energy instead: when a silence run begins, it looks back
(up to :data:`LOOKBACK_FRAMES`) for the last block louder than both the noise and the speech's
tail, that is louder than ``max(noise + 6 dB, peak - 40 dB)``, where *noise* is a running
average of the loudest block of the frames the model called silence and *peak* the loudest
block of the speech. The silence run counts from the end of that block, and speech stops at the
frame boundary nearest to ``end + min_silence_ms`` (the frame that ends there is complete), so
the wait after the real end is ``min_silence_ms`` to half a frame. Without levels, or when no
block is loud enough, the run counts from its first frame (the model's own date). A hang
shorter than the model's lag stops speech as soon as the run begins.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from scaivoice.engine import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped

__all__ = ["LOOKBACK_FRAMES", "SegmenterEvent", "SpeechSegmenter"]

SegmenterEvent = SpeechStarted | SpeechStopped | SpeechPaused | SpeechResumed

LOOKBACK_FRAMES = 12
"""How far back (in frames) a silence run's start looks for the end of speech."""
_NOISE_MARGIN_DB = 6.0  # the speech's end stands this far above the noise ...
_TAIL_DB = 40.0  # ... and is at most this far below the speech's loudest block
_NOISE_SMOOTHING = 0.05  # per silent frame: a time constant of 20 frames (640 ms)


class SpeechSegmenter:
    """Debounces per-frame speech probabilities into speech start / stop events.

    Args:
        threshold: probability at or above which a frame is speech.
        neg_threshold: probability below which a frame is silence; default
            ``threshold - 0.15`` (at least 0.01).
        min_speech_ms: how long speech must last before it counts.
        min_silence_ms: how long silence must last before speech stops (hang time).
        pause_ms: silence after which a pause is reported (``SpeechPaused``); ``None`` or not
            shorter than the hang: no pause events.
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
        pause_ms: float | None = 100.0,
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
        self.pause_ms = pause_ms if pause_ms is not None and pause_ms < min_silence_ms else None
        self.frame_ms = frame_ms
        self._paused = False
        self._frame = 0
        self._speaking = False
        self._run_start: int | None = None  # start run: its first frame
        self._silence_from: float | None = None  # silence run: where the speech ended (ms)
        self._blocks: collections.deque[float] = collections.deque()  # recent block levels
        self._blocks_per_frame = 0
        self._noise: float | None = None
        self._peak = float("-inf")

    def forget_speech(self) -> None:
        """Forget the speech in progress (it stopped, or a wake word ended it): the next
        frames start afresh, as after silence. The noise floor is kept."""
        self._speaking = False
        self._paused = False
        self._run_start = None
        self._silence_from = None
        self._peak = float("-inf")

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not stopped."""
        return self._speaking

    def push(self, probability: float, levels: Sequence[float] = ()) -> SegmenterEvent | None:
        """Take the next frame's probability, and the levels of its blocks in dBFS (oldest
        first; all frames alike) to date the end of speech by; return the event it completes,
        if any."""
        index = self._frame
        self._frame += 1
        if levels:
            self._note_levels(probability, levels)
        if self._speaking:
            return self._push_speaking(index, probability)
        if probability < self.neg_threshold:
            self._run_start = None
            self._peak = float("-inf")
            return None
        if self._run_start is None:
            if probability < self.threshold:
                return None
            self._run_start = index
        if (self._frame - self._run_start) * self.frame_ms < self.min_speech_ms:
            return None
        at_ms = round(self._run_start * self.frame_ms)
        self._run_start = None
        self._speaking = True
        return SpeechStarted(at_ms)

    def _push_speaking(
        self, index: int, probability: float
    ) -> SpeechStopped | SpeechPaused | SpeechResumed | None:
        if probability >= self.threshold:
            self._silence_from = None
            if self._paused:
                self._paused = False
                return SpeechResumed(round(index * self.frame_ms))
            return None
        if self._silence_from is None:
            if probability >= self.neg_threshold:
                return None
            self._silence_from = self._end_of_speech(index)
        # Stop at the frame boundary nearest to end + hang: the wait is the hang to half a frame.
        quiet_ms = self._frame * self.frame_ms - self._silence_from
        if quiet_ms < self.min_silence_ms - self.frame_ms / 2:
            if self.pause_ms is not None and not self._paused and quiet_ms >= self.pause_ms:
                self._paused = True
                return SpeechPaused(round(self._silence_from))
            return None
        at_ms = round(self._silence_from)
        self.forget_speech()
        return SpeechStopped(at_ms)

    def _note_levels(self, probability: float, levels: Sequence[float]) -> None:
        count = len(levels)
        if count != self._blocks_per_frame:
            self._blocks = collections.deque(maxlen=count * LOOKBACK_FRAMES)
            self._blocks_per_frame = count
        self._blocks.extend(levels)
        loudest = max(levels)
        if probability < self.neg_threshold:
            noise = self._noise
            self._noise = loudest if noise is None else noise + _NOISE_SMOOTHING * (loudest - noise)
        elif probability >= self.threshold:
            self._peak = max(self._peak, loudest)

    def _end_of_speech(self, index: int) -> float:
        """Where the speech ended, for a silence run that begins at frame ``index`` (ms)."""
        if self._noise is None or not self._blocks:
            return index * self.frame_ms
        loud = max(self._noise + _NOISE_MARGIN_DB, self._peak - _TAIL_DB)
        # The last block is frame ``index``'s last: walk back to the last loud one.
        for back, level in enumerate(reversed(self._blocks)):
            if level > loud:
                return (index + 1) * self.frame_ms - back * self.frame_ms / self._blocks_per_frame
        return index * self.frame_ms

    def push_many(
        self, probabilities: Iterable[float], levels: Iterable[Sequence[float]] | None = None
    ) -> list[SegmenterEvent]:
        """:meth:`push` each probability (with its frame's block levels, when given); return
        the events in order."""
        if levels is None:
            return [event for p in probabilities if (event := self.push(p)) is not None]
        return [
            event
            for p, frame in zip(probabilities, levels, strict=True)
            if (event := self.push(p, frame)) is not None
        ]
