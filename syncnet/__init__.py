"""SyncNet (Chung & Zisserman 2016, "Out of time"): a faithful, faster re-implementation.

``load_model`` finds (or downloads) and checks the official ``syncnet_v2.model`` and returns an
:class:`~syncnet.inference.Embedder`; ``score_video`` scores a face-crop clip exactly as the
reference demo does; ``scoring`` turns embeddings into offsets and confidences.
"""

from __future__ import annotations

import os

from .inference import Embedder
from .model import FPS, SAMPLE_RATE, FastSyncNet, SyncNet, build_syncnet
from .scoring import DEFAULT_VSHIFT, OffsetScore, score_distances, score_embeddings
from .weights import WeightsError, ensure_weights, verify_file

__all__ = [
    "DEFAULT_VSHIFT", "FPS", "SAMPLE_RATE", "Embedder", "FastSyncNet", "OffsetScore", "SyncNet", "WeightsError",
    "load_model", "load_syncnet", "score_distances", "score_embeddings",
]


def load_syncnet(weights: str | os.PathLike | None = None, *, download: bool = True,
                 progress: bool = False) -> SyncNet:
    """The reference-layout :class:`SyncNet` holding verified weights (downloaded when missing)."""
    path = ensure_weights(weights, download_missing=download, progress=progress)
    return build_syncnet(verify_file(path))


def load_model(weights: str | os.PathLike | None = None, *, device: str | None = None, batch_size: int | None = None,
               download: bool = True, progress: bool = False) -> Embedder:
    """A ready :class:`Embedder` (CUDA when available) for ``weights`` or the default weights file."""
    return Embedder(load_syncnet(weights, download=download, progress=progress), device=device,
                    batch_size=batch_size)
