"""Pronunciation lexicons: whole words or phrases replaced before any other rule.

A lexicon maps what is written to what the TTS should read (``"ScaiVoice"`` -> ``"sky voice"``).
Matching ignores case and the amount of white space inside a phrase, and only whole words
match ("AI" is not replaced inside "PAID"). Longer entries win over shorter ones they contain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["apply_lexicon"]

_SPACES = re.compile(r"\s+")


def _key(written: str) -> str:
    return _SPACES.sub(" ", written.strip()).casefold()


def apply_lexicon(text: str, lexicon: Mapping[str, str]) -> str:
    """Replace every entry of ``lexicon`` found in ``text`` as a whole word or phrase."""
    entries = {_key(written): spoken for written, spoken in lexicon.items() if written.strip()}
    if not entries or not text:
        return text
    phrases = sorted(
        {_key(written): written.split() for written in lexicon if written.strip()}.values(),
        key=lambda words: len(" ".join(words)),
        reverse=True,
    )
    alternatives = "|".join(r"\s+".join(map(re.escape, words)) for words in phrases)
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def replace(match: re.Match[str]) -> str:
        written = match.group(0)
        return entries.get(_key(written), written)  # case folding can disagree with re's

    return pattern.sub(replace, text)
