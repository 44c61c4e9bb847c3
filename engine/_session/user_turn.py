"""User turns: the microphone audio of a session and the speech recognition of each turn.

:class:`InputAudio` resamples the client's audio to the recogniser's rate and keeps a short
pre-roll of what was heard outside a turn (so the first syllable that triggered the VAD is not
lost). :class:`UserTurn` is one turn: the audio channel of its STT stream, its cancel scope and
what came of it. Its :meth:`UserTurn.transcribe` task streams the interim and final transcripts
to the client.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from .._audio import StreamResampler
from .._contract.backends import SttBackend, SttRequest, Transcript
from .._contract.calls import BackendCallCounter, call_backend
from .._errors import BackendError
from ..frames import TranscriptFrame
from .speakers import SpeakerOfTurn
from .wire import Outbox, hand_over

__all__ = ["STT_RATE", "InputAudio", "UserTurn"]

STT_RATE = 16000
_PRE_ROLL_MS = 300


def duration_ms(pcm: bytes) -> float:
    """The length of PCM16 mono audio at :data:`STT_RATE`."""
    return len(pcm) / 2 / STT_RATE * 1000.0


class InputAudio:
    """The client's audio on its way to the recogniser: resampling and the pre-roll.

    Args:
        input_rate: the client's sample rate.
    """

    def __init__(self, input_rate: int) -> None:
        self._resampler = StreamResampler(input_rate, STT_RATE)
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_ms = 0.0

    def set_input_rate(self, input_rate: int) -> None:
        self._resampler = StreamResampler(input_rate, STT_RATE)

    def resample(self, pcm: bytes) -> bytes:
        """``pcm`` at :data:`STT_RATE` (a resampler holds back a few samples)."""
        return self._resampler.process(pcm)

    def flush(self) -> bytes:
        """The resampler's held-back tail (at the end of a turn); the next audio starts fresh."""
        if self._resampler.from_rate == STT_RATE:
            return b""
        tail = self._resampler.process(b"", last=True)
        self._resampler = StreamResampler(self._resampler.from_rate, STT_RATE)
        return tail

    def remember(self, pcm: bytes) -> None:
        """Keep ``pcm`` in the pre-roll until a turn takes it or it ages out."""
        self._pre_roll.append(pcm)
        self._pre_roll_ms += duration_ms(pcm)

    def take_pre_roll(self) -> list[bytes]:
        """All the audio remembered, oldest first, for the turn that opens now."""
        chunks = list(self._pre_roll)
        self.clear_pre_roll()
        return chunks

    def trim_pre_roll(self) -> None:
        """Keep only the last ``_PRE_ROLL_MS`` of audio heard outside a user turn."""
        excess = int((self._pre_roll_ms - _PRE_ROLL_MS) * STT_RATE / 1000.0) * 2
        self._drop_oldest(excess)

    def _drop_oldest(self, excess: int) -> None:
        while excess > 0 and self._pre_roll:
            head = self._pre_roll[0]
            cut = min(len(head), excess)
            if cut == len(head):
                self._pre_roll.popleft()
            else:
                self._pre_roll[0] = head[cut:]
            excess -= cut
            self._pre_roll_ms -= cut / 2 / STT_RATE * 1000.0

    def keep_last(self, ms: float) -> None:
        """Keep only the last ``ms`` of the pre-roll (what followed a wake word)."""
        excess = int((self._pre_roll_ms - ms) * STT_RATE / 1000.0) * 2
        self._drop_oldest(excess)

    def clear_pre_roll(self) -> None:
        """Forget the pre-roll (a wake word is not part of the request that follows it)."""
        self._pre_roll.clear()
        self._pre_roll_ms = 0.0


