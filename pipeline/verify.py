"""Verification of a written correction: how far a file's audio was actually moved against the original's.

Kept apart from the writer (:mod:`pipeline.correct`): the fix flow writes, then asks this module, which
reads both files afresh, so a writer bug cannot hide behind its own bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syncnet.media import MediaError, load_audio
from syncnet.scoring import refine_minimum

log = logging.getLogger(__name__)

#: The rate :func:`measure_shift` compares at (what :func:`syncnet.media.load_audio` gives).
MEASURE_RATE = 16000
#: :func:`measure_shift` looks at no more than this much audio, so long files stay fast.
MEASURE_SECONDS = 60.0
#: Audio quieter than this (peak, int16 units) counts as silence: there is nothing to correlate.
SILENCE_PEAK = 8
#: A planned lag that jumps by more than this between two 10 ms moments is a step (an edit), not a drift
#: (150 ms/min of drift moves it 0.025 ms in 10 ms).
STEP_JUMP_MS = 20.0


def _overlap_energy(cum_a: np.ndarray, cum_b: np.ndarray, lags: np.ndarray, len_a: int,
                    len_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Per lag s, sqrt(sum a[n+s]^2 * sum b[n]^2) over the n where both exist (0 where they do not overlap)."""
    lo = np.maximum(0, -lags)
    hi = np.minimum(len_b, len_a - lags)
    hi = np.maximum(hi, lo)
    energy_b = cum_b[hi] - cum_b[lo]
    energy_a = cum_a[hi + lags] - cum_a[lo + lags]
    return np.sqrt(np.maximum(energy_a, 0.0) * np.maximum(energy_b, 0.0)), hi - lo


def correlation_size(len_a: int, len_b: int, max_lag: int) -> int:
    """The FFT length at which the circular cross-correlation of two zero-padded signals equals the linear
    one at every lag within +/-``max_lag``: the longer signal plus the reach (not both signals' lengths),
    rounded up to a length whose factors are small. Half the work of the usual power of two above
    ``len_a + len_b``, and on a minute at 16 kHz a quarter of the time (0.05 s instead of 0.2 s)."""
    return five_smooth(max(len_a, len_b) + max_lag + 1)


def five_smooth(n: int) -> int:
    """The smallest 2^i 3^j 5^k >= ``n``: lengths NumPy's FFT does fastest (``scipy.fft.next_fast_len``
    without the 0.4 s of importing SciPy into a command that needs nothing else of it)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def measure_shift(original: Path, corrected: Path, max_ms: float = 2500.0,
                  original_audio: np.ndarray | None = None) -> float:
    """How far ``corrected``'s audio was moved EARLIER than ``original``'s, in ms (negative: later).

    Same sign as ``lag_ms`` in :func:`write_shifted`, so ``measure_shift(src, write_shifted(src, dst,
    L).output)`` is L. Both first audio streams are decoded to 16 kHz mono, each aligned to its own video
    (:func:`syncnet.media.load_audio`), and cut to the first minute; the lag within +/-``max_ms`` with the
    highest normalised cross-correlation wins, refined below a sample by a parabola through the peak.
    Normalising each lag by the energy of the overlapping parts keeps silence added at either end (what a
    shift does) from pulling the peak, and only lags where at least half of the shorter signal overlaps
    count, so a lucky match of two short edges cannot win. ``original_audio``: the original's audio as
    :func:`~syncnet.media.load_audio` gives it at 16 kHz, when the caller has already read it (the fix flow's
    analysis did); the corrected file is always read afresh. Raises :class:`~syncnet.media.MediaError` when
    either file has no audio or only silence.
    """
    limit = int(MEASURE_SECONDS * MEASURE_RATE)
    first = original_audio if original_audio is not None else load_audio(original, MEASURE_RATE)
    a = _audible(first[:limit], original)
    b = _audible(load_audio(corrected, MEASURE_RATE)[:limit], corrected)
    return _shift_between(a, b, max_ms, Path(original).name, Path(corrected).name)


def _audible(audio: np.ndarray, path: Path) -> np.ndarray:
    if audio.size == 0 or int(np.abs(audio.astype(np.int32)).max()) < SILENCE_PEAK:
        raise MediaError(f"{Path(path).name}: the audio is silent, so there is nothing to measure")
    signal = audio.astype(np.float64)
    return signal - signal.mean()


def _shift_between(a: np.ndarray, b: np.ndarray, max_ms: float, name_a: str, name_b: str) -> float:
    """How far ``b`` is moved earlier than ``a`` (ms): the normalised cross-correlation peak (see above)."""
    # b[n] = a[n + s]: s > 0 when the audio was moved earlier
    max_lag = int(round(max_ms * MEASURE_RATE / 1000))
    nfft = correlation_size(len(a), len(b), max_lag)
    xcorr = np.fft.irfft(np.fft.rfft(a, nfft) * np.conj(np.fft.rfft(b, nfft)), nfft)
    lags = np.arange(-min(max_lag, len(b) - 1), min(max_lag, len(a) - 1) + 1)
    raw = xcorr[lags % nfft]  # xcorr[s] = sum_n a[n + s] b[n], negative s wrapped around
    cum_a = np.concatenate([[0.0], np.cumsum(a * a)])
    cum_b = np.concatenate([[0.0], np.cumsum(b * b)])
    norm, overlap = _overlap_energy(cum_a, cum_b, lags, len(a), len(b))
    valid = (overlap >= min(len(a), len(b)) // 2) & (norm > 0)
    if not valid.any():
        raise MediaError(f"{name_b}: too little audio to measure a shift of up to {max_ms:g} ms")
    ncc = np.where(valid, raw / np.where(norm > 0, norm, 1.0), -np.inf)
    i = int(np.argmax(ncc))
    peak = float(ncc[i])
    offset = 0.0
    if 0 < i < len(lags) - 1 and np.isfinite(ncc[i - 1]) and np.isfinite(ncc[i + 1]):
        offset = refine_minimum(-ncc, i) - i  # the vertex of the parabola through the peak
    lag_ms = (lags[i] + offset) * 1000 / MEASURE_RATE
    if peak < 0.3:
        log.warning("weak match between %s and %s (normalised correlation %.2f): the measured %+.2f ms may "
                    "be wrong", name_a, name_b, peak, lag_ms)
    log.debug("measured shift %+.3f ms (normalised correlation %.3f)", lag_ms, peak)
    return float(lag_ms)


def _envelope(audio: np.ndarray, width: int = MEASURE_RATE // 200) -> np.ndarray:
    """|x| averaged over ``width`` samples (5 ms): what two slightly differently timed copies share."""
    x = np.abs(audio.astype(np.float64))
    c = np.concatenate([[0.0], np.cumsum(x)])
    return (c[width:] - c[:-width]) / width


@dataclass(frozen=True)
class WindowShift:
    """One window of :func:`windows_along`: where it is, the shift read there, and how much each moment of it
    weighs in that reading."""

    at_s: float  #: middle of the window (s)
    shift_ms: float
    times_s: np.ndarray  #: moments of the window, every 10 ms
    weights: np.ndarray  #: the corrected envelope's power around each (what the correlation peak is weighted by)

    def expected(self, lag_at: Callable[[float], float]) -> float:
        """What a planned lag that changes within the window should read here: the plan averaged over the
        window with the weights the cross-correlation gives each moment. With 150 ms/min of drift, a window
        whose speech sits in its first half reads several ms off the plan at its middle, and rightly so.

        A step of the plan within the window (an edit: the lag jumps by more than STEP_JUMP_MS) is not
        averaged: the two sides' sounds are then shifted apart, and the correlation peaks at the side with
        more weight (the other side makes a second, lower peak), so that side's average is what it reads."""
        total = float(self.weights.sum())
        if total <= 0:
            return float(lag_at(self.at_s))
        plan = np.array([lag_at(float(t)) for t in self.times_s])
        jumps = np.abs(np.diff(plan))
        if len(jumps) and jumps.max() > STEP_JUMP_MS:
            k = int(np.argmax(jumps)) + 1
            side = slice(0, k) if self.weights[:k].sum() >= self.weights[k:].sum() else slice(k, None)
            if self.weights[side].sum() > 0:
                return float(np.dot(self.weights[side], plan[side]) / self.weights[side].sum())
        return float(np.dot(self.weights, plan) / total)


