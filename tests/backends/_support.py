"""Helpers for the backend tests: the test sentences, PCM slicing, channel draining."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import trio

from scaivoice.engine import resample_pcm16

T = TypeVar("T")

SENTENCES = (
    "The meeting is on March 3rd at 4:30 pm.",
    "Hello, my name is Alice and I would like to book a table for two people.",
    "The weather today is sunny with a high of 72 degrees.",
    "Please remind me to buy milk, eggs, and bread on the way home.",
    "Your order number is 58 and it should arrive on Friday, June 14th.",
)


class Speech:
    """The test sentences spoken by hibari (voice heart, seed 0): PCM16 mono."""

    def __init__(self, pcm_24k: dict[str, bytes]) -> None:
        self.pcm_24k = pcm_24k
        self.pcm_16k = {text: resample_pcm16(pcm, 24000, 16000) for text, pcm in pcm_24k.items()}

    def __getitem__(self, index: int) -> bytes:
        """Sentence ``index`` at 16 kHz."""
        return self.pcm_16k[SENTENCES[index]]


def silence(ms: int, rate: int = 16000) -> bytes:
    return b"\0\0" * (rate * ms // 1000)


def chunks(pcm: bytes, ms: int = 100, rate: int = 16000) -> list[bytes]:
    step = rate * ms // 1000 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def drain(receive: trio.MemoryReceiveChannel[T]) -> list[T]:
    """Everything left on ``receive`` until it is closed."""
    return [item async for item in receive]


async def send_all(send: trio.MemorySendChannel[bytes], pieces: Sequence[bytes]) -> None:
    for piece in pieces:
        await send.send(piece)
