"""The offset along the clip: a lag per segment (the ``timeline``) and what it says about drift.

One number per file is what every lip-sync tool measures; real recordings drift (a second device's clock,
29.97/30 mix-ups) or step (an edit). Here the engine that decided reads overlapping segments of the same
face track, on the analysis already done (no second decode, no second face detection), and
:func:`fit_drift` says whether the lags need more than a constant: a straight line (clock drift) or steps
(cuts). A changing lag is a claim, so the constant (``none``) is kept unless the confident segments
clearly need more, by margins that match the precision of a constant answer.

Pure maths (:func:`segment_spans`, :func:`fit_drift`, :func:`split_time` and their helpers) is apart from the
two functions that call an engine (:func:`measure_timeline`, :func:`locate_steps`).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .analysis import FaceTrack
from .estimates import Engine, Estimate
from .media import GRID_FPS

log = logging.getLogger(__name__)

#: Default segment length and the share of it that neighbouring segments overlap.
DEFAULT_SEGMENT_S = 10.0
SEGMENT_OVERLAP = 0.5
#: Threads that read segments at once, for engines that allow it (``spans_in_threads``).
SPAN_WORKERS = min(2, os.cpu_count() or 1)
#: Shortest segment measured (a last, shorter piece below this is merged into its neighbour).
MIN_SEGMENT_S = 4.0
#: Confident segments needed before anything but a constant is considered.
MIN_DRIFT_SEGMENTS = 4
#: The precision a constant answer is held to (within 40 ms); a change of the lag must exceed it clearly.
PRECISION_MS = 40.0
#: A drift (start to end) or a step must be at least this large to be claimed: twice the precision.
MIN_CHANGE_MS = 2 * PRECISION_MS
#: A richer model must cut the constant's median absolute residual at least by this factor.
MIN_IMPROVEMENT = 2.0
#: Points on each side of a step (a single odd segment is an outlier, not a step).
MIN_STEP_SIDE = 2
#: Share of the confident segments a fit is judged on (the rest may be outliers: wrong peaks).
TRIM = 0.8
#: A step found between two segments' middles is then placed by short probes (this long, every
#: STEP_PROBE_HOP_S) from a little before that interval to a little after (STEP_PROBE_MARGIN_S each side).
STEP_PROBE_S = 3.0
STEP_PROBE_HOP_S = 0.5
STEP_PROBE_MARGIN_S = 2.5


@dataclass(frozen=True)
class Segment:
    """One stretch of the clip and the lag read there (None where not confident)."""

    start_s: float
    end_s: float
    audio_lag_ms: float | None
    confidence: float
    p_correct: float | None
    measured_lag_ms: float | None = None  #: the reading even when not confident

    @property
    def mid_s(self) -> float:
        return (self.start_s + self.end_s) / 2

    def to_dict(self) -> dict:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "audio_lag_ms": None if self.audio_lag_ms is None else round(self.audio_lag_ms, 3),
                "confidence": round(float(self.confidence), 4),
                "p_correct": None if self.p_correct is None else round(float(self.p_correct), 4),
                "measured_lag_ms": None if self.measured_lag_ms is None else round(self.measured_lag_ms, 3)}


@dataclass(frozen=True)
class Step:
    at_s: float  #: the middle of the interval below (the fit's best single time)
    before_ms: float
    after_ms: float
    #: The step lies between these: the middles of the confident segments either side of it (a segment reads
    #: the side that holds most of its speech). Segments overlap by half, so this is a few seconds wide, and
    #: the edit that undoes the step is placed at the quietest moment anywhere in it (:mod:`pipeline.warp`).
    earliest_s: float | None = None
    latest_s: float | None = None


@dataclass(frozen=True)
class Drift:
    """What the timeline says: ``none`` (one constant lag), ``linear`` (clock drift) or ``steps`` (cuts)."""

    kind: str
    reason: str
    ms_per_minute: float = 0.0  #: the lag's slope (linear; sign as audio_lag_ms)
    start_lag_ms: float | None = None  #: the fitted lag at the first and last segment's middle
    end_lag_ms: float | None = None
    steps: list[Step] = field(default_factory=list)
    residual_ms: float | None = None  #: mean absolute residual of the chosen fit over its best 80 % of segments
    segments_used: int = 0
    start_s: float | None = None  #: the times start_lag_ms and end_lag_ms refer to (first and last middle)
    end_s: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("ms_per_minute", "start_lag_ms", "end_lag_ms", "residual_ms", "start_s", "end_s"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 3)
        d["steps"] = [{k: None if v is None else round(float(v), 3) for k, v in asdict(s).items()}
                      for s in self.steps]
        return d


# ------------------------------------------------------------------------------------------- segments

def segment_spans(first: int, end: int, segment_s: float = DEFAULT_SEGMENT_S,
                  fps: int = GRID_FPS) -> list[tuple[int, int]]:
    """Overlapping ``[f0, f1)`` grid-frame spans over frames ``first .. end`` (inclusive) of a track.

    Spans are ``segment_s`` long and start every ``segment_s * (1 - SEGMENT_OVERLAP)``; the last one ends at
    the track's end (a short remainder is absorbed by moving the last span back). A track shorter than two
    segments gets one span, the whole track.
    """
    n = end - first + 1
    length = max(1, int(round(segment_s * fps)))
    hop = max(1, int(round(length * (1 - SEGMENT_OVERLAP))))
    if n < 2 * length - hop or n < MIN_SEGMENT_S * fps:
        return [(first, end + 1)]
    starts = list(range(0, n - length + 1, hop))
    if starts[-1] + length < n:
        starts.append(n - length)
    return [(first + s, first + s + length) for s in starts]


def measure_timeline(engine: Engine, prepared: Any, track: FaceTrack, shift_ms: float, search_ms: float,
                     segment_s: float = DEFAULT_SEGMENT_S) -> list[Segment]:
    """Each segment of ``track`` read by ``engine`` (its ``measure_span``) with the audio moved by ``shift_ms``.

    A segment's lag is ``shift_ms`` + the residual read there, so a lag that changes along the clip shows
    as residuals that change. An engine without ``measure_span`` gives no timeline. An engine that says
    ``spans_in_threads`` (its segments are independent NumPy work) has them read on ``SPAN_WORKERS``
    threads: 1.3 -> 0.8 s on a minute with the weight-free engine on 2 cores, the same readings.
    """
    span_fn = getattr(engine, "measure_span", None)
    if span_fn is None:
        return []
    spans = segment_spans(track.start, track.end, segment_s)

    def read(span: tuple[int, int]) -> Estimate:
        return span_fn(prepared, span[0], span[1], shift_ms, search_ms)

    workers = min(SPAN_WORKERS, len(spans)) if getattr(engine, "spans_in_threads", False) else 1
    if workers > 1:  # NumPy's FFTs and prefix sums release the GIL: the segments share the cores
        with ThreadPoolExecutor(workers, thread_name_prefix="timeline") as pool:
            estimates = list(pool.map(read, spans))
    else:
        estimates = [read(span) for span in spans]
    out = []
    for (f0, f1), est in zip(spans, estimates):
        measured = None if est.windows == 0 else shift_ms + float(est.audio_lag_ms)
        ok = bool(est.confident and est.windows and not est.edge)
        out.append(Segment(f0 / GRID_FPS, f1 / GRID_FPS, measured if ok else None, float(est.confidence),
                           None if est.p_correct is None else float(est.p_correct), measured))
    return out


# ------------------------------------------------------------------------------------------- the fit

def theil_sen(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line: median of pairwise slopes, median intercept. Robust to
    outliers (up to ~29 % of the points) without any tuning."""
    i, j = np.triu_indices(len(t), 1)
    dt = t[j] - t[i]
    keep = dt != 0
    if not keep.any():
        return 0.0, float(np.median(y))
    slope = float(np.median((y[j] - y[i])[keep] / dt[keep]))
    return slope, float(np.median(y - slope * t))


