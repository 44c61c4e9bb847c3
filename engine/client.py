"""The Python client: one ScaiVoice session over trio-websocket.

Example::

    async with connect("ws://127.0.0.1:8765/v1/session", api_key=KEY) as session:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.stream_wav, "question.wav")
            async for event in session.events():
                print(event)

``events()`` yields typed server frames (``scaivoice.engine.client.frames``) and
:class:`AgentAudio` for binary frames, tagged with the turn whose audio they carry.
"""

from __future__ import annotations

import urllib.parse
import wave
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import trio
import trio_websocket

from . import frames as frames
from ._errors import ProtocolViolation, SessionClosed
from .frames import ServerFrame, decode_server_frame

__all__ = ["AgentAudio", "VoiceClient", "connect", "frames", "read_wav", "write_wav"]

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """A binary frame of agent audio (PCM16LE mono at the turn's sample rate)."""

    turn_id: int | None
    pcm: bytes
    sample_rate: int


class VoiceClient:
    """An open session. Create it with :func:`connect`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self.started: frames.SessionStarted | None = None
        self._audio_turn: int | None = None
        self._audio_rate = 24000
        self.close_code: int | None = None
        self.close_reason: str | None = None

    @property
    def session_id(self) -> str:
        assert self.started is not None
        return self.started.session_id

    # ---------------------------------------------------------------- sending

    async def send(self, doc: Mapping[str, Any]) -> None:
        """Send a client frame given as a mapping (``{"type": "interrupt"}``)."""
        await self._send_message(_encoder.encode(dict(doc)).decode())

    async def send_audio(self, pcm: bytes) -> None:
        """Send one binary frame of PCM16LE mono at the session's input rate."""
        await self._send_message(pcm)

    async def _send_message(self, message: str | bytes) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise SessionClosed(f"the session is closed ({exc.reason})") from exc

    async def interrupt(self) -> None:
        """Barge in: stop the agent's current turn."""
        await self.send({"type": "interrupt"})

    async def commit(self) -> None:
        """End the user's turn (push-to-talk)."""
        await self.send({"type": "audio.commit"})

    async def send_text(self, text: str) -> None:
        """A typed user turn."""
        await self.send({"type": "text", "text": text})

    async def tool_result(
        self, call_id: str, result: Any = None, *, error: str | None = None
    ) -> None:
        """Answer a ``tool.call``: its ``result`` (any JSON value), or ``error`` to tell the
        model the tool failed."""
        doc: dict[str, Any] = {"type": "tool.result", "call_id": call_id, "result": result}
        if error is not None:
            doc["error"] = error
        await self.send(doc)

    async def update(self, **config: Any) -> None:
        """Change session config keys (``session.update``)."""
        await self.send({"type": "session.update", "config": config})

    async def vad(self, speaking: bool) -> None:
        """Report client-side voice activity."""
        await self.send({"type": "vad", "speaking": speaking})

    async def playback(self, turn_id: int, played_ms: int) -> None:
        """Report how much of a turn's audio has been played."""
        await self.send({"type": "playback", "turn_id": turn_id, "played_ms": played_ms})

    async def end(self) -> None:
        """Ask the server to end the session (it answers ``session.ended`` and closes)."""
        await self.send({"type": "session.end"})

    async def stream_pcm(
        self,
        pcm: bytes | npt.NDArray[np.int16] | npt.NDArray[np.floating],
        *,
        realtime: bool = True,
        frame_ms: int = 20,
        commit: bool = True,
    ) -> None:
        """Stream audio at the session's input rate in ``frame_ms`` frames.

        Args:
            pcm: PCM16LE bytes, an int16 array, or float samples in [-1, 1].
            realtime: pace frames to real time (as a microphone would).
            commit: send ``audio.commit`` at the end.

        Cancelling stops streaming where it is (no commit is sent).
        """
        data = _as_pcm16(pcm)
        assert self.started is not None
        rate = self.started.audio.input.sample_rate
        step = rate * frame_ms // 1000 * 2
        start = trio.current_time()
        for index, offset in enumerate(range(0, len(data), step)):
            if realtime:
                await trio.sleep_until(start + index * frame_ms / 1000.0)
            await self.send_audio(data[offset : offset + step])
        if commit:
            await self.commit()

    async def stream_wav(self, path: str | Path, **kwargs: Any) -> None:
        """Stream a WAV file (its rate must be the session's input rate: see :func:`read_wav`)."""
        pcm, _rate = read_wav(path)
        await self.stream_pcm(pcm, **kwargs)

    # ---------------------------------------------------------------- receiving

    async def receive(self) -> ServerFrame | AgentAudio:
        """The next server frame.

        Raises:
            SessionClosed: the server closed the session (see ``close_code``).
        """
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            if exc.reason is not None:
                self.close_code = exc.reason.code
                self.close_reason = exc.reason.reason
            raise SessionClosed(f"closed with {self.close_code} {self.close_reason or ''}") from exc
        if isinstance(message, bytes):
            return AgentAudio(self._audio_turn, message, self._audio_rate)
        frame = decode_server_frame(message)
        if isinstance(frame, frames.AgentAudioStart):
            self._audio_turn, self._audio_rate = frame.turn_id, frame.sample_rate
        elif isinstance(frame, frames.AgentAudioDone):
            self._audio_turn = None
        return frame

    async def events(self) -> AsyncIterator[ServerFrame | AgentAudio]:
        """Every server frame until the session closes (then the iteration ends)."""
        while True:
            try:
                yield await self.receive()
            except SessionClosed:
                return


