"""The ``text`` normaliser: written text in, speakable text out, table by table."""

from __future__ import annotations

from typing import Any

import pytest

from scaivoice.backends.text_normaliser import (
    TextNormaliser,
    TextNormaliserOptions,
    normalise_text,
)
from scaivoice.engine import ConfigError, NormaliseRequest, PluginHost
from scaivoice.engine.testing import open_test_engine

SEEDS = [
    (
        "The meeting is on March 3rd at 4:30 pm.",
        "The meeting is on March third at four thirty p m.",
    ),
    (
        "Your order number is 58 and it should arrive on Friday, June 14th.",
        "Your order number is fifty-eight and it should arrive on Friday, June fourteenth.",
    ),
    ("It costs $5.50.", "It costs five dollars and fifty cents."),
    (
        "The weather today is sunny with a high of 72 degrees.",
        "The weather today is sunny with a high of seventy-two degrees.",
    ),
]

NUMBERS = [
    ("I have 3 cats.", "I have three cats."),
    ("We sold 1,000,000 units.", "We sold one million units."),
    ("That is 1,234 steps.", "That is one thousand two hundred and thirty-four steps."),
    ("Pi is about 3.14.", "Pi is about three point one four."),
    ("Half is 0.5 of it.", "Half is zero point five of it."),
    ("It fell to -7 overnight.", "It fell to minus seven overnight."),
    ("Pages 10-20 are missing.", "Pages ten to twenty are missing."),
    ("Agent 007 and code 0042.", "Agent zero zero seven and code zero zero four two."),
    (
        "Account 12345678901.",
        "Account one two three four five six seven eight nine zero one.",
    ),
    ("No. 5 and #3.", "Number five and number three."),
]

ORDINALS = [
    ("He finished 1st.", "He finished first."),
    ("She was 22nd.", "She was twenty-second."),
    ("They came 103rd.", "They came one hundred and third."),
    ("The 11th hour.", "The eleventh hour."),
]

YEARS = [
    ("Born in 1999.", "Born in nineteen ninety-nine."),
    ("Moved in 2005.", "Moved in two thousand and five."),
    ("Married in 2010.", "Married in twenty ten."),
    ("Open since 1887, until 2024.", "Open since eighteen eighty-seven, until twenty twenty-four."),
    ("From 1990-1995 it grew.", "From nineteen ninety to nineteen ninety-five it grew."),
    ("Music of the 1980s.", "Music of the nineteen eighties."),
    ("Back in the '90s.", "Back in the nineties."),
    ("It was 1500 meters.", "It was one thousand five hundred meters."),
]

DATES: list[tuple[str, dict[str, Any], str]] = [
    ("Due March 3, 2024.", {}, "Due March third, twenty twenty-four."),
    ("Due Sept. 5th.", {}, "Due September fifth."),
    ("Due 3 March 2024.", {}, "Due the third of March, twenty twenty-four."),
    ("Due on the 3rd of March.", {}, "Due on the third of March."),
    ("Due 3 Mar.", {}, "Due the third of March."),
    ("Opened in May 2024.", {}, "Opened in May twenty twenty-four."),
    ("Due 2024-06-14.", {}, "Due June fourteenth, twenty twenty-four."),
    ("Due 2024-06-14.", {"date_order": "dmy"}, "Due the fourteenth of June, twenty twenty-four."),
    ("Due 03/04/2024.", {}, "Due March fourth, twenty twenty-four."),
    ("Due 03/04/2024.", {"date_order": "dmy"}, "Due the third of April, twenty twenty-four."),
    ("Due 14/06/2024.", {"date_order": "dmy"}, "Due the fourteenth of June, twenty twenty-four."),
    # Only valid day-first: read that way whatever the order.
    ("Due 14/06/2024.", {"date_order": "mdy"}, "Due June fourteenth, twenty twenty-four."),
    ("Due 14.06.2024.", {"date_order": "dmy"}, "Due the fourteenth of June, twenty twenty-four."),
    ("Due 6/14/24.", {}, "Due June fourteenth, twenty twenty-four."),
    ("On Feb 29 we leap.", {}, "On February twenty-ninth we leap."),
]

TIMES = [
    ("Meet at 4:30 pm.", "Meet at four thirty p m."),
    ("Meet at 4 PM today.", "Meet at four p m today."),
    ("Meet at 9:05 a.m. sharp.", "Meet at nine oh five a m sharp."),
    ("Meet at 11 am. Bring tea.", "Meet at eleven a m. Bring tea."),
    ("Meet at 16:05.", "Meet at sixteen oh five."),
    ("Meet at 16:00.", "Meet at sixteen hundred."),
    ("Meet at 7:00.", "Meet at seven o'clock."),
    ("Meet at 00:00.", "Meet at midnight."),
    ("It was 10:30:15.", "It was ten thirty and fifteen seconds."),
]

