"""Opt-in session features shipped with ScaiVoice (VAD, wake word, ...), as plugins."""
