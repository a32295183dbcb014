"""Two feature streams compared at every lag, exactly: the numeric core of the weight-free engine.

Visual features live on the 25 fps grid (one row per frame midpoint), audio features on a 5 ms grid. A lag
of ``k`` steps pairs visual row ``i`` with the audio averaged over the 40 ms around the same moment plus
``5 k`` ms. Every statistic the engines need at a lag (counts, sums, squares, cross products over the
frames whose whole audio window exists) comes for all lags at once from prefix sums and one FFT
cross-correlation (:func:`lag_moments`), so a +/-10 s search costs little more than a narrow one. Both the
per-clip canonical correlation (:func:`pipeline.cca.lag_curve`) and the learned model's projected
correlations (:mod:`pipeline.lipmodel`) are read off these moments.

Also here: the signal conditioning both use (1 s high-pass, robust z), and the peak helpers (z of a peak,
parabolic refinement, damping of lags with little overlap). Pure NumPy; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from syncnet.constants import SAMPLE_RATE
from syncnet.scoring import refine_minimum

from .media import GRID_FPS

HOP = 80  #: 5 ms audio frames
STEPS_PER_FRAME = SAMPLE_RATE // GRID_FPS // HOP  #: 8 audio frames per grid frame
#: Below this share of the track's frames overlapping the audio, a lag is not scored.
MIN_OVERLAP = 0.4
#: A peak's z compares it with the curve this far (ms) or more from it.
PEAK_EXCLUSION_MS = 120.0


# ------------------------------------------------------------------------------------------- conditioning

def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 (edges averaged over what exists)."""
    width = max(1, int(width))
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x], axis=0), axis=0)
    n = len(x)
    lo = np.clip(np.arange(n) - width // 2, 0, n)
    hi = np.clip(np.arange(n) + width - width // 2, 0, n)
    return (c[hi] - c[lo]) / (hi - lo).reshape((-1,) + (1,) * (x.ndim - 1))


def robust_z(x: np.ndarray, clip: float) -> np.ndarray:
    """(x - median) / (1.4826 MAD) per column, clipped to +/-clip."""
    med = np.median(x, axis=0)
    mad = np.median(np.abs(x - med), axis=0) * 1.4826
    mad = np.where(mad > 1e-12, mad, np.std(x, axis=0) + 1e-12)
    return np.clip((x - med) / mad, -clip, clip)


def highpass(x: np.ndarray, rate: float, clip: float) -> np.ndarray:
    """Subtract a 1 s moving average, then robust-z and clip."""
    return robust_z(x - moving_average(x, int(round(rate))), clip)


def frame_window_means(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 5 ms feature row averaged over the 8 rows (40 ms, one video frame) around it, and where that is whole.

    Row j of ``feats`` describes the audio centred at j * 5 + 12.5 ms, so row j of the result is centred at
    j * 5 + 10 ms.
    """
    m, w = len(feats), STEPS_PER_FRAME
    c = np.concatenate([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0)])
    j = np.arange(m)
    lo, hi = j - w // 2, j + w - w // 2
    valid = _whole_windows(m)
    out = np.zeros_like(feats)
    out[valid] = (c[hi[valid]] - c[lo[valid]]) / w
    return out, valid


def _whole_windows(m: int) -> np.ndarray:
    """Which of ``m`` 5 ms rows have their whole 40 ms window (:func:`frame_window_means`) inside the audio."""
    j = np.arange(m)
    return (j - STEPS_PER_FRAME // 2 >= 0) & (j + STEPS_PER_FRAME - STEPS_PER_FRAME // 2 <= m)


def _prefix(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])


# ------------------------------------------------------------------------------------------- all-lag moments

@dataclass
class LagMoments:
    """Per lag: frames used (``cnt``) and the sums over them: ``sx`` (L, p), ``sxx`` (L, p, p), ``sy`` (L, q),
    ``syy`` (L, q, q), ``sxy`` (L, p, q); and ``heard`` (L,), how many of those frames meet sound: the audio's
    weight (:func:`lag_moments`' ``weight``, e.g. the speech gate) summed over them, ``cnt`` without one."""

    cnt: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    sy: np.ndarray
    syy: np.ndarray
    sxy: np.ndarray
    heard: np.ndarray

    def plus(self, other: LagMoments, in_place: bool = False) -> LagMoments:
        """The moments of two disjoint runs of frames taken together, lag by lag: every count and sum adds up,
        so a stretch's moments come from its two halves' without a pass of their own. ``in_place``: into this
        one's arrays (no third set of sums in memory; this one is then the total)."""
        names = ("cnt", "sx", "sxx", "sy", "syy", "sxy", "heard")
        if in_place:
            for k in names:
                np.add(getattr(self, k), getattr(other, k), out=getattr(self, k))
            return self
        return LagMoments(*(getattr(self, k) + getattr(other, k) for k in names))

    def covariances(self, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Cxx, Cyy, Cxy) at the lags ``ok`` selects (a mask or indices; population covariances)."""
        c = self.cnt[ok].astype(np.float64)[:, None, None]
        mx, my = self.sx[ok][:, :, None] / c, self.sy[ok][:, :, None] / c
        cxx = self.sxx[ok] / c - mx @ np.swapaxes(mx, 1, 2)
        cyy = self.syy[ok] / c - my @ np.swapaxes(my, 1, 2)
        cxy = self.sxy[ok] / c - mx @ np.swapaxes(my, 1, 2)
        return cxx, cyy, cxy


def lag_moments(x: np.ndarray, start: int, feats: np.ndarray, lag_steps: np.ndarray,
                weight: np.ndarray | None = None) -> LagMoments | None:
    """The sums behind every lag's covariances, exactly, in O(n log n); None without usable audio.

    ``x`` (n, p) are visual features at the midpoints of grid frames ``start + i`` and ``start + i + 1``
    (time (start + i + 0.5) * 40 ms); ``feats`` (m, q) are 5 ms audio features; a lag of k steps pairs
    ``x[i]`` with the audio averaged over the 40 ms around that time + 5k ms. Only the frames whose whole
    audio window exists count, so the overlap shrinks towards large lags.

    The sums run over a contiguous run of frames: prefix sums give the visual and audio terms for every lag
    at once (the audio in 8 phases, one per 5 ms step within a frame), and one FFT cross-correlation gives
    the cross terms. ``weight`` (m,): how much each 5 ms row of ``feats`` is sound (the speech gate), summed
    per lag over the overlapping frames into ``heard``.
    """
    n, p = x.shape
    b, valid = frame_window_means(feats)
    m, q = b.shape
    lags = np.asarray(lag_steps, dtype=np.int64)
    if n == 0 or not valid.any():
        return None
    k0 = _first_row(start)
    ilo, ihi = _overlap(valid, start, n, lags)
    cnt = ihi - ilo

    px, pxx = _prefix(x), _prefix((x[:, :, None] * x[:, None, :]).reshape(n, -1))
    sx, sxx = px[ihi] - px[ilo], (pxx[ihi] - pxx[ilo]).reshape(-1, p, p)
    b = np.where(valid[:, None], b, 0.0)
    # the weight averaged over each frame's 40 ms window, as the features are
    w = None if weight is None else frame_window_means(np.asarray(weight, np.float64)[:, None])[0][:, 0]
    sy, syy = np.zeros((len(lags), q)), np.zeros((len(lags), q * q))
    heard = cnt.astype(np.float64)
    first = k0 + lags
    phase, base = first % STEPS_PER_FRAME, first // STEPS_PER_FRAME
    for ph in range(STEPS_PER_FRAME):
        sel = phase == ph
        if not sel.any():
            continue
        bp = b[ph::STEPS_PER_FRAME]  # one phase's products at a time: an eighth of the memory of all of them
        p1, p2 = _prefix(bp), _prefix((bp[:, :, None] * bp[:, None, :]).reshape(len(bp), -1))
        size = len(p1) - 1
        lo = np.clip(ilo[sel] + base[sel], 0, size)
        hi = np.maximum(np.clip(ihi[sel] + base[sel], 0, size), lo)
        sy[sel], syy[sel] = p1[hi] - p1[lo], p2[hi] - p2[lo]
        if w is not None:
            pw = _prefix(w[ph::STEPS_PER_FRAME])
            heard[sel] = pw[hi] - pw[lo]
    syy = syy.reshape(-1, q, q)

    reach = int(np.abs(lags).max()) + STEPS_PER_FRAME
    # circular correlation: no product wraps onto a lag within +/-reach once the length covers the longer
    # stream plus the reach (twice that, as before, only cost FFT time)
    nfft = 1 << int(math.ceil(math.log2(max(k0 + STEPS_PER_FRAME * n, m) + reach)))
    xu = np.zeros((nfft, p))
    xu[k0 + STEPS_PER_FRAME * np.arange(n)] = x
    fb = np.fft.rfft(np.concatenate([b, np.zeros((nfft - m, q))]), axis=0)
    fx = np.fft.rfft(xu, axis=0)
    sxy = np.empty((len(lags), p, q))
    at = lags % nfft
    for a in range(p):  # column by column: bounded memory on long clips
        sxy[:, a, :] = np.fft.irfft(np.conj(fx[:, a])[:, None] * fb, nfft, axis=0)[at]
    return LagMoments(cnt, sx, sxx, sy, syy, sxy, heard)


def _first_row(start: int) -> int:
    """The window-mean audio row centred on grid frame ``start``'s visual row at lag 0: (start + 0.5) * 40 ms is
    row * 5 + 10 ms (:func:`frame_window_means`)."""
    return STEPS_PER_FRAME * start + 2


def _overlap(valid: np.ndarray, start: int, n: int, lags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per lag, the run ``ilo:ihi`` of the ``n`` frames from grid frame ``start`` whose whole 40 ms audio
    window exists (``valid``: :func:`frame_window_means`); ``ihi >= ilo``."""
    jv = np.flatnonzero(valid)
    k0 = _first_row(start)
    ilo = np.clip(np.ceil((jv[0] - k0 - lags) / STEPS_PER_FRAME).astype(int), 0, n)
    ihi = np.clip(np.floor((jv[-1] - k0 - lags) / STEPS_PER_FRAME).astype(int) + 1, 0, n)
    return ilo, np.maximum(ihi, ilo)


def overlap_span(feats: np.ndarray, start: int, n: int, lag_step: int) -> tuple[int, int]:
    """The frames ``lo:hi`` of ``n`` from grid frame ``start`` that meet the 5 ms audio features ``feats`` at a
    lag of ``lag_step`` steps (as :func:`lag_moments` counts them; ``lo == hi`` when none do). At a lag of
    seconds on a short clip this is a part of the track, and what is read there should be read on that part."""
    valid = _whole_windows(len(feats))
    if n == 0 or not valid.any():
        return 0, 0
    ilo, ihi = _overlap(valid, start, n, np.array([lag_step], dtype=np.int64))
    return int(ilo[0]), int(ihi[0])


def scored_lags(cnt: np.ndarray, n: int, min_overlap: float = MIN_OVERLAP) -> np.ndarray:
    """The lags with enough overlap to be scored."""
    return cnt >= max(3, min_overlap * n)


def audio_around(feats: np.ndarray, start: int, n: int, reach: int) -> tuple[int, np.ndarray]:
    """The audio rows that ``n`` frames from grid frame ``start`` can meet within ``reach`` steps, and the
    start frame relative to them: a lag search on a stretch of the track then costs by the stretch, not by
    the whole soundtrack. The slice begins on a frame boundary, so lags are unchanged; its margin covers the
    40 ms window around the farthest lag, so no row that the full audio would use is lost.
    """
    margin = (reach + 2 * STEPS_PER_FRAME) // STEPS_PER_FRAME + 1
    s0 = max(0, start - margin)
    s1 = start + n + margin
    return start - s0, feats[STEPS_PER_FRAME * s0 : STEPS_PER_FRAME * s1]


# ------------------------------------------------------------------------------------------- peaks

def peak_z(curve: np.ndarray, lags: np.ndarray, best: int) -> float:
    """How far the peak stands above the curve away from it (lags more than 120 ms from the peak)."""
    far = np.abs(lags - lags[best]) > PEAK_EXCLUSION_MS
    rest = curve[far]
    if rest.size < 3 or rest.std() == 0:
        return 0.0
    return float((curve[best] - rest.mean()) / rest.std())


def parabolic_peak(curve: np.ndarray, best: int, step: float) -> float:
    """Offset of the vertex of the parabola through the peak and its neighbours, in lag units (0 at an end
    or on a flat stretch): :func:`syncnet.scoring.refine_minimum` of the negated curve."""
    return (refine_minimum(-np.asarray(curve, dtype=np.float64), best) - best) * step


def damped(raw: np.ndarray, heard: np.ndarray, n: int) -> np.ndarray:
    """The curve times sqrt(the share of the ``n`` frames that meet sound at each lag, ``heard``): fewer
    samples raise a correlation by chance, and a frame that meets silence (a pause, or a soundtrack that
    starts late or ends early) is no sample of speech however many audio samples it meets.
    Lags without enough overlap (NaN) get the curve's minimum."""
    curve = raw * np.sqrt(heard / max(n, 1))
    return np.nan_to_num(curve, nan=float(np.nanmin(curve)))


def best_near(curve: np.ndarray, lags: np.ndarray, centre_ms: float, within_ms: float) -> int:
    """Index of the curve's highest point within ``within_ms`` of ``centre_ms``."""
    near = np.flatnonzero(np.abs(lags - centre_ms) <= within_ms)
    if near.size == 0:
        near = np.array([int(np.argmin(np.abs(lags - centre_ms)))])
    return int(near[np.argmax(curve[near])])
