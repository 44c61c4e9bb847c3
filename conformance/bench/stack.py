"""``scaivoice bench stack``: end-of-speech latency, real-time factors and memory, embedded stack.

Three parts, each printed next to its target where there is one:

1. **Real-time factors, in-process.** The test sentences are rendered once by hibari (voice
   heart, seed 0) and resampled to 16 kHz; they are the user's utterances below. The same
   sentences give the TTS real-time factor (synthesis time / audio duration, through the
   ``hibari`` backend) and the STT real-time factor (final decode time / audio duration, through
   the ``whisper`` backend with interims off), both as a live session decodes (no word timings:
   whisper's short window) and with word timings (as voice-note transcripts ask). Both backends are opened as the engine opens
   them: from the plugin host's backend specs.
2. **Memory.** ``scaivoice serve`` is started in its own process on loopback with stt
   ``whisper``, llm ``llama-cpp``, tts ``hibari`` (or ``--url`` is used, without this part).
   Its resident set (``VmRSS``) is read after start-up, with one idle session open and with ten
   (``vad_enabled``, a little silence streamed); the cost of one more session is
   (RSS10 - RSS1) / 9.
3. **Turns.** One session with ``vad_enabled``, so the server's Silero VAD ends each user turn.
   Each turn streams an utterance in real time in 20 ms frames, then silence in real time (at
   least 1.5 s, and until the turn has ended), and waits for the reply to finish (``idle``).
   Latency is end of speech -> first agent audio byte, at the client: from sending the frame
   holding the utterance's last non-silent sample (above -40 dBFS) to receiving the first binary
   frame. It is split into the VAD hang (end of speech -> ``state: thinking``), the ``metrics``
   frame's STT, LLM first token and TTS first audio, the wait from the first token to the
   first speakable piece (estimated at the client from the ``agent.text`` deltas), and the rest.
   The share of the CPUs that other processes used meanwhile is printed too: on a small
   machine, anything else running shows up in every figure.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np
import trio
from prometheus_client.parser import text_string_to_metric_families

from scaivoice.engine import (
    AudioChunk,
    Backend,
    BackendKind,
    PluginHost,
    ScaiVoiceError,
    SentenceChunker,
    SttBackend,
    SttRequest,
    Transcript,
    TtsBackend,
    TtsRequest,
    resample_pcm16,
)
from scaivoice.engine.client import AgentAudio, VoiceClient, connect, frames

from .turns import _free_port

__all__ = ["run_stack_benchmark"]

SENTENCES = (
    "The meeting is on March 3rd at 4:30 pm.",
    "Hello, my name is Alice and I would like to book a table for two people.",
    "The weather today is sunny with a high of 72 degrees.",
    "Please remind me to buy milk, eggs, and bread on the way home.",
    "Your order number is 58 and it should arrive on Friday, June 14th.",
)
SYSTEM_PROMPT = "You are a voice assistant. Answer in one short sentence."
MAX_TOKENS = 40

_RATE = 16000
_TTS_RATE = 24000
_FRAME_MS = 20
_FRAME_BYTES = _RATE * _FRAME_MS // 1000 * 2
_SPEECH_LEVEL = 328  # |sample| above this (-40 dBFS) is speech, not silence
_TRAILING_SILENCE_S = 1.5
_MAX_SILENCE_S = 15.0
_TURN_TIMEOUT_S = 90.0
_START_TIMEOUT_S = 300.0
_IDLE_SESSIONS = 10
_SETTLE_S = 1.5
_TIMING_REPEATS = 3
_TARGET_P50_MS = 800.0
_TARGET_SESSION_MB = 5.0
_SESSION_CONFIG: Mapping[str, Any] = {"vad_enabled": True, "system_prompt": SYSTEM_PROMPT}


@dataclass(frozen=True, slots=True)
class Utterance:
    """A user utterance: 16 kHz PCM16 mono, ending with the frame of its last speech sample."""

    text: str
    pcm: bytes

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / _RATE

    def frames(self) -> list[bytes]:
        """The utterance in 20 ms frames."""
        return [self.pcm[i : i + _FRAME_BYTES] for i in range(0, len(self.pcm), _FRAME_BYTES)]


@dataclass(frozen=True, slots=True)
class BackendTimings:
    """In-process real-time factors over the sentences."""

    tts_rtf: list[float]
    tts_first_chunk_ms: list[float]
    stt_rtf: list[float]
    """Live sessions' final decode: no word timings (whisper's short window)."""
    stt_words_rtf: list[float]
    """With word timings, as voice-note transcripts ask (the full 30 s window)."""
    transcripts: list[str]


@dataclass(slots=True)
class TurnRecord:
    """What the client saw of one turn, in seconds of ``trio.current_time()``."""

    text: str
    speech_end: float = math.nan
    thinking: float | None = None
    first_text: float | None = None
    last_text: float | None = None
    first_piece: float | None = None
    first_audio: float | None = None
    metrics: frames.Metrics | None = None
    transcript: str = ""
    reply: str = ""
    errors: list[str] = field(default_factory=list)
    chunker: SentenceChunker = field(default_factory=SentenceChunker)

    @property
    def complete(self) -> bool:
        """The turn produced audio, and every figure of the split is known."""
        m = self.metrics
        return (
            self.thinking is not None
            and self.first_audio is not None
            and self.first_text is not None
            and self.first_piece is not None
            and m is not None
            and None not in (m.stt_ms, m.llm_first_token_ms, m.tts_first_audio_ms)
        )


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """Resident set sizes of the server process, in MiB."""

    after_start: float
    one_session: float
    ten_sessions: float

    @property
    def per_session(self) -> float:
        return (self.ten_sessions - self.one_session) / (_IDLE_SESSIONS - 1)


# =============================================================================== entry point


def run_stack_benchmark(
    *, turns: int, url: str | None, api_key: str | None, min_silence_ms: int | None
) -> int:
    """Run the benchmark and print its figures. Returns a process exit code."""
    host = PluginHost()
    host.load_entry_points(include_third_party=False)
    utterances, timings = trio.run(_measure_backends, host)
    _print_backends(utterances, timings)
    if url is not None:
        records = _turns_remote(url, api_key, utterances, turns)
    else:
        url, records = _turns_local(api_key, utterances, turns, min_silence_ms)
    return _print_turns(records, url, min_silence_ms)


def _turns_remote(
    url: str, api_key: str | None, utterances: Sequence[Utterance], turns: int
) -> list[TurnRecord]:
    """The turns against a server given by ``--url`` (its memory is not ours to read)."""
    print("memory: not measured (--url: the server process is not ours)", flush=True)
    before = _cpu_sample(None)
    records = trio.run(_run_turns, url, api_key, utterances, turns)
    _print_cpu(before, _cpu_sample(None), server=False)
    return records


def _turns_local(
    api_key: str | None, utterances: Sequence[Utterance], turns: int, min_silence_ms: int | None
) -> tuple[str, list[TurnRecord]]:
    """Start a server, measure its memory, then the turns -> (session URL, records)."""
    with _server(_config_text(min_silence_ms)) as (url, pid):
        _print_memory(trio.run(_measure_memory, url, api_key, pid))
        before = _cpu_sample(pid)
        records = trio.run(_run_turns, url, api_key, utterances, turns)
        _print_cpu(before, _cpu_sample(pid), server=True)
        print(
            f"server RSS after the turns: {_rss_mib(pid):.1f} MiB "
            f"(peak {_rss_mib(pid, 'VmHWM'):.1f} MiB)"
        )
        _print_early_replies(url)
    return url, records


def _print_early_replies(session_url: str) -> None:
    """How the server's early replies ended (from its Prometheus metrics)."""
    metrics_url = session_url.replace("ws://", "http://", 1).removesuffix("/v1/session")
    try:
        text = httpx.get(metrics_url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "scaivoice_early_replies_total":
                outcome = sample.labels["outcome"]
                counts[outcome] = counts.get(outcome, 0.0) + sample.value
    summary = ", ".join(f"{name} {int(n)}" for name, n in sorted(counts.items())) or "none"
    print(f"replies started at the user's pause (early replies): {summary}")


def _config_text(min_silence_ms: int | None) -> str:
    """The server's TOML: the embedded stack, short replies, optionally the VAD hang time."""
    text = (
        '[backends]\nstt = "whisper"\nllm = "llama-cpp"\ntts = "hibari"\n\n'
        f"[backends.options.llama-cpp]\nmax_tokens = {MAX_TOKENS}\nseed = 0\n"
    )
    if min_silence_ms is not None:
        text += f"\n[backends.feature_options.silero-vad]\nmin_silence_ms = {min_silence_ms}\n"
    return text


# =============================================================================== backends


def _open_backend(
    host: PluginHost, kind: BackendKind, name: str, options: Mapping[str, Any]
) -> Backend:
    """An unopened backend, created as the engine creates it."""
    specs = host.backend_specs(kind)
    if name not in specs:
        raise ScaiVoiceError(f"no {kind} backend named {name!r} is installed")
    return specs[name].factory(options)


async def _measure_backends(host: PluginHost) -> tuple[list[Utterance], BackendTimings]:
    """Render the utterances with hibari, then time hibari and whisper on them."""
    tts = _open_backend(host, "tts", "hibari", {"seed": 0})
    assert isinstance(tts, TtsBackend)
    async with tts:
        rendered = [await _synthesize(tts, text) for text in SENTENCES]
        tts_runs = [await _time_tts(tts, text) for text in SENTENCES]
    utterances = [
        _utterance(text, pcm) for text, (pcm, _, _) in zip(SENTENCES, rendered, strict=True)
    ]
    stt = _open_backend(host, "stt", "whisper", {"interim_interval_ms": 0})
    assert isinstance(stt, SttBackend)
    async with stt:
        stt_runs = [await _time_stt(stt, u, word_timings=False) for u in utterances]
        stt_words_runs = [await _time_stt(stt, u, word_timings=True) for u in utterances]
    return utterances, BackendTimings(
        tts_rtf=[rtf for rtf, _ in tts_runs],
        tts_first_chunk_ms=[first for _, first in tts_runs],
        stt_rtf=[rtf for rtf, _ in stt_runs],
        stt_words_rtf=[rtf for rtf, _ in stt_words_runs],
        transcripts=[text for _, text in stt_runs],
    )


async def _synthesize(tts: TtsBackend, text: str) -> tuple[bytes, float, float]:
    """Synthesise ``text`` -> (24 kHz PCM16, seconds taken, seconds to the first chunk)."""
    send, receive = trio.open_memory_channel[AudioChunk](math.inf)
    start = time.perf_counter()
    first: float | None = None
    pieces: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tts.synthesize, TtsRequest(text=text), send)
        async with receive:
            async for chunk in receive:
                first = first if first is not None else time.perf_counter() - start
                pieces.append(chunk.pcm)
    return b"".join(pieces), time.perf_counter() - start, first or 0.0


