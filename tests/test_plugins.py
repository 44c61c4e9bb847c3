"""The plugin host: discovery through entry points, validation of what hooks yield."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import Iterator

import pytest

from scaivoice.backends.testing import TestTts
from scaivoice.engine import (
    BackendSpec,
    FeatureSpec,
    PluginContractError,
    PluginHost,
    PluginLoadError,
    hookimpl,
)


def test_builtin_backends_are_discovered_through_the_entry_point_group() -> None:
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    assert {"test-stt"} <= set(host.backend_specs("stt"))
    assert {"test-llm"} <= set(host.backend_specs("llm"))
    assert {"test-tts"} <= set(host.backend_specs("tts"))
    spec = host.backend_specs("tts")["test-tts"]
    assert spec.capabilities.speed is True and spec.api_version == 1
    assert all(p.distribution == "scaivoice" for p in host.plugins)


def _module(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in hooks.items():
        setattr(module, key, value)
    return module


def test_a_hook_yielding_the_wrong_record_is_a_contract_error() -> None:
    @hookimpl
    def scaivoice_tts_backends() -> Iterator[object]:
        yield {"name": "dict-is-not-a-spec"}

    host = PluginHost()
    host.register(_module("bad", scaivoice_tts_backends=scaivoice_tts_backends), name="bad")
    with pytest.raises(PluginContractError, match="expected BackendSpec"):
        host.backend_specs("tts")


def test_two_plugins_claiming_one_name_is_a_contract_error() -> None:
    @hookimpl
    def scaivoice_tts_backends() -> Iterator[BackendSpec]:
        yield BackendSpec.for_class(TestTts, name="dup")

    host = PluginHost()
    host.register(_module("a", scaivoice_tts_backends=scaivoice_tts_backends), name="a")
    host.register(_module("b", scaivoice_tts_backends=scaivoice_tts_backends), name="b")
    with pytest.raises(PluginContractError, match="dup"):
        host.backend_specs("tts")


def test_a_spec_from_a_newer_api_is_refused() -> None:
    import dataclasses

    @hookimpl
    def scaivoice_tts_backends() -> Iterator[BackendSpec]:
        yield dataclasses.replace(BackendSpec.for_class(TestTts, name="future"), api_version=99)

    host = PluginHost()
    host.register(_module("f", scaivoice_tts_backends=scaivoice_tts_backends), name="f")
    with pytest.raises(PluginContractError, match="upgrade scaivoice"):
        host.backend_specs("tts")


def test_features_are_keyed_by_their_config_key_and_may_not_collide() -> None:
    @hookimpl
    def scaivoice_session_features() -> Iterator[FeatureSpec]:
        yield FeatureSpec(name="vad-a", config_key="vad_enabled", factory=lambda o: None)  # type: ignore[arg-type,return-value]

    host = PluginHost()
    host.register(_module("x", scaivoice_session_features=scaivoice_session_features), name="x")
    assert host.feature_specs()["vad_enabled"].name == "vad-a"
    host.register(_module("y", scaivoice_session_features=scaivoice_session_features), name="y")
    with pytest.raises(PluginContractError, match="vad_enabled"):
        host.feature_specs()


def test_an_unknown_hook_name_is_refused_at_registration() -> None:
    @hookimpl
    def scaivoice_ttts_backends() -> Iterator[BackendSpec]:  # a typo
        yield from ()

    host = PluginHost()
    with pytest.raises(PluginLoadError, match="could not be registered"):
        host.register(_module("typo", scaivoice_ttts_backends=scaivoice_ttts_backends), name="typo")


class _FakeDist:
    name = "acme-broken-plugin"
    version = "1.2.3"


def test_a_plugin_that_fails_to_import_is_reported_with_its_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = importlib.metadata.EntryPoint(
        name="acme-broken", value="acme_missing_module_xyz", group="scaivoice"
    )
    broken = broken._for(_FakeDist())  # type: ignore[attr-defined]
    real = importlib.metadata.entry_points

    def entry_points(**kwargs: object) -> object:
        found = list(real(**kwargs))  # type: ignore[arg-type]
        return [*found, broken] if kwargs.get("group") == "scaivoice" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    with pytest.raises(PluginLoadError) as info:
        PluginHost().load_entry_points()
    assert info.value.distribution == "acme-broken-plugin"
    assert "acme-broken-plugin" in str(info.value)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)

    failures = PluginHost().load_entry_points(strict=False)
    assert [f.distribution for f in failures] == ["acme-broken-plugin"]
    assert "acme_missing_module_xyz" not in sys.modules


def test_the_host_knows_which_plugin_declared_each_backend() -> None:
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    host.backend_specs("tts")
    origin = host.origin("tts", "test-tts")
    assert origin is not None
    assert (origin.name, origin.distribution) == ("builtin-test-backends", "scaivoice")


def test_a_feature_must_answer_to_a_session_feature_key() -> None:
    @hookimpl
    def scaivoice_session_features() -> Iterator[FeatureSpec]:
        yield FeatureSpec(name="typo", config_key="vad_enabeld", factory=lambda o: None)  # type: ignore[arg-type,return-value]

    host = PluginHost()
    host.register(_module("t", scaivoice_session_features=scaivoice_session_features), name="t")
    with pytest.raises(PluginContractError, match="vad_enabeld"):
        host.feature_specs()


def test_two_distributions_with_one_entry_point_name_clash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clash = importlib.metadata.EntryPoint(
        name="builtin-test-backends", value="scaivoice.backends.testing", group="scaivoice"
    )._for(_FakeDist())  # type: ignore[attr-defined]
    real = importlib.metadata.entry_points

    def entry_points(**kwargs: object) -> object:
        found = list(real(**kwargs))  # type: ignore[arg-type]
        return [*found, clash] if kwargs.get("group") == "scaivoice" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    with pytest.raises(PluginLoadError, match="clashes"):
        PluginHost().load_entry_points()
