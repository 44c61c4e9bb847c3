"""One WebSocket session: a trio nursery supervising the reader, the dialogue and the writer.

::

    transport ──► reader ──items──► dialogue (state machine) ──► user-turn tasks (STT)
                                      ▲    │                 └─► agent-turn tasks (LLM → TTS)
                                      └────┴── turn results ◄──┘         │
                  Outbox ◄── frames and paced agent audio ◄──────────────┘
                    │
                  writer ──► transport

Channels are bounded: a client that sends faster than the session consumes is slowed down by
TCP back-pressure; a client that does not read is closed (``slow_client``, 4420). Each agent
turn runs in its own task under its own ``trio.CancelScope``; barge-in cancels it.
"""

from __future__ import annotations

import logging
import uuid
from functools import partial
from typing import TypeVar, cast

import trio

from .._errors import ConfigError, ProtocolViolation, SessionClosed
from .._host.auth import Principal
from .._host.engine import Engine
from .._host.logs import session_id_var
from ..frames import (
    PROTOCOL_VERSION,
    AudioFormat,
    AudioFormats,
    ErrorFrame,
    SessionConfig,
    SessionEnded,
    SessionStart,
    SessionStarted,
    State,
    WarningFrame,
    decode_client_frame,
)
from .config import capabilities
from .dialogue import Dialogue, Item
from .transport import CloseCode, Transport
from .wire import Outbox, SessionOver, frame_text, read_client, watch_idle, write_client

__all__ = ["Session"]

log = logging.getLogger("scaivoice.session")

E = TypeVar("E", bound=BaseException)

_FINISH_DEADLINE_S = 2.0


