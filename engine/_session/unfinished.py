"""Does a transcript, cut at a pause, sound like more is coming? (sans-IO, English)

The end-of-turn model hears intonation, and on some voices a list or a phone number said with
pauses sounds finished at each comma ("my number is five five five, ... one two three four":
Smart Turn v3.2 scores the first part 0.97 on generated voices). The words say otherwise: a
turn that stops on a number being dictated, on a connective ("and", "because"), an article or
a preposition, a filler ("um"), or a trailing comma, is not over. :func:`sounds_unfinished`
reads the transcript of the turn so far; the engine then waits for more, up to the
eagerness's ``unfinished_wait_ms`` of silence.
"""

from __future__ import annotations

from .overlap import spoken_words

__all__ = ["sounds_unfinished"]

#: Words a finished English turn rarely ends on (conservative: "turn it on", "I think so",
#: "here it is" are finished turns, so "on", "so" and "is" are not in here).
_DANGLING = frozenset(
    {
        "a", "an", "and", "as", "because", "but", "from", "if", "into", "of", "or", "than",
        "the", "to", "um", "uh", "er", "erm", "my", "our", "your", "their", "with", "plus",
        "minus", "dash", "hyphen", "zero", "double", "triple",
    }
)  # fmt: skip
#: Words that say a number is being given: then any number at the end may go on.
_DICTATION_CUES = frozenset(
    {
        "account", "call", "card", "code", "digits", "extension", "number", "phone", "pin",
        "postcode", "reach", "reference", "serial", "ticket", "zip",
    }
)  # fmt: skip


def sounds_unfinished(text: str) -> bool:
    """Whether the turn so far (``text``) ends where a speaker would go on.

    A question mark at the end always reads as finished. Otherwise: a trailing comma, dash or
    ellipsis; a last word that is a connective, article, preposition or filler; or a number
    being dictated: any number after a word that announces one ("my number is 555", "the code
    is 47"), a group of three or more digits that is not a year ("call me on 077"), or digit
    groups in a row ("4 7"). One short number otherwise ("set an alarm for 7", "I'm 47",
    "born in 1990") is an answer, not dictation.
    """
    stripped = text.strip()
    if not stripped or stripped.endswith("?"):
        return False
    if stripped.endswith((",", "-", "…", "...", ";", ":")):
        return True
    words = spoken_words(stripped)
    if not words:
        return False
    last = words[-1]
    return last in _DANGLING or _dictating(words)


def _dictating(words: list[str]) -> bool:
    last = words[-1]
    if not last.isdigit():
        return False
    if len(words) > 1 and words[-2].isdigit():
        return True
    if any(word in _DICTATION_CUES for word in words):
        return True
    return len(last) >= 3 and not (len(last) == 4 and 1900 <= int(last) <= 2099)
