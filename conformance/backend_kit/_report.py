"""What the backend contract kit reports: one result per check, one report per backend (or
per server skill: a report of kind ``"tool"``)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BackendReport", "CheckResult", "CheckStatus"]


class CheckStatus(enum.StrEnum):
    """How a check ended.

    ``SKIPPED`` means the check does not apply: the capability it tests is not declared (or the
    kit cannot observe it, which the detail says). A declared capability that does not hold is
    ``FAILED``, never skipped.
    """

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one contract check against one backend.

    Attributes:
        name: the check's stable name, ``"<kind>.<check>"`` (``"tts.streaming"``).
        status: passed, failed or skipped.
        detail: what was measured (passed), what went wrong (failed) or why it does not apply
            (skipped); one line, meant for people.
        duration_s: how long the check ran, in seconds.
    """

    name: str
    status: CheckStatus
    detail: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status is CheckStatus.PASSED

    @property
    def failed(self) -> bool:
        return self.status is CheckStatus.FAILED

    @property
    def skipped(self) -> bool:
        return self.status is CheckStatus.SKIPPED

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``status`` as its string value)."""
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True, slots=True)
class BackendReport:
    """Every check run against one backend, or one server skill.

    Attributes:
        backend: the backend's name (its registered name, or its class name when it has none);
            for a skill, the tool's name.
        kind: ``"stt"``, ``"llm"``, ``"tts"``, ``"normaliser"``, or ``"tool"`` for a skill.
        capabilities: the capabilities the backend declared, field by field (for a skill: its
            permissions and timeout).
        results: one result per check, in the order they ran.
        duration_s: the whole run, opening and closing the backend included.
        speech: where the STT checks' speech came from (``"hibari"`` or ``"synthetic"``);
            ``None`` for other kinds.
    """

    backend: str
    kind: str
    capabilities: Mapping[str, Any]
    results: tuple[CheckResult, ...]
    duration_s: float
    speech: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks do not count against a backend)."""
        return not self.failed

    @property
    def passed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.passed)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.failed)

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.skipped)

    def result(self, name: str) -> CheckResult:
        """The result of the check called ``name``.

        Raises:
            KeyError: no check of that name ran.
        """
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def statuses(self) -> dict[str, CheckStatus]:
        """Check name -> status, for assertions."""
        return {r.name: r.status for r in self.results}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping: the backend, a summary and every result."""
        return {
            "backend": self.backend,
            "kind": self.kind,
            "ok": self.ok,
            "options": dict(self.options),
            "capabilities": {k: _jsonable(v) for k, v in self.capabilities.items()},
            "speech": self.speech,
            "summary": {
                "passed": len(self.passed),
                "failed": len(self.failed),
                "skipped": len(self.skipped),
            },
            "duration_s": round(self.duration_s, 3),
            "checks": [r.to_json() for r in self.results],
        }

    def format_text(self) -> str:
        """A human summary: one line per check, then the totals."""
        width = max((len(r.name) for r in self.results), default=0)
        label = {
            CheckStatus.PASSED: "PASS",
            CheckStatus.FAILED: "FAIL",
            CheckStatus.SKIPPED: "skip",
        }
        what = "tool" if self.kind == "tool" else f"{self.kind} backend"
        lines = [f"{self.backend} ({what})"]
        if self.speech is not None:
            lines.append(f"  speech for the checks: {self.speech}")
        for r in self.results:
            lines.append(
                f"  {label[r.status]}  {r.name:<{width}}  {r.duration_s:6.2f} s  {r.detail}"
            )
        verdict = "conforms" if self.ok else "DOES NOT CONFORM"
        lines.append(
            f"{self.backend}: {verdict} - {len(self.passed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped in {self.duration_s:.1f} s"
        )
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value
