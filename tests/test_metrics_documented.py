"""Every metric the operator guide documents exists and moves; every metric served is documented.

One real server on the test backends runs a session with a typed turn, a spoken turn (adopted
early reply), a barge-in and a failing language-model call, plus two voice-note requests, and
``/metrics`` is scraped before, during and after. The guide's metrics table is parsed, so a
metric added to the code without a row, or a row whose metric never moves, fails here.
"""

from __future__ import annotations

import io
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from scaivoice.backends.testing import TestLlm
from scaivoice.engine import (
    BackendOptions,
    BackendSpec,
    BackendUnavailable,
    LlmRequest,
    SttBackend,
    SttCapabilities,
    SttRequest,
    Transcript,
)
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from .conftest import host_with
from .test_server import running_server

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "operator-guide.md"
SPEECH = b"\x00\x10" * 1600  # 100 ms of a constant, non-silent level at 16 kHz
FAIL = "please fail"

#: Per documented metric: between which scrapes it moves, and which step of the run moves it.
#: A metric documented in the guide must be in ``MOVES`` or in ``DOES_NOT_MOVE``.
MOVES: dict[str, tuple[str, str, str]] = {
    "scaivoice_sessions_active": ("before", "during", "the session is open at the middle scrape"),
    "scaivoice_sessions_total": ("before", "after", "one session opened"),
    "scaivoice_turns_total": ("before", "after", "typed, spoken, barged-in and failed turns"),
    "scaivoice_barge_ins_total": ("before", "after", "the client interrupts a speaking turn"),
    "scaivoice_errors_total": ("before", "after", "the failing LLM call sends llm_failed"),
    "scaivoice_stage_latency_seconds": ("before", "after", "every turn observes its stages"),
    "scaivoice_backend_calls_total": ("before", "after", "stt, llm and tts calls"),
    "scaivoice_speculative_requests_total": (
        "before",
        "after",
        "the stable interim starts the reply early, and it is adopted",
    ),
    "scaivoice_backend_failures_total": ("before", "after", "the LLM raises on 'please fail'"),
    "scaivoice_early_replies_total": ("before", "after", "the spoken turn's stable interim"),
    "scaivoice_http_requests_total": ("before", "after", "the scrapes and voice notes"),
}
#: Documented metrics this run cannot move, each with the reason (none today: the run triggers
#: a failure and a barge-in on purpose so that the failure and barge-in counters move too).
DOES_NOT_MOVE: dict[str, str] = {
    "scaivoice_tool_calls_total": "this run's model calls no tool; tests/test_tools.py counts them",
}


class PausingStt(SttBackend):
    """Says ``text`` as a stable interim at the first audio (the user's pause), then final."""

    class Options(BackendOptions, frozen=True):
        text: str = "book a table"

    capabilities = SttCapabilities(streaming=True, interim_results=True, languages=("en",))

    def __init__(self, options: Options) -> None:
        self.options = options

    async def transcribe(
        self,
        request: SttRequest,
        audio: trio.MemoryReceiveChannel[bytes],
        results: trio.MemorySendChannel[Transcript],
    ) -> None:
        async with audio, results:
            stable_sent = False
            async for _ in audio:
                if not stable_sent:
                    await results.send(Transcript(self.options.text, final=False, stable=True))
                    stable_sent = True
            await results.send(Transcript(self.options.text, final=True))


class FailingLlm(TestLlm):
    """``test-llm``, except that a user message containing "please fail" fails the call."""

    async def generate(self, request: LlmRequest, deltas: trio.MemorySendChannel[str]) -> None:
        if FAIL in request.messages[-1].content:
            raise BackendUnavailable("told to fail", backend=self.name)
        await super().generate(request, deltas)


SPECS = (
    BackendSpec.for_class(PausingStt, name="pausing-stt"),
    BackendSpec.for_class(FailingLlm, name="failing-llm"),
)
CONFIG = {"backends": {"stt": "pausing-stt", "llm": "failing-llm"}}


# --------------------------------------------------------------------------- the guide


@dataclass(frozen=True, slots=True)
class Documented:
    name: str
    type: str
    labels: frozenset[str]


def _documented() -> dict[str, Documented]:
    """The rows of the guide's metrics table (section "Metrics and traces")."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## Metrics and traces", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, Documented] = {}
    for line in section.splitlines():
        if not line.startswith("| `scaivoice_"):
            continue
        name, kind, labels = (cell.strip() for cell in line.strip("|").split("|")[:3])
        rows[name.strip("`")] = Documented(
            name.strip("`"), kind, frozenset(re.findall(r"`(\w+)`", labels))
        )
    return rows


# --------------------------------------------------------------------------- the scrapes


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as Prometheus stores it: a counter with its _total
    type: str
    labels: frozenset[str]
    values: dict[tuple[str, frozenset[tuple[str, str]]], float]


def _families(exposition: str) -> dict[str, Family]:
    """The ``scaivoice_`` families of a scrape; a counter's or histogram's ``_created`` series
    belongs to it, not a family of its own."""
    parsed = list(text_string_to_metric_families(exposition))
    owners = {f.name for f in parsed if f.type in {"counter", "histogram"}}
    found: dict[str, Family] = {}
    for family in parsed:
        if not family.name.startswith("scaivoice_"):
            continue
        if family.name.endswith("_created") and family.name.removesuffix("_created") in owners:
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        found[name] = Family(
            name=name,
            type=family.type,
            labels=frozenset(k for s in samples for k in s.labels if k != "le"),
            values={(s.name, frozenset(s.labels.items())): s.value for s in samples},
        )
    return found


def _moved(before: Family | None, after: Family) -> bool:
    old = before.values if before is not None else {}
    return any(value != old.get(key, 0.0) for key, value in after.values.items())


def _value(family: Family, **labels: str) -> float:
    """The sum of the family's main series whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in family.values.items()
        if sample == family.name and set(labels.items()) <= sample_labels
    )


