"""The backend contract kit: built-in backends pass, broken ones fail the right checks.

The kit measures real behaviour (deadlines, threads, arrival times), so these tests run on the
real clock; the deliberately broken backends are built on the deterministic test backends and
the kit's thresholds are tightened where a failure would otherwise take seconds to show.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import trio

from scaivoice.backends.echo_llm import EchoLlm
from scaivoice.backends.testing import TestLlm, TestStt, TestTts
from scaivoice.conformance import (
    CHECKS,
    BackendReport,
    CheckStatus,
    KitConfig,
    SpeechFixtures,
    check_installed_backend,
    check_tts_streaming,
    open_subject,
    render_speech,
    run_backend_checks,
    synthetic_speech,
)
from scaivoice.conformance.backend_kit.pytest_plugin import (
    LlmBackendContract,
    NormaliserBackendContract,
    SttBackendContract,
    TtsBackendContract,
    kit_speech,
)
from scaivoice.engine import (
    AudioChunk,
    BackendError,
    BackendOptions,
    LlmRequest,
    NormaliserBackend,
    NormaliserCapabilities,
    NormaliseRequest,
    PluginHost,
    Transcript,
    TtsRequest,
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
    pytest.param("llama-cpp", {"temperature": 0.0, "seed": 1}, {}, "llama_cpp", id="llama-cpp"),
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
