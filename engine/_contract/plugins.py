"""The plugin host: one pluggy manager per engine (never a global), discovery, validation.

Discovery is one call, :meth:`PluginHost.load_entry_points`, over the ``scaivoice`` entry-point
group; the built-in backends are registered through that same group. Setting
``SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD=1`` (read by the CLI only) loads the built-ins alone.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from .._errors import PluginContractError, PluginLoadError
from . import hooks as _hooks
from .backends import API_VERSION, BackendKind, BackendSpec
from .features import FeatureSpec
from .identity import IdentityProviderSpec
from .tool_schemas import SchemaInvalid, check_parameters_schema
from .tools import TOOL_NAME_PATTERN, ToolSpec

__all__ = ["ENTRY_POINT_GROUP", "FEATURE_KEYS", "LoadedPlugin", "PluginHost"]

#: The session config keys a feature plugin may answer to (protocol v1).
FEATURE_KEYS = frozenset(
    {
        "vad_enabled",
        "wake_word_enabled",
        "diarize",
        "speaker_recognition",
        "tools_enabled",
        "turn_detection",
    }
)

ENTRY_POINT_GROUP = "scaivoice"
_BUILTIN_DISTRIBUTION = "scaivoice"

_KIND_HOOKS: Mapping[BackendKind, str] = {
    "stt": "scaivoice_stt_backends",
    "llm": "scaivoice_llm_backends",
    "tts": "scaivoice_tts_backends",
    "normaliser": "scaivoice_normalisers",
}


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin the host registered."""

    name: str
    distribution: str
    version: str


