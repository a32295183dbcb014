"""Fitting the weight-free engine's calibration, and holding whole source projects out while doing it.

The engine's score is ``z``: how far the lag curve's peak stands above the rest of it. Whether a peak is
right depends on ``z`` and on how much face there was (a 3 s clip reaches a given ``z`` by chance more
often than a minute does), so ``p_correct`` is a logistic function of ``z``, log(seconds of face) and the
two witnesses' support of the peak (``z_halves``, ``z_model``), fitted to "was this estimate within 40 ms"
over the benchmark's cases (:mod:`benchmarks.accuracy`): natural clips, shifted copies and sub-clips
(correct or not), and video paired with other clips' audio, whole and in 3 s windows (never correct). The
decision threshold on ``p_correct`` is the lowest that keeps both the false-confident rate on the
mismatched pairs within its target, with a margin.

What is right for a case (:func:`reference_lag`): the published sync of a trusted clip (0, or an anchor's
known lag) plus any induced shift. For clips whose own sync is doubtful (the manifest's list), the engine's
reading of the whole natural clip stands in (relative truth). Everything here is pure NumPy on the rows.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.cca import Calibration

CORRECT_MS = 40.0
#: In-sync sources read between about -20 and +130 ms (speaker and material, see the README).
PLAUSIBLE_BIAS_MS = 150.0
#: The false-confident rate the threshold is chosen for on the training projects (the target is 1 %; half
#: of it leaves a margin for what held-out projects do).
MAX_FALSE_CONFIDENT = 0.005
L2 = 1e-2
#: Cases that measure how the calibration carries over and are never fitted on (added noise, a second talker).
NOT_FITTED = ("noisy",)
#: Firm independent readings of some trusted clips' sync (``benchmarks/release_sync.py --write``): where the
#: lips part at the clip's /b/ and /p/ releases. They stand as those clips' truth when the calibration is
#: fitted (:func:`with_release_truth`); the figures quoted against the targets keep the published sync.
RELEASE_READINGS = Path(__file__).with_name("release_readings.json")


def release_readings(path: Path = RELEASE_READINGS) -> dict[str, float]:
    """``{clip: lag_ms}`` of the firm release readings (empty without the file)."""
    return {k: float(v) for k, v in json.loads(path.read_text())["readings"].items()} if path.exists() else {}


def with_release_truth(rows: list[dict], readings: dict[str, float] | None = None) -> list[dict]:
    """``rows`` with the release readings standing as the truth of the trusted clips they read (the induced
    shift added for copies); mismatched pairs and other clips unchanged."""
    readings = release_readings() if readings is None else readings
    return [dict(r, truth_ms=readings[r["clip"]] + float(r["shift_ms"] or 0.0))
            if r["clip"] in readings and r["truth_ms"] is not None and r["kind"] != "mismatch" else r
            for r in rows]


def natural_readings(rows: list[dict]) -> dict[str, float | None]:
    """Each clip's reading of its whole natural self (the relative reference)."""
    return {r["clip"]: r["measured_lag_ms"] for r in rows if r["kind"] == "natural"}


def reference_lag(row: dict, natural: dict[str, float | None]) -> float | None:
    """The lag that counts as right for ``row`` (None: nothing to score it against).

    Shifted copies and sub-clips are scored against the clip's own natural reading, moved by the induced
    shift: that is the engine's sync point for this speaker and material. It stands only where it is
    plausible: for a trusted clip, within :data:`PLAUSIBLE_BIAS_MS` of the published sync (the spread that
    in-sync sources read at, see the README); otherwise the published sync itself is the reference, so
    copies of a clip whose curve locked onto a wrong peak count as wrong however well they "move by the
    shift". A natural clip is scored against its published sync with that same band.
    """
    if row["kind"] == "mismatch":
        return None
    base = natural.get(row["clip"])
    truth = row["truth_ms"]
    shift = float(row["shift_ms"] or 0.0)
    if row["kind"] == "natural":
        return None if truth is None else float(truth)
    if truth is not None:
        published = float(truth) - shift
        if base is None or abs(base - published) > PLAUSIBLE_BIAS_MS:
            return float(truth)
    elif base is None:
        return None
    return base + shift


