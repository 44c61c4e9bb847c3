"""Registers the OpenAI-compatible HTTP backends through the ``scaivoice`` entry-point group.

========== ============ ==========================================================
kind       name         endpoint (relative to the ``base_url`` option)
========== ============ ==========================================================
stt        openai       ``POST audio/transcriptions`` (multipart WAV, one final result)
llm        openai       ``POST chat/completions`` (``stream: true``, server-sent events)
tts        openai       ``POST audio/speech`` (``pcm`` or ``wav``, streamed)
========== ============ ==========================================================

The three share the name; each reads its options from ``[backends.options.KIND.openai]`` (see
:mod:`scaivoice.backends.openai_http`). Importing this module
imports httpx and httpx-sse, both dependencies of ScaiVoice itself.
"""

from __future__ import annotations

from collections.abc import Iterator

from scaivoice.engine import BackendSpec, hookimpl

from .openai_llm import OpenAILlmBackend
from .openai_stt import OpenAISttBackend
from .openai_tts import OpenAITtsBackend

__all__ = ["scaivoice_llm_backends", "scaivoice_stt_backends", "scaivoice_tts_backends"]


@hookimpl
def scaivoice_stt_backends() -> Iterator[BackendSpec]:
    """Declare ``openai`` speech to text."""
    yield BackendSpec.for_class(OpenAISttBackend, name="openai")


@hookimpl
def scaivoice_llm_backends() -> Iterator[BackendSpec]:
    """Declare ``openai`` chat completions."""
    yield BackendSpec.for_class(OpenAILlmBackend, name="openai")


@hookimpl
def scaivoice_tts_backends() -> Iterator[BackendSpec]:
    """Declare ``openai`` speech."""
    yield BackendSpec.for_class(OpenAITtsBackend, name="openai")
