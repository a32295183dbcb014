"""Estimation engines: from a face track and the audio to a score curve over lags, a lag and a confidence.

Every engine follows one interface, so the iteration loop, the decision, the CLI and the app need no
special cases:

* ``prepare(analysis, track)`` does the expensive, audio-independent work once (SyncNet: lip embeddings);
* ``measure(prepared, shift_ms, search_ms)`` scores the audio moved earlier by ``shift_ms`` over lags
  within +/- ``search_ms`` and returns an :class:`Estimate` whose ``audio_lag_ms`` is the residual lag;
* ``extend(prepared, estimate)`` adds material while the estimate is borderline (False when it will not).

The estimate type, the engine protocol and the audio shift live in :mod:`pipeline.estimates`, which every
engine imports; this module holds SyncNet's engine and the engine selection.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from syncnet.audio import mfcc
from syncnet.constants import EMBED_DIM, MFCC_PER_FRAME, MFCC_WINDOW, WINDOW_FRAMES
from syncnet.scoring import FRAME_MS, score_distances, shifted_distances

from .analysis import KEEP_SEGMENT, Analysis, FaceTrack, frame_rms
from .errors import EngineUnavailable
from .estimates import Engine, Estimate, shift_audio  # noqa: F401 - re-exported for engine users
from .media import GRID_FPS

if TYPE_CHECKING:
    from syncnet.inference import Embedder


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- SyncNet

#: Default SyncNet confidence (median - min of the mean distance curve) needed to trust an offset. The
#: official weights give about 10 on example.avi; LatentSync keeps clips above 3 when cleaning data.
SYNCNET_MIN_CONFIDENCE = 3.0
#: Windows scored at first, in contiguous blocks (2 s each) spread over the track where there is speech.
SYNCNET_BLOCK = KEEP_SEGMENT - WINDOW_FRAMES  # 50: a segment of kept crops is one block
SYNCNET_FIRST_WINDOWS = 150
#: More windows are added only while the confidence is borderline (at least this share of the threshold),
#: and never beyond this many: a flat curve does not sharpen with more of the same.
SYNCNET_EXTEND_FROM = 1 / 3
SYNCNET_MAX_WINDOWS = 1000


@dataclass
class SyncNetPrepared:
    track: FaceTrack
    audio: np.ndarray
    candidates: list[int]  #: block start windows not used yet, best first
    blocks: list[int] = field(default_factory=list)  #: block start windows embedded
    video_emb: list[np.ndarray] = field(default_factory=list)  #: per block (SYNCNET_BLOCK, 1024)
    #: audio embeddings at one shift (widening the search or adding windows reuses them)
    audio_shift_ms: float | None = None
    audio_feat: np.ndarray | None = None
    audio_emb: dict[int, np.ndarray] = field(default_factory=dict)

    def audio_at(self, shift_ms: float) -> np.ndarray:
        """MFCCs of the audio moved earlier by ``shift_ms``; resets the embedding cache on a new shift."""
        if self.audio_shift_ms != shift_ms or self.audio_feat is None:
            self.audio_shift_ms = shift_ms
            self.audio_feat = mfcc(shift_audio(self.audio, shift_ms))
            self.audio_emb = {}
        return self.audio_feat


class SyncNetEngine:
    """SyncNet on a bounded sample of windows: lip embeddings once, audio re-scored per shift."""

    name = "syncnet"
    min_frames = 50  #: 2 s
    needs_face_crops = True

    def __init__(self, embedder: Embedder, min_confidence: float = SYNCNET_MIN_CONFIDENCE,
                 first_windows: int = SYNCNET_FIRST_WINDOWS, block: int = SYNCNET_BLOCK):
        self.embedder = embedder
        self.min_confidence = min_confidence
        self.first_windows = first_windows
        self.block = block

    def _candidate_blocks(self, analysis: Analysis, track: FaceTrack) -> list[int]:
        """Starts of blocks whose every frame has a kept crop, ordered so that any prefix is spread out.

        Blocks are ranked by speech energy within each of several equal parts of the track, then taken
        part by part round-robin, so the first few cover the whole track and favour talking.
        """
        b = self.block
        need = b + WINDOW_FRAMES  # frames per block: b windows + the frame that proves the last one counts
        have = np.zeros(track.end + 2, bool)
        for f in track.face_crops:
            have[f] = True
        starts = []
        f = track.start
        while f + need - 1 <= track.end:
            if have[f : f + need].all():
                starts.append(f)
                f += b
            else:
                f += 1
        if not starts:
            return []
        energy = frame_rms(analysis.audio, track.end + need)
        score = {s: float(energy[s : s + need].mean()) for s in starts}
        parts = max(1, math.ceil(self.first_windows / b))
        groups = [list(g) for g in np.array_split(np.array(starts), min(parts, len(starts)))]
        for g in groups:
            g.sort(key=lambda s: -score[s])
        ordered = []
        while any(groups):
            for g in groups:
                if g:
                    ordered.append(int(g.pop(0)))
        return ordered

    def prepare(self, analysis: Analysis, track: FaceTrack) -> SyncNetPrepared:
        prep = SyncNetPrepared(track=track, audio=analysis.audio, candidates=self._candidate_blocks(analysis, track))
        self._embed(prep, max(1, self.first_windows // self.block))
        return prep

    def _embed(self, prep: SyncNetPrepared, n_blocks: int) -> int:
        take, prep.candidates = prep.candidates[:n_blocks], prep.candidates[n_blocks:]
        for start in take:
            frames = [prep.track.face_crops[f] for f in range(start, start + self.block + WINDOW_FRAMES)]
            emb = self.embedder.embed_frames(frames)
            prep.blocks.append(start)
            prep.video_emb.append(emb[: self.block])
        return len(take)

    def extend(self, prep: SyncNetPrepared, estimate: Estimate | None = None) -> bool:
        """Double the windows scored, if the track has more and the estimate is borderline."""
        if estimate is not None and estimate.confidence < SYNCNET_EXTEND_FROM * self.min_confidence:
            return False
        room = SYNCNET_MAX_WINDOWS // self.block - len(prep.blocks)
        return room > 0 and self._embed(prep, min(room, max(1, len(prep.blocks)))) > 0

    def _embed_audio(self, prep: SyncNetPrepared, feat: np.ndarray, n_audio: int, vshift: int) -> None:
        """Embed the audio windows the blocks compare with that are not cached yet, in contiguous runs."""
        need = np.zeros(n_audio, bool)
        for start in prep.blocks:
            need[max(0, start - vshift) : max(0, min(n_audio, start + self.block + vshift))] = True
        for w in prep.audio_emb:
            if w < n_audio:
                need[w] = False
        idx = np.flatnonzero(need)
        if not idx.size:
            return
        breaks = np.flatnonzero(np.diff(idx) > 1)
        for run in np.split(idx, breaks + 1):
            emb = self.embedder.embed_audio(feat, len(run), first=int(run[0]))
            prep.audio_emb.update(zip(run.tolist(), emb))

    def measure(self, prep: SyncNetPrepared, shift_ms: float, search_ms: float) -> Estimate:
        vshift = max(1, int(round(search_ms / FRAME_MS)))
        if not prep.blocks:
            return _empty_estimate(self.name, search_ms, "distance", True)
        feat = prep.audio_at(shift_ms)
        n_audio = (feat.shape[1] - MFCC_WINDOW) // MFCC_PER_FRAME + 1  # audio windows with all 20 columns
        self._embed_audio(prep, feat, n_audio, vshift)
        zero = np.zeros(EMBED_DIM, np.float32)  # past either end the reference compares with zero vectors
        rows = []
        for start, vemb in zip(prep.blocks, prep.video_emb):
            aemb = np.stack([prep.audio_emb.get(w, zero) for w in range(start - vshift, start + self.block + vshift)])
            rows.append(shifted_distances(vemb, aemb, vshift))
        s = score_distances(np.concatenate(rows), vshift)
        times = np.concatenate([(np.arange(self.block) + b + WINDOW_FRAMES / 2) / GRID_FPS for b in prep.blocks])
        order = np.argsort(times)
        return Estimate(
            engine=self.name, audio_lag_ms=s.audio_lag_ms, confidence=s.confidence,
            confident=s.confidence >= self.min_confidence, edge=s.edge, search_ms=vshift * FRAME_MS,
            lags_ms=s.lags_ms, curve=s.mean_dists, curve_label="mean distance", best_is_min=True,
            windows=s.windows, window_times_s=times[order], window_confidence=s.window_confidence[order],
            extra={"offset_frames": s.offset_frames, "min_dist": round(s.min_dist, 5)},
        )


    def measure_span(self, prep: SyncNetPrepared, f0: int, f1: int, shift_ms: float, search_ms: float) -> Estimate:
        """The estimate from the embedded blocks that lie within grid frames ``f0 .. f1-1`` (a timeline
        segment); none there: an empty estimate (nothing measured), never a guess."""
        keep = [i for i, b in enumerate(prep.blocks) if b >= f0 and b + self.block + WINDOW_FRAMES <= f1]
        part = replace(prep, blocks=[prep.blocks[i] for i in keep], video_emb=[prep.video_emb[i] for i in keep],
                       candidates=[])
        est = self.measure(part, shift_ms, search_ms)
        prep.audio_shift_ms, prep.audio_feat, prep.audio_emb = part.audio_shift_ms, part.audio_feat, part.audio_emb
        return est


def _empty_estimate(name: str, search_ms: float, label: str, best_is_min: bool) -> Estimate:
    return Estimate(engine=name, audio_lag_ms=0.0, confidence=0.0, confident=False, edge=False, search_ms=search_ms,
                    lags_ms=np.zeros(0), curve=np.zeros(0), curve_label=label, best_is_min=best_is_min, windows=0,
                    extra={"empty": True})


_embedders: dict[tuple[str, str | None], Embedder] = {}


def syncnet_embedder(weights: str | None = None, device: str | None = None) -> Embedder:
    """The SyncNet model, loaded once per process and weights file (never per request)."""
    from syncnet import WeightsError, load_model
    from syncnet.weights import default_weights_path

    path = str(weights or default_weights_path())
    key = (path, device)
    if key not in _embedders:
        try:
            _embedders[key] = load_model(weights, device=device, download=False)
        except WeightsError as exc:
            raise EngineUnavailable(str(exc)) from exc
    return _embedders[key]


ENGINES = ("auto", "cca", "syncnet", "both")


@dataclass(frozen=True)
class EngineChoice:
    """The engine that decides, an optional second one that cross-checks it, and why."""

    primary: Engine
    cross_check: Engine | None
    reason: str


def resolve_engine(name: str, weights: str | None = None) -> str:
    """``name`` made definite without loading anything: ``auto`` without weights is ``cca``.

    Raises :class:`EngineUnavailable` when SyncNet is asked for and its weights are missing (a named
    weights file that does not exist, or none at the default place), with what to do.
    """
    from syncnet.weights import default_weights_path, weights_available

    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    have = weights_available(weights)
    if weights and not have and name != "cca":
        raise EngineUnavailable(f"weights file {weights} does not exist (omit --weights to use the default "
                                f"{default_weights_path()}, or use --engine cca)")
    if name == "cca" or (name == "auto" and not have):
        return "cca"
    if not have:
        raise EngineUnavailable(f"the {name} engine needs the SyncNet weights, which are not at "
                                f"{weights or default_weights_path()} (run `python -m syncnet download`, pass "
                                "--weights PATH, or use --engine cca)")
    return name


def select_engines(name: str = "auto", weights: str | None = None, device: str | None = None,
                   min_confidence: float | None = None) -> EngineChoice:
    """``auto``: SyncNet when its weights are present (with ``cca`` cross-checking it), else ``cca``.

    ``both`` runs SyncNet and ``cca`` and reports their agreement (it needs the weights); ``syncnet`` and
    ``cca`` run alone. Raises :class:`EngineUnavailable` when SyncNet is asked for without weights.
    """
    from syncnet.weights import default_weights_path

    from .cca import CCAEngine

    where = weights or default_weights_path()
    if resolve_engine(name, weights) == "cca":
        engine = CCAEngine()
        if min_confidence is not None:
            engine.min_confidence = min_confidence
        why = "requested" if name == "cca" else f"auto: no SyncNet weights at {where}, so the weight-free cca engine"
        return EngineChoice(engine, None, why)
    engine = SyncNetEngine(syncnet_embedder(weights, device))
    if min_confidence is not None:
        engine.min_confidence = min_confidence
    if name == "syncnet":
        return EngineChoice(engine, None, "requested")
    why = ("requested: SyncNet decides, cca cross-checks" if name == "both"
           else f"auto: SyncNet weights found at {where}; the weight-free cca engine cross-checks it")
    return EngineChoice(engine, CCAEngine(), why)


def make_engine(name: str = "auto", weights: str | None = None, device: str | None = None,
                min_confidence: float | None = None) -> EngineChoice:
    """The engines ``name`` stands for, chosen as ``detect`` chooses them: :func:`select_engines`.

    Pass the result to :func:`pipeline.sync.sync_video` (``sync_video(path, make_engine("auto"))``) and it
    decides as the command line does, cross-check included; ``.primary`` is the deciding engine alone.
    """
    return select_engines(name, weights, device, min_confidence)
