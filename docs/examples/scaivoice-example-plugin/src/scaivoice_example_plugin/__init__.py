"""An example ScaiVoice plugin: the ``example-abbrev`` normaliser, the ``example-chirp`` TTS and
the ``convert_units`` skill.

ScaiVoice finds it through the ``scaivoice`` entry point in this distribution's
``pyproject.toml``, which names :mod:`scaivoice_example_plugin.plugin`.
"""

from .abbrev import AbbreviationNormaliser as AbbreviationNormaliser
from .chirp import ChirpTts as ChirpTts
from .units import convert_units as convert_units

__all__ = ["AbbreviationNormaliser", "ChirpTts", "convert_units"]
