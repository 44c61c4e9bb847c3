"""The session side of "who is speaking": how speaker features' answers reach transcripts.

The features here are stand-ins (the subject is the session's wiring); the real diarization
and recognition features have tests of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import trio

from scaivoice.engine import (
    FeatureEvent,
    FeatureSession,
    FeatureSpec,
    SessionContext,
    SessionFeature,
    TurnSpeaker,
    WakeDetected,
    hookimpl,
)
from scaivoice.engine.testing import memory_transport_pair, open_test_engine, run_memory_session

from .conftest import host_with

_SPEECH = (b"\x00\x20" * 320) * 50  # 1 s of loud PCM16 at 16 kHz, in one message


class _Asked:
    """What the stand-in features were asked, and with which context."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, int]] = []
        self.contexts: list[SessionContext] = []


class _Diarizer(FeatureSession):
    def __init__(self, asked: _Asked) -> None:
        self.asked = asked

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        return []

    async def identify(self, pcm: bytes, *, final: bool) -> TurnSpeaker | None:
        self.asked.calls.append(("diarize", final, len(pcm)))
        return TurnSpeaker(label="S1" if final else "S?")


class _Recogniser(FeatureSession):
    def __init__(self, asked: _Asked) -> None:
        self.asked = asked

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        return []

    async def identify(self, pcm: bytes, *, final: bool) -> TurnSpeaker | None:
        self.asked.calls.append(("recognise", final, len(pcm)))
        return TurnSpeaker(speaker_id="alice", score=0.8123)


class _Waker(FeatureSession):
    def __init__(self, keywords: tuple[str, ...]) -> None:
        self.keywords = keywords
        self.fired = False

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        if self.fired:
            return []
        self.fired = True
        return [WakeDetected(confidence=0.93, keyword=self.keywords[0])]


class _Feature(SessionFeature):
    keywords = ("hey_jarvis", "alexa")

    def __init__(self, kind: str, asked: _Asked) -> None:
        self.kind = kind
        self.asked = asked

    def open_session(
        self, *, sample_rate: int, options: Mapping[str, Any], context: SessionContext
    ) -> FeatureSession:
        self.asked.contexts.append(context)
        if self.kind == "diarize":
            return _Diarizer(self.asked)
        if self.kind == "speaker_recognition":
            return _Recogniser(self.asked)
        return _Waker(context.wake_word or ("hey_jarvis",))


def _host(asked: _Asked) -> Any:
    class Plugin:
        @hookimpl
        def scaivoice_session_features(self) -> Iterator[FeatureSpec]:
            for key in ("diarize", "speaker_recognition", "wake_word_enabled"):
                yield FeatureSpec(
                    name=f"stand-in-{key}",
                    config_key=key,
                    factory=lambda options, key=key: _Feature(key, asked),
                )

    host = host_with()
    host.register(Plugin(), name="stand-ins")
    return host


_OPTED_IN = {"tenants": {"default": {"speaker_recognition": True}}}


async def test_final_transcripts_carry_the_speaker_label_id_and_score(
    autojump_clock: Any,
) -> None:
    from scaivoice.engine import frames as frames_module

    asked = _Asked()
    async with open_test_engine(_OPTED_IN, host=_host(asked)) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            started = await client.start(diarize=True, speaker_recognition=True)
            for _ in range(150):  # 3 s in real time (virtual): past the provisional point
                await client.send_raw(_SPEECH[:640])
                await trio.sleep(0.02)
            await client.send_json({"type": "audio.commit"})
            frames = await client.receive_until("transcript", final=True)
            nursery.cancel_scope.cancel()
    assert sorted(started.capabilities.features) == [  # type: ignore[attr-defined]
        "diarize",
        "speaker_recognition",
        "wake_word_enabled",
    ]
    assert started.capabilities.wake_words == ["alexa", "hey_jarvis"]  # type: ignore[attr-defined]
    transcripts = [f for f in frames if isinstance(f, frames_module.TranscriptFrame)]
    final = transcripts[-1]
    assert (final.speaker, final.speaker_id, final.speaker_score) == ("S1", "alice", 0.812)
    interims = [t for t in transcripts if not t.final]
    # interims never carry identification; they carry the label once it is known
    assert interims and all(t.speaker_score is None for t in interims)
    assert interims[0].speaker is None  # the test recogniser's only new interim: at 0.5 s
    wire = frames_module.encode_server_frame(interims[-1])
    assert b"speaker" not in wire  # not known yet, and never an id or score on an interim
    # provisional once (the diarizer only), then a final answer per feature on the whole turn
    provisional = [c for c in asked.calls if not c[1]]
    assert [c[0] for c in provisional] == ["diarize"]
    assert 2 * 32000 <= provisional[0][2] < 150 * 640
    finals = [c for c in asked.calls if c[1]]
    assert sorted(c[0] for c in finals) == ["diarize", "recognise"]
    assert all(c[2] == 150 * 640 for c in finals)
    assert {c.tenant for c in asked.contexts} == {"default"}


