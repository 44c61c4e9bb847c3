"""Early replies: the language model starts at the user's pause on a stable interim."""

from __future__ import annotations

from typing import Any

import trio

from scaivoice.engine import (
    BackendOptions,
    BackendSpec,
    LlmBackend,
    LlmRequest,
    SttBackend,
    SttRequest,
    Transcript,
)

from .conftest import open_session, tag

SPEECH = b"\x00\x10" * 1600  # 100 ms at 16 kHz


class ScriptedStt(SttBackend):
    """Sends ``script[i]`` (``"text"`` or ``"stable:text"``) after audio chunk ``i``."""

    class Options(BackendOptions, frozen=True):
        script: tuple[str, ...] = ()
        final: str = ""

    def __init__(self, options: Options) -> None:
        self.options = options

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        async with audio, results:
            index = 0
            async for _ in audio:
                if index < len(self.options.script) and self.options.script[index]:
                    entry = self.options.script[index]
                    stable = entry.startswith("stable:")
                    text = entry.removeprefix("stable:")
                    await results.send(Transcript(text, final=False, stable=stable))
                index += 1
            await results.send(Transcript(self.options.final, final=True))


class RecordingLlm(LlmBackend):
    """Answers "You said: ..." word by word; records each call and whether it was cancelled."""

    class Options(BackendOptions, frozen=True):
        pass

    def __init__(self, options: Options) -> None:
        self.calls: list[str] = []
        self.cancelled: list[str] = []
        self.called = trio.Event()
        self.cancelled_event = trio.Event()

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        user = request.messages[-1].content
        self.calls.append(user)
        self.called.set()
        try:
            async with deltas:
                for index, word in enumerate(f"You said: {user}.".split(" ")):
                    await trio.sleep(0.01)
                    await deltas.send(word if index == 0 else " " + word)
        except trio.Cancelled:
            self.cancelled.append(user)
            self.cancelled_event.set()
            raise


def _specs() -> list[BackendSpec]:
    return [
        BackendSpec.for_class(ScriptedStt, name="scripted-stt"),
        BackendSpec.for_class(RecordingLlm, name="recording-llm"),
    ]


def _config(script: tuple[str, ...], final: str, **session: Any) -> dict[str, Any]:
    return {
        "backends": {
            "stt": "scripted-stt",
            "llm": "recording-llm",
            "options": {"scripted-stt": {"script": list(script), "final": final}},
        },
        "session": session,
    }


def _outcomes(client: Any) -> dict[str, float]:
    """The ``scaivoice_early_replies_total`` counts by outcome (all tenants)."""
    counts: dict[str, float] = {}
    for metric in client.engine.telemetry.registry.collect():
        for sample in metric.samples:
            if sample.name == "scaivoice_early_replies_total":
                outcome = sample.labels["outcome"]
                counts[outcome] = counts.get(outcome, 0.0) + sample.value
    return counts


def _llm(client: Any) -> RecordingLlm:
    llm = client.engine.llm
    assert isinstance(llm, RecordingLlm)
    return llm


async def _speak(client: Any, chunks: int) -> None:
    for _ in range(chunks):
        await client.send_raw(SPEECH)


async def _turn(client: Any) -> list[Any]:
    with trio.fail_after(10):
        return await client.receive_until("state", state="idle")


async def test_a_stable_interim_starts_the_reply_before_the_turn_ends(invariants: Any) -> None:
    config = _config(("", "stable:book a table"), "book a table")
    async with open_session(config, specs=_specs(), start={}) as client:
        await client.receive()
        await _speak(client, 3)
        with trio.fail_after(5):
            await _llm(client).called.wait()  # before the commit: started at the pause
        await client.send_json({"type": "audio.commit"})
        items = await _turn(client)
        invariants(items)
        assert _llm(client).calls == ["book a table"]
        assert _llm(client).cancelled == []
        done = next(i for i in items if tag(i) == "agent.text.done")
        assert done.text == "You said: book a table."
        deltas = "".join(i.delta for i in items if tag(i) == "agent.text")
        assert deltas == done.text
        transcripts = [(i.text, i.final) for i in items if tag(i) == "transcript"]
        assert transcripts == [("book a table", False), ("book a table", True)]
        assert _outcomes(client) == {"adopted": 1.0}