async def _time_tts(tts: TtsBackend, text: str) -> tuple[float, float]:
    """Median (real-time factor, first-chunk ms) of a few syntheses of ``text``."""
    runs = [await _synthesize(tts, text) for _ in range(_TIMING_REPEATS)]
    duration_s = len(runs[0][0]) / 2 / _TTS_RATE
    return (
        statistics.median(seconds / duration_s for _, seconds, _ in runs),
        statistics.median(first * 1000 for _, _, first in runs),
    )


async def _transcribe(stt: SttBackend, pcm: bytes, word_timings: bool) -> tuple[str, float]:
    """One final decode of ``pcm`` (16 kHz) -> (text, seconds taken)."""
    audio_send, audio_receive = trio.open_memory_channel[bytes](1)
    results_send, results_receive = trio.open_memory_channel[Transcript](math.inf)
    await audio_send.send(pcm)
    audio_send.close()
    start = time.perf_counter()
    request = SttRequest(sample_rate=_RATE, language="en", word_timings=word_timings)
    await stt.transcribe(request, audio_receive, results_send)
    seconds = time.perf_counter() - start
    finals = [t.text async for t in results_receive if t.final]
    return (finals[-1] if finals else ""), seconds


async def _time_stt(
    stt: SttBackend, utterance: Utterance, *, word_timings: bool
) -> tuple[float, str]:
    """Median real-time factor of a few decodes of the utterance, and its transcript."""
    runs = [await _transcribe(stt, utterance.pcm, word_timings) for _ in range(_TIMING_REPEATS)]
    return statistics.median(s for _, s in runs) / utterance.duration_s, runs[0][0]


