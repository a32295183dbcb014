"""The weight-free engine (``cca``): canonical correlation of mouth motion and speech, at every lag.

No SyncNet weights. From the mouth crops of a face track, held still against the head's own fast motion
(:func:`pipeline.lipmodel.mouth_motion`): the velocity of 12 PCA components and of a vertical intensity
profile (mouth darkness and 8 row bands, which follow the lips opening), and the mouth's optical flow less
the head's motion (:func:`pipeline.lipmodel.mouth_flow`: the lips' motion itself, which brightness follows
only as far as lighting allows); from the audio: the velocity of 13 MFCCs and of log energy in 5
bands, weighted by a speech gate (:func:`speech_gate`: the pauses' room noise would otherwise weigh as
much as speech). Their first canonical correlation is computed at every lag on a 5 ms grid over +/-3 s or more,
exactly and cheaply: the sums behind the per-lag covariances come from prefix sums and one FFT
cross-correlation (:func:`lag_curve`), so a wide search costs little more than a narrow one
(:mod:`pipeline.lagcorr`). Each lag is damped by the square root of the share of the track that meets
sound there (the speech gate summed over the overlapping frames, so a pause or the silence before a late
soundtrack counts as no sample), because a canonical correlation over fewer samples is higher by chance.
Two witnesses check the peak: each half of the track on its own (``z_halves``), and a small learned linear
lip model fitted once over many speakers (:mod:`pipeline.lipmodel`, ``z_model``): a chance peak of the
per-clip fit is rarely backed by either. On the whole track the peak itself is read on the per-clip curve
plus half the lip model's (:data:`MODEL_POOL_WEIGHT`): the per-clip fit adapts to the speaker, the learned
map cannot overfit a short clip. The lip model backs lags and never vetoes one: where its curve falls below
its mean it adds nothing (its correlations are signed, and a mouth it reads the wrong way round, such as
a negative image, would otherwise push the peak off a clear per-clip one).

``confidence`` is the engine's own score: how far the peak stands above the rest of the curve (z).
``p_correct`` is the chance that the estimate is within 40 ms, read off a logistic calibration of z, the
clip's length and the two witnesses, fitted on the development set (``cca_calibration.json``, reproduced by
``benchmarks/bench_accuracy.py --write-calibration``, which reports its figures with whole source projects
held out); it decides, at a threshold chosen so that video paired with another clip's audio is called
confident at most 1 % of the time. Measured figures: README, "Engines".
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from syncnet.audio import mfcc
from syncnet.constants import SAMPLE_RATE

from .analysis import Analysis, FaceTrack
from .estimates import Estimate, shift_audio
from .lagcorr import (
    HOP,
    MIN_OVERLAP,
    LagMoments,
    audio_around,
    best_near,
    damped,
    highpass,
    lag_moments,
    overlap_span,
    parabolic_peak,
    peak_z,
    scored_lags,
)
from .lipmodel import (
    PROFILE_BANDS,
    SUPPORT_WINDOW_MS,
    LipModel,
    MouthMotion,
    load_lip_model,
    mouth_motion,
    mouth_profile,
    mouth_shape_velocity,
    projected_curve,
    visual_inputs,
)
from .media import GRID_FPS

log = logging.getLogger(__name__)

N_COMPONENTS = 12
MOUTH_VEC = (32, 20)  #: mouth crops are area-resized to this before PCA
WIN = 400  #: 25 ms Hann window
ENERGY_BANDS_HZ = (80, 300, 800, 1500, 3000, 8000)
#: The speech gate (:func:`speech_gate`) is half open this far below the clip's loud level, over a soft step
#: this wide. Set beforehand, not fitted; measured held out (README, Engines): 20 dB lets 1.3 % of mismatched
#: soundtracks through as confident (over the 1 % allowed), 40 dB answers less.
SPEECH_GATE_DB = 30.0
GATE_SOFT_DB = 5.0
LAG_STEP_MS = 5.0
#: The weight-free engine always searches at least +/-3 s (real offsets of 1-3 s are common).
MIN_SEARCH_MS = 3000.0
#: A timeline segment searches this far around the clip's own lag (it reads a residual: how far the lag there
#: is from the whole clip's). A lag that wanders further within one clip is not followed.
SPAN_SEARCH_MS = 1500.0
#: Ridge on both covariances, as a share of their mean variance: strong shrinkage, which keeps chance
#: correlations of 28 x 19 features over a few seconds down (chosen on the dev set: 0.1, 0.3, 1, 3 tried).
RIDGE = 1.0
#: Up to this many frames of track (3 min), the whole track's halves and lip-model curves are read on threads
#: beside its own curve; beyond, their FFT buffers at once cost more memory than the time saved is worth
#: (10 min of 720p: peak RSS 786 -> 1017 MB to save 3 s of 13 s of scoring).
BESIDE_MAX_FRAMES = 3 * 60 * GRID_FPS
#: Short reads (timeline segments and their halves) score every 4th lag (20 ms) and every lag near the best.
COARSE_STRIDE = 4
#: An estimate counts as correct within this (the calibration's target).
CORRECT_MS = 40.0
#: Shortest face track the engine reads (2 s); below the calibrated precision it abstains anyway.
MIN_SPEECH_FRAMES = 2 * GRID_FPS
CLIP_Z = 4.0
#: Each half of a track must hold this many frames for the halves' agreement to be read (1 s).
MIN_HALF_FRAMES = GRID_FPS
HALF_AGREE_MS = 20.0
CALIBRATION_FILE = Path(__file__).with_name("cca_calibration.json")
#: The whole track's peak is read on its curve plus this much of the lip model's (each as z-scores over the
#: lags; the lip model's only where it stands above its mean): the per-clip fit adapts to the speaker, the
#: learned map cannot overfit a short clip (README)
MODEL_POOL_WEIGHT = 0.5
#: Where fewer than this share of the stretch's frames meet the sound at its peak, the halves' agreement is
#: read on the halves of the frames that do (else a lag of seconds leaves one half nothing to agree with).
REBALANCE_OVERLAP = 0.9


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
    """Velocity of the mouth's vertical profile (:func:`pipeline.lipmodel.mouth_profile`). (n-1, 9)."""
    return np.diff(mouth_profile(crops), axis=0)


