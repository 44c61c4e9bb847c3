"""Grouping speaker embeddings by voice: sans-IO, numpy only.

* :class:`OnlineClusters`: one session's speakers, learnt turn by turn. A turn's embedding joins
  the closest centroid when the cosine similarity reaches the threshold, else it opens a new
  label (``"S1"``, ``"S2"`` ...); a centroid is the re-normalised mean of its turns.
* :func:`segment_windows`: who speaks when in a whole recording, from the embeddings of
  overlapping windows (agglomerative clustering with average linkage, then a Viterbi pass that
  re-assigns every window to the closest centroid with a cost for each change of speaker).
* :func:`assign_spans`: words or segments of a transcript to speakers by time, splitting a span
  in which the speaker changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Assignment",
    "OnlineClusters",
    "SpanSpeaker",
    "Timeline",
    "assign_spans",
    "match_known",
    "segment_windows",
]

_F32 = npt.NDArray[np.float32]


def _unit(vector: npt.NDArray[np.floating]) -> _F32:
    norm = float(np.linalg.norm(vector))
    out: _F32 = (vector / norm if norm > 1e-12 else vector).astype(np.float32)
    return out


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a turn went: its label, the similarity to that label's centroid (before the
    update; 1.0 for a new label) and whether the label is new."""

    label: str
    score: float
    new: bool


