"""What ``bench latency`` measured (:class:`LatencyReport`), and how it is printed."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .idle import IdleFigures
from .rounds import RoundRecord
from .stub import StubStats

__all__ = ["ROWS", "CpuShares", "LatencyReport", "RowSummary", "print_idle", "print_round"]

ROWS: Mapping[str, tuple[str, Callable[[RoundRecord], float | None]]] = {
    "end_of_speech_to_first_audio_ms": (
        "end of speech -> first agent audio byte",
        lambda r: r.end_to_first_audio_ms,
    ),
    "onset_to_interrupted_ms": (
        "barge-in: speech onset -> interrupted",
        lambda r: r.onset_to_interrupted_ms,
    ),
    "onset_to_last_audio_ms": (
        "barge-in: speech onset -> last agent audio byte",
        lambda r: r.onset_to_last_audio_ms,
    ),
    "naive_onset_to_silence_ms": (
        "naive client (plays all it got, ignores interrupted): onset -> silence",
        lambda r: r.naive_silence_ms,
    ),
    "end_of_speech_to_thinking_ms": (
        "(end of speech -> state: thinking)",
        lambda r: r.end_to_thinking_ms,
    ),
}
"""The table's rows: key -> (title, the round's value)."""


@dataclass(frozen=True, slots=True)
class RowSummary:
    """One row over the rounds that gave it a value."""

    count: int
    median: float | None
    p90: float | None


@dataclass(frozen=True, slots=True)
class CpuShares:
    """How the machine's CPU time was spent during the rounds (shares of all cores)."""

    server: float
    stub: float
    client: float
    others: float


@dataclass(slots=True)
class LatencyReport:
    """Everything ``bench latency`` measured; :meth:`to_json` is what ``--json`` prints."""

    settings: dict[str, object]
    rounds: list[RoundRecord] = field(default_factory=list)
    requests: StubStats | None = None
    """What the stub was asked during the rounds."""
    server_counters: dict[str, float] = field(default_factory=dict)
    """The server's ``scaivoice_speculative*`` and ``scaivoice_early_replies`` counters after
    the rounds, summed over tenants: ``name{label="value"}`` -> count."""
    cpu: CpuShares | None = None
    idle_rss_after_start_mib: float | None = None
    idle_server_cpu_ms_per_s: float | None = None
    idle_server_processes: int = 1
    """The idle server's processes (``serve --workers``: a supervisor and its workers)."""
    """The fresh server's own CPU time per second with no session open."""
    idle: list[IdleFigures] = field(default_factory=list)

    @property
    def user_turns(self) -> int:
        """Two user turns a round: the question and the barge-in."""
        return 2 * len(self.rounds)

    def row(self, key: str) -> list[float]:
        value = ROWS[key][1]
        return [v for v in (value(r) for r in self.rounds) if v is not None]

    def summary(self) -> dict[str, RowSummary]:
        out = {}
        for key in ROWS:
            values = self.row(key)
            if values:
                p50, p90 = np.percentile(np.asarray(values), [50, 90])
                out[key] = RowSummary(len(values), float(p50), float(p90))
            else:
                out[key] = RowSummary(0, None, None)
        return out

    def requests_per_turn(self) -> dict[str, float]:
        if self.requests is None or not self.rounds:
            return {}
        return {
            name: self.requests.route(name).requests / self.user_turns
            for name in ("stt", "llm", "tts")
        }

    def to_json(self) -> dict[str, object]:
        return {
            "settings": self.settings,
            "rounds": [
                {key: value(r) for key, (_, value) in ROWS.items()} | {"errors": r.errors}
                for r in self.rounds
            ],
            "summary": {
                key: {"count": s.count, "median": s.median, "p90": s.p90}
                for key, s in self.summary().items()
            },
            "user_turns": self.user_turns,
            "stub_requests": self.requests.to_json() if self.requests else None,
            "stub_requests_per_turn": self.requests_per_turn(),
            "server_counters": self.server_counters,
            "cpu_shares": None
            if self.cpu is None
            else {
                "server": self.cpu.server,
                "stub": self.cpu.stub,
                "client": self.cpu.client,
                "others": self.cpu.others,
            },
            "idle_rss_after_start_mib": self.idle_rss_after_start_mib,
            "idle_server_cpu_ms_per_s": self.idle_server_cpu_ms_per_s,
            "idle_server_processes": self.idle_server_processes,
            "idle": [figures.to_json() for figures in self.idle],
        }

    # ------------------------------------------------------------------ text

    def print_header(self) -> None:
        s = self.settings
        print(
            f"bench latency: OpenAI-compatible stub, STT / LLM / TTS answer after "
            f"{s['stt_delay_ms']:g} / {s['llm_delay_ms']:g} / {s['tts_delay_ms']:g} ms, "
            f"speech replies of {s['tts_seconds']:g} s ({s['tts_format']})\n"
            f"question: {s['question']!r}, {s['question_source']}, {s['question_s']:.2f} s; "
            f"noise {s['noise_dbfs']:g} dBFS; {s['rounds']} rounds; server: the openai backends, "
            f"vad_enabled, everything else default\n"
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}",
            flush=True,
        )

    def print_rounds_summary(self) -> None:
        complete = sum(not r.errors for r in self.rounds)
        print(f"{len(self.rounds)} rounds ({complete} without errors):")
        print(f"  {'':74s} {'median':>8s} {'p90':>8s}   n")
        for key, summary in self.summary().items():
            title = ROWS[key][0]
            if summary.count:
                assert summary.median is not None and summary.p90 is not None
                print(
                    f"  {title:74s} {summary.median:5.0f} ms {summary.p90:5.0f} ms  "
                    f"{summary.count:2d}"
                )
            else:
                print(f"  {title:74s} {'-':>8s} {'-':>8s}   0")
        if self.requests is not None:
            per_turn = self.requests_per_turn()
            abandoned = ", ".join(
                f"{name} {self.requests.route(name).abandoned}" for name in ("stt", "llm", "tts")
            )
            print(
                f"backend requests per user turn (stub, {self.user_turns} turns): "
                + ", ".join(f"{name} {n:.2f}" for name, n in per_turn.items())
                + f"; abandoned by the server (cancelled): {abandoned}"
            )
        self._print_speculative()
        early = {k: v for k, v in self.server_counters.items() if "early_replies" in k and v}
        if early:
            print(
                "early replies (server metrics): "
                + ", ".join(f"{k} {v:g}" for k, v in sorted(early.items()))
            )
        if self.cpu is not None:
            c = self.cpu
            print(
                f"CPU during the rounds, share of {os.cpu_count()} cores: server "
                f"{100 * c.server:.0f}%, stub {100 * c.stub:.0f}%, this client "
                f"{100 * c.client:.0f}%, other processes {100 * c.others:.0f}%"
            )
            if c.others > 0.1:
                print("  WARNING: other processes were busy: the latencies above are pessimistic")
        sys.stdout.flush()

    def _print_speculative(self) -> None:
        counters = {k: v for k, v in self.server_counters.items() if "speculative" in k}
        if not counters:
            print("speculative requests: the server has no scaivoice_speculative metric")
            return
        turns = max(self.user_turns, 1)
        outcomes: dict[str, float] = {}
        for key, value in counters.items():
            outcome = key.split('outcome="', 1)[1].split('"', 1)[0] if "outcome=" in key else ""
            if outcome:
                outcomes[outcome] = outcomes.get(outcome, 0.0) + value
        started = sum(outcomes.values())
        parts = [f"started {started:g} ({started / turns:.2f} per turn)"]
        parts += [
            f"{name} {n:g} ({n / turns:.2f} per turn)" for name, n in sorted(outcomes.items())
        ]
        print(
            f"speculative requests (server metrics, {self.user_turns} user turns): "
            + ", ".join(parts)
        )
        for key, value in sorted(counters.items()):
            if value:
                print(f"  {key}: {value:g}")

    def print_idle_header(self) -> None:
        rss, cpu = self.idle_rss_after_start_mib, self.idle_server_cpu_ms_per_s
        fresh = [f"{rss:.1f} MiB" if rss is not None else "RSS ?"]
        if self.idle_server_processes > 1:
            fresh.append(f"{self.idle_server_processes} processes (CPU and RSS added up)")
        if cpu is not None:
            fresh.append(f"{cpu:.1f} ms of CPU a second without sessions")
        print(
            f"idle sessions streaming noise ({self.settings['noise_dbfs']:g} dBFS) in real time, "
            f"server VAD on; a fresh server after start-up: {', '.join(fresh)}\n"
            f"  {'sessions':>8s} {'CPU/session-s':>14s} {'server CPU':>11s} {'RSS':>10s} "
            f"{'lag p50/p99':>14s} {'client CPU':>11s}",
            flush=True,
        )