# --------------------------------------------------------------------------- the run


def _wav(pcm: bytes, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return buffer.getvalue()


async def _until(session: VoiceClient, done: Any) -> list[Any]:
    """Frames up to the first for which ``done(frame)`` holds (agent audio is skipped)."""
    seen: list[Any] = []
    async for event in session.events():
        if isinstance(event, AgentAudio):
            continue
        seen.append(event)
        if done(event):
            return seen
    raise AssertionError(f"the session closed early: {seen}")


def _is(kind: type[Any], **fields: Any) -> Any:
    return lambda e: isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())


async def _turn(session: VoiceClient) -> list[Any]:
    """The frames of a turn that runs to its end: up to its metrics, then up to idle."""
    frames_seen = await _until(session, _is(frames.Metrics))
    return frames_seen + await _until(session, _is(frames.State, state="idle"))


async def _conversation(session: VoiceClient) -> None:
    # A typed turn.
    await session.send_text("hello")
    await _turn(session)
    # A spoken turn: the STT's stable interim starts an early reply, the final adopts it.
    for _ in range(3):
        await session.send_audio(SPEECH)
    await session.commit()
    spoken = await _turn(session)
    assert any(isinstance(e, frames.TranscriptFrame) and e.final for e in spoken)
    # A turn the user cuts off while it speaks.
    await session.send_text("tell me everything you know about tables and chairs")
    await _until(session, _is(frames.AgentAudioStart))
    await session.interrupt()
    await _until(session, _is(frames.State, state="interrupted"))
    # A turn whose language-model call fails.
    await session.send_text(FAIL)
    failed = await _until(session, _is(frames.ErrorFrame))
    assert failed[-1].code == "llm_failed", failed


async def _voice_notes(http: httpx.AsyncClient) -> None:
    speech = await http.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Ten chars.", "response_format": "wav"}
    )
    assert speech.status_code == 200, speech.text
    transcription = await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("note.wav", _wav(SPEECH * 5), "audio/wav")},
        data={"model": "whisper-1", "response_format": "text"},
    )
    assert transcription.status_code == 200, transcription.text


async def _scrape(http: httpx.AsyncClient) -> dict[str, Family]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return _families(response.text)


async def test_every_documented_metric_exists_and_moves_and_every_metric_is_documented() -> None:
    documented = _documented()
    assert documented, "no metrics table found in the operator guide"
    assert set(MOVES) | set(DOES_NOT_MOVE) == set(documented), (
        "say in MOVES how the run moves each documented metric (or in DOES_NOT_MOVE why not)"
    )
    scrapes: dict[str, dict[str, Family]] = {}
    with trio.fail_after(30):
        async with (
            running_server(CONFIG, host=host_with(*SPECS)) as (server, _),
            httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        ):
            scrapes["before"] = await _scrape(http)
            with server.engine.telemetry.subscribe("default") as events:
                async with connect(server.ws_url) as session:
                    await _conversation(session)
                    scrapes["during"] = await _scrape(http)
                    await session.end()
                async for event in events:  # the server has accounted for the close
                    if event["event"] == "session.closed":
                        break
            await _voice_notes(http)
            scrapes["after"] = await _scrape(http)

    after = scrapes["after"]
    # The reverse direction first: nothing the server exposes is undocumented.
    assert set(after) <= set(documented), f"undocumented metrics: {set(after) - set(documented)}"
    for name, doc in documented.items():
        assert name in after, f"{name} is documented but not exposed"
        family = after[name]
        assert family.type == doc.type, f"{name}: exposed as a {family.type}, documented {doc.type}"
        if name in DOES_NOT_MOVE:
            continue
        start, end, why = MOVES[name]
        assert _moved(scrapes[start].get(name), scrapes[end][name]), f"{name} did not move: {why}"
        assert family.labels == doc.labels, f"{name}: labels {family.labels} != {doc.labels}"

    # The backend and HTTP counters count what happened, under the documented labels.
    calls, failures = (
        after["scaivoice_backend_calls_total"],
        after["scaivoice_backend_failures_total"],
    )
    assert _value(calls, kind="stt", backend="pausing-stt") == 2  # the spoken turn + a voice note
    assert _value(calls, kind="llm", backend="failing-llm") == 4  # one per turn
    assert _value(calls, kind="tts") >= 3  # a piece per speaking turn, and the voice note
    assert _value(failures, kind="llm", backend="failing-llm") == 1
    assert _value(failures, kind="stt") == _value(failures, kind="tts") == 0
    assert _value(after["scaivoice_early_replies_total"], outcome="adopted") == 1
    assert _value(after["scaivoice_sessions_active"]) == 0  # back to none once it closed
    http_requests = after["scaivoice_http_requests_total"]
    assert _value(http_requests, route="/metrics", status="200") == 2  # the third is this one
    assert _value(http_requests, route="/v1/audio/speech", status="200") == 1


def test_the_guide_table_parses() -> None:
    rows = _documented()
    assert rows["scaivoice_backend_calls_total"] == Documented(
        "scaivoice_backend_calls_total", "counter", frozenset({"kind", "backend"})
    )
