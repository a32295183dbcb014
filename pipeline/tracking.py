"""Face tracks from detections on a stride of frames: IoU linking, scene cuts, smoothing, crop geometry.

Small pure functions; the streaming pass that feeds them frames lives in :mod:`pipeline.analysis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .faces import Detection
from .heap import scratch

#: Link a detection to a track when the boxes overlap this much (detections are a stride apart).
LINK_IOU = 0.3
#: A track survives this many grid frames without a detection (missed detections are interpolated).
MAX_GAP = 24
#: The reference's crop_scale: the crop is (1 + 2 * 0.4) = 1.8 half-sizes below the centre, 1.4 to the sides.
CROP_SCALE = 0.4
#: Grey of the padding around frames, as the reference pads.
PAD_VALUE = 110


def iou(a: np.ndarray, b: np.ndarray) -> float:
    xx1, yy1 = max(a[0], b[0]), max(a[1], b[1])
    xx2, yy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class TrackPoints:
    """Detections of one face: grid frame index -> detection, in time order, within one scene."""

    id: int
    scene: int
    frames: list[int] = field(default_factory=list)
    dets: list[Detection] = field(default_factory=list)

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    def add(self, frame: int, det: Detection) -> None:
        self.frames.append(frame)
        self.dets.append(det)


class Tracker:
    """Greedy IoU linking of strided detections into tracks; a scene cut closes every open track."""

    def __init__(self, link_iou: float = LINK_IOU, max_gap: int = MAX_GAP):
        self.link_iou, self.max_gap = link_iou, max_gap
        self.open: list[TrackPoints] = []
        self.closed: list[TrackPoints] = []
        self.scene = 0
        self._next_id = 0

    def cut(self) -> None:
        """A scene cut: no track continues across it."""
        self.closed.extend(self.open)
        self.open = []
        self.scene += 1

    def update(self, frame: int, dets: list[Detection]) -> None:
        still = []
        for t in self.open:
            (self.closed if frame - t.last_frame > self.max_gap else still).append(t)
        self.open = still
        pairs = sorted(((iou(t.dets[-1].box, d.box), ti, di) for ti, t in enumerate(self.open)
                        for di, d in enumerate(dets)), reverse=True)
        used_t, used_d = set(), set()
        for score, ti, di in pairs:
            if score < self.link_iou or ti in used_t or di in used_d:
                continue
            self.open[ti].add(frame, dets[di])
            used_t.add(ti)
            used_d.add(di)
        for di, d in enumerate(dets):
            if di not in used_d:
                t = TrackPoints(self._next_id, self.scene)
                self._next_id += 1
                t.add(frame, d)
                self.open.append(t)

    def finish(self) -> list[TrackPoints]:
        self.closed.extend(self.open)
        self.open = []
        return sorted(self.closed, key=lambda t: t.id)


def box_params(box: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, half-size s = max(w, h) / 2), the reference's crop parameters."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[2] - box[0], box[3] - box[1]) / 2


def smoothed_points(track: TrackPoints) -> np.ndarray:
    """Per detection: x, y, s, mouth x, mouth y, median-filtered over 3 neighbouring detections.

    At a stride of 5 frames this spans 0.4 s, close to the reference's 13-frame median on every frame.
    """
    raw = np.array([[*box_params(d.box), *d.mouth] for d in track.dets], dtype=np.float64)
    if len(raw) < 3:
        return raw
    padded = np.concatenate([raw[:1], raw, raw[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def smoothed_point(track: TrackPoints, k: int) -> np.ndarray:
    """:func:`smoothed_points` for detection ``k`` alone (its neighbours only, so O(1) per call)."""
    n = len(track.dets)
    rows = [track.dets[min(max(j, 0), n - 1)] for j in (k - 1, k, k + 1)] if n >= 3 else [track.dets[k]]
    raw = np.array([[*box_params(d.box), *d.mouth] for d in rows], dtype=np.float64)
    return np.median(raw, axis=0)


def interpolate_points(frames: list[int], points: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of every column of ``points`` (given at ``frames``) at frames ``at``."""
    return np.stack([np.interp(at, frames, points[:, c]) for c in range(points.shape[1])], axis=1)


