"""The backend contract kit: built-in backends pass, broken ones fail the right checks.

The kit measures real behaviour (deadlines, threads, arrival times), so these tests run on the
real clock; the deliberately broken backends are built on the deterministic test backends and
the kit's thresholds are tightened where a failure would otherwise take seconds to show.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest
import trio

from scaivoice.backends.echo_llm import EchoLlm
from scaivoice.backends.testing import TestLlm, TestStt, TestTts
from scaivoice.conformance import (
    CHECKS,
    TOOL_CHECKS,
    BackendReport,
    CheckStatus,
    KitConfig,
    SpeechFixtures,
    check_installed_backend,
    check_installed_tool,
    check_tts_streaming,
    open_subject,
    render_speech,
    run_backend_checks,
    run_tool_checks,
    synthetic_speech,
)
from scaivoice.conformance.backend_kit.pytest_plugin import (
    LlmBackendContract,
    NormaliserBackendContract,
    SttBackendContract,
    ToolContract,
    TtsBackendContract,
    kit_speech,
)
from scaivoice.engine import (
    AudioChunk,
    BackendError,
    BackendOptions,
    ConfigError,
    LlmCapabilities,
    LlmRequest,
    NormaliserBackend,
    NormaliserCapabilities,
    NormaliseRequest,
    PluginHost,
    ToolCall,
    ToolContext,
    ToolFailed,
    ToolSpec,
    Transcript,
    TtsRequest,
    hookimpl,
)
from scaivoice.engine.cli import main

#: Contract violations of built-in backends that are known and not fixed yet: (backend, check)
#: -> why. An entry that stops failing fails this suite, so fixed bugs leave this list.
KNOWN_FAILURES: Mapping[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """Every installed plugin, as ``scaivoice conformance backend`` sees them."""
    host = PluginHost()
    host.load_entry_points(strict=False)
    return host


@pytest.fixture
def speech(request: pytest.FixtureRequest) -> SpeechFixtures:
    """The kit's speech, rendered once per session (hibari when installed)."""
    return kit_speech(request.config)


def assert_conforms(report: BackendReport) -> None:
    known = {name for (backend, name) in KNOWN_FAILURES if backend == report.backend}
    failed = {r.name for r in report.failed}
    assert failed == known, report.format_text()


def status(report: BackendReport, name: str) -> CheckStatus:
    return report.result(name).status


# --------------------------------------------------------------------------- built-in backends

FAST_BACKENDS = [
    pytest.param("test-stt", {}, id="test-stt"),
    pytest.param("test-llm", {}, id="test-llm"),
    pytest.param("test-tool-llm", {}, id="test-tool-llm"),
    pytest.param("test-tts", {}, id="test-tts"),
    pytest.param("echo", {}, id="echo"),
    pytest.param("text", {}, id="text-normaliser"),
]


@pytest.mark.parametrize(("name", "options"), FAST_BACKENDS)
async def test_the_deterministic_backends_conform(
    host: PluginHost, speech: SpeechFixtures, name: str, options: dict[str, Any]
) -> None:
    report = await check_installed_backend(host, name, options=options, speech=speech)
    assert_conforms(report)
    assert [r.name for r in report.results] == [c.name for c in CHECKS[report.kind]]


