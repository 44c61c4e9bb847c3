"""A tiny word-error-rate with a normaliser for the test sentences (no extra dependency)."""

from __future__ import annotations

import re

_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_TIME = re.compile(r"\b(\d+)[:.](\d\d)\b")


def normalise(text: str) -> list[str]:
    """Lowercase words; "4:30" and "4.30" -> "4 30"; "3rd" -> "3"; "p.m." -> "pm"."""
    text = text.lower().replace("p.m.", "pm").replace("a.m.", "am")
    text = _TIME.sub(r"\1 \2", text)
    text = _ORDINAL.sub(r"\1", text)
    text = re.sub(r"(\d)(am|pm)\b", r"\1 \2", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return text.split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after normalising both."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def wer(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER over (reference, hypothesis) pairs."""
    errors = total = 0
    for reference, hypothesis in pairs:
        e, n = word_errors(reference, hypothesis)
        errors, total = errors + e, total + n
    return errors / max(total, 1)
