"""Protocol v1 frames: typed structs with a ``type`` tag, their codec, and the JSON Schema.

Text WebSocket frames are JSON objects tagged by ``type``; binary frames carry raw PCM16LE mono
audio (client microphone in; agent audio out, between ``agent.audio.start`` and
``agent.audio.done`` of the same turn). docs/protocol.md is the normative description;
docs/protocol.schema.json is generated from these classes (``scaivoice schema``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ._errors import ProtocolViolation

__all__ = [
    "PROTOCOL_VERSION",
    "AgentAudioDone",
    "AgentAudioStart",
    "AgentText",
    "AgentTextDone",
    "AudioCommit",
    "AudioFormat",
    "AudioFormats",
    "Capabilities",
    "ClientFrame",
    "ClientTool",
    "ErrorFrame",
    "ExpressionHint",
    "Interrupt",
    "Metrics",
    "Ping",
    "Playback",
    "Pong",
    "ServerFrame",
    "SessionConfig",
    "SessionEnd",
    "SessionEnded",
    "SessionStart",
    "SessionStarted",
    "SessionUpdate",
    "SessionUpdated",
    "State",
    "StateName",
    "TextInput",
    "ToolCallFrame",
    "ToolCancel",
    "ToolResult",
    "TranscriptFrame",
    "VadFrame",
    "Wake",
    "WakeFrame",
    "WarningFrame",
    "decode_client_frame",
    "encode_server_frame",
    "protocol_schema",
]

PROTOCOL_VERSION = 1

StateName = Literal["idle", "listening", "thinking", "speaking", "interrupted"]

TurnDetection = Literal["server_vad", "semantic", "manual"]
Eagerness = Literal["low", "medium", "high"]

SampleRate = Annotated[int, msgspec.Meta(ge=8000, le=48000)]
UNSET = msgspec.UNSET


class _Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Base of all frames: tagged by ``type``; unknown fields are rejected."""


# --------------------------------------------------------------------------- session config