def _utterance(text: str, pcm_24k: bytes) -> Utterance:
    """Resample to 16 kHz and cut after the 20 ms frame holding the last speech sample."""
    pcm = resample_pcm16(pcm_24k, _TTS_RATE, _RATE)
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)) > _SPEECH_LEVEL)
    if loud.size == 0:
        raise ScaiVoiceError(f"hibari rendered silence for {text!r}")
    end = (int(loud[-1]) * 2 // _FRAME_BYTES + 1) * _FRAME_BYTES
    return Utterance(text, pcm[:end])


# =============================================================================== the server


@contextmanager
def _server(config_text: str) -> Iterator[tuple[str, int]]:
    """Run ``scaivoice serve`` on a free loopback port; yield (session URL, process id)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(config_text)
        port = _free_port()
        env = {**os.environ, "SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD": "1"}
        command = [sys.executable, "-m", "scaivoice.engine.cli", "serve"]
        command += ["--config", str(config), "--port", str(port)]
        with open(Path(tmp) / "server.log", "w+") as log:
            server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_healthy(f"http://127.0.0.1:{port}/health", server, log)
                yield f"ws://127.0.0.1:{port}/v1/session", server.pid
            finally:
                server.terminate()
                server.wait(timeout=60)


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: TextIO) -> None:
    """Wait for ``/health`` to answer 200 (loading the models takes a while).

    Raises:
        ScaiVoiceError: the server exited or never became healthy (with its log's tail).
    """
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    log.seek(0)
    tail = "".join(log.readlines()[-20:])
    raise ScaiVoiceError(f"the benchmark server did not start:\n{tail}")


def _rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """A memory field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise ScaiVoiceError(f"/proc/{pid}/status has no {field_name}")


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU time so far, in clock ticks: the machine's busy and total, the server's, ours."""

    busy: int
    total: int
    server: int
    client: int


def _cpu_sample(server_pid: int | None) -> CpuSample:
    """Read ``/proc/stat`` and the two processes' ``stat`` files."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    server = _process_ticks(server_pid) if server_pid is not None else 0
    return CpuSample(sum(ticks) - idle, sum(ticks), server, _process_ticks(os.getpid()))


def _process_ticks(pid: int) -> int:
    """User + system CPU time of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


# =============================================================================== memory


async def _measure_memory(url: str, api_key: str | None, pid: int) -> MemoryFigures:
    """RSS after start-up, with one idle session open and with ten."""
    await trio.sleep(_SETTLE_S)
    after_start = _rss_mib(pid)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(_idle_session(url, api_key))
        await trio.sleep(_SETTLE_S)
        one = _rss_mib(pid)
        for _ in range(_IDLE_SESSIONS - 1):
            await stack.enter_async_context(_idle_session(url, api_key))
        await trio.sleep(_SETTLE_S)
        ten = _rss_mib(pid)
    return MemoryFigures(after_start=after_start, one_session=one, ten_sessions=ten)


@asynccontextmanager
async def _idle_session(url: str, api_key: str | None) -> AsyncIterator[None]:
    """A session with ``vad_enabled`` that has streamed 200 ms of silence and stays idle."""
    async with connect(url, api_key=api_key, config=_SESSION_CONFIG) as session:
        await _until_idle(session)
        await session.stream_pcm(bytes(_RATE * 2 // 5), realtime=False, commit=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_discard_events, session)
            yield
            nursery.cancel_scope.cancel()


async def _discard_events(session: VoiceClient) -> None:
    async for _ in session.events():
        pass


# =============================================================================== turns


async def _run_turns(
    url: str, api_key: str | None, utterances: Sequence[Utterance], turns: int
) -> list[TurnRecord]:
    """Run ``turns`` spoken turns over one session, cycling through the utterances."""
    records: list[TurnRecord] = []
    async with connect(url, api_key=api_key, config=_SESSION_CONFIG) as session:
        await _until_idle(session)
        for index in range(turns):
            with trio.fail_after(_TURN_TIMEOUT_S):
                record = await _one_turn(session, utterances[index % len(utterances)])
            records.append(record)
            _print_turn(index + 1, record)
        await session.end()
    return records


async def _until_idle(session: VoiceClient) -> None:
    """Read frames until ``state: idle``.

    Raises:
        ScaiVoiceError: the server has no VAD (``feature_unavailable``) or reported an error.
    """
    while True:
        event = await session.receive()
        if isinstance(event, frames.WarningFrame) and event.code == "feature_unavailable":
            raise ScaiVoiceError(f"the server cannot end turns by itself: {event.message}")
        if isinstance(event, frames.ErrorFrame):
            raise ScaiVoiceError(f"the server reported {event.code}: {event.message}")
        if isinstance(event, frames.State) and event.state == "idle":
            return


async def _one_turn(session: VoiceClient, utterance: Utterance) -> TurnRecord:
    """Speak ``utterance`` and follow the reply until the session is idle again."""
    record = TurnRecord(utterance.text)
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_speak, session, utterance, record, ended)
        await _follow_reply(session, record, ended)
    return record


async def _speak(
    session: VoiceClient, utterance: Utterance, record: TurnRecord, ended: trio.Event
) -> None:
    """Stream the utterance, then silence: 1.5 s at least, and until the user turn has ended."""
    silence = bytes(_FRAME_BYTES)
    start = trio.current_time()
    index = 0
    for index, frame in enumerate(utterance.frames()):
        await trio.sleep_until(start + index * _FRAME_MS / 1000)
        await session.send_audio(frame)
    record.speech_end = trio.current_time()
    silent_s = 0.0
    while silent_s < _TRAILING_SILENCE_S or not ended.is_set():
        if silent_s >= _MAX_SILENCE_S:
            return
        index += 1
        silent_s += _FRAME_MS / 1000
        await trio.sleep_until(start + index * _FRAME_MS / 1000)
        await session.send_audio(silence)


async def _follow_reply(session: VoiceClient, record: TurnRecord, ended: trio.Event) -> None:
    """Record the turn's events until ``state: idle`` follows ``state: thinking``."""
    while True:
        event = await session.receive()
        now = trio.current_time()
        if isinstance(event, frames.State):
            if event.state == "thinking" and record.thinking is None:
                record.thinking = now
                ended.set()
            elif event.state == "idle" and record.thinking is not None:
                return
        else:
            _note(record, event, now)


def _note(record: TurnRecord, event: frames.ServerFrame | AgentAudio, now: float) -> None:
    """Record the times and texts of one turn event."""
    if isinstance(event, AgentAudio):
        if record.first_audio is None:
            record.first_audio = now
            # No sentence was complete: the engine spoke the text flushed at the reply's end.
            record.first_piece = record.first_piece or record.last_text
    elif isinstance(event, frames.AgentText):
        record.first_text = record.first_text or now
        record.last_text = now
        if record.first_piece is None and record.chunker.feed(event.delta):
            record.first_piece = now
    elif isinstance(event, frames.AgentTextDone):
        record.reply = event.text
    elif isinstance(event, frames.TranscriptFrame) and event.final:
        record.transcript = event.text
    elif isinstance(event, frames.Metrics):
        record.metrics = event
    elif isinstance(event, frames.ErrorFrame | frames.WarningFrame):
        record.errors.append(f"{event.code}: {event.message}")


# =============================================================================== figures


@dataclass(frozen=True, slots=True)
class _Split:
    """One complete turn's latency and its parts, in milliseconds."""

    total: float
    hang: float
    stt: float
    llm: float
    piece: float
    tts: float

    @property
    def rest(self) -> float:
        return self.total - self.hang - self.stt - self.llm - self.piece - self.tts


def _split(record: TurnRecord) -> _Split:
    """The parts of a complete turn's latency."""
    m = record.metrics
    assert record.complete and m is not None
    assert record.thinking is not None and record.first_audio is not None
    assert record.first_text is not None and record.first_piece is not None
    return _Split(
        total=(record.first_audio - record.speech_end) * 1000,
        hang=(record.thinking - record.speech_end) * 1000,
        stt=float(m.stt_ms or 0.0),
        llm=float(m.llm_first_token_ms or 0.0),
        piece=(record.first_piece - record.first_text) * 1000,
        tts=float(m.tts_first_audio_ms or 0.0),
    )


def _print_backends(utterances: Sequence[Utterance], timings: BackendTimings) -> None:
    seconds = sum(u.duration_s for u in utterances)
    print(
        f"utterances: {len(utterances)} sentences by hibari (heart, seed 0), {seconds:.1f} s, "
        "16 kHz"
    )
    print(
        "in-process real-time factors (compute time / audio duration; median of "
        f"{_TIMING_REPEATS} runs a sentence):"
    )
    _print_stat("  TTS hibari: real-time factor", timings.tts_rtf, "", digits=3)
    _print_stat("  TTS hibari: first chunk", timings.tts_first_chunk_ms, " ms")
    _print_stat(
        "  STT whisper (a live session's final decode): real-time factor",
        timings.stt_rtf,
        "",
        digits=3,
    )
    _print_stat(
        "  STT whisper (final decode with word timings, as voice notes): real-time factor",
        timings.stt_words_rtf,
        "",
        digits=3,
    )
    for utterance, heard in zip(utterances, timings.transcripts, strict=True):
        print(f"    {utterance.text!r} -> {heard!r}")
    sys.stdout.flush()


def _print_memory(memory: MemoryFigures) -> None:
    verdict = "ok" if memory.per_session <= _TARGET_SESSION_MB else "OVER TARGET"
    print(
        "server resident memory (VmRSS):\n"
        f"  after start-up           {memory.after_start:8.1f} MiB\n"
        f"  1 idle session open      {memory.one_session:8.1f} MiB\n"
        f"  {_IDLE_SESSIONS} idle sessions open    {memory.ten_sessions:8.1f} MiB\n"
        f"  per additional session   {memory.per_session:8.2f} MiB   "
        f"target <= {_TARGET_SESSION_MB:g} MB: {verdict}",
        flush=True,
    )


def _print_cpu(before: CpuSample, after: CpuSample, *, server: bool) -> None:
    """How the machine's CPU time was spent during the turns (others skew the latencies)."""
    total = max(after.total - before.total, 1)
    cores = os.cpu_count() or 1
    ours = after.client - before.client
    theirs = after.server - before.server
    others = after.busy - before.busy - ours - theirs
    parts = [("server", theirs)] if server else []
    parts += [
        ("this client", ours),
        ("other processes" + ("" if server else ", the server's among them"), others),
    ]
    share = ", ".join(f"{name} {100 * ticks / total:.0f}%" for name, ticks in parts)
    print(f"CPU during the turns, share of {cores} cores: {share}")
    if server and others / total > 0.1:
        print("  WARNING: other processes were busy: the latencies above are pessimistic")
    sys.stdout.flush()


def _print_turn(number: int, record: TurnRecord) -> None:
    """One line a turn: its latency split, what was heard and what was answered."""
    if not record.complete:
        print(
            f"  turn {number:2d}: incomplete (heard {record.transcript!r}, "
            f"reply {record.reply!r}, {'; '.join(record.errors) or 'no audio'})",
            flush=True,
        )
        return
    s = _split(record)
    print(
        f"  turn {number:2d}: {s.total:6.0f} ms = hang {s.hang:4.0f} + stt {s.stt:4.0f} + "
        f"llm {s.llm:4.0f} + piece {s.piece:4.0f} + tts {s.tts:4.0f} + rest {s.rest:4.0f} | "
        f"heard {record.transcript!r} -> {record.reply!r}",
        flush=True,
    )


def _print_turns(records: Sequence[TurnRecord], url: str, min_silence_ms: int | None) -> int:
    """The latency figures over the complete turns. Returns the exit code."""
    splits = [_split(r) for r in records if r.complete]
    hang = f"min_silence_ms = {min_silence_ms}" if min_silence_ms is not None else "plugin default"
    print(
        f"{len(records)} turns through {url} ({len(splits)} complete); VAD hang: {hang}; "
        f"replies capped at {MAX_TOKENS} tokens"
    )
    if not splits:
        print("no turn produced audio", flush=True)
        return 1
    totals = [s.total for s in splits]
    verdict = "ok" if statistics.median(totals) <= _TARGET_P50_MS else "OVER TARGET"
    print("end of speech -> first agent audio byte (client):")
    _print_stat("  total", totals, " ms", target=f"target p50 <= {_TARGET_P50_MS:g} ms: {verdict}")
    parts = (
        ("VAD hang (end of speech -> state: thinking)", [s.hang for s in splits]),
        ("STT final (metrics.stt_ms)", [s.stt for s in splits]),
        ("LLM first token (metrics.llm_first_token_ms)", [s.llm for s in splits]),
        ("LLM first token -> first speakable piece", [s.piece for s in splits]),
        ("TTS first audio (metrics.tts_first_audio_ms)", [s.tts for s in splits]),
        ("engine remainder", [s.rest for s in splits]),
    )
    for title, values in parts:
        _print_stat(f"    {title}", values, " ms")
    print(
        "  (the means add up to the total's mean; percentiles of parts do not add up)", flush=True
    )
    return 0


def _print_stat(
    title: str, values: Sequence[float], unit: str, *, digits: int = 0, target: str = ""
) -> None:
    """p50, p90 and mean of ``values`` on one line."""
    array = np.asarray(values, dtype=np.float64)
    p50, p90 = np.percentile(array, [50, 90])
    f = f".{digits}f"
    line = f"{title}: p50 {p50:{f}}{unit}  p90 {p90:{f}}{unit}  mean {array.mean():{f}}{unit}"
    print(f"{line}   {target}" if target else line)
