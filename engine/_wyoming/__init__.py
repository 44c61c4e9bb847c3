"""The engine as a Wyoming server (``scaivoice wyoming``): speech to text, text to speech and
wake words for Home Assistant and its voice satellites."""
