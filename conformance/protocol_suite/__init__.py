"""The ScaiVoice protocol v1 conformance suite: run it against any server that claims protocol v1.

It relies only on docs/protocol.md: raw WebSocket frames, its own speech fixture, no knowledge
of the models behind the server. From Python::

    report = await run_protocol_suite("ws://127.0.0.1:8765/v1/session", api_key=KEY)
    print(human_summary(report))
    assert report.ok

From the shell: ``scaivoice conformance protocol URL [--api-key K] [--json F] [--junit F]``.
docs/conformance.md describes every check.
"""

from __future__ import annotations

from . import checks as _checks  # noqa: F401  (registers the checks)
from .fixtures import SpeechFixture, load_speech_wav, speech_fixture, synthetic_speech
from .options import SuiteOptions
from .pytest_support import assert_check, assert_conformant
from .registry import CHECKS, Check
from .render import human_summary, to_json, to_junit_xml, write_reports
from .report import CheckResult, SuiteReport
from .runner import run_protocol_suite, run_protocol_suite_sync

CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)

__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "Check",
    "CheckResult",
    "SpeechFixture",
    "SuiteOptions",
    "SuiteReport",
    "assert_check",
    "assert_conformant",
    "human_summary",
    "load_speech_wav",
    "run_protocol_suite",
    "run_protocol_suite_sync",
    "speech_fixture",
    "synthetic_speech",
    "to_json",
    "to_junit_xml",
    "write_reports",
]
