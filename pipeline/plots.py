"""The confidence plot: score against shift for each iteration, and confidence along the clip.

Built on ``matplotlib.figure.Figure`` (no pyplot global state, so concurrent jobs cannot draw into each
other's figures) with the Agg backend; any front end can show it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .sync import IterationEvent


def sync_figure(events: Sequence[IterationEvent], title: str = "") -> Figure:
    """Top: the latest iteration's score curve over residual lag (ms), its best lag marked, earlier ones
    faint. Bottom: the latest iteration's confidence over time along the clip."""
    fig = Figure(figsize=(8, 5.2), dpi=100, layout="constrained")
    ax, ax2 = fig.subplots(2, 1, height_ratios=[3, 2])
    if not events:
        ax.text(0.5, 0.5, "waiting for the first measurement", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
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
    ax.set_title(title or f"{e.engine}: audio lag {last.audio_lag_ms:+.1f} ms, confidence {last.confidence:.2f}")
    ax.legend(loc="best", fontsize=8)
    if len(e.window_times_s):
        ax2.plot(e.window_times_s, e.window_confidence, color="C2", lw=1.2)
        ax2.axhline(0, color="0.6", lw=0.8)
        ax2.set_xlabel("time in the clip (s)")
        ax2.set_ylabel("confidence")
        ax2.set_title("confidence along the clip", fontsize=9)
    else:
        ax2.set_axis_off()
    return fig
