"""The development set of real clips (``../shared/fixtures/dev``) and its analyses, cached for the benchmarks.

The expensive part of measuring a clip is the analysis pass (decode, face detection and tracking, mouth
crops). It does not depend on the audio, so the accuracy benchmark and the calibration script run it once
per clip (in parallel workers) and keep the result in a cache folder; every shifted copy, sub-clip and
mismatched pairing is then built in memory from the cached analysis, and measured by the product's own
:func:`pipeline.sync.sync_video`.

The cache lives outside the repository (``$SYNCFIX_CACHE`` or ``~/.cache/syncfix/devset``), keyed by the
clip's SHA-256 and the analysis settings, so a stale cache can never be read.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.clips import FIXTURES

log = logging.getLogger(__name__)

DEV = FIXTURES / "dev"
CACHE = Path(os.environ.get("SYNCFIX_CACHE", Path.home() / ".cache" / "syncfix" / "devset"))
#: Bump when the analysis changes what it stores (4: frames decoded as I420 and converted by OpenCV; 5: the
#: face detector's model run with its weights as constants).
CACHE_VERSION = 5

#: Clips whose own sync is doubtful according to the manifest: a music bed or re-edit (d15, d29), a
#: split-screen composite (d26), heavy overlays and effects (d30), a hidden lead-in cut by an edit list
#: (d32), stream start offsets that a reader must honour (d27, d33). They take part in the relative,
#: sub-clip and mismatched figures, but not in the absolute ones.
DOUBTFUL = {"d15", "d26", "d27", "d29", "d30", "d32", "d33"}

#: The first fixtures with a known absolute lag (SyncNet's official example: AV offset 3 = -120 ms).
ANCHORS = {"example": -120.0, "synced_example": 0.0}


@dataclass
class Clip:
    name: str
    path: Path
    project: str  #: source project (the unit held out by cross-validation)
    true_lag_ms: float | None  #: None when the clip's own sync is doubtful


def dev_clips() -> list[Clip]:
    """The dev set from its manifest, plus the two SyncNet anchor fixtures."""
    clips = []
    with open(DEV / "MANIFEST.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            name = Path(row["name"]).stem
            clips.append(Clip(name, DEV / row["name"], row["repo"],
                              None if name in DOUBTFUL else 0.0))
    for name, lag in ANCHORS.items():
        clips.append(Clip(name, FIXTURES / f"{name}.avi", "joonson/syncnet_python", lag))
    return clips


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_file(clip: Clip) -> Path:
    return CACHE / f"{clip.name}-{_sha(clip.path)[:16]}-v{CACHE_VERSION}.npz"


def _analyse_to_cache(clip: Clip) -> Path:
    from pipeline.analysis import analyse

    out = _cache_file(clip)
    if out.exists():
        return out
    a = analyse(clip.path, face_crops=False)
    arrays: dict[str, np.ndarray] = {"audio": a.audio, "n_frames": np.array(a.n_frames)}
    meta = []
    for k, t in enumerate(a.tracks):
        arrays[f"t{k}_points"] = t.points
        arrays[f"t{k}_mouths"] = t.mouth_crops
        meta.append([t.id, t.scene, t.start, t.detections, t.mean_score])
    arrays["tracks"] = np.array(meta, dtype=np.float64).reshape(-1, 5)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return out


def load_analyses(clips: list[Clip], workers: int = 2) -> dict[str, object]:
    """``{clip name: Analysis}`` (without SyncNet crops), analysing in ``workers`` processes what is not cached."""
    from pipeline.analysis import Analysis, FaceTrack
    from pipeline.media import probe

    todo = [c for c in clips if not _cache_file(c).exists()]
    if todo:
        log.info("analysing %d clips into %s", len(todo), CACHE)
        with ProcessPoolExecutor(max(1, workers)) as pool:
            list(pool.map(_analyse_to_cache, todo))
    out = {}
    for c in clips:
        z = np.load(_cache_file(c))
        tracks = []
        for k, (tid, scene, start, dets, score) in enumerate(z["tracks"]):
            tracks.append(FaceTrack(id=int(tid), scene=int(scene), start=int(start), points=z[f"t{k}_points"],
                                    mouth_crops=z[f"t{k}_mouths"], detections=int(dets), mean_score=float(score)))
        out[c.name] = Analysis(info=probe(c.path), audio=z["audio"], n_frames=int(z["n_frames"]), tracks=tracks,
                               scene_cuts=[], timings={})
    return out
