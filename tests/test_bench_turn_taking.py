"""``bench turn-taking``: its generated speech, its figures, and a tiny run through a real server
with the embedded stack (one conversation of one step per category). The run checks that the
figures are there and sane, not the issue's targets: those are reported, not asserted."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from scaivoice.conformance.bench.turn_taking import run_turn_taking
from scaivoice.conformance.bench.turn_taking.conversation import OverlapRecord, TurnRecord
from scaivoice.conformance.bench.turn_taking.figures import mode_figures
from scaivoice.conformance.bench.turn_taking.speech import (
    FRAME_BYTES,
    RATE,
    SPEECH_LEVEL,
    _gaps,
    _stretch,
    click,
    cough,
    speech_end,
)


def _tone(ms: int) -> np.ndarray:
    t = np.arange(RATE * ms // 1000) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)


def test_a_pause_is_stretched_where_the_voice_paused() -> None:
    speech = np.concatenate([_tone(300), np.zeros(RATE // 10, np.int16), _tone(300)])
    gaps = _gaps(speech)
    assert gaps == [(RATE * 3 // 10, RATE * 4 // 10)]
    stretched = np.frombuffer(_stretch(speech, gaps, [650]), "<i2")
    assert len(stretched) == len(speech) + RATE * 550 // 1000
    assert _gaps(stretched)[0][1] - _gaps(stretched)[0][0] == RATE * 650 // 1000
    shortened = np.frombuffer(_stretch(speech, gaps, [50]), "<i2")
    assert len(shortened) == len(speech) - RATE * 50 // 1000


def test_noises_are_short_loud_bursts() -> None:
    rng = np.random.default_rng(1)
    for clip in (cough(rng), click(rng), cough(rng), click(rng)):
        samples = np.abs(np.frombuffer(clip.pcm, "<i2").astype(np.int32))
        assert clip.kind == "noise" and 0.05 < clip.seconds < 1.0
        assert samples.max() > 8000
        assert 0 < speech_end(clip.pcm) <= len(clip.pcm) + FRAME_BYTES


def test_speech_end_is_the_frame_of_the_last_sound() -> None:
    pcm = bytes(FRAME_BYTES * 3) + _tone(50).tobytes() + bytes(FRAME_BYTES * 4)
    last = (FRAME_BYTES * 3 + 2 * (RATE * 50 // 1000) - 2) // FRAME_BYTES
    assert speech_end(pcm) == (last + 1) * FRAME_BYTES
    assert speech_end(bytes(FRAME_BYTES)) == 0
    assert SPEECH_LEVEL == 328


def test_figures_count_what_they_say() -> None:
    def turn(kind: str, *, premature: bool = False, latency: float | None = None) -> TurnRecord:
        return TurnRecord(
            "semantic", 0, "c", kind, "v", "t", premature=premature, latency_ms=latency
        )

    def over(kind: str, interrupted: float | None, *, valid: bool = True) -> OverlapRecord:
        return OverlapRecord(
            "semantic", 0, "c", kind, "v", "t", valid=valid, interrupted_ms=interrupted
        )

    turns = [
        turn("pause", premature=True),
        turn("pause", latency=400.0),
        turn("pause", latency=600.0),
        turn("question", latency=500.0),
    ]
    overlaps = [
        over("backchannel", None),
        over("backchannel", 900.0),
        over("noise", None),
        over("noise", None, valid=False),
        over("interruption", 800.0),
        over("interruption", 2500.0),
        over("interruption", None),
    ]
    m = mode_figures("semantic", "semantic", turns, overlaps)
    assert (m.paused_utterances, m.premature_ends, m.premature_rate) == (3, 1, 1 / 3)
    assert (m.backchannels, m.backchannel_interruptions, m.noises) == (2, 1, 1)
    assert m.false_interruption_rate == 1 / 3
    assert (m.interruptions, m.missed_interruptions) == (3, 2)
    assert m.barge_in_p50_ms == 1650.0
    assert (m.latency_samples, m.latency_p50_ms, m.void_overlaps) == (3, 500.0, 1)
    manual = mode_figures("manual", "manual", turns, [])
    assert manual.premature_rate is None and manual.false_interruption_rate is None


def test_the_command_is_wired() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaivoice.engine.cli", "bench", "turn-taking", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--conversations", "--turns", "--mode", "--voice", "--url", "--json"):
        assert option in result.stdout


def _rate_ok(value: float | None) -> bool:
    return value is None or 0.0 <= value <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tiny_run_on_the_embedded_stack_gives_sane_figures() -> None:
    report = run_turn_taking(
        modes=("semantic", "manual"), per_category=1, turns=1, voices=("hibari:heart",)
    )
    assert report.voices == ["hibari:heart"] and report.conversations == 5
    vad, manual = report.modes
    assert (vad.mode, manual.mode, manual.in_use) == ("semantic", "manual", "manual")
    assert vad.in_use in ("semantic", "server_vad")
    for m in (vad, manual):
        for rate in (m.premature_rate, m.false_interruption_rate, m.missed_rate, m.resumed_rate):
            assert _rate_ok(rate), m
        assert m.latency_samples >= 1, m
        assert m.latency_p50_ms is not None and m.latency_p90_ms is not None
        assert 0 < m.latency_p50_ms <= m.latency_p90_ms < 30_000
        assert m.stt_p50_ms is not None and m.stt_p50_ms >= 0
    assert vad.paused_utterances == 1 and vad.premature_rate is not None
    assert vad.backchannels + vad.noises + vad.interruptions + vad.void_overlaps == 3
    assert vad.barge_in_p50_ms is None or vad.barge_in_p50_ms > 0
    assert manual.premature_rate is None and manual.interruptions == 0
    assert {t.mode for t in report.turns} == {"semantic", "manual"}
    assert all(o.mode == "semantic" for o in report.overlaps) and len(report.overlaps) == 3
    timed = [t for t in report.turns if t.latency_ms is not None]
    assert all(t.metrics is not None and t.heard for t in timed)
    assert all(math.isfinite(o.into_reply_ms) for o in report.overlaps if o.valid)
