"""The sans-IO speech segmenter, driven by synthetic probabilities (fast)."""

from __future__ import annotations

import pytest

from scaivoice.engine import SpeechStarted, SpeechStopped
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
    long_hang = segmenter(min_silence_ms=200)
    assert long_hang.push_many(frames("SSS" + "." * 19)) == [SpeechStarted(0)]
    assert long_hang.push(0.0) == SpeechStopped(30)


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
