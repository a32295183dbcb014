"""The weight-free engine (``cca``): canonical correlation of mouth motion and speech, at every lag.

No trained sync weights: the mouth crops of a face track become ~12 PCA components, whose frame-to-frame
velocity is matched against the velocity of 13 MFCCs, by the first canonical correlation, at every lag
on a 5 ms grid (audio sampled between frames by window averages, so the lag is not tied to the frame
grid). Confidence is how far the peak stands above the rest of the curve (z). For borderline peaks an
independent estimate, the mean of 20 normalised cross-correlations between simple mouth-motion and
speech-energy signals, must agree; otherwise the answer is "uncertain". The recipe and its measured
accuracy are in ``../shared/docs/weight-free-estimator.md`` ("Best variant").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from syncnet.audio import mel_filterbank, mfcc
from syncnet.constants import SAMPLE_RATE

from .analysis import Analysis, FaceTrack
from .engines import Estimate, shift_audio
from .media import GRID_FPS

log = logging.getLogger(__name__)

N_COMPONENTS = 12
MOUTH_VEC = (32, 20)  #: mouth crops are area-resized to this before PCA
HOP = 80  #: 5 ms audio frames
WIN = 400  #: 25 ms Hann window
LAG_STEP_MS = 5.0
MIN_SEARCH_MS = 1000.0
RIDGE = 0.1
MIN_OVERLAP = 0.4
PEAK_EXCLUSION_MS = 120.0
#: Decision: confident at z >= 7, or at z >= 5 when the fused NCC peak is within 40 ms of the CCA peak.
Z_CONFIDENT = 7.0
Z_BORDERLINE = 5.0
AGREE_MS = 40.0
#: About 5 s of visible talking face are needed (shorter clips give unreliable peaks).
MIN_SPEECH_FRAMES = 5 * GRID_FPS
CLIP_Z = 4.0
CLIP_NCC = 3.0


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


class WindowSampler:
    """Audio features sampled at any time t as the mean over [t - 20 ms, t + 20 ms] (one video frame).

    Cumulative sums make each sample O(1) and allow sub-frame times; ``valid`` says where the whole
    window lies inside the audio.
    """

    def __init__(self, feats: np.ndarray, hop: int = HOP, win: int = WIN, rate: int = SAMPLE_RATE,
                 fps: float = GRID_FPS):
        self.f = feats
        self.cum = np.concatenate([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0)])
        self.frame_s = hop / rate
        self.offset_s = win / 2 / rate  #: feature j describes the audio around j * hop + win / 2
        self.half = 0.5 / fps

    def __call__(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = (t - self.half - self.offset_s) / self.frame_s + 0.5
        hi = (t + self.half - self.offset_s) / self.frame_s + 0.5
        n = len(self.f)
        valid = (lo >= 0) & (hi <= n)
        lo_c, hi_c = np.clip(lo, 0, n), np.clip(hi, 0, n)
        out = (self._cum_at(hi_c) - self._cum_at(lo_c)) / np.maximum(hi_c - lo_c, 1e-9)[..., None]
        return out, valid

    def _cum_at(self, x: np.ndarray) -> np.ndarray:
        i = np.clip(np.floor(x).astype(int), 0, len(self.cum) - 2)
        frac = (x - i)[..., None]
        return self.cum[i] * (1 - frac) + self.cum[i + 1] * frac


# ------------------------------------------------------------------------------------------- features

def mouth_pca_velocity(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dP, P): velocity of the first 12 PCA components of normalised 32x20 mouth crops, and P itself.

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
    p = p.astype(np.float64)
    return np.diff(p, axis=0), p


def audio_velocity_features(audio: np.ndarray) -> np.ndarray:
    """dMFCC at 5 ms: 13 MFCCs (25 ms Hann), gradient in time, 1 s high-pass, robust z, clipped."""
    m = mfcc(audio, hop_length=HOP, window=np.hanning(WIN)).T.astype(np.float64)
    return highpass(np.gradient(m, axis=0), SAMPLE_RATE / HOP, CLIP_Z)


def first_canonical_correlations(x: np.ndarray, ys: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Top canonical correlation of ``x`` (n, p) with each ``ys[k]`` (n, q) over the rows in ``masks[k]``.

    Ridge of 0.1 x mean variance on both covariance matrices, Cholesky whitening, top singular value.
    """
    w = masks.astype(np.float64)[..., None]  # (k, n, 1)
    cnt = w.sum(axis=1)  # (k, 1)
    xw = x[None] * w
    mx = xw.sum(axis=1) / cnt
    my = (ys * w).sum(axis=1) / cnt
    xc = (x[None] - mx[:, None]) * w
    yc = (ys - my[:, None]) * w
    cxx = np.einsum("kni,knj->kij", xc, xc) / cnt[..., None]
    cyy = np.einsum("kni,knj->kij", yc, yc) / cnt[..., None]
    cxy = np.einsum("kni,knj->kij", xc, yc) / cnt[..., None]
    rx = RIDGE * np.trace(cxx, axis1=1, axis2=2) / cxx.shape[1]
    ry = RIDGE * np.trace(cyy, axis1=1, axis2=2) / cyy.shape[1]
    lx = np.linalg.cholesky(cxx + rx[:, None, None] * np.eye(cxx.shape[1]))
    ly = np.linalg.cholesky(cyy + ry[:, None, None] * np.eye(cyy.shape[1]))
    a = np.linalg.solve(lx, cxy)  # Lx^-1 Cxy
    m = np.linalg.solve(ly, np.swapaxes(a, 1, 2))  # Ly^-1 (Lx^-1 Cxy)^T
    return np.linalg.svd(m, compute_uv=False)[:, 0]