def spread(residuals: np.ndarray) -> float:
    """Mean absolute residual of the best :data:`TRIM` share of the points: a few segments locked onto wrong
    peaks do not count, yet (unlike a median) a model that misfits a third of the points pays for it."""
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    return float(r[: max(1, int(np.ceil(TRIM * len(r))))].mean()) if len(r) else 0.0


def _side_slope(t: np.ndarray, y: np.ndarray, k: int) -> float:
    """Median of the pairwise slopes within each side of a split at ``k`` (Theil-Sen with the jump left out)."""
    slopes = []
    for tt, yy in ((t[:k], y[:k]), (t[k:], y[k:])):
        i, j = np.triu_indices(len(tt), 1)
        keep = tt[j] != tt[i]
        slopes.append((yy[j] - yy[i])[keep] / (tt[j] - tt[i])[keep])
    allslopes = np.concatenate(slopes)
    return float(np.median(allslopes)) if allslopes.size else 0.0


def best_step(t: np.ndarray, y: np.ndarray, min_change_ms: float = MIN_CHANGE_MS,
              ) -> tuple[int, float, float, float, float] | None:
    """The single split of time-ordered points into two runs that fits best, each run constant or both
    sharing one slope (a step at an edit on top of a clock drift): ``(index of the first point after,
    lag before and after at t[0], slope in ms per s, spread)``, None if too few points.

    A shared slope is kept only where it changes the lag by ``min_change_ms`` over the points (else a
    constant is the simpler account). The split is chosen by the plain sum of absolute residuals (every
    point counts, so a split cannot hide its misplaced points among the trimmed ones); :func:`spread` then
    judges the chosen one.
    """
    best, best_l1 = None, np.inf
    t = t - t[0]
    for k in range(MIN_STEP_SIDE, len(t) - MIN_STEP_SIDE + 1):
        slope = _side_slope(t, y, k)
        if abs(slope) * (t[-1] - t[0]) < min_change_ms:
            slope = 0.0
        d = y - slope * t
        a, b = float(np.median(d[:k])), float(np.median(d[k:]))
        r = np.concatenate([d[:k] - a, d[k:] - b])
        l1 = float(np.abs(r).sum())
        if l1 < best_l1:
            best, best_l1 = (k, a, b, slope, spread(r)), l1
    return best


