"""The OpenAI Realtime-compatible endpoint (``/v1/realtime``): the real server on loopback, driven
by the official ``openai`` SDK's realtime client.

The SDK is asyncio: each test's client runs as one asyncio coroutine (a scenario) in a worker
thread, under its own deadline, while the server runs in the test's trio loop. The fast tests use
the deterministic test backends; the slow ones speak to the embedded models (Whisper, Silero VAD,
hibari) with hibari's own speech.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import trio
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from trio_websocket import ConnectionClosed, open_websocket_url

from scaivoice.conformance.bench.realtime import measure_realtime
from scaivoice.engine import (
    PluginHost,
    config_from_mapping,
    float_to_pcm16,
    frames,
    hash_key,
    serve,
)
from scaivoice.engine.testing import test_engine_config

from .backends._wer import word_errors
from .conftest import host_with, spoken_ms

T = TypeVar("T")

RATE = 24000
MODEL = "gpt-realtime"
MANUAL = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
Scenario = Callable[[AsyncRealtimeConnection], Awaitable[T]]


# --------------------------------------------------------------------------- harness


@asynccontextmanager
async def realtime_server(
    overrides: dict[str, Any] | None = None, *, host: PluginHost | None = None
) -> AsyncIterator[str]:
    """The real server on port 0; yields the SDK's ``websocket_base_url`` (``ws://…/v1``)."""
    doc = test_engine_config({"server": {"port": 0, "drain_timeout_s": 0.3}, **(overrides or {})})
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve, config_from_mapping(doc), host or host_with(), shutdown_trigger=stop.wait
            )
        )
        yield server.ws_url.removesuffix("/session")
        stop.set()


async def run_client(
    url: str, scenario: Scenario[T], *, api_key: str = "sk-test", timeout: float = 30
) -> T:
    """Run ``scenario`` on one SDK connection to ``url`` in a worker thread (asyncio)."""

    async def main() -> T:
        client = AsyncOpenAI(api_key=api_key, websocket_base_url=url)
        async with client.realtime.connect(model=MODEL) as connection:
            return await asyncio.wait_for(scenario(connection), timeout)

    return await trio.to_thread.run_sync(lambda: asyncio.run(main()), abandon_on_cancel=True)


async def until(
    connection: AsyncRealtimeConnection, stop: str | Callable[[Any], bool]
) -> list[Any]:
    """The events received up to and including the first for which ``stop`` holds (a type)."""
    done = (lambda e: e.type == stop) if isinstance(stop, str) else stop
    events = []
    while True:
        event = await connection.recv()
        events.append(event)
        if done(event):
            return events


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def audio_of(events: list[Any]) -> bytes:
    return b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )


def tone(ms: int, hz: float = 300.0) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return float_to_pcm16((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))


async def append(connection: AsyncRealtimeConnection, pcm: bytes, chunk_ms: int = 100) -> None:
    step = RATE * 2 * chunk_ms // 1000
    for offset in range(0, len(pcm), step):
        chunk = base64.b64encode(pcm[offset : offset + step]).decode()
        await connection.input_audio_buffer.append(audio=chunk)


def user_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


# --------------------------------------------------------------------------- the fast tests


