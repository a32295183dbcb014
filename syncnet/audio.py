"""MFCC features exactly as the reference computes them.

The reference calls ``python_speech_features.mfcc(signal, 16000)`` with every default on the raw int16
sample values (not scaled to +/-1). This module re-implements that function in vectorised NumPy, in the
same float64 arithmetic, so the model sees the same numbers without the extra dependency: 25 ms
rectangular windows every 10 ms, pre-emphasis 0.97, a 512-point power spectrum, 26 mel filters over
0-8000 Hz, log, orthonormal DCT-II keeping 13 coefficients, a sine lifter of 22, and coefficient 0
replaced by the log frame energy.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .constants import MFCC_PER_FRAME, MFCC_WINDOW, N_MFCC, SAMPLE_RATE

WIN_LENGTH = 400  #: 25 ms at 16 kHz
HOP_LENGTH = 160  #: 10 ms at 16 kHz: 100 MFCC frames/s, 4 per 25 fps video frame
N_FFT = 512
N_MELS = 26
PREEMPHASIS = 0.97
CEP_LIFTER = 22
#: Frames per block of spectra (memory stays at ~20 MB whatever the length of the audio).
MFCC_BLOCK = 8192

assert SAMPLE_RATE // HOP_LENGTH == 25 * MFCC_PER_FRAME


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (mel / 2595.0) - 1)


@lru_cache(maxsize=4)
def mel_filterbank(n_filters: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular filters ``(n_filters, n_fft // 2 + 1)`` built on integer FFT bins, as the reference does."""
    high = sample_rate / 2
    mel_points = np.linspace(_hz_to_mel(0), _hz_to_mel(high), n_filters + 2)
    bins = np.floor((n_fft + 1) * _mel_to_hz(mel_points) / sample_rate).astype(int)
    fbank = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        fbank[j, lo:mid] = (np.arange(lo, mid) - lo) / (mid - lo)
        fbank[j, mid:hi] = (hi - np.arange(mid, hi)) / (hi - mid)
    fbank.flags.writeable = False
    return fbank


@lru_cache(maxsize=4)
def dct_matrix(n_in: int = N_MELS, n_out: int = N_MFCC) -> np.ndarray:
    """Orthonormal DCT-II as a matrix ``(n_in, n_out)``: the first ``n_out`` rows of SciPy's ``dct(norm='ortho')``."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    mat = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    mat[:, 0] /= np.sqrt(2.0)
    mat.flags.writeable = False
    return mat


def n_mfcc_frames(n_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Frames the reference produces: 1 + ceil((N - 400) / 160), and 1 for anything shorter."""
    if n_samples <= WIN_LENGTH:
        return 1
    return 1 + math.ceil((n_samples - WIN_LENGTH) / hop_length)


def mfcc(signal: np.ndarray, hop_length: int = HOP_LENGTH, window: np.ndarray | None = None) -> np.ndarray:
    """MFCCs ``(13, n_frames)`` float32 of a 16 kHz mono signal given in int16 units.

    ``signal`` may be int16 or float; floats must already be on the int16 scale (the reference never
    normalises). The result is transposed to the reference's ``(coefficient, time)`` layout. The defaults
    are SyncNet's; ``hop_length`` and a ``window`` (python_speech_features' ``winfunc``) serve other users.
    """
    x = np.asarray(signal, dtype=np.float64).ravel()
    x = np.concatenate([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
    n_frames = n_mfcc_frames(len(x), hop_length)
    padded_len = (n_frames - 1) * hop_length + WIN_LENGTH
    x = np.concatenate([x, np.zeros(padded_len - len(x))])
    all_frames = np.lib.stride_tricks.sliding_window_view(x, WIN_LENGTH)[::hop_length][:n_frames]
    cep = np.empty((n_frames, N_MFCC))
    lift = 1 + (CEP_LIFTER / 2.0) * np.sin(np.pi * np.arange(N_MFCC) / CEP_LIFTER)
    # in blocks of frames: the spectra of a 30-minute clip would take gigabytes at once
    for start in range(0, n_frames, MFCC_BLOCK):
        frames = all_frames[start : start + MFCC_BLOCK]
        if window is not None:
            frames = frames * window
        power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2 / N_FFT
        energy = power.sum(axis=1)
        energy[energy == 0] = np.finfo(float).eps
        feat = power @ mel_filterbank().T
        feat[feat == 0] = np.finfo(float).eps
        block = np.log(feat) @ dct_matrix()
        block *= lift
        block[:, 0] = np.log(energy)
        cep[start : start + len(frames)] = block
    return cep.T.astype(np.float32)


def audio_windows(mfcc_feat: np.ndarray, first: int, count: int) -> np.ndarray:
    """Audio windows ``(count, 1, 13, 20)`` for video windows ``first .. first+count-1``.

    Window v covers MFCC columns 4v .. 4v+19 (5 video frames of 4 columns each).
    """
    cols = np.lib.stride_tricks.sliding_window_view(mfcc_feat, MFCC_WINDOW, axis=1)[:, ::MFCC_PER_FRAME]
    win = cols[:, first : first + count]  # (13, count, 20)
    return np.ascontiguousarray(win.transpose(1, 0, 2))[:, None]