def fit_drift(segments: list[Segment]) -> Drift:
    """The simplest account of the confident segments' lags: none, linear, or one step (with the clock drift
    that may run through it: ``ms_per_minute`` of a ``steps`` fit), see the module."""
    pts = [(s.mid_s, s.audio_lag_ms) for s in segments if s.audio_lag_ms is not None]
    if len(segments) < MIN_DRIFT_SEGMENTS:
        return Drift("none", f"too short for a timeline: {len(segments)} segment(s), {MIN_DRIFT_SEGMENTS} needed "
                             "to tell a changing lag from a constant one", segments_used=len(pts))
    if len(pts) < MIN_DRIFT_SEGMENTS:
        return Drift("none", f"only {len(pts)} of {len(segments)} segments are confident ({MIN_DRIFT_SEGMENTS} "
                             "needed to claim a changing lag)", segments_used=len(pts))
    t = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    order = np.argsort(t)
    t, y = t[order], y[order]
    t0 = float(t[0])
    const = float(np.median(y))
    res_none = spread(y - const)
    floor = max(res_none, 1.0)

    slope, icpt = theil_sen(t - t0, y)
    res_lin = spread(y - (icpt + slope * (t - t0)))
    change = slope * (t[-1] - t0)
    step = best_step(t, y)

    linear_ok = abs(change) >= MIN_CHANGE_MS and res_lin * MIN_IMPROVEMENT <= floor and res_lin <= PRECISION_MS / 2
    step_ok = (step is not None and abs(step[2] - step[1]) >= MIN_CHANGE_MS and step[4] * MIN_IMPROVEMENT <= floor
               and step[4] <= PRECISION_MS / 2)
    if step_ok and linear_ok:  # both fit: the one that fits clearly better, else the line (fewer jumps claimed)
        step_ok = step[4] * MIN_IMPROVEMENT <= res_lin
        linear_ok = not step_ok
    n = len(pts)
    if linear_ok:
        start, end = icpt, icpt + change
        return Drift("linear", f"the lag drifts from {start:+.0f} ms to {end:+.0f} ms over {(t[-1] - t0) / 60:.1f} "
                               f"min ({slope * 60:+.1f} ms per minute), {n} confident segments within "
                               f"{res_lin:.0f} ms of the line", ms_per_minute=slope * 60, start_lag_ms=start,
                     end_lag_ms=end, residual_ms=res_lin, segments_used=n, start_s=t0,
                     end_s=float(t[-1]))
    if step_ok:
        k, a, b, sl, res = step
        at = float((t[k - 1] + t[k]) / 2)
        before, after = a + sl * (at - t0), b + sl * (at - t0)
        also = f", drifting {sl * 60:+.1f} ms per minute throughout" if sl else ""
        return Drift("steps", f"the lag steps from {before:+.0f} ms to {after:+.0f} ms at {at:.1f} s{also}, {n} "
                              f"confident segments within {res:.0f} ms of the fit", ms_per_minute=sl * 60,
                     start_lag_ms=a, end_lag_ms=b + sl * (t[-1] - t0),
                     steps=[Step(at, before, after, float(t[k - 1]), float(t[k]))], residual_ms=res,
                     segments_used=n, start_s=t0, end_s=float(t[-1]))
    return Drift("none", f"one constant lag fits: {n} confident segments within {res_none:.0f} ms of "
                         f"{const:+.0f} ms (no drift or step larger than {MIN_CHANGE_MS:.0f} ms stands out)",
                 start_lag_ms=const, end_lag_ms=const, residual_ms=res_none, segments_used=n,
                 start_s=t0, end_s=float(t[-1]))


