"""The benchmark's user side as audio: utterances in several TTS voices, pauses, noises.

Everything is 16 kHz PCM16 mono, cut to its sound (no leading or trailing silence, to the 10 ms):

- **Utterances with inner pauses** ("my number is five five five, | one two three four"): the
  whole sentence is synthesised once, so the words before a pause keep the rising, unfinished
  intonation of a sentence that goes on, and the short silence the voice leaves at the comma
  is stretched to the pause wanted (300-900 ms). The silence is found near where the text before
  the pause, synthesised alone, ends. Where no silence is found there (a voice that does not
  pause at the comma), the pieces are synthesised apart and joined with the pause.
- **Backchannels, interruptions, questions**: one rendering each.
- **Noises**: coughs (two bursts of band-passed noise with a fast attack and a slower decay)
  and clicks (a few short decaying tones, as a pen or a tongue click), synthesised in numpy.

Voices are ``backend:voice[@speed]`` (:data:`VOICES`); a voice whose backend is not installed
or does not open is left out, and the rest of the benchmark runs on those that remain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import trio

from scaivoice.engine import (
    AudioChunk,
    PluginHost,
    ScaiVoiceError,
    TtsBackend,
    TtsRequest,
    resample_pcm16,
)

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "PAUSE",
    "RATE",
    "SPEECH_LEVEL",
    "VOICES",
    "Clip",
    "Voice",
    "click",
    "cough",
    "parse_voice",
    "render_clips",
    "speech_end",
]

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
SPEECH_LEVEL = 328
"""|sample| above this (-40 dBFS) is sound, not silence."""

VOICES = (
    "hibari:heart",
    "piper:en_US-joe-medium",
    "hibari:heart@1.15",
    "espeak:en-us",
    "hibari:heart@0.9",
    "espeak:en-us+f3",
)
"""The user's voices, as ``backend:voice[@speed]``: hibari first (the clearest to Whisper)."""

PAUSE = "|"
"""Where an utterance's text holds a pause."""
_GAP_MIN_MS = 40
_GAP_SEARCH_S = 0.35
_STEP = RATE // 100  # 10 ms


@dataclass(frozen=True, slots=True)
class Voice:
    """A TTS voice: ``label`` is how the report names it (``hibari:heart@0.9``)."""

    label: str
    backend: str
    voice_id: str
    speed: float = 1.0


def parse_voice(spec: str) -> Voice:
    """``backend:voice[@speed]`` -> :class:`Voice`.

    Raises:
        ScaiVoiceError: the spec has no backend or no voice.
    """
    name, _, speed = spec.partition("@")
    backend, _, voice_id = name.partition(":")
    if not backend or not voice_id:
        raise ScaiVoiceError(f"a voice is backend:voice[@speed], not {spec!r}")
    return Voice(spec, backend, voice_id, float(speed) if speed else 1.0)


@dataclass(frozen=True, slots=True)
class Clip:
    """Something the user says (or a noise they make), 16 kHz PCM16, cut to its sound.

    Attributes:
        kind: ``pause`` (an utterance with inner pauses), ``question``, ``prompt`` (a question
            asking for a long answer), ``backchannel``, ``noise``, ``interruption``.
        text: what is said (``|`` where the pauses are), or the noise's name.
        voice: the voice's label, or ``noise``.
        pcm: the audio.
        pauses_ms: the inner pauses' lengths, in order.
        stretched: the pauses were stretched from the voice's own (False: pieces joined).
    """

    kind: str
    text: str
    voice: str
    pcm: bytes
    pauses_ms: tuple[int, ...] = ()
    stretched: bool = True

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE

    @property
    def spoken(self) -> str:
        """The text without pause marks."""
        return " ".join(self.text.replace(PAUSE, " ").split())


# ====================================================================== rendering


