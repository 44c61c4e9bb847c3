"""The backend contract kit for pytest: contract classes a plugin's test suite subclasses.

Subclass the class of your backend's kind, name it ``Test...`` and supply a factory; every
contract check becomes a test method (``test_streaming``, ``test_cancellation``...) that
passes, fails with the check's detail, or is skipped when your backend does not declare the
capability it tests::

    from scaivoice.conformance.backend_kit.pytest_plugin import TtsBackendContract

    class TestMyTts(TtsBackendContract):
        def make_backend(self) -> MyTts:
            return MyTts(MyTts.Options())  # unopened: the kit opens and closes it

A server skill (a ``ToolSpec`` of a ``scaivoice_tools`` hook) gets :class:`ToolContract`:
supply the spec and arguments the tool serves; give arguments it refuses and arguments that
make a call slow to check those paths too::

    from scaivoice.conformance.backend_kit.pytest_plugin import ToolContract

    class TestConvertUnits(ToolContract):
        example_arguments = {"value": 5, "from_unit": "km", "to_unit": "mi"}
        failing_arguments = {"value": 5, "from_unit": "km", "to_unit": "kg"}

        def make_tool(self) -> ToolSpec:
            return CONVERT_UNITS

Loosen or tighten a threshold with ``kit_config`` (a :class:`KitConfig`), e.g. to check what
an STT backend hears: ``kit_config = KitConfig(check_content=True)``.

The checks of a class run once, in one ``trio.run`` against one opened backend, when its first
test runs (only the selected ones: ``-k streaming`` runs one check); each test then reports
its check. The test methods are synchronous, so the classes work with or without pytest-trio.
Test ``test_<name>`` reports check ``<kind>.<name>``, so a known failure can be marked by
overriding its method::

    @pytest.mark.xfail(strict=True, reason="odd-length chunks: issue 12")
    def test_malformed_audio(self, scaivoice_contract_report):
        super().test_malformed_audio(scaivoice_contract_report)

Installed with ScaiVoice, this module is also a pytest plugin (entry point ``pytest11``): it
adds the session fixture ``scaivoice_speech`` (the kit's speech, for STT tests of your own).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import pytest
import trio

from scaivoice.engine import (
    Backend,
    BackendKind,
    LlmBackend,
    NormaliserBackend,
    SttBackend,
    ToolSpec,
    TtsBackend,
)

from . import _checks_llm as llm
from . import _checks_normaliser as normaliser
from . import _checks_stt as stt
from . import _checks_tool as tool
from . import _checks_tts as tts
from ._checks_tool import ToolCheck
from ._kit import Check, KitConfig, backend_kind
from ._report import BackendReport
from ._runner import run_backend_checks, run_tool_checks
from ._speech import SpeechFixtures, render_speech

__all__ = [
    "BackendContract",
    "LlmBackendContract",
    "NormaliserBackendContract",
    "SttBackendContract",
    "ToolContract",
    "TtsBackendContract",
    "kit_speech",
    "scaivoice_speech",
]

B = TypeVar("B", bound=Backend)
_SPEECH = pytest.StashKey[SpeechFixtures]()
#: Each contract class's report, made when its first test runs (a function-scoped fixture that
#: caches per class: a class-scoped fixture defined on the class is deprecated by pytest).
_REPORTS = pytest.StashKey[dict[type, BackendReport]]()


def _report_of(request: pytest.FixtureRequest, make: Callable[[], BackendReport]) -> BackendReport:
    """The report of the requesting test's class, made by ``make`` once per session."""
    reports = request.config.stash.setdefault(_REPORTS, {})
    cls = request.cls
    assert cls is not None
    if cls not in reports:
        reports[cls] = make()
    return reports[cls]


def kit_speech(config: pytest.Config) -> SpeechFixtures:
    """The kit's speech for this pytest session (rendered once, with hibari if installed)."""
    if _SPEECH not in config.stash:
        config.stash[_SPEECH] = trio.run(render_speech)
    return config.stash[_SPEECH]


@pytest.fixture(scope="session")
def scaivoice_speech(request: pytest.FixtureRequest) -> SpeechFixtures:
    """The speech the STT contract checks feed: ``.long`` (about 3 s), ``.short``, ``.source``."""
    return kit_speech(request.config)


