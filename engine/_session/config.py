"""Session config validation: a client's ``session.start`` / ``session.update`` against the engine.

A config change is applied whole or not at all. What the engine cannot honour is said, not
silently dropped: an option the voice backend does not declare (``option_unsupported``), a
feature with no server-side implementation (``feature_unavailable``), a feature the client
must drive itself (``feature_limited``).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import trio

from .._contract.tool_schemas import SchemaInvalid, check_parameters_schema
from .._errors import ConfigError
from .._host.auth import Principal
from .._host.engine import Engine
from ..frames import Capabilities, SessionConfig, SessionConfigPatch, WarningFrame

__all__ = ["capabilities", "turn_detection", "validate_config", "wake_words"]

_TOOL_LIST_TIMEOUT_S = 2.0
_MAX_CLIENT_TOOLS = 64

# Features a client can drive itself with frames when no server-side detector is installed.
_CLIENT_DRIVEN = {
    "vad_enabled": "barge-in follows the client's `vad` frames",
    "wake_word_enabled": "send `wake` frames from a client-side detector",
}
# Features that only the server can provide.
_SERVER_ONLY = {
    "diarize": "transcripts carry no speaker labels",
    "speaker_recognition": "speakers are not identified",
}


def validate_config(
    engine: Engine,
    tenant_opt_ins: Mapping[str, bool],
    patch: SessionConfigPatch,
    base: SessionConfig,
) -> tuple[SessionConfig, list[WarningFrame]]:
    """The config after ``patch``, and the warnings it deserves.

    Args:
        engine: what the server offers (voices and their capabilities, normaliser, features).
        tenant_opt_ins: the tenant's opt-ins by session key (``speaker_recognition``).
        patch: the client's keys.
        base: the config they change.

    Raises:
        ConfigError: an unknown voice (``unknown_voice``), or a feature the tenant has not
            opted into (``not_permitted``).
    """
    config = patch.apply(base)
    backend_name, _ = engine.resolve_voice(config.voice_id)
    caps = engine.tts[backend_name].capabilities
    warnings: list[WarningFrame] = []
    changed = set(patch.keys())

    def unsupported(key: str, what: str) -> None:
        if key in changed:
            warnings.append(
                WarningFrame(
                    code="option_unsupported",
                    message=f"{key} is not supported by the {backend_name!r} voice backend "
                    f"({what}); it is ignored",
                )
            )

    if config.speed != 1.0 and not caps.speed:
        unsupported("speed", "it speaks at its natural rate")
    if config.instructions and not caps.instructions:
        unsupported("instructions", "it takes no style instructions")
    if config.cfg_value is not None and not caps.cfg_value:
        unsupported("cfg_value", "it has no guidance setting")
    if config.normalize_text and engine.normaliser is None and "normalize_text" in changed:
        warnings.append(_unavailable("normalize_text", "no text normaliser is configured"))
    if (
        "speaker_recognition" in changed
        and config.speaker_recognition
        and not tenant_opt_ins.get("speaker_recognition", False)
    ):
        raise ConfigError(
            "speaker_recognition needs the tenant's opt-in (voice biometrics)",
            code="not_permitted",
        )
    for key, hint in _CLIENT_DRIVEN.items():
        if key in changed and getattr(config, key) and key not in engine.features:
            warnings.append(
                WarningFrame(
                    code="feature_limited",
                    message=f"{key}: no server-side detector is installed; {hint}",
                )
            )
    if "wake_word" in changed and config.wake_word is not None:
        known = wake_words(engine)
        unknown = sorted(set(config.wake_word) - set(known))
        if not config.wake_word or (known and unknown):
            raise ConfigError(
                f"unknown wake word(s) {unknown or config.wake_word}; this server knows "
                f"{sorted(known)} (session.started lists them under capabilities)",
                code="unknown_wake_word",
            )
        if not known:
            warnings.append(
                _unavailable("wake_word", "no server-side wake-word detector is installed")
            )
    if "tools" in changed:
        _check_client_tools(config, engine)
    if "tools_enabled" in changed and config.tools_enabled and not engine.llm.capabilities.tools:
        warnings.append(
            _unavailable(
                "tools_enabled",
                f"the language model backend {engine.llm.name!r} cannot call tools; "
                "the model gets no tools",
            )
        )
    if config.turn_detection is None:
        config = msgspec.structs.replace(config, turn_detection=default_turn_detection(engine))
    elif "turn_detection" in changed and config.turn_detection != turn_detection(engine, config):
        warnings.append(
            _unavailable(
                "turn_detection",
                f"{config.turn_detection!r} needs a server-side "
                + ("end-of-turn model" if config.turn_detection == "semantic" else "VAD")
                + f"; turns end as with {turn_detection(engine, config)!r}",
            )
        )
    for key, hint in _SERVER_ONLY.items():
        if key in changed and getattr(config, key) and key not in engine.features:
            warnings.append(
                _unavailable(key, f"no server-side feature for it is installed; {hint}")
            )
    return config, warnings


def _check_client_tools(config: SessionConfig, engine: Engine) -> None:
    """Client tools: valid JSON Schemas, unique names, none shadowing a server skill.

    Raises:
        ConfigError: ``invalid_tools``.
    """
    if len(config.tools) > _MAX_CLIENT_TOOLS:
        raise ConfigError(
            f"{len(config.tools)} tools; at most {_MAX_CLIENT_TOOLS}", code="invalid_tools"
        )
    names: set[str] = set()
    for tool in config.tools:
        if tool.name in names:
            raise ConfigError(f"two tools are named {tool.name!r}", code="invalid_tools")
        names.add(tool.name)
        if tool.name in engine.tools.skills:
            raise ConfigError(
                f"tool {tool.name!r}: the server has a tool of that name; rename yours",
                code="invalid_tools",
            )
        try:
            check_parameters_schema(tool.parameters)
        except SchemaInvalid as exc:
            raise ConfigError(f"tool {tool.name!r}: {exc}", code="invalid_tools") from exc


def default_turn_detection(engine: Engine) -> str:
    """The best turn detection this server can do: ``semantic`` where its end-of-turn model
    and a VAD are installed, else ``server_vad`` where a VAD is, else ``manual``."""
    if "vad_enabled" not in engine.features:
        return "manual"
    return "semantic" if "turn_detection" in engine.features else "server_vad"


def turn_detection(engine: Engine, config: SessionConfig) -> str:
    """The turn detection in effect for ``config``: what it asks, as far as the server can."""
    asked = config.turn_detection or default_turn_detection(engine)
    if asked == "manual" or "vad_enabled" not in engine.features:
        return "manual"
    if asked == "semantic" and "turn_detection" not in engine.features:
        return "server_vad"
    return asked


def wake_words(engine: Engine) -> list[str]:
    """The keywords of the server-side wake-word detector, if one is installed."""
    entry = engine.features.get("wake_word_enabled")
    if entry is None:
        return []
    return sorted(str(k) for k in getattr(entry[1], "keywords", ()))


async def capabilities(engine: Engine, principal: Principal) -> Capabilities:
    """What ``session.started`` advertises: server-side features, wake words, server tools.

    Cancelling abandons it (listing an MCP server's tools may wait on it)."""
    features = set(engine.features)
    if engine.llm.capabilities.tools:
        features.add("tools_enabled")
    tools: list[str] = []
    with trio.move_on_after(_TOOL_LIST_TIMEOUT_S):
        offered = await engine.tools.for_session(principal.tenant, principal.permissions)
        tools = sorted(offered)
    return Capabilities(features=sorted(features), wake_words=wake_words(engine), tools=tools)


def _unavailable(key: str, why: str) -> WarningFrame:
    return WarningFrame(code="feature_unavailable", message=f"{key}: {why}")
