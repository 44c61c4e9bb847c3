"""Structured logs: every record carries the session id of the task that logged it."""

from __future__ import annotations

import contextvars
import json
import logging
import sys

__all__ = ["configure_logging", "session_id_var"]

#: Set by the session runner; trio tasks inherit it from the task that spawned them.
session_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "scaivoice_session_id", default="-"
)


class _SessionIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.session_id = session_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, session_id, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "session_id": getattr(record, "session_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Route ``scaivoice`` logs to stderr as text or JSON lines (called by the CLI only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_SessionIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(session_id)s] %(message)s")
        )
    root = logging.getLogger("scaivoice")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
