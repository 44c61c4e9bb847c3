"""The server side of RFC 6455 WebSockets, sans-IO: bytes in, messages out; messages in, bytes out.

The session endpoint is served by this small codec rather than a general WebSocket library
because a voice session is many small messages (50 audio frames a second and more): per
message, the codec parses a frame header, unmasks the payload and hands the message over, and
nothing else. What it does:

- the opening handshake's checks and the ``101`` response's accept key (:func:`accept_key`);
- frames: client frames must be masked; fragmented messages are joined (control frames may
  come between fragments); text must be UTF-8, checked as it arrives (a bad byte in the first
  fragment of a long message fails at once); no extension is negotiated, so reserved bits
  are errors; a message over ``max_message_bytes`` is refused with 1009 before it is buffered;
- pings are reported (the shell answers with a pong), pongs are ignored, a close frame is
  reported with its code and reason.

A peer's protocol error raises :class:`WebSocketProtocolError` with the close code to send
(1002 protocol error, 1007 invalid data, 1009 too big). Sending: :func:`text_frame`,
:func:`binary_frame`, :func:`close_frame` and :func:`pong_frame` build unmasked server frames.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

__all__ = [
    "Close",
    "Ping",
    "WebSocketCodec",
    "WebSocketProtocolError",
    "accept_key",
    "binary_frame",
    "close_frame",
    "pong_frame",
    "text_frame",
    "valid_key",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_NUMPY_UNMASK_FROM = 512  # bytes: below this, XOR as one big integer is faster than numpy
# Close codes a peer may send (RFC 6455 §7.4): 1000-1003, 1007-1011, 1012-1014, 3000-4999.
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009


class WebSocketProtocolError(Exception):
    """The peer broke RFC 6455 (its fault); close the connection with ``close_code``."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping from the peer; answer with :func:`pong_frame` of the same payload."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame (``code`` 1005 when it carried none)."""

    code: int
    reason: str


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def valid_key(key: str) -> bool:
    """Whether ``key`` is a ``Sec-WebSocket-Key``: 16 bytes in base64."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False


def _frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 1 << 16:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big") + payload


