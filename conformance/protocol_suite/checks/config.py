"""Session config: echo in session.started, session.update, and the errors for bad keys and
values (§2.3, §7)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..context import SuiteContext
from ..invariants import audio_bracketing
from ..outcome import Failed, Notes
from ..registry import check
from ..session import LiveSession, start_session
from ._common import SHORT_TEXT, refused_start, refused_update


def _config_of(frame: Mapping[str, Any] | None) -> Mapping[str, Any]:
    config = frame.get("config") if frame is not None else None
    return config if isinstance(config, dict) else {}


def _compare(
    live: LiveSession,
    config: Mapping[str, Any],
    wanted: Mapping[str, Any],
    where: str,
    notes: Notes,
) -> None:
    for key, value in wanted.items():
        if key not in config:
            notes.violation(f"{where} config leaves out {key} (sent {value!r})")
        elif config[key] != value:
            if (
                live.warned("option_unsupported", key)
                or live.warned("feature_unavailable", key)
                or live.warned("feature_limited", key)
            ):
                notes.note(f"{key} is {config[key]!r} after a warning that it is ignored")
            else:
                notes.violation(f"{where} config has {key} {config[key]!r}, sent {value!r}")


async def _agent_rate(live: LiveSession, notes: Notes) -> int | None:
    """Run a typed turn; return the sample rate its agent.audio.start announced."""
    turn = await live.typed_turn(SHORT_TEXT)
    notes.violations_from(
        audio_bracketing(turn.frames, output_rate=live.output_rate, complete=True)
    )
    for item in turn.frames:
        if item.type == "agent.audio.start":
            rate = item.get("sample_rate")
            return rate if isinstance(rate, int) else None
    notes.note("the reply carried no audio: the output rate could not be observed")
    return None


@check(
    "config.echo",
    "session.started echoes the sent keys; audio formats and agent audio follow the rates",
    "§2.2 session.started, §2.3 session config, §2 binary frames",
)
async def echo(ctx: SuiteContext, notes: Notes) -> None:
    wanted = {"speed": 1.25, "input_sample_rate": 24000, "output_sample_rate": 16000}
    async with ctx.session("config-echo", wanted) as live:
        _compare(live, _config_of(live.started), wanted, "session.started", notes)
        if live.input_rate != 24000:
            notes.violation(f"audio.input.sample_rate is {live.input_rate}, sent 24000")
        if live.output_rate != 16000:
            notes.violation(f"audio.output.sample_rate is {live.output_rate}, sent 16000")
        rate = await _agent_rate(live, notes)
        if rate is not None and rate != 16000:
            notes.violation(f"agent.audio.start announces {rate} Hz; output_sample_rate is 16000")
        await live.end()


@check(
    "config.update",
    "session.update is answered by session.updated; only the keys sent change; new rates apply",
    "§2.1 session.update, §2.2 session.updated, §2.3",
)
async def update(ctx: SuiteContext, notes: Notes) -> None:
    timeout = ctx.options.frame_timeout_s
    async with ctx.session("config-update", {"output_sample_rate": 16000}) as live:
        await live.conn.send({"type": "session.update", "config": {"speed": 1.5}})
        updated = await live.conn.expect(
            "session.updated", lambda i: i.type in ("session.updated", "error"), timeout
        )
        if updated.type != "session.updated":
            raise Failed(f"session.update {{speed: 1.5}} was answered with {updated.describe()}")
        config = _config_of(updated.frame)
        _compare(live, config, {"speed": 1.5}, "session.updated", notes)
        if config.get("output_sample_rate") != 16000:
            notes.violation(
                f"session.update {{speed}} changed output_sample_rate to "
                f"{config.get('output_sample_rate')!r} (§2.1: only the keys present change)"
            )
        await live.conn.send({"type": "session.update", "config": {"output_sample_rate": 22050}})
        updated = await live.conn.expect(
            "session.updated", lambda i: i.type in ("session.updated", "error"), timeout
        )
        if updated.type != "session.updated":
            raise Failed(
                f"session.update {{output_sample_rate: 22050}} was answered with "
                f"{updated.describe()}"
            )
        _compare(
            live, _config_of(updated.frame), {"output_sample_rate": 22050}, "session.updated", notes
        )
        turn = await live.typed_turn(SHORT_TEXT)
        notes.violations_from(audio_bracketing(turn.frames, output_rate=22050, complete=True))
        if not any(i.type == "agent.audio.start" for i in turn.frames):
            notes.note("the reply carried no audio: the new output rate could not be observed")
        await live.end()


async def _refusals(
    ctx: SuiteContext,
    label: str,
    start_config: Mapping[str, Any],
    update_config: Mapping[str, Any],
    codes: tuple[str, ...],
    notes: Notes,
) -> None:
    async with ctx.connect(label) as conn:
        await refused_start(ctx, conn, start_config, codes, notes)
        live = await start_session(ctx, conn)
        await refused_update(live, update_config, codes, notes)
        await live.end()


@check(
    "config.unknown_key",
    "an unknown config key: error unknown_config_key; the start can be sent again",
    "§2.3 session config, §7 unknown_config_key",
)
async def unknown_key(ctx: SuiteContext, notes: Notes) -> None:
    bogus = {"conformance_unknown_key": True}
    await _refusals(ctx, "unknown-key", bogus, bogus, ("unknown_config_key",), notes)


@check(
    "config.invalid_value",
    "out-of-range or mistyped config values: error invalid_frame / invalid_config",
    "§2.3 session config, §7 invalid_frame, invalid_config",
)
async def invalid_value(ctx: SuiteContext, notes: Notes) -> None:
    codes = ("invalid_frame", "invalid_config")
    await _refusals(
        ctx, "invalid-value", {"speed": 100.0}, {"output_sample_rate": 1000}, codes, notes
    )
    await _refusals(
        ctx, "invalid-type", {"input_sample_rate": "fast"}, {"vad_enabled": "yes"}, codes, notes
    )


@check(
    "config.unknown_voice",
    "a voice_id outside the voice library: error unknown_voice; start / update refused",
    "§2.3 voice_id, §7 unknown_voice",
)
async def unknown_voice(ctx: SuiteContext, notes: Notes) -> None:
    voice = {"voice_id": "conformance:no-such-voice"}
    await _refusals(ctx, "unknown-voice", voice, voice, ("unknown_voice",), notes)
