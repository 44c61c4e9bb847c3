"""Barge-in races, forced: interrupt before the first token, during the first TTS chunk, while
pacing, twice, just after the turn ended, during thinking; by VAD and by a newer user turn.

Every test checks the protocol invariants over the whole captured stream: nothing of a turn
(no audio byte, no agent text) after its ``interrupted`` state.
"""

from __future__ import annotations

from typing import Any, ClassVar

import trio

from scaivoice.engine import (
    AudioChunk,
    BackendOptions,
    BackendSpec,
    LlmBackend,
    LlmRequest,
    TtsBackend,
    TtsCapabilities,
    TtsRequest,
)
from scaivoice.engine.testing import AudioReceived

from .conftest import open_session, tag


class Gates:
    """Events shared between a test and its gated backends."""

    first_token = trio.Event()
    llm_waiting = trio.Event()
    llm_cancelled = trio.Event()
    tts_first_chunk_sent = trio.Event()
    tts_release = trio.Event()
    tts_cancelled = trio.Event()
    requests: ClassVar[list[LlmRequest]] = []

    @classmethod
    def reset(cls) -> None:
        cls.first_token = trio.Event()
        cls.llm_waiting = trio.Event()
        cls.llm_cancelled = trio.Event()
        cls.tts_first_chunk_sent = trio.Event()
        cls.tts_release = trio.Event()
        cls.tts_cancelled = trio.Event()
        cls.requests = []


class GatedLlm(LlmBackend):
    """Waits for ``Gates.first_token`` before answering; records requests and cancellation."""

    class Options(BackendOptions, frozen=True):
        gated: bool = True

    def __init__(self, options: Options) -> None:
        self.gated = options.gated

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        Gates.requests.append(request)
        async with deltas:
            try:
                if self.gated:
                    Gates.llm_waiting.set()
                    await Gates.first_token.wait()
                for word in ["One", " two", " three.", " Four", " five", " six."]:
                    await deltas.send(word)
            except trio.Cancelled:
                Gates.llm_cancelled.set()
                raise


class GatedTts(TtsBackend):
    """Sends one 100 ms chunk, then waits for ``Gates.tts_release`` before the rest."""

    class Options(BackendOptions, frozen=True):
        pass

    capabilities = TtsCapabilities(streaming=True, voices=False)

    def __init__(self, options: Options) -> None:
        pass

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        async with audio:
            try:
                await audio.send(AudioChunk(b"\x01\x00" * 2400, 24000))
                Gates.tts_first_chunk_sent.set()
                await Gates.tts_release.wait()
                for _ in range(5):
                    await audio.send(AudioChunk(b"\x01\x00" * 2400, 24000))
            except trio.Cancelled:
                Gates.tts_cancelled.set()
                raise


LLM = BackendSpec.for_class(GatedLlm, name="gated-llm")
TTS = BackendSpec.for_class(GatedTts, name="gated-tts")


def _gated(llm: bool = True, tts: bool = False) -> dict[str, Any]:
    Gates.reset()
    backends: dict[str, Any] = {}
    if llm:
        backends["llm"] = "gated-llm"
    if tts:
        backends["tts"] = "gated-tts"
        backends["llm"] = "gated-llm"
        backends["options"] = {"gated-llm": {"gated": False}}
    return {"backends": backends}


async def _interrupt_and_collect(client: Any) -> list[Any]:
    await client.send_json({"type": "interrupt"})
    with trio.fail_after(5):
        return await client.receive_until("state", state="interrupted")


async def _rest_until_idle(client: Any) -> list[Any]:
    with trio.fail_after(5):
        return await client.receive_until("state", state="idle")