def visual_features(crops: np.ndarray, motion: MouthMotion | None = None,
                    profile_velocity: np.ndarray | None = None) -> np.ndarray:
    """The engine's mouth-motion features at frame midpoints: PCA and profile velocity of the steadied crops
    and the mouth's optical flow (:func:`pipeline.lipmodel.mouth_motion`), high-passed. (n-1, 28).
    ``motion`` and ``profile_velocity``: given when already computed (the engine takes them from what the
    lip model's inputs computed), else computed here."""
    motion = mouth_motion(crops) if motion is None else motion
    steady = motion.crops
    profile_velocity = mouth_profile_velocity(steady) if profile_velocity is None else profile_velocity
    parts = (mouth_pca_velocity(steady), profile_velocity, motion.flow)
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


def speech_gate(log_energy: np.ndarray) -> np.ndarray:
    """Weight in [0, 1] per 5 ms: ~1 where the sound is within SPEECH_GATE_DB of the clip's loud level, ~0 in
    the pauses (a soft step of GATE_SOFT_DB). The MFCCs of a pause's room noise change as fast as speech's
    and, once standardised, weigh as much: gated, only the sound that the lips make is compared with them."""
    loud = np.percentile(log_energy, 95) if len(log_energy) else 0.0
    db = (log_energy - loud) * (10.0 / np.log(10.0))
    return 1.0 / (1.0 + np.exp(-np.clip((db + SPEECH_GATE_DB) / GATE_SOFT_DB, -50.0, 50.0)))


