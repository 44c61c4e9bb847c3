"""The semantic end-of-turn model's scores on complete and cut-off sentences, and its cost.

Speech is generated with the installed TTS backends, resampled to 16 kHz and fed in 20 ms
chunks to the installed end-of-turn feature (the one on ``turn_detection``) through the
feature API, as a session feeds it: 500 ms of silence, the speech, then a pause (300 ms by
default: the moment the engine asks), then :meth:`FeatureSession.end_of_turn`.

Each of :data:`SENTENCES` is a sentence split where a speaker might pause in the middle of it.
Four renderings of each, in every voice:

- **complete**: the whole sentence;
- **cut-off**: the whole sentence's audio cut where its first part ends (at the quietest 20 ms
  near the first part's own length, faded out over 10 ms; :func:`cut_at`): speech that stops
  mid-sentence, with the intonation of a sentence that goes on. The model's answer moves a lot
  with where exactly the cut falls (20 ms either way can turn 0.1 into 0.9): a cut into the
  onset of the next word sounds unfinished, a clean cut between words often does not;
- **hesitation**: the first part followed by a filler, rendered as ``"<first part>, uh"``;
- **fragment**: the first part rendered alone. TTS ends any text with a final intonation, so
  the model, which hears intonation more than words, mostly takes these as complete. They are
  reported, not counted: pauses for turn-taking tests should be cut out of whole sentences.

Also: the cut-off renderings heard 1.5 s after a complete sentence of the same voice (the
8 s window then holds the end of the previous turn too), and the cost of one call (wall clock
in the session, including the hop to the worker thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import trio

from scaivoice.engine import FeatureSession, PluginHost, ScaiVoiceError, SessionFeature

from .wake import render

__all__ = [
    "DEFAULT_VOICES",
    "KINDS",
    "SENTENCES",
    "EndOfTurnReport",
    "Scored",
    "cut_at",
    "main",
    "measure",
    "open_end_of_turn_feature",
    "print_report",
]

RATE = 16000
CHUNK_BYTES = 640  # 20 ms
DEFAULT_VOICES = ("hibari:heart", "hibari:heart@0.85", "piper:en_US-joe-medium")
"""Voices as ``backend:voice[@speed]``; those whose backend is not installed are skipped."""

SENTENCES = (
    ("What time is it", " in Tokyo?"),
    ("Please book a table", " for two."),
    ("My phone number is five five five", " one two three four."),
    ("I would like to order a", " large pizza with mushrooms."),
    ("I want to go to the", " station tomorrow morning."),
    ("Could you remind me to", " call my mother tonight."),
    ("The meeting is on", " Tuesday at noon."),
    ("Let me think about", " what you said."),
    ("My address is twelve", " Baker Street."),
    ("Can you tell me", " the weather for tomorrow?"),
    ("We need eggs, milk,", " and bread."),
    ("And then I", " went home."),
)
"""(first part, the rest): the whole sentence is complete; its audio cut after the first part
is a mid-sentence pause."""

KINDS = ("complete", "cut-off", "hesitation", "fragment", "cut-off after a turn")
"""The renderings scored (see the module docstring)."""

_SEARCH_MS = 120  # how far from the first part's own length a cut looks for a quiet spot
_FADE = RATE // 100  # 10 ms


def _frame_rms(samples: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, Any]:
    """RMS of 20 ms frames every 10 ms."""
    hop, width = RATE // 100, RATE // 50
    count = max(0, (len(samples) - width) // hop + 1)
    index = np.arange(count)[:, None] * hop + np.arange(width)[None, :]
    return np.sqrt(np.mean(samples[index] ** 2, axis=1)) if count else np.zeros(0)


def _speech_bounds(samples: np.ndarray[Any, np.dtype[np.float32]]) -> tuple[int, int]:
    """First and last sample of speech (frames above -50 dBFS)."""
    loud = np.nonzero(_frame_rms(samples) > 0.003)[0]
    if len(loud) == 0:
        return 0, 0
    hop, width = RATE // 100, RATE // 50
    return int(loud[0]) * hop, int(loud[-1]) * hop + width


def _floats(pcm: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def cut_at(whole: bytes, first_part: bytes) -> bytes:
    """The audio of a whole sentence up to where its first part ends (16 kHz PCM16).

    ``first_part`` is the first part rendered alone by the same voice: its length of speech
    says about where the first part ends inside the whole; the cut goes to the quietest 20 ms
    within 120 ms of there (a gap between words where there is one) and is faded out over 10 ms.
    """
    samples = _floats(whole)
    start, _ = _speech_bounds(samples)
    part_start, part_end = _speech_bounds(_floats(first_part))
    expected = start + (part_end - part_start)
    rms = _frame_rms(samples)
    hop = RATE // 100
    low = max(0, (expected - _SEARCH_MS * RATE // 1000) // hop)
    high = min(len(rms), (expected + _SEARCH_MS * RATE // 1000) // hop + 1)
    if low >= high:
        raise ValueError("the first part is not shorter than the whole sentence")
    end = (low + int(np.argmin(rms[low:high]))) * hop + hop
    cut = samples[:end].copy()
    cut[-_FADE:] *= np.linspace(1.0, 0.0, _FADE, dtype=np.float32)
    return (np.clip(cut, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def _hesitant(first_part: str) -> str:
    """``"I would like to order a"`` -> ``"I would like to order a, uh"``."""
    return first_part.rstrip(",") + ", uh"


def _silence(ms: int) -> bytes:
    return b"\0\0" * (RATE * ms // 1000)


@dataclass(frozen=True, slots=True)
class Scored:
    """One rendering and what the model said about it."""

    voice: str
    text: str
    kind: str
    """One of :data:`KINDS`."""
    probability: float | None


@dataclass(slots=True)
class EndOfTurnReport:
    """The benchmark's figures (``--json`` prints them)."""

    feature: str
    voices: list[str]
    skipped_voices: list[str]
    pause_ms: int
    scored: list[Scored] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)
    """Wall-clock ms of each ``end_of_turn`` call, in the session."""

    def probabilities(self, kind: str) -> list[float]:
        """The scores of one kind of rendering."""
        return [s.probability for s in self.scored if s.kind == kind and s.probability is not None]

    def share_below(self, kind: str, threshold: float = 0.5) -> float:
        """The share of one kind of rendering scored below ``threshold`` (kept open)."""
        values = self.probabilities(kind)
        return sum(p < threshold for p in values) / max(len(values), 1)


