"""Calling a backend's streaming method at the edge of the error tree.

Every place the engine drives a backend (session turns, voice notes) needs the same thing: run
the call, make sure the output channel it was given ends up closed (a backend that forgot would
hang its consumer), and turn any failure into a :class:`BackendError` — a backend bug (a plain
exception) is logged and mapped to :class:`BackendProtocolError`, never let through to end a
session or an HTTP request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import BackendError, BackendProtocolError

__all__ = ["call_backend"]

log = logging.getLogger("scaivoice.engine")


async def call_backend(
    backend: str, call: Callable[[], Awaitable[None]], *closes: Any
) -> BackendError | None:
    """Run ``call``; return its failure as a ``BackendError`` (``None`` if it succeeded).

    ``closes`` are channel ends to close afterwards whatever happened. Cancelling cancels the
    call (and still closes them).
    """
    try:
        await call()
    except BackendError as exc:
        return exc
    except Exception as exc:  # a backend bug: mapped, logged with its traceback
        log.exception("backend %r raised an unmapped exception", backend)
        mapped = BackendProtocolError(f"{type(exc).__name__}: {exc}", backend=backend)
        mapped.__cause__ = exc
        return mapped
    finally:
        for channel in closes:
            channel.close()
    return None
