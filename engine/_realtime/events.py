"""OpenAI Realtime client events, parsed and checked, and the Realtime session object mapped onto
ScaiVoice session config (sans-IO).

A bad event raises :class:`RealtimeInputError`, which the translator answers with a Realtime
``error`` event; the connection goes on. Shapes follow the GA Realtime API (the ``openai``
SDK's ``openai.types.realtime``). Unknown keys of a ``session`` object are echoed and ignored
(the API grows; clients of newer SDKs should still connect); keys that are known but cannot
be honoured are applied as far as they go and reported with an ``error`` event
(``unsupported_value``) that names them.
"""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = [
    "SAMPLE_RATE",
    "RealtimeInputError",
    "SessionChange",
    "ToolOutput",
    "Truncate",
    "UserText",
    "apply_session_update",
    "decode_event",
    "default_session",
    "parse_append",
    "parse_item",
    "parse_response_create",
    "parse_truncate",
]

SAMPLE_RATE = 24000
"""The rate of Realtime ``audio/pcm`` audio, both ways."""

STOCK_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
"""OpenAI's voice names: they select the server's default voice (ScaiVoice has none of them)."""

_PCM = {"type": "audio/pcm", "rate": SAMPLE_RATE}
_MAX_TEXT = 10000  # the longest typed turn (protocol v1 ``text``)
_EAGERNESS = {"low": "low", "medium": "medium", "high": "high", "auto": "medium"}

_decoder = msgspec.json.Decoder()


class RealtimeInputError(Exception):
    """A client event the server cannot take: answered with an ``error`` event.

    Args:
        code: the stable ``error.code``.
        message: for humans.
        param: the offending field (``session.audio.output.speed``), if one.
        event_id: the client event's ``event_id``, when known.
    """

    def __init__(
        self, code: str, message: str, *, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id


# --------------------------------------------------------------------------- decoding


def decode_event(raw: str | bytes) -> dict[str, Any]:
    """One client message as an event object with a string ``type``.

    Raises:
        RealtimeInputError: a binary message, not JSON, not an object, no ``type``.
    """
    if isinstance(raw, bytes):
        raise RealtimeInputError(
            "invalid_event",
            "binary messages are not part of the Realtime API: send JSON events (audio as "
            "base64 in input_audio_buffer.append)",
        )
    try:
        doc = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise RealtimeInputError("invalid_json", f"the event is not JSON: {exc}") from exc
    except RecursionError:
        raise RealtimeInputError("invalid_json", "the event's JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise RealtimeInputError("invalid_event", "an event is a JSON object with a 'type'")
    event_id = doc.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise RealtimeInputError(
            "invalid_type", "event_id must be a string", param="event_id", event_id=None
        )
    if not isinstance(doc.get("type"), str):
        raise RealtimeInputError(
            "missing_required_parameter",
            "every event needs a string 'type'",
            param="type",
            event_id=event_id,
        )
    return doc


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], param: str) -> Any:
    """``doc[key]`` if present and of ``kind`` (``None`` when absent or null)."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        wanted = {"dict": "an object", "list": "an array", "str": "a string"}.get(names, names)
        raise RealtimeInputError("invalid_type", f"{param} must be {wanted}", param=param)
    return value


def _required(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], param: str) -> Any:
    value = _get(doc, key, kind, param)
    if value is None:
        raise RealtimeInputError("missing_required_parameter", f"{param} is required", param=param)
    return value


# --------------------------------------------------------------------------- audio


def parse_append(doc: dict[str, Any]) -> bytes:
    """The PCM16 of ``input_audio_buffer.append`` (base64 in ``audio``)."""
    audio = _required(doc, "audio", str, "audio")
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RealtimeInputError(
            "invalid_value", f"audio is not base64: {exc}", param="audio"
        ) from exc
    if len(pcm) % 2:
        raise RealtimeInputError(
            "invalid_value",
            "audio is PCM16 (audio/pcm at 24 kHz): an even number of bytes",
            param="audio",
        )
    return pcm


# --------------------------------------------------------------------------- items


@dataclass(frozen=True, slots=True)
class UserText:
    """A user message typed as ``input_text`` parts."""

    item_id: str | None
    text: str


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A ``function_call_output`` item: the result of a call the server asked for."""

    item_id: str | None
    call_id: str
    output: str