REAL_BACKENDS = [
    # (name, options, kit settings, the module its packages provide)
    pytest.param("hibari", {"seed": 0}, {}, "hibari", id="hibari"),
    pytest.param("espeak", {}, {}, "espeakng_loader", id="espeak"),
    pytest.param("piper", {}, {}, "piper", id="piper"),
    pytest.param("whisper", {}, {"check_content": True}, "faster_whisper", id="whisper"),
    pytest.param("llama-cpp", {"temperature": 0.0, "seed": 1}, {}, "xllamacpp", id="llama-cpp"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options", "settings", "module"), REAL_BACKENDS)
async def test_the_embedded_model_backends_conform(
    host: PluginHost,
    speech: SpeechFixtures,
    name: str,
    options: dict[str, Any],
    settings: dict[str, Any],
    module: str,
) -> None:
    pytest.importorskip(module)
    config = KitConfig(**settings)
    report = await check_installed_backend(
        host, name, options=options, config=config, speech=speech
    )
    assert_conforms(report)
    if name == "whisper" and speech.has_words:
        assert status(report, "stt.content") is CheckStatus.PASSED
        assert status(report, "stt.streaming") is CheckStatus.SKIPPED  # not declared


async def test_a_backend_skips_what_it_does_not_declare(host: PluginHost) -> None:
    report = await check_installed_backend(host, "echo")
    assert status(report, "llm.tools") is CheckStatus.SKIPPED
    assert report.result("llm.tools").detail == "'tools' is not declared"
    report = await check_installed_backend(host, "test-tts")
    skipped = {r.name for r in report.skipped}
    assert skipped == {"tts.instructions", "tts.cfg_value", "tts.warmup_trim"}


async def test_the_example_plugin_conforms(host: PluginHost) -> None:
    pytest.importorskip("scaivoice_example_plugin")
    for name in ("example-chirp", "example-abbrev"):
        report = await check_installed_backend(host, name)
        assert_conforms(report)


# --------------------------------------------------------------------------- broken backends


async def run_broken(backend_factory: Any, **settings: Any) -> BackendReport:
    config = KitConfig(**settings)
    return await run_backend_checks(backend_factory, config=config, speech=synthetic_speech())


def failed(report: BackendReport) -> set[str]:
    return {r.name for r in report.failed}


class BatchTts(TestTts):
    """Declares streaming, but renders the whole text before sending anything."""

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        async with audio:
            rendered_send, rendered = trio.open_memory_channel[AudioChunk](math.inf)
            await super().synthesize(request, rendered_send)
            await trio.sleep(0.1)  # "the model" renders everything first
            async for chunk in rendered:
                await audio.send(chunk)


async def test_a_tts_that_batches_fails_streaming() -> None:
    report = await run_broken(lambda: BatchTts(TestTts.Options()))
    assert failed(report) == {"tts.streaming"}, report.format_text()
    assert "not streamed" in report.result("tts.streaming").detail


class LeavesChannelOpenTts(TestTts):
    """Closes its channel when done or failing, but not when cancelled."""

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        rendered_send, rendered = trio.open_memory_channel[AudioChunk](math.inf)
        try:
            await super().synthesize(request, rendered_send)
        except BackendError:
            await audio.aclose()
            raise
        async for chunk in rendered:
            await audio.send(chunk)  # a cancel escapes here with the channel open
        await audio.aclose()


async def test_a_tts_that_leaves_its_channel_open_on_cancel_fails_cancellation() -> None:
    report = await run_broken(lambda: LeavesChannelOpenTts(TestTts.Options()))
    assert failed(report) == {"tts.cancellation"}, report.format_text()
    assert "without closing" in report.result("tts.cancellation").detail


class ValueErrorTts(TestTts):
    """Raises ValueError for an unknown voice instead of BackendRejected."""

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        if request.voice_id not in (None, "tone-a", "tone-b"):
            async with audio:
                raise ValueError(f"no such voice: {request.voice_id}")
        await super().synthesize(request, audio)


async def test_a_tts_that_raises_valueerror_fails_the_error_check() -> None:
    report = await run_broken(lambda: ValueErrorTts(TestTts.Options()))
    assert failed(report) == {"tts.unknown_voice"}, report.format_text()
    assert "ValueError" in report.result("tts.unknown_voice").detail


@pytest.fixture
def release_threads() -> Iterator[threading.Event]:
    """Ends the threads a leaking backend left behind, after the test."""
    event = threading.Event()
    yield event
    event.set()


async def test_a_tts_that_leaks_a_thread_fails_no_leaks(release_threads: threading.Event) -> None:
    class ThreadLeakTts(TestTts):
        async def synthesize(
            self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
        ) -> None:
            threading.Thread(target=release_threads.wait, name="tone-keeper", daemon=True).start()
            await super().synthesize(request, audio)

    report = await run_broken(lambda: ThreadLeakTts(TestTts.Options()), leak_grace_s=0.3)
    assert failed(report) == {"tts.no_leaks"}, report.format_text()
    assert "'tone-keeper'" in report.result("tts.no_leaks").detail


class OddPcmTts(TestTts):
    """Sends chunks of odd byte length (half a sample too many)."""

    async def synthesize(
        self, request: TtsRequest, audio: trio.MemorySendChannel[AudioChunk]
    ) -> None:
        async with audio:
            rendered_send, rendered = trio.open_memory_channel[AudioChunk](math.inf)
            await super().synthesize(request, rendered_send)
            async for chunk in rendered:
                await audio.send(AudioChunk(chunk.pcm + b"\x00", chunk.sample_rate))


async def test_a_tts_that_sends_odd_length_pcm_fails_output_format() -> None:
    report = await run_broken(lambda: OddPcmTts(TestTts.Options()))
    assert status(report, "tts.output_format") is CheckStatus.FAILED, report.format_text()
    assert "odd byte count" in report.result("tts.output_format").detail
    # Checks that never look at the audio still pass.
    assert status(report, "tts.unknown_voice") is CheckStatus.PASSED
    assert status(report, "tts.aclose_idempotent") is CheckStatus.PASSED


class RewritingStt(TestStt):
    """TestStt with each stream's results passed through a fresh :meth:`rewriter` (which may
    drop or add results), then :meth:`after` once at the end."""

    def rewriter(self) -> Callable[[Transcript], list[Transcript]]:
        return lambda result: [result]

    def after(self) -> list[Transcript]:
        return []

    async def transcribe(
        self,
        request: Any,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        async with results:
            inner_send, inner = trio.open_memory_channel[Transcript](0)
            rewrite = self.rewriter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(super().transcribe, request, audio, inner_send)
                async for result in inner:
                    for rewritten in rewrite(result):
                        await results.send(rewritten)
            for extra in self.after():
                await results.send(extra)


class TwoFinalsStt(RewritingStt):
    """Forwards TestStt's results, then sends a second final."""

    def after(self) -> list[Transcript]:
        return [Transcript("and once more", final=True)]


async def test_an_stt_that_sends_two_finals_fails_the_ordering_check() -> None:
    report = await run_broken(lambda: TwoFinalsStt(TestStt.Options()), stt_pace=4.0)
    assert status(report, "stt.one_final_last") is CheckStatus.FAILED, report.format_text()
    assert "2 final transcripts" in report.result("stt.one_final_last").detail
    assert status(report, "stt.no_audio") is CheckStatus.FAILED
    assert status(report, "stt.aclose_idempotent") is CheckStatus.PASSED


class WrongGuessStt(RewritingStt):
    """Marks its first interim stable, never withdraws it, then finals another text."""

    def rewriter(self) -> Callable[[Transcript], list[Transcript]]:
        guessed = False

        def rewrite(result: Transcript) -> list[Transcript]:
            nonlocal guessed
            if result.final:
                return [Transcript(result.text + " and more", final=True)]
            if guessed:
                return []
            guessed = True
            return [Transcript(result.text, final=False, stable=True)]

        return rewrite


async def test_an_stt_whose_stable_guess_differs_from_its_final_fails() -> None:
    report = await run_broken(lambda: WrongGuessStt(TestStt.Options()), stt_pace=4.0)
    check = report.result("stt.stable_interims")
    assert check.status is CheckStatus.FAILED, report.format_text()
    assert "never withdrawn" in check.detail
    assert status(report, "stt.one_final_last") is CheckStatus.PASSED


async def test_an_stt_without_stable_interims_skips_that_check() -> None:
    report = await run_broken(lambda: TestStt(TestStt.Options()), stt_pace=4.0)
    assert status(report, "stt.stable_interims") is CheckStatus.SKIPPED, report.format_text()


class ShieldedLlm(TestLlm):
    """Generates inside a shielded scope: cancelling it does nothing until the reply is done."""

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        async with deltas:
            with trio.CancelScope(shield=True):
                user = request.messages[-1].content if request.messages else ""
                for word in f"You said: {user}".split():
                    await trio.sleep(0.02)
                    await deltas.send(word + " ")


async def test_an_llm_that_ignores_cancellation_fails_cancellation() -> None:
    report = await run_broken(lambda: ShieldedLlm(TestLlm.Options()), cancel_deadline_s=0.15)
    assert failed(report) == {"llm.cancellation"}, report.format_text()
    assert re.search(r"took \d\.\d\d s to return", report.result("llm.cancellation").detail)


class TaskLeakLlm(TestLlm):
    """Leaves a trio task running behind every generation."""

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        trio.lowlevel.spawn_system_task(trio.sleep_forever, name="forgotten-keepalive")
        await super().generate(request, deltas)


async def test_an_llm_that_leaves_a_task_behind_fails_no_leaks() -> None:
    report = await run_broken(lambda: TaskLeakLlm(TestLlm.Options()), leak_grace_s=0.3)
    assert failed(report) == {"llm.no_leaks"}, report.format_text()
    assert "'forgotten-keepalive'" in report.result("llm.no_leaks").detail


async def test_a_backend_that_cannot_open_fails_every_check() -> None:
    class Unloadable(TestTts):
        async def open(self) -> None:
            raise BackendError("model file missing", backend="unloadable")

    report = await run_broken(lambda: Unloadable(TestTts.Options()))
    assert report.results and all(r.failed for r in report.results)
    assert "could not be opened" in report.results[0].detail


# --------------------------------------------------------------------------- the three entry points


async def test_a_check_is_a_plain_async_function() -> None:
    async with open_subject(lambda: TestTts(TestTts.Options())) as subject:
        result = await check_tts_streaming(subject)
    assert result.name == "tts.streaming"
    assert result.status is CheckStatus.PASSED
    assert result.duration_s >= 0
    assert result.to_json()["status"] == "passed"


def test_the_cli_prints_a_summary_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "backend", "test-llm"]) == 0
    out = capsys.readouterr().out
    assert "PASS  llm.cancellation" in out
    assert "test-llm: conforms" in out

    assert main(["conformance", "backend", "echo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["summary"]["failed"] == 0
    assert {c["status"] for c in report["checks"]} <= {"passed", "skipped"}


def test_the_cli_exits_non_zero_when_a_check_fails(capsys: pytest.CaptureFixture[str]) -> None:
    # test-tts declares 24 kHz only; told to speak 8 kHz it breaks its own declaration.
    assert main(["conformance", "backend", "test-tts", "--option", "sample_rate=8000"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  tts.output_format" in out
    assert "DOES NOT CONFORM" in out


def test_the_cli_rejects_unknown_backends_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "backend", "no-such-backend"]) == 2
    assert "no backend named 'no-such-backend'" in capsys.readouterr().err
    assert main(["conformance", "backend", "test-tts", "-o", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_every_check_is_a_test_method_of_its_contract_class() -> None:
    classes = {
        "stt": SttBackendContract,
        "llm": LlmBackendContract,
        "tts": TtsBackendContract,
        "normaliser": NormaliserBackendContract,
    }
    for kind, checks in CHECKS.items():
        names = [c.name for c in checks]
        assert len(set(names)) == len(names)
        for check in checks:
            assert check.name.startswith(f"{kind}."), check.name
            assert check.description, f"{check.name} has no docstring"
            assert hasattr(classes[kind], "test_" + check.name.split(".", 1)[1]), check.name
        tests = {n for n in dir(classes[kind]) if n.startswith("test_")}
        assert tests == {"test_" + n.split(".", 1)[1] for n in names}


async def test_the_synthetic_speech_is_deterministic_speech_like_audio() -> None:
    first, second = synthetic_speech(), await render_speech(use_hibari=False)
    assert first == second
    assert first.source == "synthetic" and not first.has_words
    assert 2.5 < first.long.duration_s < 5.0
    assert 0.8 < first.short.duration_s < first.long.duration_s
    assert len(first.long.at(8000)) == pytest.approx(len(first.long.pcm) / 2, abs=4)


# ------------------------------------------------------------------------- pytest contract classes
# How a plugin's test suite uses the kit: subclass, supply a factory, done.


class TestTheTestTtsContract(TtsBackendContract):
    def make_backend(self) -> TestTts:
        return TestTts(TestTts.Options())


class TestTheEchoContract(LlmBackendContract):
    def make_backend(self) -> EchoLlm:
        return EchoLlm()


class TestTheTestSttContract(SttBackendContract):
    kit_config = KitConfig(stt_pace=4.0)  # test-stt does not need audio in real time

    def make_backend(self) -> TestStt:
        return TestStt(TestStt.Options())


class SpelledDigits(NormaliserBackend):
    """A tiny normaliser: digits become words, then the request's lexicon applies."""

    class Options(BackendOptions, frozen=True):
        pass

    capabilities = NormaliserCapabilities(languages=("en",), lexicon=True)
    _DIGITS = "zero one two three four five six seven eight nine".split()

    async def normalise(self, text: str, request: NormaliseRequest) -> str:
        await trio.lowlevel.checkpoint()
        text = re.sub(r"\d", lambda m: f" {self._DIGITS[int(m.group())]} ", text)
        for word, spoken in request.lexicon.items():
            text = re.sub(rf"\b{re.escape(word)}\b", spoken, text, flags=re.IGNORECASE)
        return " ".join(text.split())


class TestTheSpelledDigitsContract(NormaliserBackendContract):
    def make_backend(self) -> SpelledDigits:
        return SpelledDigits()


# --------------------------------------------------------------------------- server skills
# A small skill that keeps the contract, then broken variants: each fails the right check.


async def echo_later(arguments: Mapping[str, Any], context: ToolContext) -> dict[str, Any]:
    """Echoes ``text`` after ``wait_s`` (cancellable); refuses an empty text."""
    if not arguments["text"]:
        raise ToolFailed("there is nothing to echo")
    await trio.sleep(arguments.get("wait_s", 0))
    return {"echo": arguments["text"], "call": context.call_id}


ECHO_PARAMETERS = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "wait_s": {"type": "number", "minimum": 0, "maximum": 60},
    },
    "required": ["text"],
}
ECHO_LATER = ToolSpec("echo_later", "Echo a text, later.", echo_later, ECHO_PARAMETERS)
ECHO_ARGUMENTS: dict[str, Any] = {
    "example_arguments": {"text": "hi"},
    "slow_arguments": {"text": "hi", "wait_s": 60},
    "failing_arguments": {"text": ""},
}


def with_handler(handler: Any, **changes: Any) -> ToolSpec:
    return dataclasses.replace(ECHO_LATER, handler=handler, **changes)


async def check_skill(spec: ToolSpec, **arguments: Any) -> BackendReport:
    return await run_tool_checks(spec, **{**ECHO_ARGUMENTS, **arguments})


async def test_a_skill_that_keeps_the_contract_passes_every_check() -> None:
    report = await check_skill(ECHO_LATER)
    assert report.ok and not report.skipped, report.format_text()
    assert [r.name for r in report.results] == [c.name for c in TOOL_CHECKS]
    assert report.kind == "tool" and report.backend == "echo_later"
    assert 'returned \'{"echo": "hi"' in report.result("tool.result").detail
    assert (
        "refused (tool_failed: 'there is nothing to echo')" in report.result("tool.errors").detail
    )
    assert "mid-way: returned" in report.result("tool.cancellation").detail
    assert report.format_text().startswith("echo_later (tool)")


async def test_without_slow_or_failing_arguments_those_paths_are_said_unchecked() -> None:
    report = await run_tool_checks(ECHO_LATER, example_arguments={"text": "hi"})
    assert report.ok, report.format_text()
    assert {r.name for r in report.skipped} == {"tool.errors"}
    assert "give slow_arguments" in report.result("tool.cancellation").detail


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"name": "echo later"}, "tool name 'echo later'"),
        ({"parameters": {"type": "array"}}, '"type": "object"'),
        ({"parameters": {"type": "object", "properties": {"n": {"type": "integr"}}}}, "valid"),
        ({"description": " "}, "description is empty"),
        ({"timeout_s": 0.0}, "timeout_s 0.0 must be positive"),
        ({"permissions": frozenset({""})}, "permissions"),
    ],
)
async def test_a_bad_declaration_fails_naming_what_is_wrong(
    changes: dict[str, Any], match: str
) -> None:
    report = await check_skill(
        dataclasses.replace(ECHO_LATER, **changes), only={"tool.declaration"}
    )
    assert failed(report) == {"tool.declaration"}, report.format_text()
    assert match in report.result("tool.declaration").detail


