"""``scaivoice talk``: one session from a WAV file, printed as it happens."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import trio

from . import frames as frames
from ._errors import ProtocolViolation, SessionClosed
from .client import AgentAudio, connect, read_wav, write_wav

__all__ = ["talk"]


async def talk(
    file: str,
    *,
    url: str,
    api_key: str | None,
    token: str | None,
    out: str | None,
    as_json: bool,
    config: dict[str, Any],
    timeout_s: float,
) -> int:
    """Stream ``file`` in real time, print states, transcripts and agent text with timings,
    write the agent's audio to ``out``. Returns 0 when a reply arrived, 1 otherwise.

    Cancelling (Ctrl-C) closes the session.
    """
    pcm, rate = read_wav(file)
    start = trio.current_time()
    audio = bytearray()
    audio_rate = 24000
    replies = 0
    streamed = trio.Event()

    def emit(kind: str, text: str = "", **fields: Any) -> None:
        elapsed = trio.current_time() - start
        if as_json:
            print(
                json.dumps({"t": round(elapsed, 3), "event": kind, "text": text, **fields}),
                flush=True,
            )
        else:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            shown = f'"{text}"' if text else ""
            print(f"{elapsed:7.2f}s  {kind:<11} {shown} {extra}".rstrip(), flush=True)

    async def stream(session: Any) -> None:
        await session.stream_pcm(pcm, realtime=True)
        streamed.set()

    with trio.move_on_after(timeout_s) as timer:
        try:
            async with connect(
                url, api_key=api_key, token=token, config={"input_sample_rate": rate, **config}
            ) as session:
                emit("session", session.session_id)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(stream, session))
                    state = "idle"
                    async for event in session.events():
                        match event:
                            case AgentAudio(pcm=chunk, sample_rate=sr):
                                audio.extend(chunk)
                                audio_rate = sr
                            case frames.State(state=new_state, turn_id=turn_id):
                                state = new_state
                                emit("state", new_state, turn=turn_id)
                            case frames.TranscriptFrame(final=True, text=text, turn_id=turn_id):
                                emit("heard", text, turn=turn_id)
                            case frames.AgentTextDone(text=text, turn_id=turn_id, interrupted=cut):
                                replies += 1
                                emit("agent", text, turn=turn_id, interrupted=cut)
                            case frames.Metrics() as metrics:
                                emit(
                                    "metrics",
                                    **{k: getattr(metrics, k) for k in metrics.__struct_fields__},
                                )
                            case frames.WarningFrame(code=code, message=message):
                                emit("warning", message, code=code)
                            case frames.ErrorFrame(code=code, message=message):
                                emit("error", message, code=code)
                        if streamed.is_set() and state == "idle" and replies:
                            nursery.cancel_scope.cancel()
                            break
                await session.end()
        except (SessionClosed, ProtocolViolation, OSError) as exc:
            emit("error", str(exc))
            return 1
    if timer.cancelled_caught:
        emit("error", f"no complete reply within {timeout_s:g} s")
    if out and audio:
        write_wav(Path(out), bytes(audio), audio_rate)
        emit("audio", out, duration_ms=round(len(audio) / 2 / audio_rate * 1000))
    return 0 if replies else 1
