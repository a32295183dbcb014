"""The weight-free engine (``cca``): canonical correlation of mouth motion and speech, at every lag.

No trained sync weights. From the mouth crops of a face track: the velocity of 12 PCA components and of
a vertical intensity profile (mouth darkness and 8 row bands, which follow the lips opening); from the
audio: the velocity of 13 MFCCs and of log energy in 5 bands. Their first canonical correlation is
computed at every lag on a 5 ms grid over +/-3 s or more, exactly and cheaply: the sums behind the
per-lag covariances come from prefix sums and one FFT cross-correlation (:func:`lag_curve`), so a wide
search costs little more than a narrow one. Lags where face and sound overlap less are damped by
sqrt(overlap), because a canonical correlation over fewer samples is higher by chance.

``confidence`` is the engine's own score: how far the peak stands above the rest of the curve (z).
``p_correct`` is the chance that the estimate is within 40 ms, read off a logistic calibration of z and the
clip's length, fitted on the development set (``cca_calibration.json``, reproduced by
``benchmarks/bench_accuracy.py --write-calibration``, which reports its figures with whole source projects
held out); it decides,
at a threshold chosen so that video paired with another clip's audio is called confident at most 1 % of
the time. Measured figures: README, "Engines".
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from syncnet.audio import mfcc
from syncnet.constants import SAMPLE_RATE
from syncnet.scoring import refine_minimum

from .analysis import Analysis, FaceTrack
from .estimates import Estimate, shift_audio
from .media import GRID_FPS

log = logging.getLogger(__name__)

N_COMPONENTS = 12
MOUTH_VEC = (32, 20)  #: mouth crops are area-resized to this before PCA
PROFILE_BANDS = 8  #: row bands of the mouth's vertical intensity profile
HOP = 80  #: 5 ms audio frames
WIN = 400  #: 25 ms Hann window
STEPS_PER_FRAME = SAMPLE_RATE // GRID_FPS // HOP  #: 8 audio frames per grid frame
ENERGY_BANDS_HZ = (80, 300, 800, 1500, 3000, 8000)
LAG_STEP_MS = 5.0
#: The weight-free engine always searches at least +/-3 s (real offsets of 1-3 s are common).
MIN_SEARCH_MS = 3000.0
#: Ridge on both covariances, as a share of their mean variance: strong shrinkage, which keeps chance
#: correlations of 21 x 19 features over a few seconds down (chosen on the dev set: 0.1, 0.3, 1, 3 tried).
RIDGE = 1.0
MIN_OVERLAP = 0.4
PEAK_EXCLUSION_MS = 120.0
#: An estimate counts as correct within this (the calibration's target).
CORRECT_MS = 40.0
#: Shortest face track the engine reads (2 s); below the calibrated precision it abstains anyway.
MIN_SPEECH_FRAMES = 2 * GRID_FPS
CLIP_Z = 4.0
#: Each half of a track must hold this many frames for the halves' agreement to be read (1 s).
MIN_HALF_FRAMES = GRID_FPS
HALF_AGREE_MS = 20.0
CALIBRATION_FILE = Path(__file__).with_name("cca_calibration.json")


# ------------------------------------------------------------------------------------------- signal helpers

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


# ------------------------------------------------------------------------------------------- features

def mouth_pca_velocity(crops: np.ndarray) -> np.ndarray:
    """Velocity of the first 12 PCA components of normalised 32x20 mouth crops. (n-1, 12).

    The components come from the 640x640 covariance (eigenvectors = the right singular vectors of the
    centred data), in float32 blocks, so a 30-minute clip needs ~120 MB here rather than gigabytes.
    """
    import cv2

    n = len(crops)
    x = np.empty((n, MOUTH_VEC[0] * MOUTH_VEC[1]), np.float32)
    for i, c in enumerate(crops):
        x[i] = cv2.resize(c, MOUTH_VEC, interpolation=cv2.INTER_AREA).reshape(-1)
    x -= x.mean(axis=1, keepdims=True)
    x /= x.std(axis=1, keepdims=True) + 1e-6
    x -= x.mean(axis=0)
    cov = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, n, 8192):
        block = x[start : start + 8192].astype(np.float64)
        cov += block.T @ block
    _, vecs = np.linalg.eigh(cov)
    components = vecs[:, ::-1][:, :N_COMPONENTS]
    p = x @ components.astype(np.float32)
    return np.diff(p.astype(np.float64), axis=0)


def mouth_profile_velocity(crops: np.ndarray) -> np.ndarray:
    """Velocity of the mouth's vertical profile: dark-interior share and 8 row bands of the centre. (n-1, 9).

    The centre of the crop (middle half of the width, middle two thirds of the height) is normalised per
    frame, so lighting changes cancel; its share of dark pixels grows as the lips part, and the row bands
    move with the lips, while side-to-side jitter of the crop barely touches either.
    """
    import cv2

    h, w = crops.shape[1:]
    profile = np.empty((len(crops), PROFILE_BANDS + 1))
    for start in range(0, len(crops), 4096):
        c = crops[start : start + 4096, h // 6 : 5 * h // 6, w // 4 : 3 * w // 4].astype(np.float32)
        c = (c - c.mean(axis=(1, 2), keepdims=True)) / (c.std(axis=(1, 2), keepdims=True) + 1e-6)
        rows = np.ascontiguousarray(c.mean(axis=2))
        profile[start : start + len(c), 0] = (c < -1.0).mean(axis=(1, 2))
        profile[start : start + len(c), 1:] = cv2.resize(rows, (PROFILE_BANDS, len(rows)), interpolation=cv2.INTER_AREA)
    return np.diff(profile, axis=0)


def visual_features(crops: np.ndarray) -> np.ndarray:
    """The engine's mouth-motion features at frame midpoints: PCA and profile velocity, high-passed. (n-1, 21)."""
    parts = (mouth_pca_velocity(crops), mouth_profile_velocity(crops))
    return np.concatenate([highpass(v, GRID_FPS, CLIP_Z) for v in parts], axis=1)


