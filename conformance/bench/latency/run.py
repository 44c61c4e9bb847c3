"""``scaivoice bench latency``, the command: the stub, the rounds, the idle sessions."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import httpx
import trio

from scaivoice.engine import PluginHost

from .._proc import CLOCK_TICKS, machine_ticks, process_ticks
from .._server import local_server
from .audio import NoiseLoop, Question, noise_frames, render_question
from .idle import measure_idle
from .processes import tree, tree_rss_mib, tree_ticks
from .report import CpuShares, LatencyReport, parse_counters, print_idle, print_round
from .rounds import RoundPlan, run_round
from .stub import StubConfig, StubStats, running_stub

__all__ = [
    "QUESTION",
    "LatencyOptions",
    "add_arguments",
    "measure_latency",
    "options_from_arguments",
    "run_from_arguments",
    "run_latency_benchmark",
]

QUESTION = "What time does the pharmacy open today?"
"""1.92 s in hibari's voice heart."""

_COUNTERS = ("scaivoice_speculative", "scaivoice_early_replies")
_SETTLE_S = 1.0


@dataclass(frozen=True, slots=True)
class LatencyOptions:
    """The benchmark's knobs (the command line's options)."""

    rounds: int = 10
    noise_dbfs: float = -58.0
    question: str = QUESTION
    stub: StubConfig = field(default_factory=lambda: StubConfig(transcripts=(QUESTION,)))
    tts_format: str = "pcm"
    """The ``openai`` TTS backend's ``response_format``: ``pcm`` or ``wav``."""
    lead_s: float = 0.6
    barge_in_after_s: float = 0.4
    tail_s: float = 1.0
    idle_sessions: Sequence[int] = (10, 100, 300)
    idle_warmup_s: float = 3.0
    idle_window_s: float = 10.0


def run_latency_benchmark(options: LatencyOptions, *, as_json: bool = False) -> int:
    """Run the benchmark and print its figures (or, with ``as_json``, one JSON document).

    Returns 0 when every round gave every row and every idle session connected, else 1.
    """
    report = measure_latency(options, verbose=not as_json)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    rows_complete = all(s.count == len(report.rounds) for s in report.summary().values())
    idle_complete = all(f.connected == f.sessions for f in report.idle)
    return 0 if rows_complete and idle_complete else 1


def measure_latency(options: LatencyOptions, *, verbose: bool = False) -> LatencyReport:
    """Start the stub and a server, run the rounds; start a fresh server, run the idle
    sessions. With ``verbose``, print the figures as they come."""
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    question = trio.run(render_question, host, options.question)
    noise = noise_frames(options.noise_dbfs)
    report = LatencyReport(settings=_settings(options, question))
    if verbose:
        report.print_header()
    with running_stub(options.stub) as (stub_url, stub_pid):
        config = _config_text(stub_url, options.tts_format)
        if options.rounds > 0:
            plan = RoundPlan(
                question,
                noise,
                lead_s=options.lead_s,
                barge_in_after_s=options.barge_in_after_s,
                tail_s=options.tail_s,
            )
            with local_server(config) as server:
                requests_before = _stub_stats(stub_url)
                before = _ticks(server.pid, stub_pid)
                trio.run(_rounds, report, options.rounds, server.session_url, plan, verbose)
                report.cpu = _shares(before, _ticks(server.pid, stub_pid))
                time.sleep(_SETTLE_S)  # the cancelled requests end
                report.requests = _stub_stats(stub_url).minus(requests_before)
                report.server_counters = _server_counters(server.http_url)
            if verbose:
                report.print_rounds_summary()
        if options.idle_sessions:
            # Every session comes from one address: no per-address connection limit.
            idle_config = config + "\n[server]\nmax_connections_per_ip = 0\n"
            with local_server(idle_config) as server:
                time.sleep(_SETTLE_S)
                report.idle_rss_after_start_mib = tree_rss_mib(server.pid)
                report.idle_server_processes = len(tree(server.pid))
                report.idle_server_cpu_ms_per_s = _cpu_ms_per_s(server.pid, options.idle_window_s)
                if verbose:
                    report.print_idle_header()
                for sessions in options.idle_sessions:
                    figures = trio.run(
                        partial(
                            measure_idle,
                            server.session_url,
                            None,
                            sessions=sessions,
                            noise=noise,
                            server_pid=server.pid,
                            warmup_s=options.idle_warmup_s,
                            window_s=options.idle_window_s,
                        )
                    )
                    report.idle.append(figures)
                    if verbose:
                        print_idle(figures)
                    time.sleep(_SETTLE_S)
    return report


async def _rounds(
    report: LatencyReport, rounds: int, url: str, plan: RoundPlan, verbose: bool
) -> None:
    for number in range(1, rounds + 1):
        record = await run_round(url, None, plan, NoiseLoop(plan.noise, offset=97 * number))
        report.rounds.append(record)
        if verbose:
            print_round(number, record)


def _settings(options: LatencyOptions, question: Question) -> dict[str, object]:
    stub = options.stub
    return {
        "rounds": options.rounds,
        "noise_dbfs": options.noise_dbfs,
        "question": question.text,
        "question_source": question.source,
        "question_s": question.duration_s,
        "stt_delay_ms": stub.stt_delay_ms,
        "llm_delay_ms": stub.llm_delay_ms,
        "tts_delay_ms": stub.tts_delay_ms,
        "tts_seconds": stub.tts_seconds,
        "tts_format": options.tts_format,
        "transcripts": list(stub.transcripts),
        "reply": stub.reply,
        "lead_s": options.lead_s,
        "barge_in_after_s": options.barge_in_after_s,
        "tail_s": options.tail_s,
        "idle_sessions": list(options.idle_sessions),
        "idle_warmup_s": options.idle_warmup_s,
        "idle_window_s": options.idle_window_s,
        "cpu_count": os.cpu_count(),
    }


