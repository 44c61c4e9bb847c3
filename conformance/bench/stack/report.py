"""What ``bench stack`` prints: real-time factors, memory, CPU shares and the turns' latency."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._proc import machine_ticks, process_ticks
from .rtf import TIMING_REPEATS, BackendTimings, Utterance
from .session import IDLE_SESSIONS, MemoryFigures, TurnRecord

__all__ = [
    "CpuSample",
    "cpu_sample",
    "print_backends",
    "print_cpu",
    "print_memory",
    "print_turn",
    "print_turns",
]

_TARGET_P50_MS = 800.0
_TARGET_SESSION_MB = 5.0


@dataclass(frozen=True, slots=True)
class _Split:
    """One complete turn's latency and its parts, in milliseconds."""

    total: float
    hang: float
    stt: float
    llm: float
    piece: float
    tts: float

    @property
    def rest(self) -> float:
        return self.total - self.hang - self.stt - self.llm - self.piece - self.tts


def _split(record: TurnRecord) -> _Split:
    """The parts of a complete turn's latency."""
    m = record.metrics
    assert record.complete and m is not None
    assert record.thinking is not None and record.first_audio is not None
    assert record.first_text is not None and record.first_piece is not None
    return _Split(
        total=(record.first_audio - record.speech_end) * 1000,
        hang=(record.thinking - record.speech_end) * 1000,
        stt=float(m.stt_ms or 0.0),
        llm=float(m.llm_first_token_ms or 0.0),
        piece=(record.first_piece - record.first_text) * 1000,
        tts=float(m.tts_first_audio_ms or 0.0),
    )


def print_backends(utterances: Sequence[Utterance], timings: BackendTimings) -> None:
    seconds = sum(u.duration_s for u in utterances)
    print(
        f"utterances: {len(utterances)} sentences by hibari (heart, seed 0), {seconds:.1f} s, "
        "16 kHz"
    )
    print(
        "in-process real-time factors (compute time / audio duration; median of "
        f"{TIMING_REPEATS} runs a sentence):"
    )
    _print_stat("  TTS hibari: real-time factor", timings.tts_rtf, "", digits=3)
    _print_stat("  TTS hibari: first chunk", timings.tts_first_chunk_ms, " ms")
    _print_stat(
        "  STT whisper (a live session's final decode): real-time factor",
        timings.stt_rtf,
        "",
        digits=3,
    )
    _print_stat(
        "  STT whisper (final decode with word timings, as voice notes): real-time factor",
        timings.stt_words_rtf,
        "",
        digits=3,
    )
    for utterance, heard in zip(utterances, timings.transcripts, strict=True):
        print(f"    {utterance.text!r} -> {heard!r}")
    sys.stdout.flush()


def print_memory(memory: MemoryFigures) -> None:
    verdict = "ok" if memory.per_session <= _TARGET_SESSION_MB else "OVER TARGET"
    print(
        "server resident memory (VmRSS):\n"
        f"  after start-up           {memory.after_start:8.1f} MiB\n"
        f"  1 idle session open      {memory.one_session:8.1f} MiB\n"
        f"  {IDLE_SESSIONS} idle sessions open    {memory.ten_sessions:8.1f} MiB\n"
        f"  per additional session   {memory.per_session:8.2f} MiB   "
        f"target <= {_TARGET_SESSION_MB:g} MB: {verdict}",
        flush=True,
    )


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU time so far, in clock ticks: the machine's busy and total, the server's, ours."""

    busy: int
    total: int
    server: int
    client: int


def cpu_sample(server_pid: int | None) -> CpuSample | None:
    """The machine's and the two processes' CPU time; None where ``/proc`` cannot be read."""
    machine = machine_ticks()
    server = process_ticks(server_pid) if server_pid is not None else 0
    client = process_ticks(os.getpid())
    if machine is None or server is None or client is None:
        return None
    return CpuSample(machine.busy, machine.total, server, client)


def print_cpu(before: CpuSample | None, after: CpuSample | None, *, server: bool) -> None:
    """How the machine's CPU time was spent during the turns (others skew the latencies)."""
    if before is None or after is None:
        print("CPU during the turns: not measured (no /proc)", flush=True)
        return
    total = max(after.total - before.total, 1)
    cores = os.cpu_count() or 1
    ours = after.client - before.client
    theirs = after.server - before.server
    others = after.busy - before.busy - ours - theirs
    parts = [("server", theirs)] if server else []
    parts += [
        ("this client", ours),
        ("other processes" + ("" if server else ", the server's among them"), others),
    ]
    share = ", ".join(f"{name} {100 * ticks / total:.0f}%" for name, ticks in parts)
    print(f"CPU during the turns, share of {cores} cores: {share}")
    if server and others / total > 0.1:
        print("  WARNING: other processes were busy: the latencies above are pessimistic")
    sys.stdout.flush()


