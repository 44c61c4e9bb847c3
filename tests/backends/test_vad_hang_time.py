"""The VAD's hang time is what is configured, counted from where the speech really ends (slow).

Hibari's sentences, after 1 s and before 1.5 s of a room: digital silence, or white noise at
-58 dBFS (a quiet room) or -47 dBFS, streamed in 20 ms chunks as a client would. The real end
of each sentence is measured on the clean speech: the end of its last 10 ms that stands out of
the room (at least 6 dB above the noise) and is within 40 dB of the sentence's loudest 10 ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pytest
import trio

from scaivoice.engine import SpeechStopped, float_to_pcm16, pcm16_to_float
from scaivoice.plugins.silero_vad import SileroVad

from ._support import Speech

RATE = 16000
CHUNK_MS = 20
LEAD_MS, TAIL_MS = 1000, 1500
TOLERANCE_MS = 40


def real_end_ms(clean: npt.NDArray[np.float64], noise_dbfs: float | None) -> int:
    windows = clean[: len(clean) // 160 * 160].reshape(-1, 160)
    levels = 10 * np.log10((windows**2).mean(axis=1) + 1e-12)
    floor = -np.inf if noise_dbfs is None else noise_dbfs + 6.0
    loud = np.nonzero(levels > max(levels.max() - 40.0, floor))[0]
    return int(loud[-1] + 1) * 10


@pytest.fixture
async def vad() -> AsyncIterator[SileroVad]:
    pytest.importorskip("onnxruntime")
    async with SileroVad.from_mapping({}) as feature:
        yield feature


@pytest.mark.slow
@pytest.mark.parametrize("noise_dbfs", [None, -58.0, -47.0], ids=["silence", "-58dBFS", "-47dBFS"])
@pytest.mark.parametrize("hang_ms", [300, 500])
async def test_speech_stops_the_hang_time_after_its_real_end(
    vad: SileroVad, speech: Speech, noise_dbfs: float | None, hang_ms: int
) -> None:
    rng = np.random.default_rng(7)
    misses: list[str] = []
    for index in range(5):
        clean = pcm16_to_float(speech[index]).astype(np.float64)
        signal = np.concatenate(
            [np.zeros(RATE * LEAD_MS // 1000), clean, np.zeros(RATE * TAIL_MS // 1000)]
        )
        if noise_dbfs is not None:
            signal += rng.normal(0.0, 10 ** (noise_dbfs / 20), len(signal))
        pcm = float_to_pcm16(signal)
        end_ms = LEAD_MS + real_end_ms(clean, noise_dbfs)
        session = vad.open_session(sample_rate=RATE, options={"min_silence_ms": hang_ms})
        step = RATE * CHUNK_MS // 1000 * 2
        stops: list[tuple[SpeechStopped, int]] = []
        with trio.fail_after(30):
            for at in range(0, len(pcm), step):
                for event in await session.process(pcm[at : at + step]):
                    if isinstance(event, SpeechStopped):  # arrives with this chunk's end
                        stops.append((event, (at + step) // 2 * 1000 // RATE))
        assert stops, f"sentence {index}: speech never stopped"
        stop, arrived_ms = stops[-1]
        waited = arrived_ms - end_ms
        if abs(waited - hang_ms) > TOLERANCE_MS or abs(stop.at_ms - end_ms) > TOLERANCE_MS:
            misses.append(f"sentence {index}: waited {waited} ms, dated {stop.at_ms - end_ms:+d}")
    assert misses == []
