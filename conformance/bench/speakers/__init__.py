"""``scaivoice bench speakers``: speaker embeddings and diarization on generated voices.

The voices are the installed TTS backends' (:mod:`.voices`: hibari, piper, espeak-ng variants);
each section of the report is an async function that takes the :class:`BenchContext` (the
rendered voices, how many conversations) and returns its lines. :data:`SECTIONS` lists them in
order; a new figure (speaker recognition's identification accuracy and false accepts, say) is
one more ``(title, function)`` entry there.
"""

from __future__ import annotations

from .run import SECTIONS, BenchContext, Section, run_speaker_benchmark

__all__ = ["SECTIONS", "BenchContext", "Section", "run_speaker_benchmark"]
