"""The Silero VAD feature on real speech (slow) and its option checks (fast)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
import trio

from scaivoice.engine import (
    ConfigError,
    FeatureEvent,
    FeatureSession,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    float_to_pcm16,
    resample_pcm16,
)
from scaivoice.plugins.silero_vad import SileroVad, scaivoice_session_features

from ._support import Speech, chunks, silence

LEAD_MS = 1000


async def run(
    session: FeatureSession, pieces: Sequence[bytes], *, pauses: bool = False
) -> list[FeatureEvent]:
    """The session's events for ``pieces``: starts and stops (and pauses, resumptions)."""
    events: list[FeatureEvent] = []
    with trio.fail_after(30):
        for piece in pieces:
            events.extend(await session.process(piece))
    if pauses:
        return events
    return [e for e in events if isinstance(e, SpeechStarted | SpeechStopped)]


@pytest.mark.slow
async def test_a_pause_in_speech_is_reported_and_speech_after_it_resumes(
    vad: SileroVad, speech: Speech
) -> None:
    pcm = silence(LEAD_MS) + speech[0] + silence(200) + speech[1] + silence(1500)
    events = await run(
        vad.open_session(sample_rate=16000, options={"min_silence_ms": 1400}),
        chunks(pcm, 20),
        pauses=True,
    )
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStarted and kinds[-1] is SpeechStopped
    assert kinds.count(SpeechStarted) == 1  # one turn: the 200 ms gap was only a pause
    paused = [e for e in events if isinstance(e, SpeechPaused)]
    resumed = [e for e in events if isinstance(e, SpeechResumed)]
    assert len(paused) == len(resumed) + 1  # every pause but the last was resumed
    assert kinds.index(SpeechPaused) < kinds.index(SpeechResumed)
    gap_end = LEAD_MS + len(speech[0]) / 32 + 200  # the clip (with its own tail) and the gap
    assert any(LEAD_MS < p.at_ms < gap_end for p in paused)  # a pause between the two clips


def noise_burst(ms: int, amplitude: float = 0.3) -> bytes:
    rng = np.random.default_rng(0)
    return float_to_pcm16(rng.normal(0.0, amplitude, 16 * ms).astype(np.float32))


@pytest.fixture
async def vad() -> AsyncIterator[SileroVad]:
    pytest.importorskip("onnxruntime")
    async with SileroVad.from_mapping({}) as feature:
        yield feature


@pytest.mark.slow
async def test_finds_the_speech_between_silences(vad: SileroVad, speech: Speech) -> None:
    sentence = speech[1]
    duration_ms = len(sentence) // 32
    pcm = silence(LEAD_MS) + sentence + silence(1500)
    events = await run(vad.open_session(sample_rate=16000, options={}), chunks(pcm, 20))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    start, stop = events[0].at_ms, events[1].at_ms  # type: ignore[union-attr]
    assert LEAD_MS <= start <= LEAD_MS + 600
    assert LEAD_MS + duration_ms - 1000 <= stop <= LEAD_MS + duration_ms + 100


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["white noise", "a slice of speech"])
async def test_a_burst_shorter_than_min_speech_ms_does_not_start_speech(
    vad: SileroVad, speech: Speech, kind: str
) -> None:
    """A 100 ms burst under ``min_speech_ms = 250`` (the default, 64 ms, lets a barge-in start
    within about 130 ms of the onset; a cough then counts, and the words decide)."""
    if kind == "white noise":
        burst = noise_burst(100)
    else:  # the loudest 100 ms of a sentence: real speech, just too short
        sentence = np.frombuffer(speech[0], dtype="<i2")
        energy = np.convolve(sentence.astype(np.float32) ** 2, np.ones(1600), mode="valid")
        at = int(np.argmax(energy))
        burst = sentence[at : at + 1600].tobytes()
    pcm = silence(LEAD_MS) + burst + silence(1500)
    session = vad.open_session(sample_rate=16000, options={"min_speech_ms": 250})
    assert await run(session, chunks(pcm, 20)) == []


