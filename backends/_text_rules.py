"""The rules of the ``text`` normaliser, and the order they are tried in.

English text gets every rule. Other languages get the language-neutral ones (numbers,
ordinals, money, phone numbers) in the words of num2words; tokens whose reading needs English
words (dates, times, web addresses) are left as written for the TTS, their digits untouched.
How the rules are applied is :mod:`._text_scan`; the dates and times are :mod:`._date_rules`.
"""

from __future__ import annotations

import re

from . import _date_rules
from ._spoken_words import (
    ABBREVIATIONS,
    CURRENCY_CODES,
    CURRENCY_NAMES,
    CURRENCY_SYMBOLS,
    SYMBOL_WORDS,
    TEMPERATURE_SCALES,
    TOP_LEVEL_DOMAINS,
    UNITS,
)
from ._text_scan import (
    AFTER,
    BEFORE,
    NUM,
    Context,
    Rule,
    alternatives,
    full_stop,
    keep,
    parse_amount,
    preceding,
    say_number,
    scan,
)

__all__ = ["rewrite"]


def rewrite(text: str, context: Context) -> str:
    """Rewrite every token the rules recognise in ``text``; keep everything else."""
    return scan(text, context, _ENGLISH_RULES if context.speaker.english else _OTHER_RULES)


# --------------------------------------------------------------------------- e-mail, web

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][\w.+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w@])"
)
_URL = re.compile(
    r"(?<![\w@/.-])(?:"
    r"(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]"
    r"|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:" + "|".join(sorted(TOP_LEVEL_DOMAINS)) + r")"
    r"(?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]])?/?"
    r")(?![\w@-])"
)
_URL_PIECE = re.compile(r"\d+|[A-Za-z\u00c0-\uffff]+|.", re.S)


def _spell_address(address: str, context: Context) -> str:
    """Letters as words, digits one by one, punctuation by name ("dot", "slash", "at")."""
    words: list[str] = []
    for piece in _URL_PIECE.findall(address):
        if piece.isdigit():
            words.append(context.speaker.digits(piece))
        elif piece in SYMBOL_WORDS:
            words.append(SYMBOL_WORDS[piece])
        elif piece.strip():
            words.append(piece)
    return " ".join(words)


def _email(match: re.Match[str], context: Context) -> str:
    return _spell_address(match.group(0), context)


def _url(match: re.Match[str], context: Context) -> str:
    address = re.sub(r"^https?://", "", match.group(0)).rstrip("/")
    if address.lower().startswith("www."):
        return "w w w dot " + _spell_address(address[4:], context)
    return _spell_address(address, context)


# --------------------------------------------------------------------------- phone numbers

_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"  # +1 555 123 4567, +44 (20) 7946-0958
    r"|(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}"  # (555) 123-4567, 555-123-4567
    r"|0\d{2,4}(?:[ /-]\d{2,8}){1,3}"  # 0171 1234567, 030/123 4567
    r")(?![\w]|[.,-]?\d)"
)


def _phone(match: re.Match[str], context: Context) -> str | None:
    written = match.group(0)
    groups = re.findall(r"\d+", written)
    if not 7 <= sum(len(g) for g in groups) <= 15:
        return None
    spoken = ", ".join(context.speaker.digits(g) for g in groups)
    if written.startswith("+"):
        return ("plus " if context.speaker.english else "+") + spoken
    return spoken


# --------------------------------------------------------------------------- money

_CURRENCY_SIGN = r"(?P<sign>" + alternatives([*CURRENCY_SYMBOLS, "$"]) + r")"
_CURRENCY_CODE = r"(?P<code>" + "|".join(sorted(CURRENCY_CODES)) + r")"
_SCALE_WORDS = r"(?:\s(?P<scale>thousand|million|billion|trillion)|(?P<abbr>k|K|M|mn|bn|B))?"
_SCALE = _SCALE_WORDS + r"(?!\w)"
_SCALES = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_SCALE_ABBREVIATIONS = {"k": 3, "K": 3, "M": 6, "mn": 6, "bn": 9, "B": 9}

