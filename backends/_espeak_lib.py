"""A minimal ctypes binding of libespeak-ng: list voices, synthesise text to PCM16.

The library comes from the espeakng-loader wheel (library and data inside it), else from the
system (``libespeak-ng``, e.g. the Debian package ``libespeak-ng1``). libespeak-ng keeps one
global synthesiser per process, so this module keeps one :class:`EspeakLibrary` per process and
serialises every call with a lock: that lock mirrors the C library's own global state.
All methods block: call them from a worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["EspeakLibrary", "EspeakVoice", "load_library"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Voice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


@dataclass(frozen=True, slots=True)
class EspeakVoice:
    """One espeak-ng voice: ``language`` (``"en-us"``) is what selects it."""

    language: str
    name: str
    identifier: str
    gender: int


class EspeakError(RuntimeError):
    """libespeak-ng returned an error code, or could not be found."""


class EspeakLibrary:
    """An initialised libespeak-ng (one per process: see :func:`load_library`)."""

    def __init__(self, lib: ctypes.CDLL, data_path: str | None) -> None:
        self._lib = lib
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept alive as long as the library
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetSynthCallback.argtypes = (_SYNTH_CALLBACK,)
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        path = data_path.encode() if data_path else None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}); data path {data_path!r}")
        self.sample_rate: int = rate
        lib.espeak_SetSynthCallback(self._callback)

    def voices(self) -> list[EspeakVoice]:
        """Every voice, one entry per language it speaks first (its id)."""
        with self._lock:
            listed = self._lib.espeak_ListVoices(None)
            out: list[EspeakVoice] = []
            index = 0
            while listed[index]:
                voice = listed[index].contents
                languages = _languages(voice.languages)
                if languages:
                    out.append(
                        EspeakVoice(
                            language=languages[0],
                            name=(voice.name or b"").decode(errors="replace"),
                            identifier=(voice.identifier or b"").decode(errors="replace"),
                            gender=voice.gender,
                        )
                    )
                index += 1
        return out

    def synthesize(self, text: str, *, voice: str, rate_wpm: int) -> bytes:
        """``text`` spoken by ``voice`` at ``rate_wpm`` words a minute, as PCM16LE.

        Raises:
            EspeakError: unknown voice or synthesis failure.
        """
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_RATE, rate_wpm, 0)
            self._chunks = []
            status = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            pcm, self._chunks = b"".join(self._chunks), []
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed ({status})")
        return pcm

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0


def _languages(address: int | None) -> list[str]:
    """Parse espeak's language list: (priority byte, NUL-terminated name)*, then a 0 byte."""
    out: list[str] = []
    if not address:
        return out
    while ctypes.c_ubyte.from_address(address).value:
        name = ctypes.string_at(address + 1)
        out.append(name.decode(errors="replace"))
        address += len(name) + 2
    return out


@functools.cache
def load_library() -> EspeakLibrary:
    """The process's libespeak-ng, loaded and initialised once.

    Raises:
        EspeakError: neither espeakng-loader nor a system libespeak-ng is available.
    """
    try:
        import espeakng_loader  # type: ignore[import-untyped]
    except ImportError:
        name = ctypes.util.find_library("espeak-ng")
        if name is None:
            raise EspeakError("libespeak-ng not found") from None
        return EspeakLibrary(ctypes.CDLL(name), None)
    return EspeakLibrary(
        ctypes.CDLL(espeakng_loader.get_library_path()), espeakng_loader.get_data_path()
    )
