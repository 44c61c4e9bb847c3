"""The VAD's frame levels and energy gate: sans-IO (fast) and on the real model (slow)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
import trio

from scaivoice.engine import FeatureEvent, FeatureSession, SpeechStarted, float_to_pcm16
from scaivoice.plugins._levels import SILENCE_DBFS, EnergyGate, frame_levels
from scaivoice.plugins.silero_vad import SileroVad

from ._support import Speech, chunks

FRAME = 512
SETTLE = 31  # the feature's settle frames


def noise(seconds: float, dbfs: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return float_to_pcm16(rng.normal(0.0, 10 ** (dbfs / 20), int(16000 * seconds)))


# ---------------------------------------------------------------------- fast


def test_frame_levels_of_silence_noise_and_a_tone() -> None:
    tone = np.sin(np.arange(FRAME) * 2 * np.pi * 1000 / 16000) * 0.5
    pcm = b"\0\0" * FRAME + noise(FRAME / 16000, -40.0) + float_to_pcm16(tone)
    levels, blocks = frame_levels(pcm, FRAME)
    assert blocks.shape == (3, 4)
    assert levels[0] == SILENCE_DBFS and (blocks[0] == SILENCE_DBFS).all()
    assert levels[1] == pytest.approx(-40.0, abs=1.0)
    assert levels[2] == pytest.approx(-9.0, abs=0.1)  # a sine at amplitude 0.5: -6 - 3 dB


def scored(gate: EnergyGate, levels: Sequence[float], sizes: Sequence[int]) -> list[int]:
    """Frames scored for their probability (pre-roll frames left out), feeding ``sizes``
    frames at a time."""
    out: list[int] = []
    done = 0
    for size in sizes:
        for first, stop, preroll in gate.plan(np.array(levels[done : done + size])):
            assert first + done >= 0
            out.extend(range(done + first + preroll, done + stop))
        done += size
    return out


def test_the_gate_skips_a_long_quiet_stretch_and_opens_on_a_louder_frame() -> None:
    gate = EnergyGate(-50.0, settle_frames=3, preroll=1)
    quiet, loud = -60.0, -30.0
    plan = gate.plan(np.array([loud, quiet, quiet, quiet, quiet, quiet, quiet]))
    assert plan == [(0, 4, 0)]  # the loud frame and three quiet ones settle the model
    assert gate.skipping
    # A louder frame: the last skipped frame leads into it (pre-roll), from the previous call.
    assert gate.plan(np.array([loud, quiet])) == [(-1, 2, 1)]
    assert not gate.skipping


def test_the_gate_plans_the_same_whatever_the_chunking() -> None:
    rng = np.random.default_rng(1)
    levels = rng.choice([-70.0, -60.0, -45.0, -20.0], size=400, p=[0.5, 0.4, 0.05, 0.05])
    levels[99] = -20.0
    levels[100:200] = -65.0  # a long quiet stretch
    whole = scored(EnergyGate(-50.0, settle_frames=5), list(levels), [400])
    assert whole == scored(EnergyGate(-50.0, settle_frames=5), list(levels), [1] * 400)
    assert whole == scored(EnergyGate(-50.0, settle_frames=5), list(levels), [7] * 57 + [1])
    assert set(range(99, 105)) <= set(whole)  # the first five quiet frames settle the model
    assert not set(range(105, 200)) & set(whole)


def test_no_level_scores_every_frame() -> None:
    assert EnergyGate(None).plan(np.full(5, SILENCE_DBFS)) == [(0, 5, 0)]
    assert EnergyGate(None).plan(np.array([])) == []


def test_bad_gate_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EnergyGate(-50.0, settle_frames=1, preroll=2)
    with pytest.raises(ValueError):
        EnergyGate(-50.0, settle_frames=-1)


# ---------------------------------------------------------------------- slow, real model


async def run(session: FeatureSession, pieces: Sequence[bytes]) -> list[tuple[FeatureEvent, int]]:
    """Events with the index of the chunk that returned each."""
    events: list[tuple[FeatureEvent, int]] = []
    with trio.fail_after(60):
        for index, piece in enumerate(pieces):
            events.extend((event, index) for event in await session.process(piece))
    return events


@pytest.fixture
async def vad() -> AsyncIterator[SileroVad]:
    pytest.importorskip("onnxruntime")
    async with SileroVad.from_mapping({}) as feature:
        yield feature


@pytest.mark.slow
@pytest.mark.parametrize("dbfs", [-58.0, -70.0])
async def test_a_quiet_stream_costs_no_model_calls_after_it_settles(
    vad: SileroVad, dbfs: float
) -> None:
    pcm = noise(20.0, dbfs)
    frames = len(pcm) // (2 * FRAME)
    events = await run(vad.open_session(sample_rate=16000, options={}), chunks(pcm, 20))
    stats = vad.statistics()
    assert events == []
    assert stats.frames == SETTLE  # the first second settles the model; then nothing
    assert stats.skipped == frames - SETTLE


@pytest.mark.slow
async def test_a_louder_room_is_scored_and_the_gate_can_be_turned_off(vad: SileroVad) -> None:
    pcm = noise(3.0, -45.0)
    await run(vad.open_session(sample_rate=16000, options={}), chunks(pcm, 20))
    quiet = noise(3.0, -70.0)
    await run(
        vad.open_session(sample_rate=16000, options={"energy_gate_dbfs": None}), chunks(quiet, 20)
    )
    stats = vad.statistics()
    assert stats.skipped == 0
    assert stats.frames == 2 * (len(pcm) // (2 * FRAME))


@pytest.mark.slow
@pytest.mark.parametrize("room", ["digital silence", "noise at -58 dBFS"])
async def test_speech_after_a_long_quiet_stretch_is_heard_as_soon_as_without_the_gate(
    vad: SileroVad, speech: Speech, room: str
) -> None:
    for index in range(5):
        quiet = b"\0\0" * 16000 * 10 if room == "digital silence" else noise(10.0, -58.0, index)
        tail = b"\0\0" * 16000 * 2 if room == "digital silence" else noise(2.0, -58.0, index + 9)
        pcm = quiet + speech[index] + tail
        gated = await run(vad.open_session(sample_rate=16000, options={}), chunks(pcm, 20))
        plain = await run(
            vad.open_session(sample_rate=16000, options={"energy_gate_dbfs": None}),
            chunks(pcm, 20),
        )
        assert [type(e) for e, _ in gated] == [type(e) for e, _ in plain]
        (start, chunk), (plain_start, plain_chunk) = gated[0], plain[0]
        assert isinstance(start, SpeechStarted) and isinstance(plain_start, SpeechStarted)
        assert start.at_ms <= plain_start.at_ms  # measured: the same frame
        assert chunk <= plain_chunk
    assert vad.statistics().skipped > 5 * 250  # the quiet stretches were skipped