class OnlineClusters:
    """One session's speakers, learnt from its turns (no I/O, no clock).

    Args:
        threshold: the cosine similarity to a centroid from which a turn is that speaker's.
        max_speakers: once this many labels exist, a turn joins the closest one.
        prefix: the labels' prefix (``"S"``: ``"S1"``, ``"S2"`` ...).
    """

    def __init__(self, threshold: float, *, max_speakers: int = 16, prefix: str = "S") -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold must be a cosine similarity, in -1..1")
        if max_speakers < 1:
            raise ValueError("max_speakers must be at least 1")
        self.threshold = threshold
        self.max_speakers = max_speakers
        self._prefix = prefix
        self._labels: list[str] = []
        self._sums: list[npt.NDArray[np.float64]] = []
        self._counts: list[int] = []

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels given so far, in order."""
        return tuple(self._labels)

    def next_label(self) -> str:
        """The label the next new speaker will get."""
        return f"{self._prefix}{len(self._labels) + 1}"

    def centroid(self, label: str) -> _F32:
        """The unit-length centroid of ``label`` (KeyError if unknown)."""
        try:
            index = self._labels.index(label)
        except ValueError:
            raise KeyError(label) from None
        return _unit(self._sums[index])

    def nearest(self, vector: _F32) -> tuple[str, float] | None:
        """The closest label and its similarity, or ``None`` before the first turn. No change."""
        if not self._labels:
            return None
        centroids = np.stack([_unit(s) for s in self._sums])
        scores = centroids @ vector
        best = int(np.argmax(scores))
        return self._labels[best], float(scores[best])

    def identify(self, vector: _F32) -> tuple[str, float] | None:
        """:meth:`nearest` when it reaches the threshold (a provisional answer), else ``None``."""
        found = self.nearest(vector)
        if found is None or found[1] < self.threshold:
            return None
        return found

    def assign(self, vector: _F32) -> Assignment:
        """Put a turn's embedding with the closest speaker, or under a new label; learn it."""
        found = self.nearest(vector)
        if found is not None and (
            found[1] >= self.threshold or len(self._labels) >= self.max_speakers
        ):
            label, score = found
            index = self._labels.index(label)
            self._sums[index] = self._sums[index] + vector
            self._counts[index] += 1
            return Assignment(label, score, new=False)
        label = f"{self._prefix}{len(self._labels) + 1}"
        self._labels.append(label)
        self._sums.append(np.asarray(vector, np.float64).copy())
        self._counts.append(1)
        return Assignment(label, 1.0, new=True)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Who speaks when: ``labels[k]`` speaks from ``k * step_ms`` to ``(k + 1) * step_ms``
    (``None``: nobody), and each speaker's centroid."""

    step_ms: int
    labels: tuple[int | None, ...]
    centroids: _F32

    def speaker_at(self, start_ms: int, end_ms: int) -> int | None:
        """The speaker heard most between two times (``None`` if nobody is)."""
        first = max(0, start_ms // self.step_ms)
        last = max(first + 1, -(-end_ms // self.step_ms))
        found = [label for label in self.labels[first:last] if label is not None]
        if not found:
            near = [
                label for label in self.labels[max(0, first - 5) : last + 5] if label is not None
            ]
            found = near
        if not found:
            return None
        values, counts = np.unique(np.array(found), return_counts=True)
        return int(values[int(np.argmax(counts))])


def segment_windows(
    vectors: _F32,
    voiced: Sequence[float],
    *,
    hop_ms: int,
    window_ms: int,
    threshold: float,
    min_voiced: float = 0.3,
    min_speaker_ms: int = 1000,
    switch_cost: float = 0.5,
) -> Timeline:
    """Who speaks when, from window embeddings (window ``k`` starts at ``k * hop_ms``).

    1. Windows under ``min_voiced`` speech are left out (silence).
    2. Agglomerative clustering of the other windows, average linkage on cosine similarity,
       until no two clusters are ``threshold`` alike.
    3. Clusters holding less than ``min_speaker_ms`` of windows are dropped (transitions).
    4. Viterbi over the windows: the score of a window for a speaker is its similarity to the
       speaker's centroid; changing speaker costs ``switch_cost``.
    5. The timeline: the hop-long slot at a window's centre gets the window's speaker.
    """
    n = len(vectors)
    keep = np.flatnonzero(np.asarray(voiced, np.float64) >= min_voiced) if n else np.zeros(0, int)
    slots = 0 if n == 0 else (n - 1) + window_ms // hop_ms
    if keep.size == 0:
        return Timeline(
            hop_ms, (None,) * slots, np.zeros((0, vectors.shape[1] if n else 0), np.float32)
        )
    clusters = _agglomerate(vectors[keep], threshold)
    min_windows = max(1, min_speaker_ms // hop_ms)
    sizes = np.bincount(clusters)
    big = [c for c in range(len(sizes)) if sizes[c] >= min_windows]
    if not big:
        big = [int(np.argmax(sizes))]
    centroids = np.stack([_unit(vectors[keep][clusters == c].mean(axis=0)) for c in big])
    path = _viterbi(vectors[keep] @ centroids.T, switch_cost)
    # Order speakers by first appearance.
    order: list[int] = []
    for state in path:
        if int(state) not in order:
            order.append(int(state))
    rank = {state: i for i, state in enumerate(order)}
    centroids = centroids[order]
    per_window: list[int | None] = [None] * n
    for index, state in zip(keep, path, strict=True):
        per_window[int(index)] = rank[int(state)]
    labels: list[int | None] = [None] * slots
    centre = window_ms // hop_ms // 2
    for k, label in enumerate(per_window):
        if label is None:
            continue
        labels[k + centre] = label
        if k == 0:  # the first window speaks for the slots before its centre
            labels[:centre] = [label] * centre
        if k == n - 1:
            labels[k + centre + 1 :] = [label] * (slots - k - centre - 1)
    return Timeline(hop_ms, tuple(labels), centroids.astype(np.float32))


def _agglomerate(vectors: _F32, threshold: float) -> npt.NDArray[np.int64]:
    """Average-linkage clustering on cosine similarity; cluster index per row."""
    count = len(vectors)
    sim = (vectors @ vectors.T).astype(np.float64)
    sizes = np.ones(count)
    alive = np.ones(count, bool)
    members = np.arange(count)
    np.fill_diagonal(sim, -np.inf)
    while alive.sum() > 1:
        masked = np.where(alive[:, None] & alive[None, :], sim, -np.inf)
        flat = int(np.argmax(masked))
        i, j = divmod(flat, count)
        if masked[i, j] < threshold:
            break
        # Merge j into i: average linkage is the size-weighted mean of similarities.
        merged = (sim[i] * sizes[i] + sim[j] * sizes[j]) / (sizes[i] + sizes[j])
        sim[i, :] = merged
        sim[:, i] = merged
        sim[i, i] = -np.inf
        sizes[i] += sizes[j]
        alive[j] = False
        sim[j, :] = -np.inf
        sim[:, j] = -np.inf
        members[members == j] = i
    _, labels = np.unique(members, return_inverse=True)
    out: npt.NDArray[np.int64] = labels.astype(np.int64)
    return out


def _viterbi(scores: npt.NDArray[np.floating], switch_cost: float) -> npt.NDArray[np.int64]:
    """The best state path through ``scores`` (windows x states), a change costing ``switch_cost``."""
    count, states = scores.shape
    total = scores[0].astype(np.float64).copy()
    back = np.zeros((count, states), np.int64)
    for t in range(1, count):
        stay = total
        best_prev = int(np.argmax(total))
        switch = total[best_prev] - switch_cost
        choose_switch = switch > stay
        back[t] = np.where(choose_switch, best_prev, np.arange(states))
        total = np.where(choose_switch, switch, stay) + scores[t]
    path = np.zeros(count, np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(count - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def match_known(
    centroids: _F32, references: Mapping[str, _F32], threshold: float
) -> dict[int, str]:
    """Name speakers after reference voices: the most alike pairs first, each name once, only
    at or above ``threshold``. Returns {speaker index: name}."""
    names = list(references)
    if not names or len(centroids) == 0:
        return {}
    refs = np.stack([references[name] for name in names])
    sim = centroids @ refs.T
    pairs = sorted(
        ((float(sim[i, j]), i, j) for i in range(sim.shape[0]) for j in range(sim.shape[1])),
        reverse=True,
    )
    named: dict[int, str] = {}
    used: set[int] = set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i in named or j in used:
            continue
        named[i] = names[j]
        used.add(j)
    return named


@dataclass(frozen=True, slots=True)
class SpanSpeaker:
    """A piece of transcript with its speaker index (``None``: could not tell)."""

    start_ms: int
    end_ms: int
    text: str
    speaker: int | None


def assign_spans(
    timeline: Timeline, spans: Sequence[tuple[int, int, str]], *, min_change_ms: int = 600
) -> list[SpanSpeaker]:
    """Give each span (start_ms, end_ms, text) the speaker heard most during it.

    A span in which another speaker talks for at least ``min_change_ms`` is split at each
    change, its words shared out in proportion to the time (word-level spans are never split).
    """
    out: list[SpanSpeaker] = []
    for start, end, text in spans:
        runs = _runs(timeline, start, end, min_change_ms)
        words = text.split()
        if len(runs) <= 1 or len(words) <= 1:
            out.append(SpanSpeaker(start, end, text, timeline.speaker_at(start, end)))
            continue
        total = sum(b - a for a, b, _ in runs)
        taken = 0
        for index, (a, b, speaker) in enumerate(runs):
            if index == len(runs) - 1:
                share = words[taken:]
            else:
                upto = taken + round((b - a) / total * len(words))
                share = words[taken:upto]
                taken = upto
            if share:
                out.append(SpanSpeaker(a, b, " ".join(share), speaker))
    return out


def _runs(
    timeline: Timeline, start: int, end: int, min_change_ms: int
) -> list[tuple[int, int, int | None]]:
    """Runs of one speaker between two times, runs shorter than ``min_change_ms`` absorbed."""
    step = timeline.step_ms
    first, last = max(0, start // step), max(start // step + 1, -(-end // step))
    labels = list(timeline.labels[first:last])
    runs: list[list[int | None]] = []  # [from slot, to slot, speaker]
    for offset, label in enumerate(labels):
        if label is None:
            continue
        slot = first + offset
        if runs and runs[-1][2] == label:
            runs[-1][1] = slot + 1
        else:
            runs.append([slot, slot + 1, label])
    merged: list[list[int | None]] = []
    for run in runs:
        length = (int(run[1] or 0) - int(run[0] or 0)) * step
        if merged and (length < min_change_ms or merged[-1][2] == run[2]):
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    if len(merged) > 1:
        head = (int(merged[0][1] or 0) - int(merged[0][0] or 0)) * step
        if head < min_change_ms:
            merged[1][0] = merged[0][0]
            merged.pop(0)
    result = [
        (max(start, int(a or 0) * step), min(end, int(b or 0) * step), s) for a, b, s in merged
    ]
    if result:
        result[0] = (start, result[0][1], result[0][2])
        result[-1] = (result[-1][0], end, result[-1][2])
    return result