class BackendContract(Generic[B]):
    """Base of the contract classes: one test per contract check of the backend's kind.

    Attributes:
        kind: the backend kind the class checks.
        kit_config: the kit's thresholds for this backend.
    """

    kind: ClassVar[BackendKind]
    kit_config: ClassVar[KitConfig] = KitConfig()

    def make_backend(self) -> B:
        """Return a new, unopened backend. Called several times; must do no I/O."""
        raise NotImplementedError(f"{type(self).__name__} must define make_backend()")

    @pytest.fixture
    def scaivoice_contract_report(self, request: pytest.FixtureRequest) -> BackendReport:
        """The report of this class's selected checks (run once, by its first test)."""
        return _report_of(request, functools.partial(self._run_checks, request))

    def _run_checks(self, request: pytest.FixtureRequest) -> BackendReport:
        cls = type(self)
        # The selected tests of this class (-k, -m, node ids) name the checks to run.
        selected = _selected(request, cls, cls.kind)
        contract = self
        probe = contract.make_backend()
        if backend_kind(probe) != cls.kind:
            raise TypeError(
                f"{cls.__name__}.make_backend() made a {backend_kind(probe)} backend; "
                f"{cls.__name__} checks {cls.kind} backends"
            )
        speech = kit_speech(request.config) if cls.kind == "stt" else None
        run = functools.partial(
            run_backend_checks,
            contract.make_backend,
            config=cls.kit_config,
            speech=speech,
            only=selected,
        )
        return trio.run(run)


def _selected(request: pytest.FixtureRequest, cls: type, kind: str) -> set[str]:
    """The check names of the selected tests of ``cls`` (-k, -m, node ids)."""
    return {
        f"{kind}.{item.originalname.removeprefix('test_')}"
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.cls is cls
    }


def _case(check: Check[Any] | ToolCheck) -> Callable[[Any, BackendReport], None]:
    """A test method that reports ``check`` from the class's report."""

    def test(self: Any, scaivoice_contract_report: BackendReport) -> None:
        result = scaivoice_contract_report.result(check.name)
        if result.skipped:
            pytest.skip(result.detail)
        if result.failed:
            pytest.fail(f"{check.name}: {result.detail}", pytrace=False)

    test.__name__ = "test_" + check.name.split(".", 1)[1]
    test.__qualname__ = test.__name__
    test.__doc__ = check.description
    return test


class SttBackendContract(BackendContract[SttBackend]):
    """The STT contract: subclass it as ``Test...`` and define ``make_backend``."""

    kind = "stt"
    test_declaration = _case(stt.check_stt_declaration)
    test_health = _case(stt.check_stt_health)
    test_one_final_last = _case(stt.check_stt_one_final_last)
    test_no_audio = _case(stt.check_stt_no_audio)
    test_sample_rates = _case(stt.check_stt_sample_rates)
    test_interim_results = _case(stt.check_stt_interim_results)
    test_streaming = _case(stt.check_stt_streaming)
    test_stable_interims = _case(stt.check_stt_stable_interims)
    test_word_timings = _case(stt.check_stt_word_timings)
    test_languages = _case(stt.check_stt_languages)
    test_content = _case(stt.check_stt_content)
    test_malformed_audio = _case(stt.check_stt_malformed_audio)
    test_cancellation = _case(stt.check_stt_cancellation)
    test_concurrency = _case(stt.check_stt_concurrency)
    test_aclose_idempotent = _case(stt.check_stt_aclose_idempotent)
    test_no_leaks = _case(stt.check_stt_no_leaks)


class LlmBackendContract(BackendContract[LlmBackend]):
    """The LLM contract: subclass it as ``Test...`` and define ``make_backend``."""

    kind = "llm"
    test_declaration = _case(llm.check_llm_declaration)
    test_health = _case(llm.check_llm_health)
    test_reply = _case(llm.check_llm_reply)
    test_history = _case(llm.check_llm_history)
    test_streaming = _case(llm.check_llm_streaming)
    test_tools = _case(llm.check_llm_tools)
    test_tool_history = _case(llm.check_llm_tool_history)
    test_tool_cancellation = _case(llm.check_llm_tool_cancellation)
    test_empty_conversation = _case(llm.check_llm_empty_conversation)
    test_cancellation = _case(llm.check_llm_cancellation)
    test_concurrency = _case(llm.check_llm_concurrency)
    test_aclose_idempotent = _case(llm.check_llm_aclose_idempotent)
    test_no_leaks = _case(llm.check_llm_no_leaks)


