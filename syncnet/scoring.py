"""From lip and audio embeddings to an offset, a confidence and a sub-frame audio lag.

The reference's rules, exactly: for every video window i and shift s in -K..+K the Euclidean distance
(``torch.pairwise_distance``, eps 1e-6, embeddings not normalised) to audio window i+s, zero vectors past
either end; the mean over windows; the best shift at its minimum; AV offset = K - argmin (in 25 fps
frames, positive = audio early); confidence = median - min; per-window confidence median - that window's
distance at the best shift, median-filtered over 9 windows.

What the reference lacks is added on top: the minimum refined to a fraction of a frame by a parabola
through it and its two neighbours, given as ``audio_lag_ms`` with our sign (> 0 = sound after the lips),
and an ``edge`` flag when the minimum sits at the end of the searched range (the true offset may lie
beyond it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import FPS

#: The reference CLI's search range: +/-15 frames = +/-600 ms.
DEFAULT_VSHIFT = 15
#: ``torch.nn.functional.pairwise_distance``'s eps, added to the difference before the norm.
PAIRWISE_EPS = 1e-6
#: Kernel of the reference's median filter over per-window confidences.
CONF_MEDFILT = 9
FRAME_MS = 1000.0 / FPS


def distance_matrix(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = DEFAULT_VSHIFT) -> np.ndarray:
    """Distances ``(n_windows, 2*vshift+1)``; column j compares video window i with audio window i+j-vshift.

    Audio windows outside ``0 .. n_audio-1`` are zero vectors, as in the reference's zero padding.
    """
    v = np.asarray(video_emb, dtype=np.float64)
    a = np.asarray(audio_emb, dtype=np.float64)
    n, dim = v.shape
    padded = np.zeros((n + 2 * vshift, dim))
    m = min(len(a), n + vshift)
    padded[vshift : vshift + m] = a[:m]
    return shifted_distances(v, padded, vshift)


def shifted_distances(video_emb: np.ndarray, audio_run: np.ndarray, vshift: int) -> np.ndarray:
    """The distance loop: ``(n, 2*vshift+1)``, column j = ``|video[i] - audio_run[i + j] + eps|``.

    ``audio_run`` holds the ``n + 2*vshift`` audio embeddings from ``vshift`` windows before the first video
    window (zero vectors where the reference pads), so column ``vshift`` is lag 0. Float64, as the parity
    tests require.
    """
    v = np.asarray(video_emb, dtype=np.float64)
    a = np.asarray(audio_run, dtype=np.float64)
    n = len(v)
    out = np.empty((n, 2 * vshift + 1))
    for j in range(2 * vshift + 1):
        diff = v - a[j : j + n] + PAIRWISE_EPS
        out[:, j] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def medfilt(x: np.ndarray, kernel: int = CONF_MEDFILT) -> np.ndarray:
    """``scipy.signal.medfilt`` for 1-D input (zero padding at both ends), without importing SciPy's signal."""
    half = kernel // 2
    padded = np.concatenate([np.zeros(half), np.asarray(x, dtype=np.float64), np.zeros(half)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel), axis=1)


def refine_minimum(curve: np.ndarray, idx: int) -> float:
    """Sub-sample position of the minimum: the vertex of the parabola through ``idx`` and its neighbours.

    At either end of the curve (no neighbour on one side) or on a flat stretch it returns ``idx``.
    """
    if idx <= 0 or idx >= len(curve) - 1:
        return float(idx)
    left, mid, right = (float(curve[idx - 1]), float(curve[idx]), float(curve[idx + 1]))
    denom = left - 2 * mid + right
    if denom <= 0:
        return float(idx)
    return idx + 0.5 * (left - right) / denom


def offset_frames_to_lag_ms(offset_frames: float) -> float:
    """Reference AV offset (25 fps frames, > 0 = audio early) -> ``audio_lag_ms`` (> 0 = audio late)."""
    return -offset_frames * FRAME_MS


def lag_ms_to_offset_frames(audio_lag_ms: float) -> float:
    return -audio_lag_ms / FRAME_MS


@dataclass(frozen=True)
class OffsetScore:
    """Everything the reference computes for one clip, plus the sub-frame lag and the edge flag."""

    vshift: int
    dists: np.ndarray  #: (windows, 2*vshift+1)
    mean_dists: np.ndarray  #: (2*vshift+1,) mean over windows: the curve to plot
    best_index: int  #: argmin of mean_dists
    offset_frames: int  #: reference "AV offset": vshift - best_index
    min_dist: float
    confidence: float  #: median(mean_dists) - min_dist
    window_confidence: np.ndarray  #: per window, median-filtered (kernel 9)
    offset_frames_refined: float  #: sub-frame offset, reference sign and units
    audio_lag_ms: float  #: sub-frame lag, our sign (> 0 = sound after the lips)
    edge: bool  #: the minimum is at an end of the searched range

    @property
    def windows(self) -> int:
        return int(self.dists.shape[0])

    @property
    def lags_ms(self) -> np.ndarray:
        """``audio_lag_ms`` that each column of ``dists`` / ``mean_dists`` stands for."""
        return (np.arange(2 * self.vshift + 1) - self.vshift) * FRAME_MS

    def to_dict(self, include_dists: bool = False) -> dict:
        out = {
            "offset_frames": self.offset_frames,
            "min_dist": self.min_dist,
            "confidence": self.confidence,
            "audio_lag_ms": self.audio_lag_ms,
            "offset_frames_refined": self.offset_frames_refined,
            "edge": self.edge,
            "windows": self.windows,
            "vshift": self.vshift,
            "mean_dists": self.mean_dists.tolist(),
            "window_confidence": self.window_confidence.tolist(),
        }
        if include_dists:
            out["dists"] = self.dists.tolist()
        return out


def score_distances(dists: np.ndarray, vshift: int | None = None) -> OffsetScore:
    """Apply the reference's decision rules (and our refinements) to a distance matrix."""
    dists = np.asarray(dists, dtype=np.float64)
    if dists.ndim != 2 or dists.shape[0] == 0:
        raise ValueError("need at least one window of distances")
    if vshift is None:
        vshift = (dists.shape[1] - 1) // 2
    if dists.shape[1] != 2 * vshift + 1:
        raise ValueError(f"dists has {dists.shape[1]} columns, expected {2 * vshift + 1} for vshift {vshift}")
    mean = dists.mean(axis=0)
    best = int(np.argmin(mean))
    min_dist = float(mean[best])
    median = float(np.median(mean))
    window_conf = medfilt(median - dists[:, best], CONF_MEDFILT)
    refined = vshift - refine_minimum(mean, best)
    return OffsetScore(
        vshift=vshift,
        dists=dists,
        mean_dists=mean,
        best_index=best,
        offset_frames=vshift - best,
        min_dist=min_dist,
        confidence=median - min_dist,
        window_confidence=window_conf,
        offset_frames_refined=refined,
        audio_lag_ms=offset_frames_to_lag_ms(refined) + 0.0,
        edge=best in (0, 2 * vshift),
    )


def score_embeddings(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = DEFAULT_VSHIFT) -> OffsetScore:
    """The reference ``calc_pdist`` + ``evaluate`` statistics for one clip's embeddings."""
    return score_distances(distance_matrix(video_emb, audio_emb, vshift), vshift)
