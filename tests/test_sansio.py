"""Sans-IO helpers: sentence chunking, playback model and heard text."""

from __future__ import annotations

import pytest

from scaivoice.engine import SentenceChunker
from scaivoice.engine._session.playback import PlaybackModel, heard_prefix


def _chunk(text: str, step: int = 3) -> list[str]:
    chunker = SentenceChunker()
    pieces: list[str] = []
    for i in range(0, len(text), step):
        pieces += chunker.feed(text[i : i + step])
    return pieces + chunker.flush()


def test_sentences_are_cut_while_streaming() -> None:
    text = "Hello there. How are you today? I am fine!"
    assert _chunk(text) == ["Hello there. ", "How are you today? ", "I am fine!"]


def test_first_piece_may_end_at_a_clause_to_start_speaking_sooner() -> None:
    text = "Well, the weather in Paris tomorrow, as far as I know, is sunny. Bring a hat."
    pieces = _chunk(text)
    assert pieces[0] == "Well, the weather in Paris tomorrow, "
    assert pieces[1] == "as far as I know, is sunny. "
    assert "".join(pieces) == text


def test_a_short_opening_clause_is_spoken_on_its_own_but_not_a_one_word_one() -> None:
    assert _chunk("I'm sorry, I can't make it today. Maybe tomorrow?")[0] == "I'm sorry, "
    assert _chunk("Okay, it is done. Bye.")[0] == "Okay, it is done. "


def test_abbreviations_and_decimals_do_not_end_a_sentence() -> None:
    assert _chunk("Dr. Smith paid 3.5 dollars, e.g. cash. Done.") == [
        "Dr. Smith paid 3.5 dollars, ",  # the first piece may end at a clause
        "e.g. cash. ",
        "Done.",
    ]


def test_runaway_text_without_punctuation_is_cut_at_a_space() -> None:
    text = ("word " * 100).strip()
    pieces = _chunk(text)
    assert all(len(p) <= 241 for p in pieces)
    assert "".join(pieces) == text


@pytest.mark.parametrize(
    ("text", "fraction", "expected"),
    [
        ("one two three four", 1.0, "one two three four"),
        ("one two three four", 0.0, ""),
        ("one two three four", 0.5, "one two"),
        ("one two three four", 0.35, "one"),  # "two" is not complete yet
        ("one two three four", 0.1, ""),
    ],
)
def test_heard_prefix_counts_whole_words(text: str, fraction: float, expected: str) -> None:
    assert heard_prefix(text, fraction) == expected


def test_pacing_keeps_audio_at_most_lead_ahead_of_real_time() -> None:
    model = PlaybackModel(lead_ms=200)
    now = 10.0
    assert model.send_at(now) == now
    for _ in range(20):  # 20 x 40 ms = 800 ms of audio
        now = model.send_at(now)
        model.sent(now, 40)
    # The last frame went out when the client still had 200 ms queued (minus one frame).
    assert now == pytest.approx(10.0 + 0.8 - 0.2 - 0.04)
    assert model.sent_ms == 800


def test_heard_ms_follows_real_time_and_restarts_after_a_gap() -> None:
    model = PlaybackModel(lead_ms=0)
    model.sent(0.0, 500)
    assert model.heard_ms(0.2) == pytest.approx(200)
    assert model.heard_ms(5.0) == 500  # cannot hear more than was sent
    model.sent(6.0, 500)  # a gap: playback restarts when the chunk arrives
    assert model.heard_ms(6.1) == pytest.approx(600)


def test_client_playback_reports_override_the_model() -> None:
    model = PlaybackModel(lead_ms=200)
    model.sent(0.0, 1000)
    model.report_played(300)
    assert model.heard_ms(0.9) == 300
    model.report_played(5000)
    assert model.heard_ms(0.9) == 1000  # clamped to what was sent


def test_heard_text_maps_audio_time_to_words() -> None:
    model = PlaybackModel(lead_ms=0)
    model.add_text("First sentence here. ", 0, 1000)
    model.add_text("Second one follows now.", 1000, 2000)
    assert model.heard_text(750) == "First sentence"
    assert model.heard_text(1000) == "First sentence here."
    assert model.heard_text(1500) == "First sentence here. Second one"
    assert model.heard_text(0) == ""


def test_a_long_first_sentence_is_cut_after_its_first_words() -> None:
    text = "I would be very happy to help you find a table tonight. Then more follows here."
    pieces = _chunk(text)
    assert pieces[0] == "I would be very happy to help "
    assert pieces[1] == "you find a table tonight. "
    assert "".join(pieces) == text