def audio_velocity_features(audio: np.ndarray) -> np.ndarray:
    """dMFCC at 5 ms: 13 MFCCs (25 ms Hann), gradient in time, 1 s high-pass, robust z, clipped."""
    m = mfcc(audio, hop_length=HOP, window=np.hanning(WIN)).T.astype(np.float64)
    return highpass(np.gradient(m, axis=0), SAMPLE_RATE / HOP, CLIP_Z)


def band_energy(audio: np.ndarray, n: int) -> np.ndarray:
    """Log energy of the whole spectrum and of 5 bands (80-8000 Hz) in 25 ms Hann windows every 5 ms. (n, 6)."""
    x = np.concatenate([np.asarray(audio, np.float64), np.zeros(WIN + 2 * HOP)])
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP][:n]
    freqs = np.fft.rfftfreq(512, 1 / SAMPLE_RATE)
    masks = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(ENERGY_BANDS_HZ[:-1], ENERGY_BANDS_HZ[1:])], 1)
    out = np.empty((len(frames), masks.shape[1] + 1))
    window = np.hanning(WIN)
    for start in range(0, len(frames), 8192):  # in blocks: long clips would need gigabytes of spectra at once
        spec = np.abs(np.fft.rfft(frames[start : start + 8192] * window, 512)) ** 2
        out[start : start + len(spec), 0] = np.log(spec.sum(axis=1) + 1e3)
        out[start : start + len(spec), 1:] = np.log(spec @ masks + 1e3)
    return out


def audio_features(audio: np.ndarray) -> np.ndarray:
    """The engine's speech features at 5 ms: dMFCC (13) and band-energy velocity (6), high-passed. (m, 19)."""
    dm = audio_velocity_features(audio)
    de = highpass(np.gradient(band_energy(audio, len(dm)), axis=0), SAMPLE_RATE / HOP, CLIP_Z)
    return np.concatenate([dm, de], axis=1)