def print_turn(number: int, record: TurnRecord) -> None:
    """One line a turn: its latency split, what was heard and what was answered."""
    if not record.complete:
        print(
            f"  turn {number:2d}: incomplete (heard {record.transcript!r}, "
            f"reply {record.reply!r}, {'; '.join(record.errors) or 'no audio'})",
            flush=True,
        )
        return
    s = _split(record)
    print(
        f"  turn {number:2d}: {s.total:6.0f} ms = hang {s.hang:4.0f} + stt {s.stt:4.0f} + "
        f"llm {s.llm:4.0f} + piece {s.piece:4.0f} + tts {s.tts:4.0f} + rest {s.rest:4.0f} | "
        f"heard {record.transcript!r} -> {record.reply!r}",
        flush=True,
    )


def print_turns(
    records: Sequence[TurnRecord], url: str, min_silence_ms: int | None, *, max_tokens: int
) -> int:
    """The latency figures over the complete turns. Returns the exit code."""
    splits = [_split(r) for r in records if r.complete]
    hang = f"min_silence_ms = {min_silence_ms}" if min_silence_ms is not None else "plugin default"
    print(
        f"{len(records)} turns through {url} ({len(splits)} complete); VAD hang: {hang}; "
        f"replies capped at {max_tokens} tokens"
    )
    if not splits:
        print("no turn produced audio", flush=True)
        return 1
    totals = [s.total for s in splits]
    verdict = "ok" if statistics.median(totals) <= _TARGET_P50_MS else "OVER TARGET"
    print("end of speech -> first agent audio byte (client):")
    _print_stat("  total", totals, " ms", target=f"target p50 <= {_TARGET_P50_MS:g} ms: {verdict}")
    parts = (
        ("VAD hang (end of speech -> state: thinking)", [s.hang for s in splits]),
        ("STT final (metrics.stt_ms)", [s.stt for s in splits]),
        ("LLM first token (metrics.llm_first_token_ms)", [s.llm for s in splits]),
        ("LLM first token -> first speakable piece", [s.piece for s in splits]),
        ("TTS first audio (metrics.tts_first_audio_ms)", [s.tts for s in splits]),
        ("engine remainder", [s.rest for s in splits]),
    )
    for title, values in parts:
        _print_stat(f"    {title}", values, " ms")
    print(
        "  (the means add up to the total's mean; percentiles of parts do not add up)", flush=True
    )
    return 0


def _print_stat(
    title: str, values: Sequence[float], unit: str, *, digits: int = 0, target: str = ""
) -> None:
    """p50, p90 and mean of ``values`` on one line."""
    array = np.asarray(values, dtype=np.float64)
    p50, p90 = np.percentile(array, [50, 90])
    f = f".{digits}f"
    line = f"{title}: p50 {p50:{f}}{unit}  p90 {p90:{f}}{unit}  mean {array.mean():{f}}{unit}"
    print(f"{line}   {target}" if target else line)
