"""The reader -> dialogue hand-off of audio: frames that queue up are joined, in order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import trio
import trio.testing

from scaivoice.engine import FeatureEvent, FeatureSession, FeatureSpec, SessionFeature, hookimpl
from scaivoice.engine.testing import memory_transport_pair, open_test_engine, run_memory_session

from .conftest import host_with


class _Recorder(FeatureSession):
    """A slow feature: it records each chunk it is given and takes 100 ms over it."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log

    async def process(self, pcm: bytes) -> Sequence[FeatureEvent]:
        self.log.append(("audio", len(pcm)))
        await trio.sleep(0.1)
        return []


class _RecordingFeature(SessionFeature):
    log: list[tuple[str, int]] = []  # noqa: RUF012 - one test at a time, reset by it

    def open_session(self, *, sample_rate: int, options: Mapping[str, Any]) -> FeatureSession:
        return _Recorder(self.log)


class _Plugin:
    @hookimpl
    def scaivoice_session_features(self) -> Iterator[FeatureSpec]:
        yield FeatureSpec(
            name="recorder",
            config_key="vad_enabled",
            factory=lambda options: _RecordingFeature(),
            description="records the chunks the session hands over",
        )


async def test_queued_audio_is_joined_but_never_across_a_control_frame(
    autojump_clock: Any,
) -> None:
    _RecordingFeature.log = log = []
    host = host_with()
    host.register(_Plugin(), name="recorder")
    frame = b"\1\0" * 320  # 20 ms at 16 kHz
    async with open_test_engine(host=host) as engine:
        transport, client = memory_transport_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_memory_session, engine, transport)
            await client.start(vad_enabled=True)
            await client.send_raw(frame)
            await trio.testing.wait_all_tasks_blocked()  # the feature is busy with it
            # A burst meanwhile: four frames, a control frame, three frames. The dialogue
            # joins each run of queued audio into one chunk.
            for _ in range(4):
                await client.send_raw(frame)
            await client.send_json({"type": "session.update", "config": {}})
            for _ in range(3):
                await client.send_raw(frame)
            await client.receive_until("session.updated")
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    # Joined across the session.update, the chunks would be 640, 3200 (the 100 ms cap), 1280.
    assert log == [("audio", 640), ("audio", 4 * 640), ("audio", 3 * 640)]
