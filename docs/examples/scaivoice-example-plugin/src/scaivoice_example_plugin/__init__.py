"""An example ScaiVoice plugin: the ``example-abbrev`` normaliser and the ``example-chirp`` TTS.

ScaiVoice finds it through the ``scaivoice`` entry point in this distribution's
``pyproject.toml``, which names :mod:`scaivoice_example_plugin.plugin`.
"""

from .abbrev import AbbreviationNormaliser as AbbreviationNormaliser
from .chirp import ChirpTts as ChirpTts

__all__ = ["AbbreviationNormaliser", "ChirpTts"]
