"""The sans-IO speech segmenter, driven by synthetic probabilities (fast)."""

from __future__ import annotations

import pytest

from scaivoice.engine import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped
from scaivoice.plugins.silero_vad import SpeechSegmenter

# 10 ms frames keep the tables readable: min_speech 30 ms = 3 frames, min_silence 50 ms = 5.
FRAME_MS = 10.0


def segmenter(**overrides: float) -> SpeechSegmenter:
    settings: dict[str, float] = {
        "threshold": 0.5,
        "neg_threshold": 0.3,
        "min_speech_ms": 30,
        "min_silence_ms": 50,
        "frame_ms": FRAME_MS,
    }
    settings.update(overrides)
    return SpeechSegmenter(**settings)


def frames(pattern: str) -> list[float]:
    """``S`` speech (0.9), ``.`` silence (0.05), ``~`` in between (0.4)."""
    return [{"S": 0.9, ".": 0.05, "~": 0.4}[c] for c in pattern]


def started(frame: int) -> SpeechStarted:
    return SpeechStarted(round(frame * FRAME_MS))


def stopped(frame: int) -> SpeechStopped:
    return SpeechStopped(round(frame * FRAME_MS))


@pytest.mark.parametrize(
    ("pattern", "events"),
    [
        pytest.param("..........", [], id="silence"),
        pytest.param("..SS......", [], id="burst shorter than min_speech"),
        pytest.param("..SSS....", [started(2)], id="start dated at the run's first frame"),
        pytest.param("..SSS.....SS", [started(2), stopped(5)], id="stop after the hang time"),
        pytest.param("SSS....SSS", [started(0)], id="a short pause keeps speaking"),
        pytest.param("SSS~~~~~~~~", [started(0)], id="in-between never opens a silence run"),
        pytest.param("S~.SSS", [started(3)], id="silence breaks a start run"),
        pytest.param("S~~S", [started(0)], id="in-between continues a start run"),
        pytest.param("~~~~~~", [], id="in-between never opens a start run"),
        pytest.param("SSS...S.....", [started(0), stopped(7)], id="speech restarts the hang"),
        pytest.param(
            "SSS.....SSS.....",
            [started(0), stopped(3), started(8), stopped(11)],
            id="two utterances",
        ),
        pytest.param("SSS..~~", [started(0)], id="hang time not over yet"),
        pytest.param("SSS..~~.", [started(0), stopped(3)], id="in-between counts toward the hang"),
    ],
)
def test_segmenter_table(pattern: str, events: list[SpeechStarted | SpeechStopped]) -> None:
    assert segmenter().push_many(frames(pattern)) == events


def test_push_reports_the_frame_that_completes_an_event() -> None:
    seg = segmenter()
    assert [seg.push(p) for p in frames("SSS")] == [None, None, SpeechStarted(0)]
    assert seg.speaking
    assert [seg.push(p) for p in frames(".....")][-1] == SpeechStopped(30)
    assert not seg.speaking


def test_zero_min_speech_starts_on_the_first_speech_frame() -> None:
    assert segmenter(min_speech_ms=0).push_many(frames("..S")) == [SpeechStarted(20)]


def test_hang_time_is_configurable() -> None:
    long_hang = segmenter(min_silence_ms=200, pause_ms=None)
    assert long_hang.push_many(frames("SSS" + "." * 19)) == [SpeechStarted(0)]
    assert long_hang.push(0.0) == SpeechStopped(30)


def test_a_pause_is_reported_and_speech_after_it_resumes() -> None:
    seg = segmenter(min_silence_ms=200, pause_ms=50)
    assert seg.push_many(frames("SSS" + "." * 5 + "SS")) == [
        SpeechStarted(0),
        SpeechPaused(30),  # dated where the speech ended
        SpeechResumed(80),
    ]
    assert seg.push_many(frames("." * 20)) == [SpeechPaused(100), SpeechStopped(100)]


def test_no_pause_events_when_the_pause_is_not_shorter_than_the_hang() -> None:
    seg = segmenter(min_silence_ms=50, pause_ms=80)
    assert seg.push_many(frames("SSS" + "." * 10)) == [SpeechStarted(0), SpeechStopped(30)]


def test_default_neg_threshold_is_below_threshold() -> None:
    seg = SpeechSegmenter(threshold=0.5)
    assert seg.neg_threshold == pytest.approx(0.35)
    assert SpeechSegmenter(threshold=0.1).neg_threshold == pytest.approx(0.01)


