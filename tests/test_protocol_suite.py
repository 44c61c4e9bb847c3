"""The protocol conformance suite: it passes against our server and fails, naming the broken
guarantee, against servers that break one.

Faulty servers are our real server with a fault injector between each session and its real
WebSocket transport: it reorders, drops or injects frames, or rewrites what the client sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from scaivoice.conformance.protocol_suite import (
    CHECK_NAMES,
    SuiteOptions,
    SuiteReport,
    assert_check,
    human_summary,
    run_protocol_suite,
    to_junit_xml,
)
from scaivoice.conformance.protocol_suite.render import human_line
from scaivoice.engine import (
    Engine,
    PluginHost,
    ToolContext,
    ToolSpec,
    Transport,
    config_from_mapping,
    hash_key,
    hookimpl,
    serve,
)

# Private on purpose: these tests put faults inside our server, between the session and the
# real transport, which the public ``serve`` has no place for. So they run the app class and
# the HTTP/WebSocket server that ``serve`` itself is built from.
from scaivoice.engine._server.app import ScaiVoiceApp
from scaivoice.engine._server.connection import serve_http
from scaivoice.engine._server.http import Scope
from scaivoice.engine.testing import test_engine_config

from .conftest import host_with

KEY = "sk-test-protocol-suite"
TENANTS = {
    "auth": {"token_secret": "protocol-suite-secret"},
    "tenants": {"acme": {"keys": [{"id": "acme-1", "hash": hash_key(KEY)}]}},
}
# Shorter test-tts replies keep the paced audio (real time) short; replies to the suite's long
# prompt still last seconds.
FAST_TTS = {"backends": {"options": {"test-tts": {"ms_per_char": 20}}}}
OPTIONS = SuiteOptions(response_timeout_s=10.0, frame_timeout_s=3.0, check_timeout_s=60.0)


def _engine_doc(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = test_engine_config({"server": {"port": 0, "drain_timeout_s": 0.3}, **FAST_TTS})
    for key, value in (overrides or {}).items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return doc


@asynccontextmanager
async def our_server(
    overrides: dict[str, Any] | None = None, host: PluginHost | None = None
) -> AsyncIterator[str]:
    """Our real server on loopback, port 0, on the test backends: yields the session URL."""
    config = config_from_mapping(_engine_doc(overrides))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, host or host_with(), shutdown_trigger=stop.wait)
        )
        yield server.ws_url
        stop.set()


# --------------------------------------------------------------------------- (a) our server


def _all_passed_or_skipped_with_reason(report: SuiteReport) -> None:
    assert report.ok, human_summary(report)
    for result in report.results:
        assert result.status in ("passed", "skipped")
        if result.skipped:
            assert result.detail, result.name


async def test_our_server_passes_the_whole_suite_with_credentials() -> None:
    async with our_server(TENANTS) as url:
        started = time.perf_counter()
        report = await run_protocol_suite(url, api_key=KEY, options=OPTIONS)
        elapsed = time.perf_counter() - started
    print(f"\n{human_summary(report)}\n(run time against our server: {elapsed:.1f} s)")
    _all_passed_or_skipped_with_reason(report)
    assert [r.name for r in report.results] == list(CHECK_NAMES)
    for name in ("auth.no_credentials", "auth.bad_credentials", "auth.session_token"):
        assert report.result(name).passed, name
    skipped = {r.name for r in report.results if r.skipped}
    assert skipped == {
        "handshake.start_timeout",
        "session.idle_timeout",
        "content.transcript",
        "speakers.diarize",  # the test engine has no speaker features
        "speakers.recognition_shape",
        *TOOL_CALL_CHECKS,  # test-llm cannot call tools
    }
    for name in TOOL_CALL_CHECKS:
        assert "tools_enabled" in report.result(name).detail, name
    figures = report.result("bargein.interrupt").measurements
    assert figures["attempts"] == OPTIONS.bargein_attempts
    assert (
        0
        <= figures["interrupt_to_interrupted_p50_ms"]
        <= figures["interrupt_to_interrupted_max_ms"]
    )
    assert "interrupt_to_last_audio_max_ms" in figures


TOOL_CALL_CHECKS = (
    "tools.call_shape",
    "tools.parallel",
    "tools.cancel_on_barge_in",
    "tools.timeout",
    "tools.bad_results",
)
TOOL_LLM = {"backends": {"llm": "test-tool-llm"}}


class Weather:
    """A server skill, so that ``capabilities.tools`` lists one (a client tool may not shadow
    it)."""

    @staticmethod
    async def forecast(arguments: Mapping[str, Any], context: ToolContext) -> Any:
        return {"sky": "clear"}

    @hookimpl
    def scaivoice_tools(self) -> Iterator[ToolSpec]:
        yield ToolSpec(name="forecast", description="Tomorrow's sky.", handler=self.forecast)


def _tool_host() -> PluginHost:
    host = host_with()
    host.register(Weather(), name="test-weather-skill")
    return host


async def test_our_server_with_a_tool_calling_model_passes_the_tool_checks() -> None:
    async with our_server({**TENANTS, **TOOL_LLM}, _tool_host()) as url:
        started = time.perf_counter()
        report = await run_protocol_suite(
            url, api_key=KEY, options=replace(OPTIONS, only=("tools", "frames.shape"))
        )
        elapsed = time.perf_counter() - started
    print(f"\n{human_summary(report)}\n(run time against our server: {elapsed:.1f} s)")
    _all_passed_or_skipped_with_reason(report)
    assert all(r.passed for r in report.results), human_summary(report)
    assert {r.name for r in report.results} >= {*TOOL_CALL_CHECKS, "tools.invalid_schema"}
    assert report.result("tools.parallel").measurements["calls_outstanding"] == 2
    assert report.result("tools.timeout").measurements["call_to_cancel_ms"] >= 300
    assert "shadowing" not in report.result("tools.invalid_schema").detail


async def test_the_tool_call_checks_skip_when_told_the_model_cannot_call_tools() -> None:
    async with our_server(TOOL_LLM) as url:
        report = await run_protocol_suite(
            url, options=SuiteOptions(only=("tools",), tool_calls=False)
        )
    _all_passed_or_skipped_with_reason(report)
    assert {r.name for r in report.results if r.skipped} == set(TOOL_CALL_CHECKS)
    assert "cannot be driven to call a tool" in report.result("tools.call_shape").detail
    assert report.result("tools.invalid_schema").passed
    assert report.result("tools.result_without_tools").passed


async def test_an_open_server_skips_the_auth_checks_and_passes_content_checks() -> None:
    async with our_server() as url:
        report = await run_protocol_suite(
            url,
            content_checks=True,
            options=SuiteOptions(
                only=("auth", "handshake.session_started", "content", "state.spoken_turn"),
                response_timeout_s=10.0,
            ),
        )
    _all_passed_or_skipped_with_reason(report)
    assert "open server" in report.result("auth.no_credentials").detail
    assert report.result("auth.bad_credentials").skipped
    # test-stt hears any speech as "hello there"; the fixture says "Hello there."
    assert report.result("content.transcript").status == (
        "passed" if report.fixture == "hibari" else "skipped"
    )


async def test_the_optional_timeout_checks_run_when_told_the_server_limits() -> None:
    limits = {"session": {"idle_timeout_s": 1.0, "start_timeout_s": 1.0}}
    async with our_server(limits) as url:
        report = await run_protocol_suite(
            url,
            options=SuiteOptions(
                only=("session.idle_timeout", "handshake.start_timeout"),
                idle_timeout_s=1.0,
                start_timeout_s=1.0,
            ),
        )
    _all_passed_or_skipped_with_reason(report)
    assert all(r.passed for r in report.results)
    assert report.result("session.idle_timeout").measurements["elapsed_s"] >= 0.9


async def test_a_token_opens_the_sessions_when_no_key_is_given() -> None:
    async with our_server(TENANTS) as url:
        import httpx

        async with httpx.AsyncClient() as http:
            response = await http.post(
                url.replace("ws://", "http://").replace("/v1/session", "/v1/session-tokens"),
                headers={"Authorization": f"Bearer {KEY}"},
            )
        token = response.json()["token"]
        report = await run_protocol_suite(  # one session: a token opens one session only
            url, token=token, options=SuiteOptions(only=("ping", "auth"))
        )
    _all_passed_or_skipped_with_reason(report)
    assert report.result("auth.session_token").skipped  # minting needs the key itself


# --------------------------------------------------------------------------- fault injection


def _frame(message: str | bytes) -> dict[str, Any] | None:
    if not isinstance(message, str):
        return None
    doc = json.loads(message)
    return doc if isinstance(doc, dict) else None


class Fault:
    """One session's real transport behind a fault; the base passes everything through.

    Subclasses override the :class:`~scaivoice.engine.Transport` methods to reorder, drop or
    inject frames, or to rewrite what the client sent, and reach the socket through
    ``self.transport``.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def receive(self) -> str | bytes:
        return await self.transport.receive()

    async def send_text(self, text: str) -> None:
        await self.transport.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.transport.send_bytes(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self.transport.close(code, reason)


class AudioAfterInterrupted(Fault):
    """Sends one more audio frame right after ``state: interrupted``."""

    async def send_text(self, text: str) -> None:
        await self.transport.send_text(text)
        frame = _frame(text)
        if frame and frame["type"] == "state" and frame["state"] == "interrupted":
            await self.transport.send_bytes(b"\x00\x00" * 480)


class OmitsAudioDone(Fault):
    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "agent.audio.done":
            return
        await self.transport.send_text(text)


class FinalBeforeInterim(Fault):
    """Sends a final transcript of the turn before its first interim one."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.faked: set[int] = set()

    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "transcript" and not frame["final"]:
            if frame["turn_id"] not in self.faked:
                self.faked.add(frame["turn_id"])
                await self.transport.send_text(json.dumps({**frame, "final": True}))
        await self.transport.send_text(text)


class PongWithoutId(Fault):
    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        is_pong = frame is not None and frame["type"] == "pong"
        await self.transport.send_text(json.dumps({"type": "pong"}) if is_pong else text)


class WrongCloseOnEnd(Fault):
    """Closes with 4000 instead of 1000 after ``session.ended``."""

    async def close(self, code: int, reason: str = "") -> None:
        await self.transport.close(4000 if code == 1000 else code, reason)


class AcceptsProtocol2(Fault):
    """Rewrites ``session.start`` of protocol 2 into protocol 1, so the server accepts it."""

    async def receive(self) -> str | bytes:
        message = await self.transport.receive()
        if isinstance(message, str) and message.startswith("{"):
            doc = json.loads(message)
            if isinstance(doc, dict) and doc.get("type") == "session.start":
                if doc.get("protocol") == 2:
                    return json.dumps({**doc, "protocol": 1})
        return message


class AudioStartBeforeSpeaking(Fault):
    """Holds ``state: speaking`` back until after the turn's ``agent.audio.start``."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.held: str | None = None

    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "state" and frame["state"] == "speaking":
            self.held = text
            return
        await self.transport.send_text(text)
        if frame and frame["type"] == "agent.audio.start" and self.held is not None:
            held, self.held = self.held, None
            await self.transport.send_text(held)


class OddAudioFrames(Fault):
    """Appends one byte to the first audio frame of each turn."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.first = False

    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "agent.audio.start":
            self.first = True
        await self.transport.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        if self.first:
            self.first = False
            data += b"\x00"
        await self.transport.send_bytes(data)


class CancelAfterInterrupted(Fault):
    """Holds ``tool.cancel`` back until after ``state: interrupted``."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.held: list[str] = []

    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "tool.cancel" and frame["reason"] == "interrupted":
            self.held.append(text)
            return
        await self.transport.send_text(text)
        if frame and frame["type"] == "state" and frame["state"] == "interrupted":
            for held in self.held:
                await self.transport.send_text(held)
            self.held.clear()


class CallSentTwice(Fault):
    async def send_text(self, text: str) -> None:
        await self.transport.send_text(text)
        frame = _frame(text)
        if frame and frame["type"] == "tool.call":
            await self.transport.send_text(text)


class ArgumentsDropped(Fault):
    """Sends every ``tool.call`` with empty arguments (not validated against the schema)."""

    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "tool.call":
            text = json.dumps({**frame, "arguments": {}})
        await self.transport.send_text(text)


class NoTimeoutWarning(Fault):
    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "warning" and frame["code"] == "tool_timeout":
            return
        await self.transport.send_text(text)


class DuplicateResultIgnored(Fault):
    async def send_text(self, text: str) -> None:
        frame = _frame(text)
        if frame and frame["type"] == "error" and frame["code"] == "tool_result_duplicate":
            return
        await self.transport.send_text(text)


class FaultyApp(ScaiVoiceApp):
    """Our app with a fresh ``fault`` between each session and its real WebSocket transport."""

    def __init__(self, engine: Engine, fault: type[Fault]) -> None:
        super().__init__(engine)
        self.fault = fault

    async def serve_session(self, scope: Scope, transport: Transport) -> None:
        await super().serve_session(scope, self.fault(transport))


@asynccontextmanager
async def faulty_server(
    fault: type[Fault], overrides: dict[str, Any] | None = None
) -> AsyncIterator[str]:
    """Our real server (HTTP/1.1 and the session WebSocket) with ``fault`` in every session:
    yields the session URL."""
    config = config_from_mapping(_engine_doc(overrides))
    async with Engine.open(config, host_with()) as engine:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                partial(
                    serve_http,
                    FaultyApp(engine, fault),
                    host="127.0.0.1",
                    port=0,
                    max_message_bytes=config.session.max_frame_bytes * 4,
                    shutdown_trigger=stop.wait,
                    graceful_timeout_s=0.5,
                )
            )
            yield urls[0].replace("http://", "ws://", 1) + "/v1/session"
            stop.set()


