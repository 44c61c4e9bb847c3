"""The words at a pause: does the turn so far sound like more is coming?"""

from __future__ import annotations

import pytest

from scaivoice.engine._session.unfinished import sounds_unfinished


@pytest.mark.parametrize(
    "text",
    [
        "My number is 555.",
        "You can reach me on 077.",
        "the code is 4 7",
        "The code is 47.",
        "Call me on 07700.",
        "I need eggs,",
        "I'd like a coffee and",
        "It's because",
        "Send it to the",
        "Um",
        "Add milk, eggs, flour, plus",
    ],
)
def test_a_turn_that_stops_here_is_not_over(text: str) -> None:
    assert sounds_unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "What time is it in Tokyo?",
        "Is the code 4 7?",
        "Turn the lights on.",
        "I think so.",
        "Here it is.",
        "Set an alarm for 7.",
        "I'm 47.",
        "I was born in 1990.",
        "Tell me about the planets of the solar system.",
        "Uh-huh.",
    ],
)
def test_a_finished_turn_reads_finished(text: str) -> None:
    assert not sounds_unfinished(text)
