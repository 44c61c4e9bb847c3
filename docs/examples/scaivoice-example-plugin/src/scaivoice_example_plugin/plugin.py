"""The module the ``scaivoice`` entry point names: hook implementations, nothing else.

Hooks are synchronous and do no I/O: they *declare* backends and skills with spec records. The
engine creates a backend (``spec.factory(options)``) only when an operator configures it, and
loads its models in ``Backend.open``; it calls a skill's handler when the model calls the tool.
"""

from __future__ import annotations

from collections.abc import Iterator

from scaivoice.engine import BackendSpec, ToolSpec, hookimpl

from .abbrev import NAME as ABBREV
from .abbrev import AbbreviationNormaliser
from .chirp import NAME as CHIRP
from .chirp import ChirpTts
from .units import DESCRIPTION, PARAMETERS, convert_units
from .units import NAME as CONVERT_UNITS

__all__ = ["scaivoice_normalisers", "scaivoice_tools", "scaivoice_tts_backends"]


@hookimpl
def scaivoice_normalisers() -> Iterator[BackendSpec]:
    """Declare the ``example-abbrev`` normaliser."""
    yield BackendSpec.for_class(AbbreviationNormaliser, name=ABBREV)


@hookimpl
def scaivoice_tts_backends() -> Iterator[BackendSpec]:
    """Declare the ``example-chirp`` TTS backend."""
    yield BackendSpec.for_class(ChirpTts, name=CHIRP)


@hookimpl
def scaivoice_tools() -> Iterator[ToolSpec]:
    """Declare the ``convert_units`` skill."""
    yield ToolSpec(
        name=CONVERT_UNITS,
        description=DESCRIPTION,
        handler=convert_units,
        parameters=PARAMETERS,
        timeout_s=2.0,  # instant in practice; the engine's [tools] call_timeout_s caps it
        api_version=1,  # the backend API version this plugin was written against
    )
