"""Which face was measured: stills from the clip with every tracked face boxed and labelled, and a table.

With two or more people in frame a user has to see that the right one was used. Everything here comes
from what the analysis pass already kept (:attr:`pipeline.analysis.Analysis.stills`: small frames where
faces first appear, and the tracks' smoothed boxes) and from the report (each face's first reading, the
chosen face), so showing it costs no second pass over the video. Drawn on ``matplotlib.figure.Figure``
(no pyplot state, safe in concurrent jobs) and handed back as an RGB array.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .analysis import Analysis, Still
from .media import GRID_FPS

log = logging.getLogger(__name__)

#: At most this many stills in the picture (the chosen face's first, then those showing faces not yet shown).
MAX_PANELS = 4
CHOSEN_COLOUR = "#22c55e"
OTHER_COLOUR = "#f97316"
TABLE_HEADERS = ["face", "scene", "visible (s)", "seconds visible", "face size (px)", "audio lag (ms)",
                 "confidence", "p_correct", "status"]


def face_boxes(analysis: Analysis, still: Still) -> list[tuple[int, tuple[float, float, float, float]]]:
    """(track id, (x0, y0, x1, y1) in the still's pixels) for every track visible on the still's frame."""
    out = []
    for t in analysis.tracks:
        if t.start <= still.frame <= t.end:
            x, y, s = t.points[still.frame - t.start, :3]
            out.append((t.id, tuple(float(v) * still.scale for v in (x - s, y - s, x + s, y + s))))
    return out


def choose_stills(analysis: Analysis, chosen: int | None, max_panels: int = MAX_PANELS) -> list[Still]:
    """The stills to show: the one with the chosen face first, then each that shows a face not yet shown."""
    boxed = [(st, {tid for tid, _ in face_boxes(analysis, st)}) for st in analysis.stills]
    boxed = [(st, ids) for st, ids in boxed if ids]
    boxed.sort(key=lambda b: (chosen not in b[1], b[0].frame))
    shown: set[int] = set()
    out = []
    for st, ids in boxed:
        if len(out) < max_panels and not ids <= shown:
            out.append(st)
            shown |= ids
    return out


def face_rows(report: Mapping) -> list[list]:
    """The per-face table: one row per tracked face, from the report's ``tracks`` and ``track``.

    Lag, confidence and p_correct are the face's own first reading (every scorable face is read once; the
    one that scores best is measured further); a face that could not be read says why.
    """
    chosen = report.get("track")
    rows = []
    for t in report.get("tracks") or []:
        est = t.get("estimate") or {}
        if t["id"] == chosen:
            status = "measured (the speaking face)"
        elif est:
            status = "read once, scored lower"
        else:
            status = t.get("reason") or "not read"
        lag = est.get("audio_lag_ms")
        conf = est.get("confidence")
        p = est.get("p_correct")
        rows.append([t["id"], t.get("scene"), f"{t['start_s']:.1f}-{t['end_s']:.1f}", round(t["frames"] / GRID_FPS, 1),
                     round(t.get("face_px") or 0.0), None if lag is None else round(lag, 1),
                     None if conf is None else round(conf, 2), None if p is None else round(p, 3), status])
    return rows


def _label(track_id: int, chosen: int | None, by_id: Mapping[int, Mapping]) -> str:
    est = (by_id.get(track_id) or {}).get("estimate") or {}
    words = f"face {track_id}"
    if track_id == chosen:
        words += " (measured)"
    if est.get("audio_lag_ms") is not None:
        words += f": {est['audio_lag_ms']:+.0f} ms, conf {est['confidence']:.2f}"
    return words


def draw_faces(stills: Sequence[Still], analysis: Analysis, report: Mapping) -> Figure:
    """One panel per still: the frame, every face on it boxed and labelled, the measured one in green."""
    chosen = report.get("track")
    by_id = {t["id"]: t for t in report.get("tracks") or []}
    cols = min(2, len(stills))
    rows = -(-len(stills) // cols)
    h, w = stills[0].image.shape[:2]
    panel = min(8 / cols, 4.2 / rows * w / h)  # inches per panel's width: at most 8 wide and ~5 high in all
    fig = Figure(figsize=(max(5.0, panel * cols), panel * h / w * rows + 0.3 * rows + 0.4), dpi=100,
                 layout="constrained")
    n = len(by_id)
    fig.suptitle(f"{n} face{'s' if n != 1 else ''} tracked; " + (f"face {chosen} (green) was measured"
                 if chosen is not None else "none could be measured"), x=0.01, ha="left", fontsize=10)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax, st in zip(axes, stills):
        ax.imshow(st.image)
        for tid, (x0, y0, x1, y1) in face_boxes(analysis, st):
            mine = tid == chosen
            colour = CHOSEN_COLOUR if mine else OTHER_COLOUR
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=3 if mine else 1.8,
                                   ls="-" if mine else "--"))
            ax.text(x0 + 3, max(0.0, y0) + 3, _label(tid, chosen, by_id), color="white", fontsize=8, va="top",
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5, "alpha": 0.9})
        ax.set_title(f"scene {st.scene}, {st.frame / GRID_FPS:.1f} s", fontsize=9)
        ax.set_axis_off()
    for ax in axes[len(stills):]:
        ax.set_axis_off()
    return fig


def figure_rgb(fig: Figure) -> np.ndarray:
    """The figure rendered to an (h, w, 3) uint8 array (what an image widget or a PNG writer takes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def faces_picture(analysis: Analysis | None, report: Mapping) -> np.ndarray | None:
    """The picture of the faces that were tracked (RGB), or None when there is nothing to show (no face,
    or an analysis without stills)."""
    if analysis is None or not analysis.tracks:
        return None
    stills = choose_stills(analysis, report.get("track"))
    if not stills:
        log.info("no still shows a tracked face")
        return None
    return figure_rgb(draw_faces(stills, analysis, report))
