"""The speaker embedder's and the diarizer's figures, on generated voices.

* embedder: cosine similarity of one sentence to another, same voice and different voices, and
  the cost (ms of one core per second of audio, one clip at a time and in a batch of eight).
* live diarization: generated two- and three-speaker conversations, one turn at a time through
  a diarization session (``identify(final=True)``, the provisional answer at 2 s too): the share
  of turns attributed to the right speaker (best one-to-one mapping of labels to speakers), the
  share of conversations without a mistake, the same at other thresholds, and the CPU spent.
* voice notes: the same conversations joined with 150 ms gaps into one recording each; the share
  of turns (each turn one span, as a recogniser's segments) and of 300 ms word-like spans (as
  its word timings: about the share of speech time) attributed to the right speaker.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scaivoice.engine import DiarizedSegment, TranscribedSpan
from scaivoice.plugins.speakers.clustering import OnlineClusters
from scaivoice.plugins.speakers.diarization import DiarizationOptions, SpeakerDiarization
from scaivoice.plugins.speakers.embedder import SpeakerEmbedder, cosine

from .conversations import Conversation, best_mapping_accuracy, conversations, recording

__all__ = ["BenchContext", "embedder_section", "live_section", "voice_note_section"]

_PROVISIONAL_MS = 2000
_GAP_MS = 150
_WORD_MS = 300


def _speaker_of_word(segments: Sequence[DiarizedSegment]) -> dict[str, str]:
    return {word: s.speaker for s in segments for word in s.text.split()}


@dataclass(frozen=True, slots=True)
class BenchContext:
    """What every section of ``bench speakers`` gets.

    Attributes:
        rendered: each generated voice's sentences (16 kHz PCM16), by voice name.
        conversations: how many conversations of each size to generate.
        seed: the seed of the conversations' turn order.
    """

    rendered: dict[str, list[bytes]]
    conversations: int
    seed: int = 0

    def conversations_of(self, speakers: int) -> list[Conversation]:
        return conversations(
            self.rendered,
            speakers=speakers,
            turns=4 * speakers,
            count=self.conversations,
            seed=self.seed + speakers,
        )


def _seconds(pcm: bytes) -> float:
    return len(pcm) / 32000


async def embedder_section(ctx: BenchContext) -> list[str]:
    """Same / different voice similarity and the embedder's cost."""
    clips = [(name, pcm) for name, pcms in ctx.rendered.items() for pcm in pcms]
    async with SpeakerEmbedder() as embedder:
        await embedder.embed(clips[0][1])  # warm up
        started, cpu = time.perf_counter(), time.process_time()
        vectors = [await embedder.embed(pcm) for _, pcm in clips]
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        batch = [pcm for _, pcm in clips[:8]]
        batched = time.process_time()
        for _ in range(3):
            await embedder.embed_many(batch)
        batched = (time.process_time() - batched) / 3
    audio_s = sum(_seconds(pcm) for _, pcm in clips)
    same: list[float] = []
    cross: list[float] = []
    for (a, va), (b, vb) in itertools.combinations(
        zip((n for n, _ in clips), vectors, strict=True), 2
    ):
        (same if a == b else cross).append(cosine(va, vb))
    threshold = DiarizationOptions().threshold
    return [
        f"voices: {', '.join(ctx.rendered)} ({len(clips)} sentences, {audio_s:.0f} s)",
        "one sentence against another:",
        f"  same voice       min {min(same):.3f}  5th pct {np.percentile(same, 5):.3f}  "
        f"mean {statistics.mean(same):.3f}",
        f"  different voices max {max(cross):.3f}  95th pct {np.percentile(cross, 95):.3f}  "
        f"mean {statistics.mean(cross):.3f}",
        f"  at the live threshold {threshold}: same voice below it {_share(same, threshold, below=True)}"
        f", different voices at or above it {_share(cross, threshold, below=False)}",
        f"cost: {cpu / audio_s * 1000:.1f} ms CPU per second of audio one clip at a time "
        f"({wall / len(clips) * 1000:.0f} ms wall per clip of {audio_s / len(clips):.1f} s), "
        f"{batched / sum(_seconds(p) for p in batch) * 1000:.1f} ms in batches of {len(batch)}",
    ]


def _share(values: Sequence[float], threshold: float, *, below: bool) -> str:
    count = sum(1 for v in values if (v < threshold) == below)
    return f"{count / len(values):.1%}"


