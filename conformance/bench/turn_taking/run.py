"""``scaivoice bench turn-taking``, the command: the conversations rendered, a server started
(the embedded stack) or the one given by ``--url`` used, each mode measured in turn."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence

import msgspec
import trio

from scaivoice.engine import PluginHost, ScaiVoiceError

from .._server import local_server
from ..stack.report import cpu_sample, print_cpu
from .conversation import OverlapRecord, TurnRecord, run_conversation
from .figures import TurnTakingReport, mode_figures, print_report
from .plan import CATEGORIES, OVERLAP_CATEGORIES, Conversation, Step, build_conversations
from .speech import VOICES

__all__ = ["MAX_TOKENS", "MODES", "run_turn_taking", "run_turn_taking_benchmark"]

MODES = ("semantic", "server_vad", "manual", "semantic+hold")
"""``turn_detection`` values; ``+hold``: with ``barge_in_hold`` (speech over the agent only)."""
MAX_TOKENS = 60
_START_TIMEOUT_S = 300.0


def _config(llm: str) -> str:
    """The started server's TOML: the embedded stack, replies of at most 60 tokens."""
    return (
        f'[backends]\nstt = "whisper"\nllm = "{llm}"\ntts = "hibari"\n\n'
        f"[backends.options.llama-cpp]\nmax_tokens = {MAX_TOKENS}\nseed = 0\n"
    )


OnRecord = Callable[[TurnRecord | OverlapRecord], None]


def run_turn_taking(
    *,
    modes: Sequence[str] = MODES,
    per_category: int = 5,
    turns: int = 3,
    voices: Sequence[str] = VOICES,
    categories: Sequence[str] = CATEGORIES,
    url: str | None = None,
    api_key: str | None = None,
    seed: int = 0,
    llm: str = "llama-cpp",
    on_record: OnRecord | None = None,
    on_mode: Callable[[str], None] | None = None,
) -> TurnTakingReport:
    """Render the conversations, then run them once per mode, each in a session of its own.

    Without ``url`` a server with the embedded stack (whisper, llama-cpp, hibari, Silero VAD,
    and the end-of-turn model where installed) is started on loopback and stopped after.
    ``manual`` runs only the categories without speech over the agent (latency: the client
    commits at the end of speech); ``semantic+hold`` (``barge_in_hold: true``) only those with
    it.

    Args:
        modes: ``turn_detection`` values, ``+hold`` for ``barge_in_hold``; in this order.
        per_category: conversations in each category.
        turns: steps in each conversation.
        voices: ``backend:voice[@speed]``; voices whose backend is missing are left out.
        categories: which of :data:`~.plan.CATEGORIES` to run.
        llm: the started server's language model (``echo``: no model, replies at once).
        on_record: called with each record as it is made (progress).
        on_mode: called before each mode starts, and with a line on the CPU after it.

    Raises:
        ScaiVoiceError: no voice could be rendered, or the server did not start.
    """
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    conversations, skipped = trio.run(
        lambda: build_conversations(
            host, voices, per_category=per_category, turns=turns, categories=categories, seed=seed
        )
    )
    if not conversations:
        raise ScaiVoiceError(f"no conversation could be rendered (voices left out: {skipped})")
    report = TurnTakingReport(
        modes=[],
        turns=[],
        overlaps=[],
        voices=sorted({c.voice for c in conversations}),
        skipped_voices=skipped,
        conversations=len(conversations),
    )
    if url is not None:
        _measure_all(url, api_key, modes, conversations, seed, report, on_record, on_mode, None)
        return report
    with local_server(_config(llm), start_timeout_s=_START_TIMEOUT_S) as server:
        _measure_all(
            server.session_url, api_key, modes, conversations, seed, report, on_record, on_mode,
            server.pid,
        )  # fmt: skip
    return report


def _measure_all(
    url: str,
    api_key: str | None,
    modes: Sequence[str],
    conversations: Sequence[Conversation],
    seed: int,
    report: TurnTakingReport,
    on_record: OnRecord | None,
    on_mode: Callable[[str], None] | None,
    pid: int | None,
) -> None:
    trio.run(_warm_up, url, api_key, conversations)
    for mode in modes:
        if on_mode is not None:
            on_mode(f"turn_detection: {mode}")
        chosen = [c for c in conversations if _runs(mode, c.category)]
        before = cpu_sample(pid)
        in_use, records = trio.run(_measure, url, api_key, mode, chosen, seed, on_record)
        turns = [r for r in records if isinstance(r, TurnRecord)]
        overlaps = [r for r in records if isinstance(r, OverlapRecord)]
        report.turns += turns
        report.overlaps += overlaps
        after = cpu_sample(pid)
        figures = mode_figures(mode, in_use, turns, overlaps)
        if pid is not None and before is not None and after is not None:
            others = after.busy - before.busy - (after.client - before.client)
            others -= after.server - before.server
            share = others / max(after.total - before.total, 1)
            figures = dataclasses.replace(figures, other_cpu_share=max(share, 0.0))
        report.modes.append(figures)
        if on_mode is not None:
            print_cpu(before, after, server=pid is not None)