@asynccontextmanager
async def connect(
    url: str,
    *,
    api_key: str | None = None,
    token: str | None = None,
    config: Mapping[str, Any] | None = None,
    protocol: int = frames.PROTOCOL_VERSION,
) -> AsyncIterator[VoiceClient]:
    """Open a session: connect, send ``session.start``, wait for ``session.started``.

    Args:
        url: ``ws://host:port/v1/session``.
        api_key: sent as ``Authorization: Bearer``.
        token: a session token (``POST /v1/session-tokens``), sent as ``?token=``.
        config: initial session config keys.

    Raises:
        SessionClosed: the connection failed or closed without a word.
        ProtocolViolation: the server refused the session or ``session.start``: ``code`` is
            the error code, ``close_code`` the WebSocket close code of a refusal.

    Leaving the block closes the socket (under a deadline). Cancelling closes it too.
    """
    if token:
        separator = "&" if "?" in url else "?"
        url = f"{url}{separator}token={urllib.parse.quote(token)}"
    headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
    try:
        async with trio_websocket.open_websocket_url(
            url,
            extra_headers=headers,
            message_queue_size=256,
            max_message_size=16 * 1024 * 1024,
            disconnect_timeout=5,
        ) as ws:
            client = VoiceClient(ws)
            try:
                await client.send(
                    {"type": "session.start", "protocol": protocol, "config": dict(config or {})}
                )
            except SessionClosed:
                pass  # refused at once: the error frame that says why is read below
            while client.started is None:
                frame = await client.receive()
                if isinstance(frame, frames.SessionStarted):
                    client.started = frame
                elif isinstance(frame, frames.ErrorFrame):
                    close_code = 0
                    if frame.fatal:  # learn the close code that follows a refusal
                        with trio.move_on_after(5):
                            async for _ in client.events():
                                pass
                        close_code = client.close_code or 0
                    raise ProtocolViolation(
                        frame.code, frame.message, fatal=frame.fatal, close_code=close_code
                    )
            yield client
    except trio_websocket.HandshakeError as exc:
        raise SessionClosed(f"the server refused the WebSocket handshake: {exc}") from exc


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a PCM16 WAV file (mono, or downmixed) -> (PCM16LE mono bytes, sample rate)."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        channels = reader.getnchannels()
        rate = reader.getframerate()
        data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype("<i2")
    return data.tobytes(), rate


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write PCM16LE mono bytes as a WAV file."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)


def _as_pcm16(pcm: bytes | npt.NDArray[Any]) -> bytes:
    if isinstance(pcm, bytes | bytearray | memoryview):
        return bytes(pcm)
    array = np.asarray(pcm)
    if array.dtype.kind == "f":
        return bytes((np.clip(array, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return bytes(array.astype("<i2").tobytes())