def gated_audio_features(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The engine's speech features at 5 ms: dMFCC (13) and band-energy velocity (6), high-passed, weighted
    by :func:`speech_gate`, (m, 19); and that gate, (m,): how much of each 5 ms is sound, which the lag
    curve's damping counts (:func:`pipeline.lagcorr.damped`)."""
    dm = audio_velocity_features(audio)
    energy = band_energy(audio, len(dm))
    de = highpass(np.gradient(energy, axis=0), SAMPLE_RATE / HOP, CLIP_Z)
    gate = speech_gate(energy[:, 0])
    return np.concatenate([dm, de], axis=1) * gate[:, None], gate


def audio_features(audio: np.ndarray) -> np.ndarray:
    """:func:`gated_audio_features` without the gate. (m, 19)."""
    return gated_audio_features(audio)[0]


def lag_curve(x: np.ndarray, start: int, feats: np.ndarray, lag_steps: np.ndarray,
              min_overlap: float = MIN_OVERLAP, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first canonical correlation of ``x`` with the audio at every lag, exactly, in O(n log n).

    Pairing and overlap as in :func:`pipeline.lagcorr.lag_moments`, whose per-lag sums give every lag's
    covariances; below ``min_overlap`` of the frames the curve is NaN. Returns (curve, frames meeting sound
    per lag: ``LagMoments.heard``, the frames used when there is no ``weight``).
    A +/-10 s search on a minute of video costs well under a second.
    """
    lags = np.asarray(lag_steps, dtype=np.int64)
    return _full_curve(lag_moments(x, start, feats, lags, weight), len(lags), len(x), min_overlap)


def _full_curve(mom: LagMoments | None, n_lags: int, n: int,
                min_overlap: float = MIN_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lag_curve` from the moments of ``n`` frames at ``n_lags`` lags (None: no usable audio)."""
    if mom is None:
        return np.full(n_lags, np.nan), np.zeros(n_lags)
    return _curve_at(mom, np.arange(n_lags), n, min_overlap), mom.heard


def _curve_at(mom: LagMoments, idx: np.ndarray, n: int, min_overlap: float = MIN_OVERLAP) -> np.ndarray:
    """The canonical correlation at the lags ``idx`` of ``mom`` (NaN where too few of the ``n`` frames
    overlap): the moments of every lag come at once, the correlations lag by lag."""
    curve = np.full(len(idx), np.nan)
    ok = scored_lags(mom.cnt[idx], n, min_overlap)
    if ok.any():
        curve[ok] = _top_canonical(*mom.covariances(idx[ok]))
    return curve


def sparse_lag_curve(x: np.ndarray, start: int, feats: np.ndarray, lag_steps: np.ndarray,
                     stride: int = COARSE_STRIDE, peaks: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`lag_curve` at every ``stride``-th lag, and at every lag within ``stride`` of the ``peaks`` best
    local maxima of those (damped as the engine damps): (indices into ``lag_steps``, in order; curve there;
    frames meeting sound there, as :func:`lag_curve` counts them).

    The curve is smooth on the scale of a frame (the audio is averaged over 40 ms), so its peak and the
    spread of the rest (what ``peak_z`` reads) come out the same from a quarter of the lags; refining around
    more than one coarse maximum keeps a peak with two close lobes from being read on the wrong one (only
    the refined lags around the best are returned, so the rest is on the coarse grid). This is what makes
    the many short reads of a timeline (each segment and its halves) cheap.
    """
    steps = np.asarray(lag_steps, dtype=np.int64)
    # one pass gives every lag's moments; correlations cost by lag
    return _sparse_curve(lag_moments(x, start, feats, steps), len(steps), len(x), stride, peaks)


def _sparse_curve(mom: LagMoments | None, n_lags: int, n: int, stride: int = COARSE_STRIDE,
                  peaks: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sparse_lag_curve` from the moments of ``n`` frames at ``n_lags`` lags (None: no usable audio)."""
    stride = max(1, stride)
    coarse = np.arange(0, n_lags, stride)
    if mom is None:
        return coarse, np.full(len(coarse), np.nan), np.zeros(len(coarse))
    raw, heard = _curve_at(mom, coarse, n), mom.heard[coarse]
    if not np.isfinite(raw).any():
        return coarse, raw, heard
    d = np.nan_to_num(raw * np.sqrt(heard), nan=-np.inf)
    padded = np.concatenate([[-np.inf], d, [-np.inf]])
    local = np.flatnonzero((d >= padded[:-2]) & (d >= padded[2:]) & np.isfinite(d))
    tops = coarse[local[np.argsort(d[local])[::-1][:peaks]]]
    fine = np.unique(np.concatenate([np.arange(max(0, b - stride + 1), min(n_lags, b + stride)) for b in tops]))
    fine = np.setdiff1d(fine, coarse)
    raw_f, heard_f = _curve_at(mom, fine, n), mom.heard[fine]
    scored = np.concatenate([d, np.nan_to_num(raw_f * np.sqrt(heard_f), nan=-np.inf)])
    best = np.concatenate([coarse, fine])[int(np.argmax(scored))]  # a tie goes to the coarse lag
    keep = np.abs(fine - best) < stride  # the rest stays on the coarse grid, as peak_z expects
    idx = np.concatenate([coarse, fine[keep]])
    order = np.argsort(idx)
    return idx[order], np.concatenate([raw, raw_f[keep]])[order], np.concatenate([heard, heard_f[keep]])[order]


def _standard(curve: np.ndarray) -> np.ndarray:
    """A curve as z-scores over its lags."""
    sd = float(np.std(curve))
    return (curve - float(np.mean(curve))) / sd if sd > 0 else np.zeros_like(curve)


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


# ------------------------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class Calibration:
    """p_correct = logistic(intercept + z_weight z + length_weight log(seconds of face) + half_weight z_halves
    + model_weight z_model).

    Confident at ``threshold``. Fitted by ``benchmarks/bench_accuracy.py --write-calibration``.
    """

    intercept: float
    z_weight: float
    length_weight: float
    threshold: float
    half_weight: float = 0.0
    source: str = ""
    model_weight: float = 0.0

    def p_correct(self, z, frames, z_halves=0.0, z_model=0.0):
        """For one estimate (floats) or many at once (arrays: the benchmark's cross-validation)."""
        seconds = np.maximum(frames, 1) / GRID_FPS
        t = (self.intercept + self.z_weight * z + self.length_weight * np.log(seconds)
             + self.half_weight * z_halves + self.model_weight * z_model)
        return 1.0 / (1.0 + np.exp(-np.clip(t, -50.0, 50.0)))

    def to_dict(self) -> dict:
        return {k: round(float(getattr(self, k)), 5) for k in
                ("intercept", "z_weight", "length_weight", "half_weight", "model_weight", "threshold")}


def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    """The fitted calibration shipped beside this module (``bench_accuracy.py --write-calibration`` refits it)."""
    d = json.loads(Path(path).read_text())
    return Calibration(float(d["intercept"]), float(d["z_weight"]), float(d["length_weight"]),
                       float(d["threshold"]), float(d.get("half_weight", 0.0)), str(d.get("source", "")),
                       float(d.get("model_weight", 0.0)))


# ------------------------------------------------------------------------------------------- the engine

@dataclass
class CCAPrepared:
    track: FaceTrack
    audio: np.ndarray
    features: np.ndarray  #: (n-1, 28) mouth-motion features at frame midpoints
    #: (n-1, k) the learned lip model's projection of the same frames (None: no model)
    model_features: np.ndarray | None = None
    cache: dict = field(default_factory=dict)
    #: the cache is shared by timeline segments read on several threads
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class CCAEngine:
    """Weight-free lag estimation (see the module docstring). Uses the whole track; ``extend`` adds nothing.

    ``lip_model``: the learned witness (:mod:`pipeline.lipmodel`); the shipped one by default. The benchmark
    passes maps fitted without the project it measures.
    """

    name = "cca"
    min_frames = MIN_SPEECH_FRAMES
    needs_face_crops = False  #: reads the mouth crops only
    spans_in_threads = True  #: timeline segments are independent NumPy work, read on threads (pipeline.timeline)
    locates_steps = True  #: a step is placed by short probes (pipeline.timeline.locate_steps): milliseconds each

    def __init__(self, min_confidence: float | None = None, calibration: Calibration | None = None,
                 lip_model: LipModel | None = None, pool_weight: float = MODEL_POOL_WEIGHT):
        self.calibration = calibration or load_calibration()
        self.lip_model = lip_model or load_lip_model()
        #: how much of the lip model's curve the whole track's peak is read on (0: the per-clip curve alone,
        #: what the lip model's own training reads, so that it does not read through itself)
        self.pool_weight = pool_weight
        #: None: decide by p_correct; a number (``--min-confidence``): decide by z >= that number instead
        self.min_confidence = min_confidence

    def prepare(self, analysis: Analysis, track: FaceTrack) -> CCAPrepared:
        crops = track.mouth_crops
        # The speech features at no shift (what the first reading needs) on a thread beside the optical flow
        # (two runs of frames on two threads, OpenCV releases the GIL); the mouth's shape is read from the
        # crops the flow steadies. On a track over 3 minutes the speech features wait for the first reading
        # instead: made beside the visual ones, their spectra would add ~40 MB to the peak for a tenth of a
        # second a minute.
        with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
            speech = (pool.submit(self._speech_features, analysis.audio, 0.0) if len(crops) <= BESIDE_MAX_FRAMES
                      else None)
            motion = mouth_motion(crops, workers=2)
            shape = mouth_shape_velocity(motion.crops)  # its last columns are the profile's velocity: read once
            features = visual_features(crops, motion, shape[:, -(PROFILE_BANDS + 1):])
            prep = CCAPrepared(track=track, audio=analysis.audio, features=features,
                               model_features=self.lip_model.project_visual(visual_inputs(crops, motion, shape)))
            if speech is not None:
                prep.cache[0.0] = speech.result()
        return prep

    def extend(self, prepared: CCAPrepared, estimate: Estimate | None = None) -> bool:
        return False

    @staticmethod
    def _half_spans(lo: int, hi: int) -> list[tuple[int, int]] | None:
        """The two halves of the stretch ``lo:hi`` of the track's features (None when a half is too short)."""
        half = (hi - lo) // 2
        return None if half < MIN_HALF_FRAMES else [(lo, lo + half), (lo + half, hi)]

    @staticmethod
    def _paired(spans: list[tuple[int, int]] | None, moments: list[LagMoments | None]
                ) -> list[tuple[LagMoments, int]] | None:
        """(moments, length) of each half; None when there are no halves or one meets no usable audio."""
        if spans is None or any(m is None for m in moments):
            return None
        return [(m, b - a) for m, (a, b) in zip(moments, spans)]

    def _half_moments(self, prep: CCAPrepared, feats: np.ndarray, gate: np.ndarray, steps: np.ndarray, lo: int,
                      hi: int) -> list[tuple[LagMoments, int]] | None:
        """Each half of the stretch ``lo:hi`` of the track's features on its own: its moments at every lag of
        ``steps`` and its length; None when a half is too short or meets no usable audio. The stretch's own
        moments are their sum (:meth:`LagMoments.plus`), so the halves cost the stretch no extra pass."""
        spans = self._half_spans(lo, hi)
        return self._paired(spans, [self._span_moments(prep, feats, gate, steps, a, b) for a, b in spans or []])

    @staticmethod
    def _moments_around(x: np.ndarray, start: int, audio: np.ndarray, gate: np.ndarray, steps: np.ndarray
                        ) -> LagMoments | None:
        """The moments of the frames ``x`` from grid frame ``start`` with the rows of ``audio`` (and of its speech
        gate) they can meet within ``steps``: a stretch's search costs by the stretch (None: no usable audio)."""
        reach = int(np.abs(steps).max())
        s0, part = audio_around(audio, start, len(x), reach)
        return lag_moments(x, s0, part, steps, audio_around(gate, start, len(x), reach)[1])

    @staticmethod
    def _span_moments(prep: CCAPrepared, feats: np.ndarray, gate: np.ndarray, steps: np.ndarray, a: int, b: int
                      ) -> LagMoments | None:
        """The moments of features ``a:b`` with the audio they can meet within ``steps`` (None: no usable audio)."""
        return CCAEngine._moments_around(prep.features[a:b], prep.track.start + a, feats, gate, steps)

    @staticmethod
    def _half_curves(halves: list[tuple[LagMoments, int]] | None, lags: np.ndarray,
                     idx: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Each half's damped lag curve at the lags ``idx`` (every lag when None) and the lags it is read at;
        None when there are no halves or a half has no lag with enough overlap."""
        if halves is None:
            return None
        idx = np.arange(len(lags)) if idx is None else idx
        out = []
        for mom, n in halves:
            raw = _curve_at(mom, idx, n)
            if not np.isfinite(raw).any():
                return None
            out.append((damped(raw, mom.heard[idx], n), lags[idx]))
        return out

    @staticmethod
    def _joined(halves: list[tuple[LagMoments, int]] | None, in_place: bool = False) -> LagMoments | None:
        """The whole stretch's moments from its halves' (None without both); ``in_place``: summed into the
        first half's arrays, once its curve is no longer needed (a long track's sums are tens of MB)."""
        return None if halves is None else halves[0][0].plus(halves[1][0], in_place)

    @staticmethod
    def _halves_z(curves: list[tuple[np.ndarray, np.ndarray]] | None, peak_ms: float) -> float:
        """How well each half of the stretch, on its own, supports the peak at ``peak_ms``: the smaller of the
        two halves' peak z at that lag (within 20 ms). A chance peak of mismatched audio is rarely shared by
        two independent stretches of video; a real one is."""
        if curves is None:
            return 0.0
        return float(min(peak_z(c, at, best_near(c, at, peak_ms, HALF_AGREE_MS)) for c, at in curves))

    def _model_curve(self, prep: CCAPrepared, model_audio: np.ndarray, gate: np.ndarray, steps: np.ndarray,
                     lo: int, hi: int) -> np.ndarray | None:
        """The learned lip model's own damped lag curve over the stretch (None: no model or no overlap)."""
        if prep.model_features is None:
            return None
        x = prep.model_features[lo:hi]
        mom = self._moments_around(x, prep.track.start + lo, model_audio, gate, steps)
        if mom is None:
            return None
        ok = scored_lags(mom.cnt, len(x))
        if not ok.any():
            return None
        raw = np.full(len(steps), np.nan)
        raw[ok] = projected_curve(self.lip_model, mom, ok)
        return damped(raw, mom.heard, len(x))

    @staticmethod
    def _model_z(curve: np.ndarray | None, lags: np.ndarray, peak_ms: float) -> float:
        """How strongly the learned lip model's curve peaks near the per-clip peak (its z there)."""
        if curve is None:
            return 0.0
        return peak_z(curve, lags, best_near(curve, lags, peak_ms, SUPPORT_WINDOW_MS))

    def _features_at(self, prep: CCAPrepared, shift_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The audio features, the lip model's projection of them and the speech gate, with the audio moved
        earlier by ``shift_ms`` (the last few shifts cached)."""
        key = round(float(shift_ms), 6)
        with prep.lock:
            got = prep.cache.get(key)
            if got is None:
                got = prep.cache[key] = self._speech_features(prep.audio, shift_ms)
                while len(prep.cache) > 4:
                    prep.cache.pop(next(iter(prep.cache)))
        return got

    def _speech_features(self, audio: np.ndarray, shift_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`gated_audio_features` of the audio moved earlier by ``shift_ms``, the lip model's projection
        of them, and the gate."""
        feats, gate = gated_audio_features(shift_audio(audio, shift_ms))
        return feats, self.lip_model.project_speech(feats), gate

    def measure(self, prep: CCAPrepared, shift_ms: float, search_ms: float) -> Estimate:
        return self._estimate(prep, 0, len(prep.features), shift_ms, search_ms)

    def measure_span(self, prep: CCAPrepared, f0: int, f1: int, shift_ms: float, search_ms: float) -> Estimate:
        """The estimate from grid frames ``f0 .. f1-1`` of the track alone (a timeline segment), decided by
        the same calibration as the whole track: the segment's own z, length, halves' agreement and witness.
        It searches +/-``SPAN_SEARCH_MS`` around ``shift_ms`` whatever the clip's search (``search_ms`` is
        the protocol's and unused): a peak chosen among fewer lags is less often a chance one, so the whole
        track's calibration is on the safe side here."""
        lo = int(np.clip(f0 - prep.track.start, 0, len(prep.features)))
        hi = int(np.clip(f1 - prep.track.start - 1, lo, len(prep.features)))
        return self._estimate(prep, lo, hi, shift_ms, SPAN_SEARCH_MS)

    def _estimate(self, prep: CCAPrepared, lo: int, hi: int, shift_ms: float, search_ms: float) -> Estimate:
        """The estimate from features ``lo:hi`` (frame midpoints from the track's frame ``lo``)."""
        whole = (lo, hi) == (0, len(prep.features))
        search = max(MIN_SEARCH_MS, float(search_ms)) if whole else float(search_ms)
        steps = all_steps = np.arange(-int(round(search / LAG_STEP_MS)), int(round(search / LAG_STEP_MS)) + 1)
        lags = all_lags = steps * LAG_STEP_MS
        feats, model_audio, gate = self._features_at(prep, shift_ms)
        n = hi - lo
        # The halves' moments at every lag; the stretch's own are their sum (read directly only without halves).
        if whole and n <= BESIDE_MAX_FRAMES:  # every lag: the whole track's curve is reported and plotted
            # the halves' and the model's curves do not depend on the peak here: read them on the two cores
            spans = self._half_spans(lo, hi)
            with ThreadPoolExecutor(2, thread_name_prefix="cca") as pool:
                halves = [pool.submit(self._span_moments, prep, feats, gate, steps, a, b) for a, b in spans or []]
                model_curve = self._model_curve(prep, model_audio, gate, steps, lo, hi)
                half_moments = self._paired(spans, [f.result() for f in halves])
                curves = pool.submit(self._half_curves, half_moments, lags)
                mom = self._joined(half_moments) or lag_moments(prep.features, prep.track.start, feats, steps, gate)
                raw, heard = _full_curve(mom, len(steps), n)
                half_curves = curves.result()
        elif whole:  # one thing at a time: a long track's FFT buffers are large
            half_moments = self._half_moments(prep, feats, gate, steps, lo, hi)
            half_curves = self._half_curves(half_moments, lags)
            mom = self._joined(half_moments, in_place=True) or lag_moments(prep.features, prep.track.start, feats,
                                                                            steps, gate)
            del half_moments
            raw, heard = _full_curve(mom, len(steps), n)
            del mom
            model_curve = self._model_curve(prep, model_audio, gate, steps, lo, hi)
        else:  # a stretch (a timeline segment): every 4th lag and every lag near the best
            half_moments = self._half_moments(prep, feats, gate, steps, lo, hi)
            mom = self._joined(half_moments) or self._span_moments(prep, feats, gate, steps, lo, hi)
            idx, raw, heard = _sparse_curve(mom, len(steps), n)
            steps, lags = steps[idx], lags[idx]
        if n < 3 or not np.isfinite(raw).any():
            return Estimate(self.name, 0.0, 0.0, False, False, search, lags, np.zeros(len(lags)),
                            "canonical correlation", False, 0,
                            extra={"reason": "too little overlap of face and sound"}, p_correct=0.0)
        curve = damped(raw, heard, n)
        peaked = curve  # the curve whose peak is the estimate (refined on it too: its own local maximum)
        if whole and self.pool_weight and model_curve is not None and len(model_curve) == len(curve):
            # the lip model backs a lag, never vetoes one (below its mean it adds nothing)
            peaked = _standard(curve) + self.pool_weight * np.maximum(_standard(model_curve), 0.0)
        best = int(np.argmax(peaked))
        lag = float(lags[best]) + parabolic_peak(peaked, best, LAG_STEP_MS)
        z = peak_z(curve, lags, best)
        # the frames that meet the sound at the peak: at a lag of seconds on a short clip, a part of the track
        a, b = overlap_span(feats, prep.track.start + lo, n, int(steps[best]))
        idx_near = None
        if not whole:  # the halves at every 4th lag and at every lag near the stretch's peak
            near = np.flatnonzero(np.abs(all_lags - lags[best]) <= HALF_AGREE_MS)
            idx_near = np.union1d(np.arange(0, len(all_lags), COARSE_STRIDE), near)
            half_curves = self._half_curves(half_moments, all_lags, idx_near)
            model_curve = self._model_curve(prep, model_audio, gate, steps, lo, hi)
        if b - a < REBALANCE_OVERLAP * n:
            # one half of the track barely meets the sound at this lag, so it cannot witness the peak: the
            # halves are those of the overlapping frames instead (short clips with offsets of seconds)
            half_curves = self._half_curves(self._half_moments(prep, feats, gate, all_steps, lo + a, lo + b), all_lags,
                                            idx_near)
        z_half = self._halves_z(half_curves, float(lags[best]))
        z_model = self._model_z(model_curve, lags, float(lags[best]))
        p = float(self.calibration.p_correct(z, n + 1, z_half, z_model))
        confident = z >= self.min_confidence if self.min_confidence is not None else p >= self.calibration.threshold
        extra: dict = {"z": round(z, 3), "z_halves": round(z_half, 3), "z_model": round(z_model, 3),
                       "rho": round(float(raw[best]), 4), "overlap_frames": b - a}
        if self.min_confidence is None:  # decided on p_correct: the threshold it was held to
            extra["p_threshold"] = round(float(self.calibration.threshold), 3)
        return Estimate(engine=self.name, audio_lag_ms=lag, confidence=z, confident=bool(confident),
                        edge=abs(lags[best]) >= search - LAG_STEP_MS / 2, search_ms=search, lags_ms=lags, curve=curve,
                        curve_label="canonical correlation", best_is_min=False, windows=n,
                        window_times_s=np.zeros(0), window_confidence=np.zeros(0), extra=extra, p_correct=p)
