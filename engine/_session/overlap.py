"""Speech over the agent: an interruption, a backchannel, or the agent's own echo (sans-IO).

While the agent speaks, the user often says something that is not a turn of their own: "uh-huh",
"yeah, right", a laugh; and without echo cancellation the microphone hears the agent itself.
:func:`overlap_verdict` decides from the words recognised so far:

- ``echo``: most words are the agent's own recent words (only when the echo guard is on);
- ``backchannel``: fewer than ``min_words`` words that are not backchannels (noises and
  sounds the recogniser writes in brackets, "(laughs)", count as nothing);
- ``interrupt``: otherwise.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["BACKCHANNELS", "EndOfTurnPolicy", "Verdict", "overlap_verdict", "spoken_words"]

Verdict = Literal["interrupt", "backchannel", "echo"]

#: Words that, alone, acknowledge rather than take the turn (English).
BACKCHANNELS = frozenset(
    {
        "ah", "aha", "alright", "cool", "exactly", "good", "great", "ha", "haha", "hm",
        "hmm", "huh", "i", "see", "mhm", "mm", "mmhmm", "mmm", "nice", "oh", "ok",
        "okay", "really", "right", "sure", "thank", "thanks", "totally", "true", "uh",
        "uhhuh", "um", "wow", "yeah", "yep", "yes", "yup", "you", "got", "it",
    }
)  # fmt: skip
_BRACKETED = re.compile(r"[\[(*][^\])*]*[\])*]")
_WORD = re.compile(r"[a-z0-9']+")
_ECHO_SHARE = 0.6


def spoken_words(text: str) -> list[str]:
    """The words of a transcript, lower case, without punctuation or bracketed sounds.

    "Uh-huh" and "mm-hmm" count as one word ("uhhuh", "mmhmm").
    """
    text = _BRACKETED.sub(" ", text.lower()).replace("-", "")
    return _WORD.findall(text)


def overlap_verdict(text: str, *, agent_text: str, min_words: int, echo_guard: bool) -> Verdict:
    """What the words ``text``, said over the agent's ``agent_text``, amount to."""
    words = spoken_words(text)
    if echo_guard and words:
        own = set(spoken_words(agent_text))
        if sum(w in own for w in words) >= max(1, _ECHO_SHARE * len(words)):
            return "echo"
    substantive = [w for w in words if w not in BACKCHANNELS]
    return "interrupt" if words and len(substantive) >= max(min_words, 1) else "backchannel"


class EndOfTurnPolicy:
    """When a pause ends the user's turn under ``turn_detection: semantic``.

    Attributes:
        pause_ms: silence after speech at which the end-of-turn model is asked.
        complete_at: the model's probability at or above which the turn ends at once.
        max_wait_ms: the longest silence before the turn ends whatever the model said.
        unfinished_wait_ms: the silence that ends a turn the model called complete but whose
            words so far stop mid-sentence (a pause inside a dictated number is 0.3-0.9 s;
            ending the number itself waits this long).
    """

    __slots__ = ("complete_at", "max_wait_ms", "pause_ms", "unfinished_wait_ms")

    def __init__(
        self, pause_ms: int, complete_at: float, max_wait_ms: int, unfinished_wait_ms: int
    ) -> None:
        self.pause_ms = pause_ms
        self.complete_at = complete_at
        self.max_wait_ms = max_wait_ms
        self.unfinished_wait_ms = unfinished_wait_ms

    @classmethod
    def for_eagerness(cls, eagerness: str) -> EndOfTurnPolicy:
        """``high`` answers soonest, ``low`` waits longest for the user to go on."""
        return {
            "high": cls(120, complete_at=0.35, max_wait_ms=1200, unfinished_wait_ms=800),
            "medium": cls(180, complete_at=0.5, max_wait_ms=2000, unfinished_wait_ms=1000),
            "low": cls(250, complete_at=0.7, max_wait_ms=3000, unfinished_wait_ms=1500),
        }[eagerness]
