"""What a run of the suite may be told: credentials, optional checks, limits and fixtures."""

from __future__ import annotations

from dataclasses import dataclass

from .client_tools import PARALLEL_TOOL_PROMPT, TOOL_PROMPT
from .fixtures import SpeechFixture

__all__ = ["SuiteOptions"]


@dataclass(frozen=True, slots=True)
class SuiteOptions:
    """Options of one run. Every field has a default that suits a server on default settings."""

    api_key: str | None = None
    """Sent as ``Authorization: Bearer`` (preferred: session tokens expire during long runs)."""
    token: str | None = None
    """A session token, sent as ``?token=`` when no API key is given."""
    content_checks: bool = False
    """Also check *what* was transcribed (needs a fixture with known text)."""
    idle_timeout_s: float | None = None
    """The server's ``idle_timeout_s``: enables the idle-timeout check."""
    start_timeout_s: float | None = None
    """The server's ``start_timeout_s``: enables the start-timeout check."""
    bargein_attempts: int = 5
    """Interrupts measured by ``bargein.interrupt``."""
    interrupt_after_ms: float = 300.0
    """How long into the agent's audio each measured interrupt is sent."""
    audio_lead_ms: float = 200.0
    """The server's ``audio_lead_ms``: how far ahead of real time agent audio may run (§5)."""
    max_frame_bytes: int = 256 * 1024
    """The server's ``max_frame_bytes`` (§6), for the frame size check."""
    response_timeout_s: float = 60.0
    """How long to wait for a reply, a transcript or the end of a turn."""
    frame_timeout_s: float = 5.0
    """How long to wait for an immediate answer (an error, a pong, session.started)."""
    check_timeout_s: float = 300.0
    """A check running longer than this fails."""
    speech: SpeechFixture | None = None
    """The utterance to speak; default: "Hello there." rendered with hibari, else synthetic."""
    synthetic_speech: bool = False
    """Use the synthetic voiced signal even when hibari is importable."""
    tool_calls: bool = True
    """Whether the server's model can be driven to call a tool (with the prompts below): the
    ``tools`` checks that need a call are skipped when False."""
    tool_prompt: str = TOOL_PROMPT
    """A typed turn that makes the model call the suite's ``get_weather`` tool once."""
    parallel_tool_prompt: str = PARALLEL_TOOL_PROMPT
    """A typed turn that makes the model call ``get_weather`` and ``get_time`` at once."""
    tool_timeout_s: float = 0.5
    """The ``tool_timeout_s`` the timeout check sets (§2.3: 0-600)."""
    only: tuple[str, ...] = ()
    """Run only the checks with these names or name prefixes (``bargein``)."""
    skip: tuple[str, ...] = ()
    """Leave out the checks with these names or name prefixes."""
