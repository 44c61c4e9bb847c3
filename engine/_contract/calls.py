"""Calling a backend's streaming method at the edge of the error tree.

Every place the engine drives a backend (session turns, early replies, voice notes) needs the
same thing: run the call, make sure the output channel it was given ends up closed (a backend
that forgot would hang its consumer), turn any failure into a :class:`BackendError` — a backend
bug (a plain exception) is logged and mapped to :class:`BackendProtocolError`, never let through
to end a session or an HTTP request — and count the call for the operator's metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .._errors import BackendError, BackendProtocolError
from .backends import LlmBackend, SttBackend, TtsBackend

__all__ = ["BackendCallCounter", "call_backend"]

log = logging.getLogger("scaivoice.engine")


class BackendCallCounter(Protocol):
    """Where backend calls are counted (the engine's telemetry implements it)."""

    def backend_call(self, kind: str, backend: str, *, failed: bool) -> None:
        """Count one call of ``backend`` (a backend of ``kind``) that ended; ``failed`` if it
        ended with a backend error."""


async def call_backend(
    backend: SttBackend | LlmBackend | TtsBackend,
    call: Callable[[], Awaitable[None]],
    *closes: Any,
    counter: BackendCallCounter,
) -> BackendError | None:
    """Run ``call`` (a streaming method of ``backend``); return its failure as a
    ``BackendError`` (``None`` if it succeeded).

    ``closes`` are channel ends to close afterwards whatever happened. The call is counted on
    ``counter`` once it ends, as failed when it returned a failure. Cancelling cancels the call
    (and still closes them); a cancelled call (barge-in, a caller's deadline) counts as a call,
    not as a failure.
    """
    kind = _kind(backend)
    failure: BackendError | None = None
    try:
        await call()
    except BackendError as exc:
        failure = exc
    except Exception as exc:  # a backend bug: mapped, logged with its traceback
        log.exception("backend %r raised an unmapped exception", backend.name)
        failure = BackendProtocolError(f"{type(exc).__name__}: {exc}", backend=backend.name)
        failure.__cause__ = exc
    finally:
        for channel in closes:
            channel.close()
        counter.backend_call(kind, backend.name, failed=failure is not None)
    return failure


def _kind(backend: SttBackend | LlmBackend | TtsBackend) -> str:
    if isinstance(backend, SttBackend):
        return "stt"
    if isinstance(backend, LlmBackend):
        return "llm"
    if isinstance(backend, TtsBackend):
        return "tts"
    return type(backend).__name__  # not a backend class: still counted, under its own name