async def test_example_arguments_that_break_the_schema_fail() -> None:
    report = await check_skill(ECHO_LATER, example_arguments={"text": 3})
    assert status(report, "tool.example_arguments") is CheckStatus.FAILED
    assert "text: 3 is not of type 'string'" in report.result("tool.example_arguments").detail


async def test_a_skill_that_raises_something_else_than_toolfailed_fails_naming_it() -> None:
    async def crashes(arguments: Mapping[str, Any], context: ToolContext) -> str:
        await trio.lowlevel.checkpoint()
        raise KeyError("units")

    report = await check_skill(with_handler(crashes))
    assert {"tool.result", "tool.errors", "tool.concurrency"} <= failed(report)
    detail = report.result("tool.result").detail
    assert "raised KeyError: 'units'" in detail and "raise ToolFailed" in detail
    assert "raised KeyError" in report.result("tool.errors").detail


async def test_a_result_that_is_not_json_fails() -> None:
    async def returns_a_set(arguments: Mapping[str, Any], context: ToolContext) -> object:
        await trio.lowlevel.checkpoint()
        return {"a", "b"}

    report = await check_skill(
        with_handler(returns_a_set), failing_arguments=None, slow_arguments=None
    )
    assert failed(report) == {"tool.result", "tool.concurrency"}, report.format_text()
    assert "not JSON-serialisable" in report.result("tool.result").detail


