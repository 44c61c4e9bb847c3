"""Transition tables for the sans-IO conversation state machine."""

from __future__ import annotations

import pytest

from scaivoice.engine._session.statemachine import (
    AgentOutputStarted,
    AgentTurnEnded,
    CancelAgentTurn,
    Commit,
    Conversation,
    DiscardUserTurn,
    EmitState,
    EmitWarning,
    FinalizeUserTurn,
    InterruptRequested,
    OpenUserTurn,
    OpenWakeWindow,
    SpeechStart,
    SpeechStop,
    StartAgentTurn,
    TranscriptFinal,
    TypedText,
    UserAudio,
    WakeWindowClosed,
    WakeWord,
)

# Each row: (setup events, event under test, expected actions, expected state after).
PUSH_TO_TALK = [
    ([], UserAudio(), [OpenUserTurn(1), EmitState("listening", 1)], "listening"),
    ([UserAudio()], UserAudio(), [], "listening"),
    ([UserAudio()], Commit(), [FinalizeUserTurn(1), EmitState("thinking", 1)], "thinking"),
    (
        [],
        Commit(),
        [EmitWarning("nothing_to_commit", "audio.commit with no user audio to commit")],
        "idle",
    ),
    (
        [UserAudio(), Commit()],
        TranscriptFinal(1, "hi"),
        [StartAgentTurn(1, "hi")],
        "thinking",
    ),
    ([UserAudio(), Commit()], TranscriptFinal(1, ""), [EmitState("idle", None)], "idle"),
    ([UserAudio(), Commit()], TranscriptFinal(7, "stale"), [], "thinking"),
    # The STT stream ended on its own (failure, or its own endpointing): the turn is over.
    ([UserAudio()], TranscriptFinal(1, ""), [EmitState("idle", None)], "idle"),
    (
        [UserAudio()],
        TranscriptFinal(1, "hi"),
        [StartAgentTurn(1, "hi"), EmitState("thinking", 1)],
        "thinking",
    ),
    (
        [UserAudio(), Commit(), TranscriptFinal(1, "hi")],
        AgentOutputStarted(1),
        [EmitState("speaking", 1)],
        "speaking",
    ),
    (
        [UserAudio(), Commit(), TranscriptFinal(1, "hi"), AgentOutputStarted(1)],
        AgentTurnEnded(1, interrupted=False),
        [EmitState("idle", None)],
        "idle",
    ),
    # Audio while the agent speaks opens the next user turn without interrupting.
    (
        [UserAudio(), Commit(), TranscriptFinal(1, "hi"), AgentOutputStarted(1)],
        UserAudio(),
        [OpenUserTurn(2)],
        "speaking",
    ),
    ([], TypedText("hello"), [StartAgentTurn(1, "hello"), EmitState("thinking", 1)], "thinking"),
    (
        [UserAudio()],
        TypedText("typed"),
        [DiscardUserTurn(1), StartAgentTurn(2, "typed"), EmitState("thinking", 2)],
        "thinking",
    ),
]

BARGE_IN = [
    ([], InterruptRequested(), [], "idle"),
    # Interrupted while the user's turn is still being recognised: no reply follows.
    ([UserAudio(), Commit()], InterruptRequested(), [], "thinking"),
    (
        [UserAudio(), Commit(), InterruptRequested()],
        TranscriptFinal(1, "hi"),
        [EmitState("interrupted", 1), EmitState("idle", None)],
        "idle",
    ),
    (
        [TypedText("a")],
        InterruptRequested(),
        [CancelAgentTurn(1)],
        "thinking",  # held until the turn has really stopped
    ),
    (
        [TypedText("a"), AgentOutputStarted(1)],
        InterruptRequested(),
        [CancelAgentTurn(1)],
        "speaking",
    ),
    (
        [TypedText("a"), AgentOutputStarted(1), InterruptRequested()],
        InterruptRequested(),
        [],
        "speaking",
    ),
    (
        [TypedText("a"), AgentOutputStarted(1), InterruptRequested()],
        AgentTurnEnded(1, interrupted=True),
        [EmitState("interrupted", 1), EmitState("idle", None)],
        "idle",
    ),
    # The turn finished before the cancel took effect: it was not interrupted.
    (
        [TypedText("a"), AgentOutputStarted(1), InterruptRequested()],
        AgentTurnEnded(1, interrupted=False),
        [EmitState("idle", None)],
        "idle",
    ),
    (
        [TypedText("a"), AgentOutputStarted(1), AgentTurnEnded(1, interrupted=False)],
        InterruptRequested(),
        [],
        "idle",
    ),
    # VAD speech with barge-in cancels and the user's new turn opens.
    (
        [TypedText("a"), AgentOutputStarted(1)],
        SpeechStart(barge_in=True),
        [CancelAgentTurn(1), OpenUserTurn(2)],
        "speaking",
    ),
    (
        [TypedText("a"), AgentOutputStarted(1), SpeechStart(barge_in=True)],
        AgentTurnEnded(1, interrupted=True),
        [EmitState("interrupted", 1), EmitState("listening", 2)],
        "listening",
    ),
    # Speech without barge-in (vad_enabled off) does not cancel.
    (
        [TypedText("a"), AgentOutputStarted(1)],
        SpeechStart(barge_in=False),
        [OpenUserTurn(2)],
        "speaking",
    ),
    # A newer user turn supersedes the running agent turn: cancel, then start it.
    (
        [TypedText("a"), AgentOutputStarted(1)],
        TypedText("b"),
        [CancelAgentTurn(1)],
        "speaking",
    ),
    (
        [TypedText("a"), AgentOutputStarted(1), TypedText("b")],
        AgentTurnEnded(1, interrupted=True),
        [EmitState("interrupted", 1), StartAgentTurn(2, "b"), EmitState("thinking", 2)],
        "thinking",
    ),
]


