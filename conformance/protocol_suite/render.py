"""A report as text for people, as JSON, and as JUnit XML (for CI dashboards)."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from .report import CheckResult, SuiteReport

__all__ = ["human_line", "human_summary", "to_json", "to_junit_xml", "write_reports"]

_MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}


def human_line(result: CheckResult) -> str:
    """One line per check: status, name, time (and the reason when skipped)."""
    line = f"{_MARK[result.status]}  {result.name:<34} {result.duration_s:7.2f} s"
    if result.skipped:
        line += f"  ({_first_line(result.detail)})"
    return line


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def human_summary(report: SuiteReport, *, verbose: bool = False) -> str:
    """Counts, every failure with its detail, figures, skips (and, ``verbose``, the remarks of
    the checks that passed)."""
    counts = report.counts
    lines = [
        f"ScaiVoice protocol v{report.protocol} conformance: {report.url}",
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {report.duration_s:.1f} s (speech fixture: {report.fixture})",
    ]
    if report.failures:
        lines.append("")
        lines.append("Failures:")
        for result in report.failures:
            lines.append(f"  {result.name}  [{result.spec}]  {result.title}")
            for detail_line in result.detail.splitlines():
                lines.append(textwrap.indent(detail_line, "      "))
    figures = [r for r in report.results if r.measurements]
    if figures:
        lines.append("")
        lines.append("Measurements:")
        for result in figures:
            shown = ", ".join(f"{k}={v:g}" for k, v in result.measurements.items())
            lines.append(f"  {result.name}: {shown}")
    remarks = [r for r in report.results if r.passed and r.detail]
    if verbose and remarks:
        lines.append("")
        lines.append("Notes:")
        for result in remarks:
            lines.append(f"  {result.name}:")
            for detail_line in result.detail.splitlines():
                lines.append(textwrap.indent(detail_line, "      "))
    skipped = [r for r in report.results if r.skipped]
    if skipped:
        lines.append("")
        lines.append("Skipped:")
        for result in skipped:
            lines.append(f"  {result.name}: {_first_line(result.detail)}")
    lines.append("")
    lines.append("RESULT: " + ("PASS" if report.ok else "FAIL"))
    return "\n".join(lines)


def to_json(report: SuiteReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


def to_junit_xml(report: SuiteReport) -> str:
    """One ``<testsuite>`` with a ``<testcase>`` per check (``classname``: its group)."""
    counts = report.counts
    root = ET.Element("testsuites", name="scaivoice-protocol", time=f"{report.duration_s:.3f}")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"scaivoice-protocol-v{report.protocol}",
        tests=str(len(report.results)),
        failures=str(counts["failed"]),
        errors="0",
        skipped=str(counts["skipped"]),
        time=f"{report.duration_s:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="url", value=report.url)
    ET.SubElement(props, "property", name="fixture", value=report.fixture)
    for result in report.results:
        group, _, rest = result.name.partition(".")
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"protocol.{group}",
            name=rest or group,
            time=f"{result.duration_s:.3f}",
        )
        if result.failed:
            failure = ET.SubElement(
                case, "failure", message=_first_line(result.detail)[:500], type=result.spec
            )
            failure.text = result.detail
        elif result.skipped:
            ET.SubElement(case, "skipped", message=_first_line(result.detail)[:500])
        out = [f"{result.title} [{result.spec}]"]
        if result.detail and not result.failed:
            out.append(result.detail)
        out += [f"{k} = {v:g}" for k, v in result.measurements.items()]
        ET.SubElement(case, "system-out").text = "\n".join(out)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(
    report: SuiteReport, *, json_path: str | Path | None, junit_path: str | Path | None
) -> None:
    if json_path:
        Path(json_path).write_text(to_json(report) + "\n", encoding="utf-8")
    if junit_path:
        Path(junit_path).write_text(to_junit_xml(report), encoding="utf-8")