def parse_item(doc: dict[str, Any]) -> UserText | ToolOutput:
    """The item of ``conversation.item.create``.

    Raises:
        RealtimeInputError: a malformed item, or a kind this server does not take (system
            and assistant messages, audio or image content, function calls).
    """
    item = _required(doc, "item", dict, "item")
    item_id = _get(item, "id", str, "item.id")
    kind = _get(item, "type", str, "item.type") or "message"
    if kind == "function_call_output":
        call_id = _required(item, "call_id", str, "item.call_id")
        if not 0 < len(call_id) <= 128:
            raise RealtimeInputError(
                "invalid_value", "item.call_id is 1 to 128 characters", param="item.call_id"
            )
        output = _get(item, "output", str, "item.output") or ""
        return ToolOutput(item_id, call_id, output)
    if kind != "message":
        raise RealtimeInputError(
            "unsupported_value",
            f"items of type {kind!r} are not supported: create user messages (input_text) "
            "and function_call_output items",
            param="item.type",
        )
    role = _required(item, "role", str, "item.role")
    if role != "user":
        raise RealtimeInputError(
            "unsupported_value",
            f"{role!r} messages are not supported: set the system prompt with session.update "
            "instructions; only user messages can be added",
            param="item.role",
        )
    parts = _required(item, "content", list, "item.content")
    texts: list[str] = []
    for index, part in enumerate(parts):
        param = f"item.content[{index}]"
        if not isinstance(part, dict):
            raise RealtimeInputError("invalid_type", f"{param} must be an object", param=param)
        part_type = _get(part, "type", str, param + ".type")
        if part_type != "input_text":
            raise RealtimeInputError(
                "unsupported_value",
                f"content of type {part_type!r} is not supported in conversation.item.create: "
                "send text as input_text, audio with input_audio_buffer.append",
                param=param + ".type",
            )
        texts.append(_get(part, "text", str, param + ".text") or "")
    text = "\n".join(t for t in texts if t.strip())
    if not text.strip():
        raise RealtimeInputError("invalid_value", "the message has no text", param="item.content")
    if len(text) > _MAX_TEXT:
        raise RealtimeInputError(
            "invalid_value",
            f"a typed message is limited to {_MAX_TEXT} characters",
            param="item.content",
        )
    return UserText(item_id, text)


@dataclass(frozen=True, slots=True)
class Truncate:
    """``conversation.item.truncate``: the client played ``audio_end_ms`` of an item."""

    item_id: str
    content_index: int
    audio_end_ms: int


def parse_truncate(doc: dict[str, Any]) -> Truncate:
    item_id = _required(doc, "item_id", str, "item_id")
    content_index = _get(doc, "content_index", int, "content_index") or 0
    audio_end_ms = _required(doc, "audio_end_ms", int, "audio_end_ms")
    if audio_end_ms < 0:
        raise RealtimeInputError(
            "invalid_value", "audio_end_ms must be 0 or more", param="audio_end_ms"
        )
    return Truncate(item_id, content_index, audio_end_ms)


def parse_response_create(doc: dict[str, Any]) -> None:
    """Check ``response.create``: out-of-band responses and custom input do not map."""
    response = _get(doc, "response", dict, "response")
    if response is None:
        return
    if response.get("conversation") == "none":
        raise RealtimeInputError(
            "unsupported_value",
            "out-of-band responses (conversation: none) are not supported: every reply "
            "belongs to the conversation",
            param="response.conversation",
        )
    if response.get("input") is not None:
        raise RealtimeInputError(
            "unsupported_value",
            "response.input is not supported: add the user's message with "
            "conversation.item.create, then response.create",
            param="response.input",
        )


# --------------------------------------------------------------------------- the session