def _conversation(**kwargs: bool) -> Conversation:
    return Conversation(**kwargs)


@pytest.mark.parametrize(("setup", "event", "actions", "state"), PUSH_TO_TALK + BARGE_IN)
def test_transition(setup, event, actions, state) -> None:
    conv = _conversation()
    for earlier in setup:
        conv.handle(earlier)
    assert conv.handle(event) == actions
    assert conv.state == state


VAD_SEGMENTED = [
    ([], UserAudio(), [], "idle"),
    ([], SpeechStart(barge_in=True), [OpenUserTurn(1), EmitState("listening", 1)], "listening"),
    (
        [SpeechStart(barge_in=True)],
        SpeechStop(),
        [FinalizeUserTurn(1), EmitState("thinking", 1)],
        "thinking",
    ),
    # The user speaks again while the previous turn is still being transcribed.
    (
        [SpeechStart(barge_in=True), SpeechStop()],
        SpeechStart(barge_in=True),
        [OpenUserTurn(2), EmitState("listening", 2)],
        "listening",
    ),
]


@pytest.mark.parametrize(("setup", "event", "actions", "state"), VAD_SEGMENTED)
def test_vad_segmented_transition(setup, event, actions, state) -> None:
    conv = _conversation(vad_segmentation=True)
    for earlier in setup:
        conv.handle(earlier)
    assert conv.handle(event) == actions
    assert conv.state == state


WAKE_WORD = [
    ([], UserAudio(), [], "idle"),
    ([], SpeechStart(barge_in=False), [], "idle"),
    ([], WakeWord(), [OpenUserTurn(1), EmitState("listening", 1)], "listening"),
    (
        [WakeWord(), Commit(), TranscriptFinal(1, "hi"), AgentOutputStarted(1)],
        AgentTurnEnded(1, interrupted=False),
        [EmitState("idle", None)],
        "idle",
    ),
]


@pytest.mark.parametrize(("setup", "event", "actions", "state"), WAKE_WORD)
def test_wake_word_transition(setup, event, actions, state) -> None:
    conv = _conversation(wake_word_mode=True)
    for earlier in setup:
        conv.handle(earlier)
    assert conv.handle(event) == actions
    assert conv.state == state


def test_wake_word_mode_sleeps_again_after_a_reply() -> None:
    conv = _conversation(wake_word_mode=True)
    for event in (WakeWord(), Commit(), TranscriptFinal(1, "hi"), AgentTurnEnded(1, False)):
        conv.handle(event)
    assert conv.handle(UserAudio()) == []
    assert conv.handle(WakeWord()) == [OpenUserTurn(2), EmitState("listening", 2)]