async def test_a_typed_message_and_response_create_get_a_spoken_reply() -> None:
    async def scenario(c: AsyncRealtimeConnection) -> tuple[Any, list[Any], list[Any]]:
        created = await c.recv()
        await c.session.update(session={**MANUAL, "instructions": "Be brief."})
        updated = await until(c, "session.updated")
        await c.conversation.item.create(item=user_text("hello"))
        await c.response.create()
        return created, updated, await until(c, "response.done")

    async with realtime_server() as url:
        created, updated, events = await run_client(url, scenario)

    assert created.type == "session.created"
    assert created.session.model == MODEL
    assert created.session.audio.input.format.rate == RATE
    assert updated[-1].session.instructions == "Be brief."
    assert updated[-1].session.audio.input.turn_detection is None
    kinds = types(events)
    assert kinds[:2] == ["conversation.item.added", "conversation.item.done"]
    assert events[0].item.content[0].text == "hello"
    assert kinds.index("response.created") < kinds.index("response.output_item.added")
    assert kinds.index("response.content_part.added") < kinds.index(
        "response.output_audio_transcript.delta"
    )
    assert kinds.index("response.output_audio.done") < kinds.index("response.done")
    transcript = next(e for e in events if e.type == "response.output_audio_transcript.done")
    assert transcript.transcript == "You said: hello."
    deltas = [e for e in events if e.type == "response.output_audio_transcript.delta"]
    assert "".join(e.delta for e in deltas) == "You said: hello."
    audio = audio_of(events)
    assert len(audio) / 2 / RATE == pytest.approx(spoken_ms("You said: hello.") / 1000, abs=0.05)
    done = events[-1].response
    assert done.status == "completed"
    assert done.output[0].content[0].transcript == "You said: hello."
    # One response, one item: every event of it names them.
    response_id = next(e for e in events if e.type == "response.created").response.id
    item_ids = {e.item_id for e in events if e.type.startswith("response.output_audio")}
    assert item_ids == {done.output[0].id} and done.id == response_id
    event_ids = [e.event_id for e in [created, *updated, *events]]
    assert len(set(event_ids)) == len(event_ids)


async def test_committed_audio_is_transcribed_and_answered_on_response_create() -> None:
    overrides = {"backends": {"options": {"test-stt": {"transcripts": ["what time is it"]}}}}

    async def scenario(c: AsyncRealtimeConnection) -> dict[str, list[Any]]:
        await c.session.update(session=MANUAL)
        await until(c, "session.updated")
        steps: dict[str, list[Any]] = {}
        await append(c, tone(300))
        await c.input_audio_buffer.clear()
        steps["cleared"] = await until(c, "input_audio_buffer.cleared")
        await c.input_audio_buffer.commit()
        steps["empty"] = await until(c, "error")
        await append(c, tone(600))
        await c.input_audio_buffer.commit()
        steps["committed"] = await until(c, "conversation.item.added")
        await c.response.create()
        steps["reply"] = await until(c, "response.done")
        return steps

    async with realtime_server(overrides) as url:
        steps = await run_client(url, scenario)

    assert steps["empty"][-1].error.code == "input_audio_buffer_commit_empty"
    committed, added = steps["committed"][-2:]
    assert committed.type == "input_audio_buffer.committed"
    assert added.item.id == committed.item_id and added.item.role == "user"
    reply = steps["reply"]
    completed = next(
        e for e in reply if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert completed.item_id == committed.item_id
    assert completed.transcript == "what time is it"
    kinds = types(reply)
    assert "input_audio_buffer.speech_started" not in kinds  # turn detection is off
    assert kinds.index("conversation.item.input_audio_transcription.completed") < kinds.index(
        "response.created"
    )
    transcript = next(e for e in reply if e.type == "response.output_audio_transcript.done")
    assert transcript.transcript == "You said: what time is it."
    assert reply[-1].response.status == "completed"


async def test_response_cancel_stops_the_audio_at_once() -> None:
    story = " ".join(["tell me a long story that goes on and on"] * 4)

    async def scenario(c: AsyncRealtimeConnection) -> tuple[list[Any], list[Any]]:
        await c.session.update(session=MANUAL)
        await until(c, "session.updated")
        await c.conversation.item.create(item=user_text(story))
        await c.response.create()
        first = await until(c, "response.output_audio.delta")
        await c.response.cancel()
        cancelled = await until(c, "response.done")
        # Another turn: everything between the cancelled response's end and its reply is read.
        await c.conversation.item.create(item=user_text("hello"))
        await c.response.create()
        after = await until(
            c, lambda e: e.type == "response.done" and e.response.id != cancelled[-1].response.id
        )
        return first + cancelled, after

    async with realtime_server() as url:
        cancelled, after = await run_client(url, scenario)

    done = cancelled[-1].response
    assert done.status == "cancelled"
    assert done.status_details.reason == "client_cancelled"
    assert done.output[0].status == "incomplete"
    assert len(audio_of(cancelled)) / 2 / RATE < spoken_ms(story) / 1000 / 2
    assert not [
        e
        for e in after
        if e.type.startswith("response.output") and getattr(e, "response_id", None) == done.id
    ]
    transcript = next(e for e in after if e.type == "response.output_audio_transcript.done")
    assert transcript.transcript == "You said: hello."


async def test_a_function_tool_round_trip() -> None:
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }

    async def scenario(c: AsyncRealtimeConnection) -> tuple[Any, list[Any], list[Any]]:
        await c.session.update(session={**MANUAL, "tools": [weather], "tool_choice": "auto"})
        updated = await until(c, "session.updated")
        await c.conversation.item.create(item=user_text('call get_weather with {"city": "Paris"}'))
        await c.response.create()
        calling = await until(c, "response.done")  # ends once the call is out
        call = next(e for e in calling if e.type == "response.function_call_arguments.done")
        await c.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": json.dumps({"temp_c": 21}),
            }
        )
        await c.response.create()
        answer = await until(c, "response.done")
        return updated[-1], calling, answer

    async with realtime_server({"backends": {"llm": "test-tool-llm"}}) as url:
        updated, calling, answer = await run_client(url, scenario)

    assert [tool.name for tool in updated.session.tools] == ["get_weather"]
    call = next(e for e in calling if e.type == "response.function_call_arguments.done")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    first = calling[-1].response
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["message", "function_call"]
    assert first.output[0].content[0].transcript == "Calling get_weather."
    assert first.output[1].call_id == call.call_id
    assert "error" not in types(answer)  # response.create after the result: accepted
    assert answer[0].type == "conversation.item.added"
    assert answer[0].item.type == "function_call_output"
    second = answer[-1].response
    assert second.id != first.id and second.status == "completed"
    assert second.output[0].content[0].transcript == 'The tools said: {"temp_c": 21}.'
    assert audio_of(answer)  # the answer is spoken


