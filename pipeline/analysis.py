"""The analysis pass: decode once, find and track faces, cut the crops the engines need.

One streaming pass over the video on the 25 fps grid: scene cuts are detected on tiny thumbnails, faces
every ``stride`` frames (and right after each cut), tracks are linked by IoU, and once a frame's boxes are
settled (a short buffer of frames behind the newest detection) its 224x224 SyncNet crop and its 96x64
mouth crop are cut and the frame is dropped. Memory therefore holds a bounded buffer of frames plus the
small crops; SyncNet crops are kept for at most ``MAX_KEPT_FRAMES`` frames, chosen where there is speech.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from syncnet.constants import SAMPLES_PER_FRAME
from syncnet.media import load_audio

from .faces import FaceDetector
from .heap import decoding_heap
from .media import GRID_FPS, GridFrame, MediaInfo, iter_grid_frames, prefetch, probe
from .tracking import (
    MAX_GAP,
    Tracker,
    TrackPoints,
    cut_face_crop,
    cut_mouth_crop,
    smoothed_point,
)

log = logging.getLogger(__name__)

#: Detect faces on every 8th grid frame (3 per second); tracks are interpolated in between.
DETECT_STRIDE = 8
#: Frames are decoded at most this wide: faces stay far above 224 px crops, and the buffer stays small.
DECODE_MAX_WIDTH = 1280
#: Frames decoded ahead of the detecting thread, and how many of them must be waiting for the decoding thread
#: to make the detector's input itself (:func:`_analyse`'s ``planned``).
PREFETCH_DEPTH = 8
PREPARE_BACKLOG = 4
#: Mean absolute change (0-255) of a thumbnail between frames that counts as a scene cut.
CUT_THRESHOLD = 40.0
#: SyncNet crops are kept for at most this many grid frames per track (80 s at 25 fps, ~300 MB).
MAX_KEPT_FRAMES = 2000
#: Kept material comes in segments of this many frames (2.2 s), chosen where the audio is loudest: a SyncNet
#: block of 50 windows reads 55 consecutive frames, so each segment is one block (at 50, the segments of a
#: clip over 80 s held no whole block and SyncNet found almost nothing to score there).
KEEP_SEGMENT = 55
#: Shortest face track worth scoring (2 s), and smallest face (box side, px in the decoded frame).
MIN_TRACK_FRAMES = 50
MIN_FACE_PX = 40
#: Stills kept for the face picture (:func:`keep_still`): at most this many, at most this wide.
MAX_STILLS = 12
STILL_MAX_WIDTH = 640


def decode_threads(detector_device: str, cpus: int | None = None) -> int:
    """The decoder's threads for the analysis pass (0: FFmpeg's own choice).

    Face detection on the CPU keeps one core busy beside the decoder, so the decoder gets the others: on two
    cores that is one thread, and FFmpeg's frame threads there (three on two cores) cost a third more CPU for
    the same frames (the minute at 720p: 3.8 s of CPU against 2.6 s on one thread), CPU the detector then
    lacks. With detection on a GPU the decoder has every core, and FFmpeg chooses.
    """
    if detector_device != "cpu":
        return 0
    cpus = cpus or len(os.sched_getaffinity(0))
    return max(1, cpus - 1)


@dataclass
class FaceTrack:
    """One face over a stretch of grid frames, with everything the engines read."""

    id: int
    scene: int
    start: int  #: first grid frame
    points: np.ndarray  #: (n, 5) per frame: centre x, centre y, half-size s, mouth x, mouth y
    mouth_crops: np.ndarray  #: (n, 64, 96) uint8 grey, every frame
    face_crops: dict[int, np.ndarray] = field(default_factory=dict)  #: grid frame -> (224, 224, 3) BGR
    detections: int = 0
    mean_score: float = 0.0

    @property
    def n_frames(self) -> int:
        return len(self.points)

    @property
    def end(self) -> int:
        """Last grid frame (inclusive)."""
        return self.start + self.n_frames - 1

    @property
    def face_px(self) -> float:
        return float(np.median(self.points[:, 2]) * 2) if self.n_frames else 0.0

    def summary(self) -> dict:
        return {"id": self.id, "scene": self.scene, "start_s": round(self.start / GRID_FPS, 3),
                "end_s": round((self.end + 1) / GRID_FPS, 3), "frames": self.n_frames,
                "face_px": round(self.face_px, 1), "detections": self.detections,
                "mean_score": round(self.mean_score, 3), "crops_kept": len(self.face_crops)}


@dataclass(frozen=True)
class Still:
    """A small copy of one decoded frame, kept so the faces can be shown without decoding again: a detection
    frame where a face first appears (or a later one of its scene that shows more faces, :func:`keep_still`)."""

    frame: int  #: grid frame index
    scene: int
    image: np.ndarray  #: (h, w, 3) uint8 RGB, at most :data:`STILL_MAX_WIDTH` wide
    scale: float  #: still pixels per decoded-frame pixel (the tracks' coordinates)


def make_still(bgr: np.ndarray, frame: int, scene: int, max_width: int = STILL_MAX_WIDTH) -> Still:
    """A reduced RGB copy of a decoded BGR frame: the mean of each f x f block (f the smallest integer that
    brings it within ``max_width``), so it stays sharp enough to recognise a face and costs one reshape."""
    h, w = bgr.shape[:2]
    f = max(1, -(-w // max_width))
    if f > 1:
        bgr = bgr[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3)).round()
    return Still(frame=frame, scene=scene, image=np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8),
                 scale=1.0 / f)


def keep_still(stills: list[tuple[set[int], Still]], ids: set[int], bgr: np.ndarray | Callable[[], np.ndarray],
               frame: int, scene: int, max_stills: int = MAX_STILLS) -> None:
    """Keep a still of this detection frame when it shows a face that no kept still shows: in place of a
    still of the same scene whose faces are all here too, else as a new one (up to ``max_stills``).

    So every face gets a picture (its first frame, or a later one with more company), at the cost of a
    downscale on the few frames where a new face appears. ``bgr``: the frame, or a function that makes it
    (the analysis converts a frame to colour only when a still is kept).
    """
    if not ids or ids <= set().union(*(seen for seen, _ in stills)):
        return
    bgr = bgr() if callable(bgr) else bgr
    for k, (seen, st) in enumerate(stills):
        if st.scene == scene and seen <= ids:
            stills[k] = (set(ids), make_still(bgr, frame, scene))
            return
    if len(stills) < max_stills:
        stills.append((set(ids), make_still(bgr, frame, scene)))


@dataclass
class Analysis:
    """The decoded facts of one video: media info, aligned audio, face tracks, scene cuts, timings."""

    info: MediaInfo
    audio: np.ndarray  #: 16 kHz mono int16, sample 0 at the first video frame
    n_frames: int  #: grid frames decoded
    tracks: list[FaceTrack]
    scene_cuts: list[int]
    timings: dict[str, float]
    video_truncated: bool = False
    #: small frames that together show every face (:class:`Still`), for showing which face was measured
    stills: tuple[Still, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.n_frames / GRID_FPS


def keep_plan(audio: np.ndarray, n_frames: int, max_kept: int = MAX_KEPT_FRAMES,
              segment: int = KEEP_SEGMENT) -> np.ndarray:
    """Which grid frames may keep SyncNet crops: all of them for short clips, else the loudest segments.

    The clip is split into ``max_kept // segment`` equal parts and the loudest ``segment``-frame stretch
    of each is kept, so the material is spread over the whole clip and sits where someone is talking.
    """
    keep = np.zeros(n_frames, bool)
    if max_kept <= 0:
        return keep
    if n_frames <= max_kept:
        keep[:] = True
        return keep
    frames_audio = min(n_frames, len(audio) // SAMPLES_PER_FRAME)
    energy = np.zeros(n_frames)
    if frames_audio:
        a = audio[: frames_audio * SAMPLES_PER_FRAME].astype(np.float64).reshape(frames_audio, -1)
        energy[:frames_audio] = np.sqrt((a**2).mean(axis=1))
    parts = max(1, max_kept // segment)
    bounds = np.linspace(0, n_frames, parts + 1).astype(int)
    cum = np.concatenate([[0], np.cumsum(energy)])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo <= segment:
            keep[lo:hi] = True
            continue
        sums = cum[lo + segment : hi + 1] - cum[lo : hi - segment + 1]
        best = lo + int(np.argmax(sums))
        keep[best : best + segment] = True
    return keep


class _TrackCrops:
    """Per-track accumulators filled as frames are finalised."""

    def __init__(self, points: TrackPoints):
        self.points = points
        self.rows: list[np.ndarray] = []
        self.mouths: list[np.ndarray] = []
        self.faces: dict[int, np.ndarray] = {}
        self.start: int | None = None
        self._settled: dict[int, np.ndarray] = {}  #: smoothed points whose neighbours are all known

    def _smoothed(self, k: int) -> np.ndarray:
        """:func:`smoothed_point` of detection ``k``, made once when it can no longer change (the track has
        three or more detections and one after ``k``): every frame between two detections reads them."""
        if len(self.points.dets) < 3 or k + 1 >= len(self.points.dets):
            return smoothed_point(self.points, k)
        got = self._settled.get(k)
        if got is None:
            got = self._settled[k] = smoothed_point(self.points, k)
        return got

    def at(self, frame: int) -> np.ndarray:
        """x, y, s, mouth x, mouth y at ``frame``, linear between the two smoothed detections around it.

        Local work only (frames are finalised in order), so a long track costs the same per frame.
        """
        frames = self.points.frames
        k = bisect.bisect_right(frames, frame) - 1
        k = min(max(k, 0), len(frames) - 1)
        a = self._smoothed(k)
        if k + 1 >= len(frames) or frames[k] >= frame:
            return a
        b = self._smoothed(k + 1)
        w = (frame - frames[k]) / (frames[k + 1] - frames[k])
        return a + (b - a) * w


def analyse(path: str | Path, info: MediaInfo | None = None, *, stride: int = DETECT_STRIDE,
            max_kept: int = MAX_KEPT_FRAMES, detector: FaceDetector | None = None,
            on_frame: Callable[[int], None] | None = None, face_crops: bool = True) -> Analysis:
    """Decode ``path`` once and return its face tracks with crops (see the module docstring).

    ``face_crops=False`` skips the 224x224 SyncNet crops (the weight-free engine reads only the mouths).
    Frames are served by mmap meanwhile (:func:`pipeline.heap.decoding_heap`).
    """
    with decoding_heap():
        return _analyse(path, info, stride=stride, max_kept=max_kept, detector=detector, on_frame=on_frame,
                        face_crops=face_crops)


def _analyse(path: str | Path, info: MediaInfo | None, *, stride: int, max_kept: int,
             detector: FaceDetector | None, on_frame: Callable[[int], None] | None, face_crops: bool) -> Analysis:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = info or probe(path)
    timings["probe_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    audio = load_audio(path)
    timings["audio_s"] = time.perf_counter() - t
    fps = info.video.fps or GRID_FPS
    expected = int(np.ceil(info.duration_s * GRID_FPS)) + 1 if info.duration_s else 0
    keep = keep_plan(audio, max(expected, len(audio) // SAMPLES_PER_FRAME + 1), max_kept if face_crops else 0)
    det = detector or FaceDetector(threads=1)  # the decoding thread has the other core
    tracker = Tracker()
    crops: dict[int, _TrackCrops] = {}
    buffer: deque = deque()
    lag = MAX_GAP + 2 * stride
    cuts: list[int] = []
    last_det = -(10**9)
    stills: list[tuple[set[int], Still]] = []  # (tracks seen in it, still)
    n = 0
    t_detect = 0.0
    t_crop = 0.0

    def finalise(upto: int) -> None:
        nonlocal t_crop
        tc = time.perf_counter()
        tracks = tracker.closed + tracker.open
        while buffer and buffer[0].index <= upto:
            gf = buffer.popleft()
            plane, table = gf.luma()
            for tp in tracks:
                if not tp.frames[0] <= gf.index <= tp.frames[-1]:
                    continue
                acc = crops.get(tp.id) or crops.setdefault(tp.id, _TrackCrops(tp))
                x, y, s, mx, my = acc.at(gf.index)
                if acc.start is None:
                    acc.start = gf.index
                acc.rows.append(np.array([x, y, s, mx, my]))
                acc.mouths.append(cut_mouth_crop(plane, mx, my, s, table))
                if gf.index < len(keep) and keep[gf.index]:
                    acc.faces[gf.index] = cut_face_crop(gf, x, y, s)
        t_crop += time.perf_counter() - tc

    def detector_input(gf: GridFrame) -> tuple:
        """The detector's input for a frame: converted into a scratch buffer and reduced at once
        (pipeline.heap.scratch), on whichever thread calls it."""
        return det.prepare(gf.region(slice(None), slice(None), transient=True))

    def planned(backlog: Callable[[], int]) -> Iterator[tuple[GridFrame, bool, bool, tuple | None]]:
        """On the decoding thread: each frame, whether a scene cut starts there, whether it is to be detected
        (every ``stride``-th, and the first after a cut), and the detector's input when it was made here: the
        decoding thread makes it when the detecting one has frames waiting (``backlog``), else leaves it to
        the detecting thread, which would otherwise wait for frames (each thread then has about half of
        the pass's CPU: the decoder alone is nearly half)."""
        prev_thumb: np.ndarray | None = None
        last = -(10**9)
        for gf in iter_grid_frames(path, info.video.rotation or 0, max_width=DECODE_MAX_WIDTH,
                                   threads=decode_threads(det.device)):
            plane, table = gf.luma()
            thumb = plane[:: max(1, plane.shape[0] // 18), :: max(1, plane.shape[1] // 32)]
            thumb = (table[thumb] if table is not None else thumb).astype(np.int16)
            cut = (prev_thumb is not None and thumb.shape == prev_thumb.shape
                   and float(np.abs(thumb - prev_thumb).mean()) > CUT_THRESHOLD)
            prev_thumb = thumb
            if cut:
                last = -(10**9)
            prepared = None
            detect = gf.index - last >= stride
            if detect:
                if backlog() >= PREPARE_BACKLOG:
                    prepared = detector_input(gf)
                last = gf.index
            yield gf, cut, detect, prepared

    t = time.perf_counter()
    truncated = False
    for gf, cut, detect, prepared in prefetch(planned, PREFETCH_DEPTH):
        n = gf.index + 1
        if cut:
            cuts.append(gf.index)
            finalise(gf.index - 1)  # every earlier frame belongs to the closed scene
            tracker.cut()
        buffer.append(gf)
        if detect:
            prepared = prepared or detector_input(gf)
            td = time.perf_counter()
            tracker.update(gf.index, det.detect(prepared))
            t_detect += time.perf_counter() - td
            keep_still(stills, {t.id for t in tracker.open if t.last_frame == gf.index}, lambda gf=gf: gf.image,
                       gf.index, tracker.scene)
            last_det = gf.index
            finalise(gf.index - lag)
        if on_frame:
            on_frame(gf.index)
    if buffer and buffer[-1].index != last_det:  # extend tracks to the last frame
        td = time.perf_counter()
        tracker.update(buffer[-1].index, det(buffer[-1].image))
        t_detect += time.perf_counter() - td
    tracker.finish()
    finalise(n)
    timings["decode_track_s"] = time.perf_counter() - t
    timings["detect_s"] = t_detect
    timings["crop_s"] = t_crop
    if expected and n < 0.9 * expected - GRID_FPS:
        truncated = True
        log.warning("%s: only %.1f s of %.1f s of video could be decoded", Path(path).name, n / GRID_FPS,
                    info.duration_s)

    tracks = []
    for tid, acc in sorted(crops.items()):
        tp = acc.points
        tracks.append(FaceTrack(
            id=tid, scene=tp.scene, start=int(acc.start), points=np.array(acc.rows),
            mouth_crops=np.array(acc.mouths, dtype=np.uint8), face_crops=acc.faces, detections=len(tp.frames),
            mean_score=float(np.mean([d.score for d in tp.dets]))))
    log.info("analysed %s: %d grid frames (%.2f fps source), %d tracks, %d cuts", Path(path).name, n, fps,
             len(tracks), len(cuts))
    return Analysis(info=info, audio=audio, n_frames=n, tracks=tracks, scene_cuts=cuts, timings=timings,
                    video_truncated=truncated, stills=tuple(st for _, st in stills))


def frame_rms(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """RMS of the audio per grid frame (40 ms), zero past the end of the audio. The one RMS helper: speech
    detection here and SyncNet's choice of blocks to score both read it."""
    hop = SAMPLES_PER_FRAME
    n = min(n_frames, len(audio) // hop)
    out = np.zeros(n_frames)
    if n:
        out[:n] = np.sqrt((audio[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(axis=1))
    return out


def speech_frames(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Which grid frames (40 ms) are within talking: RMS above 15 % of the clip's loud end, gaps under 0.5 s
    bridged."""
    rms = frame_rms(audio, n_frames)
    n = min(n_frames, len(audio) // SAMPLES_PER_FRAME)
    loud = np.percentile(rms[:n], 95) if n else 0.0
    voiced = rms > max(30.0, 0.15 * loud)
    # speech has short dips between syllables and words: a frame within 0.25 s of a voiced one counts
    reach = GRID_FPS // 4
    cum = np.concatenate([[0], np.cumsum(voiced)])
    idx = np.arange(n_frames)
    lo, hi = np.clip(idx - reach, 0, n_frames), np.clip(idx + reach + 1, 0, n_frames)
    return (cum[hi] - cum[lo]) > 0


def scorable(track: FaceTrack, min_frames: int = MIN_TRACK_FRAMES, speech: np.ndarray | None = None,
             min_speech_frames: int = 0) -> str | None:
    """Why a track cannot be scored, or None when it can."""
    if track.face_px < MIN_FACE_PX:
        return f"face too small ({track.face_px:.0f} px, need {MIN_FACE_PX} px)"
    talking = int(speech[track.start : track.end + 1].sum()) if speech is not None else track.n_frames
    if track.n_frames < min_frames or talking < min_speech_frames:
        return (f"too little speech on a visible face: the face is visible for {track.n_frames / GRID_FPS:.1f} s "
                f"with {talking / GRID_FPS:.1f} s of speech (need {min_frames / GRID_FPS:.0f} s)")
    return None
