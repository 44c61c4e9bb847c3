"""Fixtures for the real-model backend tests: speech rendered by hibari."""

from __future__ import annotations

import pytest

from scaivoice.engine import float_to_pcm16

from ._support import SENTENCES, Speech


@pytest.fixture(scope="session")
def speech() -> Speech:
    """Render the sentences once per test session (deterministic: seed 0)."""
    hibari = pytest.importorskip("hibari")
    tts = hibari.Hibari()
    return Speech({text: float_to_pcm16(tts(text, seed=0)) for text in SENTENCES})