class Session:
    """A ScaiVoice protocol v1 session over ``transport`` for ``principal``.

    Args:
        engine: the opened engine (backends, features, limits).
        principal: the authenticated caller (its tenant's defaults apply).
        transport: the socket.
    """

    def __init__(self, engine: Engine, principal: Principal, transport: Transport) -> None:
        self.engine = engine
        self.principal = principal
        self.transport = transport
        self.session_id = "sess_" + uuid.uuid4().hex[:20]
        self.limits = engine.config.session
        self._record = engine.telemetry.session_opened(
            self.session_id,
            principal,
            {"stt": engine.stt.name, "llm": engine.llm.name, "tts": engine.default_tts},
        )
        self._outbox = Outbox(partial(engine.telemetry.observe, self._record))
        self._items_send, self._items_receive = trio.open_memory_channel[Item](128)
        self._last_activity = trio.current_time()
        tenant_limit = engine.config.limits_for(principal.tenant).max_session_s
        self._max_duration_s = min(
            self.limits.max_duration_s, tenant_limit or self.limits.max_duration_s
        )

    async def run(self) -> None:
        """Run the session to its end and close the socket with the matching close code.

        Client faults, backend failures and peer disconnects never escape: they end in an
        ``error`` event and / or a close code. Cancelling ``run`` (engine shutdown) closes the
        session with 1001 "going away".
        """
        session_id_var.set(self.session_id)
        outer = trio.CancelScope()
        self.engine.sessions.add(self.session_id, self.principal.tenant, outer)
        end: SessionOver | None = SessionOver(CloseCode.NORMAL, "client_ended")
        log.info("session opened for tenant %s", self.principal.tenant)
        try:
            with outer:
                try:
                    dialogue = await self._handshake()
                    with trio.move_on_after(self._max_duration_s) as duration:
                        await self._supervise(dialogue)
                    if duration.cancelled_caught:
                        end = SessionOver.fatal(
                            CloseCode.MAX_DURATION,
                            "max_duration",
                            "the session reached its maximum duration of "
                            f"{self._max_duration_s:g} s",
                        )
                except* SessionOver as group:
                    end = _first(group, SessionOver)
                except* ProtocolViolation as group:
                    violation = _first(group, ProtocolViolation)
                    end = SessionOver.fatal(violation.close_code, violation.code, str(violation))
                except* SessionClosed:
                    end = None
                except* Exception as group:
                    log.error("session crashed", exc_info=group)
                    end = SessionOver.fatal(
                        CloseCode.INTERNAL_ERROR, "internal_error", "internal server error"
                    )
            if outer.cancelled_caught:
                end = SessionOver.fatal(
                    CloseCode.GOING_AWAY, "server_shutdown", "the server is shutting down"
                )
        finally:
            self.engine.sessions.remove(self.session_id)
            await self._finish(end)

    async def _supervise(self, dialogue: Dialogue) -> None:
        """The session's tasks; the first to raise ends them all."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    read_client,
                    self.transport,
                    self._items_send,
                    self._outbox,
                    dialogue.guard,
                    max_frame_bytes=self.limits.max_frame_bytes,
                    on_activity=self._touch,
                )
            )
            nursery.start_soon(
                partial(
                    write_client,
                    self.transport,
                    self._outbox.receive,
                    timeout_s=self.limits.slow_client_timeout_s,
                )
            )
            nursery.start_soon(dialogue.run, self._items_receive)
            nursery.start_soon(
                partial(
                    watch_idle,
                    lambda: self._last_activity,
                    idle_timeout_s=self.limits.idle_timeout_s,
                )
            )

    def _touch(self, now: float) -> None:
        self._last_activity = now

    async def _handshake(self) -> Dialogue:
        """Wait for ``session.start``, agree on a config, greet; refuse what comes before it."""
        dialogue = Dialogue(
            self.engine,
            self.principal.tenant,
            self.engine.config.session_defaults(self.principal.tenant),
            self._outbox,
            self._items_send,
            partial(self.engine.telemetry.early_reply, self.principal.tenant),
            speculative_request=partial(self.engine.telemetry.speculative_request, self._record),
            permissions=self.principal.permissions,
            session_id=self.session_id,
        )
        with trio.move_on_after(self.limits.start_timeout_s) as timer:
            config, warnings = await self._wait_for_start(dialogue)
        if timer.cancelled_caught:
            raise SessionOver.fatal(CloseCode.TIMEOUT, "start_timeout", "no session.start in time")
        dialogue.apply_config(config)
        await self._send_now(
            SessionStarted(
                session_id=self.session_id,
                protocol=PROTOCOL_VERSION,
                config=dialogue.config,
                audio=AudioFormats(
                    input=AudioFormat(sample_rate=config.input_sample_rate),
                    output=AudioFormat(sample_rate=config.output_sample_rate),
                ),
                capabilities=await capabilities(self.engine, self.principal),
            )
        )
        for warning in warnings + self.engine.session_warnings(dialogue.config):
            await self._send_now(warning)
        await self._send_now(State(state="idle"))
        self._last_activity = trio.current_time()
        return dialogue

    async def _wait_for_start(self, dialogue: Dialogue) -> tuple[SessionConfig, list[WarningFrame]]:
        while True:
            message = await self.transport.receive()
            if isinstance(message, bytes):
                await self._refuse("not_started", "send session.start first")
                continue
            try:
                frame = decode_client_frame(message)
            except ProtocolViolation as exc:
                await self._refuse(exc.code, str(exc))
                continue
            if not isinstance(frame, SessionStart):
                tag = frame.__struct_config__.tag
                await self._refuse("not_started", f"{tag!r} before session.start")
                continue
            if frame.protocol != PROTOCOL_VERSION:
                raise ProtocolViolation(
                    "unsupported_protocol",
                    f"protocol {frame.protocol} is not supported; this server speaks "
                    f"{PROTOCOL_VERSION}",
                    fatal=True,
                    close_code=CloseCode.UNSUPPORTED_PROTOCOL,
                )
            try:
                return dialogue.validate(frame.config, dialogue.config)
            except ConfigError as exc:
                await self._refuse(exc.code, str(exc))

    async def _send_now(self, frame: ErrorFrame | SessionStarted | WarningFrame | State) -> None:
        """Send before the writer runs (the handshake)."""
        await self.transport.send_text(frame_text(frame))

    async def _refuse(self, code: str, message: str) -> None:
        await self._send_now(ErrorFrame(code=code, message=message, fatal=False))

    async def _finish(self, end: SessionOver | None) -> None:
        # Shielded: this runs while the session is being cancelled (drain, shutdown). The
        # goodbye frames get a deadline of their own so a stuck client cannot block the close.
        with trio.CancelScope(shield=True):
            if end is None:
                log.info("session closed by the client")
                code, reason = int(CloseCode.NORMAL), "client_closed"
            else:
                log.info("session ended: %s (%d)", end.reason, end.close_code)
                code, reason = end.close_code, end.reason
                with trio.move_on_after(_FINISH_DEADLINE_S):
                    try:
                        if end.error is not None:
                            self.engine.telemetry.observe(self._record, end.error)
                            await self.transport.send_text(frame_text(end.error))
                        await self.transport.send_text(frame_text(SessionEnded(reason=end.reason)))
                    except SessionClosed:
                        pass
            with trio.move_on_after(_FINISH_DEADLINE_S):
                await self.transport.close(code, reason)
            self.engine.telemetry.session_closed(self._record, code, reason)


def _first(group: BaseExceptionGroup[E], kind: type[E]) -> E:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(cast("BaseExceptionGroup[E]", exc), kind)
        if isinstance(exc, kind):
            return exc
    raise AssertionError("empty exception group")  # pragma: no cover