class TtsBackendContract(BackendContract[TtsBackend]):
    """The TTS contract: subclass it as ``Test...`` and define ``make_backend``."""

    kind = "tts"
    test_declaration = _case(tts.check_tts_declaration)
    test_health = _case(tts.check_tts_health)
    test_output_format = _case(tts.check_tts_output_format)
    test_chunk_duration = _case(tts.check_tts_chunk_duration)
    test_empty_text = _case(tts.check_tts_empty_text)
    test_streaming = _case(tts.check_tts_streaming)
    test_voices = _case(tts.check_tts_voices)
    test_unknown_voice = _case(tts.check_tts_unknown_voice)
    test_speed = _case(tts.check_tts_speed)
    test_languages = _case(tts.check_tts_languages)
    test_instructions = _case(tts.check_tts_instructions)
    test_cfg_value = _case(tts.check_tts_cfg_value)
    test_warmup_trim = _case(tts.check_tts_warmup_trim)
    test_cancellation = _case(tts.check_tts_cancellation)
    test_concurrency = _case(tts.check_tts_concurrency)
    test_aclose_idempotent = _case(tts.check_tts_aclose_idempotent)
    test_no_leaks = _case(tts.check_tts_no_leaks)


class NormaliserBackendContract(BackendContract[NormaliserBackend]):
    """The normaliser contract: subclass it as ``Test...`` and define ``make_backend``."""

    kind = "normaliser"
    test_declaration = _case(normaliser.check_normaliser_declaration)
    test_health = _case(normaliser.check_normaliser_health)
    test_returns_text = _case(normaliser.check_normaliser_returns_text)
    test_empty_text = _case(normaliser.check_normaliser_empty_text)
    test_lexicon = _case(normaliser.check_normaliser_lexicon)
    test_languages = _case(normaliser.check_normaliser_languages)
    test_cancellation = _case(normaliser.check_normaliser_cancellation)
    test_concurrency = _case(normaliser.check_normaliser_concurrency)
    test_aclose_idempotent = _case(normaliser.check_normaliser_aclose_idempotent)
    test_no_leaks = _case(normaliser.check_normaliser_no_leaks)


class ToolContract:
    """The server-skill contract: subclass it as ``Test...``, define ``make_tool`` and
    ``example_arguments`` (and, to check those paths, ``failing_arguments`` and
    ``slow_arguments``).

    Attributes:
        example_arguments: arguments the tool serves (valid against its schema).
        failing_arguments: valid arguments the tool must refuse with ``ToolFailed``;
            ``None``: ``test_errors`` is skipped.
        slow_arguments: arguments that make a call slow enough to cancel mid-way; ``None``:
            cancellation is checked at the start of a call only.
        kit_config: the kit's thresholds (``tool_cancel_deadline_s``: 100 ms).
    """

    example_arguments: ClassVar[Mapping[str, Any]]
    failing_arguments: ClassVar[Mapping[str, Any] | None] = None
    slow_arguments: ClassVar[Mapping[str, Any] | None] = None
    kit_config: ClassVar[KitConfig] = KitConfig()

    def make_tool(self) -> ToolSpec:
        """Return the skill to check (from your hook, or ``host.tool_specs()[name]``)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_tool()")

    @pytest.fixture
    def scaivoice_contract_report(self, request: pytest.FixtureRequest) -> BackendReport:
        """The report of this class's selected checks (run once, by its first test)."""
        return _report_of(request, functools.partial(self._run_checks, request))

    def _run_checks(self, request: pytest.FixtureRequest) -> BackendReport:
        cls = type(self)
        if not hasattr(cls, "example_arguments"):
            raise TypeError(f"{cls.__name__} must set example_arguments")
        run = functools.partial(
            run_tool_checks,
            self.make_tool(),
            example_arguments=cls.example_arguments,
            slow_arguments=cls.slow_arguments,
            failing_arguments=cls.failing_arguments,
            config=cls.kit_config,
            only=_selected(request, cls, "tool"),
        )
        return trio.run(run)

    test_declaration = _case(tool.check_tool_declaration)
    test_example_arguments = _case(tool.check_tool_example_arguments)
    test_result = _case(tool.check_tool_result)
    test_errors = _case(tool.check_tool_errors)
    test_cancellation = _case(tool.check_tool_cancellation)
    test_concurrency = _case(tool.check_tool_concurrency)
    test_no_leaks = _case(tool.check_tool_no_leaks)
