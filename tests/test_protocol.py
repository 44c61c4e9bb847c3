"""Protocol v1 frames: the checked-in schema, the codec, and that every frame has a handler."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import scaivoice.engine as public
from scaivoice.engine import CloseCode
from scaivoice.engine import frames as _frames
from scaivoice.engine._session import dialogue as _dialogue
from scaivoice.engine._session import runner as _session
from scaivoice.engine._session import wire as _wire
from scaivoice.engine.frames import (
    CLIENT_FRAME_TYPES,
    CONFIG_KEYS,
    SERVER_FRAME_TYPES,
    decode_client_frame,
    decode_server_frame,
    encode_server_frame,
    protocol_schema,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _normalised(schema: Any) -> Any:
    """``schema`` with the whitespace of every ``description`` collapsed.

    How a library lays out the docstrings it copies (msgspec 0.23 started dedenting them) is not
    a change of the protocol; every other difference is.
    """
    if isinstance(schema, dict):
        return {
            key: " ".join(value.split())
            if key == "description" and isinstance(value, str)
            else _normalised(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_normalised(value) for value in schema]
    return schema


def test_checked_in_schema_is_current() -> None:
    checked_in = json.loads((DOCS / "protocol.schema.json").read_text())
    assert _normalised(checked_in) == _normalised(protocol_schema()), (
        "run: scaivoice schema > docs/protocol.schema.json"
    )


def test_the_schema_comparison_ignores_only_description_whitespace() -> None:
    schema = protocol_schema()
    config = schema["$defs"]["SessionConfig"]
    assert "\n\n" in config["description"]

    def changed(edit: Callable[[dict[str, Any]], None]) -> bool:
        variant = copy.deepcopy(schema)
        edit(variant)
        return _normalised(variant) != _normalised(schema)

    def reindent(doc: dict[str, Any]) -> None:
        text = doc["$defs"]["SessionConfig"]["description"]
        doc["$defs"]["SessionConfig"]["description"] = text.replace("\n", "\n    ") + "\n"

    def reword(doc: dict[str, Any]) -> None:
        text = doc["$defs"]["SessionConfig"]["description"]
        doc["$defs"]["SessionConfig"]["description"] = text.replace("optional", "required", 1)

    def retype(doc: dict[str, Any]) -> None:
        doc["$defs"]["SessionConfig"]["properties"]["speed"]["type"] = "integer"

    def drop_field(doc: dict[str, Any]) -> None:
        del doc["$defs"]["SessionConfig"]["properties"]["speed"]

    assert not changed(reindent)
    assert changed(reword)
    assert changed(retype)
    assert changed(drop_field)


def test_every_frame_type_is_in_the_protocol_spec() -> None:
    spec = (DOCS / "protocol.md").read_text()
    for frame in (*CLIENT_FRAME_TYPES, *SERVER_FRAME_TYPES):
        assert f"`{frame.__struct_config__.tag}`" in spec, frame
    for key in CONFIG_KEYS:
        assert f"`{key}`" in spec, key
    for code in CloseCode:
        assert str(int(code)) in spec, code


def test_every_error_code_the_engine_sends_is_documented() -> None:
    spec = (DOCS / "protocol.md").read_text()
    sources = "".join(
        inspect.getsource(module)
        for module in (
            _session,
            _frames,
            importlib.import_module("scaivoice.engine._session.dialogue"),
            importlib.import_module("scaivoice.engine._session.wire"),
            importlib.import_module("scaivoice.engine._session.user_turn"),
            importlib.import_module("scaivoice.engine._session.agent_turn"),
            importlib.import_module("scaivoice.engine._session.statemachine"),
            importlib.import_module("scaivoice.engine._server.app"),
            importlib.import_module("scaivoice.engine._host.limits"),
            importlib.import_module("scaivoice.engine._host.engine"),
        )
    )
    codes = set(re.findall(r'code="([a-z_]+)"', sources))
    codes |= set(re.findall(r'ProtocolViolation\(\s*"([a-z_]+)"', sources))
    codes |= set(re.findall(r'_error\(\s*"([a-z_]+)"', sources))
    codes |= set(re.findall(r'_warn\(\s*"([a-z_]+)"', sources))
    codes |= set(re.findall(r'\.error\(\s*"([a-z_]+)"', sources))
    codes |= set(re.findall(r'\.warn\(\s*"([a-z_]+)"', sources))
    codes |= set(re.findall(r'_refuse\(\s*"([a-z_]+)"', sources))
    codes |= set(re.findall(r'fatal\(\s*CloseCode\.[A-Z_]+,\s*"([a-z_]+)"', sources))
    codes |= set(re.findall(r'EmitWarning\("([a-z_]+)"', sources))
    codes |= set(re.findall(r'LimitExceeded\(\s*"([a-z_]+)"', sources))
    assert len(codes) > 15
    missing = sorted(c for c in codes if f"`{c}`" not in spec)
    assert not missing, missing


def test_every_client_frame_type_has_a_dialogue_or_reader_handler() -> None:
    handled = inspect.getsource(_dialogue.Dialogue._on_item) + inspect.getsource(_wire.read_client)
    for frame in CLIENT_FRAME_TYPES:
        if frame is _frames.SessionStart:
            continue  # the handshake's
        assert re.search(rf"\b{frame.__name__}\b", handled), frame


@pytest.mark.parametrize("frame_type", SERVER_FRAME_TYPES)
def test_server_frames_round_trip(frame_type: type) -> None:
    fields = {
        name: _example(frame_type.__annotations__[name])
        for name in frame_type.__struct_fields__
        if name not in _defaults(frame_type)
    }
    frame = frame_type(**fields)
    assert decode_server_frame(encode_server_frame(frame)) == frame


def _defaults(frame_type: type) -> set[str]:
    n = len(frame_type.__struct_defaults__)
    return (
        set(frame_type.__struct_fields__[len(frame_type.__struct_fields__) - n :]) if n else set()
    )


def _example(annotation: str) -> object:
    if "SessionConfig" in annotation:
        return _frames.SessionConfig()
    if "AudioFormats" in annotation:
        af = _frames.AudioFormat(sample_rate=16000)
        return _frames.AudioFormats(input=af, output=af)
    if "StateName" in annotation:
        return "idle"
    if annotation.startswith("Literal["):
        return annotation.split("'")[1]
    if annotation.startswith("dict"):
        return {"key": [1, "two"]}
    if annotation.startswith("int"):
        return 3
    if annotation.startswith("bool"):
        return True
    if annotation.startswith("float"):
        return 1.5
    return "x"


def test_client_frame_decoding_is_strict() -> None:
    frame = decode_client_frame('{"type": "playback", "turn_id": 2, "played_ms": 10}')
    assert frame == _frames.Playback(turn_id=2, played_ms=10)
    with pytest.raises(public.ProtocolViolation) as info:
        decode_client_frame('{"type": "playback", "turn_id": 2, "played_ms": -1}')
    assert info.value.code == "invalid_frame"


def test_config_patch_applies_only_present_keys() -> None:
    frame = decode_client_frame(
        '{"type": "session.update", "config": {"speed": 1.5, "language": null}}'
    )
    assert isinstance(frame, _frames.SessionUpdate)
    base = _frames.SessionConfig(language="de", voice_id="x:y")
    updated = frame.config.apply(base)
    assert (updated.speed, updated.language, updated.voice_id) == (1.5, None, "x:y")
