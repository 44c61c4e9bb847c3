"""Sessions over an in-memory transport: turns, bad input, limits, degradation."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio

from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendSpec,
    BackendUnavailable,
    LlmBackend,
    LlmRequest,
    NormaliserBackend,
    NormaliseRequest,
    SttBackend,
    SttRequest,
    Transcript,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
)
from scaivoice.engine.testing import AudioReceived

from .conftest import open_session, spoken_ms, tag

SPEECH = b"\x00\x10" * 8000  # 0.5 s of a loud-enough square-ish signal at 16 kHz
SILENCE = b"\x00\x00" * 8000


async def _collect_turn(client: Any, until: str = "state", **fields: Any) -> list[Any]:
    with trio.fail_after(10):
        return await client.receive_until(until, **fields)


# --------------------------------------------------------------------------- handshake


async def test_session_starts_with_effective_config_and_idle_state() -> None:
    async with open_session() as client:
        started = await client.start(speed=1.25, output_sample_rate=16000)
        assert started.protocol == 1
        assert started.session_id.startswith("sess_")
        assert started.config.speed == 1.25
        assert started.audio.output.sample_rate == 16000
        assert started.audio.input.sample_rate == 16000
        assert (await client.receive()).state == "idle"


async def test_frames_before_session_start_get_not_started_and_the_session_waits() -> None:
    async with open_session() as client:
        await client.send_json({"type": "ping"})
        await client.send_raw(b"\x00\x00")
        first, second = await client.receive(), await client.receive()
        assert (first.code, second.code) == ("not_started", "not_started")
        assert not first.fatal
        assert (await client.start()).__struct_config__.tag == "session.started"


async def test_unsupported_protocol_version_closes_with_4426() -> None:
    async with open_session() as client:
        await client.send_json({"type": "session.start", "protocol": 2})
        error = await client.receive()
        assert (error.code, error.fatal) == ("unsupported_protocol", True)
        assert (await client.receive()).__struct_config__.tag == "session.ended"
        await client.transport.closed.wait()
        assert client.transport.close_code == 4426


async def test_unknown_config_key_refuses_the_start_but_not_the_session() -> None:
    async with open_session() as client:
        await client.send_json({"type": "session.start", "protocol": 1, "config": {"sped": 2}})
        error = await client.receive()
        assert error.code == "unknown_config_key"
        assert "sped" in error.message
        assert (await client.start()).__struct_config__.tag == "session.started"


async def test_unknown_voice_is_refused() -> None:
    async with open_session() as client:
        await client.send_json(
            {"type": "session.start", "protocol": 1, "config": {"voice_id": "test-tts:nope"}}
        )
        assert (await client.receive()).code == "unknown_voice"
        started = await client.start(voice_id="test-tts:tone-b")
        assert started.config.voice_id == "test-tts:tone-b"


async def test_start_timeout_closes_with_4408(autojump_clock: Any) -> None:
    async with open_session() as client:
        error = await client.receive()
        assert (error.code, error.fatal) == ("start_timeout", True)
        await client.transport.closed.wait()
        assert client.transport.close_code == 4408


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "text", "text": 42}', "invalid_frame"),
        ('{"type": "text", "text": "hi", "extra": 1}', "invalid_frame"),
        ('{"type": "session.update", "config": {"colour": "red"}}', "unknown_config_key"),
        ('{"type": "session.update", "config": {"speed": 99}}', "invalid_frame"),
        ('{"type": "session.start", "protocol": 1}', "already_started"),
        ('{"type": "tool.result", "call_id": "c1"}', "tools_unavailable"),
        ("[1, 2]", "invalid_frame"),
        (b"\x00\x01\x02", "odd_audio_length"),
    ],
)
async def test_bad_frames_get_a_stable_error_and_the_session_goes_on(
    message: str | bytes, code: str
) -> None:
    async with open_session(start={}) as client:
        await client.receive()  # idle
        await client.send_raw(message)
        error = await client.receive()
        assert tag(error) == "error"
        assert (error.code, error.fatal) == (code, False)
        await client.send_json({"type": "ping", "id": 7})
        assert (await client.receive()).id == 7


async def test_oversized_frames_are_dropped_with_frame_too_large() -> None:
    async with open_session({"session": {"max_frame_bytes": 2048}}, start={}) as client:
        await client.receive()
        await client.send_raw(b"\x00" * 4096)
        assert (await client.receive()).code == "frame_too_large"
        await client.send_raw('{"type": "text", "text": "' + "x" * 4000 + '"}')
        assert (await client.receive()).code == "frame_too_large"


async def test_keys_whose_feature_is_missing_are_accepted_with_a_warning() -> None:
    async with open_session() as client:
        await client.start(diarize=True, vad_enabled=True, tools_enabled=True, normalize_text=True)
        warnings = [await client.receive() for _ in range(4)]
        codes = {w.message.split(":")[0]: w.code for w in warnings}
        # Client vad frames still drive barge-in: limited, not unavailable.
        assert codes == {
            "vad_enabled": "feature_limited",
            "diarize": "feature_unavailable",
            "tools_enabled": "feature_unavailable",
            "normalize_text": "feature_unavailable",
        }
        text = " ".join(w.message for w in warnings)
        for key in ("diarize", "vad_enabled", "tools_enabled", "normalize_text"):
            assert key in text
        assert (await client.receive()).state == "idle"


async def test_options_the_voice_backend_lacks_are_warned_about_by_name() -> None:
    async with open_session(start={}) as client:
        await client.receive()
        await client.send_json(
            {"type": "session.update", "config": {"instructions": "whisper", "speed": 1.5}}
        )
        updated = await client.receive()
        assert tag(updated) == "session.updated"
        assert updated.config.speed == 1.5
        warning = await client.receive()
        assert warning.code == "option_unsupported"
        assert "instructions" in warning.message  # test-tts supports speed, not instructions


async def test_session_end_answers_session_ended_and_closes_1000() -> None:
    async with open_session(start={}) as client:
        await client.receive()
        await client.send_json({"type": "session.end"})
        assert tag(await client.receive()) == "session.ended"
        await client.transport.closed.wait()
        assert client.transport.close_code == 1000


async def test_idle_sessions_are_closed_with_4408(autojump_clock: Any) -> None:
    async with open_session({"session": {"idle_timeout_s": 30}}, start={}) as client:
        await client.receive()
        await trio.sleep(20)
        await client.send_json({"type": "ping"})  # activity resets the timer
        await client.receive()
        before = trio.current_time()
        error = await client.receive(timeout=40)
        assert error.code == "idle_timeout"
        assert trio.current_time() - before == pytest.approx(30, abs=0.1)
        await client.transport.closed.wait()
        assert client.transport.close_code == 4408


async def test_sessions_end_at_their_maximum_duration(autojump_clock: Any) -> None:
    async with open_session(
        {"session": {"max_duration_s": 60, "idle_timeout_s": 1000}}, start={}
    ) as client:
        await client.receive()
        error = await client.receive(timeout=70)
        assert error.code == "max_duration"
        await client.transport.closed.wait()
        assert client.transport.close_code == 4410


async def test_a_client_that_stops_reading_is_closed_with_4420(autojump_clock: Any) -> None:
    from scaivoice.engine.testing import memory_transport_pair, open_test_engine, run_memory_session

    async with open_test_engine({"session": {"slow_client_timeout_s": 5}}) as engine:
        transport, client = memory_transport_pair(capacity=2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.send_json({"type": "session.start", "protocol": 1})
            await client.send_json({"type": "text", "text": "a long reply " * 20})
            # Never read: the server's writer blocks, then gives up.
            with trio.fail_after(60):
                await transport.closed.wait()
            assert transport.close_code == 4420


# --------------------------------------------------------------------------- turns


async def test_a_typed_turn_streams_text_and_paced_audio(invariants: Any) -> None:
    async with open_session(start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hello world"})
        items = await _collect_turn(client, "state", state="idle")
        invariants(items)
        kinds = [tag(i) for i in items]
        assert kinds[0] == "state" and items[0].state == "thinking"
        assert kinds.index("agent.text") < kinds.index("agent.audio.start")
        speaking = next(i for i in items if tag(i) == "state" and i.state == "speaking")
        assert items.index(speaking) < kinds.index("agent.audio.start")
        text = "".join(i.delta for i in items if tag(i) == "agent.text")
        assert text == "You said: hello world."
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert (done.text, done.heard_text, done.interrupted) == (text, text, False)
        audio = b"".join(i.pcm for i in items if isinstance(i, AudioReceived))
        start = next(i for i in items if tag(i) == "agent.audio.start")
        assert start.sample_rate == 24000
        expected_ms = spoken_ms(text)
        assert len(audio) / 2 / 24000 * 1000 == pytest.approx(expected_ms, abs=45)
        audio_done = next(i for i in items if tag(i) == "agent.audio.done")
        assert audio_done.duration_ms == pytest.approx(expected_ms, abs=45)
        metrics = next(i for i in items if tag(i) == "metrics")
        assert metrics.end_of_turn_to_first_audio_ms is not None


async def test_a_spoken_turn_gives_interim_then_final_transcripts(invariants: Any) -> None:
    async with open_session(start={}) as client:
        await client.receive()
        for _ in range(4):
            await client.send_raw(SPEECH)  # 2 s: test-stt gives an interim every 500 ms
        await client.send_json({"type": "audio.commit"})
        items = await _collect_turn(client, "state", state="idle")
        invariants(items)
        transcripts = [i for i in items if tag(i) == "transcript"]
        assert [t.final for t in transcripts][-1] is True
        assert any(not t.final for t in transcripts)
        assert transcripts[-1].text == "hello there"
        assert transcripts[-1].end_ms == 2000
        states = [i.state for i in items if tag(i) == "state"]
        assert states[:2] == ["listening", "thinking"]
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert done.text == "You said: hello there."


async def test_silence_only_turns_get_no_reply(invariants: Any) -> None:
    async with open_session(start={}) as client:
        await client.receive()
        await client.send_raw(SILENCE)
        await client.send_json({"type": "audio.commit"})
        items = await _collect_turn(client, "state", state="idle")
        invariants(items)
        assert [tag(i) for i in items] == ["state", "state", "transcript", "state"]
        assert items[2].text == ""
        await client.send_json({"type": "ping"})
        assert tag(await client.receive()) == "pong"


async def test_input_and_output_rates_are_resampled() -> None:
    async with open_session(
        start={"input_sample_rate": 8000, "output_sample_rate": 16000}
    ) as client:
        await client.receive()
        await client.send_raw(b"\x00\x10" * 8000)  # 1 s at 8 kHz
        await client.send_json({"type": "audio.commit"})
        items = await _collect_turn(client, "state", state="idle")
        final = next(i for i in items if tag(i) == "transcript" and i.final)
        assert final.end_ms == pytest.approx(1000, abs=30)  # STT saw 1 s at 16 kHz
        start = next(i for i in items if tag(i) == "agent.audio.start")
        assert start.sample_rate == 16000
        audio = b"".join(i.pcm for i in items if isinstance(i, AudioReceived))
        expected_ms = spoken_ms("You said: hello there.")
        assert len(audio) / 2 / 16000 * 1000 == pytest.approx(expected_ms, abs=45)


async def test_audio_is_paced_to_real_time_with_the_configured_lead(autojump_clock: Any) -> None:
    async with open_session({"session": {"audio_lead_ms": 300}}, start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "x" * 60})  # reply ~ 3.3 s of audio
        items = await client.receive_until("agent.audio.start")
        began = trio.current_time()
        await client.receive_until("agent.audio.done")
        elapsed_ms = (trio.current_time() - began) * 1000
        audio_ms = spoken_ms("You said: " + "x" * 60 + ".")
        assert elapsed_ms == pytest.approx(audio_ms - 300 - 40, abs=60)
        assert items


async def test_user_turns_longer_than_the_cap_are_split(invariants: Any) -> None:
    async with open_session({"session": {"max_user_turn_s": 1}}, start={}) as client:
        await client.receive()
        for _ in range(3):
            await client.send_raw(SPEECH)
        items = await _collect_turn(client, "agent.text.done")
        invariants(items)
        warning = next(i for i in items if tag(i) == "warning")
        assert warning.code == "user_turn_too_long"
        final = next(i for i in items if tag(i) == "transcript" and i.final)
        assert final.end_ms == 1000


# --------------------------------------------------------------------------- degradation


class FlakyTts(TtsBackend):
    """Fails its first ``failures`` calls, then speaks a short tone."""

    class Options(BackendOptions, frozen=True):
        failures: int = 1

    capabilities = TtsCapabilities(streaming=True, voices=False)

    def __init__(self, options: Options) -> None:
        self.remaining = options.failures

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        async with audio:
            if self.remaining > 0:
                self.remaining -= 1
                raise BackendUnavailable("synthesis server is down", backend=self.name)
            await audio.send(AudioChunk(b"\x01\x00" * 2400, 24000))


class BrokenLlm(LlmBackend):
    """Raises a plain exception (a bug) on its first call, then answers."""

    class Options(BackendOptions, frozen=True):
        pass

    def __init__(self, options: Options) -> None:
        self.calls = 0

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        self.calls += 1
        async with deltas:
            if self.calls == 1:
                raise RuntimeError("model exploded")
            await deltas.send("Recovered.")


class DeadStt(SttBackend):
    class Options(BackendOptions, frozen=True):
        pass

    def __init__(self, options: Options) -> None:
        pass

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        async with results:
            raise BackendUnavailable("recogniser unreachable", backend=self.name)


async def test_a_failing_tts_degrades_to_text_and_audio_resumes(invariants: Any) -> None:
    spec = BackendSpec.for_class(FlakyTts, name="flaky-tts")
    async with open_session({"backends": {"tts": "flaky-tts"}}, specs=[spec], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "first"})
        items = await _collect_turn(client, "state", state="idle")
        invariants(items)
        kinds = [tag(i) for i in items]
        assert "audio" not in kinds and "agent.audio.start" not in kinds
        assert next(i for i in items if tag(i) == "warning").code == "tts_unavailable"
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert done.text == "You said: first." and not done.interrupted
        assert "speaking" in [i.state for i in items if tag(i) == "state"]
        await client.send_json({"type": "text", "text": "second"})
        items = await _collect_turn(client, "state", state="idle")
        assert "audio" in [tag(i) for i in items]


async def test_an_llm_bug_is_an_error_event_and_the_session_goes_on(invariants: Any) -> None:
    spec = BackendSpec.for_class(BrokenLlm, name="broken-llm")
    async with open_session({"backends": {"llm": "broken-llm"}}, specs=[spec], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        items = await _collect_turn(client, "state", state="idle")
        invariants(items)
        error = next(i for i in items if tag(i) == "error")
        assert (error.code, error.fatal) == ("llm_failed", False)
        await client.send_json({"type": "text", "text": "again"})
        items = await _collect_turn(client, "agent.text.done")
        assert items[-1].text == "Recovered."


async def test_a_failing_stt_is_an_error_and_the_session_returns_to_idle() -> None:
    spec = BackendSpec.for_class(DeadStt, name="dead-stt")
    async with open_session({"backends": {"stt": "dead-stt"}}, specs=[spec], start={}) as client:
        await client.receive()
        await client.send_raw(SPEECH)
        with trio.fail_after(5):
            items = await client.receive_until("error")
        for _ in range(5):  # audio after the stream failed is dropped, not a crash
            await client.send_raw(SPEECH)
        await client.send_json({"type": "audio.commit"})
        items += await _collect_turn(client, "state", state="idle")
        error = next(i for i in items if tag(i) == "error")
        assert (error.code, error.fatal) == ("stt_failed", False)
        await client.send_json({"type": "text", "text": "typed instead"})
        items = await _collect_turn(client, "agent.text.done")
        assert items[-1].text == "You said: typed instead."


async def test_wake_word_mode_ignores_audio_until_a_wake(invariants: Any) -> None:
    async with open_session(start={"wake_word_enabled": True}) as client:
        assert (await client.receive()).code == "feature_limited"  # no server-side detector
        assert (await client.receive()).state == "idle"
        await client.send_raw(SPEECH)
        await client.send_json({"type": "ping"})
        assert tag(await client.receive()) == "pong"  # the audio opened no turn
        await client.send_json({"type": "wake", "confidence": 0.9})
        await client.send_raw(SPEECH)
        await client.send_json({"type": "audio.commit"})
        items = await _collect_turn(client, "state", state="idle")
        invariants(items)
        assert [i.state for i in items if tag(i) == "state"][:2] == ["listening", "thinking"]
        assert next(i for i in items if tag(i) == "transcript" and i.final).end_ms == 500
        # Asleep again after the reply.
        await client.send_raw(SPEECH)
        await client.send_json({"type": "ping"})
        assert tag(await client.receive()) == "pong"


async def test_client_vad_frames_segment_user_turns(invariants: Any) -> None:
    async with open_session(start={}) as client:
        await client.receive()
        await client.send_json({"type": "vad", "speaking": False})  # announces client VAD
        await client.send_raw(SILENCE)  # not speech: opens nothing, kept as pre-roll
        await client.send_json({"type": "vad", "speaking": True})
        await client.send_raw(SPEECH)
        await client.send_json({"type": "vad", "speaking": False})
        items = await _collect_turn(client, "state", state="idle")
        invariants(items)
        final = next(i for i in items if tag(i) == "transcript" and i.final)
        assert final.end_ms == 300 + 500  # 300 ms of pre-roll + the speech
        assert (
            next(i for i in items if tag(i) == "agent.text.done").text == "You said: hello there."
        )


async def test_session_update_applies_to_the_next_turn() -> None:
    async with open_session(start={}) as client:
        await client.receive()
        await client.send_json(
            {"type": "session.update", "config": {"voice_id": "test-tts:tone-b", "speed": 2.0}}
        )
        updated = await client.receive()
        assert (updated.config.voice_id, updated.config.speed) == ("test-tts:tone-b", 2.0)
        await client.send_json({"type": "text", "text": "hi"})
        items = await _collect_turn(client, "agent.audio.done")
        # test-tts honours speed natively: half the duration of a normal-speed reply.
        assert items[-1].duration_ms == pytest.approx(spoken_ms("You said: hi.") / 2, abs=45)


class RecordingNormaliser(NormaliserBackend):
    """Upper-cases, records requests; raises a plain bug on "boom"."""

    class Options(BackendOptions, frozen=True):
        pass

    requests: ClassVar[list[NormaliseRequest]] = []

    def __init__(self, options: Options) -> None:
        pass

    async def normalise(self, text: str, request: NormaliseRequest) -> str:
        type(self).requests.append(request)
        if "boom" in text:
            raise ValueError("normaliser bug")
        return text.upper()


async def test_the_normaliser_gets_the_tenant_lexicon_and_its_bugs_only_warn() -> None:
    spec = BackendSpec.for_class(RecordingNormaliser, name="recording")
    overrides = {
        "backends": {"normaliser": "recording"},
        "lexicon": {"ScaiVoice": "sky voice"},
        "tenants": {"default": {"lexicon": {"SQL": "sequel"}}},
    }
    RecordingNormaliser.requests = []
    async with open_session(overrides, specs=[spec], start={"normalize_text": True}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        await _collect_turn(client, "state", state="idle")
        assert RecordingNormaliser.requests[0].lexicon == {
            "ScaiVoice": "sky voice",
            "SQL": "sequel",
        }
        await client.send_json({"type": "text", "text": "boom"})
        items = await _collect_turn(client, "state", state="idle")
        assert next(i for i in items if tag(i) == "warning").code == "normaliser_failed"
        assert "audio" in [tag(i) for i in items]  # spoken as written