async def live_section(ctx: BenchContext) -> list[str]:
    """Diarization accuracy of live turns, at the configured threshold and around it."""
    lines: list[str] = []
    async with SpeakerDiarization() as feature:
        embedder = feature.embedder
        cache: dict[tuple[str, int], np.ndarray] = {}
        spent = time.process_time()
        audio_s = 0.0
        turns = 0
        by_size = {k: ctx.conversations_of(k) for k in (2, 3)}
        for size, talks in by_size.items():
            accuracies: list[float] = []
            for talk in talks:
                session = feature.open_session(sample_rate=16000, options={})
                labels: list[str | None] = []
                for turn in talk.turns:
                    if _seconds(turn.pcm) * 1000 > _PROVISIONAL_MS:  # as a session asks
                        await session.identify(turn.pcm[: _PROVISIONAL_MS * 32], final=False)
                        audio_s += _PROVISIONAL_MS / 1000
                    answer = await session.identify(turn.pcm, final=True)
                    labels.append(answer.label if answer is not None else None)
                    audio_s += _seconds(turn.pcm)
                    turns += 1
                accuracies.append(best_mapping_accuracy([t.speaker for t in talk.turns], labels))
            lines.append(
                f"{size} speakers: {statistics.mean(accuracies):.1%} of {len(talks) * 4 * size} "
                f"turns right; {sum(a == 1.0 for a in accuracies)}/{len(talks)} conversations "
                "without a mistake"
            )
        spent = time.process_time() - spent
        for talk in itertools.chain.from_iterable(by_size.values()):
            for turn in talk.turns:
                key = (turn.speaker, turn.sentence)
                if key not in cache:
                    cache[key] = await embedder.embed(turn.pcm)
    threshold = feature.options.threshold
    sweep = []
    for candidate in (0.5, 0.55, threshold, 0.65, 0.7, 0.75):
        scores = []
        for talk in itertools.chain.from_iterable(by_size.values()):
            clusters = OnlineClusters(candidate)
            labels = [clusters.assign(cache[(t.speaker, t.sentence)]).label for t in talk.turns]
            scores.append(best_mapping_accuracy([t.speaker for t in talk.turns], labels))
        sweep.append(f"{candidate:g}: {statistics.mean(scores):.1%}")
    speech_share = 0.5
    per_turn_ms = spent / turns * 1000
    lines += [
        f"threshold {threshold} (operator option); turns right at other thresholds: "
        + ", ".join(sweep),
        f"CPU: {spent / audio_s * 1000:.1f} ms per second of audio identified, {per_turn_ms:.0f} "
        f"ms per turn (provisional + final); a session whose user speaks {speech_share:.0%} of "
        f"the time costs {spent / audio_s * speech_share * 100:.2f}% of one core",
    ]
    return lines


async def voice_note_section(ctx: BenchContext) -> list[str]:
    """Diarization accuracy of recordings without long pauses (150 ms between turns)."""
    lines: list[str] = []
    async with SpeakerDiarization() as feature:
        spent = time.process_time()
        audio_s = 0.0
        for size in (2, 3):
            turn_scores: list[float] = []
            time_scores: list[float] = []
            for talk in ctx.conversations_of(size):
                pcm, times = recording(talk, _GAP_MS)
                audio_s += _seconds(pcm)
                truth = [t.speaker for t in talk.turns]
                # one span per turn (a recogniser's segments) ...
                spans = [TranscribedSpan(a, b, f"turn{i}") for i, (a, b) in enumerate(times)]
                said = _speaker_of_word(await feature.diarize(pcm, spans))
                turn_scores.append(
                    best_mapping_accuracy(truth, [said.get(f"turn{i}") for i in range(len(times))])
                )
                # ... and word-like spans every 300 ms (a recogniser's word timings)
                words = [
                    (TranscribedSpan(t, min(t + _WORD_MS, b), ""), speaker)
                    for (a, b), speaker in zip(times, truth, strict=True)
                    for t in range(a, b, _WORD_MS)
                ]
                words = [
                    (TranscribedSpan(span.start_ms, span.end_ms, f"w{i}"), speaker)
                    for i, (span, speaker) in enumerate(words)
                ]
                said = _speaker_of_word(await feature.diarize(pcm, [w for w, _ in words]))
                audio_s += _seconds(pcm)
                time_scores.append(
                    best_mapping_accuracy(
                        [speaker for _, speaker in words], [said.get(w.text) for w, _ in words]
                    )
                )
            lines.append(
                f"{size} speakers, {_GAP_MS} ms gaps: {statistics.mean(turn_scores):.1%} of turns "
                f"(one span each) and {statistics.mean(time_scores):.1%} of words "
                f"({_WORD_MS} ms spans) right; "
                f"{sum(s == 1.0 for s in turn_scores)}/{len(turn_scores)} recordings without a "
                "turn wrong"
            )
        spent = time.process_time() - spent
    opts = feature.options
    lines.append(
        f"windows of {opts.window_ms} ms every {opts.hop_ms} ms, clustering threshold "
        f"{opts.recording_threshold}, switch cost {opts.switch_cost}; CPU "
        f"{spent / audio_s * 1000:.0f} ms per second of recording diarized"
    )
    return lines