async def test_bad_input_gets_error_events_and_the_connection_stays_up() -> None:
    bad: list[tuple[Any, str]] = [
        ("not json", "invalid_json"),
        (b"\x00\x01", "invalid_event"),
        ({"type": "bogus.event"}, "unknown_event"),
        ({"no": "type"}, "missing_required_parameter"),
        ({"type": "input_audio_buffer.append", "audio": "%%%"}, "invalid_value"),
        ({"type": "input_audio_buffer.append", "audio": 7}, "invalid_type"),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
            },
            "unsupported_audio_format",
        ),
        ({"type": "session.update", "session": {"type": "transcription"}}, "unsupported_value"),
        ({"type": "response.cancel"}, "response_cancel_not_active"),
        ({"type": "response.create"}, "nothing_to_respond_to"),
        (
            {"type": "conversation.item.truncate", "item_id": "nope", "audio_end_ms": 10},
            "item_not_found",
        ),
        (
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "system", "content": []},
            },
            "unsupported_value",
        ),
        ({"type": "conversation.item.create", "item": user_text("")}, "invalid_value"),
        (
            {"type": "session.update", "session": {"audio": {"output": {"voice": "no-such"}}}},
            "unknown_voice",
        ),
    ]

    async def scenario(c: AsyncRealtimeConnection) -> tuple[list[Any], list[Any]]:
        await until(c, "session.created")
        errors = []
        for index, (message, _) in enumerate(bad):
            if isinstance(message, dict) and "type" in message:
                message = {**message, "event_id": f"evt_{index}"}
            await c.send_raw(message if isinstance(message, str | bytes) else json.dumps(message))
            errors.append((await until(c, "error"))[-1])
        await c.session.update(session=MANUAL)
        await until(c, "session.updated")
        await c.conversation.item.create(item=user_text("still here"))
        await c.response.create()
        return errors, await until(c, "response.done")

    async with realtime_server() as url:
        errors, reply = await run_client(url, scenario)

    assert [e.error.code for e in errors] == [code for _, code in bad]
    assert all(e.error.type == "invalid_request_error" and e.error.message for e in errors)
    for index, (message, _) in enumerate(bad):  # the client event at fault is named
        if isinstance(message, dict) and "type" in message:
            assert errors[index].error.event_id == f"evt_{index}", message
    assert errors[4].error.param == "audio"
    assert reply[-1].response.status == "completed"