def peak_z(curve: np.ndarray, lags: np.ndarray, best: int) -> float:
    """How far the peak stands above the curve away from it (lags more than 120 ms from the peak)."""
    far = np.abs(lags - lags[best]) > PEAK_EXCLUSION_MS
    rest = curve[far]
    if rest.size < 3 or rest.std() == 0:
        return 0.0
    return float((curve[best] - rest.mean()) / rest.std())


def parabolic_peak(curve: np.ndarray, best: int, step: float) -> float:
    """Offset of the vertex of the parabola through the peak and its neighbours, in lag units."""
    if 0 < best < len(curve) - 1:
        a, b, c = curve[best - 1], curve[best], curve[best + 1]
        den = a - 2 * b + c
        if den < 0:
            return 0.5 * (a - c) / den * step
    return 0.0


# ------------------------------------------------------------------------------------------- cross-check

def _visual_signals(crops: np.ndarray, pca_vel: np.ndarray) -> np.ndarray:
    """Five mouth-motion signals at frame midpoints: frame difference, flow magnitude, vertical opening
    velocity, mouth darkness ("open") and PCA-velocity norm. Shape (n - 1, 5)."""
    import cv2

    f = crops.astype(np.float32)
    diff = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2))
    mag, opening = np.zeros(len(crops) - 1), np.zeros(len(crops) - 1)
    h = crops.shape[1]
    for i in range(len(crops) - 1):
        flow = cv2.calcOpticalFlowFarneback(crops[i], crops[i + 1], None, 0.5, 2, 9, 2, 5, 1.1, 0)
        mag[i] = np.sqrt((flow**2).sum(axis=2)).mean()
        opening[i] = abs(flow[h // 2 :, :, 1].mean() - flow[: h // 2, :, 1].mean())
    centre = f[:, h // 4 : 3 * h // 4, crops.shape[2] // 4 : 3 * crops.shape[2] // 4]
    level = centre.mean(axis=(1, 2), keepdims=True) - centre.std(axis=(1, 2), keepdims=True)
    dark = (centre < level).mean(axis=(1, 2))
    dark_mid = (dark[1:] + dark[:-1]) / 2
    return np.stack([diff, mag, opening, dark_mid, np.linalg.norm(pca_vel, axis=1)], axis=1)


def _audio_signals(audio: np.ndarray) -> np.ndarray:
    """Four speech signals at 5 ms: log RMS, log 300-3000 Hz band energy, log-mel flux, |dMFCC|. (n, 4)."""
    x = np.asarray(audio, np.float64)
    n = 1 + max(0, (len(x) - WIN) // HOP)
    all_frames = np.lib.stride_tricks.sliding_window_view(np.concatenate([x, np.zeros(WIN)]), WIN)[::HOP][:n]
    freqs = np.fft.rfftfreq(512, 1 / SAMPLE_RATE)
    in_band = (freqs >= 300) & (freqs <= 3000)
    band, rms, logmel = np.empty(n), np.empty(n), np.empty((n, mel_filterbank().shape[0]))
    for start in range(0, n, 8192):  # in blocks: long clips would need gigabytes of spectra at once
        frames = all_frames[start : start + 8192]
        spec = np.abs(np.fft.rfft(frames * np.hanning(WIN), 512)) ** 2
        band[start : start + len(frames)] = spec[:, in_band].sum(axis=1)
        rms[start : start + len(frames)] = np.sqrt((frames**2).mean(axis=1))
        logmel[start : start + len(frames)] = np.log(spec @ mel_filterbank().T + 1e-6)
    flux = np.concatenate([[0.0], np.clip(np.diff(logmel, axis=0), 0, None).sum(axis=1)])
    dm = np.linalg.norm(np.gradient(mfcc(audio, hop_length=HOP, window=np.hanning(WIN)).T, axis=0), axis=1)
    m = min(len(rms), len(dm))
    return np.stack([np.log(rms[:m] + 1), np.log(band[:m] + 1), flux[:m], dm[:m]], axis=1)


def fused_ncc_peak(crops: np.ndarray, pca_vel: np.ndarray, times: np.ndarray, audio: np.ndarray,
                   lags_ms: np.ndarray) -> tuple[float, np.ndarray]:
    """The independent cross-check: mean of the 20 Pearson curves visual x audio; (peak lag ms, curve)."""
    vis = highpass(_visual_signals(crops, pca_vel), GRID_FPS, CLIP_NCC)
    aud = highpass(_audio_signals(audio), SAMPLE_RATE / HOP, CLIP_NCC)
    sampler = WindowSampler(aud)
    curve = np.zeros(len(lags_ms))
    for k, lag in enumerate(lags_ms):
        a, valid = sampler(times + lag / 1000.0)
        if valid.sum() < MIN_OVERLAP * len(times):
            curve[k] = np.nan
            continue
        v, a = vis[valid], a[valid]
        v = (v - v.mean(0)) / (v.std(0) + 1e-9)
        a = (a - a.mean(0)) / (a.std(0) + 1e-9)
        curve[k] = (v.T @ a / len(v)).mean()  # all 5 x 4 pairs
    curve = np.nan_to_num(curve, nan=np.nanmin(curve) if np.isfinite(curve).any() else 0.0)
    best = int(np.argmax(curve))
    return float(lags_ms[best]), curve


# ------------------------------------------------------------------------------------------- the engine

@dataclass
class CCAPrepared:
    track: FaceTrack
    audio: np.ndarray
    velocity: np.ndarray  #: (n-1, 12) processed PCA velocity
    raw_velocity: np.ndarray
    times: np.ndarray  #: (n-1,) seconds of each velocity sample
    cache: dict = field(default_factory=dict)


class CCAEngine:
    """Weight-free lag estimation (see the module docstring). Uses the whole track; ``extend`` adds nothing."""

    name = "cca"
    min_frames = MIN_SPEECH_FRAMES
    needs_face_crops = False  #: reads the mouth crops only

    def __init__(self, min_confidence: float = Z_CONFIDENT):
        self.min_confidence = min_confidence

    def prepare(self, analysis: Analysis, track: FaceTrack) -> CCAPrepared:
        vel, _ = mouth_pca_velocity(track.mouth_crops)
        times = (track.start + np.arange(1, track.n_frames) - 0.5) / GRID_FPS
        return CCAPrepared(track=track, audio=analysis.audio, velocity=highpass(vel, GRID_FPS, CLIP_Z),
                           raw_velocity=vel, times=times)

    def extend(self, prepared: CCAPrepared, estimate: Estimate | None = None) -> bool:
        return False

    def measure(self, prep: CCAPrepared, shift_ms: float, search_ms: float) -> Estimate:
        search = max(MIN_SEARCH_MS, float(search_ms))
        lags = np.arange(-search, search + LAG_STEP_MS / 2, LAG_STEP_MS)
        shifted = shift_audio(prep.audio, shift_ms)
        sampler = WindowSampler(audio_velocity_features(shifted))
        curve = np.full(len(lags), np.nan)
        chunk = max(1, int(2_000_000 // max(1, len(prep.times) * 13)))  # bound memory on long clips
        for i in range(0, len(lags), chunk):
            ls = lags[i : i + chunk]
            ys, valid = sampler(prep.times[None, :] + ls[:, None] / 1000.0)
            ok = valid.sum(axis=1) >= MIN_OVERLAP * len(prep.times)
            if ok.any():
                curve[i : i + chunk][ok] = first_canonical_correlations(prep.velocity, ys[ok], valid[ok])
        if not np.isfinite(curve).any():
            return Estimate(self.name, 0.0, 0.0, False, False, search, lags, np.zeros(len(lags)),
                            "canonical correlation", False, 0, extra={"reason": "too little overlap of face and sound"})
        curve = np.nan_to_num(curve, nan=float(np.nanmin(curve)))
        best = int(np.argmax(curve))
        lag = float(lags[best]) + parabolic_peak(curve, best, LAG_STEP_MS)
        z = peak_z(curve, lags, best)
        extra: dict = {"z": round(z, 3), "rho": round(float(curve[best]), 4)}
        confident = z >= self.min_confidence
        if not confident and z >= self.min_confidence - (Z_CONFIDENT - Z_BORDERLINE):
            ncc_lag, _ = fused_ncc_peak(prep.track.mouth_crops, prep.raw_velocity, prep.times, shifted, lags)
            agree = abs(ncc_lag - lag) <= AGREE_MS
            extra.update(ncc_lag_ms=round(ncc_lag, 1), ncc_agrees=bool(agree))
            confident = agree
        times, conf = self._confidence_along(prep, sampler, lag)
        return Estimate(engine=self.name, audio_lag_ms=lag, confidence=z, confident=confident,
                        edge=best in (0, len(lags) - 1), search_ms=search, lags_ms=lags, curve=curve,
                        curve_label="canonical correlation", best_is_min=False, windows=len(prep.times),
                        window_times_s=times, window_confidence=conf, extra=extra)

    @staticmethod
    def _confidence_along(prep: CCAPrepared, sampler: WindowSampler, lag_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """Local agreement along the clip (for the plot): correlation of mouth and sound energy over 2 s."""
        a, valid = sampler(prep.times + lag_ms / 1000.0)
        v = np.linalg.norm(prep.velocity, axis=1)
        s = np.linalg.norm(a, axis=1)
        win = 2 * GRID_FPS
        if len(v) < win:
            return np.zeros(0), np.zeros(0)
        out_t, out_c = [], []
        for i in range(0, len(v) - win + 1, GRID_FPS // 2):
            m = valid[i : i + win]
            if m.sum() < win // 2:
                continue
            vv, ss = v[i : i + win][m], s[i : i + win][m]
            c = np.corrcoef(vv, ss)[0, 1] if vv.std() > 0 and ss.std() > 0 else 0.0
            out_t.append(prep.times[i + win // 2])
            out_c.append(c)
        return np.array(out_t), np.array(out_c)