def _config_text(stub_url: str, tts_format: str) -> str:
    """The server's TOML: the openai backends on the stub, everything else default."""
    return (
        '[backends]\nstt = "openai"\nllm = "openai"\ntts = "openai"\n\n'
        f'[backends.options.stt.openai]\nbase_url = "{stub_url}"\n\n'
        f'[backends.options.llm.openai]\nbase_url = "{stub_url}"\nmodel = "stub"\n\n'
        f'[backends.options.tts.openai]\nbase_url = "{stub_url}"\n'
        f'response_format = "{tts_format}"\n'
    )


def _stub_stats(stub_url: str) -> StubStats:
    answer = httpx.get(stub_url.removesuffix("/v1") + "/stats", timeout=10)
    answer.raise_for_status()
    return StubStats.from_json(answer.json())


def _server_counters(http_url: str) -> dict[str, float]:
    try:
        metrics = httpx.get(http_url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    return parse_counters(metrics, _COUNTERS)


def _cpu_ms_per_s(pid: int, seconds: float) -> float | None:
    """A process's (and its children's) CPU time per second over the next ``seconds``."""
    before, start = tree_ticks(pid), time.perf_counter()
    time.sleep(seconds)
    after = tree_ticks(pid)
    if before is None or after is None:
        return None
    return (after - before) / CLOCK_TICKS * 1000 / (time.perf_counter() - start)


_Ticks = tuple[int, int, int, int, int]
"""The machine's busy and total ticks, the server's, the stub's, this process's."""


def _ticks(server_pid: int, stub_pid: int) -> _Ticks | None:
    machine = machine_ticks()
    server, stub, client = (
        tree_ticks(server_pid),
        process_ticks(stub_pid),
        process_ticks(os.getpid()),
    )
    if machine is None or server is None or stub is None or client is None:
        return None
    return machine.busy, machine.total, server, stub, client


def _shares(before: _Ticks | None, after: _Ticks | None) -> CpuShares | None:
    if before is None or after is None:
        return None
    busy, total, server, stub, client = (a - b for a, b in zip(after, before, strict=True))
    total = max(total, 1)
    return CpuShares(
        server=server / total,
        stub=stub / total,
        client=client / total,
        others=max(busy - server - stub - client, 0) / total,
    )


# ====================================================================== the command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``bench latency``'s options (the knobs of :class:`LatencyOptions` and the stub)."""
    default, stub = LatencyOptions(), StubConfig()
    parser.add_argument("--rounds", type=int, default=default.rounds)
    parser.add_argument(
        "--noise-dbfs", type=float, default=default.noise_dbfs, help="the room's noise (RMS)"
    )
    parser.add_argument("--question", default=default.question, help="what the user asks")
    parser.add_argument("--delay-ms", type=float, help="every stub route's delay (default 100)")
    for kind in ("stt", "llm", "tts"):
        parser.add_argument(f"--{kind}-delay-ms", type=float, help=f"the stub's {kind} delay")
    parser.add_argument(
        "--tts-seconds", type=float, default=stub.tts_seconds, help="audio in each speech reply"
    )
    parser.add_argument("--tts-format", choices=["pcm", "wav"], default=default.tts_format)
    parser.add_argument(
        "--transcript",
        action="append",
        help="the stub's transcripts, in turn (repeatable; default: the question)",
    )
    parser.add_argument("--reply", default=stub.reply, help="the stub's chat reply")
    parser.add_argument(
        "--idle",
        default=",".join(str(n) for n in default.idle_sessions),
        help="idle session counts, comma-separated ('' for none)",
    )
    parser.add_argument("--idle-window", type=float, default=default.idle_window_s)
    parser.add_argument("--idle-warmup", type=float, default=default.idle_warmup_s)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run_from_arguments(args: argparse.Namespace) -> int:
    """Run ``bench latency`` with the options of :func:`add_arguments`."""
    return run_latency_benchmark(options_from_arguments(args), as_json=args.json)


def options_from_arguments(args: argparse.Namespace) -> LatencyOptions:
    """The :class:`LatencyOptions` that the options of :func:`add_arguments` ask for."""

    def delay(value: float | None) -> float:
        return value if value is not None else args.delay_ms if args.delay_ms is not None else 100

    stub = StubConfig(
        stt_delay_ms=delay(args.stt_delay_ms),
        llm_delay_ms=delay(args.llm_delay_ms),
        tts_delay_ms=delay(args.tts_delay_ms),
        transcripts=tuple(args.transcript or (args.question,)),
        reply=args.reply,
        tts_seconds=args.tts_seconds,
    )
    return LatencyOptions(
        rounds=args.rounds,
        noise_dbfs=args.noise_dbfs,
        question=args.question,
        stub=stub,
        tts_format=args.tts_format,
        idle_sessions=tuple(int(n) for n in args.idle.split(",") if n.strip()),
        idle_warmup_s=args.idle_warmup,
        idle_window_s=args.idle_window,
    )