def windows_along(original: Path, corrected: Path, window_s: float = 10.0, max_ms: float = 2500.0,
                  ) -> list[WindowShift]:
    """:func:`measure_shift` window by window over the whole clip (windows that are silent in either are
    left out).

    What a correction of a changing lag is checked with: each window of the corrected audio against the
    original around the same time. Within a window a resampled correction moves by a few ms (0.2 % is 20 ms
    over 10 s), which decorrelates raw waveforms, so the windows are compared by their amplitude envelopes
    (|x| over 5 ms): the peak is the window's mean shift, weighted by where the envelope moves most, to about
    a millisecond after the parabola.
    """
    a_all = _envelope(load_audio(original, MEASURE_RATE))
    b_all = _envelope(load_audio(corrected, MEASURE_RATE))
    w = int(window_s * MEASURE_RATE)
    pad = int(max_ms * MEASURE_RATE / 1000)
    block = MEASURE_RATE // 100  # 10 ms
    out = []
    for start in range(0, max(1, min(len(a_all), len(b_all)) - w + 1), w):
        b = b_all[start : start + w]
        lo = max(0, start - pad)
        a = a_all[lo : start + w + pad]
        if len(b) < w // 2 or b.max() < SILENCE_PEAK or a.max() < SILENCE_PEAK:
            continue
        # b is put at its own place within a's stretch, so the shift found is against the original's time
        s = _shift_between(a - a.mean(), np.concatenate([np.zeros(start - lo), b - b.mean()]), max_ms,
                           Path(original).name, Path(corrected).name)
        power = ((b - b.mean()) ** 2)[: len(b) // block * block].reshape(-1, block).sum(axis=1)
        times = (start + block * (np.arange(len(power)) + 0.5)) / MEASURE_RATE
        out.append(WindowShift((start + w / 2) / MEASURE_RATE, s, times, power))
    return out


def shifts_along(original: Path, corrected: Path, window_s: float = 10.0, max_ms: float = 2500.0,
                 ) -> list[tuple[float, float]]:
    """:func:`windows_along` as ``(middle of the window in s, shift ms)`` pairs."""
    return [(w.at_s, w.shift_ms) for w in windows_along(original, corrected, window_s, max_ms)]
