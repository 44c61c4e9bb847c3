"""Engine configuration: TOML (+ the CLI's environment overrides) -> one frozen ``EngineConfig``.

Only the CLI reads the environment; everything below it receives frozen values. A session's
effective config is layered: engine defaults -> the tenant's defaults -> the client's keys.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .._errors import ConfigError
from ..frames import SessionConfig, SessionConfigPatch

__all__ = [
    "AuthConfig",
    "BackendsConfig",
    "ClusterConfig",
    "EngineConfig",
    "KeyConfig",
    "LimitsConfig",
    "McpServerConfig",
    "ServerConfig",
    "SessionLimits",
    "TelemetryConfig",
    "TenantConfig",
    "ToolsConfig",
    "VoiceNotesConfig",
    "load_config",
]

_Positive = Annotated[float, msgspec.Meta(gt=0)]
_KINDS = frozenset({"stt", "llm", "tts", "normaliser"})


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ServerConfig(_Section, frozen=True):
    """Where and how the engine listens."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8765
    drain_timeout_s: _Positive = 30.0
    """On SIGTERM: how long live sessions may go on before they are closed with 1001."""
    log_format: str = "text"
    """``text`` or ``json`` (one JSON object a line, with the session id)."""
    head_timeout_s: _Positive = 10.0
    """A request head must arrive whole within this long (of the connection's opening, or of
    its first byte on a kept-alive connection): else 408 and the connection closes."""
    keep_alive_timeout_s: _Positive = 30.0
    """A kept-alive connection with no next request for this long is closed."""
    min_body_bytes_per_s: Annotated[int, msgspec.Meta(ge=0)] = 1024
    """A request body must keep up this rate: each byte buys ``1 / rate`` seconds, banked for
    ``body_grace_s`` at most; past the deadline, 408 and close. 0: only the stall limit."""
    body_grace_s: _Positive = 10.0
    """The time a request body may take before its rate counts, and may stall at most."""
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1024
    """Open connections (HTTP and session WebSockets); one more is answered 503 and closed."""
    max_connections_per_ip: Annotated[int, msgspec.Meta(ge=0)] = 256
    """Open connections from one client address; one more is answered 503 and closed. 0: no
    per-address limit (behind a reverse proxy every client has the proxy's address)."""
    playground: bool | None = None
    """Serve the browser playground at ``/playground``. Unset: on in open mode (no credential
    configured, loopback only), off otherwise."""


class SessionLimits(_Section, frozen=True):
    """Per-session timing and size limits."""

    start_timeout_s: _Positive = 10.0
    """Time allowed between connecting and a valid ``session.start``."""
    idle_timeout_s: _Positive = 300.0
    """A session with no client frame for this long is closed (4408)."""
    max_duration_s: _Positive = 3600.0
    """A session is closed after this long (4410), whatever it is doing."""
    audio_lead_ms: Annotated[int, msgspec.Meta(ge=0, le=5000)] = 80
    """How far ahead of real time agent audio is sent."""
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024
    """Larger client frames get ``frame_too_large`` and are dropped."""
    slow_client_timeout_s: _Positive = 10.0
    """A client that does not read for this long is closed (4420)."""
    wake_window_s: _Positive = 5.0
    """In wake-word mode, how long the session stays awake for a request when the user paused
    after the wake word (the turn the wake opened ended with no words)."""
    max_user_turn_s: _Positive = 60.0
    """A user turn longer than this is ended (and transcribed) automatically."""
    warm_up: bool = True
    """Send the language model one tiny request at start-up (warm caches for the first user)."""
    history_messages: Annotated[int, msgspec.Meta(ge=0)] = 40
    """How many past messages the language model sees."""
    early_replies: bool = True
    """Speculative replies: at the user's pause, start the reply (a transcription of the turn
    so far when the STT gives no stable interim, the language model, the first sentence's
    speech) inside the end-of-turn wait; adopted when the final matches, else cancelled
    unseen. Costs extra backend requests on wrong guesses (see the operator guide)."""
    system_prompt: str = (
        "You are a helpful voice assistant. Answer briefly, in one to three short sentences, "
        "in plain spoken language without lists or markup."
    )


class BackendsConfig(_Section, frozen=True):
    """Which backends serve sessions, by registered name, with per-backend option tables."""

    stt: str = "whisper"
    llm: str = "llama-cpp"
    tts: str | list[str] = msgspec.field(default_factory=lambda: ["hibari", "piper", "espeak"])
    """One name, or a list: the first must open and speaks by default; the others add their
    voices to the library when installed (skipped with a warning when not)."""
    normaliser: str | None = None
    options: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """``[backends.options.NAME]`` tables, validated by each backend's ``Options``."""
    feature_options: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """``[backends.feature_options.NAME]`` tables for session features."""

    @property
    def tts_names(self) -> tuple[str, ...]:
        return (self.tts,) if isinstance(self.tts, str) else tuple(self.tts)

    def options_for(self, kind: str, name: str) -> dict[str, Any]:
        """The option table of backend ``name`` of ``kind``.

        ``[backends.options.KIND.NAME]`` (for names several kinds share, like ``openai``) wins
        over ``[backends.options.NAME]``.
        """
        by_kind = self.options.get(kind)
        if isinstance(by_kind, dict) and isinstance(by_kind.get(name), dict):
            return dict(by_kind[name])
        plain = self.options.get(name, {})
        return {k: v for k, v in plain.items() if k not in _KINDS or not isinstance(v, dict)}


