"""Whisper decoding in an encoder window cut to the utterance (fast unit checks, slow model runs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from scaivoice.backends._whisper_window import decode_in_short_window, window_frames
from scaivoice.engine import pcm16_to_float

from ._support import SENTENCES, Speech, silence
from ._wer import wer


def test_the_window_is_the_audio_plus_padding_in_whole_seconds() -> None:
    assert window_frames(466, pad_s=1.0, min_s=5.0) == 600  # 4.66 s + 1 s -> 6 s
    assert window_frames(401, pad_s=0.0, min_s=0.0) == 500


def test_the_window_has_a_floor_and_never_exceeds_thirty_seconds() -> None:
    assert window_frames(120, pad_s=1.0, min_s=5.0) == 500
    assert window_frames(2950, pad_s=1.0, min_s=5.0) == 3000


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    pytest.importorskip("faster_whisper")
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

    from scaivoice.backends._whisper_models import default_cache_dir, resolve_model

    source = resolve_model("tiny.en", cache_dir=default_cache_dir(), backend="whisper")
    yield WhisperModel(str(source.path), device="cpu", compute_type="int8", cpu_threads=2)


def full_window_text(model: Any, samples: np.ndarray) -> str:
    segments, _ = model.transcribe(
        samples, language="en", beam_size=1, without_timestamps=True, vad_filter=False
    )
    return " ".join(segment.text.strip() for segment in segments)


@pytest.mark.slow
def test_short_windows_read_the_sentences_as_well_as_the_full_window(
    model: Any, speech: Speech
) -> None:
    short_pairs, full_pairs = [], []
    for index, text in enumerate(SENTENCES):
        samples = pcm16_to_float(silence(200) + speech[index] + silence(250))
        decoded = decode_in_short_window(model, samples, "en", pad_s=1.0, min_s=5.0, max_s=28)
        assert decoded is not None, text
        assert decoded.language == "en"
        short_pairs.append((text, decoded.text))
        full_pairs.append((text, full_window_text(model, samples)))
    assert wer(short_pairs) <= 0.10, short_pairs
    assert wer(short_pairs) <= wer(full_pairs), (short_pairs, full_pairs)


@pytest.mark.slow
def test_a_one_word_answer_is_read(model: Any) -> None:
    hibari = pytest.importorskip("hibari")
    from scaivoice.engine import float_to_pcm16, resample_pcm16

    pcm = resample_pcm16(float_to_pcm16(hibari.Hibari()("Yes.", seed=0)), 24000, 16000)
    samples = pcm16_to_float(silence(200) + pcm + silence(250))
    decoded = decode_in_short_window(model, samples, "en", pad_s=1.0, min_s=5.0, max_s=28)
    assert decoded is not None
    assert decoded.text.strip(" .!").lower() == "yes"


@pytest.mark.slow
def test_silence_reads_as_nothing_or_asks_for_the_full_window(model: Any) -> None:
    samples = pcm16_to_float(silence(1500))
    decoded = decode_in_short_window(model, samples, "en", pad_s=1.0, min_s=5.0, max_s=28)
    assert decoded is None or decoded.text == ""


@pytest.mark.slow
def test_audio_longer_than_the_limit_is_left_to_the_full_window(model: Any) -> None:
    samples = np.zeros(16000 * 6, np.float32)
    assert decode_in_short_window(model, samples, "en", pad_s=1.0, min_s=5.0, max_s=5) is None


def test_a_phrase_said_again_right_after_itself_is_a_loop() -> None:
    from scaivoice.backends._whisper_window import repeats_itself

    assert repeats_itself("What time is it? What time is it? What time is")
    assert repeats_itself("Hello? Hello? Hello?")
    assert repeats_itself(
        "Hello, my name is Alice, and I would like to book a table for two people. "
        "Hello, my name is Alice, and I would like"
    )
    assert not repeats_itself("I said: book it, I said.")
    assert not repeats_itself("Hello.")
    assert not repeats_itself("No, no, I said the meeting is at four.")
    assert not repeats_itself("It was very very good.")
    assert not repeats_itself("The meeting is on March 3rd at 4:30 pm.")


@pytest.mark.slow
@pytest.mark.parametrize("text", ["What time is it?", "Hello.", "Turn on the lights."])
def test_short_requests_are_read_once(model: Any, text: str) -> None:
    """Short requests (what follows a wake word) must not come back as a loop."""
    hibari = pytest.importorskip("hibari")
    from scaivoice.backends._whisper_window import repeats_itself
    from scaivoice.engine import float_to_pcm16, resample_pcm16

    pcm = resample_pcm16(float_to_pcm16(hibari.Hibari()(text, seed=0)), 24000, 16000)
    for lead_ms in (0, 200):  # right after a wake word the audio starts at the first word
        samples = pcm16_to_float(silence(lead_ms) + pcm + silence(250))
        decoded = decode_in_short_window(model, samples, "en", pad_s=1.0, min_s=5.0, max_s=28)
        shown = decoded.text if decoded is not None else full_window_text(model, samples)
        assert not repeats_itself(shown), shown
        assert shown.strip(" .!?").lower() == text.strip(" .!?").lower(), shown