ToolName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ClientTool(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A tool the client runs (OpenAI's function shape): the model may call it with
    ``tools_enabled``; the server sends ``tool.call`` and waits for ``tool.result``."""

    type: Literal["function"] = "function"
    name: ToolName
    """1-64 letters, digits, ``_`` or ``-``."""
    description: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    """When to use the tool, for the model."""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    """JSON Schema (Draft 2020-12) of ``type: object`` for the arguments."""


class SessionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=False):
    """Per-session configuration. Every key is optional in ``session.start`` / ``session.update``.

    A key whose feature is not available on this server is accepted with a ``warning``
    (``feature_unavailable`` / ``option_unsupported``); an unknown key is an error.
    """

    voice_id: str | None = None
    """Voice from ``GET /v1/voices`` (``"hibari:heart"``); ``None`` = the tenant / engine default."""
    instructions: str | None = None
    """Style instructions for TTS backends that declare support."""
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] = 1.0
    """Speaking rate multiplier."""
    cfg_value: float | None = None
    """Classifier-free guidance value for TTS backends that declare support."""
    warmup_trim_ms: Annotated[int, msgspec.Meta(ge=0, le=2000)] = 0
    """Milliseconds trimmed from the start of each synthesised reply."""
    normalize_text: bool | None = None
    """Normalise numbers, dates, units ... before TTS; ``None`` = the tenant default."""
    language: str | None = None
    """BCP-47 language hint for STT / LLM / TTS; ``None`` = the backends' default."""
    input_sample_rate: SampleRate = 16000
    """Rate of the client's PCM16 audio; resampled to what STT needs."""
    output_sample_rate: SampleRate = 24000
    """Rate of the agent audio the server sends."""
    system_prompt: str | None = None
    """System prompt / persona for the language model."""
    diarize: bool = False
    """Label each user turn's speaker (``speaker``: ``"S1"``, ``"S2"`` ...) in transcripts."""
    vad_enabled: bool = False
    """Barge-in by voice: the user speaking over the agent interrupts it (server VAD, or the
    client's ``vad`` frames). Backchannels ("uh-huh") do not."""
    turn_detection: TurnDetection | None = None
    """How the user's turn ends: ``server_vad`` (after a pause), ``semantic`` (at a pause
    when an end-of-turn model says the user has finished; longer pauses otherwise) or
    ``manual`` (only ``audio.commit`` or client ``vad`` frames). ``None``: the server's best
    (``semantic`` where its model is installed); ``session.started`` shows the mode in use."""
    turn_eagerness: Eagerness = "medium"
    """``semantic`` only: how soon to answer at a pause (``high``: soonest, more premature
    ends; ``low``: waits longer for the user to go on)."""
    silence_ms: Annotated[int, msgspec.Meta(ge=100, le=5000)] | None = None
    """``server_vad``: the pause that ends the turn; ``None``: the server's (300 ms)."""
    barge_in_min_words: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1
    """With ``vad_enabled``: words that are not backchannels ("yeah", "uh-huh", a laugh ...)
    the user must say over the agent to interrupt it; 0: any speech interrupts at once."""
    resume_after_false_barge_in: bool = True
    """With ``vad_enabled``: when speech over the agent turns out to be a backchannel or a
    noise, the agent goes on: it resumes where it paused (``barge_in_hold``), or says the part
    of its reply the user did not hear as a new turn."""
    barge_in_hold: bool = False
    """With ``vad_enabled``: ``false`` (default) interrupts at the onset of speech over the
    agent (``interrupted`` within about 150 ms) and decides afterwards whether it was a turn;
    ``true`` holds the agent's audio and sends ``interrupted`` only once the words make it a
    turn (a backchannel never interrupts)."""
    echo_cancellation: bool = True
    """The client's microphone audio is echo-cancelled. ``false``: the agent's own voice may
    come back on the microphone; speech over the agent then interrupts only when its words
    are not the agent's own (the echo guard)."""
    user_idle_timeout_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] | None = None
    """After the agent finished and the user said nothing this long, the agent asks
    ``user_idle_prompt`` (once per silence); ``None``: never."""
    user_idle_prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] = (
        "Are you still there?"
    )
    wake_word_enabled: bool = False
    """Stay idle until a wake word (a ``wake`` frame or a server-side detector)."""
    speaker_recognition: bool = False
    """Identify enrolled speakers (``speaker_id``, ``speaker_score``); needs the tenant's opt-in."""
    tools_enabled: bool = False
    """Let the language model call tools: the client's ``tools`` and the server's skills."""
    tools: list[ClientTool] = msgspec.field(default_factory=list)
    """Tools the client runs (with ``tools_enabled``); up to 64."""
    tool_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] | None = None
    """The longest the server waits for a ``tool.result``; ``None``: the server's default.
    On timeout the call is cancelled (``tool.cancel``) and the model told it failed."""
    tool_filler: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    """Said while tools run longer than ``tool_filler_after_ms`` ("One moment."); ``None``: off."""
    tool_filler_after_ms: Annotated[int, msgspec.Meta(ge=0, le=60000)] = 1500
    wake_word: list[str] | None = None
    """The server-side detector's keywords to listen for (``["hey_jarvis"]``); ``None`` = the
    server's default. ``session.started`` lists the available ones under ``capabilities``."""


class SessionConfigPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A partial :class:`SessionConfig`: only the keys present are changed."""

    voice_id: str | msgspec.UnsetType | None = UNSET
    instructions: str | msgspec.UnsetType | None = UNSET
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] | msgspec.UnsetType = UNSET
    cfg_value: float | msgspec.UnsetType | None = UNSET
    warmup_trim_ms: Annotated[int, msgspec.Meta(ge=0, le=2000)] | msgspec.UnsetType = UNSET
    normalize_text: bool | msgspec.UnsetType | None = UNSET
    language: str | msgspec.UnsetType | None = UNSET
    input_sample_rate: SampleRate | msgspec.UnsetType = UNSET
    output_sample_rate: SampleRate | msgspec.UnsetType = UNSET
    system_prompt: str | msgspec.UnsetType | None = UNSET
    diarize: bool | msgspec.UnsetType = UNSET
    vad_enabled: bool | msgspec.UnsetType = UNSET
    turn_detection: TurnDetection | msgspec.UnsetType | None = UNSET
    turn_eagerness: Eagerness | msgspec.UnsetType = UNSET
    silence_ms: Annotated[int, msgspec.Meta(ge=100, le=5000)] | msgspec.UnsetType | None = UNSET
    barge_in_min_words: Annotated[int, msgspec.Meta(ge=0, le=10)] | msgspec.UnsetType = UNSET
    resume_after_false_barge_in: bool | msgspec.UnsetType = UNSET
    barge_in_hold: bool | msgspec.UnsetType = UNSET
    echo_cancellation: bool | msgspec.UnsetType = UNSET
    user_idle_timeout_s: (
        Annotated[float, msgspec.Meta(ge=1, le=3600)] | msgspec.UnsetType | None
    ) = UNSET
    user_idle_prompt: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=500)] | msgspec.UnsetType
    ) = UNSET
    wake_word_enabled: bool | msgspec.UnsetType = UNSET
    speaker_recognition: bool | msgspec.UnsetType = UNSET
    tools_enabled: bool | msgspec.UnsetType = UNSET
    tools: list[ClientTool] | msgspec.UnsetType = UNSET
    tool_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] | msgspec.UnsetType | None = UNSET
    tool_filler: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType | None = UNSET
    tool_filler_after_ms: Annotated[int, msgspec.Meta(ge=0, le=60000)] | msgspec.UnsetType = UNSET
    wake_word: list[str] | msgspec.UnsetType | None = UNSET

    def keys(self) -> list[str]:
        """The keys this patch sets."""
        return [f for f in self.__struct_fields__ if getattr(self, f) is not UNSET]

    def apply(self, base: SessionConfig) -> SessionConfig:
        """Return ``base`` with this patch's keys replaced."""
        return msgspec.structs.replace(base, **{k: getattr(self, k) for k in self.keys()})


CONFIG_KEYS: frozenset[str] = frozenset(SessionConfig.__struct_fields__)


# --------------------------------------------------------------------------- client frames


class SessionStart(_Frame, tag="session.start"):
    """First frame of every session: protocol version and initial config."""

    protocol: int
    config: SessionConfigPatch = msgspec.field(default_factory=SessionConfigPatch)


class SessionUpdate(_Frame, tag="session.update"):
    """Change config keys; applied at the next turn where a running turn cannot change."""

    config: SessionConfigPatch


class Interrupt(_Frame, tag="interrupt"):
    """Explicit barge-in: stop the agent's current turn now."""


class VadFrame(_Frame, tag="vad"):
    """Client-side voice activity: the user started (``true``) or stopped speaking."""

    speaking: bool


class Wake(_Frame, tag="wake"):
    """A client-side wake-word detector fired."""

    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0


class AudioCommit(_Frame, tag="audio.commit"):
    """End of the user's turn (push-to-talk)."""


class TextInput(_Frame, tag="text"):
    """Typed user input: a whole user turn as text."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=10000)]


class Playback(_Frame, tag="playback"):
    """How much of a turn's agent audio the client has actually played."""

    turn_id: int
    played_ms: Annotated[int, msgspec.Meta(ge=0)]


class ToolResult(_Frame, tag="tool.result"):
    """The result of a client tool the server asked for with ``tool.call``.

    ``result`` is any JSON value (the model reads it as JSON text; a string as it is). Set
    ``error`` instead to tell the model the tool failed and why. One result per call: a second
    one, one for an unknown call and one after ``tool.cancel`` get an ``error`` /``warning``.
    """

    call_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    result: Any = None
    error: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


class SessionEnd(_Frame, tag="session.end"):
    """The client is done; the server answers ``session.ended`` and closes with 1000."""


class Ping(_Frame, tag="ping"):
    """Keep-alive; answered with ``pong`` carrying the same ``id``."""

    id: str | int | None = None


ClientFrame = (
    SessionStart
    | SessionUpdate
    | Interrupt
    | VadFrame
    | Wake
    | AudioCommit
    | TextInput
    | Playback
    | ToolResult
    | SessionEnd
    | Ping
)

CLIENT_FRAME_TYPES: tuple[type[_Frame], ...] = ClientFrame.__args__


# --------------------------------------------------------------------------- server frames


class AudioFormat(msgspec.Struct, kw_only=True):
    """A raw audio format on the socket."""

    encoding: Literal["pcm_s16le"] = "pcm_s16le"
    sample_rate: int
    channels: Literal[1] = 1


class AudioFormats(msgspec.Struct, kw_only=True):
    """The formats of both directions."""

    input: AudioFormat
    output: AudioFormat


