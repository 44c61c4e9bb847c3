"""Who is speaking: speaker embeddings, anonymous diarization (``diarize``) and its helpers."""
