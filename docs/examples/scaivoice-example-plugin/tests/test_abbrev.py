"""``example-abbrev``: the table, the lexicon, whole words, case, language."""

from __future__ import annotations

import pytest
import trio
from scaivoice.engine import NormaliserBackend, NormaliseRequest, PluginHost


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Fruit, e.g. apples.", "Fruit, for example apples."),
        ("E.g. apples.", "For example apples."),
        ("It costs approx. 5 euros.", "It costs approximately 5 euros."),
        ("Apples, pears etc.", "Apples, pears et cetera."),
        ("Cats vs. dogs, i.e. a classic", "Cats versus dogs, that is a classic"),
        ("A leg.g. is not e.g.s", "A leg.g. is not e.g.s"),  # whole words only
        ("Nothing to do here.", "Nothing to do here."),
    ],
)
async def test_the_builtin_table(abbrev: NormaliserBackend, text: str, spoken: str) -> None:
    assert await abbrev.normalise(text, NormaliseRequest()) == spoken


async def test_the_lexicon_is_whole_word_case_insensitive_and_wins(
    abbrev: NormaliserBackend,
) -> None:
    request = NormaliseRequest(lexicon={"SQL": "sequel", "e.g.": "say", "nginx": "engine x"})
    text = "Run sql and NGINX, e.g. on mysql."
    assert await abbrev.normalise(text, request) == "Run sequel and engine x, say on mysql."
    text = "SQL first. Then sql."  # a capital that starts a sentence stays a capital
    assert await abbrev.normalise(text, request) == "Sequel first. Then sequel."


async def test_the_operator_table_replaces_the_builtin_one(host: PluginHost) -> None:
    spec = host.backend_specs("normaliser")["example-abbrev"]
    backend = spec.factory({"abbreviations": {"Dept.": "department"}})
    assert isinstance(backend, NormaliserBackend)
    async with backend:
        text = "The dept. says e.g. no."
        spoken = await backend.normalise(text, NormaliseRequest())
    assert spoken == "The department says e.g. no."


async def test_other_languages_get_only_the_lexicon(abbrev: NormaliserBackend) -> None:
    request = NormaliseRequest(language="de", lexicon={"z.B.": "zum Beispiel"})
    text = "Obst, z.B. Äpfel, e.g. Birnen"
    assert await abbrev.normalise(text, request) == "Obst, zum Beispiel Äpfel, e.g. Birnen"
    english = NormaliseRequest(language="en-GB")
    assert await abbrev.normalise("e.g. tea", english) == "for example tea"


async def test_a_cancelled_call_returns_nothing(abbrev: NormaliserBackend) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await abbrev.normalise("e.g.", NormaliseRequest())
        pytest.fail("normalise did not checkpoint")  # pragma: no cover
    assert scope.cancelled_caught