@pytest.mark.parametrize(
    "settings",
    [
        {"threshold": 0.5, "neg_threshold": 0.6},
        {"threshold": 1.5},
        {"min_speech_ms": -1},
        {"frame_ms": 0},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SpeechSegmenter(**settings)


# ------------------------------------------------- dating the end of speech by the frames' levels
# Two blocks a frame (5 ms each). ``#`` a loud frame (-20 dBFS), ``-`` a soft tail (-65 dBFS),
# ``_`` the room (-60 dBFS), `` `` digital silence.
LEVELS = {"#": -20.0, "-": -65.0, "_": -60.0, " ": -120.0}


def levels(pattern: str) -> list[list[float]]:
    return [[LEVELS[c]] * 2 for c in pattern]


def test_the_hang_counts_from_where_the_speech_ended_not_from_the_model() -> None:
    # The model's probability lags the audio by three frames (30 ms).
    probs = frames("..SSSSSSS.........")
    sound = levels("__####____________")
    seg = segmenter()
    events = [seg.push(p, frame) for p, frame in zip(probs, sound, strict=True)]
    # Speech ends at 60 ms (end of frame 5); the hang (50 ms) ends at 110 ms: the frame that
    # ends nearest to it (frame 10, ending at 110 ms) stops speech, dated at 60 ms.
    assert events[10] == SpeechStopped(60)
    assert [e for e in events if e is not None] == [started(2), SpeechStopped(60)]
    # Without levels, the hang counts from the model's first silent frame (frame 9).
    assert segmenter().push_many(probs) == [started(2), stopped(9)]


def test_the_end_is_dated_to_the_block() -> None:
    probs = frames("SSSSSS.......")
    seg = segmenter()
    sound = [[-20.0, -20.0]] * 3 + [[-20.0, -60.0]] + [[-60.0, -60.0]] * 9
    events = seg.push_many(probs, sound)
    assert events == [started(0), SpeechStopped(35)]  # the loud block ends 35 ms in


def test_a_soft_tail_far_below_the_speech_is_not_speech() -> None:
    # After digital silence the noise floor is -120 dBFS: the tail (-65) stands above it, but
    # more than 40 dB below the speech's loudest block, so the speech ends before the tail.
    probs = frames("  SSSSSSS........".replace(" ", "."))
    sound = levels("  ####---        ")
    assert segmenter().push_many(probs, sound) == [started(2), SpeechStopped(60)]


def test_the_noise_sets_the_bar_for_the_end() -> None:
    # Room noise at -60: a block 3 dB above it is noise, one 10 dB above it is speech.
    probs = frames("....SSSSSSS.........")
    quiet = levels("____####____________")
    assert segmenter().push_many(probs, quiet)[-1] == SpeechStopped(80)
    louder = [*levels("____####")[:8], [-50.0, -50.0], *levels("_" * 11)]
    assert segmenter().push_many(probs, louder)[-1] == SpeechStopped(90)
    noisy = [*levels("____####")[:8], [-57.0, -57.0], *levels("_" * 11)]
    assert segmenter().push_many(probs, noisy)[-1] == SpeechStopped(80)


def test_without_a_loud_block_in_reach_the_model_dates_the_end() -> None:
    # Speech too soft to stand out of the noise: the run's first silent frame is the end.
    probs = frames("....SSSS......")
    sound = levels("______________")
    assert segmenter().push_many(probs, sound) == [started(4), stopped(8)]


def test_a_hang_shorter_than_the_lag_stops_at_the_first_silent_frame() -> None:
    probs = frames("SSSSSSS....")
    sound = levels("###________")
    seg = segmenter(min_silence_ms=10)
    events = [seg.push(p, frame) for p, frame in zip(probs, sound, strict=True)]
    assert events[7] == SpeechStopped(30)


def test_speech_that_resumes_breaks_the_dated_run() -> None:
    # A 30 ms pause (shorter than the hang), then speech again that the model hears late.
    probs = frames("SSSSSS..SSSSSS.........")
    sound = levels("####___####____________")
    assert segmenter().push_many(probs, sound) == [started(0), SpeechStopped(110)]


def test_forgetting_the_speech_starts_afresh() -> None:
    """After a wake word: the pause after the keyword stops nothing, and speech that runs on
    from the keyword starts anew (after min_speech)."""
    paused = segmenter(pause_ms=None)
    assert paused.push_many(frames("SSSS")) == [started(0)]
    paused.forget_speech()
    assert not paused.speaking
    assert paused.push_many(frames("........SSS")) == [started(12)]
    running_on = segmenter(pause_ms=None)
    assert running_on.push_many(frames("SSSS")) == [started(0)]
    running_on.forget_speech()
    assert running_on.push_many(frames("SSS.....")) == [started(4), stopped(7)]
