"""Turn-taking in sessions: how turns end (server_vad, semantic, manual), speech over the agent
(backchannels, interruptions, echo), false barge-ins, and the user-idle prompt.

The VAD and the end-of-turn model are scripted features (the real ones have their own tests):
loud audio is speech, and the end-of-turn model answers what the test sets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import trio

from scaivoice.engine import (
    FeatureEvent,
    FeatureSession,
    FeatureSpec,
    SessionFeature,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    hookimpl,
)
from scaivoice.engine.frames import (
    AgentTextDone,
    ServerFrame,
    SessionStarted,
    State,
    TranscriptFrame,
    WarningFrame,
)
from scaivoice.engine.testing import (
    AudioReceived,
    MemoryClient,
    memory_transport_pair,
    open_test_engine,
    run_memory_session,
)

from .conftest import check_invariants, host_with

LOUD = b"\x00\x10" * 320  # 20 ms of speech at 16 kHz
QUIET = b"\x00\x00" * 320  # 20 ms of silence
PAUSE_MS = 100  # the scripted VAD's SpeechPaused comes after this much quiet


class LoudnessVad(SessionFeature):
    """Speech is audio with a peak above 1000; it pauses after 100 ms of quiet (resuming if
    speech comes back) and stops after ``min_silence_ms``."""

    opened_with: ClassVar[list[Mapping[str, Any]]] = []

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        type(self).opened_with.append(dict(options))
        return _LoudnessVadSession(float(options.get("min_silence_ms", 300)), sample_rate)


class _LoudnessVadSession(FeatureSession):
    def __init__(self, min_silence_ms: float, sample_rate: int) -> None:
        self.min_silence_ms = min_silence_ms
        self.rate = sample_rate
        self.position_ms = 0.0
        self.speaking = False
        self.paused = False
        self.quiet_since: float | None = None

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        loud = max(pcm[1::2], default=0) >= 0x04
        start = self.position_ms
        self.position_ms += len(pcm) / 2 / self.rate * 1000.0
        if loud:
            paused, self.quiet_since, self.paused = self.paused, None, False
            if not self.speaking:
                self.speaking = True
                return [SpeechStarted(round(start))]
            return [SpeechResumed(round(start))] if paused else []
        if self.speaking:
            self.quiet_since = start if self.quiet_since is None else self.quiet_since
            quiet_ms = self.position_ms - self.quiet_since
            if quiet_ms >= self.min_silence_ms:
                self.speaking = self.paused = False
                return [SpeechStopped(round(self.quiet_since))]
            if quiet_ms >= PAUSE_MS and not self.paused:
                self.paused = True
                return [SpeechPaused(round(self.quiet_since))]
        return []


class ScriptedEndOfTurn(SessionFeature):
    """An end-of-turn model that answers ``probability``; counts its calls."""

    probability: ClassVar[float | None] = 0.9
    calls: ClassVar[int] = 0

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        return _ScriptedEndOfTurnSession()


class _ScriptedEndOfTurnSession(FeatureSession):
    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        return []

    async def end_of_turn(self) -> float | None:
        ScriptedEndOfTurn.calls += 1
        return ScriptedEndOfTurn.probability


class Features:
    def __init__(self, *, end_of_turn: bool) -> None:
        self.end_of_turn = end_of_turn

    @hookimpl
    def scaivoice_session_features(self) -> Iterator[FeatureSpec]:
        yield FeatureSpec(name="loudness-vad", config_key="vad_enabled", factory=LoudnessVad)
        if self.end_of_turn:
            yield FeatureSpec(
                name="scripted-eot", config_key="turn_detection", factory=ScriptedEndOfTurn
            )


@asynccontextmanager
async def session(
    transcripts: tuple[str, ...] = ("what is the weather",),
    *,
    end_of_turn: bool = True,
    **start: Any,
) -> AsyncIterator[tuple[MemoryClient, SessionStarted]]:
    ScriptedEndOfTurn.probability, ScriptedEndOfTurn.calls = 0.9, 0
    LoudnessVad.opened_with = []
    host = host_with()
    host.register(Features(end_of_turn=end_of_turn), name="test-features")
    config = {
        "backends": {
            "options": {
                "test-stt": {"transcripts": list(transcripts), "interim_every_ms": 200},
                "test-tts": {"ms_per_char": 40.0},
            }
        }
    }
    async with open_test_engine(config, host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            started = await client.start(**start)
            assert isinstance(started, SessionStarted), started
            yield client, started
            nursery.cancel_scope.cancel()


async def speak(client: MemoryClient, ms: int, *, then_quiet_ms: int = 0) -> None:
    for _ in range(ms // 20):
        await client.send_raw(LOUD)
    for _ in range(then_quiet_ms // 20):
        await client.send_raw(QUIET)


def of(items: Sequence[ServerFrame | AudioReceived], kind: type[Any]) -> list[Any]:
    return [i for i in items if isinstance(i, kind)]


async def wait_speaking(client: MemoryClient, turn_id: int) -> list[ServerFrame | AudioReceived]:
    return await client.receive_until("agent.audio.start", turn_id=turn_id)


# ---------------------------------------------------------------- how turns end


async def test_turns_end_by_themselves_by_default_without_vad_enabled() -> None:
    async with session(end_of_turn=False) as (client, started):
        assert started.config.turn_detection == "server_vad"
        assert not started.config.vad_enabled
        await speak(client, 400, then_quiet_ms=400)
        seen = await client.receive_until("agent.text.done")
        assert of(seen, TranscriptFrame)[-1].text == "what is the weather"
        assert of(seen, AgentTextDone)[-1].text == "You said: what is the weather."


async def test_silence_ms_sets_the_server_vad_pause() -> None:
    async with session(end_of_turn=False, silence_ms=700) as _:
        assert LoudnessVad.opened_with[-1] == {"min_silence_ms": 700}


async def test_semantic_ends_a_complete_turn_at_the_first_pause() -> None:
    async with session(turn_eagerness="high") as (client, started):
        assert started.config.turn_detection == "semantic"
        assert LoudnessVad.opened_with[-1] == {"min_silence_ms": 120}
        await speak(client, 400, then_quiet_ms=200)
        with trio.fail_after(1.0):  # far below the 1.2 s cap: the model said complete
            await client.receive_until("transcript", final=True)
        assert ScriptedEndOfTurn.calls == 1


async def test_semantic_waits_through_a_pause_the_model_calls_incomplete() -> None:
    async with session(("my number is five five five one two",), turn_eagerness="high") as (
        client,
        _,
    ):
        ScriptedEndOfTurn.probability = 0.05
        await speak(client, 400, then_quiet_ms=200)  # "my number is five five five" ... pause
        with trio.move_on_after(0.5):
            seen = await client.receive_until("transcript", final=True)
            raise AssertionError(f"the turn ended at an incomplete pause: {seen}")
        await speak(client, 300, then_quiet_ms=200)  # "... one two": the same turn goes on
        ScriptedEndOfTurn.probability = 0.95
        seen = await client.receive_until("agent.text.done")
        finals = [t for t in of(seen, TranscriptFrame) if t.final]
        assert [(t.turn_id, t.text) for t in finals] == [(1, "my number is five five five one two")]


async def test_semantic_waits_when_the_words_so_far_stop_mid_sentence() -> None:
    """The model hears a finished turn, but the words at the pause end on "and": wait."""
    async with session(("coffee and milk please",), turn_eagerness="high") as (client, _):
        ScriptedEndOfTurn.probability = 0.95
        await speak(client, 400, then_quiet_ms=200)  # interim "coffee and" ... pause
        with trio.move_on_after(0.5):
            seen = await client.receive_until("transcript", final=True)
            raise AssertionError(f"the turn ended on a dangling 'and': {seen}")
        await speak(client, 300, then_quiet_ms=200)  # "... milk please"
        seen = await client.receive_until("agent.text.done")
        finals = [t for t in of(seen, TranscriptFrame) if t.final]
        assert [(t.turn_id, t.text) for t in finals] == [(1, "coffee and milk please")]


async def test_semantic_ends_an_incomplete_turn_at_the_cap() -> None:
    async with session(turn_eagerness="high") as (client, _):
        ScriptedEndOfTurn.probability = 0.05
        await speak(client, 400, then_quiet_ms=200)
        started = trio.current_time()
        await client.receive_until("transcript", final=True)
        waited = trio.current_time() - started
        assert 0.8 < waited < 2.5, waited  # the high cap: 1.2 s of silence in all


async def test_manual_turns_end_only_on_commit() -> None:
    async with session(turn_detection="manual", vad_enabled=True) as (client, started):
        assert started.config.turn_detection == "manual"
        await speak(client, 400, then_quiet_ms=600)
        with trio.move_on_after(0.5):
            seen = await client.receive_until("transcript", final=True)
            raise AssertionError(f"a manual turn ended by itself: {seen}")
        await client.send_json({"type": "audio.commit"})
        await client.receive_until("agent.text.done")


async def test_semantic_without_a_model_warns_and_ends_turns_after_a_pause() -> None:
    async with session(end_of_turn=False, turn_detection="semantic") as (client, started):
        assert "turn_detection" not in started.capabilities.features
        warning = of(await client.receive_until("warning"), WarningFrame)[-1]
        assert warning.code == "feature_unavailable" and "server_vad" in warning.message
        await speak(client, 400, then_quiet_ms=400)
        await client.receive_until("agent.text.done")


# ---------------------------------------------------------------- speech over the agent


async def test_held_a_backchannel_does_not_interrupt_and_the_agent_goes_on() -> None:
    transcripts = ("what is the weather", "uh-huh")
    async with session(transcripts, vad_enabled=True, barge_in_hold=True) as (client, _):
        await speak(client, 400, then_quiet_ms=400)
        seen = await wait_speaking(client, 1)
        await speak(client, 300, then_quiet_ms=400)  # "uh-huh" over the agent
        seen += await client.receive_until("agent.text.done", turn_id=1)
        done = of(seen, AgentTextDone)[-1]
        assert not done.interrupted and done.heard_text == done.text
        assert not [s for s in of(seen, State) if s.state == "interrupted"]
        finals = [t for t in of(seen, TranscriptFrame) if t.final]
        assert [(t.turn_id, t.text) for t in finals] == [
            (1, "what is the weather"),
            (2, "uh-huh"),
        ]  # the backchannel is transcribed, and gets no reply of its own
        with trio.move_on_after(0.5):
            extra = await client.receive_until("agent.text.done")
            raise AssertionError(f"a backchannel got a reply: {extra}")
        check_invariants(seen)


async def test_words_over_the_agent_interrupt_it() -> None:
    transcripts = ("what is the weather", "wait stop that")
    async with session(transcripts, vad_enabled=True) as (client, _):
        await speak(client, 400, then_quiet_ms=400)
        seen = await wait_speaking(client, 1)
        await speak(client, 500)  # an interim "wait" comes at 200 ms of speech
        seen += await client.receive_until("state", state="interrupted")
        await speak(client, 0, then_quiet_ms=400)
        seen += await client.receive_until("agent.text.done", turn_id=2)
        assert of(seen, AgentTextDone)[-1].text == "You said: wait stop that."
        check_invariants(seen)


async def test_held_long_speech_over_the_agent_interrupts_before_any_word() -> None:
    transcripts = ("what is the weather", "")
    async with session(transcripts, vad_enabled=True, barge_in_hold=True) as (client, _):
        await speak(client, 400, then_quiet_ms=400)
        await wait_speaking(client, 1)
        for _ in range(100):  # 2 s of speech; the STT shows no word (the phrase is empty)
            await client.send_raw(LOUD)
            await trio.sleep(0.02)
        await client.receive_until("state", state="interrupted")


async def test_a_backchannel_interrupts_at_once_and_the_agent_says_the_unheard_rest() -> None:
    transcripts = ("what is the weather", "uh-huh")
    async with session(transcripts, vad_enabled=True) as (client, _):
        await speak(client, 400, then_quiet_ms=400)
        seen = await wait_speaking(client, 1)
        started = trio.current_time()
        await speak(client, 300)  # "uh-huh" over the agent
        seen += await client.receive_until("state", state="interrupted")
        assert trio.current_time() - started < 0.5  # at the onset, not after the words
        await speak(client, 0, then_quiet_ms=400)
        seen += await client.receive_until("agent.text.done", turn_id=3)
        finals = [t for t in of(seen, TranscriptFrame) if t.final]
        assert [(t.turn_id, t.text) for t in finals][-1] == (2, "uh-huh")  # no reply to it
        cut, resumed = of(seen, AgentTextDone)[-2:]
        assert cut.interrupted and not resumed.interrupted
        said = "You said: what is the weather."
        assert (cut.heard_text + " " + resumed.text).split() == said.split()
        check_invariants(seen)


async def test_a_false_barge_in_restarts_what_was_not_heard() -> None:
    transcripts = ("what is the weather", "")  # the noise transcribes as nothing
    async with session(transcripts, vad_enabled=True, barge_in_min_words=0) as (client, _):
        await speak(client, 400, then_quiet_ms=400)
        await wait_speaking(client, 1)
        await speak(client, 100, then_quiet_ms=400)  # a cough: barge-in at once
        seen = await client.receive_until("state", state="interrupted")
        cut = of(seen, AgentTextDone)[-1]
        assert cut.interrupted
        seen = await client.receive_until("agent.text.done")
        resumed = of(seen, AgentTextDone)[-1]
        assert resumed.turn_id == 3 and not resumed.interrupted
        said = "You said: what is the weather."
        assert (cut.heard_text + " " + resumed.text).split() == said.split()


async def test_the_echo_guard_ignores_the_agents_own_words() -> None:
    transcripts = ("what is the weather", "you said what is")
    async with session(transcripts, vad_enabled=True, echo_cancellation=False) as (client, _):
        await speak(client, 400, then_quiet_ms=400)
        seen = await wait_speaking(client, 1)
        await speak(client, 600, then_quiet_ms=400)  # the agent's voice, back on the mic
        seen += await client.receive_until("agent.text.done", turn_id=1)
        assert not of(seen, AgentTextDone)[-1].interrupted
        assert not [s for s in of(seen, State) if s.state == "interrupted"]


# ---------------------------------------------------------------- a silent user


async def test_a_silent_user_is_asked_once() -> None:
    async with session(user_idle_timeout_s=1, user_idle_prompt="Still there?") as (client, _):
        await client.send_json({"type": "text", "text": "hi"})
        await client.receive_until("agent.text.done", turn_id=1)
        seen = await client.receive_until("agent.text.done", timeout=5)
        prompt = of(seen, AgentTextDone)[-1]
        assert (prompt.turn_id, prompt.text) == (2, "Still there?")
        with trio.move_on_after(1.6):
            extra = await client.receive_until("agent.text.done")
            raise AssertionError(f"asked twice: {extra}")
        await client.send_json({"type": "text", "text": "yes"})
        seen = await client.receive_until("agent.text.done", turn_id=3)
        assert of(seen, AgentTextDone)[-1].text == "You said: yes."


async def test_switching_to_manual_mid_session_opens_turns_at_the_first_audio() -> None:
    async with session(end_of_turn=False) as (client, started):
        assert started.config.turn_detection == "server_vad"
        await client.send_json({"type": "session.update", "config": {"turn_detection": "manual"}})
        await client.receive_until("session.updated")
        await speak(client, 0, then_quiet_ms=200)  # quiet audio: still a turn, push-to-talk
        await client.receive_until("state", state="listening")
        await client.send_json({"type": "audio.commit"})
        await client.receive_until("transcript", final=True)


class _ForgetfulVadSession(_LoudnessVadSession):
    def forget_speech(self) -> None:
        raise RuntimeError("a bug in a feature")


class ForgetfulVad(LoudnessVad):
    """A VAD whose ``forget_speech`` (called at a wake) raises."""

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        return _ForgetfulVadSession(300.0, sample_rate)


async def test_a_feature_that_fails_at_a_wake_is_turned_off_and_the_session_goes_on() -> None:
    class Plugin:
        @hookimpl
        def scaivoice_session_features(self) -> Iterator[FeatureSpec]:
            yield FeatureSpec(name="forgetful-vad", config_key="vad_enabled", factory=ForgetfulVad)

    host = host_with()
    host.register(Plugin(), name="forgetful")
    async with open_test_engine(host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(wake_word_enabled=True, vad_enabled=True)
            await client.send_json({"type": "wake"})
            await client.receive_until("warning", code="feature_failed")
            await client.send_json({"type": "text", "text": "still there?"})
            await client.receive_until("agent.text.done")
            nursery.cancel_scope.cancel()