async def test_a_handler_that_is_not_async_fails() -> None:
    def plain(arguments: Mapping[str, Any], context: ToolContext) -> str:
        return "done"

    report = await check_skill(with_handler(plain), only={"tool.result"})
    assert "make it an async def" in report.result("tool.result").detail


async def test_failing_arguments_that_get_a_result_fail_the_errors_check() -> None:
    async def never_refuses(arguments: Mapping[str, Any], context: ToolContext) -> str:
        await trio.lowlevel.checkpoint()
        return "fine"

    report = await check_skill(with_handler(never_refuses), only={"tool.errors"})
    assert "raise ToolFailed" in report.result("tool.errors").detail


async def test_a_skill_that_blocks_the_event_loop_fails_cancellation() -> None:
    async def blocks(arguments: Mapping[str, Any], context: ToolContext) -> str:
        time.sleep(0.25)  # a blocking client library called from async code
        await trio.lowlevel.checkpoint()
        return "late"

    report = await check_skill(with_handler(blocks), only={"tool.cancellation"})
    detail = report.result("tool.cancellation").detail
    assert re.search(r"cancelled at its start took \d+ ms to return \(> 100 ms\)", detail)


async def test_a_skill_that_shields_slow_work_fails_cancellation_mid_way() -> None:
    async def shielded(arguments: Mapping[str, Any], context: ToolContext) -> str:
        with trio.CancelScope(shield=True):
            await trio.sleep(arguments.get("wait_s", 0) and 0.3)
        return "done"

    report = await check_skill(with_handler(shielded), only={"tool.cancellation"})
    detail = report.result("tool.cancellation").detail
    assert "a call cancelled mid-way took" in detail, report.format_text()


