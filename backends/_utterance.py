"""The audio of one utterance, cut into pieces that Whisper decodes in one window each (sans-IO).

Whisper looks at 30 s at a time, and decoding cost grows with the audio it is given. So an
utterance longer than ``max_piece_s`` is *sealed* piece by piece: the cut goes at the quietest
20 ms frame of the last ``search_s`` seconds (a pause between words, as far as energy can tell),
and the rest starts the next piece. Each sealed piece is decoded once; interim results re-decode
only the open (last) piece. Nothing here blocks or awaits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scaivoice.engine import Word, pcm16_to_float

__all__ = ["Decoded", "Piece", "UtteranceBuffer"]

SAMPLE_RATE = 16000
_FRAME = SAMPLE_RATE // 50  # 20 ms


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one decode of one piece produced; times are relative to the utterance start."""

    text: str
    words: tuple[Word, ...] = ()
    language: str | None = None


@dataclass(slots=True)
class Piece:
    """A sealed stretch of the utterance, with its decode once done."""

    start: int
    pcm: bytes
    decoded: Decoded | None = field(default=None)

    @property
    def start_ms(self) -> int:
        return self.start * 1000 // SAMPLE_RATE

    def samples(self) -> npt.NDArray[np.float32]:
        """The piece as float32 samples in [-1, 1)."""
        return pcm16_to_float(self.pcm)


class UtteranceBuffer:
    """Collects 16 kHz PCM16 audio and seals it into pieces of at most ``max_piece_s``.

    Args:
        max_piece_s: longest piece handed to one decode (below Whisper's 30 s window).
        search_s: how far back from the limit to look for a quiet place to cut.
    """

    def __init__(self, *, max_piece_s: float, search_s: float = 3.0) -> None:
        self._max = max(int(max_piece_s * SAMPLE_RATE), _FRAME * 2)
        self._search = min(int(search_s * SAMPLE_RATE), self._max // 2)
        self._open = bytearray()
        self._open_start = 0
        self.sealed: list[Piece] = []

    @property
    def total_samples(self) -> int:
        """Samples received so far."""
        return self._open_start + len(self._open) // 2

    @property
    def total_ms(self) -> int:
        return self.total_samples * 1000 // SAMPLE_RATE

    def append(self, pcm: bytes) -> None:
        """Add 16 kHz PCM16LE audio (an even number of bytes); seal full pieces."""
        self._open += pcm
        while len(self._open) // 2 >= self._max:
            cut = self._quiet_cut()
            self.sealed.append(Piece(self._open_start, bytes(self._open[: cut * 2])))
            del self._open[: cut * 2]
            self._open_start += cut

    def open_piece(self) -> Piece:
        """A copy of the piece still growing (possibly empty)."""
        return Piece(self._open_start, bytes(self._open))

    def undecoded(self) -> list[Piece]:
        """Sealed pieces not decoded yet, oldest first."""
        return [piece for piece in self.sealed if piece.decoded is None]

    def _quiet_cut(self) -> int:
        """Sample index (within the open piece) of the quietest frame near the limit."""
        window = np.frombuffer(self._open, dtype="<i2")[self._max - self._search : self._max]
        frames = len(window) // _FRAME
        if frames == 0:
            return self._max
        energy = (window[: frames * _FRAME].astype(np.float32).reshape(frames, _FRAME) ** 2).mean(
            axis=1
        )
        # The last quietest frame: cutting late keeps pieces long.
        best = frames - 1 - int(np.argmin(energy[::-1]))
        return self._max - self._search + best * _FRAME + _FRAME // 2