def print_round(number: int, record: RoundRecord) -> None:
    """One line a round."""

    def ms(value: float | None) -> str:
        return f"{value:5.0f} ms" if value is not None else "    - ms"

    line = (
        f"  round {number:2d}: end of speech -> audio {ms(record.end_to_first_audio_ms)} | "
        f"onset -> interrupted {ms(record.onset_to_interrupted_ms)}, "
        f"-> last audio {ms(record.onset_to_last_audio_ms)}, "
        f"naive silent {ms(record.naive_silence_ms)}"
    )
    if record.errors:
        line += f" | {'; '.join(record.errors)}"
    print(line, flush=True)


def print_idle(figures: IdleFigures) -> None:
    """One line an idle measurement."""

    def value(v: float | None, unit: str, digits: int = 1) -> str:
        return f"{v:.{digits}f}{unit}" if v is not None else "?"

    lag = (
        f"{value(figures.lag_p50_ms, '', 0)}/{value(figures.lag_p99_ms, ' ms', 0)}"
        if figures.lag_p99_ms is not None
        else "?"
    )
    line = (
        f"  {figures.sessions:8d} {value(figures.cpu_ms_per_session_s, ' ms'):>14s} "
        f"{value(figures.server_cores, ' cores', 2):>11s} {value(figures.rss_mib, ' MiB'):>10s} "
        f"{lag:>14s} {figures.client_cores:6.2f} cores"
    )
    if figures.connected < figures.sessions:
        line += f" | only {figures.connected} connected"
    if not figures.kept_up:
        line += " | fell behind real time (lag p99 > 100 ms)"
    if figures.errors:
        line += f" | {', '.join(figures.errors[:5])}"
    print(line, flush=True)


def parse_counters(metrics_text: str, prefixes: Sequence[str]) -> dict[str, float]:
    """The counters whose names start with one of ``prefixes``, summed over tenants (a counter
    that has counted nothing yet, so has no labelled sample, is ``name_total``: 0)."""
    from prometheus_client.parser import text_string_to_metric_families

    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if not family.name.startswith(tuple(prefixes)):
            continue
        if not family.samples:  # a labelled counter before its first count
            counters[family.name + ("_total" if family.type == "counter" else "")] = 0.0
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(
                f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k != "tenant"
            )
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            counters[key] = counters.get(key, 0.0) + sample.value
    return counters
