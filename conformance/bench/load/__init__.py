"""``scaivoice bench load``: how many live voice sessions a server holds in real time."""

from .driver import (
    LoadReport,
    LoadRun,
    SpeechKind,
    plan,
    run_load,
    run_load_benchmark,
    search_capacity,
    speech_utterance,
    synthetic_speech,
)

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
