"""`scaivoice wyoming`: the engine as a Wyoming server, driven by the wyoming package's own
asyncio client (AsyncTcpClient, in a worker thread) over loopback.

The fast tests run the server in-process on the deterministic test backends; the slow ones on
the embedded models (whisper, hibari, microWakeWord) and as the real `scaivoice wyoming`
command in a subprocess.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

pytest.importorskip("wyoming")

from wyoming.asr import Transcribe, Transcript, TranscriptChunk
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)
from wyoming.wake import Detect, Detection

from scaivoice.backends.echo_llm import EchoLlm
from scaivoice.backends.testing import TestStt, TestTts
from scaivoice.engine import AudioChunk as BackendAudio
from scaivoice.engine import (
    BackendRejected,
    BackendSpec,
    BackendUnavailable,
    ConfigError,
    PluginHost,
    SttRequest,
    TtsRequest,
)
from scaivoice.engine import Transcript as BackendTranscript
from scaivoice.engine._host.config import config_from_mapping
from scaivoice.engine._wyoming.audio import AudioFormat, PcmConverter
from scaivoice.engine._wyoming.framing import (
    EventDecoder,
    FramingError,
    encode_event,
)
from scaivoice.engine._wyoming.server import parse_uri, serve_wyoming
from scaivoice.engine._wyoming.service import ERROR_CODES

from .conftest import host_with, spoken_ms

TEST_BACKENDS = {"backends": {"stt": "test-stt", "tts": "test-tts"}}
SPEECH_TONE = 0.3  # test-stt hears anything above 1 % of full scale as speech


# --------------------------------------------------------------------------- the client side


@dataclass(frozen=True, slots=True)
class Received:
    """An event from the server and when it arrived (seconds after the last event was sent)."""

    event: Event
    after_s: float


def _exchange(
    port: int,
    events: Sequence[Event],
    until: Callable[[Event], bool],
    *,
    pace_s: float = 0.0,
) -> list[Received]:
    """Connect with wyoming's AsyncTcpClient, send ``events``, read until ``until(event)``
    (or the server closes). Runs its own asyncio loop: call it in a worker thread."""

    async def main() -> list[Received]:
        client = AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=60)
        async with client:
            sent = time.perf_counter()
            for index, event in enumerate(events):
                if pace_s and index:
                    await asyncio.sleep(pace_s)  # a live microphone: one chunk at a time
                await client.write_event(event)
                sent = time.perf_counter()
            got: list[Received] = []
            while True:
                answer = await client.read_event()
                if answer is None:
                    return got
                got.append(Received(answer, time.perf_counter() - sent))
                if until(answer):
                    return got

    return asyncio.run(main())


async def exchange(
    port: int,
    events: Sequence[Event],
    until: Callable[[Event], bool] | str,
    *,
    pace_s: float = 0.0,
) -> list[Received]:
    """:func:`_exchange` from trio (a worker thread)."""
    done = (lambda e: e.type == until) if isinstance(until, str) else until
    run = partial(_exchange, port, list(events), done, pace_s=pace_s)
    return await trio.to_thread.run_sync(run, abandon_on_cancel=True)


def types(received: Sequence[Received]) -> list[str]:
    return [r.event.type for r in received]


def audio_events(pcm: bytes, rate: int, *, chunk_samples: int = 1024) -> list[Event]:
    """``audio-start``, ``audio-chunk``s, ``audio-stop`` of mono PCM16 as a satellite sends them."""
    step = chunk_samples * 2
    events = [AudioStart(rate=rate, width=2, channels=1).event()]
    events += [
        AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i : i + step]).event()
        for i in range(0, len(pcm), step)
    ]
    return [*events, AudioStop().event()]


def tone(seconds: float, rate: int = 16000, hz: float = 220.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (SPEECH_TONE * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def played(received: Sequence[Received]) -> tuple[int, bytes]:
    """(the announced rate, the audio) of one audio-start ... audio-stop; checks every chunk
    came at the announced rate, in the announced format."""
    events = [r.event for r in received]
    starts = [AudioStart.from_event(e) for e in events if AudioStart.is_type(e.type)]
    assert len(starts) == 1
    start = starts[0]
    assert (start.width, start.channels) == (2, 1)
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert chunks
    assert {(c.rate, c.width, c.channels) for c in chunks} == {(start.rate, 2, 1)}
    assert events.index(starts[0].event()) < events.index(chunks[0].event())
    assert AudioStop.is_type(events[-1].type)
    return start.rate, b"".join(c.audio for c in chunks)


# --------------------------------------------------------------------------- the server side


@asynccontextmanager
async def wyoming_server(
    config: dict[str, Any] | None = None, host: PluginHost | None = None
) -> AsyncIterator[int]:
    """An in-process server on a free loopback port; yields the port."""
    host = host or host_with(BackendSpec.for_class(EchoLlm, name="echo"))
    engine_config = config_from_mapping(config or TEST_BACKENDS)
    async with trio.open_nursery() as nursery:
        uri = await nursery.start(
            partial(
                serve_wyoming,
                engine_config,
                host,
                uri="tcp://127.0.0.1:0",
                shutdown_trigger=trio.sleep_forever,
            )
        )
        yield parse_uri(uri).port
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- fast: test backends


async def test_describe_lists_the_recogniser_and_every_voice_of_the_library() -> None:
    async with wyoming_server() as port:
        received = await exchange(port, [Describe().event()], "info")
    info = Info.from_event(received[-1].event)
    assert [p.name for p in info.asr] == ["scaivoice"]
    assert [(m.name, m.languages) for m in info.asr[0].models] == [("test-stt", ["en"])]
    assert info.asr[0].supports_transcript_streaming  # test-stt gives interim results
    voices = {v.name: v for v in info.tts[0].voices}
    assert set(voices) == {"test-tts:tone-a", "test-tts:tone-b"}
    assert all(v.languages == ["en"] and v.installed for v in voices.values())
    assert voices["test-tts:tone-a"].description == "Test tone 440 Hz (test-tts)"
    assert info.tts[0].supports_synthesize_streaming
    assert info.wake == []  # no wake-word feature in this host


async def test_transcribe_streams_interims_then_the_transcript() -> None:
    config = {"backends": {**TEST_BACKENDS["backends"], "options": {}}}
    config["backends"]["options"] = {"test-stt": {"transcripts": ["turn on the kitchen light"]}}
    async with wyoming_server(config) as port:
        events = [Transcribe(language="en").event(), *audio_events(tone(1.5), 16000)]
        received = await exchange(port, events, "transcript-stop")
    kinds = types(received)
    assert kinds[0] == "transcript-start"
    assert kinds[-2:] == ["transcript", "transcript-stop"]
    chunks = [
        TranscriptChunk.from_event(r.event).text
        for r in received
        if r.event.type == "transcript-chunk"
    ]
    assert chunks[0] == "turn on"  # test-stt's interim: half the words
    assert chunks[-1] == "turn on the kitchen light"  # the last chunk is the final text
    final = Transcript.from_event(received[-2].event)
    assert (final.text, final.language) == ("turn on the kitchen light", "en")


async def test_audio_is_converted_from_any_pcm_format_a_satellite_sends() -> None:
    """48 kHz stereo 32-bit audio, without a transcribe event or an audio-start (both are
    optional for Wyoming clients): transcribed like 16 kHz mono."""
    mono = np.frombuffer(tone(1.0, rate=48000), dtype="<i2").astype("<i4") << 16
    stereo = np.repeat(mono, 2).astype("<i4").tobytes()
    chunks = [
        AudioChunk(rate=48000, width=4, channels=2, audio=stereo[i : i + 7000]).event()
        for i in range(0, len(stereo), 7000)  # chunks end mid-frame
    ]
    async with wyoming_server() as port:
        received = await exchange(port, [*chunks, AudioStop().event()], "transcript")
    assert Transcript.from_event(received[-1].event).text == "hello there"


async def test_synthesize_sends_audio_at_the_announced_rate() -> None:
    text = "The kitchen light is on. The heating is set to twenty degrees."
    async with wyoming_server() as port:
        voice = SynthesizeVoice(name="test-tts:tone-b")
        received = await exchange(port, [Synthesize(text=text, voice=voice).event()], "audio-stop")
    rate, pcm = played(received)
    assert rate == 24000
    assert len(pcm) / 2 / rate * 1000 == pytest.approx(spoken_ms(text), abs=50)
    timestamps = [
        AudioChunk.from_event(r.event).timestamp or 0
        for r in received
        if r.event.type == "audio-chunk"
    ]
    assert timestamps == sorted(timestamps) and timestamps[0] == 0


async def test_streaming_synthesis_speaks_each_sentence_as_its_text_arrives() -> None:
    sentences = ["The front door is locked.", " The garage is open.", " Shall I close it?"]
    events = [
        SynthesizeStart(voice=SynthesizeVoice(name="tone-b")).event(),  # a bare voice name
        *(SynthesizeChunk(text=s).event() for s in sentences),
        Synthesize(text="".join(sentences)).event(),  # for old servers: not spoken again
        SynthesizeStop().event(),
    ]
    async with wyoming_server() as port:
        received = await exchange(port, events, "synthesize-stopped")
    kinds = types(received)
    assert kinds[-1] == "synthesize-stopped"
    assert kinds.count("audio-start") == kinds.count("audio-stop") == 3  # one per sentence
    pcm = b"".join(
        AudioChunk.from_event(r.event).audio for r in received if r.event.type == "audio-chunk"
    )
    expected = sum(spoken_ms(s) for s in sentences)
    assert len(pcm) / 2 / 24000 * 1000 == pytest.approx(expected, abs=100)


async def test_bad_input_gets_error_events_and_the_connection_goes_on() -> None:
    width3 = [
        AudioStart(rate=16000, width=3, channels=1).event(),
        *(AudioChunk(rate=16000, width=3, channels=1, audio=b"\0" * 960).event() for _ in range(5)),
        AudioStop().event(),
    ]
    events = [
        Event(type="recognize", data={"text": "turn on the light"}),  # intents: not served
        *width3,  # one error for the stream, not one per chunk
        Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody:nothing")).event(),
        Event(type="synthesize", data={"voice": {"name": "tone-a"}}),  # no text
        Synthesize(text="Hello.", text_format="ssml").event(),
        Event(type="synthesize-chunk", data={"text": "no start"}),
        AudioStop().event(),  # no stream
        Detect(names=["hey_jarvis"]).event(),  # no wake-word feature here
        *audio_events(tone(0.2), 16000),
        Ping(text="still there?").event(),
    ]
    async with wyoming_server() as port:
        received = await exchange(port, events, "pong")
    errors = [Error.from_event(r.event) for r in received if r.event.type == "error"]
    assert [e.code for e in errors] == [
        "unknown_event",
        "unsupported_audio_format",
        "unknown_voice",
        "invalid_event",
        "unsupported_text_format",
        "unexpected_event",
        "unexpected_event",
        "wake_word_unavailable",
    ]
    assert {e.code for e in errors} <= ERROR_CODES
    assert "nobody:nothing" in errors[2].text
    assert received[-1].event.data == {"text": "still there?"}
    assert types(received) == ["error"] * len(errors) + ["pong"]


class BreakingTts(TestTts):
    """test-tts whose voice server goes away after the first chunk of a piece saying "Break"."""

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[BackendAudio]
    ) -> None:
        if "Break" not in request.text:
            await super().synthesize(request, audio)
            return
        async with audio:
            await audio.send(BackendAudio(b"\x10\x00" * 2400, 24000))
            raise BackendUnavailable("the voice server went away", backend=self.name)


class RefusingStt(TestStt):
    """test-stt that refuses the audio once it has some."""

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[BackendTranscript],
    ) -> None:
        async with audio, results:
            await audio.receive()
            raise BackendRejected("this recogniser does not speak Klingon", backend=self.name)


async def test_a_backend_failing_mid_request_is_an_error_event() -> None:
    host = host_with(
        BackendSpec.for_class(EchoLlm, name="echo"),
        BackendSpec.for_class(BreakingTts, name="breaking-tts"),
        BackendSpec.for_class(RefusingStt, name="refusing-stt"),
    )
    config = {"backends": {"stt": "refusing-stt", "tts": "breaking-tts"}}
    async with wyoming_server(config, host) as port:
        once = await exchange(
            port, [Synthesize(text="Hello. Break. Never said.").event()], "audio-stop"
        )
        streamed = await exchange(
            port,
            [
                SynthesizeStart().event(),
                SynthesizeChunk(text="Hello there. Break now. Never said. ").event(),
                SynthesizeStop().event(),
            ],
            "synthesize-stopped",
        )
        heard = await exchange(port, [*audio_events(tone(1.0), 16000), Ping().event()], "pong")
    # what was said so far, the error, then the audio closed
    assert types(once)[-2:] == ["error", "audio-stop"]
    error = Error.from_event(once[-2].event)
    assert error.code == "backend_unavailable" and "went away" in error.text
    kinds = types(streamed)
    assert (
        kinds.count("audio-start") == kinds.count("audio-stop") == 2
    )  # "Hello there." and the broken piece
    assert kinds[-3:] == ["error", "audio-stop", "synthesize-stopped"]
    assert types(heard) == ["error", "pong"]  # one error, though the audio kept coming
    assert Error.from_event(heard[0].event).code == "backend_rejected"


async def test_too_much_audio_or_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {**TEST_BACKENDS, "voice_notes": {"max_audio_s": 1.0, "max_input_chars": 20}}
    async with wyoming_server(config) as port:
        received = await exchange(
            port,
            [*audio_events(tone(2.0), 16000), Synthesize(text="x" * 21).event(), Ping().event()],
            "pong",
        )
    codes = [Error.from_event(r.event).code for r in received if r.event.type == "error"]
    assert codes == ["audio_too_long", "input_too_long"]
    assert "transcript" not in types(received)


async def test_bytes_that_are_not_events_close_the_connection_after_an_error() -> None:
    async with wyoming_server() as port:
        for garbage, code in [
            (b"this is not json\n", "invalid_event"),
            (b'{"type": "audio-chunk", "payload_length": 99999999999}\n', "event_too_large"),
            (b"x" * 70_000, "event_too_large"),  # a header line that never ends
        ]:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(garbage)
                answer = b""
                while chunk := await stream.receive_some(4096):
                    answer += chunk  # until the server closes
            decoder = EventDecoder()
            decoder.feed(answer)
            (event,) = decoder.events()
            assert Error.from_event(event).code == code


async def test_a_client_leaving_mid_stream_ends_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaivoice.wyoming")
    async with wyoming_server() as port:
        for events in (
            audio_events(tone(0.5), 16000)[:-1],  # no audio-stop
            [SynthesizeStart().event(), SynthesizeChunk(text="One. Two. Three. ").event()],
            [Synthesize(text="A long sentence that is never heard. " * 20).event()],
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"".join(encode_event(e) for e in events))
            await stream.aclose()
        received = await exchange(port, [Describe().event()], "info")
    assert types(received) == ["info"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_idle_connection_is_closed(autojump_clock: Any) -> None:
    async with wyoming_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            started = trio.current_time()
            assert await stream.receive_some(4096) == b""  # closed by the server
        assert trio.current_time() - started == pytest.approx(300, abs=1)


async def test_listening_beyond_loopback_needs_allow_remote() -> None:
    config = config_from_mapping(TEST_BACKENDS)
    with pytest.raises(ConfigError, match="allow-remote"):
        await serve_wyoming(config, host_with(), uri="tcp://0.0.0.0:10300")
    for bad in ("stdio://", "tcp://127.0.0.1", "http://127.0.0.1:10300", "unix://"):
        with pytest.raises(ConfigError):
            parse_uri(bad)
    assert parse_uri("tcp://[::1]:10300").uri() == "tcp://[::1]:10300"


async def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "wyoming.sock"
    config = config_from_mapping(TEST_BACKENDS)
    host = host_with(BackendSpec.for_class(EchoLlm, name="echo"))
    async with trio.open_nursery() as nursery:
        uri = await nursery.start(
            partial(
                serve_wyoming,
                config,
                host,
                uri=f"unix://{path}",
                shutdown_trigger=trio.sleep_forever,
            )
        )
        assert uri == f"unix://{path}"
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(encode_event(Ping(text="hi").event()))
            decoder = EventDecoder()
            while not (events := list(decoder.events())):
                decoder.feed(await stream.receive_some(4096))
        assert events[0].type == "pong"
        nursery.cancel_scope.cancel()
    assert not path.exists()


# --------------------------------------------------------------------------- sans-IO pieces


def test_the_decoder_reads_what_the_package_writes_in_any_split() -> None:
    events = [
        Describe().event(),
        AudioChunk(rate=16000, width=2, channels=1, audio=bytes(range(256)) * 8).event(),
        Transcript(text="héllo wörld", language="de").event(),
        Event(type="x-empty"),
    ]
    wire = b"".join(encode_event(e) for e in events)
    assert b'"data_length"' in wire  # the package puts data after the header line
    for step in (1, 7, len(wire)):
        decoder = EventDecoder()
        out: list[Event] = []
        for i in range(0, len(wire), step):
            decoder.feed(wire[i : i + step])
            out += decoder.events()
        assert [(e.type, e.data, e.payload) for e in out] == [
            (e.type, e.data, e.payload) for e in events
        ]
        assert decoder.pending == 0


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"[1, 2]\n", "invalid_event"),
        (b'{"data": {}}\n', "invalid_event"),
        (b'{"type": "x", "data": [1]}\n', "invalid_event"),
        (b'{"type": "x", "data_length": -1}\n', "invalid_event"),
        (b'{"type": "x", "data_length": 3}\n[1]', "invalid_event"),
        (b'{"type": "x", "payload_length": 1e3}\n', "invalid_event"),
        (b'{"type": "x", "data_length": 99999999}\n', "event_too_large"),
    ],
)
def test_the_decoder_refuses_malformed_events(wire: bytes, code: str) -> None:
    decoder = EventDecoder()
    decoder.feed(wire)
    with pytest.raises(FramingError) as caught:
        list(decoder.events())
    assert caught.value.code == code


def test_the_converter_downmixes_rescales_and_resamples() -> None:
    samples = np.array([1000, -1000] * 24000, dtype="<i2")  # 1 s at 48 kHz of stereo frames
    wide = (samples.astype("<i4") << 16).tobytes()
    converter = PcmConverter(AudioFormat(48000, 4, 2), 16000)
    out = converter.convert(wide[:1001]) + converter.convert(wide[1001:]) + converter.flush()
    assert abs(len(out) // 2 - 8000) <= 2  # 0.5 s of frames at 16 kHz
    assert np.abs(np.frombuffer(out, dtype="<i2")[100:-100]).max() <= 1  # L and R cancel
    assert converter.ms_in == pytest.approx(500.0)
    unsigned = PcmConverter(AudioFormat(16000, 1, 1), 16000)
    assert np.frombuffer(unsigned.convert(bytes([128, 255, 0])), dtype="<i2").tolist() == [
        0,
        127 << 8,
        -128 << 8,
    ]


# --------------------------------------------------------------------------- slow: real models


def _wav(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


EMBEDDED = {
    "backends": {
        "stt": "whisper",
        "tts": "hibari",
        "options": {"hibari": {"seed": 0}},
    }
}


def _builtins() -> PluginHost:
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    return host


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_embedded_models_speak_and_transcribe_over_wyoming() -> None:
    """hibari speaks a sentence over Wyoming; the WAV of what it said goes back over Wyoming
    at its own rate (24 kHz) and whisper hears the words. Prints the latencies."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("hibari")
    text = "Turn off the living room lights."
    async with wyoming_server(EMBEDDED, _builtins()) as port:
        info = Info.from_event((await exchange(port, [Describe().event()], "info"))[-1].event)
        assert "hibari:heart" in {v.name for v in info.tts[0].voices}
        await exchange(port, [Synthesize(text="Warm up.").event()], "audio-stop")  # first-use costs
        spoken = await exchange(port, [Synthesize(text=text).event()], "audio-stop")
        rate, pcm = played(spoken)
        assert rate == 24000
        seconds = len(pcm) / 2 / rate
        assert 1.0 < seconds < 3.0
        first_chunk_s = next(r.after_s for r in spoken if r.event.type == "audio-chunk")

        with wave.open(io.BytesIO(_wav(pcm, rate))) as clip:  # a WAV file, as a satellite has
            frames = clip.readframes(clip.getnframes())
        clip_3s = (frames + b"\0\0" * rate * 3)[: rate * 3 * 2]  # exactly 3 s
        await exchange(port, audio_events(clip_3s, rate), "transcript")  # first-use costs
        latencies = {}
        for label, pace_s in (("sent at once", 0.0), ("streamed in real time", 1024 / rate)):
            heard = await exchange(
                port,
                [Transcribe(language="en").event(), *audio_events(clip_3s, rate)],
                "transcript-stop",
                pace_s=pace_s,
            )
            assert types(heard)[-2:] == ["transcript", "transcript-stop"]
            final = Transcript.from_event(heard[-2].event)
            assert {"turn", "living", "room", "lights"} <= _words(final.text), final.text
            latencies[label] = heard[-2].after_s
    print(
        f"\nwyoming on the embedded models: synthesize: first audio chunk "
        f"{first_chunk_s * 1000:.0f} ms after the request ({seconds:.2f} s of speech); "
        "transcribe a 3 s clip: transcript "
        + ", ".join(f"{s * 1000:.0f} ms after audio-stop {how}" for how, s in latencies.items())
    )


