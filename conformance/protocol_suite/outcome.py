"""How a check ends: it returns (passed), raises :class:`Failed` or :class:`Skipped`, or records
violations in its :class:`Notes` (failed, with every violation listed)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Failed", "Notes", "Skipped"]


class Failed(Exception):
    """The server broke the protocol (or did not answer): the message says how."""


class Skipped(Exception):
    """The check does not apply to this server or this run: the message says why."""


@dataclass(slots=True)
class Notes:
    """What a running check has to say besides passing or failing."""

    details: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    measurements: dict[str, float] = field(default_factory=dict)

    def note(self, text: str) -> None:
        """A remark for the report (shown for passed checks too)."""
        self.details.append(text)

    def violation(self, text: str) -> None:
        """A broken guarantee; the check goes on but fails."""
        if text not in self.violations:
            self.violations.append(text)

    def violations_from(self, texts: list[str]) -> None:
        for text in texts:
            self.violation(text)

    def measure(self, name: str, value: float) -> None:
        self.measurements[name] = round(float(value), 2)