async def render_clips(
    host: PluginHost,
    voices: Sequence[str],
    wanted: Sequence[tuple[str, str, str, tuple[int, ...]]],
) -> tuple[dict[int, Clip], list[str]]:
    """Render ``(kind, voice label, text, pauses_ms)`` items.

    Returns:
        The clips by their index in ``wanted`` (none for a voice left out), and the voices left
        out, each with why.
    """
    specs = host.backend_specs("tts")
    parsed = {v.label: v for v in map(parse_voice, voices)}
    rendered: dict[int, Clip] = {}
    skipped: list[str] = []
    for backend in dict.fromkeys(v.backend for v in parsed.values()):
        mine = [v for v in parsed.values() if v.backend == backend]
        if backend not in specs:
            skipped += [f"{v.label} (no {backend} backend)" for v in mine]
            continue
        tts = specs[backend].factory({"seed": 0} if backend == "hibari" else {})
        if not isinstance(tts, TtsBackend):
            skipped += [f"{v.label} (not a TTS backend)" for v in mine]
            continue
        try:
            async with tts:
                for voice in mine:
                    try:
                        for index, (kind, label, text, pauses) in enumerate(wanted):
                            if label == voice.label:
                                rendered[index] = await _render(tts, voice, kind, text, pauses)
                    except* ScaiVoiceError as group:
                        skipped.append(f"{voice.label} ({group.exceptions[0]})")
                        rendered = {i: c for i, c in rendered.items() if c.voice != voice.label}
        except* ScaiVoiceError as group:  # the backend does not open here
            skipped += [f"{v.label} ({group.exceptions[0]})" for v in mine]
    return rendered, skipped


async def _synthesize(tts: TtsBackend, voice: Voice, text: str) -> npt.NDArray[np.int16]:
    """``text`` in ``voice`` at 16 kHz, not cut."""
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    pieces: list[bytes] = []
    rate = RATE
    request = TtsRequest(text=text, voice_id=voice.voice_id, speed=voice.speed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tts.synthesize, request, send)
        async with receive:
            async for chunk in receive:
                rate = chunk.sample_rate
                pieces.append(chunk.pcm)
    pcm = b"".join(pieces)
    if rate != RATE:
        pcm = resample_pcm16(pcm, rate, RATE)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
    if not np.any(np.abs(samples.astype(np.int32)) > SPEECH_LEVEL):
        raise ScaiVoiceError(f"{voice.label} rendered silence for {text!r}")
    return samples


