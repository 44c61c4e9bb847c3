"""Running ``scaivoice bench speakers``: render the voices once, print each section."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from .diarization import BenchContext, embedder_section, live_section, voice_note_section
from .identification import identification_section
from .voices import SENTENCES, render_voices

__all__ = ["SECTIONS", "BenchContext", "Section", "run_speaker_benchmark"]

Section = Callable[[BenchContext], Awaitable[list[str]]]

#: The report's sections, in order: (title, function). Add a section here.
SECTIONS: list[tuple[str, Section]] = [
    ("speaker embeddings", embedder_section),
    ("live diarization (diarize)", live_section),
    ("voice-note diarization (diarized_json)", voice_note_section),
    ("speaker identification (speaker_recognition)", identification_section),
]


def run_speaker_benchmark(
    *, conversations: int = 20, only: Sequence[str] = (), seed: int = 0
) -> int:
    """Print the figures of every section (or of those whose title starts with ``only``).

    Returns the exit status: 0, or 1 when fewer than three voices could be rendered.
    """
    return trio.run(_run, conversations, tuple(only), seed)


async def _run(conversations: int, only: tuple[str, ...], seed: int) -> int:
    started = time.perf_counter()
    rendered = await render_voices(SENTENCES)
    if len(rendered) < 3:
        print(
            f"bench speakers needs three voices; rendered {sorted(rendered)} "
            "(pip install 'scaivoice[local,espeak]')",
            file=sys.stderr,
        )
        return 1
    ctx = BenchContext(rendered, conversations, seed)
    print(f"scaivoice bench speakers: {len(rendered)} generated voices, {len(SENTENCES)} sentences")
    for title, section in SECTIONS:
        if only and not any(title.startswith(prefix) for prefix in only):
            continue
        print(f"\n{title}")
        for line in await section(ctx):
            print(f"  {line}")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0
