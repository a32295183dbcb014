"""The learned lip model: one small linear map from mouth motion and speech to a shared space.

The per-clip canonical correlation (:mod:`pipeline.cca`) fits its projections on each clip alone, which is
what makes it sharp on a long clip and what makes chance peaks on a short one or on mismatched audio. This
model is the other half: one linear map fitted once, over every training clip at its published sync (a
regularised CCA of 5 frames of mouth-shape velocity and optical flow against 7 frames of speech
features), so it carries what talking mouths and their sound have in common across speakers and nothing
of the clip at hand. Alone
it reads less sharply than the per-clip CCA; as a witness it is independent: the engine asks how strongly
this model's own lag curve peaks near the per-clip peak (``z_model``), and the calibration weighs that with
the rest of the evidence.

The map is a small file beside this module (``lip_model.npz``, about 12 kB), reproduced from the dev set
by ``benchmarks/lipmodel_fit.py --write``; the accuracy benchmark measures every project with a map fitted
without that project. Mouth shape here is the normalised mouth crop's lowest 2-D DCT coefficients (a fixed
basis, the same for every clip, unlike the per-clip PCA) and its vertical intensity profile; the optical
flow (:func:`mouth_flow`) is shared with the per-clip CCA, which computes it once per track.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .lagcorr import STEPS_PER_FRAME, LagMoments, frame_window_means, highpass, moving_average

log = logging.getLogger(__name__)

MOUTH_VEC = (32, 20)  #: mouth crops are area-resized to this (width, height) before the DCT and profile
DCT_BLOCK = (8, 6)  #: lowest DCT coefficients kept (horizontal, vertical): 48
PROFILE_BANDS = 8  #: row bands of the mouth's vertical intensity profile
#: Mouth context (visual rows, i.e. frame midpoints) and speech context (frames of 40 ms) around a moment.
VISUAL_CONTEXT = (-2, -1, 0, 1, 2)
AUDIO_CONTEXT = (-3, -2, -1, 0, 1, 2, 3)
N_PAIRS = 6  #: canonical pairs kept
RIDGE = 0.1  #: ridge on both pooled covariances, as a share of their mean variance
CLIP_Z = 4.0
#: The witness looks for its own peak this close to the per-clip peak: its readings of in-sync clips sit
#: 0-100 ms from the per-clip CCA's on the dev set (the two measure the mouth's lead differently).
SUPPORT_WINDOW_MS = 120.0
MODEL_FILE = Path(__file__).with_name("lip_model.npz")
#: Mouth crops are reduced to this (width, height) for the optical flow, and Farneback's parameters (pyramid
#: scale, levels, window, iterations, poly_n, poly_sigma, flags): 0.2 ms a frame, 0.3 s a minute of video.
FLOW_SIZE = (48, 32)
FLOW_PARAMS = (0.5, 1, 7, 2, 5, 1.1, 0)
#: Frame pairs whose flows are summarised together (3 MB of flow fields).
FLOW_BLOCK = 256
#: The head's own motion is read from the top third of the mouth crop (upper lip, philtrum: they move with
#: the head and barely with the jaw).
HEAD_ROWS = 1 / 3
#: The crops are held still against the head's motion faster than this (frames, 1 s): slower motion the
#: face tracker follows itself (it detects every 8th frame and interpolates between).
STEADY_WINDOW = 25


@dataclass(frozen=True)
class MouthMotion:
    """A track's mouth, read once for both readings (:func:`mouth_motion`)."""

    #: (n, h, w) the mouth crops held still against the head's fast motion (:func:`steadied`)
    crops: np.ndarray
    #: (n-1, 7) the lips' optical flow, summarised, with the head's own motion taken out (:func:`mouth_flow`)
    flow: np.ndarray
    #: (n-1, 2) the head's own motion from each frame to the next (x, y; crop pixels)
    head: np.ndarray


# ------------------------------------------------------------------------------------------- inputs

