"""The module the ``scaivoice`` entry point names: hook implementations, nothing else.

Hooks are synchronous and do no I/O: they *declare* backends with spec records. The engine
creates a backend (``spec.factory(options)``) only when an operator configures it, and loads
its models in ``Backend.open``.
"""

from __future__ import annotations

from collections.abc import Iterator

from scaivoice.engine import BackendSpec, hookimpl

from .abbrev import NAME as ABBREV
from .abbrev import AbbreviationNormaliser
from .chirp import NAME as CHIRP
from .chirp import ChirpTts

__all__ = ["scaivoice_normalisers", "scaivoice_tts_backends"]


@hookimpl
def scaivoice_normalisers() -> Iterator[BackendSpec]:
    """Declare the ``example-abbrev`` normaliser."""
    yield BackendSpec.for_class(AbbreviationNormaliser, name=ABBREV)


@hookimpl
def scaivoice_tts_backends() -> Iterator[BackendSpec]:
    """Declare the ``example-chirp`` TTS backend."""
    yield BackendSpec.for_class(ChirpTts, name=CHIRP)
