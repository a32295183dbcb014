"""Fitting the learned lip model (:mod:`pipeline.lipmodel`) from the dev set, whole projects held out.

    .venv/bin/python benchmarks/lipmodel_fit.py            # print the pooled and held-out figures
    .venv/bin/python benchmarks/lipmodel_fit.py --write    # refit on every trusted clip, write pipeline/lip_model.npz

Training pairs: every face track of 2 s or more of the trusted dev clips (and SyncNet's two fixtures), its
mouth inputs paired with its speech inputs at the clip's own reading: the per-clip canonical correlation's
peak (:func:`own_readings`; it does not involve the lip model). Sources published as in sync read +30 to
+250 ms here, and where a clip's /b/ and /p/ releases read its sync independently
(``benchmarks/release_sync.py``) the two agree within 8 ms: that is the material's sync, and a map trained
at the published 0 learned a blur of speakers paired up to 250 ms apart (pooled canonical correlations
0.49 0.46 0.36 0.34 0.33 0.32 at the published sync, 0.64 0.63 0.54 0.50 0.46 0.44 at the own readings).
A reading more than :data:`OWN_READING_MS` from the published sync is taken for a wrong peak: the published
sync stands there. ``--align published`` fits the old way.
Each track's pairs are centred on their own means, summed per source project (:class:`PooledMoments`), so a
map without project P is the total minus P's sums (:func:`fold_models`): that is what the accuracy
benchmark measures P's cases with. Doubtful clips (the manifest's list) are never trained on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.lipmodel import (  # noqa: E402
    MODEL_FILE,
    LipModel,
    PooledMoments,
    audio_inputs,
    fit_lip_model,
    paired_rows,
    visual_inputs,
)

#: Tracks shorter than this (grid frames) are not trained on: the analysis scores none shorter either.
MIN_TRACK_FRAMES = 50
#: A clip's own reading stands as its alignment only this near its published sync (in-sync sources read
#: -20..+250 ms here; beyond, the reading is more likely a wrong peak than the material)
OWN_READING_MS = 300.0


def own_readings(clips: list, analyses: dict) -> dict[str, float]:
    """Each trusted clip's own reading by the per-clip canonical correlation (the engine's first estimate
    with no lip model pooled into its peak, so the map is not trained on its own readings), where it lies
    within :data:`OWN_READING_MS` of the published sync; the published sync elsewhere."""
    from pipeline.cca import CCAEngine

    engine = CCAEngine(pool_weight=0.0)  # the per-clip curve's own peak: no lip model in it
    out: dict[str, float] = {}
    for c in clips:
        if c.true_lag_ms is None:
            continue
        a = analyses[c.name]
        lag = None
        tracks = [t for t in a.tracks if t.n_frames >= MIN_TRACK_FRAMES]
        if tracks:
            t = max(tracks, key=lambda tr: tr.n_frames)
            est = engine.measure(engine.prepare(a, t), 0.0, 3000.0)
            lag = est.audio_lag_ms
        out[c.name] = lag if lag is not None and abs(lag - c.true_lag_ms) <= OWN_READING_MS else c.true_lag_ms
    return out


def project_moments(clips: list, analyses: dict, align: str = "own") -> dict[str, PooledMoments]:
    """``{project: PooledMoments}`` over the trusted clips' tracks, each paired at its own reading
    (``align="own"``, :func:`own_readings`) or at its published sync (``"published"``)."""
    from pipeline.cca import audio_features

    lags = own_readings(clips, analyses) if align == "own" else None
    out: dict[str, PooledMoments] = {}
    for c in clips:
        if c.true_lag_ms is None:
            continue
        a = analyses[c.name]
        audio_in = audio_inputs(audio_features(a.audio))
        lag_ms = c.true_lag_ms if lags is None else lags[c.name]
        for t in a.tracks:
            if t.n_frames < MIN_TRACK_FRAMES:
                continue
            vis = visual_inputs(t.mouth_crops)
            x, y = paired_rows(vis, t.start, audio_in, int(round(lag_ms / 5.0)))
            m = out.setdefault(c.project, PooledMoments(x.shape[1], y.shape[1]))
            m.add(x, y)
    return out


def total(moments: dict[str, PooledMoments]) -> PooledMoments:
    it = iter(moments.values())
    out = next(it)
    for m in it:
        out = out.combined(m)
    return out


def fold_models(moments: dict[str, PooledMoments], projects: list[str]) -> dict[str, LipModel]:
    """For every project: the map fitted on every other project's pairs."""
    whole = total(moments)
    return {p: fit_lip_model(whole.combined(moments[p], -1.0) if p in moments else whole) for p in projects}


def load_moments(workers: int = 2, align: str = "own") -> tuple[list, dict[str, PooledMoments]]:
    from benchmarks.devset import dev_clips, load_analyses

    clips = dev_clips()
    return clips, project_moments(clips, load_analyses(clips, workers), align)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help=f"refit on every trusted clip and write {MODEL_FILE.name}")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--align", choices=("own", "published"), default="own",
                    help="pair each clip's mouth and speech at its own reading (default) or its published sync")
    args = ap.parse_args(argv)
    from benchmarks.devset import DEV

    if not DEV.is_dir():
        print(f"the dev set is not there ({DEV}): nothing to fit", file=sys.stderr)
        return 2
    clips, moments = load_moments(args.workers, args.align)
    whole = fit_lip_model(total(moments))
    print(f"{total(moments).n} training frames from {len(moments)} projects; pooled canonical correlations "
          + " ".join(f"{r:.3f}" for r in whole.rho))
    folds = fold_models(moments, sorted(moments))
    for p, m in folds.items():
        print(f"  without {p:40s} " + " ".join(f"{r:.3f}" for r in m.rho))
    if args.write:
        whole.save(MODEL_FILE)
        print(f"wrote {MODEL_FILE} ({MODEL_FILE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