async def test_text_only_output_and_the_voice_mapping() -> None:
    async def scenario(c: AsyncRealtimeConnection) -> tuple[list[Any], list[Any], list[Any]]:
        await c.session.update(
            session={
                **MANUAL,
                "output_modalities": ["text"],
                "audio": {"input": {"turn_detection": None}, "output": {"voice": "alloy"}},
            }
        )
        stock = await until(c, "session.updated")
        await c.conversation.item.create(item=user_text("hello"))
        await c.response.create()
        text = await until(c, "response.done")
        await c.session.update(
            session={"output_modalities": ["audio"], "audio": {"output": {"voice": "tone-b"}}}
        )
        chosen = await until(c, "session.updated")
        return stock, text, chosen

    async with realtime_server() as url:
        stock, text, chosen = await run_client(url, scenario)

    assert stock[-1].session.audio.output.voice == "alloy"  # echoed; the default voice speaks
    kinds = types(text)
    assert "response.output_audio.delta" not in kinds
    assert "".join(e.delta for e in text if e.type == "response.output_text.delta") == (
        "You said: hello."
    )
    done = next(e for e in text if e.type == "response.output_text.done")
    assert done.text == "You said: hello."
    assert text[-1].response.output[0].content[0].type == "output_text"
    assert chosen[-1].session.audio.output.voice == "tone-b"
    assert chosen[-1].session.output_modalities == ["audio"]


async def test_a_flood_of_events_ends_the_session_with_rate_limited() -> None:
    codes: list[str] = []
    async with (
        realtime_server() as url,
        open_websocket_url(url + "/realtime?model=flood") as socket,
    ):
        assert json.loads(await socket.get_message())["type"] == "session.created"
        for _ in range(300):  # events the endpoint answers itself count as control frames
            await socket.send_message('{"type": "input_audio_buffer.clear"}')
        with trio.fail_after(20), pytest.raises(ConnectionClosed) as closed:
            while True:
                event = json.loads(await socket.get_message())
                if event["type"] == "error":
                    codes.append(event["error"]["code"])
    assert codes == ["rate_limited"]
    assert closed.value.reason.code == 4429


async def test_truncate_reports_what_was_played() -> None:
    async def scenario(c: AsyncRealtimeConnection) -> list[Any]:
        await c.session.update(session=MANUAL)
        await until(c, "session.updated")
        await c.conversation.item.create(item=user_text("hello"))
        await c.response.create()
        reply = await until(c, "response.done")
        item = reply[-1].response.output[0].id
        await c.conversation.item.truncate(item_id=item, content_index=0, audio_end_ms=300)
        return [*reply, *await until(c, "conversation.item.truncated")]

    async with realtime_server() as url:
        events = await run_client(url, scenario)

    truncated = events[-1]
    assert truncated.item_id == events[-2].response.output[0].id
    assert truncated.audio_end_ms == 300


async def test_the_benchmark_times_both_protocols_on_one_server() -> None:
    async with realtime_server() as url:
        http_url = url.replace("ws://", "http://").removesuffix("/v1")
        native, realtime = await measure_realtime(http_url, api_key=None, rounds=3, stack="test")
    assert len(native) == len(realtime) == 3
    assert all(0 < value < 5 for value in native + realtime)


EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "realtime_client.py"


