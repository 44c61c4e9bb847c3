"""Speaker identification: enrolled voices recognised, unknown voices rejected, and the cost.

Speakers are generated voices (:mod:`.voices`: hibari, piper and espeak-ng variants, plus more
espeak-ng variants here), each saying the same twelve sentences. Two parts:

1. **Calibration** of the built-in feature's threshold, on the speaker embedder it runs
   (``scaivoice.plugins.speakers``): each voice is enrolled from three sentences (the mean of
   their embeddings, as the feature does) and tested on the nine others, four times over (each
   group of three sentences enrols once). Same-speaker trials compare a voice's test sentences
   with its own enrolment; impostor trials with every other voice's. Reported: both
   distributions, and the false-accept rate (impostor trials at or above a threshold) and
   false-reject rate (same-speaker trials below it) over a range of thresholds, for whole
   sentences and for turns cut to 1, 1.5 and 2 s of speech.
2. **Open-set identification** through the installed feature on ``speaker_recognition``, as the
   server runs it (``SpeakerDirectory.enroll``, then ``FeatureSession.identify`` per turn): half
   of the voices are enrolled in one tenant, and every voice's nine test sentences are
   identified; then the other half. A turn of an enrolled voice is right when it gets that
   voice's id; a turn of a voice not enrolled is a false accept when it gets any id. The feature
   runs with ``threshold = 0`` (every turn gets its closest enrolled speaker and the score), so
   the decisions at the feature's own threshold, and at others, follow from the answers.
   Reported too: the CPU time of one identification (the process's CPU time around the call:
   trimming, embedding, store read, comparison) and of one enrolment.

Synthetic voices are more alike within a voice than people are (the same text-to-speech model
says every sentence the same way), so same-speaker scores of real voices are lower: read the
false-reject figures as a lower bound.

:func:`identification_section` is the section of ``scaivoice bench speakers``;
``python -m scaivoice.conformance.bench.speakers.identification`` prints it alone.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import trio

from scaivoice.engine import (
    PluginHost,
    ScaiVoiceError,
    SessionContext,
    SessionFeature,
    SpeakerDirectory,
)

from .voices import SENTENCES, VOICES, GeneratedVoice, render_voices

__all__ = [
    "IDENTIFICATION_VOICES",
    "LOOKALIKE_VOICES",
    "IdentificationReport",
    "Rates",
    "calibrate",
    "identification_lines",
    "identification_section",
    "measure_identification",
    "print_identification",
    "run_identification_benchmark",
]

RATE = 16000

#: The speakers: the voices of :data:`.voices.VOICES` and six more espeak-ng variants that
#: change the voice source and timbre (``Lee``, ``travis``, ``ian``, ``steph``, ``zac``, and
#: ``david``, a Klatt voice), not only the pitch or the formants' scale.
IDENTIFICATION_VOICES: tuple[GeneratedVoice, ...] = (
    *VOICES,
    GeneratedVoice("espeak-en-us-lee", "espeak", "en-us+Lee"),
    GeneratedVoice("espeak-en-us-travis", "espeak", "en-us+travis"),
    GeneratedVoice("espeak-en-us-ian", "espeak", "en-us+ian"),
    GeneratedVoice("espeak-en-us-steph", "espeak", "en-us+steph"),
    GeneratedVoice("espeak-en-us-zac", "espeak", "en-us+zac"),
    GeneratedVoice("espeak-en-us-david", "espeak", "en-us+david"),
)

#: espeak-ng variants of the default voice (``espeak-en-us``) that change its pitch, the scale of
#: its formants (by up to 25 %) or its accent, and keep its voice source. The embedding model
#: hears them as the default voice: they are reported apart, as the speakers this feature
#: cannot tell apart, and are not in the figures above.
LOOKALIKE_VOICES: tuple[GeneratedVoice, ...] = tuple(
    GeneratedVoice(f"espeak-en-us-{variant.lower()}", "espeak", f"en-us+{variant}")
    for variant in ("m1", "m2", "m3", "m5", "norbert", "Alex", "Andy")
)
_LOOKALIKE_OF = "espeak-en-us"
_NAMES = frozenset(v.name for v in IDENTIFICATION_VOICES)

_ENROL_GROUPS = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11))
_CUTS_S = (1.0, 1.5, 2.0)
_THRESHOLDS = tuple(round(0.6 + 0.025 * i, 3) for i in range(11))  # 0.600 .. 0.850
_TENANT = "bench-speakers"
_F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Rates:
    """Error rates at one threshold."""

    threshold: float
    false_accept: float
    false_reject: float


@dataclass(frozen=True, slots=True)
class Distribution:
    """Trials of one kind (same speaker, or impostor) for one turn length."""

    turns: str
    same: int
    same_min: float
    same_p1: float
    same_mean: float
    impostor: int
    impostor_max: float
    impostor_p99: float
    impostor_mean: float
    rates: tuple[Rates, ...]


@dataclass(frozen=True, slots=True)
class OpenSet:
    """Open-set identification at one threshold."""

    threshold: float
    known_turns: int
    right: float
    """Share of enrolled voices' turns that got their own id."""
    wrong: float
    """Share of enrolled voices' turns that got another speaker's id."""
    rejected: float
    """Share of enrolled voices' turns that got no id."""
    unknown_turns: int
    false_accept: float
    """Share of the turns of voices not enrolled that got an id."""


