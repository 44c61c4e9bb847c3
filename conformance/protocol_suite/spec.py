"""What docs/protocol.md (version 1) fixes, as data: frame fields, states, codes, limits.

Only the normative text is encoded here; nothing is taken from any implementation. Section
numbers (``§4.5``) refer to docs/protocol.md.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CLOSE_CODES",
    "CONFIG_KEYS",
    "EAGERNESS",
    "ERROR_CODES",
    "MAX_CLIENT_TOOLS",
    "METRIC_KEYS",
    "PROTOCOL_VERSION",
    "SERVER_FIELDS",
    "STATES",
    "TEXT_MAX_CHARS",
    "TOOL_CANCEL_REASONS",
    "TURN_DETECTION_MODES",
    "TURN_FRAMES",
    "WARNING_CODES",
    "FieldKind",
]

PROTOCOL_VERSION: Final = 1
PCM_ENCODING: Final = "pcm_s16le"
TEXT_MAX_CHARS: Final = 10000
SAMPLE_RATE_RANGE: Final = (8000, 48000)

STATES: Final = frozenset({"idle", "listening", "thinking", "speaking", "interrupted"})

CONFIG_KEYS: Final = frozenset(
    {
        "voice_id",
        "instructions",
        "speed",
        "cfg_value",
        "warmup_trim_ms",
        "normalize_text",
        "language",
        "input_sample_rate",
        "output_sample_rate",
        "system_prompt",
        "diarize",
        "vad_enabled",
        "wake_word_enabled",
        "speaker_recognition",
        "wake_word",
        "tools_enabled",
        "tools",
        "tool_timeout_s",
        "tool_filler",
        "tool_filler_after_ms",
        "turn_detection",
        "turn_eagerness",
        "silence_ms",
        "barge_in_min_words",
        "resume_after_false_barge_in",
        "barge_in_hold",
        "echo_cancellation",
        "user_idle_timeout_s",
        "user_idle_prompt",
    }
)

# §2.3 / §3.3 `turn_detection` values, and `turn_eagerness`.
TURN_DETECTION_MODES: Final = frozenset({"server_vad", "semantic", "manual"})
EAGERNESS: Final = frozenset({"low", "medium", "high"})

# §2.3 `tools`: at most this many client tools.
MAX_CLIENT_TOOLS: Final = 64
# §2.2 tool.cancel `reason`.
TOOL_CANCEL_REASONS: Final = frozenset({"interrupted", "timeout"})

METRIC_KEYS: Final = (
    "stt_ms",
    "llm_first_token_ms",
    "tts_first_audio_ms",
    "end_of_turn_to_first_audio_ms",
    "end_of_turn_to_first_text_ms",
    "total_ms",
    "barge_in_ms",
)

ERROR_CODES: Final = frozenset(
    {
        "invalid_json",
        "invalid_frame",
        "unknown_type",
        "unknown_config_key",
        "invalid_config",
        "unknown_voice",
        "not_started",
        "already_started",
        "odd_audio_length",
        "frame_too_large",
        "tools_unavailable",
        "invalid_tools",
        "tool_call_unknown",
        "tool_result_duplicate",
        "unknown_wake_word",
        "stt_failed",
        "llm_failed",
        "unsupported_protocol",
        "start_timeout",
        "idle_timeout",
        "max_duration",
        "slow_client",
        "server_shutdown",
        "server_draining",
        "unauthorized",
        "token_expired",
        "token_used",
        "token_revoked",
        "forbidden",
        "internal_error",
        "not_permitted",
        "rate_limited",
        "too_many_sessions",
    }
)

WARNING_CODES: Final = frozenset(
    {
        "tts_unavailable",
        "stt_unavailable",
        "llm_unavailable",
        "normaliser_unavailable",
        "normaliser_failed",
        "feature_unavailable",
        "feature_limited",
        "option_unsupported",
        "nothing_to_commit",
        "user_turn_too_long",
        "wake_ignored",
        "feature_failed",
        "tool_result_late",
        "tool_timeout",
        "tool_failed",
        "tool_arguments_invalid",
        "tool_unknown",
        "tool_forbidden",
        "tool_server_unavailable",
    }
)

CLOSE_CODES: Final = {
    "normal": 1000,
    "going_away": 1001,
    "too_big": 1009,
    "internal_error": 1011,
    "try_again_later": 1013,
    "protocol_error": 4400,
    "unauthorized": 4401,
    "forbidden": 4403,
    "timeout": 4408,
    "max_duration": 4410,
    "slow_client": 4420,
    "unsupported_protocol": 4426,
    "too_many": 4429,
}

# Field kinds of server frames (§2.2). "?" suffix: the field may be absent.
FieldKind = str
_OPT_NUM = "number|null"

SERVER_FIELDS: Final[dict[str, dict[str, FieldKind]]] = {
    "session.started": {
        "session_id": "string",
        "protocol": "integer",
        "config": "object",
        "audio": "object",
        "capabilities": "object?",
    },
    "session.updated": {"config": "object"},
    "state": {"state": "state", "turn_id": "integer|null?"},
    "transcript": {
        "turn_id": "integer",
        "text": "string",
        "final": "boolean",
        "start_ms": "integer",
        "end_ms": "integer",
        "speaker": "string|null?",
        "speaker_id": "string|null?",
        "speaker_score": "number|null?",
    },
    "agent.text": {"turn_id": "integer", "delta": "string"},
    "agent.text.done": {
        "turn_id": "integer",
        "text": "string",
        "interrupted": "boolean",
        "heard_text": "string",
    },
    "agent.audio.start": {"turn_id": "integer", "sample_rate": "integer", "format": "pcm_s16le"},
    "agent.audio.done": {"turn_id": "integer", "duration_ms": "integer", "interrupted": "boolean"},
    "metrics": {"turn_id": "integer", **{key: _OPT_NUM for key in METRIC_KEYS}},
    "warning": {"code": "string", "message": "string"},
    "error": {"code": "string", "message": "string", "fatal": "boolean"},
    "pong": {"id": "string|integer|null?"},
    "session.ended": {"reason": "string"},
    "wake": {"keyword": "string", "confidence": "number"},
    "tool.call": {
        "turn_id": "integer",
        "call_id": "string",
        "name": "string",
        "arguments": "object",
    },
    "tool.cancel": {"call_id": "string", "reason": "tool_cancel_reason"},
    "expression_hint": {"turn_id": "integer", "hint": "string"},
}

# Frames that belong to one agent turn (§4.5: nothing of an interrupted turn follows it).
TURN_FRAMES: Final = frozenset(
    {"agent.text", "agent.text.done", "agent.audio.start", "agent.audio.done", "metrics"}
)
