"""Contract checks for text normalisers (``NormaliserBackend.normalise``)."""

from __future__ import annotations

from collections.abc import Hashable

import trio

from scaivoice.engine import NormaliserBackend, NormaliseRequest

from ._checks_common import concurrency_check, lifecycle_checks
from ._drive import describe_error
from ._kit import Failed, Subject, contract_check, require

__all__ = [
    "NORMALISER_CHECKS",
    "check_normaliser_aclose_idempotent",
    "check_normaliser_cancellation",
    "check_normaliser_concurrency",
    "check_normaliser_declaration",
    "check_normaliser_empty_text",
    "check_normaliser_health",
    "check_normaliser_languages",
    "check_normaliser_lexicon",
    "check_normaliser_no_leaks",
    "check_normaliser_returns_text",
]

TEXT = "Dr. Smith moved to 221B Baker St. in 1999, e.g. for 3 years, at 5 p.m. sharp."
_LEXICON_WORD = "Zorblax"
_LEXICON_SPOKEN = "zor blacks"


async def _normalise(
    backend: NormaliserBackend, text: str, request: NormaliseRequest, what: str
) -> str:
    try:
        result = await backend.normalise(text, request)
    except Exception as exc:
        raise Failed(f"{what} raised {describe_error(exc)}") from exc
    require(isinstance(result, str), f"{what} returned {type(result).__name__}, not str")
    return result


@contract_check("normaliser.returns_text")
async def check_normaliser_returns_text(subject: Subject[NormaliserBackend]) -> str:
    """Text full of abbreviations and numbers comes back as non-empty text."""
    result = await _normalise(subject.backend, TEXT, NormaliseRequest(), "normalising a sentence")
    require(bool(result.strip()), f"normalising {TEXT!r} gave empty text")
    return repr(result)


@contract_check("normaliser.empty_text")
async def check_normaliser_empty_text(subject: Subject[NormaliserBackend]) -> str:
    """Empty text stays empty (a normaliser does not invent speech)."""
    result = await _normalise(subject.backend, "", NormaliseRequest(), "normalising ''")
    require(not result.strip(), f"normalising '' gave {result!r}")
    return "'' stays empty"


@contract_check("normaliser.lexicon", requires="lexicon")
async def check_normaliser_lexicon(subject: Subject[NormaliserBackend]) -> str:
    """A lexicon entry of the request replaces the word it names."""
    request = NormaliseRequest(lexicon={_LEXICON_WORD: _LEXICON_SPOKEN})
    text = f"Please say {_LEXICON_WORD} twice."
    result = await _normalise(subject.backend, text, request, "normalising with a lexicon")
    require(
        _LEXICON_SPOKEN in result.lower() and _LEXICON_WORD.lower() not in result.lower(),
        f"the lexicon {{{_LEXICON_WORD!r}: {_LEXICON_SPOKEN!r}}} turned {text!r} into {result!r}",
    )
    return repr(result)


@contract_check("normaliser.languages", requires="languages")
async def check_normaliser_languages(subject: Subject[NormaliserBackend]) -> str:
    """A request naming each declared language (up to three) gives text."""
    languages = subject.backend.capabilities.languages[:3]
    for language in languages:
        request = NormaliseRequest(language=language)
        result = await _normalise(subject.backend, TEXT, request, f"language {language!r}")
        require(bool(result.strip()), f"language {language!r} gave empty text")
    return f"text for {', '.join(map(repr, languages))}"


@contract_check("normaliser.cancellation")
async def check_normaliser_cancellation(subject: Subject[NormaliserBackend]) -> str:
    """A cancelled call returns promptly without an error and leaves the backend usable."""
    backend = subject.backend
    deadline = subject.config.cancel_deadline_s
    start = trio.current_time()
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await backend.normalise(TEXT, NormaliseRequest())
        except Exception as exc:
            raise Failed(f"a cancelled call raised {describe_error(exc)}") from exc
    took = trio.current_time() - start
    require(took <= deadline, f"a cancelled call took {took:.2f} s to return (> {deadline:g} s)")
    await _normalise(backend, TEXT, NormaliseRequest(), "a call after the cancelled one")
    how = "abandoned" if scope.cancelled_caught else "completed without a checkpoint"
    return f"cancelled call {how} in {took * 1000:.0f} ms; the next call worked"


async def _exercise(subject: Subject[NormaliserBackend], backend: NormaliserBackend) -> None:
    await backend.normalise(TEXT, NormaliseRequest())
    with trio.CancelScope() as scope:
        scope.cancel()
        await backend.normalise(TEXT, NormaliseRequest())


async def _once(subject: Subject[NormaliserBackend], backend: NormaliserBackend) -> Hashable:
    return await _normalise(backend, TEXT, NormaliseRequest(), "normalising")


(
    check_normaliser_declaration,
    check_normaliser_health,
    check_normaliser_aclose_idempotent,
    check_normaliser_no_leaks,
) = lifecycle_checks("normaliser", exercise=_exercise)
check_normaliser_concurrency = concurrency_check("normaliser", once=_once)

#: Every normaliser check, in the order the runner runs them.
NORMALISER_CHECKS = (
    check_normaliser_declaration,
    check_normaliser_health,
    check_normaliser_returns_text,
    check_normaliser_empty_text,
    check_normaliser_lexicon,
    check_normaliser_languages,
    check_normaliser_cancellation,
    check_normaliser_concurrency,
    check_normaliser_aclose_idempotent,
    check_normaliser_no_leaks,
)
