"""``scaivoice bench wake``: the server-side wake word's detections, false wakes and CPU cost.

Speech is generated with the installed TTS backends (hibari, Piper, espeak-ng voices, at more
than one speed), resampled to 16 kHz, and fed in 20 ms chunks to the installed wake-word
feature (the one on ``wake_word_enabled``) through the feature API, as a session feeds it:

1. **Detections.** Each keyword's phrase (``hey_jarvis`` -> "Hey Jarvis") alone and followed by
   a request ("Hey Jarvis, what time is it?"), in every voice: one fresh session listening for
   that keyword per utterance. Reported: the share detected, per keyword and voice, and how long
   after the keyword's end the detection came (where the feature estimates that end).
2. **False wakes.** Sentences without any keyword (everyday requests and chat, written for this
   benchmark), in every voice, joined with short pauses into one stream, repeated with shifted
   pauses until it lasts ``--minutes``: one session per keyword, and one listening for all of
   them. Reported per hour of speech. Sentences with near-misses ("Hey, Travis", "Alexander")
   are run and reported apart.
3. **CPU.** The thread CPU time of the sessions' ``process`` calls per second of audio, for one
   keyword and for all.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import trio

from scaivoice.engine import (
    AudioChunk,
    FeatureSession,
    PluginHost,
    ScaiVoiceError,
    SessionContext,
    SessionFeature,
    TtsBackend,
    TtsRequest,
    WakeDetected,
    resample_pcm16,
)

__all__ = [
    "CONFUSABLE",
    "DEFAULT_VOICES",
    "NEGATIVE",
    "WAKE_TEMPLATES",
    "Rendered",
    "WakeReport",
    "keyword_phrase",
    "measure",
    "open_wake_feature",
    "print_report",
    "render",
    "run_wake_benchmark",
]

RATE = 16000
CHUNK_BYTES = 640  # 20 ms
DEFAULT_VOICES = (
    "hibari:heart",
    "hibari:heart@0.85",
    "hibari:heart@1.2",
    "piper:en_US-joe-medium",
    "piper:en_US-joe-medium@0.85",
    "piper:en_US-joe-medium@1.2",
    "espeak:en-us",
    "espeak:en-us-nyc",
    "espeak:en-gb-x-rp",
    "espeak:en-gb-scotland",
    "espeak:en-gb-x-gbclan",
    "espeak:en-029",
)
"""Voices as ``backend:voice[@speed]``; those whose backend is not installed are skipped."""

WAKE_TEMPLATES = (
    "{phrase}.",
    "{phrase}, what time is it?",
    "{phrase}, turn on the kitchen lights.",
    "{phrase}, what's the weather like tomorrow?",
    "{phrase} what time is it?",
    "{phrase} turn on the kitchen lights.",
)
"""The keyword alone, followed by a request after a pause (the comma), and in the same breath."""

NEGATIVE = (
    "Could you set a timer for twenty minutes, please?",
    "I think we should leave a little earlier tomorrow morning.",
    "The train to Edinburgh was delayed by almost an hour.",
    "What would you like to have for dinner tonight?",
    "Remind me to call the dentist on Monday afternoon.",
    "The kids are playing football in the garden.",
    "Please add bread, butter and coffee to the shopping list.",
    "How long does it take to drive to the airport?",
    "My sister is visiting us next weekend with her husband.",
    "Turn the music down a little, it's too loud.",
    "The meeting has been moved to Thursday at half past three.",
    "I can't find my keys anywhere, have you seen them?",
    "It looks like it's going to rain this afternoon.",
    "We need to book the hotel before the prices go up.",
    "Can you read me the latest news about the election?",
    "The recipe says to bake it for forty minutes at two hundred degrees.",
    "Let's watch a film tonight, something funny.",
    "The printer in the office is out of paper again.",
    "I'd like to order a large pizza with mushrooms and olives.",
    "How many kilometres is it from Paris to Berlin?",
    "The doctor said I should drink more water and sleep more.",
    "Open the window, it's really warm in here.",
    "Did you remember to feed the cat this morning?",
    "Our flight leaves at seven, so we have to get up early.",
    "Tell me about the history of the Roman empire.",
    "The library closes at eight on weekdays and six on Saturdays.",
    "I'm going for a run along the river before breakfast.",
    "Could you translate good morning into Spanish?",
    "The new phone has a much better camera than the old one.",
    "Send a message to Peter saying I'll be ten minutes late.",
    "What's the difference between a crocodile and an alligator?",
    "The garden needs watering, it hasn't rained for a week.",
    "Play something relaxing, maybe some piano music.",
    "My grandmother used to tell us stories about the war.",
    "How do you spell necessary, with one c or two?",
    "The bus was so crowded that I had to stand all the way.",
    "Switch off the lights in the living room when you leave.",
    "I wonder whether the shop is still open at this hour.",
    "We painted the bedroom blue last summer.",
    "Thank you, that was very helpful, goodbye.",
)
"""Sentences without any keyword, for the false-wake rate."""

CONFUSABLE = (
    "Hey, Travis, can you pass me the salt?",
    "Hey, Marcus, how was your holiday?",
    "Hey, my friend, it's good to see you.",
    "Okay, now boot the computer again.",
    "Okay, Nadia, let's meet at noon.",
    "I met Alexander at the lexicon conference.",
    "Alex, can you help me with this box?",
    "He says the microscope is broken.",
    "The jars of jam are on the top shelf.",
    "Hey, Jarrod, is that your bicycle?",
)
"""Near-misses, reported apart from the false-wake rate."""


def keyword_phrase(keyword: str) -> str:
    """What is said for a keyword name: ``hey_jarvis`` -> ``Hey Jarvis``."""
    return keyword.replace("_", " ").title()


@dataclass(frozen=True, slots=True)
class _Voice:
    label: str
    backend: str
    voice_id: str
    speed: float


def _parse_voice(spec: str) -> _Voice:
    name, _, speed = spec.partition("@")
    backend, _, voice_id = name.partition(":")
    if not backend or not voice_id:
        raise ScaiVoiceError(f"a voice is backend:voice[@speed], not {spec!r}")
    return _Voice(spec, backend, voice_id, float(speed) if speed else 1.0)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One sentence in one voice, 16 kHz PCM16."""

    voice: str
    text: str
    pcm: bytes

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


