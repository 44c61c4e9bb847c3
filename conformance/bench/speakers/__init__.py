"""``scaivoice bench speakers``: speaker embeddings and diarization on generated voices."""