def default_session(
    model: str, session_id: str, voice: str | None, *, server_vad: bool
) -> dict[str, Any]:
    """The session object of ``session.created``."""
    turn_detection: dict[str, Any] | None = (
        {"type": "server_vad", "create_response": True, "interrupt_response": True}
        if server_vad
        else None
    )
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {
                "format": dict(_PCM),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": turn_detection,
            },
            "output": {"format": dict(_PCM), "voice": voice, "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
    }


def session_mode(session: dict[str, Any]) -> str:
    """``server_vad``, ``semantic_vad`` or ``manual`` (turn detection off)."""
    detection = session["audio"]["input"]["turn_detection"]
    return "manual" if detection is None else str(detection["type"])


@dataclass(slots=True)
class SessionChange:
    """What a ``session.update`` does: the new session object, the ScaiVoice config patch,
    and what was accepted without an effect."""

    session: dict[str, Any]
    patch: dict[str, Any] = field(default_factory=dict)
    notes: list[RealtimeInputError] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return session_mode(self.session)

    @property
    def text_only(self) -> bool:
        return "audio" not in (self.session.get("output_modalities") or ["audio"])


def apply_session_update(current: dict[str, Any], doc: dict[str, Any]) -> SessionChange:
    """Merge ``session.update``'s ``session`` into ``current`` and map it to config keys.

    Raises:
        RealtimeInputError: a value of the wrong type, an audio format other than 24 kHz
            PCM16, MCP tools, a transcription session; nothing is applied then.
    """
    update = _required(doc, "session", dict, "session")
    change = SessionChange(copy.deepcopy(current))
    new, patch = change.session, change.patch
    kind = _get(update, "type", str, "session.type")
    if kind is not None and kind != "realtime":
        raise RealtimeInputError(
            "unsupported_value",
            f"session type {kind!r} is not supported: this endpoint serves 'realtime' sessions",
            param="session.type",
        )
    for key, value in update.items():
        if key not in ("audio", "type"):
            new[key] = value  # echoed; the mapped ones are checked below
    if "instructions" in update:
        patch["system_prompt"] = _get(update, "instructions", str, "session.instructions")
    if "output_modalities" in update:
        modalities = _get(update, "output_modalities", list, "session.output_modalities")
        if not modalities or any(m not in ("audio", "text") for m in modalities):
            raise RealtimeInputError(
                "invalid_value",
                "output_modalities is ['audio'] or ['text']",
                param="session.output_modalities",
            )
    audio = _get(update, "audio", dict, "session.audio") or {}
    _merge_input(audio, new, patch, change.notes)
    _merge_output(audio, new, patch)
    if "tools" in update or "tool_choice" in update:
        _merge_tools(update, new, patch, change.notes)
    return change


def _merge_input(
    audio: dict[str, Any],
    new: dict[str, Any],
    patch: dict[str, Any],
    notes: list[RealtimeInputError],
) -> None:
    source = _get(audio, "input", dict, "session.audio.input")
    if source is None:
        return
    target = new["audio"]["input"]
    for key, value in source.items():
        if key != "turn_detection":
            target[key] = value
    if "format" in source:
        _check_format(source, "session.audio.input.format")
    if "turn_detection" not in source:
        return
    param = "session.audio.input.turn_detection"
    detection = _get(source, "turn_detection", dict, param)
    if detection is None:
        target["turn_detection"] = None
        patch.update(turn_detection="manual", vad_enabled=False, user_idle_timeout_s=None)
        return
    kind = _get(detection, "type", str, param + ".type") or "server_vad"
    if kind not in ("server_vad", "semantic_vad"):
        raise RealtimeInputError(
            "invalid_value",
            "turn_detection.type is 'server_vad' or 'semantic_vad' (null: manual)",
            param=param + ".type",
        )
    echo: dict[str, Any] = {"type": kind, **detection}
    interrupt = _get(detection, "interrupt_response", bool, param + ".interrupt_response")
    create = _get(detection, "create_response", bool, param + ".create_response")
    echo["interrupt_response"] = True if interrupt is None else interrupt
    echo["create_response"] = True if create is None else create
    patch["vad_enabled"] = echo["interrupt_response"]
    if create is False:
        notes.append(
            RealtimeInputError(
                "unsupported_value",
                "create_response: false is not supported: every user turn the server detects "
                "is answered (set turn_detection to null and send response.create yourself)",
                param=param + ".create_response",
            )
        )
    if kind == "semantic_vad":
        eagerness = _get(detection, "eagerness", str, param + ".eagerness") or "auto"
        if eagerness not in _EAGERNESS:
            raise RealtimeInputError(
                "invalid_value",
                "eagerness is 'low', 'medium', 'high' or 'auto'",
                param=param + ".eagerness",
            )
        patch.update(turn_detection="semantic", turn_eagerness=_EAGERNESS[eagerness])
    else:
        patch["turn_detection"] = "server_vad"
        silence = _get(detection, "silence_duration_ms", int, param + ".silence_duration_ms")
        patch["silence_ms"] = None if silence is None else min(max(silence, 100), 5000)
        idle = _get(detection, "idle_timeout_ms", int, param + ".idle_timeout_ms")
        patch["user_idle_timeout_s"] = (
            None if idle is None else min(max(idle / 1000.0, 1.0), 3600.0)
        )
        for key in ("threshold", "prefix_padding_ms"):
            _get(detection, key, (int, float), f"{param}.{key}")  # accepted, fixed here
    target["turn_detection"] = echo