@pytest.mark.slow  # two Python processes importing the SDK
async def test_the_documented_example_runs(tmp_path: Path) -> None:
    question = tmp_path / "question.wav"
    with wave.open(str(question), "wb") as wav:  # 16 kHz stereo: the example converts it
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        mono = np.frombuffer(tone(600), "<i2")[::3]
        wav.writeframes(np.repeat(mono, 2).tobytes())
    overrides = {"backends": {"options": {"test-stt": {"transcripts": ["what time is it"]}}}}
    async with realtime_server(overrides) as url:
        runs = []
        for arguments in (["--text", "hello"], [str(question)]):
            command = [sys.executable, str(EXAMPLE), *arguments, "--url", url]
            command += ["--out", str(tmp_path / "reply.wav")]
            with trio.fail_after(30):
                done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
            runs.append(done.stdout.decode())
            with wave.open(str(tmp_path / "reply.wav"), "rb") as wav:
                assert wav.getframerate() == RATE and wav.getnframes() > RATE // 2
    assert "agent: You said: hello." in runs[0] and "(completed," in runs[0]
    assert "you: what time is it" in runs[1]
    assert "agent: You said: what time is it." in runs[1]


async def test_refused_credentials_are_an_error_event_and_a_close() -> None:
    tenants = {
        "auth": {"token_secret": "secret"},
        "tenants": {"acme": {"keys": [{"id": "acme-1", "hash": hash_key("sk-acme")}]}},
    }

    async def scenario(c: AsyncRealtimeConnection) -> list[Any]:
        events = []
        try:
            while True:
                events.append(await c.recv())
        except Exception as exc:  # the close ends the connection (the SDK does not retry 4401)
            events.append(exc)
        return events

    async def accepted(c: AsyncRealtimeConnection) -> Any:
        return await c.recv()

    async with realtime_server(tenants) as url:
        refused = await run_client(url, scenario, api_key="sk-wrong")
        created = await run_client(url, accepted, api_key="sk-acme")

    assert refused[0].type == "error"
    assert refused[0].error.code == "unauthorized"
    assert "4401" in str(refused[-1])
    assert created.type == "session.created"


# --------------------------------------------------------------------------- the translator alone


def _translator() -> Any:
    from scaivoice.engine._realtime.translator import RealtimeTranslator

    translator = RealtimeTranslator(MODEL, id_prefix="t")
    started = frames.SessionStarted(
        session_id="sess_1",
        protocol=1,
        config=frames.SessionConfig(),
        audio=frames.AudioFormats(
            input=frames.AudioFormat(sample_rate=RATE), output=frames.AudioFormat(sample_rate=RATE)
        ),
        capabilities=frames.Capabilities(features=["vad_enabled"]),
    )
    assert _events(translator, started)[0]["type"] == "session.created"
    return translator


def _events(translator: Any, *items: Any) -> list[dict[str, Any]]:
    """What the translator sends the client for the session's ``items`` (frames, or PCM)."""
    out: list[str] = []
    for item in items:
        if isinstance(item, bytes):
            out += translator.from_engine_audio(item)
        else:
            out += translator.from_engine(frames.encode_server_frame(item).decode())
    return [json.loads(event) for event in out]


def test_a_spoken_turn_becomes_speech_events_an_item_and_transcription_deltas() -> None:
    t = _translator()
    sent = t.from_client(json.dumps({"type": "input_audio_buffer.append", "audio": ""}))
    assert json.loads(sent.to_engine[0])["config"]["turn_detection"] == "server_vad"
    events = _events(
        t,
        frames.State(state="listening", turn_id=1),
        frames.TranscriptFrame(turn_id=1, text="what", final=False, start_ms=0, end_ms=500),
        frames.TranscriptFrame(turn_id=1, text="what time", final=False, start_ms=0, end_ms=900),
        frames.TranscriptFrame(turn_id=1, text="what tim", final=False, start_ms=0, end_ms=950),
        frames.State(state="thinking", turn_id=1),
        frames.TranscriptFrame(
            turn_id=1, text="What time is it?", final=True, start_ms=0, end_ms=1200
        ),
    )
    kinds = [e["type"] for e in events]
    assert kinds == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert [e["delta"] for e in events if "delta" in e] == ["what", " time"]
    assert len({e.get("item_id") or e["item"]["id"] for e in events}) == 1
    assert events[-1]["transcript"] == "What time is it?"
    assert events[-1]["usage"] == {"type": "duration", "seconds": 1.2}


