"""The offline backends and the VAD feature are found through the ``scaivoice`` entry points."""

from __future__ import annotations

import importlib.metadata

from scaivoice.engine import PluginHost


def test_entry_points_name_the_builtin_modules() -> None:
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="scaivoice")}
    assert points["builtin-local-backends"] == "scaivoice.backends.local"
    assert points["builtin-silero-vad"] == "scaivoice.plugins.silero_vad"


def test_the_host_collects_every_local_backend_and_the_vad() -> None:
    host = PluginHost()
    failures = host.load_entry_points(include_third_party=False, strict=False)
    assert not [f for f in failures if f.entry_point.startswith("builtin-")]
    assert {"whisper"} <= host.backend_specs("stt").keys()
    assert {"llama-cpp", "echo"} <= host.backend_specs("llm").keys()
    assert {"hibari", "espeak", "piper"} <= host.backend_specs("tts").keys()
    assert host.feature_specs()["vad_enabled"].name == "silero-vad"


def test_declared_capabilities() -> None:
    host = PluginHost()
    host.load_entry_points(include_third_party=False, strict=False)
    whisper = host.backend_specs("stt")["whisper"].capabilities
    assert whisper.interim_results and whisper.word_timings and not whisper.streaming  # type: ignore[union-attr]
    hibari = host.backend_specs("tts")["hibari"].capabilities
    assert hibari.sample_rates == (24000,) and hibari.speed  # type: ignore[union-attr]
    assert not hibari.warmup_trim  # type: ignore[union-attr]