class VoiceNotesConfig(_Section, frozen=True):
    """The OpenAI-compatible voice-note API (``/v1/audio/transcriptions``, ``/v1/audio/speech``)."""

    transcription_enabled: bool = True
    """``false`` answers transcription requests with 404 (``VOICE_TRANSCRIPTION_ENABLED``)."""
    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 25 * 1024 * 1024
    """Larger uploads are refused with 413 (OpenAI's own limit is 25 MB)."""
    max_input_chars: Annotated[int, msgspec.Meta(ge=1)] = 5000
    """Longer speech input is refused with 400 ``input_too_long``."""
    max_audio_s: _Positive = 1800.0
    """Uploads whose audio lasts longer are refused with 413 ``audio_too_long``: by the file's
    header at once, else as soon as decoding passes it (a few MB of compressed silence can
    hold hours of audio)."""
    decode_timeout_s: _Positive = 60.0
    """Decoding an upload that takes longer is stopped: 422 ``audio_decode_timeout``."""
    cache_dir: str | None = None
    """Where synthesised notes are cached (a shared volume works); unset: in memory."""
    cache_max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 512 * 1024 * 1024


class KeyConfig(_Section, frozen=True):
    """An API key, stored as its hash only (``scaivoice keys new`` prints both)."""

    id: str
    hash: str
    """``sha256:<hex>`` of the key."""
    roles: list[str] = msgspec.field(default_factory=lambda: ["user"])


class LimitsConfig(_Section, frozen=True):
    """Per-tenant limits (``[limits]`` for every tenant, ``[tenants.NAME.limits]`` to override).

    Unset means unlimited.
    """

    max_sessions: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Concurrent sessions; one more is refused with ``too_many_sessions`` (4429)."""
    requests_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """HTTP API calls and session opens; over it: 429 / ``rate_limited`` (4429)."""
    max_session_s: _Positive | None = None
    """A shorter maximum session duration than the engine's."""

    def merged(self, other: LimitsConfig) -> LimitsConfig:
        """``other``'s set values over this one's."""
        values = {
            f: getattr(other, f) for f in self.__struct_fields__ if getattr(other, f) is not None
        }
        return msgspec.structs.replace(self, **values)


class McpServerConfig(_Section, frozen=True):
    """An MCP server whose tools the language model may call (``[tools.mcp.NAME]``).

    Exactly one of ``command`` (a local server over stdio, started and stopped by the engine)
    and ``url`` (a streamable-HTTP endpoint) is set.
    """

    command: list[str] | None = None
    """The server's command line (``["python", "-m", "my_server"]``): stdio transport."""
    url: str | None = None
    """The server's streamable-HTTP endpoint (``http://127.0.0.1:8931/mcp``)."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra environment variables for a stdio server."""
    cwd: str | None = None
    """Working directory of a stdio server."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra HTTP headers for a streamable-HTTP server (``Authorization`` ...)."""
    tools: list[str] | None = None
    """Which of the server's tools to offer (``fnmatch`` patterns); ``None``: all."""
    prefix: str | None = None
    """Prepended to the server's tool names; ``None``: ``NAME_``. ``""`` keeps them as they are."""
    call_timeout_s: _Positive | None = None
    """The longest one call may take; ``None``: ``[tools] call_timeout_s``."""

    def __post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise msgspec.ValidationError("set exactly one of `command` and `url`")
        if self.command is not None and not self.command:
            raise msgspec.ValidationError("`command` is empty")


class ToolsConfig(_Section, frozen=True):
    """Server-side tools: plugin skills and MCP servers (``[tools]``)."""

    allow: list[str] = msgspec.field(default_factory=lambda: ["*"])
    """Server tools every tenant may use (``fnmatch`` patterns on the names the model sees);
    a tenant's own ``tools`` list replaces it. ``[]``: none unless a tenant lists some."""
    call_timeout_s: _Positive = 10.0
    """The longest one tool call may take (server skills, MCP tools, client tools) unless the
    skill or the session sets less; on timeout the model is told the tool failed."""
    max_rounds: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    """Model -> tools -> model rounds in one agent turn; the last round offers no tools."""
    max_result_bytes: Annotated[int, msgspec.Meta(ge=256)] = 16 * 1024
    """A tool result longer than this (as JSON text) is cut, and the model told so."""
    mcp: dict[str, McpServerConfig] = msgspec.field(default_factory=dict)


