"""``scaivoice bench turn-taking``: how human the server's turn-taking is, on generated speech.

Conversations are generated with the installed TTS voices (hibari at three speeds, Piper,
espeak-ng; :mod:`.speech`, :mod:`.plan`) in five categories, a few steps each:

- **pauses**: utterances with inner pauses of 300-900 ms, inside phone numbers and lists
  ("my number is five five five, [pause] one two three four");
- **questions**: complete short questions;
- **backchannels**: a question asking for a long answer, then "uh-huh", "yeah", "right",
  "okay", "mm-hmm" or a laugh over the agent's reply;
- **noises**: the same with a cough or clicks (synthesised noise bursts) over the reply;
- **interruptions**: the same with a real interruption ("wait, stop", "no, I meant tomorrow").

Each conversation is a session of its own against a real server on loopback running the
embedded stack (whisper, llama-cpp, hibari, Silero VAD, and the Smart Turn end-of-turn model
where installed), or the server given by ``--url``. The client streams its microphone in real
time, 20 ms frames over low room noise (:mod:`.conversation`), and never sends ``vad`` frames.
Every conversation runs once per ``turn_detection`` mode (``semantic``, ``server_vad``, and
``manual`` for latency only: push-to-talk, committed at the end of speech), with
``vad_enabled`` in the first two. Measured per mode (:mod:`.figures`):

- **premature end of turn**: of the utterances with inner pauses, those whose turn the server
  ended (``state: thinking`` or a final transcript) before their end of speech;
- **false interruptions**: backchannels and noises after which the reply got
  ``state: interrupted``; and whether the agent's audio went on;
- **missed interruptions**: real interruptions without ``state: interrupted`` within 2 s of
  their onset; **barge-in**: onset -> ``state: interrupted``, p50;
- **end of speech -> first agent audio**, p50 and p90, at the client (from the frame holding
  the utterance's last sound to the reply's first binary frame), with the turn-end decision
  (end of speech -> ``state: thinking``) and the ``metrics`` frames' STT, LLM first token and
  TTS first audio beside it, so what dominates shows.

Targets (issue 14), reported, not asserted: p50 <= 450 ms with ``semantic``, premature ends
<= 5 %, false interruptions <= 10 %. :func:`run_turn_taking` returns the figures as data.
"""

from .conversation import OverlapRecord, TurnRecord
from .figures import ModeFigures, TurnTakingReport
from .run import MODES, run_turn_taking, run_turn_taking_benchmark

__all__ = [
    "MODES",
    "ModeFigures",
    "OverlapRecord",
    "TurnRecord",
    "TurnTakingReport",
    "run_turn_taking",
    "run_turn_taking_benchmark",
]
