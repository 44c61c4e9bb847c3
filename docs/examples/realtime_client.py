"""Talk to ScaiVoice's OpenAI Realtime-compatible endpoint with the official ``openai`` SDK.

    pip install "openai[realtime]" numpy
    scaivoice serve                                         # in another terminal
    python realtime_client.py --text "What is the capital of France?"
    python realtime_client.py question.wav                  # a spoken question (16-bit WAV)

It sends a typed message or a WAV file (any rate, mono or stereo: converted to 24 kHz mono) with
turn detection off, asks for a response, prints the transcripts as they stream and writes the
spoken reply to reply.wav. The same code talks to OpenAI's Realtime API: only the URL and the key
change.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import wave

import numpy as np
from openai import AsyncOpenAI

RATE = 24000  # Realtime audio/pcm: PCM16, 24 kHz, mono


def read_wav(path: str) -> bytes:
    """A 16-bit WAV file as 24 kHz mono PCM16."""
    with wave.open(path, "rb") as wav:
        if wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: 16-bit PCM WAV files only")
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32)
    samples = samples.reshape(-1, channels).mean(axis=1)
    times = np.arange(0, len(samples) / rate, 1 / RATE)
    resampled = np.interp(times, np.arange(len(samples)) / rate, samples)
    return resampled.astype("<i2").tobytes()


async def main(args: argparse.Namespace) -> None:
    client = AsyncOpenAI(api_key=args.api_key, websocket_base_url=args.url)
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(
            session={
                "type": "realtime",
                "instructions": "You are a helpful voice assistant. Answer in one sentence.",
                "audio": {"input": {"turn_detection": None}},  # we say when the turn ends
            }
        )
        if args.text:
            await connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": args.text}],
                }
            )
        else:
            audio = read_wav(args.wav)
            for start in range(0, len(audio), RATE * 2 // 10):  # 100 ms per event
                chunk = audio[start : start + RATE * 2 // 10]
                await connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            await connection.input_audio_buffer.commit()
        await connection.response.create()

        reply = bytearray()
        async for event in connection:
            if event.type == "conversation.item.input_audio_transcription.completed":
                print(f"you: {event.transcript}")
            elif event.type == "response.created":
                print("agent: ", end="", flush=True)
            elif event.type == "response.output_audio_transcript.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.output_audio.delta":
                reply += base64.b64decode(event.delta)
            elif event.type == "error":
                print(f"\nerror {event.error.code}: {event.error.message}")
            elif event.type == "response.done":
                print(f"\n({event.response.status}, {len(reply) / 2 / RATE:.1f} s of audio)")
                break

    with wave.open(args.out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(bytes(reply))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", nargs="?", help="a spoken question (16-bit WAV)")
    parser.add_argument("--text", help="a typed question instead")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/v1", help="the server's /v1 URL")
    parser.add_argument("--api-key", default="sk-none", help="an API key of the server")
    parser.add_argument("--out", default="reply.wav", help="where to write the spoken reply")
    arguments = parser.parse_args()
    if not arguments.text and not arguments.wav:
        parser.error("give a WAV file or --text")
    asyncio.run(main(arguments))
