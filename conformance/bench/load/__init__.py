"""``scaivoice bench load``: how many live voice sessions a server holds in real time.

N sessions each stream microphone audio in real time (20 ms PCM16 frames at 16 kHz by default;
``--frame-ms`` 50 or 100): a loop of an utterance (about 1.5 s of speech) and a silence that
alternates between 1 s and 3 s. With ``vad_enabled`` the server's VAD ends each user turn and
the agent replies with text and paced audio; after a 1 s silence the next utterance starts
while the agent still talks (a barge-in), after a 3 s one the reply ends first. The speech is
hibari's voice when hibari is importable, else a synthetic voiced signal (harmonics of a gliding
pitch shaped by changing vowel formants) that Silero VAD scores as speech.

What is measured, at the client, over a window that follows the connection ramp and a warm-up:

- **transport lag**: each session sends a ``ping`` every 200 ms between its audio frames; the
  ``pong`` round trip shows how late the server reads that connection. The session's reader
  answers pings itself, ahead of the audio it has queued for the dialogue task;
- **audio-path lag**: every second, an empty ``session.update``. The dialogue task handles it
  in order with the audio before it (where the VAD runs), so ``session.updated`` comes back as
  late as the audio is handled. A run *holds* when the p99 of both lags is at most 50 ms and
  nothing went wrong;
- **end of speech -> first reply audio** and **-> thinking**: from sending the utterance's last
  frame (the VAD hang time included), with the server's own ``metrics`` figure beside them;
- **barge-in**: from the first frame of an utterance sent while the agent speaks to
  ``state: interrupted`` (the VAD's ``min_speech_ms`` included);
- **errors**: ``error`` and ``warning`` frames (``feature_unavailable``: no VAD), refusals,
  unexpected closes, failed connects, pings and probes left unanswered;
- **CPU and memory**: the server's CPU (``/proc/PID/stat``: all threads, and the main thread,
  which runs the event loop) and resident set (``/proc/PID/status``) when its process id is
  known (always in self-contained mode); the CPU of each load-generator process; the machine's
  busy time, so other processes' share shows.

The load generator is lean so that it does not compete with the server it loads: one ticker
per process sends every session's due frame over a plain non-blocking socket (see
:mod:`.wire`). ``--clients K`` spreads the sessions over K processes. It only loads ``ws://`` servers on loopback, and every
loop is bounded: a run stops by itself.

Modules: :mod:`.speech` (the utterance), :mod:`.wire` (the client WebSocket), :mod:`.driver`
(the sessions and the ticker), :mod:`.report` (figures and verdict), :mod:`.capacity` (the
search), :mod:`.run` (a run in this loop, or the command with its client processes).
"""

from .capacity import search_capacity
from .driver import LoadRun, plan
from .report import LoadReport
from .run import run_load, run_load_benchmark
from .speech import SpeechKind, speech_utterance, synthetic_speech

__all__ = [
    "LoadReport",
    "LoadRun",
    "SpeechKind",
    "plan",
    "run_load",
    "run_load_benchmark",
    "search_capacity",
    "speech_utterance",
    "synthetic_speech",
]
