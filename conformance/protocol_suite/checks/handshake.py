"""Opening a session: session.start first, its answer, refusals of other versions, the start
timeout."""

from __future__ import annotations

import trio

from .. import spec
from ..context import SuiteContext
from ..invariants import audio_format_problems
from ..outcome import Failed, Notes, Skipped
from ..registry import check
from ..session import start_session
from ._common import expect_error


@check(
    "handshake.session_started",
    "session.start is answered by session.started, any warnings, then state idle",
    "§2.1 session.start, §2.2 session.started, §4.1",
)
async def session_started(ctx: SuiteContext, notes: Notes) -> None:
    timeout = ctx.options.frame_timeout_s
    async with ctx.connect("handshake") as conn:
        await conn.send({"type": "session.start", "protocol": spec.PROTOCOL_VERSION})
        first = await conn.expect("session.started", lambda i: True, timeout)
        if first.type != "session.started":
            raise Failed(f"the first frame is {first.describe()}, not session.started (§4.1)")
        session_id = first.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            notes.violation(f"session.started has session_id {session_id!r}")
        if first.get("protocol") != spec.PROTOCOL_VERSION:
            notes.violation(f"session.started has protocol {first.get('protocol')!r}, not 1")
        config = first.get("config")
        if not isinstance(config, dict):
            notes.violation(f"session.started has config {config!r}, not an object")
            config = {}
        notes.violations_from(audio_format_problems(first.get("audio")))
        audio = first.get("audio") if isinstance(first.get("audio"), dict) else {}
        for key, direction in (("input_sample_rate", "input"), ("output_sample_rate", "output")):
            fmt = audio.get(direction)
            rate = fmt.get("sample_rate") if isinstance(fmt, dict) else None
            if key in config and rate != config[key]:
                notes.violation(
                    f"audio.{direction}.sample_rate {rate} differs from config.{key} {config[key]}"
                )
        missing = sorted(spec.CONFIG_KEYS - set(config))
        if missing:
            notes.note(f"the effective config leaves out {', '.join(missing)}")
        warnings = 0
        while True:
            item = await conn.expect("state idle after session.started", lambda i: True, timeout)
            if item.type == "warning":
                warnings += 1
                continue
            if not item.is_state("idle"):
                notes.violation(
                    f"after session.started came {item.describe()}; §2.1: any warnings, then "
                    "state idle"
                )
            elif item.get("turn_id") is not None:
                notes.violation(f"the first state idle has turn_id {item.get('turn_id')!r}")
            break
        notes.note(
            f"session {session_id}: input {audio_rate(audio, 'input')} Hz, output "
            f"{audio_rate(audio, 'output')} Hz, {warnings} warning(s) at start"
        )
        await conn.send({"type": "session.end"})
        await conn.until_closed(timeout)


def audio_rate(audio: dict[str, object], direction: str) -> object:
    fmt = audio.get(direction)
    return fmt.get("sample_rate") if isinstance(fmt, dict) else None


@check(
    "handshake.not_started",
    "frames before session.start get error not_started; the connection stays usable",
    "§2.1 session.start, §7 not_started",
)
async def not_started(ctx: SuiteContext, notes: Notes) -> None:
    timeout = ctx.options.frame_timeout_s
    async with ctx.connect("not-started") as conn:
        for what, message in (
            ("a ping before session.start", '{"type":"ping","id":"early"}'),
            ("a text frame before session.start", '{"type":"text","text":"Hello there."}'),
            ("a binary frame before session.start", b"\x00\x00" * 320),
        ):
            await conn.send_raw(message)
            await expect_error(conn, "not_started", what, timeout, notes)
            if conn.closed:
                raise Failed(f"the server closed the connection after {what}")
        await start_session(ctx, conn)
        await conn.send({"type": "session.end"})
        await conn.until_closed(timeout)


@check(
    "handshake.unsupported_protocol",
    "session.start with another protocol version: error unsupported_protocol, close 4426",
    "§7 unsupported_protocol, §8 4426, §2.2 error",
)
async def unsupported_protocol(ctx: SuiteContext, notes: Notes) -> None:
    timeout = ctx.options.frame_timeout_s
    for version in (2, 999):
        async with ctx.connect(f"protocol-{version}") as conn:
            await conn.send({"type": "session.start", "protocol": version})
            first = await conn.expect(
                f"an answer to session.start with protocol {version}", lambda i: True, timeout
            )
            if first.type == "session.started":
                if first.get("protocol") == version and version == 2:
                    notes.note("the server speaks protocol 2 too; tried 999 instead")
                    continue
                raise Failed(
                    f"session.start with protocol {version} was accepted (session.started with "
                    f"protocol {first.get('protocol')!r}); a v1 server refuses it with error "
                    "unsupported_protocol and close 4426 (§7, §8)"
                )
            if first.type != "error" or first.get("code") != "unsupported_protocol":
                notes.violation(
                    f"session.start with protocol {version} was answered with "
                    f"{first.describe()}, expected error unsupported_protocol"
                )
            elif first.get("fatal") is not True:
                notes.violation("error unsupported_protocol is not marked fatal: true (§7)")
            mark = len(conn.items)
            if not await conn.until_closed(timeout):
                notes.violation(f"the server did not close the connection within {timeout:g} s")
            elif conn.close_code != spec.CLOSE_CODES["unsupported_protocol"]:
                notes.violation(
                    f"closed with {conn.close_code}, expected 4426 (§8 unsupported protocol)"
                )
            after = [i for i in conn.items[mark:] if not i.binary]
            if any(i.type != "session.ended" for i in after):
                notes.violation(
                    "after the fatal error came "
                    + ", ".join(i.describe() for i in after)
                    + " (§2.2: session.ended, then the close)"
                )
            notes.note(
                "session.ended followed the fatal error"
                if after
                else "no session.ended between the fatal error and the close"
            )
            return


@check(
    "handshake.start_timeout",
    "no session.start within start_timeout_s: error start_timeout, close 4408 (optional)",
    "§6 limits, §7 start_timeout, §8 4408",
)
async def start_timeout(ctx: SuiteContext, notes: Notes) -> None:
    limit = ctx.options.start_timeout_s
    if limit is None:
        raise Skipped("needs the server's start_timeout_s (--start-timeout SECONDS)")
    async with ctx.connect("start-timeout") as conn:
        start = trio.current_time()
        item = await conn.expect(
            "error start_timeout",
            lambda i: i.type == "error",
            limit + 5 + ctx.options.frame_timeout_s,
        )
        elapsed = trio.current_time() - start
        notes.measure("elapsed_s", elapsed)
        if item.get("code") != "start_timeout" or item.get("fatal") is not True:
            notes.violation(f"got {item.describe()}, expected a fatal error start_timeout")
        if elapsed < limit - 1.0:
            notes.violation(f"the session timed out after {elapsed:.1f} s, before {limit:g} s")
        if not await conn.until_closed(ctx.options.frame_timeout_s):
            notes.violation("the server did not close the connection")
        elif conn.close_code != spec.CLOSE_CODES["timeout"]:
            notes.violation(f"closed with {conn.close_code}, expected 4408 (§8)")
