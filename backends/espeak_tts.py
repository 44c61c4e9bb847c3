"""espeak-ng text-to-speech: robotic, tiny, with voices for over a hundred languages.

Uses libespeak-ng through ctypes, from the espeakng-loader wheel (``pip install
espeakng-loader``; library and voice data inside) or else the system library. espeak-ng is
GPL-3.0 and therefore only an optional extra. Voices are named by language (``"en-us"``,
``"de"``, ``"fr-fr"``...). Each sentence is synthesised in a worker thread (a few milliseconds)
and sent in ``chunk_ms`` chunks at 22.05 kHz.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Annotated, ClassVar

import msgspec
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

from ._espeak_lib import EspeakError, EspeakLibrary, load_library
from ._pcm import split_pcm

__all__ = ["EspeakOptions", "EspeakTts"]

SAMPLE_RATE = 22050
# The primary language subtags of the voices of espeak-ng 1.52 (espeakng-loader 0.2.4).
LANGUAGES = tuple(
    "af am an ar as az ba be bg bn bpy bs ca chr cmn cs cv cy da de el en eo es et eu fa fi "
    "fo fr ga gd gn grc gu hak haw he hi hr ht hu hy hyw ia id io is it ja jbo ka kaa kk kl kn "
    "ko kok ku ky la lb lfn lt ltg lv mi mk ml mr ms mt mto my nb nci ne nl nog om or pa pap "
    "piqd pl pt py qdb qu quc qya ro ru sd shn si sjn sk sl smj sq sr sv sw ta te th ti tk tn "
    "tr tt ug uk ur uz vi xex yue".split()
)
_BASE_WPM = 175
_WPM_RANGE = (80, 450)
_SENTENCE_END = re.compile(r"(?<=[.!?;:…])\s+")


class EspeakOptions(BackendOptions, frozen=True):
    """Options of the ``espeak`` backend.

    Attributes:
        voice: the default voice (a language name such as ``"en-us"``).
        rate_wpm: speaking rate at speed 1.0, in words a minute.
        chunk_ms: duration of the audio chunks sent.
    """

    voice: str = "en-us"
    rate_wpm: Annotated[int, msgspec.Meta(ge=_WPM_RANGE[0], le=_WPM_RANGE[1])] = _BASE_WPM
    chunk_ms: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 160


class EspeakTts(TtsBackend):
    """espeak-ng TTS (GPL, optional): robotic voices in many languages, 22.05 kHz."""

    Options: ClassVar[type[BackendOptions]] = EspeakOptions
    capabilities: ClassVar[TtsCapabilities] = TtsCapabilities(
        streaming=True,
        voices=True,
        speed=True,
        languages=LANGUAGES,
        sample_rates=(SAMPLE_RATE,),
    )
    name = "espeak"

    def __init__(self, options: EspeakOptions | None = None) -> None:
        self.options = options or EspeakOptions()
        self._lib: EspeakLibrary | None = None
        self._voices: tuple[Voice, ...] = ()
        self._identifiers: dict[str, str] = {}
        self._limiter = trio.CapacityLimiter(1)

    async def open(self) -> None:
        """Load and initialise libespeak-ng, list its voices. Cancelling abandons the load.

        Raises:
            BackendUnavailable: neither espeakng-loader nor a system libespeak-ng is there.
        """
        if self._lib is not None:
            return
        try:
            lib = await trio.to_thread.run_sync(load_library, limiter=self._limiter)
        except (EspeakError, OSError) as exc:
            raise BackendUnavailable(
                f"espeak-ng is not available ({exc}): pip install espeakng-loader",
                backend=self.name,
                retryable=False,
            ) from exc
        voices = await trio.to_thread.run_sync(lib.voices, limiter=self._limiter)
        seen: dict[str, Voice] = {}
        for voice in voices:
            seen.setdefault(
                voice.language,
                Voice(
                    id=voice.language,
                    name=voice.name,
                    language=voice.language,
                    sample_rate=lib.sample_rate,
                    description=f"espeak-ng {voice.identifier}",
                ),
            )
        self._voices = tuple(seen.values())
        # A listed voice is synthesised by its file's identifier ("gmw/en"): some languages'
        # codes ("en-gb") are not names espeak-ng resolves on their own.
        self._identifiers = {}
        for voice in voices:
            self._identifiers.setdefault(voice.language, voice.identifier)
        self._lib = lib

    async def aclose(self) -> None:
        """Forget the library handle (the process keeps libespeak-ng loaded)."""
        self._lib = None

    async def check_health(self) -> None:
        self._require()

    async def list_voices(self) -> Sequence[Voice]:
        return self._voices

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        """Synthesise ``request.text`` sentence by sentence into PCM16 chunks.

        The voice is ``request.voice_id``, else the one named by ``request.language``
        (``"de"``), else the ``voice`` option. Cancelling stops before the next sentence and
        closes ``audio``.

        Raises:
            BackendRejected: a voice espeak-ng does not have, or a speed out of range.
            BackendUnavailable: the backend is not open.
        """
        async with audio:
            lib = self._require()
            voice = request.voice_id or (request.language or self.options.voice).lower()
            base, variant = voice.partition("+")[::2]
            if base in self._identifiers:
                voice = self._identifiers[base] + (f"+{variant}" if variant else "")
            rate = round(self.options.rate_wpm * request.speed)
            if not _WPM_RANGE[0] <= rate <= _WPM_RANGE[1]:
                raise BackendRejected(
                    f"speed {request.speed} gives {rate} words a minute; espeak-ng speaks "
                    f"{_WPM_RANGE[0]}-{_WPM_RANGE[1]}",
                    backend=self.name,
                )
            for sentence in _sentences(request.text):
                work = functools.partial(lib.synthesize, sentence, voice=voice, rate_wpm=rate)
                try:
                    pcm = await trio.to_thread.run_sync(work, limiter=self._limiter)
                except EspeakError as exc:
                    raise BackendRejected(str(exc), backend=self.name) from exc
                for piece in split_pcm(pcm, lib.sample_rate, self.options.chunk_ms):
                    await audio.send(AudioChunk(piece, lib.sample_rate))

    def _require(self) -> EspeakLibrary:
        if self._lib is None:
            raise BackendUnavailable("the espeak backend is not open", backend=self.name)
        return self._lib


def _sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(text.strip()) if part.strip()]