def mouth_profile(crops: np.ndarray) -> np.ndarray:
    """Dark-interior share and 8 row bands of the mouth's centre, normalised per frame. (n, 9).

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
    return profile


def mouth_flow(crops: np.ndarray, workers: int = 1) -> np.ndarray:
    """Dense optical flow of the mouth from each frame to the next, summarised. (n-1, 7).

    Farneback's flow on crops reduced to 48x32, less the head's own motion (the median flow of the crop's
    top third, which moves with the head and not with the jaw: the tracker places the crop from a detection
    every 8th frame, so a nod or a turn moves the whole mouth within it): the vertical motion of the top,
    middle and bottom thirds of the mouth's centre, bottom minus top (the lips parting or closing), the
    horizontal spread (right half minus left half: the corners stretching), the mean absolute flow and the
    spread of its magnitude. Motion rather than brightness: it does not depend on lighting, skin or whether
    teeth show, which the intensity components do. Row ``i`` is the motion from frame ``i`` to ``i + 1``, at
    their midpoint, like a velocity.

    ``workers`` > 1 splits the frames into that many runs read on threads (each pair of frames is read on
    its own, and OpenCV releases the GIL): the same rows, in a fraction of the time.
    """
    return _flows(crops, workers)[:, :7]


def mouth_motion(crops: np.ndarray, workers: int = 1) -> MouthMotion:
    """The flow (:func:`mouth_flow`), the head's motion it leaves out, and the crops held still against it.

    Held-still crops make the mouth's shape (PCA, DCT, profile) a reading of the lips rather than of where
    the crop happened to sit: held out on the dev set, 3-s sub-clips confident 28 -> 38 of 100 (right 18 ->
    32) and shifted copies right 173 -> 178, with the flow's head motion removed as well (README, Engines).
    """
    rows = _flows(crops, workers)
    head = rows[:, 7:] * (crops.shape[2] / FLOW_SIZE[0], crops.shape[1] / FLOW_SIZE[1])
    return MouthMotion(steadied(crops, head), rows[:, :7], head)


def head_path(head: np.ndarray) -> np.ndarray:
    """Where the head's fast motion has carried the mouth at each frame: the summed motion (n-1, 2) less its
    1-s moving average (the slow part the tracker follows). (n, 2), crop pixels."""
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(head, axis=0)])
    return path - moving_average(path, STEADY_WINDOW)


def steadied(crops: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The crops moved back by :func:`head_path` (sub-pixel; edges replicated)."""
    import cv2

    path = head_path(head)
    h, w = crops.shape[1:]
    out = np.empty_like(crops)
    for i, c in enumerate(crops):
        shift = np.float32([[1, 0, -path[i, 0]], [0, 1, -path[i, 1]]])
        out[i] = cv2.warpAffine(c, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def _flows(crops: np.ndarray, workers: int) -> np.ndarray:
    """:func:`_flow_rows` of ``crops``, on ``workers`` threads (runs of frames) when there are enough."""
    if workers <= 1 or len(crops) - 1 < 2 * FLOW_BLOCK:
        return _flow_rows(crops)
    with ThreadPoolExecutor(workers, thread_name_prefix="flow") as pool:
        return np.concatenate(list(pool.map(_flow_rows, flow_runs(crops, workers))))


def flow_runs(crops: np.ndarray, parts: int) -> list[np.ndarray]:
    """``crops`` cut into ``parts`` runs that share their boundary frame: the flows of the runs, one after
    the other, are the flows of the whole (how :func:`mouth_flow` and the engine spread them over threads)."""
    cuts = np.linspace(0, max(0, len(crops) - 1), parts + 1).astype(int)
    return [crops[a : b + 1] for a, b in zip(cuts[:-1], cuts[1:])]


def _flow_rows(crops: np.ndarray) -> np.ndarray:
    """:func:`mouth_flow` on one thread, and the head's motion (two last columns; 48x32 pixels): the flows of
    a block of frame pairs at a time, summarised together (per-frame NumPy calls cost a third as much again
    as the flow itself). (n-1, 9)."""
    import cv2

    w, h = FLOW_SIZE
    out = np.zeros((max(0, len(crops) - 1), 9))
    flows = np.empty((min(FLOW_BLOCK, len(out)), h, w, 2), np.float32)
    prev = None
    for start in range(0, len(out), FLOW_BLOCK):
        k = min(FLOW_BLOCK, len(out) - start)
        for j in range(k):
            i = start + j
            if prev is None:
                prev = cv2.GaussianBlur(cv2.resize(crops[i], FLOW_SIZE, interpolation=cv2.INTER_AREA), (3, 3), 0)
            nxt = cv2.GaussianBlur(cv2.resize(crops[i + 1], FLOW_SIZE, interpolation=cv2.INTER_AREA), (3, 3), 0)
            flows[j] = cv2.calcOpticalFlowFarneback(prev, nxt, None, *FLOW_PARAMS)
            prev = nxt
        head = np.median(flows[:k, : int(h * HEAD_ROWS)].reshape(k, -1, 2), axis=1)
        f = flows[:k] - head[:, None, None, :]
        centre = f[:, h // 8 : 7 * h // 8, w // 4 : 3 * w // 4]
        third = centre.shape[1] // 3
        top, mid, bottom = (centre[:, a : a + third, :, 1].mean(axis=(1, 2)) for a in (0, third, 2 * third))
        band = f[:, h // 4 : 3 * h // 4, :, 0]
        spread = band[:, :, w // 2 :].mean(axis=(1, 2)) - band[:, :, : w // 2].mean(axis=(1, 2))
        magnitude = np.hypot(centre[..., 0], centre[..., 1]).reshape(k, -1).std(axis=1)
        out[start : start + k] = np.stack([top, mid, bottom, bottom - top, spread,
                                           np.abs(centre).mean(axis=(1, 2, 3)), magnitude, *head.T], axis=1)
    return out


def mouth_shape(crops: np.ndarray) -> np.ndarray:
    """Per frame: the 48 lowest 2-D DCT coefficients of the normalised 32x20 mouth, and its profile. (n, 57)."""
    import cv2

    kx, ky = DCT_BLOCK
    dct = np.empty((len(crops), kx * ky))
    for i, c in enumerate(crops):
        x = cv2.resize(c, MOUTH_VEC, interpolation=cv2.INTER_AREA).astype(np.float32)
        x = (x - x.mean()) / (x.std() + 1e-6)
        dct[i] = cv2.dct(x)[:ky, :kx].reshape(-1)
    return np.concatenate([dct, mouth_profile(crops)], axis=1)


def with_context(x: np.ndarray, offsets: tuple[int, ...], step: int = 1) -> np.ndarray:
    """Rows of ``x`` side by side with their neighbours ``offsets * step`` rows away (zeros past the ends)."""
    n, d = x.shape
    out = np.zeros((n, d * len(offsets)))
    for j, o in enumerate(offsets):
        s = o * step
        cols = slice(j * d, (j + 1) * d)
        if s >= 0:
            out[: n - s, cols] = x[s:]
        else:
            out[-s:, cols] = x[: n + s]
    return out


def mouth_shape_velocity(crops: np.ndarray) -> np.ndarray:
    """Mouth-shape velocity at frame midpoints (:func:`mouth_shape`, differenced). (n-1, 57)."""
    return np.diff(mouth_shape(crops), axis=0)


def visual_inputs(crops: np.ndarray, motion: MouthMotion | None = None,
                  shape_velocity: np.ndarray | None = None) -> np.ndarray:
    """Mouth-shape velocity (of the steadied crops) and the mouth's optical flow at frame midpoints,
    high-passed, with their context. (n-1, 64 x 5). ``motion`` and ``shape_velocity``: :func:`mouth_motion`
    and :func:`mouth_shape_velocity` of its crops when already computed (the engine computes them once for
    both of its readings)."""
    motion = mouth_motion(crops) if motion is None else motion
    vel = mouth_shape_velocity(motion.crops) if shape_velocity is None else shape_velocity
    flow = motion.flow
    parts = [highpass(v, 25, CLIP_Z) for v in (vel, flow)]
    return with_context(np.concatenate(parts, axis=1), VISUAL_CONTEXT)


def audio_inputs(feats: np.ndarray) -> np.ndarray:
    """The engine's 5 ms speech features with their context, one frame apart. (m, q x 7)."""
    return with_context(feats, AUDIO_CONTEXT, STEPS_PER_FRAME)


# ------------------------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class LipModel:
    """Canonical pairs: ``visual`` (p, k) and ``audio`` (q, k) weights, ``rho`` (k,) their pooled correlations."""

    visual: np.ndarray
    audio: np.ndarray
    rho: np.ndarray

    def project_visual(self, inputs: np.ndarray) -> np.ndarray:
        return inputs @ self.visual

    def project_audio(self, inputs: np.ndarray) -> np.ndarray:
        return inputs @ self.audio

    def project_speech(self, feats: np.ndarray) -> np.ndarray:
        """``project_audio(audio_inputs(feats))`` without building the 7-fold context matrix: each context
        offset's block of weights applied to the features moved by that offset, summed (10 minutes of audio
        would need 130 MB for the matrix; this needs the (m, k) result)."""
        m, q = feats.shape
        out = np.zeros((m, self.audio.shape[1]))
        for j, o in enumerate(AUDIO_CONTEXT):
            part = feats @ self.audio[j * q : (j + 1) * q]
            s = o * STEPS_PER_FRAME
            if s >= 0:
                out[: m - s if s else m] += part[s:]
            else:
                out[-s:] += part[: m + s]
        return out

    def save(self, path: Path) -> None:
        np.savez(path, visual=self.visual.astype(np.float32), audio=self.audio.astype(np.float32),
                 rho=self.rho.astype(np.float32))


def load_lip_model(path: Path = MODEL_FILE) -> LipModel:
    """The map shipped beside this module (``benchmarks/lipmodel_fit.py --write`` reproduces it)."""
    with np.load(path) as z:
        return LipModel(z["visual"].astype(np.float64), z["audio"].astype(np.float64), z["rho"].astype(np.float64))


def projected_curve(model: LipModel, moments: LagMoments, ok: np.ndarray) -> np.ndarray:
    """At each lag in ``ok``: the pairs' signed correlations, weighted by their pooled correlations.

    Signed: the map knows which way a mouth and its sound move together, so an anti-correlation is no
    evidence (the per-clip CCA cannot tell).
    """
    cxx, cyy, cxy = moments.covariances(ok)
    vx = np.diagonal(cxx, axis1=1, axis2=2)
    vy = np.diagonal(cyy, axis1=1, axis2=2)
    r = np.diagonal(cxy, axis1=1, axis2=2) / np.sqrt(np.maximum(vx * vy, 1e-18))
    return r @ (model.rho / model.rho.sum())


# ------------------------------------------------------------------------------------------- fitting

class PooledMoments:
    """Sums of centred products over many tracks' (visual, audio) pairs, to fit a :class:`LipModel`."""

    def __init__(self, p: int, q: int):
        self.n = 0
        self.xx, self.yy, self.xy = np.zeros((p, p)), np.zeros((q, q)), np.zeros((p, q))

    def add(self, x: np.ndarray, y: np.ndarray) -> PooledMoments:
        """One track's pairs, centred on their own means (a track's level is not evidence)."""
        x, y = x - x.mean(axis=0), y - y.mean(axis=0)
        self.n += len(x)
        self.xx += x.T @ x
        self.yy += y.T @ y
        self.xy += x.T @ y
        return self

    def combined(self, other: PooledMoments, sign: float = 1.0) -> PooledMoments:
        out = PooledMoments(*self.xy.shape)
        out.n = self.n + int(sign) * other.n
        out.xx, out.yy, out.xy = self.xx + sign * other.xx, self.yy + sign * other.yy, self.xy + sign * other.xy
        return out


def paired_rows(vis: np.ndarray, start: int, audio_in: np.ndarray, lag_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The (visual, audio) rows that meet at ``lag_steps`` (5 ms): a track's training pairs at its true lag."""
    b, valid = frame_window_means(audio_in)
    r = STEPS_PER_FRAME * start + 2 + STEPS_PER_FRAME * np.arange(len(vis)) + int(lag_steps)
    ok = (r >= 0) & (r < len(b))
    ok[ok] &= valid[r[ok]]
    return vis[ok], b[r[ok]]


def fit_lip_model(m: PooledMoments, pairs: int = N_PAIRS, ridge: float = RIDGE) -> LipModel:
    """Regularised CCA of the pooled moments: the top ``pairs`` canonical directions."""
    cxx, cyy, cxy = m.xx / m.n, m.yy / m.n, m.xy / m.n
    p, q = len(cxx), len(cyy)
    lx = np.linalg.cholesky(cxx + ridge * np.trace(cxx) / p * np.eye(p))
    ly = np.linalg.cholesky(cyy + ridge * np.trace(cyy) / q * np.eye(q))
    whitened = np.linalg.solve(ly, np.linalg.solve(lx, cxy).T).T
    u, s, vt = np.linalg.svd(whitened)
    return LipModel(np.linalg.solve(lx.T, u[:, :pairs]), np.linalg.solve(ly.T, vt[:pairs].T), s[:pairs])