_MONEY_SIGN_FIRST = re.compile(
    r"(?<![\w$])(?P<minus>[-−])?" + _CURRENCY_SIGN + r"\s?(?P<amount>" + NUM + r")" + _SCALE
)
_MONEY_SIGN_AFTER = re.compile(
    BEFORE + r"(?P<minus>[-−])?(?P<amount>" + NUM + r")\s?" + _CURRENCY_SIGN + r"(?!\w)"
)
_MONEY_CODE_FIRST = re.compile(r"\b" + _CURRENCY_CODE + r"\s?(?P<amount>" + NUM + r")" + _SCALE)
_MONEY_CODE_AFTER = re.compile(
    BEFORE + r"(?P<amount>" + NUM + r")" + _SCALE_WORDS + r"\s" + _CURRENCY_CODE + r"\b"
)


def _money(match: re.Match[str], context: Context) -> str | None:
    groups = match.groupdict()
    amount = parse_amount(match["amount"], context)
    if amount is None:
        return None
    if groups.get("scale"):
        amount = amount.scaleb(_SCALES[groups["scale"]])
    elif groups.get("abbr"):
        amount = amount.scaleb(_SCALE_ABBREVIATIONS[groups["abbr"]])
    if groups.get("minus"):
        amount = -amount
    code = groups.get("code") or CURRENCY_SYMBOLS.get(groups.get("sign") or "", context.dollar)
    spoken = context.speaker.money(amount, code)
    if spoken is not None:
        return spoken
    name = CURRENCY_NAMES.get(code, " ".join(code))
    return f"{context.speaker.cardinal(amount)} {name}"


# --------------------------------------------------------------------------- measures

_PERCENT = re.compile(BEFORE + r"(?P<minus>[-−])?(?P<amount>" + NUM + r")\s?%")
_TEMPERATURE = re.compile(
    BEFORE + r"(?P<minus>[-−])?(?P<amount>" + NUM + r")\s?°\s?(?P<scale>[CFK])?(?!\w)"
)
_UNIT = re.compile(
    BEFORE + r"(?P<amount>" + NUM + r")\s?(?P<unit>" + alternatives(UNITS) + r")(?![\w/²])"
)


def _signed(match: re.Match[str], context: Context) -> tuple[str, bool]:
    """The amount of a measure as words, and whether it is exactly one."""
    words = say_number(match["amount"], context)
    one = parse_amount(match["amount"], context) == 1
    if match.groupdict().get("minus"):
        return f"minus {words}", False
    return words, one


def _percent(match: re.Match[str], context: Context) -> str:
    return f"{_signed(match, context)[0]} percent"


def _temperature(match: re.Match[str], context: Context) -> str:
    words, one = _signed(match, context)
    scale = TEMPERATURE_SCALES.get(match["scale"] or "")
    return f"{words} degree{'' if one else 's'}" + (f" {scale}" if scale else "")


def _unit(match: re.Match[str], context: Context) -> str:
    words, one = _signed(match, context)
    unit = UNITS[match["unit"]]
    return f"{words} {unit.singular if one else unit.plural}"


# --------------------------------------------------------------------------- years

_DECADE = re.compile(r"(?<![\w.,])(?:(?P<century>1[1-9]|20)|')?(?P<decade>\d)0s(?!\w)")
_YEAR_IN_CONTEXT = re.compile(
    r"(?i:\b(?P<word>in|since|from|by|until|till|through|to|and|of|year|circa|before|after"
    r"|during|around|between|early|late|mid|ca\.|c\.))[\s-]+"
    r"(?P<year>1[1-9]\d\d|20\d\d)(?:[-–](?P<until>1[1-9]\d\d|20\d\d))?(?![\w]|[.,]\d)"
)
_RANGE = re.compile(BEFORE + r"(?P<low>\d+)[-–](?P<high>\d+)" + AFTER)


