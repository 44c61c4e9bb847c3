"""The loudness of the VAD's frames, and the energy gate that spares the model quiet ones (sans-IO).

:func:`frame_levels` measures each 512-sample frame: its level and the levels of its four 8 ms
blocks, in dBFS (RMS relative to full scale; digital silence is :data:`SILENCE_DBFS`). The
segmenter dates the end of speech from the block levels; :class:`EnergyGate` decides from the
frame levels which frames the model need not score.

**The gate.** An idle session streams quiet room noise, and scoring it costs the model a call per
32 ms frame. A frame far below the speech level cannot be speech, so once a stream has been
quiet (every frame below ``level_dbfs``) for ``settle_frames`` frames in a row, the gate skips
the model until a louder frame comes; skipped frames count as silence (probability 0). The
frames scored first let the model's recurrent state settle on the quiet, and while frames are
skipped that state stays as it was (a fixed point for steady noise; resetting it instead makes
the first probabilities of the next speech worse). When a louder frame opens the gate, the
last skipped frame is scored before it (``preroll``, its probability unused), so the model
hears the lead-in of the speech as it would have. Measured on hibari's speech after 3 s of
digital silence or of white and pink noise at -58 dBFS: the probability first reaches 0.5 in
the same frame as without the gate, or one frame earlier.

The gate depends on the audio alone, so a stream is scored the same way whatever its chunking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["BLOCKS", "SILENCE_DBFS", "EnergyGate", "frame_levels"]

BLOCKS = 4
"""Blocks a frame's level is measured in (8 ms each for 512 samples at 16 kHz)."""
SILENCE_DBFS = -120.0
"""The level of digital silence (levels are never lower)."""

_FLOOR = 10.0 ** (SILENCE_DBFS / 10.0)


def frame_levels(pcm: bytes, frame: int) -> tuple[list[float], list[list[float]]]:
    """The levels of whole ``frame``-sample frames of PCM16 ``pcm``, in dBFS.

    Returns:
        ``(frames, blocks)``: each frame's level and those of its :data:`BLOCKS` blocks, oldest
        first (plain lists: a chunk holds a frame or two, too few for numpy to pay off beyond
        the sums of squares).
    """
    size = frame // BLOCKS
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32).reshape(-1, size)
    powers = np.einsum("ij,ij->i", samples, samples).tolist()
    scale = 1.0 / (size * 32768.0 * 32768.0)  # a block's sum of squares to its mean power
    levels: list[float] = []
    blocks: list[list[float]] = []
    for at in range(0, len(powers), BLOCKS):
        four = [p * scale for p in powers[at : at + BLOCKS]]
        blocks.append([10.0 * math.log10(max(p, _FLOOR)) for p in four])
        levels.append(10.0 * math.log10(max(sum(four) / BLOCKS, _FLOOR)))
    return levels, blocks


class EnergyGate:
    """Which frames the model scores: all but those of a long quiet stretch.

    Args:
        level_dbfs: frames below this level are quiet; ``None``: score every frame.
        settle_frames: quiet frames in a row that are still scored before skipping starts.
        preroll: skipped frames scored again (probabilities unused) when the gate opens.

    Raises:
        ValueError: a negative ``settle_frames`` or ``preroll``, or a ``preroll`` longer
            than ``settle_frames``.
    """

    def __init__(
        self, level_dbfs: float | None, *, settle_frames: int = 31, preroll: int = 1
    ) -> None:
        if settle_frames < 0 or not 0 <= preroll <= max(settle_frames, 0):
            raise ValueError("need 0 <= preroll <= settle_frames")
        self.level_dbfs = level_dbfs
        self.settle_frames = settle_frames
        self.preroll = preroll
        self._quiet = 0  # quiet frames in a row so far
        self._skipped = 0  # of them, skipped

    @property
    def skipping(self) -> bool:
        """Whether the last frame planned was skipped."""
        return self._skipped > 0

    def plan(self, levels: Sequence[float]) -> list[tuple[int, int, int]]:
        """Take the next frames' levels; return the runs of frames to score, in order.

        Each run is ``(first, stop, preroll)``: frame indices into ``levels`` (``stop``
        exclusive), of which the first ``preroll`` are pre-roll: frames skipped, scored only to
        lead the model into the frame that opened the gate. ``first`` is negative for a
        pre-roll that reaches into the frames of earlier calls (at most :attr:`preroll` back).
        Frames outside every run, and pre-roll frames, are silence.
        """
        if self.level_dbfs is None:
            return [(0, len(levels), 0)] if len(levels) else []
        threshold = self.level_dbfs
        runs: list[tuple[int, int, int]] = []
        for index, level in enumerate(levels):
            if level < threshold:
                self._quiet += 1
                if self._quiet > self.settle_frames:
                    self._skipped += 1
                    continue
            else:
                self._quiet = 0
            preroll = min(self._skipped, self.preroll)
            self._skipped = 0
            if not preroll and runs and runs[-1][1] == index:
                runs[-1] = (runs[-1][0], index + 1, runs[-1][2])
            else:
                runs.append((index - preroll, index + 1, preroll))
        return runs
