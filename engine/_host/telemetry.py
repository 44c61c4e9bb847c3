"""What every session is doing: records for the admin API, Prometheus metrics, live events,
and (optionally) OpenTelemetry traces.

Telemetry is derived from the protocol frames a session sends (states, metrics, errors,
agent text) plus its opening and closing, so it always agrees with what clients saw. It is
synchronous and does no I/O: live-event subscribers get events through bounded memory channels
(a subscriber too slow to keep up loses events and is told how many).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ..frames import (
    AgentTextDone,
    ErrorFrame,
    Metrics,
    ServerFrame,
    State,
    TranscriptFrame,
    WarningFrame,
)
from .auth import Principal

__all__ = ["SessionRecord", "Telemetry"]

_STAGES = (
    ("stt", "stt_ms"),
    ("llm_first_token", "llm_first_token_ms"),
    ("tts_first_audio", "tts_first_audio_ms"),
    ("end_of_turn_to_first_audio", "end_of_turn_to_first_audio_ms"),
    ("barge_in", "barge_in_ms"),
)
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0, 6.0, 12.0)


@dataclass(slots=True)
class SessionRecord:
    """One session as the admin API shows it."""

    session_id: str
    tenant: str
    key_id: str
    started_at: float
    backends: dict[str, str]
    keep_transcripts: bool
    state: str = "idle"
    ended_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    turns: int = 0
    interruptions: int = 0
    speculative: dict[str, int] = field(
        default_factory=lambda: {"started": 0, "adopted": 0, "discarded": 0}
    )
    """Speculative backend requests (at the user's pause): started, adopted, discarded."""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    turn_metrics: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    transcript: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))

    @property
    def live(self) -> bool:
        return self.ended_at is None

    def summary(self, now: float) -> dict[str, Any]:
        end = self.ended_at if self.ended_at is not None else now
        return {
            "id": self.session_id,
            "tenant": self.tenant,
            "status": "live" if self.live else "ended",
            "state": self.state,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": round(end - self.started_at, 3),
            "turns": self.turns,
            "interruptions": self.interruptions,
            "speculative_requests": dict(self.speculative),
            "errors": len(self.errors),
            "close_code": self.close_code,
        }

    def detail(self, now: float) -> dict[str, Any]:
        doc = self.summary(now)
        doc |= {
            "key_id": self.key_id,
            "backends": self.backends,
            "close_reason": self.close_reason,
            "error_codes": list(self.errors),
            "warning_codes": list(self.warnings),
            "turn_metrics": list(self.turn_metrics),
        }
        if self.keep_transcripts:
            doc["transcript"] = list(self.transcript)
        return doc


class Telemetry:
    """Session records, metrics and live events of one engine.

    Args:
        recent_sessions: how many ended sessions stay visible to the admin API.
        expose_transcripts: tenants whose transcripts and agent text may be shown to their
            admins (never to anyone else).
        tracer: an OpenTelemetry tracer, or ``None`` for no traces.
    """

    def __init__(
        self,
        *,
        recent_sessions: int = 200,
        expose_transcripts: frozenset[str] = frozenset(),
        tracer: Any = None,
    ) -> None:
        self.expose_transcripts = expose_transcripts
        self.tracer = tracer
        self.replica: str | None = None
        """This process's name among replicas (``[cluster]``): events then carry it."""
        self.forward: Callable[[str, dict[str, Any]], None] | None = None
        """Called with (tenant, event) for every event (``[cluster]``: shared with the other
        replicas); synchronous, no I/O."""
        self.live: dict[str, SessionRecord] = {}
        self.recent: deque[SessionRecord] = deque(maxlen=recent_sessions)
        self._subscribers: dict[int, tuple[str, trio.MemorySendChannel[dict[str, Any]]]] = {}
        self._dropped: dict[int, int] = {}
        self._spans: dict[str, Any] = {}
        self._processes_dir: str | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_active = Gauge(
            "scaivoice_sessions_active",
            "Live sessions",
            ["tenant"],
            registry=r,
            multiprocess_mode="livesum",  # workers: the live ones' sum (a dead one's drop out)
        )
        self.sessions_total = Counter(
            "scaivoice_sessions", "Sessions opened", ["tenant"], registry=r
        )
        self.turns_total = Counter("scaivoice_turns", "Agent turns", ["tenant"], registry=r)
        self.barge_ins_total = Counter(
            "scaivoice_barge_ins", "Agent turns cut off by the user", ["tenant"], registry=r
        )
        self.errors_total = Counter(
            "scaivoice_errors", "Error events sent, by code", ["code"], registry=r
        )
        self.stage_latency = Histogram(
            "scaivoice_stage_latency_seconds",
            "Per-turn stage latencies",
            ["stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.backend_calls = Counter(
            "scaivoice_backend_calls",
            "Streaming backend calls (stt, llm, tts) that ended, cancelled ones included",
            ["kind", "backend"],
            registry=r,
        )
        self.backend_failures = Counter(
            "scaivoice_backend_failures",
            "Backend calls that ended with a backend error",
            ["kind", "backend"],
            registry=r,
        )
        self.early_replies = Counter(
            "scaivoice_early_replies",
            "Replies started at the user's pause, by outcome: adopted by the agent turn, "
            "withdrawn (the user spoke on) or mismatched (the final transcript differed)",
            ["tenant", "outcome"],
            registry=r,
        )
        self.speculative_requests = Counter(
            "scaivoice_speculative_requests",
            "Backend requests made speculatively at the user's pause, by kind (stt, llm, tts) "
            "and outcome (adopted, discarded)",
            ["kind", "outcome"],
            registry=r,
        )
        self.tool_calls = Counter(
            "scaivoice_tool_calls",
            "Tool calls the model made, by who ran them (client, server) and how they ended",
            ["source", "outcome"],
            registry=r,
        )
        self.http_requests = Counter(
            "scaivoice_http_requests",
            "HTTP API responses, by route and status (WebSocket sessions are not counted)",
            ["route", "status"],
            registry=r,
        )

    # ---------------------------------------------------------------- sessions

    def session_opened(
        self, session_id: str, principal: Principal, backends: dict[str, str]
    ) -> SessionRecord:
        record = SessionRecord(
            session_id=session_id,
            tenant=principal.tenant,
            key_id=principal.key_id,
            started_at=time.time(),
            backends=backends,
            keep_transcripts=principal.tenant in self.expose_transcripts,
        )
        self.live[session_id] = record
        self.sessions_active.labels(record.tenant).inc()
        self.sessions_total.labels(record.tenant).inc()
        if self.tracer is not None:
            self._spans[session_id] = self.tracer.start_span(
                "scaivoice.session",
                attributes={"scaivoice.session_id": session_id, "scaivoice.tenant": record.tenant},
            )
        self._publish(record, {"event": "session.opened", "backends": backends})
        return record

    def session_closed(self, record: SessionRecord, close_code: int, reason: str) -> None:
        record.ended_at = time.time()
        record.close_code, record.close_reason = close_code, reason
        self.live.pop(record.session_id, None)
        self.recent.append(record)
        self.sessions_active.labels(record.tenant).dec()
        span = self._spans.pop(record.session_id, None)
        if span is not None:
            span.set_attribute("scaivoice.turns", record.turns)
            span.set_attribute("scaivoice.close_code", close_code)
            span.end()
        self._publish(
            record, {"event": "session.closed", "close_code": close_code, "reason": reason}
        )

    def observe(self, record: SessionRecord, frame: ServerFrame) -> None:
        """Account for a frame the session sent."""
        match frame:
            case State(state=state, turn_id=turn_id):
                record.state = state
                if state == "interrupted":
                    record.interruptions += 1
                    self.barge_ins_total.labels(record.tenant).inc()
                self._publish(record, {"event": "state", "state": state, "turn_id": turn_id})
            case Metrics():
                self._turn_metrics(record, frame)
            case ErrorFrame(code=code):
                record.errors.append(code)
                self.errors_total.labels(code).inc()
                self._publish(record, {"event": "error", "code": code, "fatal": frame.fatal})
            case WarningFrame(code=code):
                record.warnings.append(code)
                self._publish(record, {"event": "warning", "code": code})
            case TranscriptFrame(final=True, turn_id=turn_id, text=text):
                if record.keep_transcripts:
                    record.transcript.append({"turn_id": turn_id, "role": "user", "text": text})
                    self._publish(record, {"event": "transcript", "turn_id": turn_id, "text": text})
            case AgentTextDone(turn_id=turn_id, text=text, heard_text=heard):
                if record.keep_transcripts:
                    entry = {"turn_id": turn_id, "role": "agent", "text": text, "heard_text": heard}
                    record.transcript.append(entry)
                    self._publish(record, {"event": "agent_text", **entry})
            case _:
                pass

    def _turn_metrics(self, record: SessionRecord, metrics: Metrics) -> None:
        record.turns += 1
        self.turns_total.labels(record.tenant).inc()
        entry: dict[str, Any] = {"turn_id": metrics.turn_id}
        for stage, attribute in _STAGES:
            value = getattr(metrics, attribute)
            entry[attribute] = value
            if value is not None:
                self.stage_latency.labels(stage).observe(value / 1000.0)
        record.turn_metrics.append(entry)
        self._trace_turn(record, metrics)
        self._publish(record, {"event": "turn", **entry})

    def _trace_turn(self, record: SessionRecord, metrics: Metrics) -> None:
        """A turn span with stt / llm / tts child spans, placed from the turn's latencies."""
        parent = self._spans.get(record.session_id)
        if self.tracer is None or parent is None or metrics.total_ms is None:
            return
        from opentelemetry import trace

        end = time.time_ns()
        start = end - int(metrics.total_ms * 1e6)
        context = trace.set_span_in_context(parent)
        turn = self.tracer.start_span(
            "scaivoice.turn",
            context=context,
            start_time=start,
            attributes={"scaivoice.turn_id": metrics.turn_id},
        )
        turn_context = trace.set_span_in_context(turn)
        cursor = start
        for name, value in (
            ("scaivoice.stt", metrics.stt_ms),
            ("scaivoice.llm", metrics.llm_first_token_ms),
            ("scaivoice.tts", metrics.tts_first_audio_ms),
        ):
            if value is None:
                continue
            stage_end = cursor + int(value * 1e6)
            span = self.tracer.start_span(name, context=turn_context, start_time=cursor)
            span.end(end_time=stage_end)
            cursor = stage_end
        turn.end(end_time=end)

    # ---------------------------------------------------------------- backends

    def backend_call(self, kind: str, backend: str, *, failed: bool) -> None:
        """Count a backend call that ended (a ``BackendCallCounter``); ``failed`` if it ended
        with a backend error."""
        self.backend_calls.labels(kind, backend).inc()
        if failed:
            self.backend_failures.labels(kind, backend).inc()

    def early_reply(self, tenant: str, outcome: str) -> None:
        """Count an early reply's outcome (``adopted``, ``withdrawn`` or ``mismatched``)."""
        self.early_replies.labels(tenant, outcome).inc()

    def speculative_request(self, record: SessionRecord, kind: str, outcome: str) -> None:
        """Count a speculative request that ended: ``kind`` ``stt``, ``llm`` or ``tts``;
        ``outcome`` ``adopted`` or ``discarded``."""
        self.speculative_requests.labels(kind, outcome).inc()
        record.speculative["started"] += 1
        record.speculative[outcome] += 1

    def tool_call(self, source: str, outcome: str) -> None:
        """Count a tool call that ended: ``source`` ``client`` or ``server``; ``outcome``
        ``answered``, ``failed``, ``timeout`` or ``interrupted``."""
        self.tool_calls.labels(source, outcome).inc()

    # ---------------------------------------------------------------- HTTP

    def http_request(self, route: str, status: int) -> None:
        """Count an HTTP response: ``route`` is the route's path (not the request's, so an
        id in the path does not make a new series), ``status`` its status code."""
        self.http_requests.labels(route, str(status)).inc()

    # ---------------------------------------------------------------- queries

    def sessions(self, tenant: str) -> list[SessionRecord]:
        """The tenant's live sessions, then its recent ones, newest first."""
        live = [r for r in self.live.values() if r.tenant == tenant]
        recent = [r for r in reversed(self.recent) if r.tenant == tenant]
        return sorted(live, key=lambda r: -r.started_at) + recent

    def find(self, tenant: str, session_id: str) -> SessionRecord | None:
        """The tenant's session ``session_id`` (``None`` for another tenant's: no leak)."""
        record = self.live.get(session_id) or next(
            (r for r in self.recent if r.session_id == session_id), None
        )
        return record if record is not None and record.tenant == tenant else None

    def prometheus(self) -> bytes:
        """The metrics in Prometheus' text format (of every worker, see
        :meth:`aggregate_processes`)."""
        if self._processes_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._processes_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def aggregate_processes(self, directory: str) -> None:
        """Serve the metrics of every process writing to ``directory`` from now on.

        For ``scaivoice serve --workers N``: each worker was started with
        ``PROMETHEUS_MULTIPROC_DIR=directory``, so prometheus_client keeps its values in files
        there; :meth:`prometheus` sums the counters and histograms of every worker (those that
        exited included) and the live sessions of the live ones.
        """
        self._processes_dir = directory

    # ---------------------------------------------------------------- live events

    @contextmanager
    def subscribe(
        self, tenant: str, capacity: int = 256
    ) -> Iterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        """Live events of ``tenant``'s sessions, while the block runs."""
        send, receive = trio.open_memory_channel[dict[str, Any]](capacity)
        token = id(send)
        self._subscribers[token] = (tenant, send)
        try:
            yield receive
        finally:
            del self._subscribers[token]
            self._dropped.pop(token, None)
            send.close()

    def _publish(self, record: SessionRecord, event: dict[str, Any]) -> None:
        if not self._subscribers and self.forward is None:
            return
        event = {"session_id": record.session_id, "time": time.time(), **event}
        if self.replica is not None:
            event["replica"] = self.replica
        if self.forward is not None:
            self.forward(record.tenant, event)
        self.deliver(record.tenant, event)

    def deliver(self, tenant: str, event: dict[str, Any]) -> None:
        """Hand ``event`` to the live-event subscribers of ``tenant`` (another replica's
        events come in here)."""
        for token, (subscribed, send) in list(self._subscribers.items()):
            if subscribed != tenant:
                continue
            dropped = self._dropped.get(token, 0)
            try:
                if dropped:
                    send.send_nowait({"event": "dropped", "count": dropped, "time": time.time()})
                    self._dropped[token] = 0
                send.send_nowait(event)
            except trio.WouldBlock:
                self._dropped[token] = self._dropped.get(token, 0) + 1
            except trio.BrokenResourceError:
                pass