def crop_window(x: float, y: float, s: float, crop_scale: float = CROP_SCALE) -> tuple[int, int, int, int]:
    """The reference crop (rows y - s .. y + s(1 + 2cs), cols x - s(1 + cs) .. x + s(1 + cs)), as ints.

    A square of side 2.8 s (1.4x the face box) shifted down by 0.4 s so that the mouth and chin are in.
    """
    return (int(y - s), int(y + s * (1 + 2 * crop_scale)), int(x - s * (1 + crop_scale)),
            int(x + s * (1 + crop_scale)))


def cut_face_crop(frame: np.ndarray, x: float, y: float, s: float, size: int = 224) -> np.ndarray:
    """The reference's 224x224 face crop of one frame, padding with grey where it leaves the frame.

    ``frame``: a BGR array, or a :class:`pipeline.media.GridFrame` (sliced the same way; only the region
    read is converted to BGR).
    """
    import cv2

    top, bottom, left, right = crop_window(x, y, s)
    h, w = frame.shape[:2]
    pt, pb, pl, pr = max(0, -top), max(0, bottom - h), max(0, -left), max(0, right - w)
    rows, cols = slice(max(0, top), min(h, bottom)), slice(max(0, left), min(w, right))
    # the region and its padded copy live only until the resize: made in scratch buffers (pipeline.heap)
    region = frame.region(rows, cols, transient=True) if hasattr(frame, "region") else frame[rows, cols]
    if pt or pb or pl or pr:
        padded = scratch("padded", (region.shape[0] + pt + pb, region.shape[1] + pl + pr, 3))
        region = cv2.copyMakeBorder(region, pt, pb, pl, pr, cv2.BORDER_CONSTANT, dst=padded,
                                    value=(PAD_VALUE,) * 3)
    if region.size == 0:
        return np.full((size, size, 3), PAD_VALUE, np.uint8)
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_LINEAR)


#: Mouth crop for the weight-free engine: a box around the mouth centre, in units of the face half-size.
MOUTH_HALF_W = 0.55
MOUTH_HALF_H = 0.36
MOUTH_SIZE = (96, 64)


def cut_mouth_crop(frame: np.ndarray, mx: float, my: float, s: float, table: np.ndarray | None = None) -> np.ndarray:
    """A 96x64 grey crop centred on the mouth, sized by the face (stable when the mouth opens).

    ``frame`` is BGR or one grey plane; ``table`` (256 entries) maps that plane's region to grey first
    (limited-range luma, :meth:`pipeline.media.GridFrame.luma`), so only the region is converted.
    """
    import cv2

    hw, hh = MOUTH_HALF_W * s, MOUTH_HALF_H * s
    h_img, w_img = frame.shape[:2]
    x0, y0 = max(0, int(mx - hw) - 2), max(0, int(my - hh) - 2)
    x1, y1 = min(w_img, int(mx + hw) + 3), min(h_img, int(my + hh) + 3)
    w, h = MOUTH_SIZE
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((h, w), np.uint8)
    region = frame[y0:y1, x0:x1]
    if region.ndim == 3:
        gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    else:
        gray = cv2.LUT(region, table) if table is not None else region
    if 2 * hw > 1.4 * w:  # downscaling a lot: blur first so the warp does not alias
        k = int(2 * hw / w) | 1
        gray = cv2.GaussianBlur(gray, (k, k), 0)
    src = np.float32([[mx - hw - x0, my - hh - y0], [mx + hw - x0, my - hh - y0], [mx - hw - x0, my + hh - y0]])
    dst = np.float32([[0, 0], [w, 0], [0, h]])
    return cv2.warpAffine(gray, cv2.getAffineTransform(src, dst), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