@dataclass(frozen=True, slots=True)
class Lookalike:
    """Turns of a look-alike voice against the enrolled default voice."""

    voice: str
    turns: int
    score_mean: float
    score_max: float
    accepted: float
    """Share of its turns identified as the default voice at the feature's threshold."""


@dataclass(slots=True)
class IdentificationReport:
    """The section's figures (``--json`` prints them)."""

    voices: list[str] = field(default_factory=list)
    sentences: int = 0
    feature: str = ""
    threshold: float | None = None
    calibration: list[Distribution] = field(default_factory=list)
    open_set: list[OpenSet] = field(default_factory=list)
    cpu_ms_per_identification: float = 0.0
    cpu_ms_per_turn_s: float = 0.0
    turn_s_mean: float = 0.0
    cpu_ms_per_enrolment: float = 0.0
    lookalikes: list[Lookalike] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- calibration


def _unit(vectors: _F32) -> _F32:
    out: _F32 = (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)
    return out


def _rates(same: _F32, impostor: _F32, thresholds: Iterable[float]) -> tuple[Rates, ...]:
    return tuple(
        Rates(t, float(np.mean(impostor >= t)), float(np.mean(same < t))) for t in thresholds
    )


def _distribution(turns: str, same: _F32, impostor: _F32) -> Distribution:
    return Distribution(
        turns=turns,
        same=len(same),
        same_min=float(same.min()),
        same_p1=float(np.percentile(same, 1)),
        same_mean=float(same.mean()),
        impostor=len(impostor),
        impostor_max=float(impostor.max()),
        impostor_p99=float(np.percentile(impostor, 99)),
        impostor_mean=float(impostor.mean()),
        rates=_rates(same, impostor, _THRESHOLDS),
    )


