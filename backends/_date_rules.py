"""The ``text`` normaliser's English date and time rules.

"March 3rd", "3 March 2024", "the 3rd of March", "May 2024", "2024-06-14", "14/06/2024" (read
month-first or day-first as configured, the other way when only that is a valid date), "4:30
pm", "16:05", "7 am". In other languages these tokens are kept as written (:data:`KEPT`).
"""

from __future__ import annotations

import calendar
import re

from ._spoken_words import MONTH_NAMES, MONTHS
from ._text_scan import (
    BEFORE,
    Context,
    DateOrder,
    Rule,
    alternatives,
    full_stop,
    keep,
    preceding,
)

__all__ = ["ENGLISH", "KEPT"]

_MONTH = (
    r"(?P<month>"
    + alternatives(MONTH_NAMES)
    + r"|(?:"
    + alternatives(m for m in MONTHS if m not in MONTH_NAMES)
    + r")\.?)"
)
_YEAR = r"(?P<year>\d{4})(?![\w]|[.,]\d)"
_ORD_SUFFIX = r"(?:st|nd|rd|th)?"

_ISO_DATE = re.compile(r"(?<![\w.-])(\d{4})-(\d{2})-(\d{2})(?![\w-]|\.\d)")
_NUMERIC_DATE = re.compile(r"(?<![\w./-])(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?![\w/-]|[.,]\d)")
_MONTH_DAY = re.compile(
    r"\b" + _MONTH + r"\s+(?P<day>\d{1,2})" + _ORD_SUFFIX + r"(?![\w]|[.,]\d)"
    r"(?:,?\s+" + _YEAR + r")?"
)
_DAY_MONTH = re.compile(
    BEFORE + r"(?P<day>\d{1,2})" + _ORD_SUFFIX + r"\s+(?:of\s+)?" + _MONTH + r"(?!\w)"
    r"(?:,?\s+" + _YEAR + r")?"
)
_MONTH_YEAR = re.compile(r"\b" + _MONTH + r"\s+" + _YEAR)


def _valid_date(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def _say_date(
    year: int | None, month: int, day: int, order: DateOrder, context: Context, *, the: bool = True
) -> str:
    """``June fourteenth, twenty twenty-four`` (mdy) or ``the fourteenth of June, ...`` (dmy)."""
    speaker = context.speaker
    month_name = MONTH_NAMES[month - 1]
    spoken = (
        f"{'the ' if the else ''}{speaker.ordinal(day)} of {month_name}"
        if order == "dmy"
        else f"{month_name} {speaker.ordinal(day)}"
    )
    return spoken if year is None else f"{spoken}, {speaker.year(year)}"


def _iso_date(match: re.Match[str], context: Context) -> str | None:
    year, month, day = (int(g) for g in match.groups())
    if not _valid_date(year, month, day):
        return None
    return _say_date(year, month, day, context.date_order, context, the=not _after_the(match))


def _numeric_date(match: re.Match[str], context: Context) -> str | None:
    first, _, second, written_year = match.groups()
    year = int(written_year)
    if len(written_year) == 2:  # the POSIX pivot: 69-99 -> 19xx, 00-68 -> 20xx
        year += 1900 if year >= 69 else 2000
    a, b = int(first), int(second)
    readings = [(a, b), (b, a)] if context.date_order == "mdy" else [(b, a), (a, b)]
    for month, day in readings:
        if _valid_date(year, month, day):
            order = context.date_order
            return _say_date(year, month, day, order, context, the=not _after_the(match))
    return None


def _after_the(match: re.Match[str]) -> bool:
    """Whether the text says "the" right before ``match`` ("on the 3rd of March")."""
    return re.search(r"\bthe\s+$", preceding(match), re.IGNORECASE) is not None


def _written_date(match: re.Match[str], context: Context, order: DateOrder) -> str | None:
    month, day = MONTHS[match["month"].rstrip(".")], int(match["day"])
    year = int(match["year"]) if match["year"] else None
    if not _valid_date(year or 2000, month, day):  # 2000 is a leap year: "February 29th" is valid
        return None
    spoken = _say_date(year, month, day, order, context, the=not _after_the(match))
    return spoken + full_stop(match)  # "on 3 Mar." ends with the month's dot


def _month_day(match: re.Match[str], context: Context) -> str | None:
    return _written_date(match, context, "mdy")


def _day_month(match: re.Match[str], context: Context) -> str | None:
    return _written_date(match, context, "dmy")


def _month_year(match: re.Match[str], context: Context) -> str:
    month = MONTHS[match["month"].rstrip(".")]
    return f"{MONTH_NAMES[month - 1]} {context.speaker.year(int(match['year']))}"


# --------------------------------------------------------------------------- times

_AMPM = r"(?P<ampm>[AaPp](?:\.\s?)?[Mm]\b\.?)"
_TIME = re.compile(
    r"(?<![\w:.,])(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?"
    r"(?:\s?" + _AMPM + r"|(?![\w:]|[.,]\d))"
)
_HOUR_AMPM = re.compile(r"(?<![\w:.,])(?P<hour>\d{1,2})\s?" + _AMPM)


def _time(match: re.Match[str], context: Context) -> str | None:
    """``4:30 pm`` -> "four thirty p m"; ``16:05`` -> "sixteen oh five"; ``7:00`` -> "seven o'clock"."""
    speaker = context.speaker
    hour, minute = int(match["hour"]), int(match.groupdict().get("minute") or 0)
    second = int(match.groupdict().get("second") or 0)
    ampm = match["ampm"]
    if minute > 59 or second > 59 or hour > (12 if ampm else 24) or (hour == 24 and minute):
        return None
    words = [speaker.cardinal(hour)]
    if minute:
        words.append(("oh " if minute < 10 else "") + speaker.cardinal(minute))
    elif not ampm and hour == 0:
        words = ["midnight"]
    elif not ampm:  # 24-hour style ("sixteen hundred", "oh nine hundred") or the clock's hour
        words.append("hundred" if hour > 12 or match["hour"].startswith("0") else "o'clock")
    if second:
        words.append(f"and {speaker.cardinal(second)} second{'s' if second != 1 else ''}")
    if ampm:
        words.append("a m" if ampm[0] in "Aa" else "p m")
    return " ".join(words) + (full_stop(match) if ampm else "")


#: Dates and times in English, in the order they are tried.
ENGLISH: tuple[Rule, ...] = (
    Rule("iso-date", _ISO_DATE, _iso_date),
    Rule("numeric-date", _NUMERIC_DATE, _numeric_date),
    Rule("month-day", _MONTH_DAY, _month_day),
    Rule("day-month", _DAY_MONTH, _day_month),
    Rule("month-year", _MONTH_YEAR, _month_year),
    Rule("time", _TIME, _time),
    Rule("hour-am-pm", _HOUR_AMPM, _time),
)

#: Numeric dates and times in other languages: kept as written, digits and all.
KEPT: tuple[Rule, ...] = (
    Rule("iso-date", _ISO_DATE, keep),
    Rule("numeric-date", _NUMERIC_DATE, keep),
    Rule("time", _TIME, keep),
)