@pytest.mark.parametrize(
    ("fault", "check", "control", "why"),
    [
        (AudioAfterInterrupted, "bargein.interrupt", "ping.pong", "after its state interrupted"),
        (OmitsAudioDone, "audio.bracketing", "state.typed_turn", "agent.audio.done of turn 1"),
        (FinalBeforeInterim, "transcript.ordering", "state.typed_turn", "after its final"),
        (PongWithoutId, "ping.pong", "errors.bad_input", "pong without an id"),
        (WrongCloseOnEnd, "session.end", "ping.pong", "closed with 4000, expected 1000"),
        (AcceptsProtocol2, "handshake.unsupported_protocol", "ping.pong", "was accepted"),
        (
            AudioStartBeforeSpeaking,
            "ordering.speaking_before_audio",
            "transcript.ordering",
            "before state speaking",
        ),
        (OddAudioFrames, "audio.bracketing", "ping.pong", "odd number of bytes"),
    ],
)
async def test_a_server_that_breaks_a_guarantee_fails_that_check(
    fault: type[Fault], check: str, control: str, why: str
) -> None:
    async with faulty_server(fault) as url:
        report = await run_protocol_suite(
            url,
            options=SuiteOptions(
                only=(check, control), response_timeout_s=5.0, frame_timeout_s=2.0
            ),
        )
    failed = report.result(check)
    assert failed.failed, human_summary(report)
    assert why in failed.detail, failed.detail
    assert report.result(control).passed, human_summary(report)
    assert not report.ok
    assert check in human_summary(report) and why in human_summary(report)


