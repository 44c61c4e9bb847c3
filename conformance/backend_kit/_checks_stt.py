"""Contract checks for STT backends (``SttBackend.transcribe``).

Structure is always checked (results are transcripts, interims first, exactly one final and
it is last, the channel closed); what the backend heard only when ``KitConfig.check_content``
is on and the speech is real (rendered with hibari).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

from scaivoice.engine import SttBackend, SttRequest, Transcript

from ._checks_common import concurrency_check, lifecycle_checks
from ._drive import (
    Run,
    describe_error,
    expect_cancelled,
    expect_completed,
    is_backend_error,
    transcribe,
)
from ._kit import Failed, Skipped, Subject, contract_check, require
from ._speech import SpeechSample

__all__ = [
    "STT_CHECKS",
    "check_stt_aclose_idempotent",
    "check_stt_cancellation",
    "check_stt_concurrency",
    "check_stt_content",
    "check_stt_declaration",
    "check_stt_health",
    "check_stt_interim_results",
    "check_stt_languages",
    "check_stt_malformed_audio",
    "check_stt_no_audio",
    "check_stt_no_leaks",
    "check_stt_one_final_last",
    "check_stt_sample_rates",
    "check_stt_stable_interims",
    "check_stt_streaming",
    "check_stt_word_timings",
]

_PACED = "stt.paced-long-utterance"
_MAX_LANGUAGES = 3


def _rate(subject: Subject[SttBackend]) -> int:
    """The rate the kit speaks at: 16 kHz (what the engine sends) if declared."""
    rates = subject.backend.capabilities.sample_rates
    return 16000 if 16000 in rates or not rates else rates[0]


def _final(run: Run[Transcript], what: str) -> Transcript:
    """Validate a transcription: returned, closed, transcripts only, interims then one final."""
    expect_completed(run, what)
    wrong = [type(r).__name__ for r in run.items if not isinstance(r, Transcript)]
    require(not wrong, f"{what} sent {wrong[0] if wrong else ''} instead of Transcript")
    finals = [i for i, r in enumerate(run.items) if r.final]
    require(bool(finals), f"{what} ended without a final transcript")
    require(
        len(finals) == 1,
        f"{what} sent {len(finals)} final transcripts (exactly one ends a stream)",
    )
    require(
        finals[0] == len(run.items) - 1,
        f"{what} sent {len(run.items) - 1 - finals[0]} result(s) after the final one",
    )
    bad = [r for r in run.items if r.start_ms < 0 or r.end_ms < r.start_ms]
    require(
        not bad, f"{what}: a transcript spans {bad[0].start_ms}-{bad[0].end_ms} ms" if bad else ""
    )
    return run.items[-1]


async def _transcribe(
    subject: Subject[SttBackend],
    backend: SttBackend,
    sample: SpeechSample,
    *,
    rate: int | None = None,
    language: str | None = None,
    pace: float = 0.0,
    cancel_at_first: bool = False,
    cancel_after_s: float | None = None,
) -> Run[Transcript]:
    rate = rate or _rate(subject)
    chunk_ms = subject.config.stt_chunk_ms
    return await transcribe(
        backend,
        SttRequest(sample_rate=rate, language=language),
        sample.chunks(rate, chunk_ms),
        pace=pace,
        chunk_ms=chunk_ms,
        cancel_at_first=cancel_at_first,
        cancel_after_s=cancel_after_s,
    )


async def _paced_long(subject: Subject[SttBackend]) -> Run[Transcript]:
    """The long utterance fed in real time (once per run: two checks share it)."""
    run = subject.memo.get(_PACED)
    if not isinstance(run, Run):
        speech = subject.require_speech()
        run = await _transcribe(subject, subject.backend, speech.long, pace=subject.config.stt_pace)
        subject.memo[_PACED] = run
    return run


@contract_check("stt.one_final_last")
async def check_stt_one_final_last(subject: Subject[SttBackend]) -> str:
    """An utterance gives transcripts, interims first, then exactly one final, last."""
    speech = subject.require_speech()
    run = await _transcribe(subject, subject.backend, speech.long)
    final = _final(run, "transcribing an utterance")
    return f"{len(run.items) - 1} interim(s), then one final: {final.text!r}"


@contract_check("stt.no_audio")
async def check_stt_no_audio(subject: Subject[SttBackend]) -> str:
    """An utterance without audio (the channel closed at once) still ends with one final."""
    run = await transcribe(subject.backend, SttRequest(sample_rate=_rate(subject)), [])
    final = _final(run, "transcribing no audio")
    return f"one final: {final.text!r}"


@contract_check("stt.sample_rates")
async def check_stt_sample_rates(subject: Subject[SttBackend]) -> str:
    """Audio at every declared sample rate is transcribed (one final each)."""
    speech = subject.require_speech()
    rates = subject.backend.capabilities.sample_rates
    for rate in rates:
        run = await _transcribe(subject, subject.backend, speech.short, rate=rate)
        _final(run, f"transcribing {rate} Hz audio")
    return f"one final at each of {', '.join(str(r) for r in rates)} Hz"


@contract_check("stt.interim_results", requires="interim_results")
async def check_stt_interim_results(subject: Subject[SttBackend]) -> str:
    """A long utterance, fed in real time, gives at least one interim before the final."""
    run = await _paced_long(subject)
    final = _final(run, "transcribing a long utterance in real time")
    interims = len(run.items) - 1
    duration = subject.require_speech().long.duration_s
    require(
        interims >= 1,
        f"no interim result for a {duration:.1f} s utterance (final: {final.text!r})",
    )
    first = run.arrivals[0]
    return f"{interims} interim(s) for {duration:.1f} s of audio, the first after {first:.2f} s"


@contract_check("stt.streaming", requires="streaming")
async def check_stt_streaming(subject: Subject[SttBackend]) -> str:
    """Results arrive while the audio is still coming (needs interim results to observe)."""
    if not subject.backend.capabilities.interim_results:
        raise Skipped("streaming is declared without interim_results: nothing observable to check")
    run = await _paced_long(subject)
    _final(run, "transcribing a long utterance in real time")
    ended = run.input_closed_s
    early = [t for t in run.arrivals if ended is None or t < ended]
    require(
        bool(early),
        f"no result before the audio ended (after {ended or 0.0:.2f} s): nothing was streamed",
    )
    return f"first result after {early[0]:.2f} s, while the audio ran until {ended or 0.0:.2f} s"


@contract_check("stt.stable_interims")
async def check_stt_stable_interims(subject: Subject[SttBackend]) -> str:
    """A stable interim that is not withdrawn has the final's text.

    The utterance is fed in real time, then 1.5 s of silence, as a live session would (without
    word timings). Skipped when the backend sends no stable interim (it never guesses early).
    """
    speech = subject.require_speech()
    rate = _rate(subject)
    chunk_ms = subject.config.stt_chunk_ms
    silence = b"\0\0" * (rate * chunk_ms // 1000)
    chunks = [*speech.short.chunks(rate, chunk_ms), *[silence] * (1500 // chunk_ms)]
    run = await transcribe(
        subject.backend,
        SttRequest(sample_rate=rate, word_timings=False),
        chunks,
        pace=subject.config.stt_pace,
        chunk_ms=chunk_ms,
    )
    final = _final(run, "transcribing an utterance and a silence in real time")
    interims = run.items[:-1]
    stable = [i for i, r in enumerate(interims) if r.stable]
    if not stable:
        raise Skipped("no stable interim: the backend does not announce its final early")
    standing = [i for i in stable if all(r.stable for r in interims[i + 1 :])]
    for index in standing:
        guess = interims[index].text
        require(
            guess.strip() == final.text.strip(),
            f"the stable interim {guess!r} was never withdrawn, but the final is "
            f"{final.text!r}: an engine that started its reply early answered the wrong text",
        )
    return (
        f"{len(stable)} stable interim(s), {len(stable) - len(standing)} withdrawn; "
        f"the standing one matches the final {final.text!r}"
        if standing
        else f"{len(stable)} stable interim(s), all withdrawn by later interims"
    )


@contract_check("stt.word_timings", requires="word_timings")
async def check_stt_word_timings(subject: Subject[SttBackend]) -> str:
    """The final transcript carries words, in order, inside the utterance."""
    speech = subject.require_speech()
    run = await _transcribe(subject, subject.backend, speech.long)
    final = _final(run, "transcribing an utterance")
    if not final.text.strip():
        raise Skipped(f"nothing was recognised in the {speech.source} speech: no words to check")
    words = final.words
    require(bool(words), f"word timings are declared but the final {final.text!r} has none")
    limit = speech.long.duration_s * 1000 + 500
    problems = [
        f"{w.text!r} {w.start_ms}-{w.end_ms} ms"
        for w in words
        if w.start_ms < 0 or w.end_ms < w.start_ms or w.end_ms > limit
    ]
    require(not problems, f"words outside the utterance or reversed: {problems[:3]}")
    starts = [w.start_ms for w in words]
    require(starts == sorted(starts), f"words out of order: {starts}")
    return f"{len(words)} words from {starts[0]} to {words[-1].end_ms} ms"


@contract_check("stt.languages", requires="languages")
async def check_stt_languages(subject: Subject[SttBackend]) -> str:
    """A request naming a declared language is transcribed."""
    speech = subject.require_speech()
    languages = subject.backend.capabilities.languages[:_MAX_LANGUAGES]
    for language in languages:
        run = await _transcribe(subject, subject.backend, speech.short, language=language)
        _final(run, f"transcribing with language {language!r}")
    return f"one final with language {', '.join(map(repr, languages))}"


@contract_check("stt.content")
async def check_stt_content(subject: Subject[SttBackend]) -> str:
    """(Optional) the final transcript of real speech has at least half of its words."""
    speech = subject.require_speech()
    if not subject.config.check_content:
        raise Skipped("content checks are off (KitConfig.check_content / --content)")
    if not speech.has_words or speech.long.text is None:
        raise Skipped("no real speech to check against (install hibari-tts)")
    run = await _transcribe(subject, subject.backend, speech.long)
    final = _final(run, "transcribing an utterance")
    said = _words(speech.long.text)
    heard = _words(final.text)
    score = sum(1 for w in said if w in heard) / len(said)
    require(
        score >= 0.5, f"heard {final.text!r} for {speech.long.text!r} ({score:.0%} of the words)"
    )
    return f"heard {final.text!r} ({score:.0%} of the words)"


@contract_check("stt.malformed_audio")
async def check_stt_malformed_audio(subject: Subject[SttBackend]) -> str:
    """Chunks that split samples (and a stray last byte) are transcribed or rejected with a
    BackendError, never another exception; the channel is closed either way."""
    speech = subject.require_speech()
    rate = _rate(subject)
    pcm = speech.short.at(rate) + b"\x01"
    chunks = _odd_chunks(pcm, 333)
    run = await transcribe(subject.backend, SttRequest(sample_rate=rate), chunks)
    if run.error is not None:
        if not is_backend_error(run.error):
            raise Failed(
                f"chunks of odd length raised {describe_error(run.error)}; carry the odd "
                "byte over or raise a BackendError"
            )
        require(run.closed, "the results channel was left open after the error")
        return f"rejected with {type(run.error).__name__}: {run.error}"
    final = _final(run, "transcribing chunks of odd length")
    return f"transcribed ({final.text!r})"


@contract_check("stt.cancellation")
async def check_stt_cancellation(subject: Subject[SttBackend]) -> str:
    """Cancelling mid-utterance returns promptly, closes the channel, leaves it usable."""
    speech = subject.require_speech()
    backend = subject.backend
    config = subject.config
    run = await _transcribe(
        subject,
        backend,
        speech.long,
        pace=config.stt_pace,
        cancel_at_first=True,
        cancel_after_s=min(1.0, speech.long.duration_s / 2),
    )
    detail = expect_cancelled(run, "transcription", deadline_s=config.cancel_deadline_s)
    again = await _transcribe(subject, backend, speech.short)
    _final(again, "a transcription after the cancelled one")
    return detail + "; the next transcription worked"


def _odd_chunks(pcm: bytes, size: int) -> Sequence[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def _exercise(subject: Subject[SttBackend], backend: SttBackend) -> None:
    speech = subject.require_speech()
    await _transcribe(subject, backend, speech.short)
    await _transcribe(
        subject,
        backend,
        speech.long,
        pace=subject.config.stt_pace,
        cancel_at_first=True,
        cancel_after_s=0.5,
    )


async def _once(subject: Subject[SttBackend], backend: SttBackend) -> Hashable:
    speech = subject.require_speech()
    final = _final(await _transcribe(subject, backend, speech.short), "transcription")
    return final.text


check_stt_declaration, check_stt_health, check_stt_aclose_idempotent, check_stt_no_leaks = (
    lifecycle_checks("stt", exercise=_exercise)
)
check_stt_concurrency = concurrency_check("stt", once=_once)

#: Every STT check, in the order the runner runs them.
STT_CHECKS = (
    check_stt_declaration,
    check_stt_health,
    check_stt_one_final_last,
    check_stt_no_audio,
    check_stt_sample_rates,
    check_stt_interim_results,
    check_stt_streaming,
    check_stt_stable_interims,
    check_stt_word_timings,
    check_stt_languages,
    check_stt_content,
    check_stt_malformed_audio,
    check_stt_cancellation,
    check_stt_concurrency,
    check_stt_aclose_idempotent,
    check_stt_no_leaks,
)
