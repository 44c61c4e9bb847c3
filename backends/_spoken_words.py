"""The English words the ``text`` normaliser speaks: months, units, abbreviations, symbols.

Data only. Numbers are never spelled here (num2words does that, in every language it knows);
these tables hold the words around numbers that English text abbreviates or writes as symbols.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "ABBREVIATIONS",
    "CURRENCY_CODES",
    "CURRENCY_NAMES",
    "CURRENCY_SYMBOLS",
    "MONTHS",
    "MONTH_NAMES",
    "SYMBOL_WORDS",
    "TEMPERATURE_SCALES",
    "TOP_LEVEL_DOMAINS",
    "UNITS",
    "Abbreviation",
    "Unit",
]

MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

#: Written month (full or abbreviated, capitalised) -> month number.
MONTHS: Mapping[str, int] = MappingProxyType(
    {
        **{name: number for number, name in enumerate(MONTH_NAMES, start=1)},
        **{name[:3]: number for number, name in enumerate(MONTH_NAMES, start=1)},
        "Sept": 9,
    }
)


class Unit(NamedTuple):
    """How a unit symbol is read after one (``singular``) or any other amount."""

    singular: str
    plural: str


def _unit(singular: str, plural: str | None = None) -> Unit:
    return Unit(singular, plural or singular + "s")


#: Unit symbol (case-sensitive, as written after a number) -> its words.
UNITS: Mapping[str, Unit] = MappingProxyType(
    {
        "km": _unit("kilometer"),
        "m": _unit("meter"),
        "cm": _unit("centimeter"),
        "mm": _unit("millimeter"),
        "mi": _unit("mile"),
        "ft": _unit("foot", "feet"),
        "yd": _unit("yard"),
        "km²": _unit("square kilometer"),
        "m²": _unit("square meter"),
        "sq ft": _unit("square foot", "square feet"),
        "kg": _unit("kilogram"),
        "g": _unit("gram"),
        "mg": _unit("milligram"),
        "lb": _unit("pound"),
        "lbs": _unit("pound"),
        "oz": _unit("ounce"),
        "l": _unit("liter"),
        "L": _unit("liter"),
        "ml": _unit("milliliter"),
        "mL": _unit("milliliter"),
        "gal": _unit("gallon"),
        "km/h": _unit("kilometer per hour", "kilometers per hour"),
        "kph": _unit("kilometer per hour", "kilometers per hour"),
        "mph": _unit("mile per hour", "miles per hour"),
        "m/s": _unit("meter per second", "meters per second"),
        "KB": _unit("kilobyte"),
        "kB": _unit("kilobyte"),
        "MB": _unit("megabyte"),
        "GB": _unit("gigabyte"),
        "TB": _unit("terabyte"),
        "kbps": _unit("kilobit per second", "kilobits per second"),
        "Mbps": _unit("megabit per second", "megabits per second"),
        "Gbps": _unit("gigabit per second", "gigabits per second"),
        "Hz": _unit("hertz", "hertz"),
        "kHz": _unit("kilohertz", "kilohertz"),
        "MHz": _unit("megahertz", "megahertz"),
        "GHz": _unit("gigahertz", "gigahertz"),
        "W": _unit("watt"),
        "kW": _unit("kilowatt"),
        "kWh": _unit("kilowatt hour"),
        "V": _unit("volt"),
        "mAh": _unit("milliamp hour"),
        "ms": _unit("millisecond"),
        "sec": _unit("second"),
        "secs": _unit("second"),
        "min": _unit("minute"),
        "mins": _unit("minute"),
        "h": _unit("hour"),
        "hr": _unit("hour"),
        "hrs": _unit("hour"),
        "px": _unit("pixel"),
    }
)

#: Letter after a degree sign -> the scale's name.
TEMPERATURE_SCALES: Mapping[str, str] = MappingProxyType(
    {"C": "Celsius", "F": "Fahrenheit", "K": "Kelvin"}
)

#: Currency sign -> ISO 4217 code. ``"$"`` is missing on purpose: the options say which dollar.
CURRENCY_SYMBOLS: Mapping[str, str] = MappingProxyType(
    {
        "US$": "USD",
        "A$": "AUD",
        "C$": "CAD",
        "R$": "BRL",
        "€": "EUR",
        "£": "GBP",
        "¥": "JPY",
        "₹": "INR",
        "₩": "KRW",
        "₽": "RUB",
    }
)

#: ISO 4217 codes recognised next to an amount ("20 EUR", "CHF 5").
CURRENCY_CODES = frozenset(
    "AUD BRL CAD CHF CNY CZK DKK EUR GBP HUF INR JPY KRW MXN NOK NZD PLN RON RUB SEK TRY USD "
    "ZAR".split()
)

#: English names for currencies num2words cannot name in a language (plural; amounts >= 2).
CURRENCY_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "BRL": "reais",
        "CHF": "Swiss francs",
        "CNY": "yuan",
        "CZK": "Czech korunas",
        "DKK": "Danish kroner",
        "JPY": "yen",
        "KRW": "won",
        "NZD": "New Zealand dollars",
        "TRY": "Turkish lira",
        "ZAR": "rand",
    }
)


class Abbreviation(NamedTuple):
    """An abbreviation's expansion.

    ``leads`` marks abbreviations that precede what they qualify ("Mr.", "e.g."): their dot is
    never also the end of a sentence, so it is dropped. Other abbreviations ("etc.", "Inc.")
    keep a full stop when a new sentence follows.
    """

    words: str
    leads: bool


#: Abbreviation as written -> expansion. Keys in lower case match in any case ("E.g.").
#: "Dr.", "St." and "No." depend on context and are decided by the rules, not here.
ABBREVIATIONS: Mapping[str, Abbreviation] = MappingProxyType(
    {
        "Mr.": Abbreviation("Mister", True),
        "Mr": Abbreviation("Mister", True),
        "Mrs.": Abbreviation("Missus", True),
        "Mrs": Abbreviation("Missus", True),
        "Ms.": Abbreviation("Miz", True),
        "Prof.": Abbreviation("Professor", True),
        "Capt.": Abbreviation("Captain", True),
        "Sgt.": Abbreviation("Sergeant", True),
        "Lt.": Abbreviation("Lieutenant", True),
        "Gov.": Abbreviation("Governor", True),
        "Sen.": Abbreviation("Senator", True),
        "Mt.": Abbreviation("Mount", True),
        "Ft.": Abbreviation("Fort", True),
        "Fig.": Abbreviation("Figure", True),
        "Apt.": Abbreviation("Apartment", True),
        "Jr.": Abbreviation("Junior", False),
        "Sr.": Abbreviation("Senior", False),
        "Inc.": Abbreviation("Incorporated", False),
        "Ltd.": Abbreviation("Limited", False),
        "Corp.": Abbreviation("Corporation", False),
        "Ave.": Abbreviation("Avenue", False),
        "Rd.": Abbreviation("Road", False),
        "Blvd.": Abbreviation("Boulevard", False),
        "e.g.": Abbreviation("for example", True),
        "i.e.": Abbreviation("that is", True),
        "a.k.a.": Abbreviation("also known as", True),
        "approx.": Abbreviation("approximately", True),
        "approx": Abbreviation("approximately", True),
        "vs.": Abbreviation("versus", True),
        "vs": Abbreviation("versus", True),
        "incl.": Abbreviation("including", True),
        "excl.": Abbreviation("excluding", True),
        "avg.": Abbreviation("average", True),
        "dept.": Abbreviation("department", False),
        "etc.": Abbreviation("et cetera", False),
        "etc": Abbreviation("et cetera", False),
    }
)

#: How the punctuation inside e-mail addresses and URLs is read.
SYMBOL_WORDS: Mapping[str, str] = MappingProxyType(
    {
        ".": "dot",
        "@": "at",
        "/": "slash",
        "-": "dash",
        "_": "underscore",
        "+": "plus",
        ":": "colon",
        "?": "question mark",
        "=": "equals",
        "&": "and",
        "#": "hash",
        "%": "percent",
        "~": "tilde",
    }
)

#: Top-level domains that make a bare ``name.tld`` a web address ("example.com").
TOP_LEVEL_DOMAINS = frozenset(
    "com org net edu gov io ai co app dev info biz me tv us uk de fr es it nl eu ca au ch at "
    "be se no dk fi pl in jp br".split()
)