async def test_interrupt_before_the_first_llm_token(invariants: Any) -> None:
    async with open_session(_gated(), specs=[LLM], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        await Gates.llm_waiting.wait()
        items = await _interrupt_and_collect(client)
        items += await _rest_until_idle(client)
        invariants(items)
        assert Gates.llm_cancelled.is_set()
        kinds = [tag(i) for i in items]
        assert "agent.text" not in kinds and "audio" not in kinds
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert (done.text, done.heard_text, done.interrupted) == ("", "", True)
        # Releasing the gate later changes nothing: the turn is gone.
        Gates.first_token.set()
        await client.send_json({"type": "ping"})
        assert tag(await client.receive()) == "pong"


async def test_interrupt_during_the_first_tts_chunk(invariants: Any) -> None:
    async with open_session(_gated(tts=True), specs=[LLM, TTS], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        await Gates.tts_first_chunk_sent.wait()
        items = await _interrupt_and_collect(client)
        items += await _rest_until_idle(client)
        invariants(items)
        assert Gates.tts_cancelled.is_set()
        audio = b"".join(i.pcm for i in items if isinstance(i, AudioReceived))
        assert len(audio) <= 2400 * 2  # at most the first chunk
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert done.interrupted and done.text.startswith("One two three.")


async def test_interrupt_while_pacing_keeps_only_the_heard_text(
    invariants: Any, autojump_clock: Any
) -> None:
    overrides = _gated(llm=True)
    overrides["backends"]["options"] = {"gated-llm": {"gated": False}}
    overrides["session"] = {"audio_lead_ms": 0}
    async with open_session(overrides, specs=[LLM], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        # test-tts speaks 50 ms per character: "One two three. " lasts 700 ms.
        items = await client.receive_until("agent.audio.start")
        await trio.sleep(0.5)
        items += await _interrupt_and_collect(client)
        items += await _rest_until_idle(client)
        invariants(items)
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert done.interrupted
        assert done.text == "One two three. Four five six."
        assert done.heard_text in {"One", "One two"}  # ~0.5 s of "One two three. "
        audio_done = next(i for i in items if tag(i) == "agent.audio.done")
        assert audio_done.interrupted and 400 <= audio_done.duration_ms <= 600
        # The next turn's prompt carries only what was heard.
        await client.send_json({"type": "text", "text": "next"})
        await _rest_until_idle(client)
        history = Gates.requests[-1].messages
        assert [m.role for m in history] == ["system", "user", "assistant", "user"]
        assert history[2].content == done.heard_text


async def test_client_playback_reports_decide_the_heard_text(
    invariants: Any, autojump_clock: Any
) -> None:
    overrides = _gated(llm=True)
    overrides["backends"]["options"] = {"gated-llm": {"gated": False}}
    async with open_session(overrides, specs=[LLM], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        items = await client.receive_until("agent.audio.start")
        turn_id = items[-1].turn_id
        await trio.sleep(1.0)
        # The client buffered a lot and has played only 250 ms.
        await client.send_json({"type": "playback", "turn_id": turn_id, "played_ms": 250})
        items += await _interrupt_and_collect(client)
        invariants(items)
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert done.heard_text == "One"


async def test_interrupt_twice_in_a_row_interrupts_once(invariants: Any) -> None:
    async with open_session(_gated(), specs=[LLM], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        await Gates.llm_waiting.wait()
        await client.send_json({"type": "interrupt"})
        await client.send_json({"type": "interrupt"})
        items = await _rest_until_idle(client)
        assert items[0].state == "thinking"
        items = items[1:]
        await client.send_json({"type": "ping"})
        with trio.fail_after(5):
            items += await client.receive_until("pong")
        invariants(items)
        assert [i.state for i in items if tag(i) == "state"] == ["interrupted", "idle"]


async def test_interrupt_just_after_the_turn_ended_is_a_no_op(invariants: Any) -> None:
    async with open_session(start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        items = await client.receive_until("agent.text.done")
        await client.send_json({"type": "interrupt"})
        items += await _rest_until_idle(client)
        await client.send_json({"type": "ping"})
        items += await client.receive_until("pong")
        invariants(items)
        assert "interrupted" not in [i.state for i in items if tag(i) == "state"]
        assert not next(i for i in items if tag(i) == "agent.text.done").interrupted


async def test_interrupt_during_thinking_stops_generation_and_synthesis(invariants: Any) -> None:
    async with open_session(_gated(), specs=[LLM], start={}) as client:
        await client.receive()
        await client.send_raw(b"\x00\x10" * 8000)
        await client.send_json({"type": "audio.commit"})
        items = await client.receive_until("state", state="thinking")
        await Gates.llm_waiting.wait()
        items += await _interrupt_and_collect(client)
        items += await _rest_until_idle(client)
        invariants(items)
        assert [i.state for i in items if tag(i) == "state"] == [
            "listening",
            "thinking",
            "interrupted",
            "idle",
        ]


async def test_client_vad_speech_barges_in_only_with_vad_enabled(invariants: Any) -> None:
    overrides = _gated(tts=True)
    async with open_session(overrides, specs=[LLM, TTS], start={"vad_enabled": True}) as client:
        await client.receive_until("state", state="idle")
        await client.send_json({"type": "text", "text": "hi"})
        await Gates.tts_first_chunk_sent.wait()
        await client.send_json({"type": "vad", "speaking": True})
        with trio.fail_after(5):
            items = await client.receive_until("state", state="listening")
        invariants(items)
        states = [i.state for i in items if tag(i) == "state"]
        assert states[-2:] == ["interrupted", "listening"]

    overrides = _gated(tts=True)
    async with open_session(overrides, specs=[LLM, TTS], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "hi"})
        await Gates.tts_first_chunk_sent.wait()
        await client.send_json({"type": "vad", "speaking": True})
        Gates.tts_release.set()
        with trio.fail_after(5):
            # The reply completes; the user's turn that opened meanwhile is now listening.
            items = await client.receive_until("state", state="listening")
        invariants(items)
        assert not next(i for i in items if tag(i) == "agent.text.done").interrupted


async def test_a_newer_user_turn_supersedes_the_running_reply(invariants: Any) -> None:
    async with open_session(_gated(tts=True), specs=[LLM, TTS], start={}) as client:
        await client.receive()
        await client.send_json({"type": "text", "text": "first"})
        await Gates.tts_first_chunk_sent.wait()
        Gates.tts_first_chunk_sent = trio.Event()
        await client.send_json({"type": "text", "text": "second"})
        with trio.fail_after(5):
            items = await client.receive_until("state", state="interrupted")
            items += await client.receive_until("state", state="speaking")
        Gates.tts_release.set()
        items += await _rest_until_idle(client)
        invariants(items)
        dones = [i for i in items if tag(i) == "agent.text.done"]
        assert [(d.turn_id, d.interrupted) for d in dones] == [(1, True), (2, False)]
        assert Gates.requests[-1].messages[-1].content == "second"