def _merge_output(audio: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    source = _get(audio, "output", dict, "session.audio.output")
    if source is None:
        return
    new["audio"]["output"].update(source)
    if "format" in source:
        _check_format(source, "session.audio.output.format")
    if "voice" in source:
        voice = _get(source, "voice", str, "session.audio.output.voice")
        patch["voice_id"] = None if voice is None or voice in STOCK_VOICES else voice
    if "speed" in source:
        speed = _get(source, "speed", (int, float), "session.audio.output.speed")
        patch["speed"] = 1.0 if speed is None else float(speed)


def _check_format(source: dict[str, Any], param: str) -> None:
    fmt = _get(source, "format", dict, param)
    if fmt is None:
        return
    kind = fmt.get("type", "audio/pcm")
    rate = fmt.get("rate", SAMPLE_RATE)
    if kind != "audio/pcm" or rate != SAMPLE_RATE:
        raise RealtimeInputError(
            "unsupported_audio_format",
            f"{param}: only audio/pcm at {SAMPLE_RATE} Hz (PCM16 little endian, mono) is supported",
            param=param,
        )


def _merge_tools(
    update: dict[str, Any],
    new: dict[str, Any],
    patch: dict[str, Any],
    notes: list[RealtimeInputError],
) -> None:
    tools = new.get("tools") or []
    if not isinstance(tools, list):
        raise RealtimeInputError("invalid_type", "tools must be an array", param="session.tools")
    client_tools = []
    for index, tool in enumerate(tools):
        param = f"session.tools[{index}]"
        if not isinstance(tool, dict):
            raise RealtimeInputError("invalid_type", f"{param} must be an object", param=param)
        kind = tool.get("type", "function")
        if kind != "function":
            raise RealtimeInputError(
                "unsupported_value",
                f"tools of type {kind!r} are not supported: only functions (the server's own "
                "MCP servers are configured by its operator)",
                param=param + ".type",
            )
        entry: dict[str, Any] = {
            "type": "function",
            "name": _required(tool, "name", str, param + ".name"),
        }
        description = _get(tool, "description", str, param + ".description")
        if description is not None:
            entry["description"] = description
        parameters = _get(tool, "parameters", dict, param + ".parameters")
        if parameters is not None:
            entry["parameters"] = parameters
        client_tools.append(entry)
    choice = new.get("tool_choice", "auto")
    if isinstance(choice, dict) or choice == "required":
        notes.append(
            RealtimeInputError(
                "unsupported_value",
                "tool_choice other than 'auto' and 'none' is not supported: the model decides "
                "('auto')",
                param="session.tool_choice",
            )
        )
    elif choice not in ("auto", "none", None):
        raise RealtimeInputError(
            "invalid_value",
            "tool_choice is 'auto', 'none', 'required' or a function",
            param="session.tool_choice",
        )
    patch["tools"] = client_tools
    patch["tools_enabled"] = bool(client_tools) and choice != "none"
