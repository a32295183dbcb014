"""SyncNet (Chung & Zisserman 2016, "Out of time"): a faithful, faster re-implementation.

``load_model`` finds (or downloads) and checks the official ``syncnet_v2.model`` and returns an
:class:`~syncnet.inference.Embedder`; ``score_video`` scores a face-crop clip exactly as the
reference demo does; ``scoring`` turns embeddings into offsets and confidences.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .constants import FPS, SAMPLE_RATE

if TYPE_CHECKING:
    from .inference import Embedder
    from .model import SyncNet

__all__ = [
    "DEFAULT_VSHIFT", "FPS", "SAMPLE_RATE", "Embedder", "FastSyncNet", "OffsetScore", "SyncNet", "WeightsError",
    "load_model", "load_syncnet", "score_distances", "score_embeddings",
]

#: Names served lazily, so that importing syncnet.media or syncnet.audio does not import PyTorch.
_LAZY = {
    "Embedder": "inference", "FastSyncNet": "model", "SyncNet": "model", "build_syncnet": "model",
    "DEFAULT_VSHIFT": "scoring", "OffsetScore": "scoring", "score_distances": "scoring",
    "score_embeddings": "scoring", "WeightsError": "weights", "ensure_weights": "weights", "verify_file": "weights",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_syncnet(weights: str | os.PathLike | None = None, *, download: bool = True,
                 progress: bool = False) -> SyncNet:
    """The reference-layout :class:`SyncNet` holding verified weights (downloaded when missing)."""
    from .model import build_syncnet
    from .weights import ensure_weights, verify_file

    path = ensure_weights(weights, download_missing=download, progress=progress)
    return build_syncnet(verify_file(path))


def load_model(weights: str | os.PathLike | None = None, *, device: str | None = None, batch_size: int | None = None,
               download: bool = True, progress: bool = False) -> Embedder:
    """A ready :class:`Embedder` (CUDA when available) for ``weights`` or the default weights file."""
    from .inference import Embedder

    return Embedder(load_syncnet(weights, download=download, progress=progress), device=device,
                    batch_size=batch_size)
