"""What the benchmark's users say: the texts of each category and the conversations made of them.

A conversation belongs to one category and is spoken by one voice (one person); it has a few
steps. A step is a user turn (:attr:`Step.clip`) and, in the categories about speech over the
agent, what the user does while the agent answers it (:attr:`Step.over`): a backchannel, a
noise, or a real interruption. The pauses inside utterances, the voices and the noises come
from one seeded random generator, so a run is repeatable (Piper's own rendering varies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scaivoice.engine import PluginHost

from .speech import PAUSE, Clip, click, cough, render_clips

__all__ = [
    "BACKCHANNELS",
    "CATEGORIES",
    "INTERRUPTIONS",
    "OVERLAP_CATEGORIES",
    "PAUSED",
    "PROMPTS",
    "QUESTIONS",
    "Conversation",
    "Step",
    "build_conversations",
]

CATEGORIES = ("pauses", "questions", "backchannels", "noises", "interruptions")
OVERLAP_CATEGORIES = ("backchannels", "noises", "interruptions")
"""The categories whose steps put something over the agent's reply."""

PAUSED = (
    f"My number is five five five, {PAUSE} one two three four.",
    f"You can reach me on zero seven seven, {PAUSE} nine four six, {PAUSE} two two one.",
    f"I need eggs, {PAUSE} milk, {PAUSE} and some bread.",
    f"The code is four seven, {PAUSE} two nine, {PAUSE} one one.",
    f"Please add tomatoes, {PAUSE} onions, and garlic to the list.",
    f"Book it for Monday, {PAUSE} Wednesday, {PAUSE} and Friday morning.",
    f"My address is twelve, {PAUSE} Baker Street, in London.",
    f"Send it to John, {PAUSE} Mary, {PAUSE} and Peter.",
    f"I would like to, {PAUSE} um, change my booking to Sunday.",
    f"The order number is three eight, {PAUSE} five one, {PAUSE} zero.",
)
"""Utterances with inner pauses (phone numbers, lists, hesitations): ``|`` marks each pause."""

QUESTIONS = (
    "What is the capital of Australia?",
    "How tall is the Eiffel Tower?",
    "Who wrote Romeo and Juliet?",
    "Is it going to rain tomorrow?",
    "How do I boil an egg?",
    "What time is it in Tokyo?",
    "Can you recommend a good book?",
    "How far away is the moon?",
    "What should I cook for dinner?",
    "Why is the sky blue?",
)
"""Complete short questions."""

PROMPTS = (
    "Tell me about the history of the Roman Empire.",
    "Can you explain how airplanes fly?",
    "Describe how to bake bread at home.",
    "Tell me a story about a brave little fox.",
    "Explain how the internet works.",
    "What should I pack for a week in the mountains?",
    "How do I train for my first marathon?",
    "Tell me about the planets of the solar system.",
)
"""Questions that ask for a long answer, for the user to speak over."""

BACKCHANNELS = ("Uh-huh.", "Yeah.", "Right.", "Okay.", "Mm-hmm.", "Ha ha ha.")
"""Backchannels (and a laugh, as the voices render "ha ha ha")."""

INTERRUPTIONS = (
    "Wait, stop.",
    "No, I meant tomorrow.",
    "Hold on, that's not right.",
    "Sorry, I meant Tuesday.",
    "Actually, cancel that.",
    "Stop, that's enough.",
)
"""Real interruptions."""

_PAUSE_MS = (300, 900)


@dataclass(frozen=True, slots=True)
class Step:
    """A user turn, and what the user says (or the noise they make) over its reply."""

    clip: Clip
    over: Clip | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One session's worth of steps, in one category and one voice."""

    number: int
    category: str
    voice: str
    steps: tuple[Step, ...]


def _texts(category: str) -> Sequence[str]:
    return {
        "pauses": PAUSED,
        "questions": QUESTIONS,
        "backchannels": PROMPTS,
        "noises": PROMPTS,
        "interruptions": PROMPTS,
    }[category]


async def build_conversations(
    host: PluginHost,
    voices: Sequence[str],
    *,
    per_category: int,
    turns: int,
    categories: Sequence[str] = CATEGORIES,
    seed: int = 0,
) -> tuple[list[Conversation], list[str]]:
    """``per_category`` conversations of ``turns`` steps in each category, voices in turn.

    Returns:
        The conversations, and the voices left out (each with why).
    """
    rng = np.random.default_rng(seed)
    # Which voices render here (a backend may be missing or fail to open).
    _, skipped = await render_clips(host, voices, [("probe", v, "Okay.", ()) for v in voices])
    gone = {s.split(" ", 1)[0] for s in skipped}
    usable = [v for v in voices if v not in gone]
    if not usable:
        return [], skipped
    wanted: list[tuple[str, str, str, tuple[int, ...]]] = []

    def want(kind: str, voice: str, text: str) -> int:
        low, high = _PAUSE_MS[0] // 10, _PAUSE_MS[1] // 10
        pauses = tuple(int(rng.integers(low, high + 1)) * 10 for _ in range(text.count(PAUSE)))
        wanted.append((kind, voice, text, pauses))
        return len(wanted) - 1

    layout: list[tuple[str, str, list[tuple[int, int | Clip | None]]]] = []
    for k, category in enumerate(categories):
        texts = _texts(category)
        for c in range(per_category):
            voice = usable[(c + k) % len(usable)]
            steps: list[tuple[int, int | Clip | None]] = []
            for t in range(turns):
                kind = {"pauses": "pause", "questions": "question"}.get(category, "prompt")
                said = want(kind, voice, texts[(3 * k + c * turns + t) % len(texts)])
                over: int | Clip | None = None
                if category == "backchannels":
                    over = want("backchannel", voice, BACKCHANNELS[(c + t) % len(BACKCHANNELS)])
                elif category == "interruptions":
                    text = INTERRUPTIONS[(c + t) % len(INTERRUPTIONS)]
                    over = want("interruption", voice, text)
                elif category == "noises":
                    over = cough(rng) if (c + t) % 2 == 0 else click(rng)
                steps.append((said, over))
            layout.append((category, voice, steps))
    clips, more = await render_clips(host, usable, wanted)
    conversations: list[Conversation] = []
    for number, (category, voice, steps) in enumerate(layout):
        made = [
            Step(clips[said], clips[over] if isinstance(over, int) else over)
            for said, over in steps
            if said in clips and (not isinstance(over, int) or over in clips)
        ]
        if len(made) == len(steps):  # a voice that failed on some text is left out
            conversations.append(Conversation(number, category, voice, tuple(made)))
    return conversations, skipped + more
