"""Cutting long utterances into Whisper-sized pieces, and the two-token limiter (fast)."""

from __future__ import annotations

import numpy as np
import trio
import trio.testing

from scaivoice.backends._limits import BothLimiters
from scaivoice.backends._utterance import UtteranceBuffer

RATE = 16000


def loud(seconds: float) -> bytes:
    rng = np.random.default_rng(1)
    return (rng.normal(0, 8000, int(seconds * RATE)).clip(-32768, 32767)).astype("<i2").tobytes()


def quiet(seconds: float) -> bytes:
    return b"\0\0" * int(seconds * RATE)


def test_short_audio_stays_in_the_open_piece() -> None:
    buffer = UtteranceBuffer(max_piece_s=4.0)
    buffer.append(loud(3.0))
    assert buffer.sealed == []
    assert buffer.total_ms == 3000
    assert len(buffer.open_piece().pcm) == 3 * RATE * 2


def test_a_long_utterance_is_cut_in_the_pause() -> None:
    buffer = UtteranceBuffer(max_piece_s=4.0, search_s=1.0)
    for piece in (loud(3.4), quiet(0.2), loud(3.0)):
        for start in range(0, len(piece), 3200):
            buffer.append(piece[start : start + 3200])
    (sealed,) = buffer.sealed
    cut_s = len(sealed.pcm) / 2 / RATE
    assert 3.4 <= cut_s <= 3.6
    rest = buffer.open_piece()
    assert rest.start == len(sealed.pcm) // 2
    assert buffer.total_samples == int(6.6 * RATE)
    assert sealed.pcm + rest.pcm == loud(3.4) + quiet(0.2) + loud(3.0)
    assert buffer.undecoded() == [sealed]


def test_audio_without_pauses_is_still_cut_within_the_limit() -> None:
    buffer = UtteranceBuffer(max_piece_s=2.0)
    buffer.append(loud(9.0))
    assert len(buffer.sealed) >= 4
    assert all(len(p.pcm) // 2 <= 2 * RATE for p in buffer.sealed)
    assert b"".join(p.pcm for p in buffer.sealed) + buffer.open_piece().pcm == loud(9.0)


async def test_both_limiters_give_the_outer_token_back_on_cancel() -> None:
    outer, inner = trio.CapacityLimiter(1), trio.CapacityLimiter(1)
    both = BothLimiters(outer, inner)
    holder = object()
    await inner.acquire_on_behalf_of(holder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(both.acquire_on_behalf_of, object())
        await trio.testing.wait_all_tasks_blocked()
        assert outer.borrowed_tokens == 1  # held while waiting for the inner token
        nursery.cancel_scope.cancel()
    assert outer.borrowed_tokens == 0
    inner.release_on_behalf_of(holder)
    assert await trio.to_thread.run_sync(lambda: 42, limiter=both) == 42
    assert (outer.borrowed_tokens, inner.borrowed_tokens) == (0, 0)


def test_the_pause_detector_starts_one_decode_per_pause_after_speech() -> None:
    from scaivoice.backends.whisper import WhisperOptions, _PauseDecode

    pause = _PauseDecode(WhisperOptions(pause_decode_ms=160), word_timings=False)
    utterance = UtteranceBuffer(max_piece_s=28)
    loud = (np.sin(np.arange(320) / 3) * 8000).astype("<i2").tobytes()  # 20 ms of speech
    quiet = b"\0\0" * 320  # 20 ms of silence

    def feed(chunk: bytes) -> bool:
        utterance.append(chunk)
        return pause.heard(chunk, utterance)

    assert not any(feed(quiet) for _ in range(20))  # silence before speech: no pause
    assert not any(feed(loud) for _ in range(25))
    starts = [feed(quiet) for _ in range(12)]
    assert starts.index(True) == 7  # 8 x 20 ms = 160 ms of quiet
    attempt = pause.start(utterance)
    assert attempt.piece.pcm == utterance.open_piece().pcm
    assert not any(feed(quiet) for _ in range(10))  # one decode per pause
    feed(loud)  # speech resumes: that decode no longer covers every word
    assert pause._attempt is attempt and attempt.loud_mark != pause._last_loud


def test_a_stale_pause_decode_does_not_hold_up_the_next_pause() -> None:
    from scaivoice.backends._utterance import Decoded
    from scaivoice.backends.whisper import WhisperOptions, _PauseDecode

    pause = _PauseDecode(WhisperOptions(pause_decode_ms=100), word_timings=False)
    utterance = UtteranceBuffer(max_piece_s=28)
    loud = (np.sin(np.arange(320) / 3) * 8000).astype("<i2").tobytes()
    quiet = b"\0\0" * 320

    def feed(chunk: bytes, times: int) -> list[bool]:
        starts = []
        for _ in range(times):
            utterance.append(chunk)
            starts.append(pause.heard(chunk, utterance))
        return starts

    feed(loud, 20)
    assert any(feed(quiet, 6))
    stale = pause.start(utterance)  # still decoding (``done`` not set) when speech resumes
    feed(loud, 10)
    assert any(feed(quiet, 6)), "a new pause starts its own decode at once"
    current = pause.start(utterance)
    current.decoded = Decoded("book a table")
    stale.decoded = Decoded("book")
    assert pause.announce(stale, utterance) is None  # the stale decode says nothing
    assert pause.announce(current, utterance) == "book a table"
    assert pause.withdrawn(utterance) is None  # still quiet: the guess holds
    feed(loud, 1)
    assert pause.withdrawn(utterance) == "book a table"  # speech again: taken back, once
    assert pause.withdrawn(utterance) is None
