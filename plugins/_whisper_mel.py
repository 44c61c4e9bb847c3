"""Whisper-style log-mel features of the last 8 s of 16 kHz audio, in numpy (sans-IO).

This is the input of the Smart Turn v3 end-of-turn model (``smart_turn``), which was trained on
the features of Hugging Face's ``WhisperFeatureExtractor`` with an 8 s window. The recipe:

1. **Window.** The last 8 s (128,000 samples); shorter audio is padded with zeros *before* it,
   so the end of the audio is always at the end of the window.
2. **Normalise.** Zero mean, unit variance over the whole window (padding included), in
   float32: ``(x - mean) / sqrt(var + 1e-7)``.
3. **Power spectrum.** 400-sample frames (25 ms) every 160 samples (10 ms), centred: the signal
   is padded with its reflection (200 samples each side), a periodic Hann window, the squared
   magnitude of the real FFT (201 bins from 0 to 8 kHz). 801 frames; the last one is dropped.
4. **Mel.** 80 triangular filters from 0 to 8 kHz on the Slaney mel scale (linear below 1 kHz,
   logarithmic above), each scaled to unit area (Slaney normalisation).
5. **Log and range.** ``log10`` of the energies floored at 1e-10; values more than 8 (80 dB)
   below the window's maximum are raised to it; then ``(x + 4) / 4``.

The result is ``(80, 800)`` float32, mostly within [-1, 1]. One call costs a few milliseconds
(the FFT of 801 frames dominates).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["FRAMES", "MELS", "SAMPLE_RATE", "WINDOW_SAMPLES", "log_mel", "mel_filters"]

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 8 * SAMPLE_RATE
MELS = 80
FRAMES = WINDOW_SAMPLES // 160  # 800: 10 ms each
_FFT = 400
_HOP = 160
_BINS = _FFT // 2 + 1
_VARIANCE_EPS = 1e-7
_ENERGY_FLOOR = 1e-10
_RANGE = 8.0  # log10 units below the maximum that are kept (80 dB)

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]

# Slaney's mel scale: 3 mels per 200 Hz up to 1 kHz (mel 15), then logarithmic with 27 mels
# per factor 6.4 of frequency.
_BREAK_HZ = 1000.0
_BREAK_MEL = 15.0
_HZ_PER_MEL = 200.0 / 3.0
_MELS_PER_LOG_HZ = 27.0 / np.log(6.4)


def _hz_to_mel(hz: _F64) -> _F64:
    linear = hz / _HZ_PER_MEL
    above = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) * _MELS_PER_LOG_HZ
    return np.where(hz < _BREAK_HZ, linear, above)


def _mel_to_hz(mel: _F64) -> _F64:
    linear = mel * _HZ_PER_MEL
    above = _BREAK_HZ * np.exp((np.maximum(mel, _BREAK_MEL) - _BREAK_MEL) / _MELS_PER_LOG_HZ)
    return np.where(mel < _BREAK_MEL, linear, above)


def mel_filters() -> _F64:
    """The ``(80, 201)`` filter bank: row ``m`` weighs the FFT bins of mel band ``m``."""
    top = np.array([SAMPLE_RATE / 2.0])
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(top)[0]), MELS + 2))
    bins = np.linspace(0.0, SAMPLE_RATE / 2.0, _BINS)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - low) / (centre - low)
    falling = (high - bins[None, :]) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    area: _F64 = weights * (2.0 / (high - low))
    return area


_FILTERS_T = np.ascontiguousarray(mel_filters().T)  # (201, 80)
_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(_FFT) / _FFT)  # periodic


def log_mel(samples: npt.NDArray[np.floating]) -> _F32:
    """The ``(80, 800)`` features of the last 8 s of ``samples`` (float, 16 kHz, mono).

    See the module docstring for the recipe. Pure: ``samples`` is not changed.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:]
    if len(x) < WINDOW_SAMPLES:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - len(x), np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(_VARIANCE_EPS))
    half = _FFT // 2
    padded = np.pad(x.astype(np.float64), half, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _FFT)[::_HOP][:FRAMES]
    spectrum = np.fft.rfft(frames * _HANN, axis=1)  # (800, 201)
    power = spectrum.real**2 + spectrum.imag**2
    energies = np.log10(np.maximum(power @ _FILTERS_T, _ENERGY_FLOOR))  # (800, 80)
    energies = np.maximum(energies, energies.max() - _RANGE)
    out: _F32 = np.ascontiguousarray(((energies + 4.0) / 4.0).T, dtype=np.float32)
    return out