async def _synthesize(tts: TtsBackend, request: TtsRequest) -> bytes:
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    pieces: list[bytes] = []
    rate = RATE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tts.synthesize, request, send)
        async with receive:
            async for chunk in receive:
                rate = chunk.sample_rate
                pieces.append(chunk.pcm)
    return resample_pcm16(b"".join(pieces), rate, RATE)


async def render(
    host: PluginHost, voices: Sequence[str], texts: Iterable[str]
) -> tuple[list[Rendered], list[str]]:
    """Render every text in every voice whose backend is installed and opens.

    Returns:
        The renderings, voice by voice, and the voices skipped (with why).
    """
    texts = list(texts)
    specs = host.backend_specs("tts")
    out: list[Rendered] = []
    skipped: list[str] = []
    parsed = [_parse_voice(v) for v in voices]
    for backend in dict.fromkeys(v.backend for v in parsed):
        mine = [v for v in parsed if v.backend == backend]
        if backend not in specs:
            skipped += [f"{v.label} (no {backend} backend)" for v in mine]
            continue
        options = {"seed": 0} if backend == "hibari" else {}
        tts = specs[backend].factory(options)
        if not isinstance(tts, TtsBackend):
            skipped += [f"{v.label} (not a TTS backend)" for v in mine]
            continue
        async with tts:
            for voice in mine:
                try:
                    for text in texts:
                        request = TtsRequest(text=text, voice_id=voice.voice_id, speed=voice.speed)
                        pcm = await _synthesize(tts, request)
                        out.append(Rendered(voice.label, text, pcm))
                except* ScaiVoiceError as group:
                    skipped.append(f"{voice.label} ({group.exceptions[0]})")
                    out = [r for r in out if r.voice != voice.label]
    return out, skipped