@pytest.mark.parametrize(
    ("fault", "check", "why"),
    [
        (CancelAfterInterrupted, "tools.cancel_on_barge_in", "no tool.cancel came before"),
        (CallSentTwice, "tools.call_shape", "sent twice"),
        (ArgumentsDropped, "tools.call_shape", "lack the required 'city'"),
        (NoTimeoutWarning, "tools.timeout", "warning tool_timeout"),
        (DuplicateResultIgnored, "tools.bad_results", "tool_result_duplicate"),
    ],
)
async def test_a_server_that_breaks_a_tool_guarantee_fails_that_check(
    fault: type[Fault], check: str, why: str
) -> None:
    async with faulty_server(fault, TOOL_LLM) as url:
        report = await run_protocol_suite(
            url,
            options=SuiteOptions(
                only=(check, "tools.invalid_schema"), response_timeout_s=5.0, frame_timeout_s=2.0
            ),
        )
    failed = report.result(check)
    assert failed.failed, human_summary(report)
    assert why in failed.detail, failed.detail
    assert report.result("tools.invalid_schema").passed, human_summary(report)


# --------------------------------------------------------------------------- reports and CLI


def _sample_report() -> SuiteReport:
    from scaivoice.conformance.protocol_suite import CheckResult

    return SuiteReport(
        url="ws://example/v1/session",
        started_at=1.0,
        duration_s=2.5,
        fixture="synthetic",
        results=[
            CheckResult("ping.pong", "ping answered", "§2.1", "passed", "", 0.1),
            CheckResult("session.end", "end", "§8", "failed", "closed with 4000\nmore", 0.2),
            CheckResult("content.transcript", "words", "§2.2", "skipped", "off", 0.0),
            CheckResult("bargein.interrupt", "b", "§4.5", "passed", "", 1.0, {"p50_ms": 3.5}),
        ],
    )


