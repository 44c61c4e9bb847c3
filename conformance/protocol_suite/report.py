"""The results of a run: one :class:`CheckResult` per check, gathered in a :class:`SuiteReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["CheckResult", "Status", "SuiteReport"]

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """How one check went."""

    name: str
    title: str
    spec: str
    status: Status
    detail: str
    """Failed: every violation found; skipped: why; passed: remarks and figures, if any."""
    duration_s: float
    measurements: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"


@dataclass(slots=True)
class SuiteReport:
    """The outcome of a run against one server."""

    url: str
    started_at: float
    """Unix time the run started."""
    duration_s: float
    results: list[CheckResult]
    fixture: str
    """Where the spoken utterance came from (``hibari``, ``synthetic``, a WAV path)."""
    protocol: int = 1

    @property
    def ok(self) -> bool:
        """No check failed."""
        return not any(r.failed for r in self.results)

    @property
    def counts(self) -> dict[Status, int]:
        counts: dict[Status, int] = {"passed": 0, "failed": 0, "skipped": 0}
        for result in self.results:
            counts[result.status] += 1
        return counts

    def result(self, name: str) -> CheckResult:
        """The result of check ``name``.

        Raises:
            KeyError: no check of that name ran.
        """
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (see docs/conformance.md)."""
        return {
            "suite": "scaivoice-protocol",
            "protocol": self.protocol,
            "url": self.url,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "fixture": self.fixture,
            "ok": self.ok,
            "counts": self.counts,
            "checks": [asdict(r) for r in self.results],
        }