def wake_answer(event: Event) -> bool:
    return event.type in ("detection", "not-detected", "error")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_wake_word_detection_on_generated_speech() -> None:
    pytest.importorskip("pymicro_wakeword")
    pytest.importorskip("hibari")
    from scaivoice.conformance.bench.wake import render

    host = _builtins()
    sentences = [
        "Hey Jarvis, what time is it?",
        "Hey Mycroft, turn on the lights.",
        "Could you set a timer?",
    ]
    rendered, skipped = await render(host, ["hibari:heart"], sentences)
    assert not skipped
    wake, mycroft, other = (r.pcm for r in rendered)
    silence = b"\0\0" * 8000
    config = {"backends": {"stt": "test-stt", "tts": "test-tts"}}
    async with wyoming_server(config, host) as port:
        info = Info.from_event((await exchange(port, [Describe().event()], "info"))[-1].event)
        models = {m.name: m for m in info.wake[0].models}
        assert {"hey_jarvis", "hey_mycroft"} <= set(models)
        assert models["hey_jarvis"].phrase == "Hey Jarvis"

        detect = Detect(names=["hey_jarvis"]).event()
        heard = await exchange(
            port, [detect, *audio_events(silence + wake + silence, 16000)], wake_answer
        )
        detection = Detection.from_event(heard[-1].event)
        assert detection.name == "hey_jarvis"
        assert (
            detection.timestamp is not None
            and 500 < detection.timestamp < 500 + len(wake) // 32 + 600
        )

        default = await exchange(  # no names: the feature's default keyword (hey_mycroft)
            port, [Detect().event(), *audio_events(silence + mycroft + silence, 16000)], wake_answer
        )
        assert Detection.from_event(default[-1].event).name == "hey_mycroft"
        missed = await exchange(
            port,
            [detect, *audio_events(silence + other + silence, 16000)],
            wake_answer,
        )
        assert types(missed) == ["not-detected"]
        unknown = await exchange(
            port, [Detect(names=["okay_computer"]).event(), *audio_events(silence, 16000)], "error"
        )
        assert Error.from_event(unknown[-1].event).code == "unknown_wake_word"


@pytest.mark.slow  # a subprocess: the real command
async def test_the_scaivoice_wyoming_command(tmp_path: Path) -> None:
    config = tmp_path / "scaivoice.toml"
    config.write_text('[backends]\nstt = "test-stt"\nllm = "llama-cpp"\ntts = "test-tts"\n')
    command = [sys.executable, "-m", "scaivoice.engine.cli", "wyoming"]
    command += ["--uri", "tcp://127.0.0.1:0", "--config", str(config)]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        log = b""
        with trio.fail_after(60):
            while not (match := re.search(rb"serving tcp://127\.0\.0\.1:(\d+)", log)):
                chunk = await process.stderr.receive_some(4096)
                assert chunk, log.decode(errors="replace")
                log += chunk
        port = int(match.group(1))
        received = await exchange(port, [Describe().event()], "info")
        info = json.dumps(received[-1].event.data)
        assert "test-stt" in info and "test-tts:tone-a" in info
    finally:
        process.terminate()
        with trio.move_on_after(20, shield=True):
            await process.wait()
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0