async def test_a_wrong_guess_is_cancelled_unseen_and_the_reply_answers_the_final(
    invariants: Any,
) -> None:
    config = _config(("stable:book a table",), "book a table for two")
    async with open_session(config, specs=_specs(), start={}) as client:
        await client.receive()
        await _speak(client, 2)
        with trio.fail_after(5):
            await _llm(client).called.wait()
        await client.send_json({"type": "audio.commit"})
        items = await _turn(client)
        invariants(items)
        assert _llm(client).calls == ["book a table", "book a table for two"]
        assert _llm(client).cancelled == ["book a table"]
        texts = [i.text for i in items if tag(i) == "agent.text.done"]
        assert texts == ["You said: book a table for two."]
        deltas = "".join(i.delta for i in items if tag(i) == "agent.text")
        assert deltas == "You said: book a table for two."
        assert _outcomes(client) == {"mismatched": 1.0}


async def test_speech_after_the_pause_withdraws_the_guess() -> None:
    config = _config(("stable:book", "book", "book a table"), "book a table")
    async with open_session(config, specs=_specs(), start={}) as client:
        await client.receive()
        await _speak(client, 1)
        with trio.fail_after(5):
            await _llm(client).called.wait()
        await _speak(client, 1)  # the withdrawal: the same text, not stable
        with trio.fail_after(5):
            await _llm(client).cancelled_event.wait()
        await _speak(client, 1)
        await client.send_json({"type": "audio.commit"})
        items = await _turn(client)
        interims = [i.text for i in items if tag(i) == "transcript" and not i.final]
        assert interims == ["book", "book a table"]  # the withdrawal is not shown again
        assert _llm(client).calls == ["book", "book a table"]
        assert _outcomes(client) == {"withdrawn": 1.0}


async def test_early_replies_can_be_turned_off() -> None:
    config = _config(("stable:book a table",), "book a table", early_replies=False)
    async with open_session(config, specs=_specs(), start={}) as client:
        await client.receive()
        await _speak(client, 2)
        with trio.fail_after(5):
            interim = await client.receive_until("transcript")
        assert interim[-1].text == "book a table"
        await trio.testing.wait_all_tasks_blocked()  # an early reply would have started by now
        assert _llm(client).calls == []
        await client.send_json({"type": "audio.commit"})
        items = await _turn(client)
        assert any(tag(i) == "agent.text.done" for i in items)
        assert _llm(client).calls == ["book a table"]


async def test_a_speculative_turn_withdrawn_leaves_no_trace() -> None:
    from scaivoice.engine import ChatMessage
    from scaivoice.engine._session.agent_turn import AgentTurn
    from scaivoice.engine._session.speculation import Speculations
    from scaivoice.engine.testing import open_test_engine

    from .conftest import host_with

    sent: list[Any] = []

    async def record(frame: Any) -> None:
        sent.append(frame)

    config = _config((), "")
    async with open_test_engine(config, host=host_with(*_specs())) as engine:
        llm = engine.llm
        assert isinstance(llm, RecordingLlm)
        request = LlmRequest(messages=(ChatMessage("user", "book a table"),))
        outcomes: list[tuple[str, str]] = []
        replies: list[str] = []
        speculations = Speculations(lambda *o: outcomes.append(o), replies.append)
        turn = AgentTurn(
            turn_id=1,
            request=request,
            user_text="book a table",
            config=engine.config.session_defaults(None),
            engine=engine,
            emit=record,
            emit_audio=record,
            output_started=record,
            lead_ms=80,
            speculative=True,
        )
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def run(turn: AgentTurn) -> None:
                    outcome = await turn.run()
                    speculations.ended(turn, withdrawn=outcome.withdrawn)

                speculations.start(nursery, turn, run)
                await llm.called.wait()
                speculations.withdraw()
                await llm.cancelled_event.wait()
    assert sent == []  # nothing of a withdrawn speculation reached the client
    assert replies == ["withdrawn"]
    assert ("llm", "discarded") in outcomes
    assert llm.cancelled == ["book a table"]
