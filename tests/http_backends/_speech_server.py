"""A small OpenAI-compatible speech server for the tests: real hibari audio over real HTTP.

Run as a script (the tests start it as a subprocess)::

    python _speech_server.py --port 8123

It serves, on hypercorn (trio):

- ``POST /v1/audio/speech``: ``{"model", "input", "voice", "response_format", "speed",
  "instructions"}`` -> PCM16LE mono 24 kHz (``pcm``, ``audio/pcm``) or a streamed WAV (``wav``,
  data size 0xFFFFFFFF), synthesised by hibari sentence by sentence and sent as each sentence
  is ready. Unknown fields, an unknown voice, another format or a speed hibari cannot do are
  answered 400 with an OpenAI-style error. ``instructions`` is accepted and not used (hibari
  has no style control). When the client goes away, synthesis stops.
- ``GET /v1/audio/voices``: ``{"voices": [{"id": "heart", "name": "Heart"}]}``.
- ``GET /v1/models``: the one model, ``hibari``.
"""

from __future__ import annotations

import argparse
import json
import struct
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from scaivoice.backends.hibari_tts import HibariOptions, HibariTts
from scaivoice.engine import AudioChunk, TtsRequest

RATE = 24000
FIELDS = {"model", "input", "voice", "response_format", "speed", "instructions"}


def wav_header(rate: int) -> bytes:
    """A streaming WAV header: 16-bit mono PCM, sizes unknown (0xFFFFFFFF)."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


class SpeechApp:
    """The ASGI application."""

    def __init__(self, tts: HibariTts) -> None:
        self.tts = tts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        route = (scope["method"], scope["path"].rstrip("/"))
        if route == ("GET", "/v1/models"):
            await self._json(send, 200, {"object": "list", "data": [{"id": "hibari"}]})
        elif route == ("GET", "/v1/audio/voices"):
            await self._json(send, 200, {"voices": [{"id": "heart", "name": "Heart"}]})
        elif route == ("POST", "/v1/audio/speech"):
            await self._speech(receive, send)
        else:
            await self._error(send, 404, f"no route {route[0]} {route[1]}")

    async def _speech(self, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except ValueError:
            await self._error(send, 400, "the body is not JSON")
            return
        if not isinstance(request, dict):
            await self._error(send, 400, "the body is not an object")
            return
        unknown = set(request) - FIELDS
        text = request.get("input")
        voice = request.get("voice", "heart")
        fmt = request.get("response_format", "pcm")
        speed = request.get("speed", 1.0)
        instructions = request.get("instructions")
        if unknown:
            problem = f"unknown fields: {sorted(unknown)}"
        elif not isinstance(text, str) or not text.strip():
            problem = "input must be a non-empty string"
        elif voice != "heart":
            problem = f"unknown voice {voice!r}; available: heart"
        elif fmt not in {"pcm", "wav"}:
            problem = f"response_format {fmt!r} is not supported here (pcm, wav)"
        elif not isinstance(speed, int | float) or not 0.5 <= speed <= 2.0:
            problem = "speed must be between 0.5 and 2.0 for hibari"
        elif instructions is not None and not isinstance(instructions, str):
            problem = "instructions must be a string"
        else:
            problem = ""
        if problem:
            await self._error(send, 400, problem)
            return
        content_type = b"audio/pcm" if fmt == "pcm" else b"audio/wav"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type)],
            }
        )
        if fmt == "wav":
            await send({"type": "http.response.body", "body": wav_header(RATE), "more_body": True})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_on_disconnect, receive, nursery.cancel_scope)
            out, audio = trio.open_memory_channel[AudioChunk](8)
            nursery.start_soon(self.tts.synthesize, TtsRequest(text, speed=float(speed)), out)
            async for chunk in audio:
                await send({"type": "http.response.body", "body": chunk.pcm, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _stop_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    @staticmethod
    async def _json(send: Any, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Any, status: int, message: str) -> None:
        error = {"message": message, "type": "invalid_request_error"}
        await self._json(send, status, {"error": error})


async def main(port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    async with HibariTts(HibariOptions(seed=0)) as tts:
        await serve(SpeechApp(tts), config)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    trio.run(main, parser.parse_args().port)
