"""The OpenAI Realtime API (GA events) over a ScaiVoice protocol v1 session: a sans-IO translator.

::

    Realtime client ─ events ─► from_client ─► v1 frames, PCM16 ─► the session (unchanged)
    Realtime client ◄─ events ─ from_engine ◄─ v1 frames, PCM16 ◄─┘

The session engine is the one every ScaiVoice client talks to; this class only rewrites its
messages, keeping what it needs to name things the Realtime way (item ids, response ids,
output indexes). No I/O and no clock: the trio shell (:mod:`.transport`) feeds it messages and
tells it when the session has gone quiet.

How the two models meet:

- **Audio**: base64 PCM16 at 24 kHz both ways (the session's input and output rates are set to
  24000 at its start).
- **Turn detection**: ``server_vad`` / ``semantic_vad`` stream the audio to the session as it
  comes (its VAD ends turns and starts replies; ``interrupt_response`` is ``vad_enabled``). With
  turn detection off (``null``) the audio is held here as OpenAI's input buffer:
  ``input_audio_buffer.commit`` commits it, ``clear`` drops it, and ``response.create`` sends
  the committed audio and ``audio.commit`` (the session transcribes and replies).
- **Typed messages**: ``conversation.item.create`` (``input_text``) is held until
  ``response.create``, then sent as one ``text`` turn.
- **Responses**: one ScaiVoice agent turn is one response, created at its first output. Tool
  calls of a turn end its response once the session goes quiet waiting for their results (so
  clients that wait for ``response.done`` before running tools work); what the turn says after
  the results is a new response, as Realtime clients expect after ``response.create``.
- ``response.cancel`` is ``interrupt``; ``conversation.item.truncate`` is ``playback``.

Client events the session does not see (held audio and text, refusals) are still counted
against its frame-rate limit: each is passed on as a v1 ``ping`` (its ``pong`` is dropped).
"""

from __future__ import annotations

import base64
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..frames import (
    AgentAudioDone,
    AgentAudioStart,
    AgentText,
    AgentTextDone,
    ErrorFrame,
    SessionStarted,
    SessionUpdated,
    State,
    ToolCallFrame,
    TranscriptFrame,
    WarningFrame,
    decode_server_frame,
)
from .events import (
    SAMPLE_RATE,
    RealtimeInputError,
    SessionChange,
    ToolOutput,
    apply_session_update,
    decode_event,
    default_session,
    parse_append,
    parse_item,
    parse_response_create,
    parse_truncate,
    session_mode,
)

__all__ = ["RealtimeTranslator", "Translated"]

_BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
_CHUNK_BYTES = _BYTES_PER_MS * 200  # audio goes to the session in pieces of 200 ms at most
_MIN_COMMIT_MS = 100  # OpenAI's smallest committable buffer
_MAX_HELD_MS = 120_000  # the input buffer held without turn detection
_PRE_ROLL_MS = 300  # audio before the detected start that a turn includes
_PING = '{"type":"ping","id":"realtime"}'

#: ScaiVoice error codes that are the server's or a backend's fault (``server_error``); the
#: others are the client's (``invalid_request_error``).
_SERVER_FAULTS = frozenset(
    {
        "stt_failed",
        "llm_failed",
        "internal_error",
        "server_shutdown",
        "server_draining",
        "max_duration",
        "too_many_sessions",
    }
)
#: Errors the session answers a ``session.update`` with.
_CONFIG_ERRORS = frozenset(
    {
        "invalid_frame",
        "unknown_config_key",
        "invalid_config",
        "not_permitted",
        "unknown_voice",
        "invalid_tools",
        "unknown_wake_word",
    }
)

_SERVER_VAD = {"turn_detection": "server_vad", "vad_enabled": True}

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Translated:
    """What one client message becomes: messages for the session, events for the client."""

    to_engine: list[str | bytes] = field(default_factory=list)
    to_client: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Message:
    """An assistant message item of a response (audio with its transcript, or text)."""

    item_id: str
    output_index: int
    audio_offset_ms: float  # the turn's audio sent before this item's
    text: list[str] = field(default_factory=list)
    audio: bool = False
    audio_done: bool = False