def test_the_reports_count_and_explain_every_check() -> None:
    report = _sample_report()
    assert report.counts == {"passed": 2, "failed": 1, "skipped": 1}
    summary = human_summary(report)
    assert "2 passed, 1 failed, 1 skipped" in summary
    assert "closed with 4000" in summary and "more" in summary
    assert "p50_ms=3.5" in summary and summary.endswith("RESULT: FAIL")
    doc = report.to_dict()
    assert json.loads(json.dumps(doc))["checks"][1]["status"] == "failed"
    root = ET.fromstring(to_junit_xml(report).split("\n", 1)[1])
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = {c.get("classname") + "." + c.get("name"): c for c in suite.iter("testcase")}  # type: ignore[operator]
    failure = cases["protocol.session.end"].find("failure")
    assert failure is not None and failure.text == "closed with 4000\nmore"
    assert cases["protocol.content.transcript"].find("skipped") is not None


def test_assert_check_maps_results_onto_pytest() -> None:
    report = _sample_report()
    assert_check(report, "ping.pong")
    with pytest.raises(AssertionError, match="closed with 4000"):
        assert_check(report, "session.end")
    with pytest.raises(pytest.skip.Exception):
        assert_check(report, "content.transcript")


def test_the_cli_lists_the_checks() -> None:
    from scaivoice.engine.cli import main

    assert main(["conformance", "protocol", "--list"]) == 0