def open_wake_feature(host: PluginHost, options: dict[str, Any] | None = None) -> SessionFeature:
    """The installed wake-word feature (on ``wake_word_enabled``), created but not open."""
    spec = host.feature_specs().get("wake_word_enabled")
    if spec is None:
        raise ScaiVoiceError("no wake-word feature is installed: pip install 'scaivoice[wake]'")
    return spec.factory(options or {})


def _open_session(feature: SessionFeature, keywords: Sequence[str]) -> FeatureSession:
    """A session listening for ``keywords``, as the engine opens one (``context`` is passed to
    features that accept it)."""
    context = SessionContext(tenant="bench", wake_word=tuple(keywords))
    if "context" in inspect.signature(feature.open_session).parameters:
        opener: Any = feature.open_session
        session: FeatureSession = opener(sample_rate=RATE, options={}, context=context)
        return session
    return feature.open_session(sample_rate=RATE, options={})


def _keywords(feature: SessionFeature) -> tuple[str, ...]:
    return tuple(str(k) for k in getattr(feature, "keywords", ()))


async def _run_session(
    session: FeatureSession, pcm: bytes
) -> tuple[list[tuple[int, WakeDetected]], float]:
    """Feed ``pcm`` in 20 ms chunks -> ([(ms at the end of the chunk, event)], CPU seconds)."""
    events: list[tuple[int, WakeDetected]] = []
    cpu = 0.0
    for offset in range(0, len(pcm), CHUNK_BYTES):
        piece = pcm[offset : offset + CHUNK_BYTES]
        start = time.thread_time()
        found = await session.process(piece)
        cpu += time.thread_time() - start
        at_ms = (offset + len(piece)) * 1000 // (2 * RATE)
        events += [(at_ms, e) for e in found if isinstance(e, WakeDetected)]
    return events, cpu


def _silence(ms: float) -> bytes:
    return b"\0\0" * int(RATE * ms / 1000)


@dataclass(slots=True)
class WakeReport:
    """The benchmark's figures (``--json`` prints them)."""

    keywords: list[str]
    voices: list[str]
    skipped_voices: list[str]
    detected: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """keyword -> voice -> [detected, utterances]."""
    by_sentence: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """template (``{phrase}, what time is it?``) -> keyword -> [detected, utterances]."""
    delay_ms: dict[str, list[int]] = field(default_factory=dict)
    """keyword -> detection time minus the feature's estimate of the keyword's end."""
    negative_hours: float = 0.0
    negative_distinct_hours: float = 0.0
    """How much of it is distinct (the renderings before the loop repeats them)."""
    false_wakes: dict[str, int] = field(default_factory=dict)
    """keyword (or ``"any"``: a session listening for all) -> false wakes in the stream."""
    false_wake_sentences: dict[str, list[str]] = field(default_factory=dict)
    """The same -> what woke it (``keyword at s: voice: sentence``)."""
    confusable: dict[str, list[str]] = field(default_factory=dict)
    """keyword -> the near-miss renderings (``voice: text``) that woke it."""
    confusable_renderings: int = 0
    cpu_ms_per_s: dict[str, float] = field(default_factory=dict)
    """``"1"`` (one keyword, mean over keywords) and ``"all"`` -> ms CPU per s of audio."""


async def _detections(
    feature: SessionFeature, keyword: str, renders: Sequence[Rendered], report: WakeReport
) -> None:
    per_voice = report.detected.setdefault(keyword, {})
    delays = report.delay_ms.setdefault(keyword, [])
    templates = {t.format(phrase=keyword_phrase(keyword)): t for t in WAKE_TEMPLATES}
    for item in renders:
        session = _open_session(feature, [keyword])
        pcm = _silence(500) + item.pcm + _silence(1000)
        events, _ = await _run_session(session, pcm)
        hit = any(e.keyword == keyword for _, e in events)
        for counts in (
            per_voice.setdefault(item.voice, [0, 0]),
            report.by_sentence.setdefault(templates[item.text], {}).setdefault(keyword, [0, 0]),
        ):
            counts[0] += hit
            counts[1] += 1
        last = getattr(session, "last_detection", None)
        if hit and last is not None:
            delays.append(int(last.at_ms - last.keyword_end_ms))


