"""``scaivoice bench stack``, the command: the three parts in order, against a started server
(the embedded stack, built-in plugins only) or the one given by ``--url``."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from scaivoice.engine import PluginHost

from .._proc import rss_mib
from .._server import local_server
from .report import cpu_sample, print_backends, print_cpu, print_memory, print_turn, print_turns
from .rtf import Utterance, measure_backends
from .session import TurnRecord, measure_memory, run_turns

__all__ = ["MAX_TOKENS", "run_stack_benchmark"]

MAX_TOKENS = 40
_START_TIMEOUT_S = 300.0


def run_stack_benchmark(
    *, turns: int, url: str | None, api_key: str | None, min_silence_ms: int | None
) -> int:
    """Run the benchmark and print its figures. Returns a process exit code."""
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    utterances, timings = trio.run(measure_backends, host)
    print_backends(utterances, timings)
    if url is not None:
        records = _turns_remote(url, api_key, utterances, turns)
    else:
        url, records = _turns_local(api_key, utterances, turns, min_silence_ms)
    return print_turns(records, url, min_silence_ms, max_tokens=MAX_TOKENS)


def _turns_remote(
    url: str, api_key: str | None, utterances: Sequence[Utterance], turns: int
) -> list[TurnRecord]:
    """The turns against a server given by ``--url`` (its memory is not ours to read)."""
    print("memory: not measured (--url: the server process is not ours)", flush=True)
    before = cpu_sample(None)
    records = trio.run(run_turns, url, api_key, utterances, turns, print_turn)
    print_cpu(before, cpu_sample(None), server=False)
    return records


def _turns_local(
    api_key: str | None, utterances: Sequence[Utterance], turns: int, min_silence_ms: int | None
) -> tuple[str, list[TurnRecord]]:
    """Start a server, measure its memory, then the turns -> (session URL, records)."""
    config = _config_text(min_silence_ms)
    with local_server(config, start_timeout_s=_START_TIMEOUT_S) as server:
        url, pid = server.session_url, server.pid
        print_memory(trio.run(measure_memory, url, api_key, pid))
        before = cpu_sample(pid)
        records = trio.run(run_turns, url, api_key, utterances, turns, print_turn)
        print_cpu(before, cpu_sample(pid), server=True)
        rss, peak = rss_mib(pid), rss_mib(pid, "VmHWM")
        if rss is not None and peak is not None:
            print(f"server RSS after the turns: {rss:.1f} MiB (peak {peak:.1f} MiB)")
        _print_early_replies(server.http_url)
    return url, records


def _print_early_replies(http_url: str) -> None:
    """How the server's early replies ended (from its Prometheus metrics)."""
    try:
        text = httpx.get(http_url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "scaivoice_early_replies_total":
                outcome = sample.labels["outcome"]
                counts[outcome] = counts.get(outcome, 0.0) + sample.value
    summary = ", ".join(f"{name} {int(n)}" for name, n in sorted(counts.items())) or "none"
    print(f"replies started at the user's pause (early replies): {summary}")


def _config_text(min_silence_ms: int | None) -> str:
    """The server's TOML: the embedded stack, short replies, optionally the VAD hang time."""
    text = (
        '[backends]\nstt = "whisper"\nllm = "llama-cpp"\ntts = "hibari"\n\n'
        f"[backends.options.llama-cpp]\nmax_tokens = {MAX_TOKENS}\nseed = 0\n"
    )
    if min_silence_ms is not None:
        text += f"\n[backends.feature_options.silero-vad]\nmin_silence_ms = {min_silence_ms}\n"
    return text