@dataclass(slots=True)
class _Response:
    id: str
    turn_id: int
    items: list[_Message | dict[str, Any]] = field(default_factory=list)
    message: _Message | None = None
    awaiting_quiet: bool = False  # tool calls out: done once the session goes quiet


@dataclass(slots=True)
class _PendingUpdate:
    event_id: str | None
    change: SessionChange | None  # None: the translator's own update (not echoed)
    previous: dict[str, Any] | None


class RealtimeTranslator:
    """One Realtime connection's translation state.

    Args:
        model: the ``?model=`` of the connection, echoed in the session.
        id_prefix: the middle of every generated id (random by default; tests fix it).
    """

    def __init__(self, model: str, *, id_prefix: str | None = None) -> None:
        self.model = model
        self._prefix = id_prefix if id_prefix is not None else secrets.token_hex(5)
        self._counter = 0
        self.session: dict[str, Any] | None = None
        """The Realtime session object, once the session started."""
        self._mode = "manual"
        self._text_only = False
        self._updates: deque[_PendingUpdate] = deque()
        self._vad_pending = False  # server VAD is the default, not asked of the session yet
        # input
        self._received_ms = 0.0  # audio streamed to the session
        self._held = bytearray()  # the input buffer without turn detection
        self._committed = bytearray()
        self._committed_items: list[str] = []
        self._texts: list[tuple[str, str]] = []  # typed messages waiting for response.create
        self._sent_texts: deque[str] = deque()  # their item ids, waiting for a turn id
        self._sent_audio: deque[list[str]] = deque()  # committed items, waiting for a turn id
        self._last_item: str | None = None
        # the session's turns
        self._state = "idle"
        self._user_items: dict[int, str] = {}
        self._merged: dict[int, list[str]] = {}  # more committed items answered by a turn
        self._stopped: set[int] = set()
        self._interim: dict[int, str] = {}
        self._turn_audio_ms: dict[int, float] = {}
        self._audio_turn: int | None = None
        self._response: _Response | None = None
        self._responded: set[int] = set()
        self._assistant_items: dict[str, tuple[int, float]] = {}  # item -> turn, offset
        self._cancel_reason: str | None = None
        self._failed: str | None = None

    # ================================================================ ids

    def _id(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}_{self._prefix}{self._counter:05d}"

    def _event(self, kind: str, **fields: Any) -> str:
        return _encode({"type": kind, "event_id": self._id("event"), **fields}).decode()

    # ================================================================ start

    def start(self) -> str:
        """The ``session.start`` that opens the ScaiVoice session."""
        return _encode(
            {
                "type": "session.start",
                "protocol": 1,
                "config": {
                    "input_sample_rate": SAMPLE_RATE,
                    "output_sample_rate": SAMPLE_RATE,
                    "turn_detection": "manual",  # until the first event: see _on_started
                },
            }
        ).decode()

    @property
    def awaiting_quiet(self) -> bool:
        """Whether a response waits for the session to go quiet (its tool calls are out)."""
        return self._response is not None and self._response.awaiting_quiet

    def quiet(self) -> list[str]:
        """The session has sent nothing for a while: end a response whose tool calls are out."""
        if not self.awaiting_quiet:
            return []
        return self._close_response("completed")

    # ================================================================ client -> session

    def from_client(self, raw: str | bytes) -> Translated:
        """One client message: what to send the session, and what to answer at once."""
        out = Translated()
        event_id: str | None = None
        try:
            doc = decode_event(raw)
            event_id = doc.get("event_id")
            handler = _CLIENT_EVENTS.get(doc["type"])
            if handler is None:
                raise RealtimeInputError(
                    "unknown_event",
                    f"unknown or unsupported event type {doc['type']!r}; this server takes "
                    f"{', '.join(sorted(_CLIENT_EVENTS))}",
                    param="type",
                )
            if self._vad_pending and doc["type"] != "session.update":
                self._ask_server_vad(out)
            handler(self, doc, out)
        except RealtimeInputError as exc:
            out.to_client.append(self._error(exc, event_id or exc.event_id))
        if not out.to_engine:
            out.to_engine.append(_PING)  # counted by the session's flood guard
        return out

    def _on_session_update(self, doc: dict[str, Any], out: Translated) -> None:
        if self.session is None:  # pragma: no cover - the reader starts after session.started
            raise RealtimeInputError("not_started", "the session has not started yet")
        change = apply_session_update(self.session, doc)
        if self._vad_pending:
            self._vad_pending = False
            if "turn_detection" not in change.patch:
                change.patch.update(_SERVER_VAD)
        previous = self.session
        self._adopt(change.session)
        self._updates.append(_PendingUpdate(doc.get("event_id"), change, previous))
        out.to_engine.append(_encode({"type": "session.update", "config": change.patch}).decode())
        for note in change.notes:
            out.to_client.append(self._error(note, doc.get("event_id")))

    def _adopt(self, session: dict[str, Any]) -> None:
        old_mode = self._mode
        self.session = session
        self._mode = session_mode(session)
        self._text_only = "audio" not in (session.get("output_modalities") or ["audio"])
        if old_mode == "manual" and self._mode != "manual" and self._held:
            self._held.clear()  # turn detection on: the held buffer was never committed

    def _on_append(self, doc: dict[str, Any], out: Translated) -> None:
        pcm = parse_append(doc)
        if self._mode == "manual":
            if (len(self._held) + len(self._committed) + len(pcm)) > _MAX_HELD_MS * _BYTES_PER_MS:
                raise RealtimeInputError(
                    "input_audio_buffer_full",
                    f"the input buffer holds at most {_MAX_HELD_MS // 1000} s of audio: commit "
                    "and send response.create, or clear it",
                )
            self._held += pcm
            return
        self._received_ms += len(pcm) / _BYTES_PER_MS
        out.to_engine.extend(_chunks(pcm))

    def _on_commit(self, doc: dict[str, Any], out: Translated) -> None:
        if self._mode != "manual":
            out.to_engine.append('{"type":"audio.commit"}')
            return
        if len(self._held) < _MIN_COMMIT_MS * _BYTES_PER_MS:
            raise RealtimeInputError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: expected at least {_MIN_COMMIT_MS} ms of audio, got "
                f"{len(self._held) / _BYTES_PER_MS:.0f} ms",
            )
        item_id = self._id("item")
        self._committed += self._held
        self._held.clear()
        self._committed_items.append(item_id)
        out.to_client += self._user_audio_item(item_id)

    def _user_audio_item(self, item_id: str) -> list[str]:
        previous, self._last_item = self._last_item, item_id
        item = _user_item(item_id, {"type": "input_audio", "transcript": None})
        return [
            self._event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            self._event("conversation.item.added", previous_item_id=previous, item=item),
        ]

    def _on_clear(self, doc: dict[str, Any], out: Translated) -> None:
        if self._mode != "manual" and self._state == "listening":
            raise RealtimeInputError(
                "input_audio_buffer_clear_unsupported",
                "the server has detected speech in the buffer: it becomes a turn (with turn "
                "detection on, audio cannot be taken back once speech started)",
            )
        self._held.clear()
        out.to_client.append(self._event("input_audio_buffer.cleared"))

    def _on_item_create(self, doc: dict[str, Any], out: Translated) -> None:
        item = parse_item(doc)
        item_id = item.item_id or self._id("item")
        previous, self._last_item = self._last_item, item_id
        if isinstance(item, ToolOutput):
            try:
                result: Any = msgspec.json.decode(item.output) if item.output else ""
            except (msgspec.DecodeError, RecursionError):
                result = item.output
            out.to_engine.append(
                _encode({"type": "tool.result", "call_id": item.call_id, "result": result}).decode()
            )
            body: dict[str, Any] = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call_output",
                "call_id": item.call_id,
                "output": item.output,
                "status": "completed",
            }
        else:
            self._texts.append((item_id, item.text))
            body = _user_item(item_id, {"type": "input_text", "text": item.text})
        for kind in ("conversation.item.added", "conversation.item.done"):
            out.to_client.append(self._event(kind, previous_item_id=previous, item=body))

    def _on_response_create(self, doc: dict[str, Any], out: Translated) -> None:
        parse_response_create(doc)
        if self._committed:
            out.to_engine.extend(_chunks(bytes(self._committed)))
            out.to_engine.append('{"type":"audio.commit"}')
            self._sent_audio.append(self._committed_items)
            self._committed = bytearray()
            self._committed_items = []
        if self._texts:
            text = "\n".join(text for _, text in self._texts)
            if len(text) > 10000:
                self._texts.clear()
                raise RealtimeInputError(
                    "invalid_value",
                    "the messages waiting for a response are over 10000 characters together",
                )
            self._sent_texts.extend(item_id for item_id, _ in self._texts)
            self._texts.clear()
            out.to_engine.append(_encode({"type": "text", "text": text}).decode())
        if out.to_engine:
            self._cancel_reason = None
            return
        if self._response is not None or self._state in ("thinking", "speaking"):
            return  # a reply is under way (tool results continue it by themselves)
        raise RealtimeInputError(
            "nothing_to_respond_to",
            "there is no new user input to respond to: this server replies to the user's "
            "audio or messages (append and commit audio, or conversation.item.create a user "
            "message, then response.create)",
        )

    def _on_response_cancel(self, doc: dict[str, Any], out: Translated) -> None:
        if self._response is None and self._state not in ("thinking", "speaking"):
            raise RealtimeInputError(
                "response_cancel_not_active", "there is no active response to cancel"
            )
        self._cancel_reason = "client_cancelled"
        out.to_engine.append('{"type":"interrupt"}')

    def _on_truncate(self, doc: dict[str, Any], out: Translated) -> None:
        truncate = parse_truncate(doc)
        entry = self._assistant_items.get(truncate.item_id)
        if entry is None:
            raise RealtimeInputError(
                "item_not_found",
                f"no assistant audio item {truncate.item_id!r} in this conversation",
                param="item_id",
            )
        turn_id, offset_ms = entry
        played = round(offset_ms + truncate.audio_end_ms)
        out.to_engine.append(
            _encode({"type": "playback", "turn_id": turn_id, "played_ms": played}).decode()
        )
        out.to_client.append(
            self._event(
                "conversation.item.truncated",
                item_id=truncate.item_id,
                content_index=truncate.content_index,
                audio_end_ms=truncate.audio_end_ms,
            )
        )

    # ================================================================ session -> client

    def from_engine(self, text: str) -> list[str]:
        """A text frame of the session as Realtime events (often none)."""
        frame = decode_server_frame(text)
        if isinstance(frame, AgentText):
            return self._on_agent_text(frame)
        if isinstance(frame, State):
            return self._on_state(frame)
        if isinstance(frame, TranscriptFrame):
            return self._on_transcript(frame)
        if isinstance(frame, AgentAudioStart):
            self._audio_turn = frame.turn_id
            return []
        if isinstance(frame, AgentAudioDone):
            return self._on_audio_done(frame)
        if isinstance(frame, AgentTextDone):
            return self._on_text_done(frame)
        if isinstance(frame, ToolCallFrame):
            return self._on_tool_call(frame)
        if isinstance(frame, SessionStarted):
            return self._on_started(frame)
        if isinstance(frame, SessionUpdated):
            return self._on_updated()
        if isinstance(frame, ErrorFrame):
            return self._on_error(frame)
        if isinstance(frame, WarningFrame):
            return self._on_warning(frame)
        # pong, metrics, tool.cancel, wake, session.ended, expression_hint: no Realtime event
        return []

    def from_engine_audio(self, pcm: bytes) -> list[str]:
        """Agent audio (PCM16 at 24 kHz) as ``response.output_audio.delta``."""
        turn = self._audio_turn
        if turn is None:  # pragma: no cover - the session sends audio.start first
            return []
        self._turn_audio_ms[turn] = self._turn_audio_ms.get(turn, 0.0) + len(pcm) / _BYTES_PER_MS
        if self._text_only:
            return []
        events, message = self._message(turn)
        message.audio = True
        assert self._response is not None
        events.append(
            self._event(
                "response.output_audio.delta",
                response_id=self._response.id,
                item_id=message.item_id,
                output_index=message.output_index,
                content_index=0,
                delta=base64.b64encode(pcm).decode("ascii"),
            )
        )
        return events

    # ---------------------------------------------------------------- session

    def _on_started(self, frame: SessionStarted) -> list[str]:
        server_vad = "vad_enabled" in frame.capabilities.features
        self.session = default_session(
            self.model, frame.session_id, frame.config.voice_id, server_vad=server_vad
        )
        self._mode = session_mode(self.session)
        # OpenAI's default is server VAD that interrupts. It is asked of the session with the
        # client's first event (merged into it when that is a session.update), so that a client
        # that turns detection off at once never has the session segment its audio by voice.
        self._vad_pending = server_vad
        return [self._event("session.created", session=self.session)]

    def _ask_server_vad(self, out: Translated) -> None:
        self._vad_pending = False
        self._updates.append(_PendingUpdate(None, None, None))
        out.to_engine.append(_encode({"type": "session.update", "config": _SERVER_VAD}).decode())

    def _on_updated(self) -> list[str]:
        if not self._updates:  # pragma: no cover - the session answers updates only
            return []
        pending = self._updates.popleft()
        if pending.change is None:
            return []
        return [self._event("session.updated", session=pending.change.session)]

    def _on_error(self, frame: ErrorFrame) -> list[str]:
        event_id = None
        if frame.code in _CONFIG_ERRORS and self._updates:
            pending = self._updates.popleft()
            event_id = pending.event_id
            if pending.previous is not None:
                self._adopt(pending.previous)  # refused: the session is as it was
        if frame.code == "llm_failed":
            self._failed = frame.message
        kind = "server_error" if frame.code in _SERVER_FAULTS or frame.fatal else None
        return [self._error(RealtimeInputError(frame.code, frame.message), event_id, kind=kind)]

    def _on_warning(self, frame: WarningFrame) -> list[str]:
        if frame.code == "nothing_to_commit":
            error = RealtimeInputError(
                "input_audio_buffer_commit_empty",
                "nothing to commit: no speech has been detected since the last turn",
            )
            events = [self._error(error, None)]
            if self._sent_audio:  # held audio that opened no turn: its items stay empty
                usage = {"type": "duration", "seconds": 0.0}
                for item_id in self._sent_audio.popleft():
                    events.append(
                        self._event(
                            "conversation.item.input_audio_transcription.completed",
                            item_id=item_id,
                            content_index=0,
                            transcript="",
                            usage=usage,
                        )
                    )
            return events
        return [self._error(RealtimeInputError(frame.code, frame.message), None, kind="warning")]

    def _error(
        self, exc: RealtimeInputError, event_id: str | None, *, kind: str | None = None
    ) -> str:
        error = {
            "type": kind or "invalid_request_error",
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "event_id": event_id,
        }
        return self._event("error", error=error)

    # ---------------------------------------------------------------- user turns

    def _on_state(self, frame: State) -> list[str]:
        self._state = frame.state
        if frame.state in ("interrupted", "idle"):
            self._cancel_reason = None  # a cancel that found no reply is spent
        turn = frame.turn_id
        if turn is None:
            return []
        if frame.state == "listening":
            return self._user_turn_opened(turn)
        if frame.state == "thinking":
            return self._user_turn_ended(turn)
        return []

    def _user_turn_opened(self, turn: int) -> list[str]:
        if turn in self._user_items:
            return []
        if self._sent_audio:  # held audio, sent at response.create: no speech events
            items = self._sent_audio.popleft()
            self._user_items[turn] = items[0]
            self._merged[turn] = items[1:]
            self._stopped.add(turn)
            return []
        item_id = self._id("item")
        self._user_items[turn] = item_id
        start = max(0, round(self._received_ms) - _PRE_ROLL_MS)
        return [
            self._event("input_audio_buffer.speech_started", audio_start_ms=start, item_id=item_id)
        ]

    def _user_turn_ended(self, turn: int) -> list[str]:
        item_id = self._user_items.get(turn)
        if item_id is None:
            if self._sent_texts:  # a typed turn
                self._user_items[turn] = self._sent_texts.popleft()
                self._stopped.add(turn)
            return []
        if turn in self._stopped:
            return []
        self._stopped.add(turn)
        silence = (self.session or {}).get("audio", {}).get("input", {}).get("turn_detection")
        wait = (silence or {}).get("silence_duration_ms") or _PRE_ROLL_MS
        end = max(0, round(self._received_ms) - int(wait))
        return [
            self._event("input_audio_buffer.speech_stopped", audio_end_ms=end, item_id=item_id),
            *self._user_audio_item(item_id),
        ]

    def _on_transcript(self, frame: TranscriptFrame) -> list[str]:
        turn = frame.turn_id
        events: list[str] = []
        item_id = self._user_items.get(turn)
        if item_id is None:  # a turn that opened while the agent spoke (no listening state)
            item_id = self._user_items[turn] = self._id("item")
        if turn not in self._stopped and frame.final:
            self._stopped.add(turn)
            events += self._user_audio_item(item_id)
        if not frame.final:
            before = self._interim.get(turn, "")
            if frame.text.startswith(before) and len(frame.text) > len(before):
                self._interim[turn] = frame.text
                events.append(
                    self._event(
                        "conversation.item.input_audio_transcription.delta",
                        item_id=item_id,
                        content_index=0,
                        delta=frame.text[len(before) :],
                    )
                )
            return events
        self._interim.pop(turn, None)
        usage = {"type": "duration", "seconds": max(0, frame.end_ms - frame.start_ms) / 1000.0}
        for index, item in enumerate([item_id, *self._merged.pop(turn, [])]):
            events.append(
                self._event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item,
                    content_index=0,
                    transcript=frame.text if index == 0 else "",
                    usage=usage,
                )
            )
        return events

    # ---------------------------------------------------------------- responses

    def _open_response(self, turn: int) -> tuple[list[str], _Response]:
        """The response of agent turn ``turn``, created if it is not open yet."""
        events: list[str] = []
        response = self._response
        if response is not None and response.turn_id == turn:
            return events, response
        if response is not None:  # pragma: no cover - a newer turn's output ends the older
            events += self._close_response("cancelled")
        response = self._response = _Response(self._id("resp"), turn)
        self._responded.add(turn)
        self._failed = None
        events.append(self._event("response.created", response=self._response_body(response)))
        return events, response

    def _message(self, turn: int) -> tuple[list[str], _Message]:
        """The open assistant message of agent turn ``turn`` (created if needed)."""
        events, response = self._open_response(turn)
        message = response.message
        if message is not None:
            return events, message
        message = _Message(
            self._id("item"), len(response.items), self._turn_audio_ms.get(turn, 0.0)
        )
        response.message = message
        response.items.append(message)
        self._assistant_items[message.item_id] = (turn, message.audio_offset_ms)
        events.append(
            self._event(
                "response.output_item.added",
                response_id=response.id,
                output_index=message.output_index,
                item=self._message_body(message, "in_progress"),
            )
        )
        part = (
            {"type": "text", "text": ""} if self._text_only else {"type": "audio", "transcript": ""}
        )
        events.append(
            self._event(
                "response.content_part.added",
                response_id=response.id,
                item_id=message.item_id,
                output_index=message.output_index,
                content_index=0,
                part=part,
            )
        )
        return events, message

    def _on_agent_text(self, frame: AgentText) -> list[str]:
        events, message = self._message(frame.turn_id)
        assert self._response is not None
        self._response.awaiting_quiet = False  # the model speaks again: its tools answered
        delta = frame.delta if message.text else frame.delta.lstrip()  # a round's space
        if not delta:
            return events
        message.text.append(delta)
        kind = (
            "response.output_text.delta"
            if self._text_only
            else ("response.output_audio_transcript.delta")
        )
        events.append(
            self._event(
                kind,
                response_id=self._response.id,
                item_id=message.item_id,
                output_index=message.output_index,
                content_index=0,
                delta=delta,
            )
        )
        return events

    def _on_audio_done(self, frame: AgentAudioDone) -> list[str]:
        response = self._response
        if self._audio_turn == frame.turn_id:
            self._audio_turn = None
        if response is None or response.turn_id != frame.turn_id or response.message is None:
            return []
        return self._audio_done(response, response.message)

    def _audio_done(self, response: _Response, message: _Message) -> list[str]:
        if not message.audio or message.audio_done:
            return []
        message.audio_done = True
        return [
            self._event(
                "response.output_audio.done",
                response_id=response.id,
                item_id=message.item_id,
                output_index=message.output_index,
                content_index=0,
            )
        ]

    def _on_tool_call(self, frame: ToolCallFrame) -> list[str]:
        events, response = self._open_response(frame.turn_id)
        arguments = _encode(frame.arguments).decode()
        item: dict[str, Any] = {
            "id": self._id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": frame.call_id,
            "name": frame.name,
            "arguments": "",
        }
        index = len(response.items)
        response.items.append(item)
        common = {"response_id": response.id, "output_index": index}
        events.append(self._event("response.output_item.added", **common, item=dict(item)))
        ids = {"item_id": item["id"], "call_id": frame.call_id}
        events.append(
            self._event("response.function_call_arguments.delta", **common, **ids, delta=arguments)
        )
        item.update(arguments=arguments, status="completed")
        events.append(
            self._event(
                "response.function_call_arguments.done",
                **common,
                **ids,
                name=frame.name,
                arguments=arguments,
            )
        )
        events.append(self._event("response.output_item.done", **common, item=item))
        response.awaiting_quiet = True
        return events

    def _on_text_done(self, frame: AgentTextDone) -> list[str]:
        status = "cancelled" if frame.interrupted else "completed"
        response = self._response
        if response is not None and response.turn_id == frame.turn_id:
            return self._close_response(status)
        if frame.turn_id in self._responded:
            return []  # its response ended at its tool calls; nothing came after them
        events, _ = self._open_response(frame.turn_id)  # a reply with no output at all
        return events + self._close_response(status)

    def _close_response(self, status: str) -> list[str]:
        response = self._response
        assert response is not None
        self._response = None
        events: list[str] = []
        message = response.message
        if message is not None:
            response.message = None
            events += self._audio_done(response, message)
            text = "".join(message.text)
            common = {
                "response_id": response.id,
                "item_id": message.item_id,
                "output_index": message.output_index,
                "content_index": 0,
            }
            if self._text_only:
                events.append(self._event("response.output_text.done", **common, text=text))
                part: dict[str, Any] = {"type": "text", "text": text}
            else:
                events.append(
                    self._event("response.output_audio_transcript.done", **common, transcript=text)
                )
                part = {"type": "audio", "transcript": text}
            events.append(self._event("response.content_part.done", **common, part=part))
            item_status = "completed" if status == "completed" else "incomplete"
            events.append(
                self._event(
                    "response.output_item.done",
                    response_id=response.id,
                    output_index=message.output_index,
                    item=self._message_body(message, item_status),
                )
            )
        if self._failed is not None and status == "completed":
            status = "failed"
        body = self._response_body(response, status)
        if status == "cancelled":
            body["status_details"] = {
                "type": "cancelled",
                "reason": self._cancel_reason or "turn_detected",
            }
        elif status == "failed":
            body["status_details"] = {
                "type": "failed",
                "error": {"type": "server_error", "code": "llm_failed", "message": self._failed},
            }
        self._cancel_reason = None
        self._failed = None
        events.append(self._event("response.done", response=body))
        return events

    def _message_body(self, message: _Message, status: str) -> dict[str, Any]:
        text = "".join(message.text) if status != "in_progress" else ""
        content = (
            {"type": "output_text", "text": text}
            if self._text_only
            else {"type": "output_audio", "transcript": text}
        )
        return {
            "id": message.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [content] if status != "in_progress" else [],
        }

    def _response_body(self, response: _Response, status: str = "in_progress") -> dict[str, Any]:
        output = [
            item
            if isinstance(item, dict)
            else self._message_body(item, "completed" if status == "completed" else "incomplete")
            for item in response.items
        ]
        voice = ((self.session or {}).get("audio") or {}).get("output", {}).get("voice")
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": status,
            "status_details": None,
            "output": output if status != "in_progress" else [],
            "conversation_id": None,
            "output_modalities": ["text"] if self._text_only else ["audio"],
            "max_output_tokens": "inf",
            "audio": {
                "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": voice}
            },
            "usage": None,
            "metadata": None,
        }


def _user_item(item_id: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [content],
    }


def _chunks(pcm: bytes) -> list[str | bytes]:
    return [pcm[i : i + _CHUNK_BYTES] for i in range(0, len(pcm), _CHUNK_BYTES)]


_CLIENT_EVENTS = {
    "session.update": RealtimeTranslator._on_session_update,
    "input_audio_buffer.append": RealtimeTranslator._on_append,
    "input_audio_buffer.commit": RealtimeTranslator._on_commit,
    "input_audio_buffer.clear": RealtimeTranslator._on_clear,
    "conversation.item.create": RealtimeTranslator._on_item_create,
    "response.create": RealtimeTranslator._on_response_create,
    "response.cancel": RealtimeTranslator._on_response_cancel,
    "conversation.item.truncate": RealtimeTranslator._on_truncate,
}