def test_speech_heard_over_the_agent_is_an_item_without_speech_events() -> None:
    t = _translator()
    events = _events(
        t, frames.TranscriptFrame(turn_id=3, text="uh-huh", final=True, start_ms=0, end_ms=400)
    )
    assert [e["type"] for e in events] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
    ]


def test_a_tool_round_ends_its_response_when_the_session_goes_quiet() -> None:
    t = _translator()
    pcm = b"\1\0" * 960  # 40 ms
    events = _events(
        t,
        frames.AgentText(turn_id=1, delta="Calling f."),
        frames.AgentAudioStart(turn_id=1, sample_rate=RATE),
        pcm,
        frames.ToolCallFrame(turn_id=1, call_id="c1", name="f", arguments={"x": 1}),
    )
    assert t.awaiting_quiet
    done = t.quiet()
    assert not t.awaiting_quiet and t.quiet() == []
    response = json.loads(done[-1])["response"]
    assert response["status"] == "completed"
    assert [i["type"] for i in response["output"]] == ["message", "function_call"]
    assert response["output"][1]["arguments"] == '{"x":1}'
    # The answer after the result is a new response; its audio is later in the same turn.
    later = _events(t, frames.AgentText(turn_id=1, delta=" It is one."), pcm)
    assert later[0]["type"] == "response.created"
    assert later[0]["response"]["id"] != response["id"]
    transcript = next(e for e in later if e["type"] == "response.output_audio_transcript.delta")
    assert transcript["delta"] == "It is one."
    # Truncating the second item counts the turn's audio before it.
    item = later[1]["item"]["id"]
    sent = t.from_client(
        json.dumps({"type": "conversation.item.truncate", "item_id": item, "audio_end_ms": 20})
    )
    assert json.loads(sent.to_engine[-1]) == {"type": "playback", "turn_id": 1, "played_ms": 60}
    assert events[0]["type"] == "response.created"


