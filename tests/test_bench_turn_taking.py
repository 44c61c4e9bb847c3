"""``bench turn-taking``: its generated speech, its figures, and a tiny run through a real server
with the embedded stack (one conversation of one step per category). The run checks that the
figures are there and sane, not the issue's targets: those are reported, not asserted."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from scaivoice.conformance.bench.turn_taking import run_turn_taking
from scaivoice.conformance.bench.turn_taking.conversation import (
    LONG_PROMPT,
    SHORT_PROMPT,
    OverlapRecord,
    Played,
    TurnRecord,
    _judge_overlap,
    mode_in_use,
    session_config,
)
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
from scaivoice.engine.client import AgentAudio, frames


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
            "semantic", 0, "c", kind, "v", "t", valid=valid, interrupted_ms=interrupted,
            went_on=kind != "interruption", gap_ms=300.0 if interrupted else 0.0,
        )  # fmt: skip

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
    assert (m.went_on_rate, m.gap_p50_ms, m.answered) == (1.0, 0.0, 0)
    manual = mode_figures("manual", "manual", turns, [])
    assert manual.premature_rate is None and manual.false_interruption_rate is None


def _started(features: list[str], **config: Any) -> frames.SessionStarted:
    rate = frames.AudioFormat(sample_rate=16000)
    return frames.SessionStarted(
        session_id="s",
        protocol=1,
        config=frames.SessionConfig(**config),
        audio=frames.AudioFormats(input=rate, output=rate),
        capabilities=frames.Capabilities(features=features),
    )


def test_modes_become_session_keys_and_the_mode_in_use_is_read_back() -> None:
    assert session_config("semantic", long_replies=False) == {
        "turn_detection": "semantic",
        "vad_enabled": True,
        "system_prompt": SHORT_PROMPT,
    }
    held = session_config("server_vad+hold", long_replies=True)
    assert held["barge_in_hold"] is True and held["system_prompt"] == LONG_PROMPT
    assert session_config("manual", long_replies=False)["vad_enabled"] is False
    with pytest.raises(ValueError, match="MODE or MODE\\+hold"):
        session_config("semantic+later", long_replies=False)
    both = ["vad_enabled", "turn_detection"]
    asked = {"turn_detection": "semantic", "vad_enabled": True}
    assert mode_in_use(_started(both, **asked)) == "semantic, at once"
    assert mode_in_use(_started(["vad_enabled"], **asked)) == "server_vad, at once"
    assert mode_in_use(_started(both, **asked, barge_in_hold=True)) == "semantic, held"
    assert mode_in_use(_started(both, turn_detection="server_vad")) == "server_vad"
    assert mode_in_use(_started([], **asked)) == "manual"
    assert mode_in_use(_started(both, turn_detection="manual")) == "manual"


def _audio(turn: int) -> AgentAudio:
    return AgentAudio(turn, bytes(960), 24000)


def _final(turn: int, text: str) -> frames.TranscriptFrame:
    return frames.TranscriptFrame(turn_id=turn, text=text, final=True, start_ms=0, end_ms=500)


def test_an_overlap_is_judged_from_the_log() -> None:
    played = Played(onset=10.0, speech_end=10.4, end=10.4)

    def judge(log: list[tuple[float, Any]], verdict_at: float) -> OverlapRecord:
        record = OverlapRecord("semantic", 0, "backchannels", "backchannel", "v", "uh-huh")
        _judge_overlap(record, log, 1, played, verdict_at)
        return record

    # At once: interrupted at the onset, "uh-huh" is no turn, the rest said as turn 3.
    at_once = [(9.98, _audio(1)), (10.02, _audio(1))]
    at_once += [(10.15, frames.State(state="interrupted", turn_id=1))]
    at_once += [(10.9, frames.State(state="thinking", turn_id=2))]  # "uh-huh" recognised
    at_once += [(11.0, _final(2, "Uh-huh."))]
    at_once += [(11.1, frames.State(state="thinking", turn_id=3)), (11.2, _audio(3))]
    record = judge(at_once, 11.0)
    assert record.interrupted_ms == pytest.approx(150.0) and record.heard == "Uh-huh."
    assert record.went_on and not record.answered
    assert record.gap_ms == pytest.approx(1180.0)
    # Held: no state frame, the reply's audio pauses and resumes.
    held = [(10.02, _audio(1)), (11.0, _final(2, "Yeah."))]
    held += [(11.05, _audio(1))]
    record = judge(held, 11.0)
    assert (
        record.interrupted_ms is None and record.went_on and record.gap_ms == pytest.approx(1030.0)
    )
    # Taken as a turn: the backchannel got a reply of its own, the agent never went on.
    answered = [(10.15, frames.State(state="interrupted", turn_id=1))]
    answered += [(11.0, _final(2, "It has."))]
    answered += [(11.1, frames.State(state="thinking", turn_id=2)), (11.5, _audio(2))]
    record = judge(answered, 11.0)
    assert record.answered and not record.went_on and record.gap_ms is None
    # Not heard at all, and the reply ended normally soon after: the agent went on.
    ended = [(10.05, _audio(1))]
    ended += [(10.4, frames.AgentAudioDone(turn_id=1, duration_ms=900, interrupted=False))]
    record = judge(ended, math.inf)
    assert record.valid and record.went_on and record.gap_ms == pytest.approx(350.0)
    # The reply ended as the overlap began: void.
    over = [(10.1, frames.AgentAudioDone(turn_id=1, duration_ms=900, interrupted=False))]
    assert not judge(over, math.inf).valid


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
        modes=("semantic", "manual", "semantic+hold"),
        per_category=1,
        turns=1,
        voices=("hibari:heart",),
    )
    assert report.voices == ["hibari:heart"] and report.conversations == 5
    vad, manual, held = report.modes
    assert (vad.mode, manual.mode, held.mode) == ("semantic", "manual", "semantic+hold")
    assert vad.in_use in ("semantic, at once", "server_vad, at once")
    assert held.in_use in ("semantic, held", "server_vad, held")
    assert manual.in_use == "manual"
    for m in (vad, manual, held):
        for rate in (m.premature_rate, m.false_interruption_rate, m.missed_rate, m.went_on_rate):
            assert _rate_ok(rate), m
        assert m.latency_samples >= 1, m  # the held mode's questions asking for long answers
        assert m.latency_p50_ms is not None and m.latency_p90_ms is not None
        assert 0 < m.latency_p50_ms <= m.latency_p90_ms < 30_000
        assert m.stt_p50_ms is not None and m.stt_p50_ms >= 0
        assert m.barge_in_p50_ms is None or m.barge_in_p50_ms > 0
        assert m.gap_p50_ms is None or m.gap_p50_ms >= 0
    assert vad.paused_utterances == 1 and vad.premature_rate is not None
    for m in (vad, held):
        assert m.backchannels + m.noises + m.interruptions + m.void_overlaps == 3
    assert held.paused_utterances == 0 and held.premature_rate is None
    assert manual.premature_rate is None and manual.interruptions == 0
    assert {t.mode for t in report.turns} == {"semantic", "manual", "semantic+hold"}
    assert len(report.overlaps) == 6
    assert {o.mode for o in report.overlaps} == {"semantic", "semantic+hold"}
    timed = [t for t in report.turns if t.latency_ms is not None]
    assert all(t.metrics is not None and t.heard for t in timed)
    assert all(math.isfinite(o.into_reply_ms) for o in report.overlaps if o.valid)
