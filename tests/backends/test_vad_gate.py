"""The VAD's frame levels and energy gate: sans-IO (fast) and on the real model (slow)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest
import trio

from scaivoice.engine import (
    FeatureEvent,
    FeatureSession,
    SpeechStarted,
    SpeechStopped,
    float_to_pcm16,
    pcm16_to_float,
)
from scaivoice.plugins._levels import SILENCE_DBFS, EnergyGate, frame_levels
from scaivoice.plugins._segmenter import SpeechSegmenter
from scaivoice.plugins._silero_model import SileroModel
from scaivoice.plugins.silero_vad import SileroVad, SileroVadSession

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
    assert [len(frame) for frame in blocks] == [4, 4, 4]
    assert levels[0] == SILENCE_DBFS and blocks[0] == [SILENCE_DBFS] * 4
    assert levels[1] == pytest.approx(-40.0, abs=1.0)
    assert levels[2] == pytest.approx(-9.0, abs=0.1)  # a sine at amplitude 0.5: -6 - 3 dB


def scored(gate: EnergyGate, levels: Sequence[float], sizes: Sequence[int]) -> list[int]:
    """Frames scored for their probability (pre-roll frames left out), feeding ``sizes``
    frames at a time."""
    out: list[int] = []
    done = 0
    for size in sizes:
        for first, stop, preroll in gate.plan(levels[done : done + size]):
            assert first + done >= 0
            out.extend(range(done + first + preroll, done + stop))
        done += size
    return out


def test_the_gate_skips_a_long_quiet_stretch_and_opens_on_a_louder_frame() -> None:
    gate = EnergyGate(-50.0, settle_frames=3, preroll=1)
    quiet, loud = -60.0, -30.0
    plan = gate.plan([loud, quiet, quiet, quiet, quiet, quiet, quiet])
    assert plan == [(0, 4, 0)]  # the loud frame and three quiet ones settle the model
    assert gate.skipping
    # A louder frame: the last skipped frame leads into it (pre-roll), from the previous call.
    assert gate.plan([loud, quiet]) == [(-1, 2, 1)]
    assert not gate.skipping


def test_the_gate_plans_the_same_whatever_the_chunking() -> None:
    rng = np.random.default_rng(1)
    levels = rng.choice([-70.0, -60.0, -45.0, -20.0], size=400, p=[0.5, 0.4, 0.05, 0.05])
    levels[99] = -20.0
    levels[100:200] = -65.0  # a long quiet stretch
    whole = scored(EnergyGate(-50.0, settle_frames=5), levels.tolist(), [400])
    assert whole == scored(EnergyGate(-50.0, settle_frames=5), levels.tolist(), [1] * 400)
    assert whole == scored(EnergyGate(-50.0, settle_frames=5), levels.tolist(), [7] * 57 + [1])
    assert set(range(99, 105)) <= set(whole)  # the first five quiet frames settle the model
    assert not set(range(105, 200)) & set(whole)


def test_no_level_scores_every_frame() -> None:
    assert EnergyGate(None).plan([SILENCE_DBFS] * 5) == [(0, 5, 0)]
    assert EnergyGate(None).plan([]) == []


def test_bad_gate_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EnergyGate(-50.0, settle_frames=1, preroll=2)
    with pytest.raises(ValueError):
        EnergyGate(-50.0, settle_frames=-1)


class FakeStream:
    """Records the contexts it is given."""

    def __init__(self) -> None:
        self.contexts: list[bytes] = []

    def set_context(self, pcm16: bytes) -> None:
        self.contexts.append(pcm16)


class FakeBatcher:
    """Scores every frame 0.9 and records the runs it is given."""

    def __init__(self) -> None:
        self.runs: list[bytes] = []
        self.skipped = 0

    async def probabilities(self, stream: FakeStream, pcm: bytes) -> list[float]:
        self.runs.append(pcm)
        return [0.9] * (len(pcm) // (2 * FRAME))

    def note_skipped(self, frames: int) -> None:
        self.skipped += frames


@pytest.mark.parametrize("frames_per_chunk", [1, 3, 16])
async def test_the_session_leads_the_model_into_the_frame_that_opens_the_gate(
    frames_per_chunk: int,
) -> None:
    def frame(level: float, tag: int) -> bytes:
        samples = np.full(FRAME, 10 ** (level / 20) * 32767, dtype="<i2")
        samples[0] = tag  # tells the frames apart
        return samples.tobytes()

    quiet = [frame(-70.0, tag) for tag in range(8)]
    loud = frame(-20.0, 99)
    stream, batcher = FakeStream(), FakeBatcher()
    session = SileroVadSession(
        stream,  # type: ignore[arg-type]
        SpeechSegmenter(),
        16000,
        batcher,  # type: ignore[arg-type]
        EnergyGate(-50.0, settle_frames=2, preroll=1),
    )
    pcm = b"".join([*quiet, loud])
    step = 2 * FRAME * frames_per_chunk
    with trio.fail_after(5):
        for at in range(0, len(pcm), step):
            await session.process(pcm[at : at + step])
    # The first two quiet frames settle the model, five are skipped; the last of them leads
    # into the loud frame, after the context of the one before it.
    assert b"".join(batcher.runs) == b"".join([quiet[0], quiet[1], quiet[7], loud])
    assert batcher.runs[-1].endswith(quiet[7] + loud)
    assert stream.contexts == [quiet[6]]
    assert batcher.skipped == 6  # quiet[2:8]; the pre-roll's probability is not used


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


@pytest.mark.slow
async def test_a_gated_stream_is_scored_the_same_whatever_its_chunking(
    vad: SileroVad, speech: Speech
) -> None:
    pcm = noise(3.0, -58.0, 1) + speech[0] + noise(2.5, -58.0, 2) + speech[2] + noise(2.0, -58.0)
    pieces_by_size = (
        chunks(pcm, 20),
        chunks(pcm, 1000),
        [pcm[i : i + 777] for i in range(0, len(pcm), 777)],
    )
    events: list[list[FeatureEvent]] = []
    probabilities: list[list[float]] = []
    for pieces in pieces_by_size:
        session = vad.open_session(sample_rate=16000, options={})
        assert isinstance(session, SileroVadSession)
        heard: list[float] = []
        push_many = session.segmenter.push_many

        def record(
            probs: Sequence[float], levels: Any = None, push: Any = push_many, heard: Any = heard
        ) -> Any:
            heard.extend(probs)
            return push(probs, levels)

        session.segmenter.push_many = record  # type: ignore[method-assign]
        events.append([event for event, _ in await run(session, pieces)])
        probabilities.append(heard)
    assert events[0] == events[1] == events[2]
    turns = [type(e).__name__ for e in events[0] if isinstance(e, SpeechStarted | SpeechStopped)]
    assert turns == ["SpeechStarted", "SpeechStopped"] * 2
    for other in probabilities[1:]:
        assert np.allclose(other, probabilities[0], atol=1e-4)
    assert vad.statistics().skipped > 100


@pytest.mark.slow
def test_a_context_set_from_the_audio_is_the_one_the_model_keeps(speech: Speech) -> None:
    pytest.importorskip("onnxruntime")
    model = SileroModel.load()
    pcm = speech[1][: 2 * FRAME * 40]
    frames = pcm16_to_float(pcm).reshape(-1, FRAME)
    first = pcm[: 2 * FRAME * 20]
    whole = model.stream().probabilities(frames)
    kept, told, misled = model.stream(), model.stream(), model.stream()
    for stream in (kept, told, misled):
        stream.probabilities(frames[:20])
    told.set_context(first)
    misled.set_context(noise(0.01, -20.0))
    assert kept.probabilities(frames[20:]) == whole[20:]
    assert told.probabilities(frames[20:]) == whole[20:]
    assert misled.probabilities(frames[20:]) != whole[20:]
