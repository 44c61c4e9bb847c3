"""The backend contract kit: does a backend keep the promises of the backend API?

It checks an STT, LLM, TTS or normaliser backend against the backend contract
(``scaivoice.engine.SttBackend`` ...) and the capabilities it declares. A check for a capability the backend does not declare is
skipped; a declared capability that does not hold fails. It checks server skills too (the
``ToolSpec`` records of a ``scaivoice_tools`` hook): :func:`run_tool_checks`,
``check_tool_<name>`` and the pytest class ``ToolContract``. Three ways to use it:

- pytest: subclass a contract class of :mod:`scaivoice.conformance.backend_kit.pytest_plugin`
  and supply a factory; every check becomes a test method::

      from scaivoice.conformance.backend_kit.pytest_plugin import TtsBackendContract

      class TestMyTts(TtsBackendContract):
          def make_backend(self) -> MyTts:
              return MyTts(MyTts.Options())

- plain async functions: each ``check_<kind>_<name>`` takes a :class:`Subject` (see
  :func:`open_subject`) and returns a :class:`CheckResult`; :func:`run_backend_checks` runs
  them all and returns a :class:`BackendReport`::

      async with open_subject(lambda: MyTts(MyTts.Options())) as subject:
          result = await check_tts_streaming(subject)

- the command line, against any installed backend:
  ``scaivoice conformance backend NAME [--option KEY=VALUE ...] [--json]``.
"""

from ._checks_llm import LLM_CHECKS as LLM_CHECKS
from ._checks_llm import check_llm_aclose_idempotent as check_llm_aclose_idempotent
from ._checks_llm import check_llm_cancellation as check_llm_cancellation
from ._checks_llm import check_llm_concurrency as check_llm_concurrency
from ._checks_llm import check_llm_declaration as check_llm_declaration
from ._checks_llm import check_llm_empty_conversation as check_llm_empty_conversation
from ._checks_llm import check_llm_health as check_llm_health
from ._checks_llm import check_llm_history as check_llm_history
from ._checks_llm import check_llm_no_leaks as check_llm_no_leaks
from ._checks_llm import check_llm_reply as check_llm_reply
from ._checks_llm import check_llm_streaming as check_llm_streaming
from ._checks_llm import check_llm_tool_cancellation as check_llm_tool_cancellation
from ._checks_llm import check_llm_tool_history as check_llm_tool_history
from ._checks_llm import check_llm_tools as check_llm_tools
from ._checks_normaliser import NORMALISER_CHECKS as NORMALISER_CHECKS
from ._checks_normaliser import (
    check_normaliser_aclose_idempotent as check_normaliser_aclose_idempotent,
)
from ._checks_normaliser import check_normaliser_cancellation as check_normaliser_cancellation
from ._checks_normaliser import check_normaliser_concurrency as check_normaliser_concurrency
from ._checks_normaliser import check_normaliser_declaration as check_normaliser_declaration
from ._checks_normaliser import check_normaliser_empty_text as check_normaliser_empty_text
from ._checks_normaliser import check_normaliser_health as check_normaliser_health
from ._checks_normaliser import check_normaliser_languages as check_normaliser_languages
from ._checks_normaliser import check_normaliser_lexicon as check_normaliser_lexicon
from ._checks_normaliser import check_normaliser_no_leaks as check_normaliser_no_leaks
from ._checks_normaliser import check_normaliser_returns_text as check_normaliser_returns_text
from ._checks_stt import STT_CHECKS as STT_CHECKS
from ._checks_stt import check_stt_aclose_idempotent as check_stt_aclose_idempotent
from ._checks_stt import check_stt_cancellation as check_stt_cancellation
from ._checks_stt import check_stt_concurrency as check_stt_concurrency
from ._checks_stt import check_stt_content as check_stt_content
from ._checks_stt import check_stt_declaration as check_stt_declaration
from ._checks_stt import check_stt_health as check_stt_health
from ._checks_stt import check_stt_interim_results as check_stt_interim_results
from ._checks_stt import check_stt_languages as check_stt_languages
from ._checks_stt import check_stt_malformed_audio as check_stt_malformed_audio
from ._checks_stt import check_stt_no_audio as check_stt_no_audio
from ._checks_stt import check_stt_no_leaks as check_stt_no_leaks
from ._checks_stt import check_stt_one_final_last as check_stt_one_final_last
from ._checks_stt import check_stt_sample_rates as check_stt_sample_rates
from ._checks_stt import check_stt_stable_interims as check_stt_stable_interims
from ._checks_stt import check_stt_streaming as check_stt_streaming
from ._checks_stt import check_stt_word_timings as check_stt_word_timings
from ._checks_tool import TOOL_CHECKS as TOOL_CHECKS
from ._checks_tool import ToolCheck as ToolCheck
from ._checks_tool import ToolSubject as ToolSubject
from ._checks_tool import check_tool_cancellation as check_tool_cancellation
from ._checks_tool import check_tool_concurrency as check_tool_concurrency
from ._checks_tool import check_tool_declaration as check_tool_declaration
from ._checks_tool import check_tool_errors as check_tool_errors
from ._checks_tool import check_tool_example_arguments as check_tool_example_arguments
from ._checks_tool import check_tool_no_leaks as check_tool_no_leaks
from ._checks_tool import check_tool_result as check_tool_result
from ._checks_tts import TTS_CHECKS as TTS_CHECKS
from ._checks_tts import check_tts_aclose_idempotent as check_tts_aclose_idempotent
from ._checks_tts import check_tts_cancellation as check_tts_cancellation
from ._checks_tts import check_tts_cfg_value as check_tts_cfg_value
from ._checks_tts import check_tts_chunk_duration as check_tts_chunk_duration
from ._checks_tts import check_tts_concurrency as check_tts_concurrency
from ._checks_tts import check_tts_declaration as check_tts_declaration
from ._checks_tts import check_tts_empty_text as check_tts_empty_text
from ._checks_tts import check_tts_health as check_tts_health
from ._checks_tts import check_tts_instructions as check_tts_instructions
from ._checks_tts import check_tts_languages as check_tts_languages
from ._checks_tts import check_tts_no_leaks as check_tts_no_leaks
from ._checks_tts import check_tts_output_format as check_tts_output_format
from ._checks_tts import check_tts_speed as check_tts_speed
from ._checks_tts import check_tts_streaming as check_tts_streaming
from ._checks_tts import check_tts_unknown_voice as check_tts_unknown_voice
from ._checks_tts import check_tts_voices as check_tts_voices
from ._checks_tts import check_tts_warmup_trim as check_tts_warmup_trim
from ._kit import Check as Check
from ._kit import KitConfig as KitConfig
from ._kit import Subject as Subject
from ._kit import open_subject as open_subject
from ._report import BackendReport as BackendReport
from ._report import CheckResult as CheckResult
from ._report import CheckStatus as CheckStatus
from ._runner import CHECKS as CHECKS
from ._runner import check_installed_backend as check_installed_backend
from ._runner import check_installed_tool as check_installed_tool
from ._runner import checks_for as checks_for
from ._runner import find_backend as find_backend
from ._runner import run_backend_checks as run_backend_checks
from ._runner import run_tool_checks as run_tool_checks
from ._speech import SpeechFixtures as SpeechFixtures
from ._speech import SpeechSample as SpeechSample
from ._speech import render_speech as render_speech
from ._speech import synthetic_speech as synthetic_speech
