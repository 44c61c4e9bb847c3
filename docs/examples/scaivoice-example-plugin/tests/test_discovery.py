"""The plugin is found through its entry point and declares what it does."""

from __future__ import annotations

import importlib.metadata

import pytest
from scaivoice.engine import (
    API_VERSION,
    BackendKind,
    ConfigError,
    NormaliserCapabilities,
    PluginHost,
    TtsCapabilities,
)
from scaivoice.engine.testing import open_test_engine

DISTRIBUTION = "scaivoice-example-plugin"


def test_the_entry_point_is_loaded_from_this_distribution(host: PluginHost) -> None:
    ours = [p for p in host.plugins if p.distribution == DISTRIBUTION]
    assert [p.name for p in ours] == [DISTRIBUTION]
    assert ours[0].version == importlib.metadata.version(DISTRIBUTION)


def test_both_backends_and_the_skill_are_declared_by_this_distribution() -> None:
    # Register this distribution's entry point alone, so every spec found is ours.
    (entry_point,) = [
        ep
        for ep in importlib.metadata.entry_points(group="scaivoice")
        if ep.dist is not None and ep.dist.name == DISTRIBUTION
    ]
    host = PluginHost()
    host.register(entry_point.load(), name=entry_point.name, distribution=DISTRIBUTION)

    assert set(host.backend_specs("normaliser")) == {"example-abbrev"}
    assert set(host.backend_specs("tts")) == {"example-chirp"}
    assert host.backend_specs("stt") == {}
    assert host.backend_specs("llm") == {}
    assert host.feature_specs() == {}
    assert set(host.tool_specs()) == {"convert_units"}


def test_the_specs_declare_honest_capabilities(host: PluginHost) -> None:
    abbrev = host.backend_specs("normaliser")["example-abbrev"]
    chirp = host.backend_specs("tts")["example-chirp"]

    assert (abbrev.kind, chirp.kind) == ("normaliser", "tts")
    assert abbrev.api_version == chirp.api_version == API_VERSION
    assert abbrev.capabilities == NormaliserCapabilities(languages=("en",), lexicon=True)
    assert chirp.capabilities == TtsCapabilities(
        streaming=True, voices=True, speed=True, sample_rates=(16000,)
    )
    assert abbrev.description.startswith("Expands abbreviations")
    assert chirp.description.startswith("Speaks one rising chirp per word")


@pytest.mark.parametrize(
    ("name", "kind", "options", "match"),
    [
        ("example-chirp", "tts", {"colour": "blue"}, "colour"),
        ("example-chirp", "tts", {"chunk_ms": 500}, "chunk_ms"),
        ("example-chirp", "tts", {"voice": "parrot"}, "parrot"),
        ("example-abbrev", "normaliser", {"abbreviations": {"": "nothing"}}, "empty"),
        ("example-abbrev", "normaliser", {"table": {}}, "table"),
    ],
)
def test_bad_options_are_a_config_error_naming_the_backend(
    host: PluginHost, name: str, kind: BackendKind, options: dict[str, object], match: str
) -> None:
    spec = host.backend_specs(kind)[name]
    with pytest.raises(ConfigError, match=match) as caught:
        spec.factory(options)
    assert name in str(caught.value)


async def test_the_engine_opens_the_plugins_backends(host: PluginHost) -> None:
    overrides = {
        "backends": {
            "tts": "example-chirp",
            "normaliser": "example-abbrev",
            "options": {"example-chirp": {"voice": "owl", "chunk_ms": 20}},
        }
    }
    async with open_test_engine(overrides, host=host):
        pass


async def test_the_engine_refuses_bad_operator_options(host: PluginHost) -> None:
    overrides = {"backends": {"tts": "example-chirp", "options": {"example-chirp": {"x": 1}}}}
    with pytest.raises(ConfigError, match="example-chirp"):
        async with open_test_engine(overrides, host=host):
            pass  # pragma: no cover - never opened
