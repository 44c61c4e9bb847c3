"""``scaivoice bench wake``: its figures on one voice, and its command line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import trio

from scaivoice.conformance.bench.wake import (
    WAKE_TEMPLATES,
    keyword_phrase,
    measure,
    print_report,
)
from scaivoice.engine import PluginHost

KEYWORDS = ["okay_nabu", "hey_jarvis", "alexa", "hey_mycroft"]


def test_keyword_phrases() -> None:
    assert [keyword_phrase(k) for k in KEYWORDS] == [
        "Okay Nabu",
        "Hey Jarvis",
        "Alexa",
        "Hey Mycroft",
    ]


@pytest.mark.slow
def test_the_figures_on_one_voice(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pymicro_wakeword")
    pytest.importorskip("hibari")
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    report = trio.run(lambda: measure(host, voices=["hibari:heart", "nosuch:voice"], minutes=1.0))
    assert report.keywords == KEYWORDS
    assert report.voices == ["hibari:heart"]
    assert report.skipped_voices == ["nosuch:voice (no nosuch backend)"]
    spoken = len(WAKE_TEMPLATES)
    assert report.detected["hey_mycroft"]["hibari:heart"] == [spoken, spoken]
    assert report.detected["okay_nabu"]["hibari:heart"] == [0, spoken]  # hibari's is not heard
    assert all(100 <= d <= 300 for d in report.delay_ms["hey_mycroft"])
    assert 1.0 <= report.negative_hours * 60 < 1.1
    assert 0 < report.negative_distinct_hours <= report.negative_hours
    assert report.false_wakes == dict.fromkeys([*KEYWORDS, "any"], 0)
    assert 0 < report.cpu_ms_per_s["1"] < report.cpu_ms_per_s["all"] < 100
    print_report(report)
    out = capsys.readouterr().out
    assert "false wakes over 1.0 min of speech" in out
    assert re.search(r"hey_mycroft +0 \(0.00 per hour; under 1\d\d.\d per hour at 95 %\)", out)


def test_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaivoice.engine.cli", "bench", "wake", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--minutes" in result.stdout and "--voice" in result.stdout