def _plural(words: str) -> str:
    """``"nineteen ninety"`` -> ``"nineteen nineties"``."""
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _decade(match: re.Match[str], context: Context) -> str | None:
    speaker = context.speaker
    decade = int(match["decade"]) * 10
    if match["century"]:
        return _plural(speaker.year(int(match["century"]) * 100 + decade))
    if decade < 20:
        return None
    return _plural(speaker.cardinal(decade))


def _year_in_context(match: re.Match[str], context: Context) -> str:
    lead = match.group(0)[: match.start("year") - match.start()]
    spoken = lead + context.speaker.year(int(match["year"]))
    return spoken + (f" to {context.speaker.year(int(match['until']))}" if match["until"] else "")


def _range(match: re.Match[str], context: Context) -> str:
    low, high = match["low"], match["high"]
    if all(len(n) == 4 and 1100 <= int(n) <= 2099 for n in (low, high)):
        return f"{context.speaker.year(int(low))} to {context.speaker.year(int(high))}"
    return f"{say_number(low, context)} to {say_number(high, context)}"


# --------------------------------------------------------------------------- ordinals

_ORDINAL = re.compile(
    BEFORE + r"(?P<number>\d+)(?P<suffix>st|nd|rd|th|ST|ND|RD|TH|er|re|e|ème|eme|º|ª|\.º|\.ª)"
    r"(?!\w)"
)
_ORDINAL_SUFFIXES = {
    "fr": {"er", "re", "e", "ème", "eme"},
    "es": {"º", "ª", ".º", ".ª"},
    "it": {"º", "ª", ".º", ".ª"},
    "pt": {"º", "ª", ".º", ".ª"},
}


def _ordinal(match: re.Match[str], context: Context) -> str | None:
    suffix = match["suffix"]
    speaker = context.speaker
    english_suffix = suffix.lower() in {"st", "nd", "rd", "th"}
    if not english_suffix and suffix not in _ORDINAL_SUFFIXES.get(speaker.base, set()):
        return None
    return speaker.ordinal(int(match["number"]))


# --------------------------------------------------------------------------- abbreviations

_ABBREVIATION = re.compile(
    r"(?<![\w.])(?:"
    + "|".join(
        f"(?i:{re.escape(k)})" if k.islower() else re.escape(k)
        for k in sorted(ABBREVIATIONS, key=len, reverse=True)
    )
    + r")(?!\w)"
)
_CONTEXTUAL = re.compile(r"(?<![\w.])(?P<word>Dr|St)\b\.?")
_NUMBER_SIGN = re.compile(r"(?<![\w.])(?:(?P<no>[Nn]o\.)\s?|#)(?=\d)")
_AMPERSAND = re.compile(r"(?<=\w)\s?&\s?(?=\w)")
_CAPITALISED_NEXT = re.compile(r"\s+[A-Z]")
_PREVIOUS_WORD = re.compile(r"(?<![\w'-])(?P<word>[A-Z][\w'-]*|\d+(?:st|nd|rd|th)?)\s+$")


def _abbreviation(match: re.Match[str], context: Context) -> str:
    written = match.group(0)
    entry = ABBREVIATIONS.get(written) or ABBREVIATIONS[written.lower()]
    words = entry.words
    if written[0].isupper() and words[0].islower():
        words = words[0].upper() + words[1:]
    return words if entry.leads else words + full_stop(match)


def _follows_name(before: str) -> bool:
    """Whether ``before`` ends with a house number or a name ("5th", "Elm"), not a sentence start."""
    previous = _PREVIOUS_WORD.search(before)
    if previous is None:
        return False
    if previous["word"][0].isdigit():
        return True
    head = before[: previous.start()].rstrip()
    return bool(head) and head[-1] not in '.!?:"“('