async def test_slow_arguments_that_are_fast_fail_cancellation() -> None:
    report = await check_skill(
        ECHO_LATER, slow_arguments={"text": "quick"}, only={"tool.cancellation"}
    )
    assert "before the kit could cancel it" in report.result("tool.cancellation").detail


async def test_a_skill_that_leaves_a_task_behind_fails_no_leaks() -> None:
    async def leaks(arguments: Mapping[str, Any], context: ToolContext) -> str:
        trio.lowlevel.spawn_system_task(trio.sleep_forever, name="forgotten-poller")
        await trio.lowlevel.checkpoint()
        return "done"

    report = await check_skill(
        with_handler(leaks), only={"tool.no_leaks"}, config=KitConfig(leak_grace_s=0.1)
    )
    assert "'forgotten-poller'" in report.result("tool.no_leaks").detail


async def test_an_installed_skill_is_checked_by_name_and_an_unknown_name_is_refused() -> None:
    class Declares:
        @hookimpl
        def scaivoice_tools(self) -> list[ToolSpec]:
            return [ECHO_LATER]

    host = PluginHost()
    host.register(Declares(), name="echo-skill")
    report = await check_installed_tool(host, "echo_later", **ECHO_ARGUMENTS)
    assert report.ok, report.format_text()
    with pytest.raises(ConfigError, match="no tool named 'echo'; installed: echo_later"):
        await check_installed_tool(host, "echo", example_arguments={})


