"""``scaivoice bench stack``: end-of-speech latency, real-time factors and memory, embedded stack.

Three parts, each printed next to its target where there is one:

1. **Real-time factors, in-process.** The test sentences are rendered once by hibari (voice
   heart, seed 0) and resampled to 16 kHz; they are the user's utterances below. The same
   sentences give the TTS real-time factor (synthesis time / audio duration, through the
   ``hibari`` backend) and the STT real-time factor (final decode time / audio duration, through
   the ``whisper`` backend with interims off), both as a live session decodes (no word timings:
   whisper's short window) and with word timings (as voice-note transcripts ask). Both
   backends are opened as the engine opens them: from the plugin host's backend specs.
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

from .run import run_stack_benchmark

__all__ = ["run_stack_benchmark"]
