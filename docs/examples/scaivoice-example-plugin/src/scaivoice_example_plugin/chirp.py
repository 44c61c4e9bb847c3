"""``example-chirp``: a TTS backend that "speaks" one rising chirp per word.

It understands nothing, but it follows the streaming TTS contract the way a real model
backend must, so it is a template to copy:

- the output channel is the backend's: ``async with audio:`` closes it on every path
  (done, error, cancelled);
- audio is produced in ``chunk_ms`` chunks (20-100 ms, 16 kHz PCM16LE); each chunk is computed in
  a worker thread (``trio.to_thread.run_sync``) under a ``trio.CapacityLimiter`` shared by all
  sessions, which is where a real backend runs its blocking model call;
- cancelling (barge-in, a deadline) takes effect at the next chunk: a chunk already in its
  thread finishes, nothing more is sent, the channel is closed, the backend stays usable;
- input it refuses (an unknown voice, too much text) raises ``BackendRejected``; use before
  ``open`` raises ``BackendUnavailable``.

Operator options (``[backends.options.example-chirp]``)::

    voice = "robin"      # default voice: "robin" (high) or "owl" (low)
    word_ms = 160        # one chirp, at speed 1.0
    gap_ms = 60          # silence after each chirp, at speed 1.0
    chunk_ms = 50        # audio per chunk (20-100)
    amplitude = 0.3      # peak level, 0-1
    render_threads = 2   # chunks rendered at once, across all sessions
    max_chars = 2000     # longer requests are rejected
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec
import numpy as np
import trio
from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendRejected,
    BackendUnavailable,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
    Voice,
)

__all__ = ["NAME", "SAMPLE_RATE", "ChirpTts"]

NAME: Final = "example-chirp"
SAMPLE_RATE: Final = 16000

# Chirps speak no language: "und" is BCP 47 for "undetermined".
_VOICES: Final = {
    "robin": (
        Voice("robin", "Robin", "und", SAMPLE_RATE, "a high chirp, 1.2-2.4 kHz"),
        (1200.0, 2400.0),
    ),
    "owl": (
        Voice("owl", "Owl", "und", SAMPLE_RATE, "a low chirp, 300-600 Hz"),
        (300.0, 600.0),
    ),
}


class ChirpTts(TtsBackend):
    """Speaks one rising chirp per word, streamed in short 16 kHz chunks."""

    class Options(BackendOptions, frozen=True):
        """Options of ``example-chirp`` (see the module docstring)."""

        voice: str = "robin"
        word_ms: Annotated[int, msgspec.Meta(ge=20, le=2000)] = 160
        gap_ms: Annotated[int, msgspec.Meta(ge=0, le=2000)] = 60
        chunk_ms: Annotated[int, msgspec.Meta(ge=20, le=100)] = 50
        amplitude: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.3
        render_threads: Annotated[int, msgspec.Meta(ge=1)] = 2
        max_chars: Annotated[int, msgspec.Meta(ge=1)] = 2000

        def __post_init__(self) -> None:
            if self.voice not in _VOICES:
                raise ValueError(f"voice: {self.voice!r} is not one of {sorted(_VOICES)}")

    # Declared honestly: it streams, has voices and honours `speed`; it takes no style
    # instructions, no guidance value and no warm-up trim, and it speaks only 16 kHz.
    capabilities = TtsCapabilities(
        streaming=True,
        voices=True,
        speed=True,
        sample_rates=(SAMPLE_RATE,),
    )

    def __init__(self, options: Options) -> None:
        self.options = options
        self._limiter: trio.CapacityLimiter | None = None

    async def open(self) -> None:
        """Get ready to synthesise. Cancelling abandons it.

        A real backend loads its model here, in a worker thread
        (``await trio.to_thread.run_sync(load, path)``), never in ``__init__``.
        """
        await trio.lowlevel.checkpoint()
        self._limiter = trio.CapacityLimiter(self.options.render_threads)

    async def aclose(self) -> None:
        """Forget the limiter. Idempotent."""
        self._limiter = None

    async def check_health(self) -> None:
        """Return when open.

        Raises:
            BackendUnavailable: the backend is not open.
        """
        await trio.lowlevel.checkpoint()
        if self._limiter is None:
            raise BackendUnavailable(f"the {NAME} backend is not open", backend=self.name)

    async def list_voices(self) -> Sequence[Voice]:
        """The two voices, ``robin`` and ``owl``."""
        await trio.lowlevel.checkpoint()
        return tuple(voice for voice, _ in _VOICES.values())

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        """Send one chirp per word of ``request.text`` into ``audio`` in short chunks; close it.

        Cancelling stops at the next chunk boundary (a chunk being rendered in a worker thread
        is finished first, then dropped), sends nothing more and closes ``audio``. The backend
        stays usable.

        Raises:
            BackendUnavailable: the backend is not open.
            BackendRejected: an unknown voice, a speed of zero or less, or more than
                ``max_chars`` characters of text.
        """
        async with audio:  # the channel is ours: closed on every way out of here
            limiter = self._limiter
            if limiter is None:
                raise BackendUnavailable(f"the {NAME} backend is not open", backend=self.name)
            plan = self._plan(request)
            step = SAMPLE_RATE * self.options.chunk_ms // 1000
            for start in range(0, plan.total, step):
                stop = min(start + step, plan.total)
                # The blocking part, off the event loop. Both awaits are checkpoints, so a
                # cancelled caller stops here; the thread itself cannot be interrupted, which is
                # why a chunk is only chunk_ms of audio.
                pcm = await trio.to_thread.run_sync(render, plan, start, stop, limiter=limiter)
                await audio.send(AudioChunk(pcm, SAMPLE_RATE))

    def _plan(self, request: TtsRequest) -> _Plan:
        opts = self.options
        voice_id = request.voice_id or opts.voice
        if voice_id not in _VOICES:
            raise BackendRejected(
                f"unknown voice {voice_id!r}; {NAME} has {', '.join(_VOICES)}", backend=self.name
            )
        if not request.speed > 0:
            raise BackendRejected(f"speed must be above 0, not {request.speed}", backend=self.name)
        if len(request.text) > opts.max_chars:
            raise BackendRejected(
                f"{len(request.text)} characters of text; {NAME} takes at most {opts.max_chars}",
                backend=self.name,
            )
        low_hz, high_hz = _VOICES[voice_id][1]
        word = round(SAMPLE_RATE * opts.word_ms / 1000 / request.speed)
        gap = round(SAMPLE_RATE * opts.gap_ms / 1000 / request.speed)
        return _Plan(
            words=len(request.text.split()),
            word_samples=word,
            gap_samples=gap,
            low_hz=low_hz,
            high_hz=high_hz,
            amplitude=opts.amplitude,
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything :func:`render` needs for one request."""

    words: int
    word_samples: int
    gap_samples: int
    low_hz: float
    high_hz: float
    amplitude: float

    @property
    def total(self) -> int:
        return self.words * (self.word_samples + self.gap_samples)


def render(plan: _Plan, start: int, stop: int) -> bytes:
    """Samples ``[start, stop)`` of the utterance as PCM16LE. Pure and blocking (a thread's job).

    Word ``k`` occupies ``word_samples`` samples from ``k * (word_samples + gap_samples)``: a
    linear sweep from ``low_hz`` to ``high_hz`` under a half-sine envelope (no clicks), then
    silence.
    """
    n = np.arange(start, stop)
    position = n % (plan.word_samples + plan.gap_samples)
    t = position / SAMPLE_RATE
    seconds = plan.word_samples / SAMPLE_RATE
    sweep = (plan.high_hz - plan.low_hz) / seconds
    phase = 2 * math.pi * (plan.low_hz * t + sweep * t * t / 2)
    envelope = np.sin(math.pi * np.minimum(position / plan.word_samples, 1.0))
    wave = np.where(position < plan.word_samples, envelope * np.sin(phase), 0.0)
    return np.round(plan.amplitude * wave * 32767).astype("<i2").tobytes()
