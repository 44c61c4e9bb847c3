"""The Wyoming wire format over any byte stream (sans-IO), with the ``wyoming`` package's events.

An event is a JSON header line, then ``data_length`` bytes of extra JSON data (merged over the
header's ``data``), then ``payload_length`` bytes of binary payload (PCM audio)::

    {"type": "audio-chunk", "data": {"rate": 16000, ...}, "payload_length": 2048, ...}\\n
    <2048 bytes of audio>

The ``wyoming`` package reads this only from asyncio streams. The engine is trio, so
:class:`EventDecoder` cuts events out of received bytes itself (with size limits the package
lacks: a header line, its extra data and its payload are each bounded) and builds the package's
:class:`~wyoming.event.Event`, exactly as ``async_read_event`` does; :func:`encode_event` runs the
package's own ``write_event`` into a buffer, so what is sent is byte for byte what a Wyoming
program writes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

from wyoming.event import Event, write_event

from .._errors import ScaiVoiceError

__all__ = [
    "MAX_DATA_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "EventDecoder",
    "FramingError",
    "encode_event",
]

MAX_HEADER_BYTES = 64 * 1024
"""The longest header line accepted (asyncio's ``readline`` limit, which Wyoming programs have)."""
MAX_DATA_BYTES = 1024 * 1024
"""The most extra JSON data one event may carry."""
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""The largest payload accepted: about 2 minutes of 16 kHz PCM16 in one chunk."""


class FramingError(ScaiVoiceError):
    """The peer sent bytes that are not Wyoming events; the stream cannot be read further.

    Attributes:
        code: ``invalid_event`` (not JSON, no ``type``, bad lengths) or ``event_too_large``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EventDecoder:
    """Bytes in, :class:`~wyoming.event.Event` records out.

    Feed what the socket received with :meth:`feed`; iterate :meth:`events` for the events it
    completed. After a :class:`FramingError` the decoder is unusable (the stream has lost its
    framing): close the connection.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header: dict[str, Any] | None = None
        self._data_length = 0
        self._payload_length = 0

    @property
    def pending(self) -> int:
        """Bytes received that are not part of a complete event yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> None:
        """Add received bytes."""
        self._buffer += data

    def events(self) -> Iterator[Event]:
        """The events completed by the bytes fed so far, in order.

        Raises:
            FramingError: a malformed or oversized event.
        """
        while True:
            event = self._next()
            if event is None:
                return
            yield event

    def _next(self) -> Event | None:
        while self._header is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    raise FramingError(
                        "event_too_large",
                        f"an event header is longer than {MAX_HEADER_BYTES} bytes",
                    )
                return None
            if end > MAX_HEADER_BYTES:
                raise FramingError(
                    "event_too_large", f"an event header is longer than {MAX_HEADER_BYTES} bytes"
                )
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if not line.strip():
                continue  # a blank line between events: nothing to read
            header = _header(line)
            self._data_length = _length(header, "data_length", MAX_DATA_BYTES)
            self._payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
            self._header = header
        needed = self._data_length + self._payload_length
        if len(self._buffer) < needed:
            return None
        header = self._header
        extra = bytes(self._buffer[: self._data_length])
        payload = bytes(self._buffer[self._data_length : needed])
        del self._buffer[:needed]
        self._header = None
        data = header.get("data")
        data = dict(data) if isinstance(data, dict) else {}
        if extra:
            try:
                merged = json.loads(extra)
            except (ValueError, RecursionError) as exc:
                raise FramingError("invalid_event", f"the event's data is not JSON: {exc}") from exc
            if not isinstance(merged, dict):
                raise FramingError("invalid_event", "the event's data is not a JSON object")
            data.update(merged)
        return Event(type=header["type"], data=data, payload=payload or None)


def _header(line: bytes) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise FramingError("invalid_event", "an event header is not a JSON line") from exc
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise FramingError("invalid_event", "an event header needs a string 'type'")
    if "data" in header and header["data"] is not None and not isinstance(header["data"], dict):
        raise FramingError("invalid_event", "an event's 'data' must be a JSON object")
    return header


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FramingError("invalid_event", f"'{key}' must be a non-negative integer")
    if value > limit:
        raise FramingError("event_too_large", f"'{key}' is over {limit} bytes")
    return value


def encode_event(event: Event) -> bytes:
    """``event`` as a Wyoming program writes it (the package's ``write_event``)."""
    buffer = io.BytesIO()
    write_event(event, buffer)
    return buffer.getvalue()