def test_a_failed_model_fails_the_response() -> None:
    t = _translator()
    events = _events(
        t,
        frames.AgentText(turn_id=1, delta="Well"),
        frames.ErrorFrame(code="llm_failed", message="the model is down"),
        frames.AgentTextDone(turn_id=1, text="Well", interrupted=False, heard_text="Well"),
    )
    assert events[-2]["type"] == "response.output_item.done"
    error = next(e for e in events if e["type"] == "error")["error"]
    assert error["type"] == "server_error" and error["code"] == "llm_failed"
    done = events[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"]["message"] == "the model is down"


def test_a_reply_with_no_output_still_has_a_response() -> None:
    t = _translator()
    events = _events(t, frames.AgentTextDone(turn_id=2, text="", interrupted=True, heard_text=""))
    assert [e["type"] for e in events] == ["response.created", "response.done"]
    assert events[-1]["response"]["status"] == "cancelled"
    assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"


# --------------------------------------------------------------------------- the embedded models

QUESTION = "Hello, my name is Alice and I would like to book a table for two people."
STORY = "Please tell me a long story about a brave little dragon and a wise old owl."


@pytest.fixture(scope="module")
def speech() -> dict[str, bytes]:
    """hibari's speech at 24 kHz (its own rate: the Realtime rate)."""
    hibari = pytest.importorskip("hibari")
    tts = hibari.Hibari()
    return {text: float_to_pcm16(tts(text, seed=0)) for text in (QUESTION, STORY)}


def embedded_host() -> PluginHost:
    pytest.importorskip("faster_whisper")
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    return host


EMBEDDED = {"backends": {"stt": "whisper", "llm": "echo", "tts": "hibari"}}


async def speak_live(c: AsyncRealtimeConnection, pcm: bytes, silence_ms: int = 1500) -> float:
    """Stream ``pcm`` then silence in real-time 20 ms appends; returns when its speech ended
    (its last sample louder than 2 % of full scale was sent)."""
    audio = pcm + b"\0\0" * (RATE * silence_ms // 1000)
    step = RATE * 2 * 20 // 1000
    start = time.monotonic()
    for index, offset in enumerate(range(0, len(audio), step)):
        await asyncio.sleep(max(0.0, start + index * 0.02 - time.monotonic()))
        await c.input_audio_buffer.append(
            audio=base64.b64encode(audio[offset : offset + step]).decode()
        )
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)) > 655)
    return start + (int(loud[-1]) + 1 if loud.size else len(pcm) // 2) / RATE


@pytest.mark.slow
async def test_a_spoken_question_with_server_vad_then_a_cancelled_reply(
    speech: dict[str, bytes],
) -> None:
    async def scenario(c: AsyncRealtimeConnection) -> dict[str, Any]:
        created = await until(c, "session.created")
        result: dict[str, Any] = {"created": created[-1]}
        timed: list[tuple[float, Any]] = []

        async def record(stop: Callable[[Any], bool]) -> list[Any]:
            while True:
                event = await c.recv()
                timed.append((time.monotonic(), event))
                if stop(event):
                    return [e for _, e in timed]

        talking = asyncio.create_task(speak_live(c, speech[QUESTION]))
        result["turn"] = await record(lambda e: e.type == "response.done")
        result["speech_end"] = await talking
        result["timed"] = list(timed)
        # A long reply, cancelled at its first audio.
        timed.clear()
        talking = asyncio.create_task(speak_live(c, speech[STORY], silence_ms=800))
        await record(lambda e: e.type == "response.output_audio.delta")
        await c.response.cancel()
        result["cancelled"] = await record(lambda e: e.type == "response.done")
        await talking
        # Read on until the session has answered a round trip (a session.update) after it.
        await c.session.update(session={"instructions": "after"})
        result["after"] = await until(c, "session.updated")
        return result

    async with realtime_server(EMBEDDED, host=embedded_host()) as url:
        result = await run_client(url, scenario, timeout=240)

    session = result["created"].session
    assert session.audio.input.turn_detection.type == "server_vad"
    turn = result["turn"]
    kinds = types(turn)
    for kind in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
    ):
        assert kind in kinds, kind
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
        "input_audio_buffer.speech_stopped"
    )
    item = next(e for e in turn if e.type == "input_audio_buffer.speech_started").item_id
    completed = next(
        e for e in turn if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert completed.item_id == item
    errors, words = word_errors(QUESTION, completed.transcript)
    assert errors / words <= 0.2, completed.transcript
    reply = next(e for e in turn if e.type == "response.output_audio_transcript.done")
    assert reply.transcript.startswith("You said:")
    audio = np.frombuffer(audio_of(turn), "<i2")
    assert len(audio) / RATE > 1.0 and np.abs(audio).max() > 1000  # a voice, not silence
    assert turn[-1].response.status == "completed"
    stopped_at = next(
        t for t, e in result["timed"] if e.type == "input_audio_buffer.speech_stopped"
    )
    first_audio_at = next(t for t, e in result["timed"] if e.type == "response.output_audio.delta")
    print(
        f"\nrealtime, embedded stack: end of speech -> first audio delta "
        f"{(first_audio_at - result['speech_end']) * 1000:.0f} ms "
        f"(speech_stopped -> first audio {(first_audio_at - stopped_at) * 1000:.0f} ms)"
    )

    cancelled = result["cancelled"]
    done = cancelled[-1].response
    assert done.status == "cancelled" and done.status_details.reason == "client_cancelled"
    # Nothing of it follows its response.done (the rest of the user's speech may be a new turn).
    assert not [e for e in result["after"] if getattr(e, "response_id", None) == done.id]