def test_every_tool_check_is_a_test_method_of_the_tool_contract() -> None:
    names = [c.name for c in TOOL_CHECKS]
    assert len(set(names)) == len(names) and all(n.startswith("tool.") for n in names)
    assert all(c.description for c in TOOL_CHECKS)
    tests = {n for n in dir(ToolContract) if n.startswith("test_")}
    assert tests == {"test_" + n.split(".", 1)[1] for n in names}


class TestTheEchoLaterSkillContract(ToolContract):
    example_arguments: ClassVar[Mapping[str, Any]] = {"text": "hi"}
    slow_arguments: ClassVar[Mapping[str, Any] | None] = {"text": "hi", "wait_s": 60}
    failing_arguments: ClassVar[Mapping[str, Any] | None] = {"text": ""}

    def make_tool(self) -> ToolSpec:
        return ECHO_LATER


# --------------------------------------------------------------------------- LLM backends with tools


class ToolLlm(TestLlm):
    """Declares tools; answers a question a tool answers with text and ``calls()``."""

    capabilities = LlmCapabilities(streaming=True, system_prompt=True, tools=True)

    def calls(self, request: LlmRequest) -> list[Any]:
        if request.tools and request.messages[-1].role == "user":
            return [ToolCall("call_a", request.tools[0].name, '{"city": "Paris"}')]
        return []

    async def respond(
        self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
    ) -> None:
        async with output:
            for word in "Let me see about that for you right now.".split():
                await output.send(word + " ")
            for call in self.calls(request):
                await output.send(call)