def _speech_cut(pcm: bytes, seconds: float) -> bytes:
    """The first ``seconds`` of speech of ``pcm`` (its silences taken out by level)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float32)
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-3)
    speech = frames[level > max(level.max() - 35.0, 10 * np.log10(32768.0**2) - 50.0)]
    kept: bytes = speech.reshape(-1)[: int(seconds * RATE)].astype("<i2").tobytes()
    return kept


async def calibrate(rendered: Mapping[str, Sequence[bytes]]) -> list[Distribution]:
    """Same-speaker and impostor trials of the built-in embedder (see the module docstring)."""
    from scaivoice.plugins.speakers.embedder import SpeakerEmbedder

    names = sorted(rendered)
    async with SpeakerEmbedder() as embedder:
        whole = np.stack([np.stack(await embedder.embed_many(list(rendered[n]))) for n in names])
        cut: dict[float, _F32] = {}
        for seconds in _CUTS_S:
            cut[seconds] = np.stack(
                [
                    np.stack(
                        await embedder.embed_many(
                            [_speech_cut(pcm, seconds) for pcm in rendered[n]], trim=False
                        )
                    )
                    for n in names
                ]
            )
    out = [_trials("whole sentences", whole, whole)]
    out += [_trials(f"{seconds:g} s of speech", whole, cut[seconds]) for seconds in _CUTS_S]
    return out


def _trials(label: str, enrol: _F32, test: _F32) -> Distribution:
    """``enrol`` and ``test``: (voices, sentences, 256) embeddings."""
    same: list[float] = []
    impostor: list[float] = []
    sentences = enrol.shape[1]
    for group in _ENROL_GROUPS:
        if max(group) >= sentences:
            continue
        centres = _unit(enrol[:, list(group)].mean(axis=1))
        others = [i for i in range(sentences) if i not in group]
        scores = np.einsum("vd,usd->usv", centres, test[:, others])  # (test voice, sentence, v)
        for voice in range(len(centres)):
            same += scores[voice, :, voice].tolist()
            impostor += np.delete(scores[voice], voice, axis=1).ravel().tolist()
    return _distribution(label, np.array(same, np.float32), np.array(impostor, np.float32))


# --------------------------------------------------------------------------- open set


def _open_feature(host: PluginHost, options: Mapping[str, Any]) -> SessionFeature:
    specs = host.feature_specs()
    if "speaker_recognition" not in specs:
        raise ScaiVoiceError("no speaker recognition feature is installed")
    return specs["speaker_recognition"].factory(options)


def _threshold_of(feature: SessionFeature) -> float | None:
    options = getattr(feature, "options", None)
    value = getattr(options, "threshold", None)
    return float(value) if isinstance(value, int | float) else None


async def measure_identification(
    rendered: Mapping[str, Sequence[bytes]] | None = None,
    *,
    host: PluginHost | None = None,
    options: Mapping[str, Any] | None = None,
    calibration: bool = True,
    lookalikes: Mapping[str, Sequence[bytes]] | None = None,
) -> IdentificationReport:
    """Run both parts on ``rendered`` (voice -> 12 sentences; default: render
    :data:`IDENTIFICATION_VOICES`) and try ``lookalikes`` (default: render
    :data:`LOOKALIKE_VOICES`) against the default voice. ``options``: the feature's (default:
    an in-memory store)."""
    if host is None:
        host = PluginHost()
        host.load_entry_points(include_third_party=False)
    if rendered is None:
        rendered = await render_voices(SENTENCES, IDENTIFICATION_VOICES, host=host)
    if lookalikes is None:
        lookalikes = await render_voices(SENTENCES, LOOKALIKE_VOICES, host=host)
    report = IdentificationReport(
        voices=sorted(rendered),
        sentences=min(len(v) for v in rendered.values()),
        skipped=[v.name for v in IDENTIFICATION_VOICES if v.name not in rendered],
    )
    if calibration:
        report.calibration = await calibrate(rendered)
    base = {"store_path": ":memory:", **(options or {})}
    report.threshold = _threshold_of(_open_feature(host, base))
    # Run it accepting every best match (threshold 0): each answer then names the closest
    # enrolled speaker and its score, and the decisions at any threshold follow from them.
    feature = _open_feature(host, {**base, "threshold": 0.0})
    report.feature = type(feature).__name__
    async with feature:
        if not isinstance(feature, SpeakerDirectory):
            raise ScaiVoiceError(f"{report.feature} offers no enrolment (SpeakerDirectory)")
        await _open_set(feature, feature, rendered, report)
        if _LOOKALIKE_OF in rendered and lookalikes:
            await _lookalikes(feature, feature, rendered[_LOOKALIKE_OF], lookalikes, report)
    return report


async def _lookalikes(
    feature: SessionFeature,
    directory: SpeakerDirectory,
    original: Sequence[bytes],
    lookalikes: Mapping[str, Sequence[bytes]],
    report: IdentificationReport,
) -> None:
    tenant = f"{_TENANT}-lookalikes"
    await directory.enroll(tenant, _LOOKALIKE_OF, list(original[:3]))
    session = feature.open_session(
        sample_rate=RATE,
        options={},
        context=SessionContext(tenant),  # type: ignore[call-arg]
    )
    threshold = report.threshold if report.threshold is not None else 1.0
    for name, clips in {_LOOKALIKE_OF: original, **lookalikes}.items():
        scores = []
        for pcm in clips[3:]:
            answer = await session.identify(pcm, final=True)
            scores.append(answer.score if answer is not None and answer.score is not None else 0.0)
        report.lookalikes.append(
            Lookalike(
                voice=name,
                turns=len(scores),
                score_mean=float(np.mean(scores)),
                score_max=float(np.max(scores)),
                accepted=float(np.mean(np.array(scores) >= threshold)),
            )
        )
    await directory.forget(tenant, _LOOKALIKE_OF)


async def _open_set(
    feature: SessionFeature,
    directory: SpeakerDirectory,
    rendered: Mapping[str, Sequence[bytes]],
    report: IdentificationReport,
) -> None:
    names = sorted(rendered)
    halves = (names[0::2], names[1::2])
    answers: list[tuple[str, bool, str | None, float | None]] = []  # voice, known, id, score
    cpu: list[float] = []
    audio_s: list[float] = []
    enrol_cpu: list[float] = []
    for index, enrolled in enumerate(halves):
        tenant = f"{_TENANT}-{index}"
        for name in enrolled:
            started = time.process_time()
            await directory.enroll(tenant, name, list(rendered[name][:3]))
            enrol_cpu.append(time.process_time() - started)
        session = feature.open_session(
            sample_rate=RATE,
            options={},
            context=SessionContext(tenant),  # type: ignore[call-arg]
        )
        for name in names:
            for pcm in rendered[name][3:]:
                started = time.process_time()
                answer = await session.identify(pcm, final=True)
                cpu.append(time.process_time() - started)
                audio_s.append(len(pcm) / 2 / RATE)
                found = None if answer is None else answer.speaker_id
                score = None if answer is None else answer.score
                answers.append((name, name in enrolled, found, score))
        for name in enrolled:
            await directory.forget(tenant, name)
    thresholds = sorted({*_THRESHOLDS, *([report.threshold] if report.threshold else [])})
    report.open_set = [_open_set_at(t, answers) for t in thresholds]
    report.cpu_ms_per_identification = 1000 * float(np.mean(cpu))
    report.turn_s_mean = float(np.mean(audio_s))
    report.cpu_ms_per_turn_s = 1000 * float(np.sum(cpu) / np.sum(audio_s))
    report.cpu_ms_per_enrolment = 1000 * float(np.mean(enrol_cpu))


def _open_set_at(
    threshold: float, answers: Sequence[tuple[str, bool, str | None, float | None]]
) -> OpenSet:
    """The decisions at ``threshold`` from each turn's best match and its score."""
    known = [(v, i, s) for v, k, i, s in answers if k]
    unknown = [(v, i, s) for v, k, i, s in answers if not k]

    def accepted(found: str | None, score: float | None) -> bool:
        return found is not None and score is not None and score >= threshold

    right = sum(1 for v, i, s in known if accepted(i, s) and i == v)
    wrong = sum(1 for v, i, s in known if accepted(i, s) and i != v)
    false = sum(1 for _, i, s in unknown if accepted(i, s))
    return OpenSet(
        threshold=threshold,
        known_turns=len(known),
        right=right / max(len(known), 1),
        wrong=wrong / max(len(known), 1),
        rejected=(len(known) - right - wrong) / max(len(known), 1),
        unknown_turns=len(unknown),
        false_accept=false / max(len(unknown), 1),
    )


