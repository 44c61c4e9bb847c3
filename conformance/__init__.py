"""ScaiVoice conformance: the backend contract kit and the protocol conformance suite."""