# ------------------------------------------------------------------------------------------- placing steps

def split_time(centres: np.ndarray, towards_after: np.ndarray) -> int | None:
    """Where a step falls among probes at ``centres`` (sorted): the index of the first probe after it, chosen
    so that the probes before it lean most to the lag before and the ones after it to the lag after
    (``towards_after``: how much better each probe's stretch fits the lag after than the lag before). None
    with fewer than two probes. Pure, so it is tested alone."""
    d = np.asarray(towards_after, float)
    if len(d) < 2:
        return None
    # J(k) = -sum(d[:k]) + sum(d[k:]) for k = 1 .. n-1
    before = np.cumsum(d)[:-1]
    score = -before + (d.sum() - before)
    return int(np.argmax(score)) + 1


def _leaning(est: Estimate, before_ms: float, after_ms: float) -> float | None:
    """How much better the probe's curve fits ``after_ms`` than ``before_ms`` (residual lags), in units of
    the curve's own spread; None where the curve reaches neither."""
    lags, curve = np.asarray(est.lags_ms, float), np.asarray(est.curve, float)
    ok = np.isfinite(curve)
    if est.windows == 0 or ok.sum() < 3 or not (lags[ok][0] <= min(before_ms, after_ms)
                                                and max(before_ms, after_ms) <= lags[ok][-1]):
        return None
    c = np.interp([before_ms, after_ms], lags[ok], curve[ok])
    sd = float(curve[ok].std()) or 1.0
    diff = (c[1] - c[0]) / sd
    return -diff if est.best_is_min else diff