async def _render(
    tts: TtsBackend, voice: Voice, kind: str, text: str, pauses_ms: tuple[int, ...]
) -> Clip:
    pieces = [p.strip() for p in text.split(PAUSE)]
    if len(pieces) - 1 != len(pauses_ms):
        raise ValueError(f"{text!r} has {len(pieces) - 1} pauses, {len(pauses_ms)} lengths given")
    whole = _cut(await _synthesize(tts, voice, " ".join(pieces)))
    if not pauses_ms:
        return Clip(kind, text, voice.label, whole.tobytes())
    # Where each pause falls: near where the text before it ends when said alone.
    ends = []
    for k in range(1, len(pieces)):
        prefix = _cut(await _synthesize(tts, voice, " ".join(pieces[:k])))
        ends.append(len(prefix))
    gaps = _gaps(whole)
    chosen: list[tuple[int, int]] = []
    for end in ends:
        near = [g for g in gaps if abs(g[0] - end) <= _GAP_SEARCH_S * RATE and g not in chosen]
        if not near:
            break
        chosen.append(min(near, key=lambda g: abs(g[0] - end)))
    if len(chosen) == len(ends) and chosen == sorted(chosen):
        return Clip(kind, text, voice.label, _stretch(whole, chosen, pauses_ms), pauses_ms)
    # The voice did not pause there: say the pieces apart and join them.
    parts = [_cut(await _synthesize(tts, voice, piece)) for piece in pieces]
    joined: list[npt.NDArray[np.int16]] = [parts[0]]
    for pause, part in zip(pauses_ms, parts[1:], strict=True):
        joined += [np.zeros(RATE * pause // 1000, np.int16), part]
    return Clip(kind, text, voice.label, np.concatenate(joined).tobytes(), pauses_ms, False)


def _cut(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Without leading and trailing silence, to the 10 ms."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_LEVEL)
    start = int(loud[0]) // _STEP * _STEP
    end = min(len(samples), (int(loud[-1]) // _STEP + 1) * _STEP)
    return samples[start:end]


def _gaps(samples: npt.NDArray[np.int16]) -> list[tuple[int, int]]:
    """Silences inside ``samples`` of at least 40 ms: ``(start, end)`` sample indices, where
    every 10 ms step's peak is under -40 dBFS."""
    steps = len(samples) // _STEP
    peaks = np.abs(samples[: steps * _STEP].astype(np.int32)).reshape(steps, _STEP).max(axis=1)
    quiet = peaks <= SPEECH_LEVEL
    gaps: list[tuple[int, int]] = []
    start: int | None = None
    for index, is_quiet in enumerate([*quiet.tolist(), False]):
        if is_quiet and start is None:
            start = index
        elif not is_quiet and start is not None:
            if (index - start) * 10 >= _GAP_MIN_MS:
                gaps.append((start * _STEP, index * _STEP))
            start = None
    return gaps


def _stretch(
    samples: npt.NDArray[np.int16], gaps: Sequence[tuple[int, int]], pauses_ms: Sequence[int]
) -> bytes:
    """Each gap made ``pause`` long: silence added (or the gap shortened) at its middle."""
    out: list[npt.NDArray[np.int16]] = []
    position = 0
    for (start, end), pause in zip(gaps, pauses_ms, strict=True):
        middle = (start + end) // 2
        want = RATE * pause // 1000
        have = end - start
        if want >= have:
            out += [samples[position:middle], np.zeros(want - have, np.int16)]
            position = middle
        else:
            cut = have - want
            out.append(samples[position : middle - cut // 2])
            position = middle - cut // 2 + cut
    out.append(samples[position:])
    return np.concatenate(out).tobytes()


# ====================================================================== noises


def cough(rng: np.random.Generator) -> Clip:
    """A cough: two bursts of band-passed noise (300-3000 Hz), the second weaker."""
    parts = [
        _burst(rng, ms=int(rng.integers(160, 260)), peak=0.5),
        np.zeros(RATE * int(rng.integers(60, 120)) // 1000, np.float64),
        _burst(rng, ms=int(rng.integers(100, 180)), peak=0.3),
    ]
    return Clip("noise", "(cough)", "noise", _pcm(np.concatenate(parts)))


def click(rng: np.random.Generator) -> Clip:
    """Clicks: 2-4 decaying tones of 2-4 kHz, 3-5 ms each, 80-250 ms apart."""
    pieces: list[npt.NDArray[np.float64]] = []
    for index in range(int(rng.integers(2, 5))):
        if index:
            pieces.append(np.zeros(RATE * int(rng.integers(80, 250)) // 1000, np.float64))
        n = RATE * int(rng.integers(3, 6)) // 1000
        t = np.arange(n) / RATE
        tone = np.sin(2 * np.pi * rng.uniform(2000, 4000) * t) * np.exp(-t / 0.0012)
        pieces.append(tone * rng.uniform(0.3, 0.6))
    return Clip("noise", "(click)", "noise", _pcm(np.concatenate(pieces)))


def _burst(rng: np.random.Generator, *, ms: int, peak: float) -> npt.NDArray[np.float64]:
    n = RATE * ms // 1000
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3000)] = 0
    noise = np.fft.irfft(spectrum, n)
    t = np.arange(n) / RATE
    envelope = (1 - np.exp(-t / 0.01)) * np.exp(-t / (ms / 1000 / 3))
    shaped: npt.NDArray[np.float64] = noise * envelope
    return shaped * (peak / max(float(np.max(np.abs(shaped))), 1e-9))


def _pcm(samples: npt.NDArray[np.float64]) -> bytes:
    pcm: bytes = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm


def speech_end(pcm: bytes) -> int:
    """The byte offset just past the 20 ms frame holding the last sound sample of ``pcm``."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)) > SPEECH_LEVEL)
    if loud.size == 0:
        return 0
    return (int(loud[-1]) * 2 // FRAME_BYTES + 1) * FRAME_BYTES
