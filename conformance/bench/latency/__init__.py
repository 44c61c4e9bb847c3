"""``scaivoice bench latency``: how fast the engine answers and stops, against an
OpenAI-compatible stub (issue 19's workload), and what idle sessions cost.

The server runs the ``openai`` STT, LLM and TTS backends pointed at a stub on loopback
(:mod:`.stub`: each route answers after a delay, 100 ms by default; a speech reply holds 8 s of
audio), sessions set ``vad_enabled: true`` and nothing else. Then:

1. **Rounds** (:mod:`.rounds`), 10 by default, a session each: the client streams PCM16 16 kHz
   in 20 ms frames in real time: 0.6 s of a room's noise (-58 dBFS by default), a 1.9 s spoken
   question (hibari, rendered once: :mod:`.audio`), noise until the first agent audio, 0.4 s
   later the same question again over the agent's audio (a barge-in by voice, no
   ``interrupt`` frame), 1 s of noise. Per round: end of speech -> first agent audio byte;
   speech onset -> ``interrupted``; onset -> the reply's last audio byte received; and onset
   -> silence for a naive client that plays all it received in real time and ignores
   ``interrupted``. Median and p90 of each are printed, with the backend requests per user
   turn (counted by the stub, cancelled ones apart) and the server's speculative-request
   counters (``scaivoice_speculative*`` in ``/metrics``) when it has them.
2. **Idle sessions** (:mod:`.idle`), on a fresh server: 10, 100 and 300 sessions stream noise
   in real time with the server's VAD on: the server's CPU milliseconds per session-second and
   its resident memory, with the audio-path lag that shows whether it kept up.

:mod:`.report` holds the figures (:class:`LatencyReport`, also as JSON) and prints them;
:mod:`.run` is the command.
"""

from .report import LatencyReport
from .run import LatencyOptions, measure_latency, run_latency_benchmark
from .stub import StubConfig, serve_stub

__all__ = [
    "LatencyOptions",
    "LatencyReport",
    "StubConfig",
    "measure_latency",
    "run_latency_benchmark",
    "serve_stub",
]