async def test_an_llm_with_tools_that_keeps_the_contract_passes() -> None:
    report = await run_broken(lambda: ToolLlm(TestLlm.Options()))
    assert report.ok, report.format_text()
    assert report.result("llm.tools").detail.startswith("called get_weather(")


@pytest.mark.parametrize(
    ("calls", "match"),
    [
        ([ToolCall("", "get_weather", "{}")], "a ToolCall has no id"),
        ([ToolCall("c", "get_weather", "{}"), ToolCall("c", "get_time", "")], "ids repeat"),
        ([ToolCall("c", "get_weather", {"city": "Paris"})], "arguments is dict"),  # type: ignore[arg-type]
        ([{"name": "get_weather"}], "sent dict: only str and ToolCall go out"),
    ],
)
async def test_an_llm_that_sends_malformed_calls_fails_llm_tools(
    calls: list[Any], match: str
) -> None:
    class Malformed(ToolLlm):
        def calls(self, request: LlmRequest) -> list[Any]:
            return calls if request.messages[-1].role == "user" else []

    report = await run_backend_checks(lambda: Malformed(TestLlm.Options()), only={"llm.tools"})
    assert match in report.result("llm.tools").detail, report.format_text()


async def test_an_llm_that_reuses_a_history_call_id_or_chokes_on_tool_messages_fails() -> None:
    class ReusesIds(ToolLlm):
        def calls(self, request: LlmRequest) -> list[Any]:
            return [ToolCall("call_kit_1", "get_time", "{}")]

    report = await run_backend_checks(
        lambda: ReusesIds(TestLlm.Options()), only={"llm.tool_history"}
    )
    assert "already used in the history" in report.result("llm.tool_history").detail

    class NoToolMessages(ToolLlm):
        async def respond(
            self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
        ) -> None:
            async with output:
                if any(m.role == "tool" for m in request.messages):
                    raise ValueError("unknown role 'tool'")
                await output.send("Hello.")

    report = await run_backend_checks(
        lambda: NoToolMessages(TestLlm.Options()), only={"llm.tool_history"}
    )
    detail = report.result("llm.tool_history").detail
    assert "raised ValueError: unknown role 'tool'" in detail


async def test_an_llm_whose_respond_leaves_its_channel_open_on_cancel_fails() -> None:
    class LeavesOpen(ToolLlm):
        async def respond(
            self, request: LlmRequest, output: trio.MemorySendChannel[str | ToolCall]
        ) -> None:
            for word in "one two three four five six".split():
                await output.send(word + " ")  # a cancel escapes here with the channel open
            await output.aclose()

    report = await run_backend_checks(
        lambda: LeavesOpen(TestLlm.Options()), only={"llm.tool_cancellation"}
    )
    assert "without closing" in report.result("llm.tool_cancellation").detail