def frame_window_means(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 5 ms feature row averaged over the 8 rows (40 ms, one video frame) around it, and where that is whole.

    Row j of ``feats`` describes the audio centred at j * 5 + 12.5 ms, so row j of the result is centred at
    j * 5 + 10 ms.
    """
    m, w = len(feats), STEPS_PER_FRAME
    c = np.concatenate([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0)])
    j = np.arange(m)
    lo, hi = j - w // 2, j + w - w // 2
    valid = (lo >= 0) & (hi <= m)
    out = np.zeros_like(feats)
    out[valid] = (c[hi[valid]] - c[lo[valid]]) / w
    return out, valid


def _prefix(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])


def lag_curve(x: np.ndarray, start: int, feats: np.ndarray, lag_steps: np.ndarray,
              min_overlap: float = MIN_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """The first canonical correlation of ``x`` with the audio at every lag, exactly, in O(n log n).

    ``x`` (n, p) are visual features at the midpoints of grid frames ``start + i`` and ``start + i + 1``
    (time (start + i + 0.5) * 40 ms); ``feats`` (m, q) are 5 ms audio features; a lag of k steps pairs
    ``x[i]`` with the audio averaged over the 40 ms around that time + 5k ms. Only the frames whose whole
    audio window exists count, so the overlap shrinks towards large lags; below ``min_overlap`` of the
    frames the curve is NaN. Returns (curve, frames used per lag).

    The covariances behind each lag's canonical correlation are sums over a contiguous run of frames:
    prefix sums give the visual and audio terms for every lag at once (the audio in 8 phases, one per
    5 ms step within a frame), and one FFT cross-correlation gives the cross terms. A +/-10 s search on a
    minute of video costs well under a second.
    """
    n, p = x.shape
    b, valid = frame_window_means(feats)
    m, q = b.shape
    lags = np.asarray(lag_steps, dtype=np.int64)
    if n == 0 or not valid.any():
        return np.full(len(lags), np.nan), np.zeros(len(lags), int)
    jv = np.flatnonzero(valid)
    k0 = STEPS_PER_FRAME * start + 2  # audio row centred on x[0] at lag 0: (start + 0.5) * 40 ms = row * 5 + 10 ms
    ilo = np.clip(np.ceil((jv[0] - k0 - lags) / STEPS_PER_FRAME).astype(int), 0, n)
    ihi = np.clip(np.floor((jv[-1] - k0 - lags) / STEPS_PER_FRAME).astype(int) + 1, 0, n)
    cnt = np.maximum(ihi - ilo, 0)
    ihi = np.maximum(ihi, ilo)

    px, pxx = _prefix(x), _prefix((x[:, :, None] * x[:, None, :]).reshape(n, -1))
    sx, sxx = px[ihi] - px[ilo], (pxx[ihi] - pxx[ilo]).reshape(-1, p, p)
    b = np.where(valid[:, None], b, 0.0)
    bb = (b[:, :, None] * b[:, None, :]).reshape(m, -1)
    sy, syy = np.zeros((len(lags), q)), np.zeros((len(lags), q * q))
    first = k0 + lags
    phase, base = first % STEPS_PER_FRAME, first // STEPS_PER_FRAME
    for ph in range(STEPS_PER_FRAME):
        sel = phase == ph
        if not sel.any():
            continue
        p1, p2 = _prefix(b[ph::STEPS_PER_FRAME]), _prefix(bb[ph::STEPS_PER_FRAME])
        size = len(p1) - 1
        lo = np.clip(ilo[sel] + base[sel], 0, size)
        hi = np.maximum(np.clip(ihi[sel] + base[sel], 0, size), lo)
        sy[sel], syy[sel] = p1[hi] - p1[lo], p2[hi] - p2[lo]
    syy = syy.reshape(-1, q, q)

    reach = int(np.abs(lags).max()) + STEPS_PER_FRAME
    nfft = 1 << int(math.ceil(math.log2(2 * (max(k0 + STEPS_PER_FRAME * n, m) + reach))))
    xu = np.zeros((nfft, p))
    xu[k0 + STEPS_PER_FRAME * np.arange(n)] = x
    fb = np.fft.rfft(np.concatenate([b, np.zeros((nfft - m, q))]), axis=0)
    fx = np.fft.rfft(xu, axis=0)
    sxy = np.empty((len(lags), p, q))
    at = lags % nfft
    for a in range(p):  # column by column: bounded memory on long clips
        sxy[:, a, :] = np.fft.irfft(np.conj(fx[:, a])[:, None] * fb, nfft, axis=0)[at]

    curve = np.full(len(lags), np.nan)
    ok = cnt >= max(3, min_overlap * n)
    if ok.any():
        c = cnt[ok].astype(np.float64)[:, None, None]
        mx, my = sx[ok][:, :, None] / c, sy[ok][:, :, None] / c
        cxx = sxx[ok] / c - mx @ np.swapaxes(mx, 1, 2)
        cyy = syy[ok] / c - my @ np.swapaxes(my, 1, 2)
        cxy = sxy[ok] / c - mx @ np.swapaxes(my, 1, 2)
        curve[ok] = _top_canonical(cxx, cyy, cxy)
    return curve, cnt


def _top_canonical(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray) -> np.ndarray:
    """Top singular value of Lx^-1 Cxy Ly^-T, with a ridge of RIDGE x mean variance on both sides."""
    p, q = cxx.shape[1], cyy.shape[1]
    rx = RIDGE * np.trace(cxx, axis1=1, axis2=2) / p + 1e-12
    ry = RIDGE * np.trace(cyy, axis1=1, axis2=2) / q + 1e-12
    lx = np.linalg.cholesky(cxx + rx[:, None, None] * np.eye(p))
    ly = np.linalg.cholesky(cyy + ry[:, None, None] * np.eye(q))
    a = np.linalg.solve(lx, cxy)
    return np.linalg.svd(np.linalg.solve(ly, np.swapaxes(a, 1, 2)), compute_uv=False)[:, 0]


def first_canonical_correlations(x: np.ndarray, ys: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Top canonical correlation of ``x`` (n, p) with each ``ys[k]`` (n, q) over the rows in ``masks[k]``.

    The direct computation (the reference for :func:`lag_curve`, and a building block for tests).
    """
    w = masks.astype(np.float64)[..., None]  # (k, n, 1)
    cnt = w.sum(axis=1)  # (k, 1)
    mx = (x[None] * w).sum(axis=1) / cnt
    my = (ys * w).sum(axis=1) / cnt
    xc = (x[None] - mx[:, None]) * w
    yc = (ys - my[:, None]) * w
    cxx = np.einsum("kni,knj->kij", xc, xc) / cnt[..., None]
    cyy = np.einsum("kni,knj->kij", yc, yc) / cnt[..., None]
    cxy = np.einsum("kni,knj->kij", xc, yc) / cnt[..., None]
    return _top_canonical(cxx, cyy, cxy)


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


def _audio_around(feats: np.ndarray, start: int, n: int, reach: int) -> tuple[int, np.ndarray]:
    """The audio rows that ``n`` frames from grid frame ``start`` can meet within ``reach`` steps, and the
    start frame relative to them: :func:`lag_curve` on a stretch of the track then costs by the stretch,
    not by the whole soundtrack. The slice begins on a frame boundary, so lags are unchanged; its margin
    covers the 40 ms window around the farthest lag, so no row that the full audio would use is lost.
    """
    margin = (reach + 2 * STEPS_PER_FRAME) // STEPS_PER_FRAME + 1
    s0 = max(0, start - margin)
    s1 = start + n + margin
    return start - s0, feats[STEPS_PER_FRAME * s0 : STEPS_PER_FRAME * s1]


def damped(raw: np.ndarray, cnt: np.ndarray, n: int) -> np.ndarray:
    """The curve times sqrt(overlap share): fewer overlapping frames raise a canonical correlation by chance.
    Lags without enough overlap (NaN) get the curve's minimum."""
    curve = raw * np.sqrt(cnt / max(n, 1))
    return np.nan_to_num(curve, nan=float(np.nanmin(curve)))


# ------------------------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class Calibration:
    """p_correct = logistic(intercept + z_weight z + length_weight log(seconds of face) + half_weight z_halves).

    Confident at ``threshold``. Fitted by ``benchmarks/bench_accuracy.py --write-calibration``.
    """

    intercept: float
    z_weight: float
    length_weight: float
    threshold: float
    half_weight: float = 0.0
    source: str = ""

    def p_correct(self, z, frames, z_halves=0.0):
        """For one estimate (floats) or many at once (arrays: the benchmark's cross-validation)."""
        seconds = np.maximum(frames, 1) / GRID_FPS
        t = self.intercept + self.z_weight * z + self.length_weight * np.log(seconds) + self.half_weight * z_halves
        return 1.0 / (1.0 + np.exp(-np.clip(t, -50.0, 50.0)))

    def to_dict(self) -> dict:
        return {"intercept": round(float(self.intercept), 5), "z_weight": round(float(self.z_weight), 5),
                "length_weight": round(float(self.length_weight), 5), "half_weight": round(float(self.half_weight), 5),
                "threshold": round(float(self.threshold), 5)}


def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    """The fitted calibration shipped beside this module (``bench_accuracy.py --write-calibration`` refits it)."""
    d = json.loads(Path(path).read_text())
    return Calibration(float(d["intercept"]), float(d["z_weight"]), float(d["length_weight"]),
                       float(d["threshold"]), float(d.get("half_weight", 0.0)), str(d.get("source", "")))


# ------------------------------------------------------------------------------------------- the engine

@dataclass
class CCAPrepared:
    track: FaceTrack
    audio: np.ndarray
    features: np.ndarray  #: (n-1, 21) mouth-motion features at frame midpoints
    cache: dict = field(default_factory=dict)


class CCAEngine:
    """Weight-free lag estimation (see the module docstring). Uses the whole track; ``extend`` adds nothing."""

    name = "cca"
    min_frames = MIN_SPEECH_FRAMES
    needs_face_crops = False  #: reads the mouth crops only

    def __init__(self, min_confidence: float | None = None, calibration: Calibration | None = None):
        self.calibration = calibration or load_calibration()
        #: None: decide by p_correct; a number (``--min-confidence``): decide by z >= that number instead
        self.min_confidence = min_confidence

    def prepare(self, analysis: Analysis, track: FaceTrack) -> CCAPrepared:
        return CCAPrepared(track=track, audio=analysis.audio, features=visual_features(track.mouth_crops))

    def extend(self, prepared: CCAPrepared, estimate: Estimate | None = None) -> bool:
        return False

    @staticmethod
    def _halves_z(prep: CCAPrepared, feats: np.ndarray, steps: np.ndarray, lags: np.ndarray, best: int,
                  lo: int = 0, hi: int | None = None) -> float:
        """How well each half of the stretch ``lo:hi`` of the track's features, on its own, supports its
        peak: the smaller of the two halves' peak z at that lag (within 20 ms). A chance peak of mismatched
        audio is rarely shared by two independent stretches of video; a real one is.
        """
        hi = len(prep.features) if hi is None else hi
        half = (hi - lo) // 2
        if half < MIN_HALF_FRAMES:
            return 0.0
        near = np.abs(lags - lags[best]) <= HALF_AGREE_MS
        zs = []
        for a, b in ((lo, lo + half), (lo + half, hi)):
            start, part = _audio_around(feats, prep.track.start + a, b - a, int(np.abs(steps).max()))
            raw, cnt = lag_curve(prep.features[a:b], start, part, steps)
            if not np.isfinite(raw).any():
                return 0.0
            curve = damped(raw, cnt, b - a)
            at = int(np.flatnonzero(near)[np.argmax(curve[near])])
            zs.append(peak_z(curve, lags, at))
        return float(min(zs))

    def _features_at(self, prep: CCAPrepared, shift_ms: float) -> np.ndarray:
        """The audio features with the audio moved earlier by ``shift_ms`` (the last few shifts cached)."""
        key = round(float(shift_ms), 6)
        feats = prep.cache.get(key)
        if feats is None:
            feats = prep.cache[key] = audio_features(shift_audio(prep.audio, shift_ms))
            while len(prep.cache) > 4:
                prep.cache.pop(next(iter(prep.cache)))
        return feats

    def measure(self, prep: CCAPrepared, shift_ms: float, search_ms: float) -> Estimate:
        return self._estimate(prep, 0, len(prep.features), shift_ms, search_ms)

    def measure_span(self, prep: CCAPrepared, f0: int, f1: int, shift_ms: float, search_ms: float) -> Estimate:
        """The estimate from grid frames ``f0 .. f1-1`` of the track alone (a timeline segment), decided by
        the same calibration as the whole track: the segment's own z, length and halves' agreement."""
        lo = int(np.clip(f0 - prep.track.start, 0, len(prep.features)))
        hi = int(np.clip(f1 - prep.track.start - 1, lo, len(prep.features)))
        return self._estimate(prep, lo, hi, shift_ms, search_ms)

    def _estimate(self, prep: CCAPrepared, lo: int, hi: int, shift_ms: float, search_ms: float) -> Estimate:
        """The estimate from features ``lo:hi`` (frame midpoints from the track's frame ``lo``)."""
        search = max(MIN_SEARCH_MS, float(search_ms))
        steps = np.arange(-int(round(search / LAG_STEP_MS)), int(round(search / LAG_STEP_MS)) + 1)
        lags = steps * LAG_STEP_MS
        feats = self._features_at(prep, shift_ms)
        n = hi - lo
        if (lo, hi) == (0, len(prep.features)):
            raw, cnt = lag_curve(prep.features, prep.track.start, feats, steps)
        else:
            start, part = _audio_around(feats, prep.track.start + lo, n, int(np.abs(steps).max()))
            raw, cnt = lag_curve(prep.features[lo:hi], start, part, steps)
        if n < 3 or not np.isfinite(raw).any():
            return Estimate(self.name, 0.0, 0.0, False, False, search, lags, np.zeros(len(lags)),
                            "canonical correlation", False, 0,
                            extra={"reason": "too little overlap of face and sound"}, p_correct=0.0)
        curve = damped(raw, cnt, n)
        best = int(np.argmax(curve))
        lag = float(lags[best]) + parabolic_peak(curve, best, LAG_STEP_MS)
        z = peak_z(curve, lags, best)
        z_half = self._halves_z(prep, feats, steps, lags, best, lo, hi)
        p = float(self.calibration.p_correct(z, n + 1, z_half))
        confident = z >= self.min_confidence if self.min_confidence is not None else p >= self.calibration.threshold
        extra: dict = {"z": round(z, 3), "z_halves": round(z_half, 3), "rho": round(float(raw[best]), 4)}
        return Estimate(engine=self.name, audio_lag_ms=lag, confidence=z, confident=bool(confident),
                        edge=best in (0, len(lags) - 1), search_ms=search, lags_ms=lags, curve=curve,
                        curve_label="canonical correlation", best_is_min=False, windows=n,
                        window_times_s=np.zeros(0), window_confidence=np.zeros(0), extra=extra, p_correct=p)
