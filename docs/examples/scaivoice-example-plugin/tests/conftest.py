"""Fixtures: the plugin as the engine sees it, found through its entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from scaivoice.engine import NormaliserBackend, PluginHost, TtsBackend


@pytest.fixture
def host() -> PluginHost:
    """A plugin host that loaded every installed plugin, as ``scaivoice serve`` does."""
    host = PluginHost()
    host.load_entry_points()
    return host


@pytest.fixture
async def chirp(host: PluginHost) -> AsyncIterator[TtsBackend]:
    """An opened ``example-chirp`` with default options, made by its spec's factory."""
    backend = host.backend_specs("tts")["example-chirp"].factory({})
    assert isinstance(backend, TtsBackend)
    async with backend:
        yield backend


@pytest.fixture
async def abbrev(host: PluginHost) -> AsyncIterator[NormaliserBackend]:
    """An opened ``example-abbrev`` with default options."""
    backend = host.backend_specs("normaliser")["example-abbrev"].factory({})
    assert isinstance(backend, NormaliserBackend)
    async with backend:
        yield backend
