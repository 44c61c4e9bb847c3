"""The one ScaiVoice error tree.

Every error the engine raises, and every error a backend is expected to raise, is one of these::

    ScaiVoiceError
    ├── ConfigError                 bad engine / tenant / session configuration (operator's or client's fault)
    ├── PluginError                 a plugin could not be loaded or broke its contract
    │   ├── PluginLoadError         importing / registering the plugin failed (carries the distribution)
    │   └── PluginContractError     the plugin yielded something the hook does not allow
    ├── AuthError                   the caller is not who they claim, or may not do this
    │   ├── Unauthorized            missing / wrong / expired credentials
    │   └── Forbidden               valid credentials without the needed permission
    ├── BackendError                an STT / LLM / TTS / normaliser backend failed (.backend, .retryable)
    │   ├── BackendUnavailable      cannot be reached / not loaded (retryable)
    │   ├── BackendTimeout          took too long (retryable)
    │   ├── BackendRejected         refused this input (not retryable)
    │   └── BackendProtocolError    answered with something malformed (not retryable)
    ├── SessionError                a WebSocket session cannot go on
    │   ├── SessionClosed           the peer went away (nobody to tell)
    │   └── ProtocolViolation       the client broke the protocol (.code, .close_code, .fatal)
    ├── LimitExceeded               a rate, session or size limit was hit (.code, .retry_after)
    ├── AudioDecodeError            uploaded bytes are not audio a codec here can read
    ├── EnrolmentRejected           a speaker enrolment was refused (.code: audio_too_short ...)
    ├── ToolFailed                  a tool call failed; the model is told (.code: tool_failed ...)
    └── HttpProblem                 an HTTP API request is refused (.status, .code: RFC 9457)

Lower-level exceptions (httpx, onnxruntime, OSError ...) are mapped into this tree at the edge
where they happen, chained with ``raise ... from exc``. Barge-in is not an error: it is a
cancelled turn and travels as ``trio.Cancelled`` inside the turn's cancel scope.
"""

from __future__ import annotations

__all__ = [
    "AudioDecodeError",
    "AuthError",
    "BackendError",
    "BackendProtocolError",
    "BackendRejected",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "EnrolmentRejected",
    "Forbidden",
    "HttpProblem",
    "LimitExceeded",
    "PluginContractError",
    "PluginError",
    "PluginLoadError",
    "ProtocolViolation",
    "ScaiVoiceError",
    "SessionClosed",
    "SessionError",
    "ToolFailed",
    "Unauthorized",
]


class ScaiVoiceError(Exception):
    """Root of every error ScaiVoice raises on purpose."""


class ConfigError(ScaiVoiceError):
    """The configuration is invalid: a missing file, a bad value, an unknown backend.

    Attributes:
        code: the stable protocol error code when a client's session config caused it
            (``invalid_config``, ``unknown_voice``).
    """

    code = "invalid_config"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class PluginError(ScaiVoiceError):
    """A plugin misbehaved."""


class PluginLoadError(PluginError):
    """A plugin could not be imported or registered.

    Attributes:
        distribution: the distribution (package) that ships the broken entry point.
        entry_point: the entry point's name.
    """

    def __init__(self, message: str, *, distribution: str, entry_point: str) -> None:
        super().__init__(message)
        self.distribution = distribution
        self.entry_point = entry_point


class PluginContractError(PluginError):
    """A plugin's hook returned something the hook specification does not allow."""


class AuthError(ScaiVoiceError):
    """Authentication or authorisation failed.

    Attributes:
        code: the stable protocol error code (``unauthorized``, ``token_expired``, ``forbidden``).
    """

    code = "unauthorized"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class Unauthorized(AuthError):
    """Missing, wrong, revoked or expired credentials."""

    code = "unauthorized"


class Forbidden(AuthError):
    """Valid credentials that lack the permission for this action."""

    code = "forbidden"


class BackendError(ScaiVoiceError):
    """A backend failed.

    Attributes:
        backend: the backend's registered name (``"whisper"``, ``"openai"``...).
        retryable: whether trying the same call again may succeed.
    """

    retryable = False

    def __init__(self, message: str, *, backend: str, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        if retryable is not None:
            self.retryable = retryable


class BackendUnavailable(BackendError):
    """The backend cannot be reached or is not loaded."""

    retryable = True


class BackendTimeout(BackendError):
    """The backend did not answer in time."""

    retryable = True


class BackendRejected(BackendError):
    """The backend refused the input (bad voice, unsupported language, content policy...)."""


class BackendProtocolError(BackendError):
    """The backend answered with something malformed or truncated."""


class SessionError(ScaiVoiceError):
    """A WebSocket session cannot go on."""


class SessionClosed(SessionError):
    """The peer closed the connection; there is nobody left to tell."""


class ProtocolViolation(SessionError):
    """The client broke the protocol.

    Attributes:
        code: the stable error code sent in the ``error`` event.
        fatal: whether the session ends (then ``close_code`` is the WebSocket close code).
        close_code: the WebSocket close code used when ``fatal``.
    """

    def __init__(self, code: str, message: str, *, fatal: bool = False, close_code: int = 4400):
        super().__init__(message)
        self.code = code
        self.fatal = fatal
        self.close_code = close_code


class LimitExceeded(ScaiVoiceError):
    """A limit was hit.

    Attributes:
        code: ``rate_limited`` or ``too_many_sessions``.
        retry_after: seconds after which trying again may succeed.
    """

    def __init__(self, code: str, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class AudioDecodeError(ScaiVoiceError):
    """The bytes are not audio any codec here can read (or hold no audio stream)."""


class HttpProblem(ScaiVoiceError):
    """An error the HTTP edge answers with a problem document (RFC 9457).

    Attributes:
        status: the HTTP status.
        code: the stable problem code (the last segment of the problem type URL).
        detail: a human-readable explanation.
        retry_after: seconds for a ``Retry-After`` header, if any.
    """

    def __init__(self, status: int, code: str, detail: str, *, retry_after: int | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class EnrolmentRejected(ScaiVoiceError):
    """A speaker enrolment (or deletion) was refused.

    Attributes:
        code: a stable code: ``audio_too_short``, ``no_speech``, ``speaker_exists``,
            ``unknown_speaker``, ``invalid_speaker_id``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ToolFailed(ScaiVoiceError):
    """A tool call failed. A skill raises it to tell the model why; the session goes on.

    Attributes:
        code: a stable code sent to the client in a ``warning`` (``tool_failed``,
            ``tool_timeout``, ``tool_server_unavailable``, ``tool_arguments_invalid`` ...).
    """

    code = "tool_failed"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