def locate_steps(engine: Engine, prepared: Any, track: FaceTrack, drift: Drift, shift_ms: float) -> Drift:
    """``drift`` with each step placed by short probes across the interval the segments leave for it.

    Segments overlap by half, so a step is only known to lie between the middles of the segments either
    side (:attr:`Step.earliest_s` .. :attr:`Step.latest_s`, 5 s with 10 s segments), and a segment that
    straddles it reads whichever side holds most of its speech. Probes of :data:`STEP_PROBE_S` every
    :data:`STEP_PROBE_HOP_S` over that interval (and :data:`STEP_PROBE_MARGIN_S` beyond) each say whether
    their stretch fits the lag before or the lag after better (their curve at the two lags), and the step
    goes where the probes change their mind (:func:`split_time`). Engines that say ``locates_steps`` are
    probed (the weight-free one: a probe costs milliseconds); others keep the segments' interval.
    """
    span_fn = getattr(engine, "measure_span", None)
    if drift.kind != "steps" or span_fn is None or not getattr(engine, "locates_steps", False):
        return drift
    half = int(round(STEP_PROBE_S * GRID_FPS / 2))
    ms_per_s = drift.ms_per_minute / 60.0  # the clock drift that runs through the step
    placed = []
    for step in drift.steps:
        if step.earliest_s is None or step.latest_s is None:
            placed.append(step)
            continue
        lo = max(track.start / GRID_FPS + STEP_PROBE_S / 2, step.earliest_s - STEP_PROBE_MARGIN_S)
        hi = min((track.end + 1) / GRID_FPS - STEP_PROBE_S / 2, step.latest_s + STEP_PROBE_MARGIN_S)
        centres, leaning = [], []
        for c in np.arange(lo, hi + 1e-9, STEP_PROBE_HOP_S):
            f = int(round(c * GRID_FPS))
            est = span_fn(prepared, f - half, f + half, shift_ms, 0.0)
            drifted = ms_per_s * (c - step.at_s)
            lean = _leaning(est, step.before_ms + drifted - shift_ms, step.after_ms + drifted - shift_ms)
            if lean is not None:
                centres.append(float(c))
                leaning.append(lean)
        k = split_time(np.array(centres), np.array(leaning))
        if k is None:
            placed.append(step)
            continue
        at = (centres[k - 1] + centres[k]) / 2
        log.info("step placed at %.2f s by %d probes (the segments left %.1f-%.1f s)", at, len(centres),
                 step.earliest_s, step.latest_s)
        placed.append(replace(step, at_s=at, earliest_s=centres[k - 1], latest_s=centres[k]))
    moved = [f"{p.at_s:.1f} s" for p, s in zip(placed, drift.steps) if p.at_s != s.at_s]
    reason = drift.reason + (f"; short readings across it place it at {', '.join(moved)}" if moved else "")
    return replace(drift, steps=placed, reason=reason)


# ------------------------------------------------------------------------------------------- in words

def _lag_words(ms: float) -> str:
    """A lag as a person says it: "120 ms late" (sound after the lips), "40 ms early", "in step"."""
    if abs(ms) < 0.5:
        return "in step"
    return f"{abs(ms):.0f} ms {'late' if ms > 0 else 'early'}"


def _span_words(seconds: float) -> str:
    if seconds >= 90:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:04.1f}"


def describe_drift(drift: dict | None, corrected: bool | None = None) -> str:
    """What a report's ``drift`` says, in one sentence ("" when the lag holds or nothing was read).

    ``corrected``: True when the fix removed it along the clip, False when it was found but only the
    constant part was corrected (``--no-drift``), None when nothing was written (``detect``).
    """
    if not drift or drift.get("kind") in (None, "none"):
        return ""
    done = {True: "", False: "; only the constant part was corrected (drift correction off)", None: ""}[corrected]
    if drift["kind"] == "linear":
        start, end = drift.get("start_lag_ms") or 0.0, drift.get("end_lag_ms") or 0.0
        span = (drift.get("end_s") or 0.0) - (drift.get("start_s") or 0.0)
        how = "; corrected by resampling the audio by the clock ratio" if corrected else done
        return (f"The sound drifts from {_lag_words(start)} to {_lag_words(end)} over {_span_words(span)} "
                f"({drift.get('ms_per_minute', 0.0):+.0f} ms per minute){how}.")
    parts = [f"from {_lag_words(s['before_ms'])} to {_lag_words(s['after_ms'])} at {_clock(s['at_s'])}"
             for s in drift.get("steps", [])]
    slope = drift.get("ms_per_minute") or 0.0
    also = f", drifting {slope:+.0f} ms per minute besides" if abs(slope) >= 1 else ""
    how = "; corrected by a cut or a silence at the quietest moment near each step" if corrected else done
    return f"The lag jumps {' and '.join(parts)}{also}{how}."