async def _cli(url: str, tmp_path: Path, *extra: str) -> tuple[int, str]:
    env = {**os.environ, "SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("SCAIVOICE_API_KEY", None)
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "scaivoice.engine.cli",
            "conformance",
            "protocol",
            url,
            "--json",
            str(tmp_path / "report.json"),
            "--junit",
            str(tmp_path / "report.xml"),
            "--synthetic-speech",
            *extra,
        ],
        capture_stdout=True,
        stderr=subprocess.STDOUT,
        check=False,
        env=env,
    )
    return result.returncode, result.stdout.decode()


async def test_the_cli_writes_the_reports_and_exits_non_zero_on_a_failure(
    tmp_path: Path,
) -> None:
    async with our_server() as url:
        code, out = await _cli(url, tmp_path, "--only", "ping", "--only", "session.end")
    assert code == 0, out
    assert "2 passed, 0 failed" in out
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True
    async with faulty_server(PongWithoutId) as url:
        code, out = await _cli(url, tmp_path, "--only", "ping")
    assert code == 1, out
    assert "FAIL  ping.pong" in out and "pong without an id" in out
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["ok"] is False and doc["counts"]["failed"] == 1
    assert 'failures="1"' in (tmp_path / "report.xml").read_text()


# --------------------------------------------------------------------------- embedded models


@pytest.mark.slow
async def test_our_server_on_the_embedded_models_passes_the_suite() -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("xllamacpp")
    config = config_from_mapping(
        {
            "server": {"port": 0},
            "backends": {"options": {"llama-cpp": {"max_tokens": 120}}},
            **TENANTS,
        }
    )
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve, config, host, shutdown_trigger=trio.sleep_forever)
        )
        started = time.perf_counter()
        report = await run_protocol_suite(
            server.ws_url,
            api_key=KEY,
            content_checks=True,
            options=SuiteOptions(response_timeout_s=120.0, check_timeout_s=600.0),
            on_result=lambda result: print(human_line(result)),
        )
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    print(f"\n{human_summary(report)}\n(run time on the embedded models: {elapsed:.1f} s)")
    _all_passed_or_skipped_with_reason(report)
    if report.fixture == "hibari":
        assert report.result("content.transcript").passed  # whisper hears the fixture's words
    assert report.result("auth.session_token").passed
