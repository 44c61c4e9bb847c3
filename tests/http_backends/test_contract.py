"""The HTTP backends pass the backend contract kit against real servers on loopback (slow)."""

from __future__ import annotations

from typing import Any

import pytest

from scaivoice.conformance import KitConfig, check_installed_backend
from scaivoice.engine import PluginHost

from ._servers import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host() -> PluginHost:
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    return host


def _failures(report: Any) -> list[str]:
    return [f"{r.name}: {r.detail}" for r in report.failed]


async def test_the_openai_llm_backend_conforms(host: PluginHost, llama: Server) -> None:
    options = {
        "base_url": llama.base_url,
        "api_key": llama.api_key,
        "model": "smollm2",
        "max_tokens": 48,
        "temperature": 0.0,
    }
    report = await check_installed_backend(host, "openai", kind="llm", options=options)
    assert not _failures(report), report.format_text()


async def test_the_openai_tts_backend_conforms(host: PluginHost, speaker: Server) -> None:
    options = {"base_url": speaker.base_url, "voice": "heart", "chunk_ms": 100}
    report = await check_installed_backend(host, "openai", kind="tts", options=options)
    assert not _failures(report), report.format_text()


async def test_the_openai_stt_backend_conforms(host: PluginHost, whisper: Server) -> None:
    report = await check_installed_backend(
        host,
        "openai",
        kind="stt",
        options={"base_url": whisper.base_url},
        config=KitConfig(check_content=True),
    )
    assert not _failures(report), report.format_text()