class UserTurn:
    """One user turn, from its first audio to its final transcript.

    Attributes:
        turn_id: the turn's id (shared with the agent turn that answers it).
        audio_ms: how much audio the turn received.
        ended_at: when the user's turn ended (VAD, commit), if it did.
        stt_ms: from the end of the turn to the final transcript.
        text: the final transcript once known.
    """

    def __init__(
        self, turn_id: int, speaker: SpeakerOfTurn | None = None, audio_buffer: int = 256
    ) -> None:
        self.turn_id = turn_id
        self.speaker = speaker
        """Who spoke the turn, when the session asked (``diarize``, ``speaker_recognition``)."""
        self._audio_send, self._audio_receive = trio.open_memory_channel[bytes](audio_buffer)
        self._scope: trio.CancelScope | None = None
        self.audio_ms = 0.0
        self.ended_at: float | None = None
        self.stt_ms: float | None = None
        self.text = ""
        self.audio = bytearray()
        """The turn's audio so far (16 kHz PCM16), for a transcription at a pause."""
        self._adopted: Transcript | None = None
        self._recognition: trio.CancelScope | None = None
        self._final: Transcript | None = None  # the recogniser's own final, once it came

    async def feed(self, pcm: bytes) -> None:
        """Hand audio to the turn's STT stream; a stream that already ended (it failed and
        reported ``stt_failed``) drops it."""
        self.audio_ms += duration_ms(pcm)
        self.audio += pcm
        if self.speaker is not None:
            self.speaker.add(pcm)
        try:
            await hand_over(self._audio_send, pcm)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def end(self) -> None:
        """The user's turn is over: no more audio; the final transcript follows."""
        self.ended_at = trio.current_time()
        self._audio_send.close()

    def discard(self) -> None:
        """Abandon the turn (superseded by typed text): recognition stops now."""
        self._audio_send.close()
        if self._scope is not None:
            self._scope.cancel()

    def adopt(self, final: Transcript) -> None:
        """Take ``final`` (a transcription of this turn's audio made at its last pause, which
        nothing followed) as the turn's final transcript: the recogniser's own stream stops."""
        if self._adopted is None and self._final is None:
            self._adopted = final
            if self._recognition is not None:
                self._recognition.cancel()

    async def transcribe(
        self,
        stt: SttBackend,
        request: SttRequest,
        outbox: Outbox,
        on_interim: Callable[[Transcript], None],
        *,
        counter: BackendCallCounter,
        task_status: trio.TaskStatus[UserTurn] = trio.TASK_STATUS_IGNORED,
    ) -> str:
        """Run the turn's STT stream; send its transcripts; return the final text.

        Reports itself started (``nursery.start``) once its cancel scope is entered, so a
        :meth:`discard` from then on stops it. A failed recogniser is reported as a non-fatal
        ``stt_failed`` error and yields an empty final. The recogniser's call is counted on
        ``counter``. Cancelling abandons recognition.
        """
        results_send, results_recv = trio.open_memory_channel[Transcript](16)
        final_text = ""
        failure: BackendError | None = None

        async def produce() -> None:
            nonlocal failure
            call = partial(stt.transcribe, request, self._audio_receive, results_send)
            failure = await call_backend(
                stt, call, results_send, self._audio_receive, counter=counter
            )

        with trio.CancelScope() as self._scope:
            task_status.started(self)
            with trio.CancelScope() as self._recognition:
                if self._adopted is not None:
                    self._recognition.cancel()
                await self._recognise(produce, results_recv, outbox, on_interim)
            final_text = self._final.text if self._final is not None else ""
            adopted = self._adopted
            if adopted is not None and self._final is None:
                failure = None
                final_text = adopted.text
                await outbox.send(
                    TranscriptFrame(
                        turn_id=self.turn_id,
                        text=adopted.text,
                        final=True,
                        start_ms=adopted.start_ms,
                        end_ms=adopted.end_ms,
                        **(await self._speaker_fields(final=True)),
                    )
                )
        if failure is not None:
            await outbox.error("stt_failed", f"speech recognition failed: {failure}")
            final_text = ""
        if self.ended_at is not None:
            self.stt_ms = round((trio.current_time() - self.ended_at) * 1000, 2)
        self.text = final_text.strip()
        return self.text

    async def _speaker_fields(self, *, final: bool) -> dict[str, Any]:
        if self.speaker is None:
            return {}
        if final:
            await self.speaker.wait_final()
        return self.speaker.fields(final=final)

    async def _recognise(
        self,
        produce: Callable[[], Any],
        results_recv: trio.MemoryReceiveChannel[Transcript],
        outbox: Outbox,
        on_interim: Callable[[Transcript], None],
    ) -> None:
        """Stream the recogniser's results to the client; keep its final."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with results_recv:
                last_interim = ""
                async for result in results_recv:
                    if not result.final:
                        on_interim(result)
                        if result.text == last_interim:
                            continue  # a withdrawal of a stable guess: nothing new to show
                        last_interim = result.text
                    if result.final:
                        self._final = result  # before sending: an adoption now is too late
                    speaker = await self._speaker_fields(final=result.final)
                    await outbox.send(
                        TranscriptFrame(
                            turn_id=self.turn_id,
                            text=result.text,
                            final=result.final,
                            start_ms=result.start_ms,
                            end_ms=result.end_ms,
                            **speaker,
                        )
                    )