def _runs(mode: str, category: str) -> bool:
    """``manual`` measures latency only; ``+hold`` only speech over the agent (the turns'
    figures would repeat those of its mode)."""
    if mode == "manual":
        return category not in OVERLAP_CATEGORIES
    return not mode.endswith("+hold") or category in OVERLAP_CATEGORIES


async def _warm_up(url: str, api_key: str | None, conversations: Sequence[Conversation]) -> None:
    """One turn, not counted: the models' first calls are slow."""
    first = conversations[0]
    warm = Conversation(-1, "questions", first.voice, (Step(first.steps[0].clip),))
    await run_conversation(url, api_key, "server_vad", warm, seed=0)


async def _measure(
    url: str,
    api_key: str | None,
    mode: str,
    conversations: Sequence[Conversation],
    seed: int,
    on_record: OnRecord | None,
) -> tuple[str, list[TurnRecord | OverlapRecord]]:
    """Every conversation in ``mode`` -> (the mode in use, the records)."""
    records: list[TurnRecord | OverlapRecord] = []
    in_use = mode
    for conversation in conversations:
        in_use, made = await run_conversation(
            url, api_key, mode, conversation, seed=seed + conversation.number, on_record=on_record
        )
        records += made
    return in_use, records


# ======================================================================= the command


def _print_record(record: TurnRecord | OverlapRecord) -> None:
    if isinstance(record, TurnRecord):
        latency = f"{record.latency_ms:5.0f} ms" if record.latency_ms is not None else "   -    "
        m = record.metrics
        parts = (
            f" (end {record.turn_end_ms or 0:.0f}, stt {m.stt_ms or 0:.0f}, "
            f"llm {m.llm_first_token_ms or 0:.0f}, tts {m.tts_first_audio_ms or 0:.0f})"
            if m is not None and record.latency_ms is not None
            else ""
        )
        cut = " CUT" if record.premature else ""
        pauses = f" pauses {list(record.pauses_ms)}" if record.pauses_ms else ""
        print(
            f"  {record.mode:10s} #{record.conversation:<3d} {record.kind:9s} {record.voice:22s} "
            f"{latency}{parts}{cut}{pauses} {record.text!r} -> heard {record.heard}"
            f"{' ' + record.note if record.note else ''}",
            flush=True,
        )
        return
    if not record.valid:
        outcome = f"void ({record.note})"
    else:
        outcome = (
            f"INTERRUPTED after {record.interrupted_ms:.0f} ms"
            if record.interrupted_ms is not None
            else "not interrupted"
        )
        if record.answered:
            outcome += ", ANSWERED"
        if record.went_on:
            outcome += f", agent went on (silent {record.gap_ms or 0:.0f} ms)"
    print(
        f"  {record.mode:10s} #{record.conversation:<3d} {record.kind:9s} {record.voice:22s} "
        f"{record.text!r} at {record.into_reply_ms:.0f} ms into the reply: {outcome}; "
        f"heard {record.heard!r}",
        flush=True,
    )


def _print_mode(line: str) -> None:
    print(line, flush=True)


def run_turn_taking_benchmark(
    *,
    per_category: int,
    turns: int,
    modes: Sequence[str] | None,
    voices: Sequence[str] | None,
    url: str | None,
    categories: Sequence[str] | None = None,
    api_key: str | None,
    as_json: bool,
) -> int:
    """Run the benchmark and print its records and table (or JSON). Returns an exit code."""
    report = run_turn_taking(
        modes=modes or MODES,
        per_category=per_category,
        turns=turns,
        voices=voices or VOICES,
        categories=categories or CATEGORIES,
        url=url,
        api_key=api_key,
        on_record=None if as_json else _print_record,
        on_mode=None if as_json else _print_mode,
    )
    if as_json:
        json.dump(msgspec.to_builtins(report), sys.stdout, indent=2)
        print()
        return 0
    print(
        f"\n{report.conversations} conversations, voices: {', '.join(report.voices)}"
        + (f"; left out: {', '.join(report.skipped_voices)}" if report.skipped_voices else "")
    )
    print_report(report)
    return 0