def _stream(
    renders: Sequence[Rendered], seconds: float
) -> tuple[bytes, list[tuple[int, Rendered]]]:
    """The renderings joined with 0.3-0.8 s pauses, shuffled, looped up to ``seconds``; and
    where each starts (ms)."""
    rng = np.random.default_rng(0)
    pieces: list[bytes] = []
    starts: list[tuple[int, Rendered]] = []
    size = 0
    while size < seconds * RATE * 2:
        for index in rng.permutation(len(renders)):
            starts.append((size * 1000 // (2 * RATE), renders[index]))
            pieces += [renders[index].pcm, _silence(float(rng.uniform(300, 800)))]
            size += len(pieces[-2]) + len(pieces[-1])
            if size >= seconds * RATE * 2:
                break
    return b"".join(pieces), starts


def _heard_in(starts: Sequence[tuple[int, Rendered]], at_ms: int) -> Rendered:
    """The rendering playing (or just ended) at ``at_ms``."""
    return [r for start, r in starts if start <= at_ms][-1]


async def measure(
    host: PluginHost, *, voices: Sequence[str], minutes: float, log: Any = None
) -> WakeReport:
    """Run the three parts of the benchmark and return the figures."""

    def say(message: str) -> None:
        if log is not None:
            print(message, file=log, flush=True)

    feature = open_wake_feature(host)
    keywords = _keywords(feature)
    if not keywords:
        raise ScaiVoiceError("the wake-word feature names no keywords")
    texts = [t.format(phrase=keyword_phrase(k)) for k in keywords for t in WAKE_TEMPLATES]
    say(
        f"rendering {len(texts) + len(NEGATIVE) + len(CONFUSABLE)} sentences in "
        f"{len(voices)} voices ..."
    )
    renders, skipped = await render(host, voices, [*texts, *NEGATIVE, *CONFUSABLE])
    used = list(dict.fromkeys(r.voice for r in renders))
    report = WakeReport(keywords=list(keywords), voices=used, skipped_voices=skipped)
    async with feature:
        say("detections ...")
        for keyword in keywords:
            wanted = {t.format(phrase=keyword_phrase(keyword)) for t in WAKE_TEMPLATES}
            await _detections(feature, keyword, [r for r in renders if r.text in wanted], report)
        negatives = [r for r in renders if r.text in NEGATIVE]
        stream, starts = _stream(negatives, minutes * 60)
        report.negative_hours = len(stream) / 2 / RATE / 3600
        report.negative_distinct_hours = min(
            sum(r.seconds for r in negatives) / 3600, report.negative_hours
        )
        say(f"false wakes over {report.negative_hours * 60:.1f} min of speech ...")
        single_cpu: list[float] = []
        for label, listen in [*((k, [k]) for k in keywords), ("any", list(keywords))]:
            session = _open_session(feature, listen)
            events, cpu = await _run_session(session, stream)
            per_s = cpu * 1000 / (report.negative_hours * 3600)
            report.false_wakes[label] = len(events)
            for at_ms, event in events:
                heard = _heard_in(starts, at_ms)
                report.false_wake_sentences.setdefault(label, []).append(
                    f"{event.keyword} at {at_ms / 1000:.1f} s: {heard.voice}: {heard.text}"
                )
            if label == "any":
                report.cpu_ms_per_s["all"] = per_s
            else:
                single_cpu.append(per_s)
        report.cpu_ms_per_s["1"] = statistics.mean(single_cpu)
        confusable = [r for r in renders if r.text in CONFUSABLE]
        report.confusable_renderings = len(confusable)
        for item in confusable:
            session = _open_session(feature, keywords)
            events, _ = await _run_session(session, _silence(500) + item.pcm + _silence(1000))
            for _, event in events:
                report.confusable.setdefault(event.keyword, []).append(f"{item.voice}: {item.text}")
    return report


def print_report(report: WakeReport) -> None:
    """The figures as a table."""
    print(f"wake-word benchmark: keywords {', '.join(report.keywords)}")
    for line in report.skipped_voices:
        print(f"  skipped voice {line}")
    width = max(len(v) for v in report.voices)
    print(f"\ndetections (utterances detected / spoken, {len(WAKE_TEMPLATES)} sentences a voice):")
    print(f"  {'voice':<{width}}  " + "  ".join(f"{k:>12}" for k in report.keywords))
    for voice in report.voices:
        cells = []
        for keyword in report.keywords:
            hit, total = report.detected.get(keyword, {}).get(voice, [0, 0])
            cells.append(f"{hit:>7}/{total:<4}")
        print(f"  {voice:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    totals = []
    for keyword in report.keywords:
        hits = sum(h for h, _ in report.detected.get(keyword, {}).values())
        count = sum(n for _, n in report.detected.get(keyword, {}).values())
        totals.append(f"{hits / max(count, 1):>11.0%} ")
    print(f"  {'all voices':<{width}}  " + "  ".join(totals))
    print("\nthe same, by sentence (all voices):")
    width = max(len(t) for t in WAKE_TEMPLATES) + 2
    print(f"  {'':<{width}}  " + "  ".join(f"{k:>12}" for k in report.keywords))
    for template, per_keyword in report.by_sentence.items():
        cells = [
            f"{per_keyword.get(k, [0, 0])[0]:>7}/{per_keyword.get(k, [0, 0])[1]:<4}"
            for k in report.keywords
        ]
        print(
            f"  {template.format(phrase='<keyword>'):<{width}}  "
            + "  ".join(f"{c:>12}" for c in cells)
        )
    for keyword, delays in report.delay_ms.items():
        if delays:
            print(
                f"  {keyword}: detected {statistics.median(delays):.0f} ms (median; "
                f"{min(delays)}-{max(delays)}) after the keyword's estimated end"
            )
    minutes = report.negative_hours * 60
    distinct = report.negative_distinct_hours * 60
    print(
        f"\nfalse wakes over {minutes:.1f} min of speech without a keyword "
        f"({len(NEGATIVE)} sentences x {len(report.voices)} voices = {distinct:.1f} min, looped "
        "with other pauses):"
    )
    for keyword, count in report.false_wakes.items():
        label = "all keywords" if keyword == "any" else keyword
        per_hour = count / report.negative_hours if report.negative_hours else 0.0
        bound = f"; under {3 / report.negative_hours:.1f} per hour at 95 %" if count == 0 else ""
        print(f"  {label:<14} {count:>4} ({per_hour:.2f} per hour{bound})")
        for line in report.false_wake_sentences.get(keyword, []):
            print(f"    {line}")
    woke = sum(len(v) for v in report.confusable.values())
    print(f"\nnear-misses: {woke} wakes in {report.confusable_renderings} renderings")
    for keyword, items in report.confusable.items():
        for item in items:
            print(f"  {keyword}: {item}")
    print("\nCPU per session (thread time of process(), per second of audio):")
    print(f"  one keyword   {report.cpu_ms_per_s.get('1', 0.0):.2f} ms")
    print(f"  all keywords  {report.cpu_ms_per_s.get('all', 0.0):.2f} ms")


def run_wake_benchmark(
    *, minutes: float = 10.0, voices: Sequence[str] | None = None, as_json: bool = False
) -> int:
    """Run the benchmark and print its figures. Returns a process exit code."""
    host = PluginHost()
    host.load_entry_points()
    try:
        report = trio.run(
            lambda: measure(
                host,
                voices=voices or DEFAULT_VOICES,
                minutes=minutes,
                log=sys.stderr,
            )
        )
    except ScaiVoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print_report(report)
    return 0
