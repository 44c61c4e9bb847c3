"""Fixtures: the real servers (once per test session) and speech to transcribe."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..backends._support import SENTENCES, Speech
from ._servers import Server, llama_server, speech_server, whisper_server


@pytest.fixture(scope="session")
def llama() -> Iterator[Server]:
    with llama_server() as server:
        yield server


@pytest.fixture(scope="session")
def whisper() -> Iterator[Server]:
    with whisper_server() as server:
        yield server


@pytest.fixture(scope="session")
def speaker() -> Iterator[Server]:
    with speech_server() as server:
        yield server


@pytest.fixture(scope="session")
def speech() -> Speech:
    """The test sentences spoken by hibari (voice heart, seed 0)."""
    hibari = pytest.importorskip("hibari")
    from scaivoice.engine import float_to_pcm16

    tts = hibari.Hibari()
    return Speech({text: float_to_pcm16(tts(text, seed=0)) for text in SENTENCES})