# --------------------------------------------------------------------------- output


def identification_lines(report: IdentificationReport) -> list[str]:
    """The section's report, line by line."""
    out = [
        f"{len(report.voices)} voices x {report.sentences} sentences "
        f"({report.feature}, threshold {report.threshold})"
    ]
    out += [f"skipped voice {name} (its TTS backend is not installed)" for name in report.skipped]
    if report.calibration:
        out += ["", "calibration (enrolled from 3 sentences, tested on the 9 others, 4 rotations):"]
        for d in report.calibration:
            out.append(
                f"  {d.turns:<16} same speaker n={d.same} min {d.same_min:.3f} "
                f"p1 {d.same_p1:.3f} mean {d.same_mean:.3f} | impostor n={d.impostor} "
                f"max {d.impostor_max:.3f} p99 {d.impostor_p99:.3f} mean {d.impostor_mean:.3f}"
            )
        out.append("  false accepts / false rejects by threshold:")
        header = "".join(f"{d.turns[:15]:>17}" for d in report.calibration)
        out.append(f"  {'threshold':<10}{header}")
        for row, t in enumerate(_THRESHOLDS):
            cells = "".join(
                f"{d.rates[row].false_accept:>8.2%} /{d.rates[row].false_reject:>6.1%}"
                for d in report.calibration
            )
            mark = " <" if report.threshold is not None and abs(t - report.threshold) < 1e-9 else ""
            out.append(f"  {t:<10.3f}{cells}{mark}")
    out += [
        "",
        "open-set identification through the feature (half the voices enrolled, then the other):",
        f"  {'threshold':<10} {'right':>7} {'wrong id':>9} {'rejected':>9} {'false accept':>13}",
    ]
    for o in report.open_set:
        mark = " <- the feature's" if o.threshold == report.threshold else ""
        out.append(
            f"  {o.threshold:<10.3f} {o.right:>7.1%} {o.wrong:>9.1%} {o.rejected:>9.1%} "
            f"{o.false_accept:>13.1%}{mark}"
        )
    if report.open_set:
        o = report.open_set[0]
        out.append(f"  ({o.known_turns} turns of enrolled voices, {o.unknown_turns} of others)")
    if report.lookalikes:
        out += ["", f"look-alike voices against the enrolled {_LOOKALIKE_OF} (the first: itself):"]
        for item in report.lookalikes:
            out.append(
                f"  {item.voice:<24} score mean {item.score_mean:.3f} max {item.score_max:.3f}"
                f"  identified as {_LOOKALIKE_OF}: {item.accepted:>6.1%} of {item.turns}"
            )
    out += [
        "",
        f"CPU: {report.cpu_ms_per_identification:.1f} ms per identification "
        f"(turns of {report.turn_s_mean:.1f} s on average: {report.cpu_ms_per_turn_s:.1f} ms "
        f"per second of turn); {report.cpu_ms_per_enrolment:.0f} ms per enrolment of 3 clips",
    ]
    return out