def labels(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(usable, correct) per row: usable rows have a score and something to be right about (or are mismatched)."""
    natural = natural_readings(rows)
    usable = np.zeros(len(rows), bool)
    correct = np.zeros(len(rows), bool)
    for i, r in enumerate(rows):
        if r["z"] is None or r["measured_lag_ms"] is None:
            continue
        if r["kind"] == "mismatch":
            usable[i] = True
            continue
        ref = reference_lag(r, natural)
        if ref is None:
            continue
        usable[i] = True
        tol = PLAUSIBLE_BIAS_MS if r["kind"] == "natural" else CORRECT_MS
        correct[i] = abs(r["measured_lag_ms"] - ref) <= tol
    return usable, correct


def design(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(z, frames, z_halves, z_model) per row (0 where a row has no score)."""
    z = np.array([r["z"] if r["z"] is not None else 0.0 for r in rows], float)
    frames = np.array([r["frames"] if r["frames"] else 1 for r in rows], float)
    zh = np.array([r.get("z_halves") or 0.0 for r in rows], float)
    zm = np.array([r.get("z_model") or 0.0 for r in rows], float)
    return z, frames, zh, zm


def fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Maximum-likelihood logistic regression on [1, x], a little L2 on the slopes, by Newton's method."""
    x = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    k = x.shape[1]
    w = np.zeros(k)
    reg = L2 * np.diag([0.0] + [1.0] * (k - 1))
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50, 50)))
        grad = x.T @ (p - y) + reg @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + reg + 1e-9 * np.eye(k)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def confident_mask(rows: list[dict], p: np.ndarray, threshold: float) -> np.ndarray:
    """What the product decides at ``threshold``: p >= threshold, and not stuck at the edge of the search."""
    edge = np.array([bool(r.get("edge")) for r in rows])
    measured = np.array([r["measured_lag_ms"] is not None for r in rows])
    return (p >= threshold) & ~edge & measured


def choose_threshold(rows: list[dict], p: np.ndarray, usable: np.ndarray, correct: np.ndarray) -> float:
    """The lowest threshold (at least 0.5: more likely right than wrong) whose false-confident rate on the
    mismatched pairs among ``rows`` is within :data:`MAX_FALSE_CONFIDENT`.

    Precision is not a constraint here: it is what the benchmark then measures, held out.
    """
    mism = np.array([r["kind"] == "mismatch" for r in rows])
    for t in np.concatenate([np.linspace(0.5, 0.99, 50), [0.995, 0.999, 0.9999]]):
        conf = confident_mask(rows, p, t) & usable
        if (conf & mism).sum() / max(1, mism.sum()) <= MAX_FALSE_CONFIDENT:
            return float(t)
    return 0.9999


def fit(rows: list[dict], halves: bool = True, model: bool = True) -> Calibration:
    """The calibration fitted on ``rows``: logistic on the usable rows, then the threshold. Rows of the kinds in
    :data:`NOT_FITTED` are left out (they measure how the fit carries over).

    ``halves``: use the halves' agreement (``z_halves``) as an input beside z and the length; ``model``: the
    learned lip model's support of the peak (``z_model``).
    """
    rows = [r for r in rows if r["kind"] not in NOT_FITTED]
    usable, correct = labels(rows)
    z, frames, zh, zm = design(rows)
    zh = zh if halves else np.zeros_like(zh)
    zm = zm if model else np.zeros_like(zm)
    cols = [z, np.log(np.maximum(frames, 1) / 25.0), zh, zm]
    w = fit_logistic(np.stack(cols, axis=1)[usable], correct[usable].astype(float))
    f = Calibration(w[0], w[1], w[2], 0.5, w[3], model_weight=w[4])
    return replace(f, threshold=choose_threshold(rows, f.p_correct(z, frames, zh, zm), usable, correct))


def held_out_p(rows: list[dict], halves: bool = True, model: bool = True
               ) -> tuple[np.ndarray, np.ndarray, dict[str, Calibration]]:
    """p_correct and threshold for every row from a fit that never saw the row's source project.

    A mismatched pair is held out with its video's project, and the training side drops every pair whose
    audio comes from the held-out project, so no held-out clip is seen in either role.
    """
    proj_of = {r["clip"]: r["project"] for r in rows}
    projects = sorted({r["project"] for r in rows})
    p = np.zeros(len(rows))
    thr = np.zeros(len(rows))
    fits: dict[str, Calibration] = {}
    z, frames, zh, zm = design(rows)
    for proj in projects:
        test = np.array([r["project"] == proj for r in rows])
        train = [r for r in rows if r["project"] != proj
                 and not (r["kind"] == "mismatch" and proj_of.get(str(r["audio_from"]).lstrip("~")) == proj)]
        f = fits[proj] = fit(train, halves, model)
        p[test] = f.p_correct(z[test], frames[test], zh[test], zm[test])
        thr[test] = f.threshold
    return p, thr, fits
