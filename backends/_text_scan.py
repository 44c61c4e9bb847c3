"""How the ``text`` normaliser applies its rules: one scan over the text, leftmost match first.

:func:`scan` walks the text once. At each step every rule's pattern searches from the current
position; the leftmost match wins, and of matches starting at the same place the rule listed
first wins (so "March 3rd" is a date before "3rd" is an ordinal). The winning rule's handler
returns the spoken words, or ``None`` to decline, which lets the next rules try the same place.
The text between matches is kept as written, and a replacement is never scanned again, so the
words produced are final (and normalising twice changes nothing more).

Also here: the pieces the rule modules share (the shape of a written number, sentence ends).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ._spoken_numbers import NumberSpeaker, parse_number

__all__ = [
    "AFTER",
    "BEFORE",
    "NUM",
    "Context",
    "DateOrder",
    "Handler",
    "Rule",
    "alternatives",
    "full_stop",
    "keep",
    "parse_amount",
    "preceding",
    "say_number",
    "scan",
]

DateOrder = Literal["mdy", "dmy"]


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules need to know about one call."""

    speaker: NumberSpeaker
    date_order: DateOrder = "mdy"
    dollar: str = "USD"


#: Turns one match into words, or declines with ``None``.
Handler = Callable[[re.Match[str], Context], str | None]


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of token: its pattern and the handler that speaks it."""

    name: str
    pattern: re.Pattern[str]
    handler: Handler


def scan(text: str, context: Context, rules: Sequence[Rule]) -> str:
    """Rewrite every token ``rules`` recognise in ``text``; keep everything else."""
    pending: list[re.Match[str] | None] = [rule.pattern.search(text) for rule in rules]
    out: list[str] = []
    pos = 0
    while True:
        best: re.Match[str] | None = None
        best_rule = -1
        for i, rule in enumerate(rules):
            found = pending[i]
            if found is not None and found.start() < pos:
                found = pending[i] = rule.pattern.search(text, pos)
            if found is not None and (best is None or found.start() < best.start()):
                best, best_rule = found, i
        if best is None:
            break
        spoken = rules[best_rule].handler(best, context)
        if spoken is None:  # declined: this rule looks again one character further on
            pending[best_rule] = rules[best_rule].pattern.search(text, best.start() + 1)
            continue
        out += (text[pos : best.start()], spoken)
        pos = best.end()
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------------- shared pieces

# A written number: grouped thousands ("1,234.5", "1.234,5") or plain ("42", "3.14", "3,14").
NUM = r"\d{1,3}(?:[,.\u00a0\u202f]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?"
# Not glued to a word or to a longer number on its left or right.
BEFORE = r"(?<![\w.,])"
AFTER = r"(?![\w]|[.,]\d)"


def parse_amount(written: str, context: Context) -> Decimal | None:
    """A written number in the language's convention ("3,5" is 3.5 in German)."""
    return parse_number(written, decimal_point=context.speaker.decimal_point)


def say_number(written: str, context: Context) -> str:
    """A written number as words: digit by digit for codes ("007", long ids), else cardinal."""
    speaker = context.speaker
    if written.isdigit() and ((len(written) > 1 and written[0] == "0") or len(written) >= 10):
        return speaker.digits(written)
    value = parse_amount(written, context)
    return speaker.cardinal(value) if value is not None else speaker.digits(written)


def preceding(match: re.Match[str], chars: int = 64) -> str:
    """The text just before ``match`` (a bounded window, so a rule's look back stays cheap)."""
    return match.string[max(0, match.start() - chars) : match.start()]


_SENTENCE_FOLLOWS = re.compile(r"\s*$|\s+[A-Z]")


def _ends_sentence(match: re.Match[str]) -> bool:
    """Whether a dot at the end of ``match`` is also the end of a sentence."""
    following = _SENTENCE_FOLLOWS.match(match.string, match.end())
    return match.group(0).endswith(".") and following is not None


def full_stop(match: re.Match[str]) -> str:
    """``"."`` where a token's own final dot also ended its sentence ("... etc."), else ``""``."""
    return "." if _ends_sentence(match) else ""


def keep(match: re.Match[str], context: Context) -> str:
    """Leave the token as written (it needs words this language has no table for)."""
    return match.group(0)


def alternatives(words: Iterable[str]) -> str:
    """A regex alternation of ``words``, longest first (so "Sept" is tried before "Sep")."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