def print_identification(report: IdentificationReport) -> None:
    """Print the section."""
    print(
        "speaker identification (speaker_recognition): " + "\n".join(identification_lines(report))
    )


class _Context(Protocol):
    """What the section needs of ``bench speakers``' context: the voices it rendered."""

    @property
    def rendered(self) -> Mapping[str, Sequence[bytes]]: ...


async def identification_section(ctx: _Context) -> list[str]:
    """The section of ``scaivoice bench speakers``: the context's voices (those of
    :data:`.voices.VOICES`) plus the others of :data:`IDENTIFICATION_VOICES`, rendered here."""
    extra = [v for v in IDENTIFICATION_VOICES if v.name not in ctx.rendered]
    rendered = {**ctx.rendered, **await render_voices(SENTENCES, extra)}
    report = await measure_identification({k: v for k, v in rendered.items() if k in _NAMES})
    return identification_lines(report)


def run_identification_benchmark(*, as_json: bool = False, calibration: bool = True) -> int:
    """Render the voices, run the section and print it. Returns a process exit code."""
    try:
        report = trio.run(lambda: measure_identification(calibration=calibration))
    except ScaiVoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print_identification(report)
    return 0


if __name__ == "__main__":  # pragma: no cover - a manual entry point
    sys.exit(run_identification_benchmark(as_json="--json" in sys.argv[1:]))