def text_frame(text: str) -> bytes:
    """A server text frame (unmasked, unfragmented)."""
    return _frame(_TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    """A server binary frame (unmasked, unfragmented)."""
    return _frame(_BINARY, data)


def pong_frame(payload: bytes) -> bytes:
    """The answer to a :class:`Ping`."""
    return _frame(_PONG, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to the 123 bytes a control frame has)."""
    encoded = reason.encode("utf-8")[:123].decode("utf-8", errors="ignore").encode("utf-8")
    return _frame(_CLOSE, code.to_bytes(2, "big") + encoded)


def _unmask(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    if size == 0:
        return payload
    if size < _NUMPY_UNMASK_FROM:
        key = int.from_bytes(mask * ((size + 3) >> 2), "little") & ((1 << (size << 3)) - 1)
        return (int.from_bytes(payload, "little") ^ key).to_bytes(size, "little")
    key_bytes = np.frombuffer(mask * ((size + 3) >> 2), np.uint8)[:size]
    return (np.frombuffer(payload, np.uint8) ^ key_bytes).tobytes()


class WebSocketCodec:
    """Parses a client's frames into messages (sans-IO).

    Feed the socket's bytes to :meth:`receive_data`; take messages with :meth:`next_event`
    until it returns ``None``. After a :class:`Close` or an error the codec takes nothing more.

    Errors are found as early as the bytes allow (Autobahn's "fail fast"): a frame's header is
    checked before its payload arrives, and the text of a fragmented message, or of a frame
    that arrives over several reads, is checked as UTF-8 piece by piece, so invalid text closes
    the connection with 1007 at the first bad byte, not when the message ends.

    Args:
        max_message_bytes: the largest message (all its fragments) accepted; larger ones
            raise 1009 as soon as their header announces it.
    """

    def __init__(self, *, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = b""
        self._fragment_opcode = 0  # _TEXT or _BINARY while a fragmented message is open
        self._fragments: list[bytes] = []  # a binary message's fragments
        self._fragmented_size = 0
        self._text: _IncrementalText | None = None  # a text message checked piece by piece
        self._checked = 0  # payload bytes of the frame in progress already fed to _text
        self._done = False

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the socket."""
        self._buffer = self._buffer + data if self._buffer else data

    def next_event(self) -> str | bytes | Ping | Close | None:
        """The next complete message (``str`` text, ``bytes`` binary), ping or close; ``None``
        when more bytes are needed.

        Raises:
            WebSocketProtocolError: the peer broke the protocol (the close code to send).
        """
        while not self._done:
            buf = self._buffer
            have = len(buf)
            if have < 2:
                return None
            first, second = buf[0], buf[1]
            if first & 0x70:
                self._fail(PROTOCOL_ERROR, "reserved bits set without an extension")
            if not second & 0x80:
                self._fail(PROTOCOL_ERROR, "client frames must be masked")
            opcode = first & 0x0F
            fin = first & 0x80
            size = second & 0x7F
            if opcode >= _CLOSE:
                if opcode > _PONG:
                    self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                if not fin or size > 125:
                    self._fail(PROTOCOL_ERROR, "control frames are short and unfragmented")
            elif opcode:
                if opcode > _BINARY:
                    self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                if self._fragment_opcode:
                    self._fail(PROTOCOL_ERROR, "a new message before the last one ended")
            elif not self._fragment_opcode:
                self._fail(PROTOCOL_ERROR, "a continuation frame with nothing to continue")
            pos = 2
            if size == 126:
                if have < 4:
                    return None
                size = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif size == 127:
                if have < 10:
                    return None
                size = int.from_bytes(buf[2:10], "big")
                pos = 10
            if opcode < _CLOSE and self._fragmented_size + size > self.max_message_bytes:
                self._fail(
                    MESSAGE_TOO_BIG, f"messages are limited to {self.max_message_bytes} bytes"
                )
            start = pos + 4
            end = start + size
            if have < end:
                if have > start and (
                    opcode == _TEXT or (opcode == _CONTINUATION and self._text is not None)
                ):
                    self._check_partial_text(buf, start, have)
                return None
            checked = self._checked
            if checked:
                payload = _unmask(buf[start + checked : end], _rotate(buf[pos:start], checked))
                self._checked = 0
            else:
                payload = _unmask(buf[start:end], buf[pos:start])
            self._buffer = buf[end:]
            if opcode == _TEXT:
                if fin and self._text is None:
                    return self._decode(payload)
                self._fragment_opcode = _TEXT
                self._fragmented_size = size
                self._text_piece(payload, final=bool(fin))
                if fin:
                    return self._end_text()
            elif opcode == _BINARY:
                if fin:
                    return payload
                self._fragment_opcode = _BINARY
                self._fragments.append(payload)
                self._fragmented_size = size
            elif opcode == _CONTINUATION:
                self._fragmented_size += size
                if self._text is not None:
                    self._text_piece(payload, final=bool(fin))
                    if fin:
                        return self._end_text()
                    continue
                self._fragments.append(payload)
                if fin:
                    whole = b"".join(self._fragments)
                    self._fragments.clear()
                    self._fragment_opcode = self._fragmented_size = 0
                    return whole
            elif opcode == _PING:
                return Ping(payload)
            elif opcode == _PONG:
                continue
            else:  # _CLOSE
                self._done = True
                return self._close(payload)
        return None

    # ---------------------------------------------------------------- text, piece by piece

    def _decode(self, payload: bytes) -> str:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(INVALID_DATA, "a text message that is not UTF-8")

    def _check_partial_text(self, buf: bytes, start: int, have: int) -> None:
        """Check the part of a text frame's payload that has arrived (and not been checked)."""
        checked = self._checked
        available = have - start
        if available <= checked:
            return
        piece = _unmask(buf[start + checked : have], _rotate(buf[start - 4 : start], checked))
        self._text_piece(piece, final=False)
        self._checked = available

    def _text_piece(self, piece: bytes, *, final: bool) -> None:
        text = self._text
        if text is None:
            text = self._text = _IncrementalText()
        if not text.feed(piece, final=final):
            self._fail(INVALID_DATA, "a text message that is not UTF-8")

    def _end_text(self) -> str:
        assert self._text is not None
        message = self._text.text()
        self._text = None
        self._fragment_opcode = self._fragmented_size = 0
        return message

    def _close(self, payload: bytes) -> Close:
        if not payload:
            return Close(1005, "")
        if len(payload) == 1:
            self._fail(PROTOCOL_ERROR, "a close frame with a one-byte payload")
        code = int.from_bytes(payload[:2], "big")
        if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
            self._fail(PROTOCOL_ERROR, f"close code {code} may not be sent")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            self._fail(INVALID_DATA, "a close reason that is not UTF-8")
        return Close(code, reason)

    def _fail(self, code: int, reason: str) -> NoReturn:
        self._done = True
        self._buffer = b""
        self._fragments.clear()
        self._text = None
        raise WebSocketProtocolError(code, reason)


def _rotate(mask: bytes, offset: int) -> bytes:
    """The mask for a payload that starts ``offset`` bytes into a masked payload."""
    shift = offset & 3
    return mask[shift:] + mask[:shift] if shift else mask


class _IncrementalText:
    """UTF-8 text checked and decoded piece by piece (``codecs``' incremental decoder)."""

    __slots__ = ("_decoder", "parts")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.parts: list[str] = []

    def feed(self, piece: bytes, *, final: bool) -> bool:
        """Add ``piece``; ``False`` as soon as the text so far cannot be UTF-8."""
        try:
            self.parts.append(self._decoder.decode(piece, final))
        except UnicodeDecodeError:
            return False
        if final:
            return True
        # The decoder holds an unfinished sequence back; it already refuses every bad prefix
        # but ED A0..ED BF (a UTF-16 surrogate, never UTF-8), which it finds one byte later.
        pending = self._decoder.getstate()[0]
        return not (len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0)

    def text(self) -> str:
        """The whole text (after the final piece)."""
        return "".join(self.parts)