class TenantConfig(_Section, frozen=True):
    """A product served by this engine: its keys and its session defaults."""

    keys: list[KeyConfig] = msgspec.field(default_factory=list)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    expose_transcripts: bool = False
    """Let this tenant's admins see transcripts and agent text in session telemetry."""
    speaker_recognition: bool = False
    """Opt-in: sessions may turn on ``speaker_recognition`` (voice biometrics)."""
    defaults: SessionConfigPatch = msgspec.field(default_factory=SessionConfigPatch)
    lexicon: dict[str, str] = msgspec.field(default_factory=dict)
    """Pronunciations for the normaliser: word or phrase -> how to say it."""
    tools: list[str] | None = None
    """Server tools this tenant may use (``fnmatch`` patterns); ``None``: ``[tools] allow``."""


class TelemetryConfig(_Section, frozen=True):
    """Session telemetry and traces."""

    recent_sessions: Annotated[int, msgspec.Meta(ge=0)] = 200
    """Ended sessions the admin API still shows."""
    traces: str = "none"
    """``none``, ``otlp`` (OTLP over HTTP to ``otlp_endpoint``) or ``console``."""
    otlp_endpoint: str | None = None
    service_name: str = "scaivoice"


class AuthConfig(_Section, frozen=True):
    """Credentials."""

    keys_file: str | None = None
    """A JSON file of API keys managed with ``scaivoice keys``; re-read when it changes."""
    identity_provider: str | None = None
    """An identity-provider plugin (``jwt``) that authenticates bearer credentials first."""
    identity_provider_options: dict[str, Any] = msgspec.field(default_factory=dict)

    token_secret: str | None = None
    """HMAC secret for browser session tokens; set the same value on every replica."""
    token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    roles: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Custom roles: name -> permissions (``user`` and ``admin`` are built in)."""


class ClusterConfig(_Section, frozen=True):
    """State shared by every worker and replica through Redis (``[cluster]``).

    Unset ``redis_url``: each process keeps its own limits, telemetry and used tokens.
    """

    redis_url: str | None = None
    """``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS) or ``unix:///path``
    (Redis 6.2 or later; not Redis Cluster)."""
    key_prefix: str = "scaivoice:"
    """Prepended to every key and channel (several fleets may share one Redis)."""
    lease_s: Annotated[float, msgspec.Meta(ge=1.0, le=600.0)] = 15.0
    """A session's slot is a lease its replica renews every third of this: a replica that dies
    frees its slots (and its entries of the admin session list) within this long."""
    when_down: Literal["local", "refuse"] = "local"
    """While Redis cannot be reached: ``local`` enforces each tenant's limits per process (as
    without Redis); ``refuse`` refuses what a shared limit guards (sessions of tenants with
    ``max_sessions``, requests of tenants with ``requests_per_minute``, session tokens)."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=30.0)] = 1.0
    """The longest one Redis command (or connecting) may take before Redis counts as down."""
    replica_id: str | None = None
    """How this process is named in the admin session list; unset: ``HOST:PID:RANDOM``."""


class EngineConfig(_Section, frozen=True):
    """Everything an engine needs, frozen."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    session: SessionLimits = msgspec.field(default_factory=SessionLimits)
    backends: BackendsConfig = msgspec.field(default_factory=BackendsConfig)
    defaults: SessionConfigPatch = msgspec.field(default_factory=SessionConfigPatch)
    """Engine-wide session defaults (voice, normalisation, ...)."""
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    tenants: dict[str, TenantConfig] = msgspec.field(default_factory=dict)
    voice_notes: VoiceNotesConfig = msgspec.field(default_factory=VoiceNotesConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    lexicon: dict[str, str] = msgspec.field(default_factory=dict)
    """Engine-wide pronunciations; a tenant's entries win over these."""
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)

    @property
    def open_mode(self) -> bool:
        """No credential configured: the server is open, and only allowed on loopback."""
        return (
            not any(t.keys for t in self.tenants.values())
            and self.auth.keys_file is None
            and self.auth.identity_provider is None
        )

    def limits_for(self, tenant: str | None) -> LimitsConfig:
        """The engine's limits overlaid with the tenant's."""
        if tenant is not None and tenant in self.tenants:
            return self.limits.merged(self.tenants[tenant].limits)
        return self.limits

    def lexicon_for(self, tenant: str | None) -> dict[str, str]:
        """The pronunciation lexicon of ``tenant``: engine entries overlaid with the tenant's."""
        lexicon = dict(self.lexicon)
        if tenant is not None and tenant in self.tenants:
            lexicon.update(self.tenants[tenant].lexicon)
        return lexicon

    def session_defaults(self, tenant: str | None) -> SessionConfig:
        """Engine defaults overlaid with the tenant's."""
        config = self.defaults.apply(SessionConfig())
        if tenant is not None and tenant in self.tenants:
            config = self.tenants[tenant].defaults.apply(config)
        return config


def config_from_mapping(values: Mapping[str, Any]) -> EngineConfig:
    """Validate a parsed TOML document.

    Raises:
        ConfigError: naming the offending key.
    """
    try:
        return msgspec.convert(dict(values), EngineConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> EngineConfig:
    """Read ``path`` (TOML), deep-merge ``overrides`` over it and validate.

    Raises:
        ConfigError: the file is missing, not TOML, or invalid.
    """
    document: dict[str, Any] = {}
    if path is not None:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    if overrides:
        document = _deep_merge(document, overrides)
    return config_from_mapping(document)


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
