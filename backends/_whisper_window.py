"""Decoding a short utterance with an encoder window cut to its length (blocking; no trio).

Whisper's encoder looks at 30 s of audio however little was spoken, and on two CPU cores that
fixed cost is most of a decode: about 0.5 s of a 0.6 s decode of a 4 s sentence with tiny.en.
CTranslate2 accepts a shorter mel input, so a short utterance is encoded in a window of its own
length plus a little silence (``audio_ctx`` in whisper.cpp): about ten times less encoder work.
The decoder then attends to fewer frames as well.

Whisper was trained on full windows, so a cut window is used only where its result is trusted:
greedy decoding without timestamps, a known language, and a result that passes the same checks
faster-whisper applies before it falls back to sampling (compression ratio, average log
probability). Anything else returns ``None`` and the caller decodes the full window.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

__all__ = ["WindowedText", "decode_in_short_window", "window_frames"]

_FRAMES_PER_SECOND = 100  # Whisper's mel hop: 10 ms
_FULL_WINDOW = 3000  # 30 s
_STEP = 100  # windows grow in whole seconds, so that few distinct shapes occur

# faster-whisper's defaults for "this decode failed; retry at a higher temperature".
COMPRESSION_RATIO_LIMIT = 2.4
LOG_PROB_FLOOR = -1.0
NO_SPEECH_THRESHOLD = 0.6


@dataclass(frozen=True, slots=True)
class WindowedText:
    """The text of a short-window decode (empty when the window held no speech)."""

    text: str
    language: str


def window_frames(feature_frames: int, pad_s: float, min_s: float) -> int:
    """Mel frames of the encoder window for ``feature_frames`` of audio, padded by ``pad_s``.

    The window is rounded up to whole seconds, at least ``min_s`` and at most Whisper's 30 s.
    """
    wanted = max(feature_frames + round(pad_s * _FRAMES_PER_SECOND), round(min_s * 100))
    return min(_FULL_WINDOW, -(-wanted // _STEP) * _STEP)


def decode_in_short_window(
    model: WhisperModel,
    samples: npt.NDArray[np.float32],
    language: str,
    *,
    pad_s: float,
    min_s: float,
    max_s: float,
) -> WindowedText | None:
    """Greedy-decode 16 kHz ``samples`` in a window cut to their length.

    Returns ``None`` when the audio is longer than ``max_s`` or the result fails faster-whisper's
    quality checks (the caller should then decode the full window). Blocks; run it in a thread.
    """
    if len(samples) > max_s * 16000:
        return None
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]

    features = model.feature_extractor(samples)
    frames = window_frames(features.shape[-1], pad_s, min_s)
    window = np.zeros((1, features.shape[0], frames), np.float32)
    used = min(frames, features.shape[-1])
    window[0, :, :used] = features[:, :used]
    tokenizer = _tokenizer(model, Tokenizer, language)
    encoded = model.model.encode(_storage(window), to_cpu=False)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    result = model.model.generate(
        encoded,
        [prompt],
        beam_size=1,
        max_length=len(prompt) + _token_budget(len(samples) / 16000),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=_suppressed(tokenizer),
    )[0]
    tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
    if len(tokens) >= _token_budget(len(samples) / 16000):
        return None  # ran on to the limit: a loop, not speech
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    text = tokenizer.decode(tokens).strip()
    if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_FLOOR:
        return WindowedText("", language)  # silence, as the full decode would judge it
    if _compression_ratio(text) > COMPRESSION_RATIO_LIMIT or avg_logprob < LOG_PROB_FLOOR:
        return None
    if repeats_itself(text):
        return None  # a short window can loop on a short utterance: the full window does not
    return WindowedText(text, language)


def repeats_itself(text: str) -> bool:
    """Whether ``text`` says a phrase again right after itself: a phrase of two words or more
    twice ("what time is it what time is it"), or one word three times ("hello hello hello");
    or whether it ends by starting itself over (four words or more: "my name is Alice and I
    would like a table. My name is Alice and").

    Too short for the compression-ratio check, such a loop is how a short window fails on a
    short utterance. A false alarm costs only a decode in the full window.
    """
    words = [w.strip(".,!?;:\"'").lower() for w in text.split()]
    words = [w for w in words if w]
    if any(words[-size:] == words[:size] for size in range(4, len(words) // 2 + 1)):
        return True
    for size in range(1, len(words) // 2 + 1):
        needed = 3 if size == 1 else 2
        for start in range(len(words) - size * needed + 1):
            phrase = words[start : start + size]
            if all(
                words[start + k * size : start + (k + 1) * size] == phrase for k in range(needed)
            ):
                return True
    return False


def _token_budget(seconds: float) -> int:
    """More tokens than anyone speaks in ``seconds`` (fast speech is about 4 tokens a second)."""
    return min(220, 16 + round(seconds * 10))


def _tokenizer(model: WhisperModel, tokenizer_class: Any, language: str) -> Any:
    return tokenizer_class(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
    )


def _storage(features: npt.NDArray[np.float32]) -> Any:
    import ctranslate2  # type: ignore[import-untyped]

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features))


def _suppressed(tokenizer: Any) -> list[int]:
    """The tokens faster-whisper suppresses by default (``suppress_tokens=[-1]``)."""
    special = (
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    )
    return sorted({*tokenizer.non_speech_tokens, *special})


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