class Capabilities(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What this server offers beyond protocol v1's core."""

    features: list[str] = msgspec.field(default_factory=list)
    """Session config keys with a server-side implementation (``vad_enabled``, ``diarize`` ...)."""
    wake_words: list[str] = msgspec.field(default_factory=list)
    """Keywords the server-side wake-word detector knows (values for ``wake_word``)."""
    tools: list[str] = msgspec.field(default_factory=list)
    """Server-side tools (skills, MCP tools) this session's model may call with
    ``tools_enabled``, besides the client's own ``tools``."""


class ToolCallFrame(_Frame, tag="tool.call"):
    """The model called a client tool: run it and answer with ``tool.result`` (same ``call_id``).

    Several calls of one turn may be outstanding at once (run them in parallel).
    ``arguments`` were validated against the tool's ``parameters``.
    """

    turn_id: int
    call_id: str
    name: str
    arguments: dict[str, Any]


class ToolCancel(_Frame, tag="tool.cancel"):
    """Stop a client tool call: its result is no longer wanted.

    ``reason``: ``interrupted`` (the user barged in) or ``timeout`` (``tool_timeout_s``
    passed; the model was told the tool failed). A result sent anyway is recorded as late and
    never spoken.
    """

    call_id: str
    reason: Literal["interrupted", "timeout"]


class SessionStarted(_Frame, tag="session.started"):
    """The session is open; ``config`` is the effective configuration."""

    session_id: str
    protocol: int
    config: SessionConfig
    audio: AudioFormats
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)


class WakeFrame(_Frame, tag="wake"):
    """The server-side wake-word detector heard ``keyword``; a user turn opens."""

    keyword: str
    confidence: float


class SessionUpdated(_Frame, tag="session.updated"):
    """A ``session.update`` was applied; ``config`` is the new effective configuration."""

    config: SessionConfig


class State(_Frame, tag="state"):
    """The conversation state changed. ``turn_id`` is the turn it concerns, if any."""

    state: StateName
    turn_id: int | None = None


class TranscriptFrame(_Frame, tag="transcript", omit_defaults=True):
    """What the user said: interim results (``final: false``) precede the turn's final one.

    With ``diarize`` the turn's anonymous ``speaker`` label is added (interims carry it once
    known); with ``speaker_recognition`` the final carries ``speaker_id`` (``null``: a voice
    not enrolled) and ``speaker_score``. Absent keys mean the feature is off.
    """

    turn_id: int
    text: str
    final: bool
    start_ms: int
    end_ms: int
    speaker: str | None = None
    speaker_id: str | msgspec.UnsetType | None = UNSET
    speaker_score: float | None = None


class AgentText(_Frame, tag="agent.text"):
    """A streaming piece of the agent's reply text."""

    turn_id: int
    delta: str


class AgentTextDone(_Frame, tag="agent.text.done"):
    """The agent's reply text is complete (or was cut off: ``interrupted``)."""

    turn_id: int
    text: str
    interrupted: bool
    heard_text: str


class AgentAudioStart(_Frame, tag="agent.audio.start"):
    """Binary PCM frames of this turn follow, until ``agent.audio.done``."""

    turn_id: int
    sample_rate: int
    format: Literal["pcm_s16le"] = "pcm_s16le"


class AgentAudioDone(_Frame, tag="agent.audio.done"):
    """No more audio of this turn."""

    turn_id: int
    duration_ms: int
    interrupted: bool


class Metrics(_Frame, tag="metrics"):
    """Per-stage latencies of a turn, in milliseconds (``null`` = stage not run / not reached).

    Sent at the end of every agent turn, before its ``interrupted`` state when it was cut off.
    """

    turn_id: int
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    end_of_turn_to_first_audio_ms: float | None = None
    end_of_turn_to_first_text_ms: float | None = None
    total_ms: float | None = None
    barge_in_ms: float | None = None
    """Interrupted turns: from the barge-in reaching the session to the turn having stopped."""


class WarningFrame(_Frame, tag="warning"):
    """Something degraded or was ignored; the session goes on."""

    code: str
    message: str


class ErrorFrame(_Frame, tag="error"):
    """Something failed. ``fatal`` errors are followed by the socket closing."""

    code: str
    message: str
    fatal: bool = False


class Pong(_Frame, tag="pong"):
    """Answer to ``ping``."""

    id: str | int | None = None


class SessionEnded(_Frame, tag="session.ended"):
    """The session is over; the socket closes next."""

    reason: str = "client_ended"


