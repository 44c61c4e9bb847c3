"""Cutting a streaming LLM reply into speakable pieces (sans-IO).

The first piece is cut early (at a clause) so synthesis starts while the model is still
generating; later pieces are whole sentences, which sound better.
"""

from __future__ import annotations

import re

__all__ = ["SentenceChunker"]

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"[,;:—]\s+")
# Abbreviations whose dot does not end a sentence.
_ABBREVIATIONS = frozenset(
    {
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "prof.",
        "sr.",
        "jr.",
        "st.",
        "vs.",
        "etc.",
        "e.g.",
        "i.e.",
        "no.",
        "approx.",
        "a.m.",
        "p.m.",
        "u.s.",
        "inc.",
        "ltd.",
    }
)


class SentenceChunker:
    """Feed text deltas, get back complete pieces to synthesise.

    Args:
        first_clause_chars: the first piece may end at a clause boundary (",", ";", ":") once it
            is at least this long, to start speaking sooner.
        first_words: a first sentence with no early boundary is cut after this many words.
        max_chars: a piece with no boundary is cut at a space past this length.
    """

    def __init__(
        self, *, first_clause_chars: int = 8, first_words: int = 7, max_chars: int = 240
    ) -> None:
        self._first_words = first_words
        self._buffer = ""
        self._emitted = 0
        self._first_clause_chars = first_clause_chars
        self._max_chars = max_chars

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the pieces it completed."""
        self._buffer += delta
        pieces: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return pieces
            pieces.append(piece)

    def flush(self) -> list[str]:
        """The rest of the text, at the end of the reply."""
        rest, self._buffer = self._buffer, ""
        return [rest] if rest.strip() else []

    def _next_piece(self) -> str | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            candidate = self._buffer[: match.end()]
            last_word = (
                candidate.strip().rsplit(maxsplit=1)[-1].lower() if candidate.strip() else ""
            )
            if last_word in _ABBREVIATIONS:
                continue
            return self._take(match.end())
        if self._emitted == 0:
            for match in _CLAUSE_END.finditer(self._buffer):
                if match.start() >= self._first_clause_chars:
                    return self._take(match.end())
            # A long first sentence: speak its first words rather than wait for its end.
            spaces = [m.end() for m in re.finditer(r"\S\s+", self._buffer)]
            if len(spaces) >= self._first_words:
                return self._take(spaces[self._first_words - 1])
        if len(self._buffer) > self._max_chars:
            cut = self._buffer.rfind(" ", 0, self._max_chars)
            return self._take(cut + 1 if cut > 0 else self._max_chars)
        return None

    def _take(self, end: int) -> str:
        piece, self._buffer = self._buffer[:end], self._buffer[end:]
        self._emitted += 1
        return piece
