"""Generated conversations and how well a diarizer attributes their turns.

A conversation is a sequence of turns, each a sentence said by one of the generated voices
(:mod:`.voices`), no sentence said twice. The same turns serve two ways: one at a time, as a live
session's user turns, or joined with short gaps into one recording (a voice note).

Accuracy is the share of turns (or of speech time) attributed to the right speaker, under the
best one-to-one mapping of the diarizer's labels to the true speakers: a speaker split over two
labels, or two speakers under one label, loses the turns of the smaller part.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Conversation", "Turn", "best_mapping_accuracy", "conversations", "recording"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn: who says it (a voice name), the sentence index, and its audio (16 kHz)."""

    speaker: str
    sentence: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class Conversation:
    """Turns of two or more speakers."""

    turns: tuple[Turn, ...]

    @property
    def speakers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.speaker for t in self.turns))


def conversations(
    rendered: Mapping[str, Sequence[bytes]],
    *,
    speakers: int,
    turns: int,
    count: int,
    seed: int = 0,
) -> list[Conversation]:
    """``count`` conversations of ``turns`` turns among ``speakers`` of the rendered voices.

    The speaker groups cycle through every combination of the voices (shuffled); turn order is
    random, each speaker having at least two turns, the first two turns by different speakers.
    """
    rng = random.Random(seed)
    names = sorted(rendered)
    groups = list(itertools.combinations(names, speakers))
    rng.shuffle(groups)
    out: list[Conversation] = []
    for index in range(count):
        group = groups[index % len(groups)]
        order = [group[i % speakers] for i in range(turns)]
        while True:
            rng.shuffle(order)
            if order[0] != order[1]:
                break
        used: dict[str, list[int]] = {name: [] for name in group}
        sentences = len(rendered[group[0]])
        picked: list[Turn] = []
        pool = list(range(sentences))
        rng.shuffle(pool)
        for position, name in enumerate(order):
            sentence = pool[position % sentences]
            used[name].append(sentence)
            picked.append(Turn(name, sentence, rendered[name][sentence]))
        out.append(Conversation(tuple(picked)))
    return out


def recording(conversation: Conversation, gap_ms: int) -> tuple[bytes, list[tuple[int, int]]]:
    """The turns joined with ``gap_ms`` of silence: (16 kHz PCM16, [(start_ms, end_ms)] per turn)."""
    gap = bytes(16 * gap_ms * 2)
    pieces: list[bytes] = []
    times: list[tuple[int, int]] = []
    at = 0
    for index, turn in enumerate(conversation.turns):
        if index:
            pieces.append(gap)
            at += gap_ms
        ms = len(turn.pcm) // 32
        times.append((at, at + ms))
        pieces.append(turn.pcm)
        at += ms
    return b"".join(pieces), times


def best_mapping_accuracy(
    truth: Sequence[str], labels: Sequence[str | None], weights: Sequence[float] | None = None
) -> float:
    """The (weighted) share of items whose label maps to their true speaker, under the best
    one-to-one mapping of labels to speakers. ``None`` labels are wrong."""
    weights = list(weights) if weights is not None else [1.0] * len(truth)
    total = sum(weights)
    if not total:
        return 0.0
    speakers = sorted(set(truth))
    found = sorted({label for label in labels if label is not None})
    overlap = {
        (label, speaker): sum(
            w
            for t, lab, w in zip(truth, labels, weights, strict=True)
            if t == speaker and lab == label
        )
        for label in found
        for speaker in speakers
    }
    best = 0.0
    if len(found) <= len(speakers):
        for chosen in itertools.permutations(speakers, len(found)):
            best = max(
                best, sum(overlap[(lab, spk)] for lab, spk in zip(found, chosen, strict=True))
            )
    else:
        for chosen in itertools.permutations(found, len(speakers)):
            best = max(
                best, sum(overlap[(lab, spk)] for lab, spk in zip(chosen, speakers, strict=True))
            )
    return best / total
