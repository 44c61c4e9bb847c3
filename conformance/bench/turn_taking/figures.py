"""The benchmark's figures per ``turn_detection`` mode, and the table that prints them.

Rates are shares of the steps they concern (None when there were none, or in ``manual`` mode
where they do not apply); latencies are percentiles in milliseconds (None without samples).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .conversation import MISSED_AFTER_S, OverlapRecord, TurnRecord

__all__ = [
    "TARGET_FALSE_INTERRUPTIONS",
    "TARGET_LATENCY_P50_MS",
    "TARGET_PREMATURE",
    "ModeFigures",
    "TurnTakingReport",
    "mode_figures",
    "print_report",
]

TARGET_LATENCY_P50_MS = 450.0
"""End of speech -> first agent audio, p50, with ``semantic`` on the embedded stack."""
TARGET_PREMATURE = 0.05
TARGET_FALSE_INTERRUPTIONS = 0.10


@dataclass(frozen=True, slots=True)
class ModeFigures:
    """One ``turn_detection`` mode's figures."""

    mode: str
    """The mode asked for (``semantic+hold``: with ``barge_in_hold``)."""
    in_use: str
    """What the sessions got: the turn detection (``semantic`` falls back to ``server_vad``
    without the model) and how speech over the agent barges in (``semantic, at once``)."""
    paused_utterances: int
    premature_ends: int
    premature_rate: float | None
    """Utterances with inner pauses whose turn the server ended before their end."""
    backchannels: int
    backchannel_interruptions: int
    noises: int
    noise_interruptions: int
    false_interruption_rate: float | None
    """Backchannels and noises over the agent that interrupted it."""
    interruptions: int
    missed_interruptions: int
    missed_rate: float | None
    """Real interruptions without ``state: interrupted`` within 2 s of their onset."""
    barge_in_p50_ms: float | None
    """Real interruptions: onset -> ``state: interrupted``."""
    went_on_rate: float | None
    """Backchannels and noises after which the agent spoke on (resumed, or said the unheard
    rest as a new turn, or never stopped)."""
    gap_p50_ms: float | None
    """Backchannels and noises after which the agent went on: its longest silence, p50."""
    answered: int
    """Backchannels and noises taken as a turn of their own (they got a reply)."""
    latency_samples: int
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    """End of speech -> first agent audio (turns not cut at a pause)."""
    turn_end_p50_ms: float | None
    """End of speech -> ``state: thinking`` (the turn-end decision)."""
    stt_p50_ms: float | None
    llm_first_token_p50_ms: float | None
    tts_first_audio_p50_ms: float | None
    """From the replies' ``metrics`` frames."""
    text_to_audio_p50_ms: float | None
    """The reply's first text -> its first audio (``metrics``): waiting for the first
    speakable piece (the model's tokens up to a sentence or long clause) and synthesising it."""
    void_overlaps: int
    """Overlaps not counted: the reply had ended before them."""
    no_reply: int
    """Turns that got no reply within 30 s."""
    other_cpu_share: float | None = None
    """The share of the machine's CPU time that other processes (not the server, not the
    benchmark) used meanwhile: on a small machine it shows up in every latency. None against a
    server given by URL."""


@dataclass(slots=True)
class TurnTakingReport:
    """What a run measured: figures per mode, every record, and what it ran on."""

    modes: list[ModeFigures]
    turns: list[TurnRecord]
    overlaps: list[OverlapRecord]
    voices: list[str]
    skipped_voices: list[str] = field(default_factory=list)
    conversations: int = 0


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def _median_of(
    turns: Sequence[TurnRecord], get: Callable[[TurnRecord], float | None]
) -> float | None:
    values = [v for v in map(get, turns) if v is not None]
    return float(statistics.median(values)) if values else None


def _text_to_audio(turn: TurnRecord) -> float | None:
    m = turn.metrics
    if m is None or m.end_of_turn_to_first_audio_ms is None:
        return None
    if m.end_of_turn_to_first_text_ms is None:
        return None
    return m.end_of_turn_to_first_audio_ms - m.end_of_turn_to_first_text_ms


