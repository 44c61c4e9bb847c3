"""``example-abbrev``: a text normaliser that expands abbreviations and applies a lexicon.

The engine runs the configured normaliser on each sentence of the agent's reply before it is
synthesised, for sessions that set ``normalize_text``. This one rewrites, in one pass:

- the abbreviations of its table (``"e.g."`` -> ``"for example"``), set by the operator;
- the words of the request's lexicon (``NormaliseRequest.lexicon``), which win over the table.

Matching is whole-word and case-insensitive. A capitalised match that starts a sentence gets a
capitalised replacement (``"E.g. tea"`` -> ``"For example tea"``, but ``"use NGINX"`` ->
``"use engine x"``), and an abbreviation that ends the text keeps its full stop. The table is
English: for a request in another language only the lexicon is applied.

Operator options (``[backends.options.example-abbrev]`` in the engine's TOML)::

    [backends.options.example-abbrev.abbreviations]   # replaces the built-in table
    "e.g." = "for example"
    "approx." = "approximately"
    "dept." = "department"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import msgspec
import trio
from scaivoice.engine import (
    BackendOptions,
    NormaliserBackend,
    NormaliserCapabilities,
    NormaliseRequest,
)

__all__ = ["BUILTIN_ABBREVIATIONS", "NAME", "AbbreviationNormaliser"]

NAME: Final = "example-abbrev"

#: The table used when the operator configures none.
BUILTIN_ABBREVIATIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "e.g.": "for example",
        "i.e.": "that is",
        "approx.": "approximately",
        "etc.": "et cetera",
        "vs.": "versus",
    }
)


class AbbreviationNormaliser(NormaliserBackend):
    """Expands abbreviations ("e.g." -> "for example") and the request's lexicon."""

    class Options(BackendOptions, frozen=True):
        """Options of ``example-abbrev``.

        Attributes:
            abbreviations: abbreviation -> spoken form. Replaces the built-in table.
        """

        abbreviations: dict[str, str] = msgspec.field(
            default_factory=lambda: dict(BUILTIN_ABBREVIATIONS)
        )

        def __post_init__(self) -> None:
            # A ValueError here becomes a ConfigError naming the backend (from_mapping).
            if any(not key.strip() for key in self.abbreviations):
                raise ValueError("abbreviations: an abbreviation may not be empty")

    # Declared honestly: the table is English, and the request's lexicon is honoured.
    capabilities = NormaliserCapabilities(languages=("en",), lexicon=True)

    def __init__(self, options: Options) -> None:
        self.options = options
        self._table = {key.strip().lower(): value for key, value in options.abbreviations.items()}
        self._pattern = _whole_words(self._table)

    async def normalise(self, text: str, request: NormaliseRequest) -> str:
        """Return ``text`` with abbreviations and lexicon words replaced.

        Cancelling abandons the call (it checkpoints once, before any work).
        """
        await trio.lowlevel.checkpoint()
        table = self._table if _is_english(request.language) else {}
        pattern = self._pattern if table else None
        lexicon = {word.strip().lower(): spoken for word, spoken in request.lexicon.items()}
        lexicon.pop("", None)
        if lexicon:
            table = {**table, **lexicon}
            pattern = _whole_words(table)
        if pattern is None:
            return text
        end = len(text.rstrip())

        def replace(match: re.Match[str]) -> str:
            found = match.group(0)
            spoken = table[found.lower()]
            before = text[: match.start()].rstrip()
            starts_sentence = not before or before.endswith((".", "!", "?"))
            if starts_sentence and found[:1].isupper() and spoken[:1].islower():
                spoken = spoken[0].upper() + spoken[1:]
            if found.endswith(".") and match.end() == end:
                spoken += "."  # the abbreviation's full stop also ended the sentence
            return spoken

        return pattern.sub(replace, text)


def _whole_words(table: Mapping[str, str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any key of ``table`` as a whole word."""
    if not table:
        return None
    # Longest first, so "approx." wins over a lexicon entry "approx".
    alternatives = "|".join(re.escape(key) for key in sorted(table, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _is_english(language: str | None) -> bool:
    if language is None:
        return True
    return re.split(r"[-_]", language.lower(), maxsplit=1)[0] == "en"