def open_end_of_turn_feature(
    host: PluginHost, options: dict[str, Any] | None = None
) -> tuple[str, SessionFeature]:
    """The installed end-of-turn feature (on ``turn_detection``), created but not open."""
    spec = host.feature_specs().get("turn_detection")
    if spec is None:
        raise ScaiVoiceError("no end-of-turn feature is installed")
    return spec.name, spec.factory(options or {})


async def _score(
    feature: SessionFeature, pcm: bytes, pause_ms: int, call_ms: list[float]
) -> float | None:
    session: FeatureSession = feature.open_session(sample_rate=RATE, options={})
    audio = _silence(500) + pcm + _silence(pause_ms)
    for offset in range(0, len(audio), CHUNK_BYTES):
        await session.process(audio[offset : offset + CHUNK_BYTES])
    start = time.perf_counter()
    probability = await session.end_of_turn()
    call_ms.append(1000 * (time.perf_counter() - start))
    return probability


async def measure(
    host: PluginHost,
    *,
    voices: Sequence[str] = DEFAULT_VOICES,
    sentences: Sequence[tuple[str, str]] = SENTENCES,
    pause_ms: int = 300,
    options: dict[str, Any] | None = None,
) -> EndOfTurnReport:
    """Render ``sentences`` in ``voices`` and score them (see the module docstring).

    Raises:
        ScaiVoiceError: no end-of-turn feature is installed, or it cannot be opened.
    """
    name, feature = open_end_of_turn_feature(host, options)
    texts = [t for first, rest in sentences for t in (first + rest, first, _hesitant(first))]
    renders, skipped = await render(host, voices, texts)
    pcm = {(r.voice, r.text): r.pcm for r in renders}
    done = [v for v in voices if any(r.voice == v for r in renders)]
    report = EndOfTurnReport(name, done, skipped, pause_ms)
    async with feature:
        for voice in done:
            for first, rest in sentences:
                whole, part = pcm[(voice, first + rest)], pcm[(voice, first)]
                cut = cut_at(whole, part)
                for kind, text, audio in (
                    ("complete", first + rest, whole),
                    ("cut-off", first, cut),
                    ("hesitation", _hesitant(first), pcm[(voice, _hesitant(first))]),
                    ("fragment", first, part),
                    ("cut-off after a turn", first, whole + _silence(1500) + cut),
                ):
                    p = await _score(feature, audio, pause_ms, report.call_ms)
                    report.scored.append(Scored(voice, text, kind, p))
    return report


def _summary(values: Sequence[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return (
        f"median {statistics.median(ordered):.3f}, min {ordered[0]:.3f}, "
        f"max {ordered[-1]:.3f} ({len(ordered)})"
    )


def print_report(report: EndOfTurnReport) -> None:
    """Print the figures as a short text report."""
    print(f"end of turn: {report.feature}, pause {report.pause_ms} ms before asking")
    if report.skipped_voices:
        print("skipped voices: " + "; ".join(report.skipped_voices))
    print(f"{'voice':26} {'kind':22} {'p':>6}  text")
    for s in report.scored:
        p = "-" if s.probability is None else f"{s.probability:.3f}"
        print(f"{s.voice:26} {s.kind:22} {p:>6}  {s.text}")
    for kind in KINDS:
        print(f"{kind:22} {_summary(report.probabilities(kind))}")
    ended = 1.0 - report.share_below("complete")
    print(
        f"at 0.5: {ended:.0%} of complete sentences end the turn; kept open: "
        + ", ".join(f"{report.share_below(k):.0%} of {k}" for k in KINDS[1:])
    )
    if report.call_ms:
        calls = sorted(report.call_ms)
        p90 = calls[min(len(calls) - 1, int(0.9 * len(calls)))]
        print(
            f"cost: {statistics.median(calls):.1f} ms per call median, {p90:.1f} ms p90 "
            f"({len(calls)} calls)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scaivoice.conformance.bench.end_of_turn [--voice V ...] [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m scaivoice.conformance.bench.end_of_turn")
    parser.add_argument("--voice", action="append", help="backend:voice[@speed], repeatable")
    parser.add_argument("--pause-ms", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="the feature's threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    options = {} if args.threads is None else {"threads": args.threads}
    voices = tuple(args.voice or DEFAULT_VOICES)
    try:
        report = trio.run(
            lambda: measure(host, voices=voices, pause_ms=args.pause_ms, options=options)
        )
    except ScaiVoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