def mode_figures(
    mode: str, in_use: str, turns: Sequence[TurnRecord], overlaps: Sequence[OverlapRecord]
) -> ModeFigures:
    """The figures of one mode's records."""
    manual = in_use == "manual"
    paused = [t for t in turns if t.kind == "pause"]
    premature = sum(t.premature for t in paused)
    valid = [o for o in overlaps if o.valid]
    backchannels = [o for o in valid if o.kind == "backchannel"]
    noises = [o for o in valid if o.kind == "noise"]
    real = [o for o in valid if o.kind == "interruption"]
    false_b = sum(o.interrupted_ms is not None for o in backchannels)
    false_n = sum(o.interrupted_ms is not None for o in noises)
    missed = sum(o.interrupted_ms is None or o.interrupted_ms > MISSED_AFTER_S * 1000 for o in real)
    false = backchannels + noises
    timed = [t for t in turns if t.latency_ms is not None]
    latencies = [t.latency_ms for t in timed if t.latency_ms is not None]
    return ModeFigures(
        mode=mode,
        in_use=in_use,
        paused_utterances=len(paused),
        premature_ends=premature,
        premature_rate=None if manual else _share(premature, len(paused)),
        backchannels=len(backchannels),
        backchannel_interruptions=false_b,
        noises=len(noises),
        noise_interruptions=false_n,
        false_interruption_rate=_share(false_b + false_n, len(backchannels) + len(noises)),
        interruptions=len(real),
        missed_interruptions=missed,
        missed_rate=_share(missed, len(real)),
        barge_in_p50_ms=_pct([o.interrupted_ms for o in real if o.interrupted_ms is not None], 50),
        went_on_rate=_share(sum(o.went_on for o in false), len(false)),
        gap_p50_ms=_pct([o.gap_ms for o in false if o.gap_ms is not None], 50),
        answered=sum(o.answered for o in false),
        latency_samples=len(latencies),
        latency_p50_ms=_pct(latencies, 50),
        latency_p90_ms=_pct(latencies, 90),
        turn_end_p50_ms=_median_of(timed, lambda t: t.turn_end_ms),
        stt_p50_ms=_median_of(timed, lambda t: t.metrics.stt_ms if t.metrics else None),
        llm_first_token_p50_ms=_median_of(
            timed, lambda t: t.metrics.llm_first_token_ms if t.metrics else None
        ),
        tts_first_audio_p50_ms=_median_of(
            timed, lambda t: t.metrics.tts_first_audio_ms if t.metrics else None
        ),
        text_to_audio_p50_ms=_median_of(timed, _text_to_audio),
        void_overlaps=len(overlaps) - len(valid),
        no_reply=sum(t.note == "no reply" for t in turns),
    )


# ======================================================================= printing


def _rate(value: float | None, count: int, total: int) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}% ({count}/{total})"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def print_report(report: TurnTakingReport) -> None:
    """The figures as a table, one column per mode, with the issue's targets."""
    columns = report.modes
    rows: list[tuple[str, list[str], str]] = [
        ("in use (turn ends, barge-in)", [m.in_use for m in columns], ""),
        (
            "premature end of turn (inner pauses)",
            [_rate(m.premature_rate, m.premature_ends, m.paused_utterances) for m in columns],
            f"<= {100 * TARGET_PREMATURE:.0f}%",
        ),
        (
            "false interruptions (backchannels + noises)",
            [
                _rate(
                    m.false_interruption_rate,
                    m.backchannel_interruptions + m.noise_interruptions,
                    m.backchannels + m.noises,
                )
                for m in columns
            ],
            f"<= {100 * TARGET_FALSE_INTERRUPTIONS:.0f}%",
        ),
        (
            "  of them backchannels",
            [
                _rate(
                    _share(m.backchannel_interruptions, m.backchannels),
                    m.backchannel_interruptions,
                    m.backchannels,
                )
                for m in columns
            ],
            "",
        ),
        (
            "  of them coughs and clicks",
            [
                _rate(_share(m.noise_interruptions, m.noises), m.noise_interruptions, m.noises)
                for m in columns
            ],
            "",
        ),
        (
            "  the agent went on after them",
            [
                _rate(m.went_on_rate, round((m.went_on_rate or 0) * _false(m)), _false(m))
                for m in columns
            ],
            "",
        ),
        ("  its longest silence then, p50", [_ms(m.gap_p50_ms) for m in columns], ""),
        (
            "  taken as a turn (got a reply)",
            [_rate(_share(m.answered, _false(m)), m.answered, _false(m)) for m in columns],
            "",
        ),
        (
            f"missed interruptions (none in {MISSED_AFTER_S:g} s)",
            [_rate(m.missed_rate, m.missed_interruptions, m.interruptions) for m in columns],
            "",
        ),
        ("barge-in onset -> interrupted, p50", [_ms(m.barge_in_p50_ms) for m in columns], ""),
        (
            "end of speech -> first agent audio, p50",
            [_ms(m.latency_p50_ms) for m in columns],
            f"<= {TARGET_LATENCY_P50_MS:g} ms (semantic)",
        ),
        ("end of speech -> first agent audio, p90", [_ms(m.latency_p90_ms) for m in columns], ""),
        ("  turns timed", [str(m.latency_samples) for m in columns], ""),
        ("  end of speech -> thinking, p50", [_ms(m.turn_end_p50_ms) for m in columns], ""),
        ("  metrics.stt_ms, p50", [_ms(m.stt_p50_ms) for m in columns], ""),
        ("  metrics.llm_first_token_ms, p50", [_ms(m.llm_first_token_p50_ms) for m in columns], ""),
        ("  metrics.tts_first_audio_ms, p50", [_ms(m.tts_first_audio_p50_ms) for m in columns], ""),
        (
            "  reply's first text -> first audio, p50",
            [_ms(m.text_to_audio_p50_ms) for m in columns],
            "",
        ),
        ("overlaps void (reply already over)", [str(m.void_overlaps) for m in columns], ""),
        (
            "CPU used by other processes meanwhile",
            [
                "n/a" if m.other_cpu_share is None else f"{100 * m.other_cpu_share:.0f}%"
                for m in columns
            ],
            "",
        ),
        ("turns without a reply", [str(m.no_reply) for m in columns], ""),
    ]
    width = max(len(title) for title, _, _ in rows) + 2
    cell = max(14, *(len(v) + 2 for _, values, _ in rows for v in values))
    header = "".ljust(width) + "".join(m.mode.ljust(cell) for m in columns) + "target"
    print(header)
    print("-" * len(header))
    for title, values, target in rows:
        print(title.ljust(width) + "".join(v.ljust(cell) for v in values) + target)


def _false(m: ModeFigures) -> int:
    return m.backchannels + m.noises