MONEY: list[tuple[str, dict[str, Any], str]] = [
    ("It costs $5.", {}, "It costs five dollars."),
    ("It costs $1.01.", {}, "It costs one dollar and one cent."),
    ("It costs $0.99.", {}, "It costs ninety-nine cents."),
    ("It costs $1,250.", {}, "It costs one thousand two hundred and fifty dollars."),
    ("It costs €20.", {}, "It costs twenty euro."),
    ("It costs £3.", {}, "It costs three pounds sterling."),
    ("It costs 5,50 €.", {}, "It costs five euro and fifty cents."),
    ("It costs USD 12.", {}, "It costs twelve dollars."),
    ("It costs 20 EUR.", {}, "It costs twenty euro."),
    ("It costs 100 CHF.", {}, "It costs one hundred Swiss francs."),
    ("It costs ¥500.", {}, "It costs five hundred yen."),
    ("It costs $3k.", {}, "It costs three thousand dollars."),
    ("It raised $2 million.", {}, "It raised two million dollars."),
    ("It lost -$5.", {}, "It lost minus five dollars."),
    # ``currency`` says which dollar "$" is.
    ("It costs $5.", {"currency": "CAD"}, "It costs five Canadian dollars."),
]

PERCENTAGES = [
    ("Down 2.5%.", "Down two point five percent."),
    ("Up 50 % today.", "Up fifty percent today."),
    ("A 100% match.", "A one hundred percent match."),
]

UNITS = [
    ("It is 72°F.", "It is seventy-two degrees Fahrenheit."),
    ("It is -5°C.", "It is minus five degrees Celsius."),
    ("It is 22 °C or 1°.", "It is twenty-two degrees Celsius or one degree."),
    ("Run 5 km.", "Run five kilometers."),
    ("Run 1 km.", "Run one kilometer."),
    ("It weighs 3 kg.", "It weighs three kilograms."),
    ("It weighs 1 lb or 6 lbs.", "It weighs one pound or six pounds."),
    ("Download 10 MB.", "Download ten megabytes."),
    ("At 100 Mbps.", "At one hundred megabits per second."),
    ("At 60 mph or 10 km/h.", "At sixty miles per hour or ten kilometers per hour."),
    ("Wait 30 min.", "Wait thirty minutes."),
    ("A 2.5 GHz chip.", "A two point five gigahertz chip."),
]

PHONES = [
    ("Call 555-123-4567.", "Call five five five, one two three, four five six seven."),
    ("Call (555) 123-4567 now.", "Call five five five, one two three, four five six seven now."),
    (
        "Call +1 555 123 4567.",
        "Call plus one, five five five, one two three, four five six seven.",
    ),
    (
        "Call +44 20 7946 0958.",
        "Call plus four four, two zero, seven nine four six, zero nine five eight.",
    ),
    ("Call 0171 1234567.", "Call zero one seven one, one two three four five six seven."),
]

ADDRESSES = [
    ("Write to support@example.com.", "Write to support at example dot com."),
    (
        "Write to jo.smith99@scai-voice.io today.",
        "Write to jo dot smith nine nine at scai dash voice dot io today.",
    ),
    (
        "Go to https://docs.example.org/guide/step-2/.",
        "Go to docs dot example dot org slash guide slash step dash two.",
    ),
    ("See www.example.com for more.", "See w w w dot example dot com for more."),
    ("Visit example.com.", "Visit example dot com."),
    (
        "Open https://example.com/search?q=voice&page=2 now.",
        "Open example dot com slash search question mark q equals voice and page equals two now.",
    ),
]

ABBREVIATIONS = [
    ("Dr. Jones is here.", "Doctor Jones is here."),
    ("Ask the Dr. about it.", "Ask the Doctor about it."),
    ("He lives on Elm Dr.", "He lives on Elm Drive."),
    ("Visit St. Mary today.", "Visit Saint Mary today."),
    ("We flew to St. Louis.", "We flew to Saint Louis."),
    ("It is on Main St.", "It is on Main Street."),
    ("Turn at 5th St. and go.", "Turn at fifth Street and go."),
    (
        "Mr. Brown and Mrs. Green met Prof. White.",
        "Mister Brown and Missus Green met Professor White.",
    ),
    ("Apples, pears, etc. The end.", "Apples, pears, et cetera. The end."),
    ("Apples, pears, etc.", "Apples, pears, et cetera."),
    ("Fruit, e.g. apples.", "Fruit, for example apples."),
    ("E.g. apples.", "For example apples."),
    ("The rest, i.e. pears.", "The rest, that is pears."),
    ("It takes approx. 5 minutes.", "It takes approximately five minutes."),
    ("Us vs. them.", "Us versus them."),
    ("Acme Inc.", "Acme Incorporated."),
    ("R&D and Tom & Jerry.", "R and D and Tom and Jerry."),
]

