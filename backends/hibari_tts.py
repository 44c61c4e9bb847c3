"""hibari text-to-speech (Apache-2.0, numpy + onnxruntime), offline, voice ``heart``, 24 kHz.

Only the voice bundled in the hibari-tts wheel is offered: hibari downloads its other voices on
first use, and this backend never downloads. Text is split into sentences (long ones at clause
punctuation) by hibari's own G2P; each sentence is synthesised in a worker thread (hibari runs
about 85x real time: a few tens of milliseconds per sentence) and sent as ``chunk_ms`` chunks
as soon as it is ready.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

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
    float_to_pcm16,
)

from ._packages import missing
from ._pcm import split_pcm

if TYPE_CHECKING:
    from hibari import Hibari  # type: ignore[import-untyped]

__all__ = ["HibariOptions", "HibariTts"]

SAMPLE_RATE = 24000
DEFAULT_VOICE = "heart"
VOICES = (
    Voice(
        id=DEFAULT_VOICE,
        name="Heart",
        language="en-US",
        sample_rate=SAMPLE_RATE,
        description="American English, female (bundled with hibari-tts)",
    ),
)
_SPEED_RANGE = (0.5, 2.0)
_T = TypeVar("_T")


class HibariOptions(BackendOptions, frozen=True):
    """Options of the ``hibari`` backend.

    Attributes:
        voice: the default voice id.
        seed: fixes the noise component: equal requests give bit-identical audio. ``None``
            varies it.
        chunk_ms: duration of the audio chunks sent.
        threads: onnxruntime threads per synthesis (1 is plenty).
    """

    voice: str = DEFAULT_VOICE
    seed: int | None = None
    chunk_ms: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 160
    threads: Annotated[int, msgspec.Meta(ge=1)] = 1


class HibariTts(TtsBackend):
    """hibari TTS: voice "heart" (American English), 24 kHz, streamed per sentence."""

    Options: ClassVar[type[BackendOptions]] = HibariOptions
    capabilities: ClassVar[TtsCapabilities] = TtsCapabilities(
        streaming=True,
        voices=True,
        speed=True,
        languages=("en",),
        sample_rates=(SAMPLE_RATE,),
    )
    name = "hibari"

    def __init__(self, options: HibariOptions | None = None) -> None:
        self.options = options or HibariOptions()
        self._tts: Hibari | None = None
        # hibari's G2P is not documented as thread-safe, and one core is plenty: one at a time.
        self._limiter = trio.CapacityLimiter(1)

    async def open(self) -> None:
        """Load the model and G2P and warm them up, in a worker thread.

        Cancelling abandons the load.

        Raises:
            BackendUnavailable: hibari-tts is not installed or its files are broken.
            BackendRejected: the default voice option is not a voice of this backend.
        """
        if self._tts is not None:
            return
        self._check_voice(self.options.voice)
        self._tts = await trio.to_thread.run_sync(self._load, limiter=self._limiter)

    async def aclose(self) -> None:
        self._tts = None

    async def check_health(self) -> None:
        self._require()

    async def list_voices(self) -> Sequence[Voice]:
        return VOICES

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        """Synthesise ``request.text`` sentence by sentence into 24 kHz PCM16 chunks.

        Cancelling stops before the next sentence (a sentence in synthesis takes tens of
        milliseconds and is dropped) and closes ``audio``.

        Raises:
            BackendRejected: unknown voice, a language other than English, or speed outside
                0.5-2.0.
            BackendUnavailable: the backend is not open or synthesis failed.
        """
        async with audio:
            tts = self._require()
            self._check_voice(request.voice_id or self.options.voice)
            if request.language and not request.language.lower().startswith("en"):
                raise BackendRejected(
                    f"hibari speaks English, not {request.language!r}", backend=self.name
                )
            speed = request.speed
            if not _SPEED_RANGE[0] <= speed <= _SPEED_RANGE[1]:
                raise BackendRejected(
                    f"speed {speed} is outside {_SPEED_RANGE[0]}-{_SPEED_RANGE[1]}",
                    backend=self.name,
                )
            rng = np.random.default_rng(self.options.seed)
            for sentence in tts.split_sentences(request.text):
                for phonemes in await self._run(tts.phonemize, sentence):
                    ids = tts.ids(phonemes)
                    samples = await self._run(tts.from_ids, ids, speed, rng)
                    pcm = float_to_pcm16(samples)
                    for piece in split_pcm(pcm, SAMPLE_RATE, self.options.chunk_ms):
                        await audio.send(AudioChunk(piece, SAMPLE_RATE))

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run one step of hibari in a worker thread (waited for on cancel: it is short)."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except Exception as exc:  # hibari's G2P and onnxruntime raise anything on odd input
            raise BackendRejected(
                f"hibari could not synthesise this text: {type(exc).__name__}: {exc}",
                backend=self.name,
            ) from exc

    def _load(self) -> Hibari:
        try:
            from hibari import Hibari
        except ImportError as exc:
            raise missing("hibari-tts", "hibari-tts", backend=self.name) from exc
        try:
            tts = Hibari(voice=DEFAULT_VOICE, threads=self.options.threads)
            tts("Warm up.", seed=0)
        except Exception as exc:  # onnxruntime and the G2P's file loading raise anything
            raise BackendUnavailable(
                f"cannot load hibari: {exc} (pip install --force-reinstall hibari-tts)",
                backend=self.name,
                retryable=False,
            ) from exc
        return tts

    def _require(self) -> Hibari:
        if self._tts is None:
            raise BackendUnavailable("the hibari backend is not open", backend=self.name)
        return self._tts

    def _check_voice(self, voice_id: str) -> None:
        if voice_id not in {voice.id for voice in VOICES}:
            raise BackendRejected(
                f"unknown hibari voice {voice_id!r}; available: "
                f"{', '.join(voice.id for voice in VOICES)}",
                backend=self.name,
            )