def test_a_pause_after_the_wake_word_keeps_the_session_awake_for_the_request() -> None:
    conv = _conversation(wake_word_mode=True, vad_segmentation=True)
    for event in (WakeWord(), Commit()):
        conv.handle(event)
    # "Hey Jarvis." ... the turn the wake opened ends with no words: wait for the request
    assert conv.handle(TranscriptFinal(1, "")) == [OpenWakeWindow(1), EmitState("idle", None)]
    assert conv.awake
    assert conv.handle(SpeechStart(barge_in=False)) == [
        OpenUserTurn(2),
        EmitState("listening", 2),
    ]
    conv.handle(SpeechStop())
    assert conv.handle(TranscriptFinal(2, "what time is it")) == [
        StartAgentTurn(2, "what time is it")
    ]
    assert conv.handle(WakeWindowClosed(1)) == []  # a request came: the window no longer counts
    assert conv.awake


def test_the_wake_window_closes_when_nothing_is_asked() -> None:
    conv = _conversation(wake_word_mode=True, vad_segmentation=True)
    for event in (WakeWord(), Commit(), TranscriptFinal(1, "")):
        conv.handle(event)
    assert conv.handle(WakeWindowClosed(1)) == []
    assert not conv.awake
    assert conv.handle(SpeechStart(barge_in=False)) == []  # asleep again


def test_an_empty_turn_after_the_wake_turn_sends_the_session_to_sleep() -> None:
    conv = _conversation(wake_word_mode=True, vad_segmentation=True)
    for event in (WakeWord(), Commit(), TranscriptFinal(1, ""), SpeechStart(False)):
        conv.handle(event)
    conv.handle(SpeechStop())
    assert conv.handle(TranscriptFinal(2, "")) == [EmitState("idle", None)]  # no second window
    assert not conv.awake


def test_turn_ids_increase_across_typed_and_spoken_turns() -> None:
    conv = _conversation()
    conv.handle(TypedText("a"))
    conv.handle(AgentTurnEnded(1, False))
    assert conv.handle(UserAudio())[0] == OpenUserTurn(2)
    conv.handle(Commit())
    assert conv.handle(TranscriptFinal(2, "b")) == [StartAgentTurn(2, "b")]


def test_the_turn_a_wake_word_opens_waits_for_speech_after_the_keyword() -> None:
    """Hey Jarvis, ... what time is it? The end of the keyword's speech and the pause after
    it do not end the turn; the request's own end does."""
    conv = _conversation(wake_word_mode=True, vad_segmentation=True)
    assert conv.handle(WakeWord()) == [
        OpenUserTurn(1),
        OpenWakeWindow(1),
        EmitState("listening", 1),
    ]
    assert conv.handle(SpeechStop()) == []  # the keyword's speech ended
    assert conv.state == "listening"
    assert conv.handle(SpeechStart(barge_in=False)) == []  # the request: the same turn
    assert conv.handle(SpeechStop()) == [FinalizeUserTurn(1), EmitState("thinking", 1)]
    assert conv.handle(WakeWindowClosed(1)) == []  # the request came: nothing to close
    assert conv.handle(TranscriptFinal(1, "what time is it")) == [
        StartAgentTurn(1, "what time is it")
    ]


def test_a_wake_with_nothing_said_after_it_ends_when_the_window_closes() -> None:
    conv = _conversation(wake_word_mode=True, vad_segmentation=True)
    conv.handle(WakeWord())
    assert conv.handle(SpeechStop()) == []
    assert conv.handle(WakeWindowClosed(1)) == [FinalizeUserTurn(1), EmitState("thinking", 1)]
    assert conv.handle(TranscriptFinal(1, "")) == [EmitState("idle", None)]
    assert not conv.awake  # no second window: asleep
    assert conv.handle(SpeechStart(barge_in=False)) == []


def test_a_commit_ends_the_woken_turn_at_once() -> None:
    conv = _conversation(wake_word_mode=True, vad_segmentation=True)
    conv.handle(WakeWord())
    assert conv.handle(Commit()) == [FinalizeUserTurn(1), EmitState("thinking", 1)]


def test_without_vad_segmentation_the_wake_opens_no_window() -> None:
    conv = _conversation(wake_word_mode=True)
    assert conv.handle(WakeWord()) == [OpenUserTurn(1), EmitState("listening", 1)]


def test_with_client_vad_frames_the_clients_stop_ends_the_woken_turn() -> None:
    """The client's own VAD ends turns: its stop after a wake is the end it means."""
    conv = _conversation(wake_word_mode=True, vad_segmentation=True, server_endpointing=False)
    assert conv.handle(WakeWord()) == [OpenUserTurn(1), EmitState("listening", 1)]
    assert conv.handle(SpeechStop()) == [FinalizeUserTurn(1), EmitState("thinking", 1)]