OTHER_LANGUAGES: list[tuple[str, str, str]] = [
    ("Es kostet 21 Euro", "de", "Es kostet einundzwanzig Euro"),
    ("Es kostet 21 Euro", "de-DE", "Es kostet einundzwanzig Euro"),
    ("Das sind 3,5 Liter.", "de", "Das sind drei Komma fünf Liter."),
    ("Es kamen 1.500 Leute.", "de", "Es kamen eintausendfünfhundert Leute."),
    ("Das war 1999.", "de", "Das war neunzehnhundertneunundneunzig."),
    ("Es kostet 5,50 €.", "de", "Es kostet fünf Euro und fünfzig Cent."),
    ("Minus -4 Grad.", "de", "Minus minus vier Grad."),
    # Tokens that need words from a table the language lacks stay as written.
    ("Am 3. März um 16:05.", "de", "Am 3. März um 16:05."),
    ("Schreib an info@example.de.", "de", "Schreib an info@example.de."),
    ("Il est arrivé 1er le 3e jour.", "fr", "Il est arrivé premier le troisième jour."),
    ("Ça coûte 21 €.", "fr", "Ça coûte vingt et un euros."),
    ("Cuesta 21 euros.", "es", "Cuesta veintiuno euros."),
    ("Costa 21 euro.", "it", "Costa ventuno euro."),
    ("Custa R$5.", "pt-BR", "Custa cinco reais."),
]

UNCHANGED = [
    "Hello there, how are you today?",
    "",
    "   ",
    "COVID-free and MP3 and 3D and v2 and H2O.",
    "I am fine. You may go now.",
    "It is 10s of things.",
]

ALREADY_SPOKEN = [
    "The meeting is on March third at four thirty p m.",
    "It costs five dollars and fifty cents.",
    "Call plus one, five five five, one two three, four five six seven.",
    "Write to support at example dot com.",
    "Doctor Jones lives on Elm Drive near Saint Louis.",
    "In nineteen ninety-nine it was seventy-two degrees Fahrenheit.",
    "That is one thousand two hundred and thirty-four steps, et cetera.",
]


def _table(rows: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any], str]]:
    return [(written, {}, spoken) for written, spoken in rows]


@pytest.mark.parametrize(
    ("written", "options", "spoken"),
    [
        *_table(SEEDS),
        *_table(NUMBERS),
        *_table(ORDINALS),
        *_table(YEARS),
        *DATES,
        *_table(TIMES),
        *MONEY,
        *_table(PERCENTAGES),
        *_table(UNITS),
        *_table(PHONES),
        *_table(ADDRESSES),
        *_table(ABBREVIATIONS),
    ],
)
def test_english_text_is_rewritten_for_speech(
    written: str, options: dict[str, Any], spoken: str
) -> None:
    assert normalise_text(written, **options) == spoken


@pytest.mark.parametrize(("written", "language", "spoken"), OTHER_LANGUAGES)
def test_numbers_are_spoken_in_the_requested_language(
    written: str, language: str, spoken: str
) -> None:
    assert normalise_text(written, language=language) == spoken


@pytest.mark.parametrize("language", ["xx", "tlh", "zz-ZZ", "", None])
def test_an_unknown_language_falls_back_to_english(language: str | None) -> None:
    assert normalise_text("It costs $5.50.", language=language) == (
        "It costs five dollars and fifty cents."
    )


@pytest.mark.parametrize(
    ("written", "lexicon", "spoken"),
    [
        ("Welcome to ScaiVoice.", {"ScaiVoice": "sky voice"}, "Welcome to sky voice."),
        ("SCAIVOICE, scaivoice!", {"ScaiVoice": "sky voice"}, "sky voice, sky voice!"),
        ("Ask about PAID AI plans.", {"AI": "A I"}, "Ask about PAID A I plans."),
        ("Meet New   York Times staff.", {"new york times": "the Times"}, "Meet the Times staff."),
        (
            "Use SQL and MySQL.",
            {"SQL": "sequel", "MySQL": "my sequel"},
            "Use sequel and my sequel.",
        ),
        # Longer entries win; the lexicon runs before the number rules.
        (
            "Try Windows 11 now.",
            {"Windows 11": "windows eleven", "Windows": "X"},
            "Try windows eleven now.",
        ),
        ("Model A320 flies.", {"A320": "A three twenty"}, "Model A three twenty flies."),
        ("On 3M and 3 m.", {"3M": "three M"}, "On three M and three meters."),
        ("Nothing here.", {"": "ignored", "  ": "ignored"}, "Nothing here."),
    ],
)
def test_the_pronunciation_lexicon_applies_first_to_whole_words(
    written: str, lexicon: dict[str, str], spoken: str
) -> None:
    assert normalise_text(written, lexicon=lexicon) == spoken


