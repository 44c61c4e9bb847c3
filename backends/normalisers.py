"""Registers the first-party text normalisers through the ``scaivoice`` entry-point group.

========== ============ ==========================================================
kind       name         packages
========== ============ ==========================================================
normaliser text         num2words (a core dependency)
========== ============ ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterator

from scaivoice.engine import BackendSpec, hookimpl

from .text_normaliser import TextNormaliser

__all__ = ["scaivoice_normalisers"]


@hookimpl
def scaivoice_normalisers() -> Iterator[BackendSpec]:
    """Declare ``text``."""
    yield BackendSpec.for_class(TextNormaliser, name="text")