async def test_without_the_features_on_transcripts_have_no_speaker_keys(
    autojump_clock: Any,
) -> None:
    from scaivoice.engine import frames

    asked = _Asked()
    async with open_test_engine(host=_host(asked)) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start()
            await client.send_raw(_SPEECH)
            await client.send_json({"type": "audio.commit"})
            received = await client.receive_until("transcript", final=True)
            nursery.cancel_scope.cancel()
    final = [f for f in received if isinstance(f, frames.TranscriptFrame)][-1]
    wire = frames.encode_server_frame(final)
    assert b"speaker" not in wire
    assert asked.calls == []


async def test_the_server_wake_word_sends_a_wake_frame_and_opens_the_turn(
    autojump_clock: Any,
) -> None:
    from scaivoice.engine import frames

    asked = _Asked()
    async with open_test_engine(host=_host(asked)) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(wake_word_enabled=True, wake_word=["alexa"])
            await client.send_raw(_SPEECH)
            received = await client.receive_until("state", state="listening")
            nursery.cancel_scope.cancel()
    wakes = [f for f in received if isinstance(f, frames.WakeFrame)]
    assert wakes == [frames.WakeFrame(keyword="alexa", confidence=0.93)]
    assert asked.contexts[-1].wake_word == ("alexa",)


async def test_an_unknown_wake_word_is_refused_with_a_code(autojump_clock: Any) -> None:
    asked = _Asked()
    async with open_test_engine(host=_host(asked)) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start()
            await client.send_json(
                {"type": "session.update", "config": {"wake_word": ["okay_computer"]}}
            )
            received = await client.receive_until("error")
            nursery.cancel_scope.cancel()
    assert received[-1].code == "unknown_wake_word"  # type: ignore[union-attr]


async def test_interims_carry_the_provisional_label_once_known() -> None:
    from scaivoice.engine._session.speakers import SpeakerOfTurn

    answers = {
        False: TurnSpeaker(label="S2"),
        True: TurnSpeaker(label="S2", speaker_id=None, score=0.41),
    }

    async def identify(pcm: bytes, final: bool) -> TurnSpeaker | None:
        return answers[final]

    speaker = SpeakerOfTurn(
        identify, provisional=identify, diarize=True, recognise=True, max_ms=60_000
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            speaker.add(b"\0\0" * 16000)  # 1 s: too early for a provisional answer
            speaker.start_provisional(nursery)
            assert speaker.fields(final=False) == {"speaker": None}
            speaker.add(b"\0\0" * 16000)
            speaker.start_provisional(nursery)
        assert speaker.fields(final=False) == {"speaker": "S2"}
        await speaker.wait_final()  # never started: it runs here
    assert speaker.fields(final=True) == {
        "speaker": "S2",
        "speaker_id": None,
        "speaker_score": 0.41,
    }


class _Broken(FeatureSession):
    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        raise RuntimeError("a bug in a feature")


class _BrokenFeature(SessionFeature):
    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        return _Broken()


async def test_a_failing_feature_is_turned_off_and_the_session_goes_on(
    autojump_clock: Any,
) -> None:
    class Plugin:
        @hookimpl
        def scaivoice_session_features(self) -> Iterator[FeatureSpec]:
            yield FeatureSpec(
                name="broken", config_key="wake_word_enabled", factory=lambda o: _BrokenFeature()
            )

    host = host_with()
    host.register(Plugin(), name="broken")
    async with open_test_engine(host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(wake_word_enabled=True)
            await client.send_raw(_SPEECH)
            await client.receive_until("warning", code="feature_failed")
            await client.send_json({"type": "text", "text": "still there?"})
            await client.receive_until("agent.text.done")
            nursery.cancel_scope.cancel()


_SILENCE = bytes(640 * 25)  # 0.5 s


async def test_a_request_after_a_pause_following_the_wake_word_is_answered(
    autojump_clock: Any,
) -> None:
    asked = _Asked()
    async with open_test_engine(host=_host(asked)) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(wake_word_enabled=True)
            await client.send_raw(_SPEECH)  # "hey jarvis" (the stand-in fires on it)
            await client.receive_until("state", state="listening", turn_id=1)
            await client.send_raw(_SILENCE)  # the pause
            await client.send_json({"type": "audio.commit"})
            await client.receive_until("transcript", final=True, turn_id=1, text="")
            await trio.sleep(2)  # within the wake window
            await client.send_raw(_SPEECH)  # "what time is it?"
            await client.receive_until("state", state="listening", turn_id=2)
            await client.send_json({"type": "audio.commit"})
            await client.receive_until("agent.text.done", turn_id=2)
            nursery.cancel_scope.cancel()


async def test_after_the_wake_window_the_session_sleeps_again(autojump_clock: Any) -> None:
    from scaivoice.engine import frames

    asked = _Asked()
    async with open_test_engine(host=_host(asked)) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(wake_word_enabled=True)
            await client.send_raw(_SPEECH)
            await client.receive_until("state", state="listening", turn_id=1)
            await client.send_raw(_SILENCE)
            await client.send_json({"type": "audio.commit"})
            await client.receive_until("transcript", final=True, turn_id=1, text="")
            await trio.sleep(engine.config.session.wake_window_s + 1)
            await client.send_raw(_SPEECH)  # asleep: no turn opens (the stand-in fired once)
            await client.send_json({"type": "ping", "id": "after"})
            later = await client.receive_until("pong")
            nursery.cancel_scope.cancel()
    assert not [f for f in later if isinstance(f, frames.State) and f.state == "listening"]
