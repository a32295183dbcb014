"""The confidence plot: score against shift for each iteration, the lag along the clip (the timeline: each
segment's reading, the fitted drift or steps, and the written file's readings after correction), and
SyncNet's confidence along the clip.

Built on ``matplotlib.figure.Figure`` (no pyplot global state, so concurrent jobs cannot draw into each
other's figures) with the Agg backend; any front end can show it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .sync import IterationEvent

#: The precision a confident reading is calibrated to (within 40 ms): the band drawn around each segment.
BAND_MS = 40.0


def message_figure(words: str) -> Figure:
    """A figure that only says ``words`` (an error: the plot must not keep showing an earlier state)."""
    fig = Figure(figsize=(8, 2.0), dpi=100)
    fig.text(0.5, 0.5, textwrap.fill(words, 90), ha="center", va="center", fontsize=10, color="C3")
    return fig


def _fitted_path(drift: Mapping, t0: float, t1: float) -> tuple[list[float], list[float]]:
    """The fitted lag over [t0, t1] as a polyline: a line (clock drift) or a step at each cut (with any
    shared slope)."""
    slope = float(drift.get("ms_per_minute") or 0.0) / 60.0
    if drift.get("kind") == "linear":
        a, b = drift.get("start_s") or t0, drift.get("end_s") or t1
        la, lb = float(drift["start_lag_ms"]), float(drift["end_lag_ms"])
        k = (lb - la) / (b - a) if b > a else 0.0
        return [t0, t1], [la + k * (t0 - a), la + k * (t1 - a)]
    xs: list[float] = []
    ys: list[float] = []
    start, lag_at_start = t0, None
    for st in drift.get("steps", []):
        at = float(st["at_s"])
        before = float(st["before_ms"])
        xs += [start, at]
        ys += [before - slope * (at - start) if lag_at_start is None else lag_at_start, before]
        start, lag_at_start = at, float(st["after_ms"])
    if lag_at_start is not None:
        xs += [start, t1]
        ys += [lag_at_start, lag_at_start + slope * (t1 - start)]
    return xs, ys


def draw_timeline(ax, report: Mapping) -> bool:
    """The lag along the clip on ``ax``: each segment's reading (confident: filled, with the 40 ms band its
    calibration stands for; not confident: hollow), the fitted line or steps, the clip's constant lag, and
    the written file's readings after correction. False (nothing drawn) without a timeline."""
    segs = report.get("timeline") or []
    if len(segs) < 2:
        return False
    t0, t1 = min(s["start_s"] for s in segs), max(s["end_s"] for s in segs)
    conf = [s for s in segs if s.get("audio_lag_ms") is not None]
    weak = [s for s in segs if s.get("audio_lag_ms") is None and s.get("measured_lag_ms") is not None]
    mid = lambda s: (s["start_s"] + s["end_s"]) / 2  # noqa: E731
    if conf:
        ax.errorbar([mid(s) for s in conf], [s["audio_lag_ms"] for s in conf], yerr=BAND_MS,
                    xerr=[(s["end_s"] - s["start_s"]) / 2 for s in conf], fmt="o", color="C0", ecolor="C0",
                    elinewidth=0.8, alpha=0.85, capsize=2, label="segments (confident, +/-40 ms)")
    if weak:
        ax.plot([mid(s) for s in weak], [s["measured_lag_ms"] for s in weak], "o", mfc="none", color="0.55",
                label="segments (not confident)")
    drift = report.get("drift") or {}
    if drift.get("kind") in ("linear", "steps"):
        xs, ys = _fitted_path(drift, t0, t1)
        ax.plot(xs, ys, color="C3", lw=2, label=f"fitted {'drift' if drift['kind'] == 'linear' else 'steps'}")
    elif report.get("audio_lag_ms") is not None:
        ax.axhline(report["audio_lag_ms"], color="C3", lw=1.5, label="constant lag")
    after = [s for s in report.get("verified_timeline") or [] if s.get("audio_lag_ms") is not None]
    if after:
        ax.plot([mid(s) for s in after], [s["audio_lag_ms"] for s in after], "^", color="C2",
                label="after correction")
    ax.axhline(0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("time in the clip (s)")
    ax.set_ylabel("audio lag (ms)")
    ax.set_title(f"lag along the clip: {drift.get('kind', 'none')}", fontsize=9)
    ax.legend(loc="best", fontsize=7)
    return True


def sync_figure(events: Sequence[IterationEvent], title: str = "", report: Mapping | None = None,
                headline: str = "") -> Figure:
    """Top: the latest iteration's score curve over residual lag (ms), its best lag marked, earlier ones
    faint. Then, with a ``report`` (detect's or fix's JSON) that has a timeline: the lag along the clip
    (:func:`draw_timeline`). Bottom: the latest iteration's confidence over time along the clip.

    ``headline``: the outcome in words (:func:`pipeline.outcome.headline`, the status line's first
    sentence), shown above everything, so the picture and the words cannot disagree."""
    timeline = bool(report and len(report.get("timeline") or []) >= 2)
    windows = bool(events and len(events[-1].estimate.window_times_s))
    fig = Figure(figsize=(8, 7.6 if timeline and windows else 5.2 if not timeline else 6.4), dpi=100,
                 layout="constrained")
    ax2 = None
    if timeline and windows:
        ax, ax_t, ax2 = fig.subplots(3, 1, height_ratios=[3, 3, 2])
    elif timeline:  # the weight-free engine has no confidence along the clip: the timeline takes its place
        ax, ax_t = fig.subplots(2, 1, height_ratios=[3, 3])
    else:
        ax, ax2 = fig.subplots(2, 1, height_ratios=[3, 2])
    if headline:
        fig.suptitle(textwrap.fill(headline, 95), fontsize=10, fontweight="bold")
    if timeline:
        draw_timeline(ax_t, report)
    if not events:
        empty = "nothing was measured" if report is not None else "waiting for the first measurement"
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        if ax2 is not None:
            ax2.set_axis_off()
        return fig
    last = events[-1]
    for ev in events[:-1]:
        e = ev.estimate
        if len(e.curve):
            ax.plot(e.lags_ms, e.curve, color="0.7", lw=1, label=f"iteration {ev.iteration}")
    e = last.estimate
    if len(e.curve):
        ax.plot(e.lags_ms, e.curve, color="C0", lw=2, label=f"iteration {last.iteration}")
        best = int(np.argmin(e.curve) if e.best_is_min else np.argmax(e.curve))
        ax.plot([e.lags_ms[best]], [e.curve[best]], "o", color="C3", ms=8,
                label=f"best: {last.residual_ms:+.1f} ms")
        ax.axvline(0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("residual audio lag (ms; > 0 = sound after lips)")
    ax.set_ylabel(f"{e.curve_label}\n({'lower' if e.best_is_min else 'higher'} is better)", fontsize=9)
    trusted = "" if report is None or report.get("decision") != "uncertain" else " (not trusted)"
    ax.set_title(title or f"{e.engine}: audio lag {last.audio_lag_ms:+.1f} ms, confidence {last.confidence:.2f}"
                 f"{trusted}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    if ax2 is None:
        return fig
    if len(e.window_times_s):
        ax2.plot(e.window_times_s, e.window_confidence, color="C2", lw=1.2)
        ax2.axhline(0, color="0.6", lw=0.8)
        ax2.set_xlabel("time in the clip (s)")
        ax2.set_ylabel("confidence")
        ax2.set_title("confidence along the clip", fontsize=9)
    else:
        ax2.set_axis_off()
    return fig