@pytest.mark.parametrize("text", UNCHANGED)
def test_text_with_nothing_to_normalise_is_unchanged(text: str) -> None:
    assert normalise_text(text) == text


@pytest.mark.parametrize("text", ALREADY_SPOKEN)
def test_already_spoken_text_is_unchanged(text: str) -> None:
    assert normalise_text(text) == text


@pytest.mark.parametrize(
    ("written", "options"),
    [
        (row[0], row[1])
        for row in [*_table(SEEDS), *DATES, *MONEY, *_table(UNITS), *_table(ABBREVIATIONS)]
    ]
    + [(written, {"language": language}) for written, language, _ in OTHER_LANGUAGES],
)
def test_normalising_twice_changes_nothing_more(written: str, options: dict[str, Any]) -> None:
    once = normalise_text(written, **options)
    assert normalise_text(once, **options) == once


@pytest.mark.parametrize(
    "text",
    [
        "99999999999999999999999999999999999999999999999999 apples",
        "$99999999999999999999999999999999999999999999999999.99",
        "1,2,3,4 and 1.2.3.4 and 1,000,5 and 13/13/2024 and 29/02/2023",
        "25:99 and 99:99 pm and 0:00 am and 12:60",
        "+1 and + and +-5 and -- and $ and € and ° and % and @ and # and &",
        "3rd4th 5thst ª º 2.º 10.ª ème",
        "Dr. St. No. e.g. etc. a.k.a.",
        "mailto:x@y @x.com x@ http:// www. .com",
        "٣ ١٢ ३ 五 ①",
    ],
)
@pytest.mark.parametrize("language", ["en", "de", "fr", "ja", "cs", "sv", "ar"])
def test_odd_text_never_raises(text: str, language: str) -> None:
    assert isinstance(normalise_text(text, language=language), str)


# --------------------------------------------------------------------------- the backend


async def test_the_backend_uses_the_request_language_and_both_lexicons() -> None:
    options = TextNormaliserOptions.from_mapping(
        {"language": "de", "lexicon": {"ScaiVoice": "skai woiss", "Bot": "Bott"}}, backend="text"
    )
    backend = TextNormaliser(options)
    async with backend:
        assert await backend.normalise("ScaiVoice Bot: 21", NormaliseRequest()) == (
            "skai woiss Bott: einundzwanzig"
        )
        request = NormaliseRequest(language="en-US", lexicon={"bot": "robot"})
        assert await backend.normalise("ScaiVoice Bot: 21", request) == (
            "skai woiss robot: twenty-one"
        )
        # A language num2words lacks falls back to the backend's default language.
        assert await backend.normalise("21", NormaliseRequest(language="xx")) == "einundzwanzig"


async def test_the_backend_reads_dates_and_dollars_as_configured() -> None:
    options = TextNormaliserOptions.from_mapping(
        {"date_order": "dmy", "currency": "AUD"}, backend="text"
    )
    backend = TextNormaliser(options)
    spoken = await backend.normalise("Pay $5 by 03/04/2024.", NormaliseRequest())
    assert spoken == "Pay five Australian dollars by the third of April, twenty twenty-four."


@pytest.mark.parametrize(
    "values",
    [
        {"colour": "blue"},
        {"date_order": "ymd"},
        {"currency": "dollars"},
        {"language": "klingon"},
        {"lexicon": {" ": "x"}},
    ],
)
def test_invalid_options_are_config_errors(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="'text'"):
        TextNormaliserOptions.from_mapping(values, backend="text")


def test_the_declared_languages_are_those_num2words_spells() -> None:
    languages = TextNormaliser.capabilities.languages
    assert {"en", "de", "fr", "es", "it", "pt-BR"} <= set(languages)
    assert "xx" not in languages and "zh" not in languages
    assert TextNormaliser.capabilities.lexicon is True


def test_the_backend_is_discovered_through_the_entry_point() -> None:
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    spec = host.backend_specs("normaliser")["text"]
    assert spec.kind == "normaliser" and spec.api_version == 1
    backend = spec.factory({"date_order": "dmy"})
    assert isinstance(backend, TextNormaliser) and backend.name == "text"
    assert backend.options.date_order == "dmy"


async def test_an_engine_opens_the_text_normaliser_from_its_config() -> None:
    overrides = {"backends": {"normaliser": "text", "options": {"text": {"date_order": "dmy"}}}}
    async with open_test_engine(overrides) as engine:
        normaliser = engine.normaliser
        assert isinstance(normaliser, TextNormaliser)
        spoken = await normaliser.normalise("On 03/04/2024.", NormaliseRequest(language="en"))
        assert spoken == "On the third of April, twenty twenty-four."
