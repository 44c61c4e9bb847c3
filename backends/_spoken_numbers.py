"""Numbers as words in one language, through num2words; never raises.

num2words spells cardinals, ordinals, years and money in some fifty languages. Its gaps (no
ordinals in Czech, no ``year`` in Swedish, a currency a language cannot name) and its errors
(numbers too large) are answered here by a simpler reading, so the normaliser always has
something to say: the cardinal for an ordinal or a year, and digit by digit as the last resort.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from num2words import CONVERTER_CLASSES, num2words  # type: ignore[import-untyped]

__all__ = [
    "ENGLISH",
    "SUPPORTED_LANGUAGES",
    "NumberSpeaker",
    "language_code",
    "parse_number",
    "resolve_language",
]

ENGLISH = "en"

#: The languages num2words can spell numbers in, as language tags ("de", "pt-BR").
SUPPORTED_LANGUAGES: tuple[str, ...] = tuple(
    sorted(code.replace("_", "-") for code in CONVERTER_CLASSES)
)

# Languages that write "3.5" (a decimal point) rather than "3,5"; all others take the comma.
_DECIMAL_POINT_LANGUAGES = frozenset({"am", "bn", "cy", "en", "he", "ja", "kn", "ko", "te", "th"})
# num2words' ``year`` adds an era or a "year" word in these; their years are read as cardinals.
_ERA_YEAR_LANGUAGES = frozenset({"ja", "ko"})
# Marks a point in num2words' money output that this module splits on; never in its words.
_SPLIT = "\x00"
_COMMA = re.compile(r",\s*")


def language_code(tag: str) -> str | None:
    """The num2words code for a language tag (``"en-US"`` -> ``"en"``, ``"pt-BR"`` -> ``"pt_BR"``).

    ``None`` when num2words does not know the language.
    """
    base, _, region = tag.strip().replace("-", "_").partition("_")
    base = base.lower()
    region = region.partition("_")[0].upper()
    for code in (f"{base}_{region}", base):
        if code in CONVERTER_CLASSES:
            return code
    return None


def resolve_language(tag: str | None, default: str = ENGLISH) -> str:
    """:func:`language_code` of ``tag``, else of ``default``, else English. Never fails."""
    for candidate in (tag, default):
        code = language_code(candidate) if candidate else None
        if code is not None:
            return code
    return ENGLISH


def parse_number(written: str, *, decimal_point: bool) -> Decimal | None:
    """Parse ``"1,234.5"`` (decimal point) or ``"1.234,5"`` (decimal comma) into a Decimal.

    The language's convention is tried first, then the other one ("3.14" in German text is
    still pi). Thin and narrow no-break spaces group thousands in either. Returns ``None`` when
    neither convention fits ("1,2,3").
    """
    text = written.replace("\u00a0", "").replace("\u202f", "")
    for point in ((".", ","), (",", ".")) if decimal_point else ((",", "."), (".", ",")):
        mark, group = point
        if group in text:
            head, _, tail = text.partition(mark) if mark in text else (text, "", "")
            groups = head.split(group)
            if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
                continue
            head = "".join(groups)
        else:
            head, _, tail = text.partition(mark)
        if not head.isdigit() or (tail and not tail.isdigit()) or mark in tail:
            continue
        try:
            return Decimal(f"{head}.{tail}" if tail else head)
        except InvalidOperation:  # pragma: no cover - digits only by now
            continue
    return None


def _spell(number: int | Decimal, language: str, **how: Any) -> str | None:
    """``num2words`` in ``language``, or ``None`` where it cannot (a gap or an error)."""
    try:
        words = num2words(number, lang=language, **how)
    except Exception:  # a third-party converter: gaps raise NotImplementedError, others anything
        return None
    return _COMMA.sub(" ", str(words)).strip() if isinstance(words, str) else None


@dataclass(frozen=True, slots=True)
class NumberSpeaker:
    """Reads numbers in one num2words language (``"en"``, ``"de"``, ``"pt_BR"``)."""

    language: str = ENGLISH

    @property
    def base(self) -> str:
        """The primary language subtag (``"pt"`` for ``"pt_BR"``)."""
        return self.language.partition("_")[0]

    @property
    def english(self) -> bool:
        return self.base == ENGLISH

    @property
    def decimal_point(self) -> bool:
        """Whether the language writes decimals with a point (else with a comma)."""
        return self.base in _DECIMAL_POINT_LANGUAGES

    def cardinal(self, number: int | Decimal) -> str:
        """``21`` -> ``"twenty-one"``; ``Decimal("2.5")`` -> ``"two point five"``."""
        try:
            if isinstance(number, Decimal) and number == number.to_integral_value():
                number = int(number)
        except ArithmeticError:  # beyond the decimal context's precision
            return self.digits(str(number))
        words = _spell(number, self.language)
        return words if words is not None else self.digits(str(number))

    def ordinal(self, number: int) -> str:
        """``3`` -> ``"third"`` (the cardinal where the language has no ordinals)."""
        return _spell(number, self.language, to="ordinal") or self.cardinal(number)

    def year(self, number: int) -> str:
        """``1999`` -> ``"nineteen ninety-nine"`` (the cardinal where there is no year form)."""
        if self.base in _ERA_YEAR_LANGUAGES:
            return self.cardinal(number)
        return _spell(number, self.language, to="year") or self.cardinal(number)

    def digits(self, written: str) -> str:
        """Every digit of ``written`` on its own (``"0171"`` -> ``"zero one seven one"``)."""
        return " ".join(_spell(int(ch), self.language) or ch for ch in written if ch.isdigit())

    def money(self, amount: Decimal, currency: str) -> str | None:
        """``Decimal("5.50"), "USD"`` -> ``"five dollars and fifty cents"``.

        Whole amounts leave out the cents, amounts under one leave out the whole units.
        Returns ``None`` when num2words cannot name ``currency`` in this language.
        """
        try:
            amount = amount.quantize(Decimal("0.01"))
            whole, cents = divmod(amount, 1)
        except ArithmeticError:  # beyond the decimal context's precision
            return None
        if amount < 0:
            if not self.english:
                return _spell(amount, self.language, to="currency", currency=currency)
            positive = self.money(-amount, currency)
            return f"minus {positive}" if positive else None
        # "Canadian dollars", "Mexican pesos"; num2words' adjectives are English words only.
        adjective = self.english and currency != "USD"
        split = _spell(
            amount,
            self.language,
            to="currency",
            currency=currency,
            separator=_SPLIT,
            adjective=adjective,
        )
        if split is None or _SPLIT not in split:
            return None
        whole_words, _, cent_words = (part.strip() for part in split.partition(_SPLIT))
        if not cents:
            return whole_words
        if not whole:
            return cent_words
        if self.english:
            return f"{whole_words} and {cent_words}"
        # The language's own conjunction ("und", "et", "y"), as num2words writes it.
        return _spell(amount, self.language, to="currency", currency=currency) or (
            f"{whole_words} {cent_words}"
        )