class PluginHost:
    """Finds plugins and collects the backends and features they declare."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(_hooks.PROJECT_NAME)
        self._pm.add_hookspecs(_hooks)
        self._loaded: list[LoadedPlugin] = []
        self._origins: dict[tuple[str, str], str] = {}

    # ---------------------------------------------------------------- registration

    def register(self, plugin: ModuleType | object, *, name: str, distribution: str = "") -> None:
        """Register a plugin object (a module with ``@hookimpl`` functions) directly.

        Raises:
            PluginLoadError: pluggy refused it (unknown hook name, bad signature).
        """
        try:
            self._pm.register(plugin, name=name)
            self._pm.check_pending()  # a hook name with a typo is an error, not ignored
        except (ValueError, pluggy.PluginValidationError) as exc:
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            raise PluginLoadError(
                f"plugin {name!r} from {distribution or 'code'} could not be registered: {exc}",
                distribution=distribution,
                entry_point=name,
            ) from exc
        self._loaded.append(LoadedPlugin(name=name, distribution=distribution, version=""))

    def load_entry_points(
        self, *, include_third_party: bool = True, strict: bool = True
    ) -> list[PluginLoadError]:
        """Import and register every plugin of the ``scaivoice`` entry-point group.

        Args:
            include_third_party: False loads only the plugins shipped with ScaiVoice itself.
            strict: raise the first load failure (the default for ``serve``); False collects
                the failures and returns them (for ``scaivoice plugins``).

        Raises:
            PluginLoadError: a plugin failed to import, naming its distribution (strict only).
        """
        failures: list[PluginLoadError] = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "<unknown distribution>"
            version = ep.dist.version if ep.dist is not None else ""
            if not include_third_party and dist != _BUILTIN_DISTRIBUTION:
                continue
            if self._pm.has_plugin(ep.name):
                owner = next((p.distribution for p in self._loaded if p.name == ep.name), "")
                if owner == dist:
                    continue  # the same entry point seen twice (e.g. two paths to one dist)
                error = PluginLoadError(
                    f"entry point {ep.name!r} of distribution {dist!r} clashes with the one of "
                    f"{owner or 'code registered directly'}: entry-point names must be unique",
                    distribution=dist,
                    entry_point=ep.name,
                )
                if strict:
                    raise error
                failures.append(error)
                continue
            try:
                plugin = ep.load()
                self._pm.register(plugin, name=ep.name)
                self._pm.check_pending()
            except Exception as exc:  # an entry point can raise anything on import
                if self._pm.has_plugin(ep.name):
                    self._pm.unregister(name=ep.name)
                error = PluginLoadError(
                    f"plugin {ep.name!r} from distribution {dist!r} failed to load: "
                    f"{type(exc).__name__}: {exc}",
                    distribution=dist,
                    entry_point=ep.name,
                )
                error.__cause__ = exc
                if strict:
                    raise error from exc
                failures.append(error)
                continue
            self._loaded.append(LoadedPlugin(name=ep.name, distribution=dist, version=version))
        return failures

    @property
    def plugins(self) -> tuple[LoadedPlugin, ...]:
        """The plugins registered so far, in registration order."""
        return tuple(self._loaded)

    # ---------------------------------------------------------------- collection

    def backend_specs(self, kind: BackendKind) -> dict[str, BackendSpec]:
        """Every backend of ``kind`` declared by the registered plugins, by name.

        Raises:
            PluginContractError: a hook yielded something other than a ``BackendSpec`` of this
                kind, a newer API version, or a name two plugins both claim.
        """
        hook = getattr(self._pm.hook, _KIND_HOOKS[kind])
        specs: dict[str, BackendSpec] = {}
        for plugin_name, record in self._collect(hook):
            if not isinstance(record, BackendSpec) or record.kind != kind:
                raise PluginContractError(
                    f"{_KIND_HOOKS[kind]} yielded {record!r}; expected BackendSpec(kind={kind!r})"
                )
            self._check_version(record.name, record.api_version)
            if record.name in specs:
                raise PluginContractError(
                    f"plugins {self._origins[(kind, record.name)]!r} and {plugin_name!r} both "
                    f"declare the {kind} backend {record.name!r}"
                )
            specs[record.name] = record
            self._origins[(kind, record.name)] = plugin_name
        return specs

    def origin(self, kind: str, name: str) -> LoadedPlugin | None:
        """The plugin that declared backend (or feature, ``kind="feature"``) ``name``.

        Known after :meth:`backend_specs` / :meth:`feature_specs` ran.
        """
        plugin_name = self._origins.get((kind, name))
        return next((p for p in self._loaded if p.name == plugin_name), None)

    def feature_specs(self) -> dict[str, FeatureSpec]:
        """Every session feature declared, by the config key it answers to.

        Raises:
            PluginContractError: a hook yielded something other than a ``FeatureSpec``, or two
                features claim the same config key.
        """
        specs: dict[str, FeatureSpec] = {}
        for plugin_name, record in self._collect(self._pm.hook.scaivoice_session_features):
            if not isinstance(record, FeatureSpec):
                raise PluginContractError(
                    f"scaivoice_session_features yielded {record!r}; expected FeatureSpec"
                )
            if record.config_key not in FEATURE_KEYS:
                raise PluginContractError(
                    f"feature {record.name!r} answers to {record.config_key!r}, which is not a "
                    f"session feature key; expected one of {sorted(FEATURE_KEYS)}"
                )
            self._origins[("feature", record.name)] = plugin_name
            self._check_version(record.name, record.api_version)
            if record.config_key in specs:
                raise PluginContractError(
                    f"features {specs[record.config_key].name!r} and {record.name!r} both claim "
                    f"the session key {record.config_key!r}"
                )
            specs[record.config_key] = record
        return specs

    def identity_provider_specs(self) -> dict[str, IdentityProviderSpec]:
        """Every identity provider declared, by name.

        Raises:
            PluginContractError: a hook yielded something else, or two share a name.
        """
        specs: dict[str, IdentityProviderSpec] = {}
        for plugin_name, record in self._collect(self._pm.hook.scaivoice_identity_providers):
            if not isinstance(record, IdentityProviderSpec):
                raise PluginContractError(
                    f"scaivoice_identity_providers yielded {record!r}; expected "
                    "IdentityProviderSpec"
                )
            self._check_version(record.name, record.api_version)
            if record.name in specs:
                raise PluginContractError(
                    f"two plugins declare the identity provider {record.name!r}"
                )
            specs[record.name] = record
            self._origins[("identity", record.name)] = plugin_name
        return specs

    def tool_specs(self) -> dict[str, ToolSpec]:
        """Every server skill declared, by name.

        Raises:
            PluginContractError: a hook yielded something other than a ``ToolSpec``, a name
                the model cannot call, a parameters schema that is not a valid JSON Schema of
                an object, or two skills share a name.
        """
        specs: dict[str, ToolSpec] = {}
        for plugin_name, record in self._collect(self._pm.hook.scaivoice_tools):
            if not isinstance(record, ToolSpec):
                raise PluginContractError(f"scaivoice_tools yielded {record!r}; expected ToolSpec")
            self._check_version(record.name, record.api_version)
            if not TOOL_NAME_PATTERN.match(record.name):
                raise PluginContractError(
                    f"tool name {record.name!r} from {plugin_name!r}: use 1-64 letters, digits, "
                    "'_' or '-'"
                )
            try:
                check_parameters_schema(record.parameters)
            except SchemaInvalid as exc:
                raise PluginContractError(f"tool {record.name!r}: {exc}") from exc
            if record.name in specs:
                raise PluginContractError(f"two plugins declare the tool {record.name!r}")
            specs[record.name] = record
            self._origins[("tool", record.name)] = plugin_name
        return specs

    @staticmethod
    def _collect(hook: Any) -> Iterable[tuple[str, object]]:
        """(plugin name, record) for every record every implementation yields."""
        for impl in hook.get_hookimpls():  # registration order
            result = impl.function()
            if result is None:
                continue
            for record in result:
                yield impl.plugin_name, record

    @staticmethod
    def _check_version(name: str, api_version: int) -> None:
        if api_version > API_VERSION:
            raise PluginContractError(
                f"{name!r} was written for backend API {api_version}; this engine speaks "
                f"{API_VERSION}: upgrade scaivoice"
            )