class ExpressionHint(_Frame, tag="expression_hint"):
    """Reserved: never emitted by protocol v1 servers; clients must ignore it."""

    turn_id: int
    hint: str


ServerFrame = (
    SessionStarted
    | SessionUpdated
    | State
    | TranscriptFrame
    | AgentText
    | AgentTextDone
    | AgentAudioStart
    | AgentAudioDone
    | Metrics
    | WarningFrame
    | ErrorFrame
    | Pong
    | SessionEnded
    | WakeFrame
    | ToolCallFrame
    | ToolCancel
    | ExpressionHint
)

SERVER_FRAME_TYPES: tuple[type[_Frame], ...] = ServerFrame.__args__


# --------------------------------------------------------------------------- codec

_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_encoder = msgspec.json.Encoder()
_CLIENT_TAGS = frozenset(t.__struct_config__.tag for t in CLIENT_FRAME_TYPES)


class _Probe(msgspec.Struct):
    type: Any = None


def decode_client_frame(raw: str | bytes) -> ClientFrame:
    """Parse one client text frame.

    Raises:
        ProtocolViolation: ``invalid_json``, ``unknown_type``, ``unknown_config_key`` or
            ``invalid_frame`` (wrong field names or types, or JSON nested deeper than the
            parser goes: about 900 levels), never fatal.
    """
    try:
        frame: ClientFrame = _client_decoder.decode(raw)
        return frame
    except msgspec.ValidationError as exc:
        raise _diagnose(raw, exc) from exc
    except msgspec.DecodeError as exc:
        raise ProtocolViolation("invalid_json", f"not a JSON object: {exc}") from exc
    except RecursionError:  # ``tool.result`` is any JSON: msgspec recursed into it
        raise _too_deep() from None


def _too_deep() -> ProtocolViolation:
    return ProtocolViolation("invalid_frame", "the frame's JSON is nested too deeply")


def _diagnose(raw: str | bytes, exc: msgspec.ValidationError) -> ProtocolViolation:
    """Name what is wrong with a frame the typed decoder refused."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:  # pragma: no cover - the typed decoder already parsed it
        doc = None
    except RecursionError:  # the typed decoder stopped early; this parse goes all the way in
        return _too_deep()
    if not isinstance(doc, dict):
        return ProtocolViolation("invalid_frame", "a frame must be a JSON object with a 'type'")
    frame_type = doc.get("type")
    if not isinstance(frame_type, str) or frame_type not in _CLIENT_TAGS:
        return ProtocolViolation(
            "unknown_type",
            f"unknown frame type {frame_type!r}; expected one of "
            f"{sorted(str(tag) for tag in _CLIENT_TAGS)}",
        )
    config = doc.get("config")
    if isinstance(config, dict):
        unknown = sorted(set(config) - CONFIG_KEYS)
        if unknown:
            return ProtocolViolation(
                "unknown_config_key",
                f"unknown session config key(s) {unknown}; known keys: {sorted(CONFIG_KEYS)}",
            )
    return ProtocolViolation("invalid_frame", f"invalid {frame_type!r} frame: {exc}")


def decode_server_frame(raw: str | bytes) -> ServerFrame:
    """Parse one server text frame (clients and the conformance suite use this)."""
    frame: ServerFrame = _server_decoder.decode(raw)
    return frame


def encode_server_frame(frame: ServerFrame) -> bytes:
    """Serialise a server frame to JSON bytes (send them as a *text* WebSocket frame)."""
    return _encoder.encode(frame)


def encode_client_frame(frame: ClientFrame) -> bytes:
    """Serialise a client frame to JSON bytes."""
    return _encoder.encode(frame)


def protocol_schema() -> dict[str, Any]:
    """The JSON Schema of protocol v1 (client and server frames), as checked in under docs/."""
    (client, server), components = msgspec.json.schema_components(
        [ClientFrame, ServerFrame], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://scaivoice.dev/schema/protocol-v1.json",
        "title": "ScaiVoice protocol v1",
        "description": (
            "Text frames of the ScaiVoice WebSocket protocol, version 1. Binary frames carry "
            "raw PCM16LE mono audio and are not described here. See docs/protocol.md."
        ),
        "oneOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
        "$defs": {"ClientFrame": client, "ServerFrame": server, **components},
    }