def _contextual(match: re.Match[str], context: Context) -> str:
    """Read "Dr." as Doctor before a name, Drive after one; "St." as Saint or Street alike."""
    text = match.string
    before_name = _CAPITALISED_NEXT.match(text, match.end()) is not None
    after_name = _follows_name(preceding(match))
    if match["word"] == "Dr":
        title = before_name or not after_name
        return "Doctor" if title else "Drive" + full_stop(match)
    street = after_name or not before_name
    return "Street" + full_stop(match) if street else "Saint"


def _number_sign(match: re.Match[str], context: Context) -> str:
    no = match["no"]
    return "Number " if no and no[0] == "N" else "number "


def _ampersand(match: re.Match[str], context: Context) -> str:
    return " and "


# --------------------------------------------------------------------------- plain numbers

_NUMBER = re.compile(r"(?P<minus>(?<![\w\-−])[-−])?" + BEFORE + r"(?P<amount>" + NUM + r")" + AFTER)
# "3." before more text: a German ordinal ("am 3. März") or a sentence end; the TTS decides.
_DOTTED_ORDINAL = re.compile(r"(?<![\w.,])\d{1,2}\.(?=[ \u00a0]\S)")


def _number_words(match: re.Match[str], context: Context) -> str:
    written = match["amount"]
    speaker = context.speaker
    if (
        not speaker.english
        and written.isdigit()
        and len(written) == 4
        and 1100 <= int(written) <= 1999
    ):
        words = speaker.year(int(written))  # "1999" is "neunzehnhundert...", not "eintausend..."
    else:
        words = say_number(written, context)
    value = parse_amount(written, context)
    if match["minus"] and value is not None:
        return speaker.cardinal(-value)  # num2words says "minus" in the language
    return words


# --------------------------------------------------------------------------- rule tables

_ENGLISH_RULES: tuple[Rule, ...] = (
    Rule("email", _EMAIL, _email),
    Rule("url", _URL, _url),
    Rule("phone", _PHONE, _phone),
    *_date_rules.ENGLISH,
    Rule("money-sign-first", _MONEY_SIGN_FIRST, _money),
    Rule("money-sign-after", _MONEY_SIGN_AFTER, _money),
    Rule("money-code-first", _MONEY_CODE_FIRST, _money),
    Rule("money-code-after", _MONEY_CODE_AFTER, _money),
    Rule("percent", _PERCENT, _percent),
    Rule("temperature", _TEMPERATURE, _temperature),
    Rule("unit", _UNIT, _unit),
    Rule("decade", _DECADE, _decade),
    Rule("year", _YEAR_IN_CONTEXT, _year_in_context),
    Rule("ordinal", _ORDINAL, _ordinal),
    Rule("range", _RANGE, _range),
    Rule("contextual-abbreviation", _CONTEXTUAL, _contextual),
    Rule("abbreviation", _ABBREVIATION, _abbreviation),
    Rule("number-sign", _NUMBER_SIGN, _number_sign),
    Rule("ampersand", _AMPERSAND, _ampersand),
    Rule("number", _NUMBER, _number_words),
)

_OTHER_RULES: tuple[Rule, ...] = (
    Rule("email", _EMAIL, keep),
    Rule("url", _URL, keep),
    Rule("phone", _PHONE, _phone),
    *_date_rules.KEPT,
    Rule("money-sign-first", _MONEY_SIGN_FIRST, _money),
    Rule("money-sign-after", _MONEY_SIGN_AFTER, _money),
    Rule("money-code-first", _MONEY_CODE_FIRST, _money),
    Rule("money-code-after", _MONEY_CODE_AFTER, _money),
    Rule("ordinal", _ORDINAL, _ordinal),
    Rule("dotted-ordinal", _DOTTED_ORDINAL, keep),
    Rule("number", _NUMBER, _number_words),
)