@pytest.mark.slow
async def test_speech_starts_soon_after_its_onset_by_default(
    vad: SileroVad, speech: Speech
) -> None:
    pcm = silence(LEAD_MS) + speech[1] + silence(1500)
    session = vad.open_session(sample_rate=16000, options={})
    received = 0
    started_after_ms = None
    for piece in chunks(pcm, 20):
        received += len(piece) // 32
        events = await session.process(piece)
        if any(isinstance(e, SpeechStarted) for e in events):
            onset = next(e.at_ms for e in events if isinstance(e, SpeechStarted))
            started_after_ms = received - onset
            break
    assert started_after_ms is not None
    assert started_after_ms <= 200  # reported this soon after the run it dates began


@pytest.mark.slow
async def test_other_sample_rates_are_resampled(vad: SileroVad, speech: Speech) -> None:
    pcm_8k = resample_pcm16(silence(LEAD_MS) + speech[2] + silence(1500), 16000, 8000)
    events = await run(vad.open_session(sample_rate=8000, options={}), chunks(pcm_8k, 20, 8000))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert LEAD_MS <= events[0].at_ms <= LEAD_MS + 600  # type: ignore[union-attr]


@pytest.mark.slow
async def test_sessions_keep_their_own_state(vad: SileroVad, speech: Speech) -> None:
    pcm = silence(LEAD_MS) + speech[3] + silence(1500)
    alone = await run(vad.open_session(sample_rate=16000, options={}), chunks(pcm, 20))
    first = vad.open_session(sample_rate=16000, options={})
    second = vad.open_session(sample_rate=16000, options={})
    together: list[FeatureEvent] = []
    other: list[FeatureEvent] = []
    for piece in chunks(pcm, 20):
        together.extend(await first.process(piece))
        other.extend(await second.process(noise_burst(20, 0.05)))
    assert [e for e in together if isinstance(e, SpeechStarted | SpeechStopped)] == alone
    assert other == []


@pytest.mark.slow
async def test_large_chunks_give_the_same_events(vad: SileroVad, speech: Speech) -> None:
    pcm = silence(LEAD_MS) + speech[4] + silence(1500)
    small = await run(vad.open_session(sample_rate=16000, options={}), chunks(pcm, 20))
    large = await run(vad.open_session(sample_rate=16000, options={}), chunks(pcm, 1000))
    odd = await run(
        vad.open_session(sample_rate=16000, options={}),
        [pcm[i : i + 777] for i in range(0, len(pcm), 777)],
    )
    assert small == large == odd
    assert len(small) == 2


@pytest.mark.slow
async def test_a_session_may_override_the_hang_time(vad: SileroVad, speech: Speech) -> None:
    pcm = silence(LEAD_MS) + speech[0] + silence(1500)
    session = vad.open_session(sample_rate=16000, options={"min_silence_ms": 3000})
    events = await run(session, chunks(pcm, 20), pauses=True)
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused]
    with pytest.raises(ConfigError, match="silero-vad"):
        vad.open_session(sample_rate=16000, options={"treshold": 0.4})


# ---------------------------------------------------------------------- fast


@pytest.mark.parametrize(
    "options",
    [{"threshold": 1.5}, {"threshold": 0.3, "neg_threshold": 0.6}, {"bogus": 1}],
)
def test_bad_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="silero-vad"):
        SileroVad.from_mapping(options)


def test_the_feature_is_declared_for_vad_enabled() -> None:
    (spec,) = list(scaivoice_session_features())
    assert (spec.name, spec.config_key) == ("silero-vad", "vad_enabled")
    assert isinstance(spec.factory({"min_silence_ms": 300}), SileroVad)


def test_a_session_needs_an_open_feature() -> None:
    with pytest.raises(ConfigError, match="not open"):
        SileroVad().open_session(sample_rate=16000, options={})
