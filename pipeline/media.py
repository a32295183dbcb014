"""Media facts and analysis decoding, with PyAV (FFmpeg bundled: no system binary).

``probe`` reads what a user's file holds (every stream, not only the first) and refuses files we cannot
use with one clear sentence. ``iter_grid_frames`` decodes the video once, upright (rotation metadata
applied), onto the 25 fps analysis grid by timestamp; the original file is never touched and nothing
is written to disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from syncnet.media import MediaError, decode_on_grid, open_container

from .heap import scratch

log = logging.getLogger(__name__)

#: Analysis grid: SyncNet's frame rate.
GRID_FPS = 25
#: Frames inspected to tell a constant frame rate from a variable one.
VFR_PROBE_FRAMES = 120
#: Packets read beyond those, so that the first frames' timestamps are all in hand whatever the B-frames'
#: reordering (H.264 and HEVC reorder by at most 16 frames).
VFR_REORDER = 16
#: Shortest video worth measuring.
MIN_DURATION_S = 1.0
#: Demuxers that read single pictures, not videos.
IMAGE_FORMATS = ("image2", "gif", "apng", "ico", "tiff")


@dataclass(frozen=True)
class StreamInfo:
    """One stream of the container."""

    index: int
    type: str  #: video | audio | subtitle | data | attachment
    codec: str
    start_s: float | None
    duration_s: float | None
    language: str | None = None
    # video
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pix_fmt: str | None = None
    rotation: int | None = None
    # audio
    sample_rate: int | None = None
    channels: int | None = None
    layout: str | None = None


@dataclass(frozen=True)
class MediaInfo:
    """What the file holds; the first video and first audio stream are the ones analysed."""

    path: str
    format: str
    size_bytes: int
    duration_s: float
    streams: list[StreamInfo] = field(default_factory=list)
    variable_frame_rate: bool = False
    #: the length the container's header announces, when it does (AVI, some MP4/MOV)
    declared_duration_s: float | None = None

    @property
    def truncated(self) -> bool:
        """The header announces clearly more than the file holds: it was cut off (a broken copy or upload)."""
        return bool(self.declared_duration_s and self.declared_duration_s > self.duration_s + 1.0)

    @property
    def video(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.type == "video"), None)

    @property
    def audio_streams(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.type == "audio"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["streams"] = [{k: v for k, v in s.items() if v is not None} for s in d["streams"]]
        return d


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _normalise_rotation(deg: float | int | None) -> int:
    if not deg:
        return 0
    return int(round(float(deg) / 90.0)) * 90 % 360


def probe(path: str | Path, *, check_decodable: bool = True) -> MediaInfo:
    """Streams, codecs, frame rate (constant or variable), duration, rotation and audio layout.

    Raises :class:`MediaError` for a missing, empty or unreadable file, and for one without a video or
    an audio track, with what to do about it.
    """
    p = Path(path)
    with open_container(p) as c:
        fmt = c.format.name
        if fmt.endswith("_pipe") or fmt in IMAGE_FORMATS:
            kind = fmt.removesuffix("_pipe").upper()
            raise MediaError(f"{p.name}: this is a still image ({kind}), not a video; upload a video of a talking "
                             "face with its sound.")
        streams: list[StreamInfo] = []
        for s in c.streams:
            cc = s.codec_context
            if s.type in ("video", "audio") and cc is None:
                raise MediaError(f"{p.name}: its {s.type} track uses a codec this tool cannot decode; "
                                 "re-export it as H.264/AAC MP4 and try again.")
            common = dict(index=s.index, type=s.type, codec=(cc.name if cc else "unknown"),
                          start_s=_seconds(s.start_time, s.time_base), duration_s=_seconds(s.duration, s.time_base),
                          language=s.language if hasattr(s, "language") else s.metadata.get("language"))
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate or s.base_rate
                streams.append(StreamInfo(**common, width=cc.width, height=cc.height,
                                          fps=float(rate) if rate else None, pix_fmt=cc.pix_fmt))
            elif s.type == "audio":
                streams.append(StreamInfo(**common, sample_rate=cc.sample_rate, channels=cc.channels,
                                          layout=cc.layout.name if cc.layout else None))
            else:
                streams.append(StreamInfo(**common))
        duration = c.duration / 1_000_000 if c.duration else 0.0
        declared = None
        v0 = c.streams.video[0] if c.streams.video else None
        if v0 is not None and v0.frames and (v0.average_rate or v0.guessed_rate):
            declared = float(v0.frames / (v0.average_rate or v0.guessed_rate))
    if not any(s.type == "video" for s in streams):
        raise MediaError(f"{p.name}: the file has no video track (it looks like audio only); upload a video "
                         "of a talking face with its sound.")
    if not any(s.type == "audio" for s in streams):
        raise MediaError(f"{p.name}: the file has no audio track, so there is no sound to sync; upload the "
                         "video with its sound.")
    vfr, rotation, first_frame_ok = _inspect_video(p) if check_decodable else (False, 0, True)
    if not first_frame_ok:
        raise MediaError(f"{p.name}: the video track cannot be decoded (corrupt or unsupported codec); "
                         "re-export it as H.264 MP4 and try again.")
    first_video = next(s.index for s in streams if s.type == "video")
    streams = [StreamInfo(**{**asdict(s), "rotation": rotation}) if s.index == first_video else s for s in streams]
    if not duration:
        duration = max((s.duration_s or 0.0) for s in streams)
    if check_decodable and duration and duration < MIN_DURATION_S:
        raise MediaError(f"{p.name}: the video is only {duration:.2f} s long; at least {MIN_DURATION_S:.0f} s of a "
                         "talking face with its sound is needed.")
    return MediaInfo(path=str(p), format=fmt, size_bytes=p.stat().st_size, duration_s=duration, streams=streams,
                     variable_frame_rate=vfr, declared_duration_s=declared)


def _span(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def check_limits(info: MediaInfo, max_duration_s: float | None = None, max_bytes: int | None = None) -> None:
    """Refuse a file over a size or duration limit, saying which and what to do."""
    name = Path(info.path).name
    if max_bytes is not None and info.size_bytes > max_bytes:
        raise MediaError(f"{name}: the file is {info.size_bytes / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB. "
                         "Trim or compress it and try again.")
    if max_duration_s is not None and info.duration_s > max_duration_s:
        raise MediaError(f"{name}: the video is {_span(info.duration_s)} long; the limit is {_span(max_duration_s)}. "
                         "Trim it and try again.")


def _inspect_video(path: Path) -> tuple[bool, int, bool]:
    """(variable frame rate?, rotation, decodable?) of the first video stream.

    The frame rate is judged from the timestamps of the first :data:`VFR_PROBE_FRAMES` packets (sorted, so
    B-frames' decoding order does not matter), and only the first frame is decoded (for its rotation, and to
    refuse a file whose video cannot be decoded at all). Decoding the 120 frames instead cost 0.2-1.0 s before
    every analysis (720p to 1080p) and gave the same answers on every fixture and development clip.
    """
    times: list[Fraction] = []
    rotation = 0
    decodable = False
    try:
        with open_container(path) as c:
            s = c.streams.video[0]
            s.thread_count = 1  # the first frame comes out without waiting for a pool of frame threads
            for packet in c.demux(s):  # the last one is empty: decoding it flushes what the decoder holds
                t = packet.pts if packet.pts is not None else packet.dts
                if packet.size and t is not None and s.time_base is not None:
                    times.append(t * s.time_base)
                if not decodable:
                    for frame in packet.decode():
                        rotation, decodable = _normalise_rotation(getattr(frame, "rotation", 0)), True
                        break
                if decodable and len(times) >= VFR_PROBE_FRAMES + VFR_REORDER:
                    break
    except (av.FFmpegError, ValueError) as exc:
        log.info("video decode failed while probing: %s", exc)
        return False, 0, decodable
    if not decodable:
        return False, 0, False
    return frame_rate_varies(sorted(set(times))[:VFR_PROBE_FRAMES]), rotation, True


def frame_rate_varies(times: list[Fraction]) -> bool:
    """Whether frames at ``times`` (sorted, in seconds) are spaced unevenly: the longest and the shortest
    interval more than 3 ms apart (a constant rate's timestamps are rounded to its time base, well within)."""
    deltas = [b - a for a, b in zip(times, times[1:]) if b > a]
    return bool(deltas) and (max(deltas) - min(deltas)) > Fraction(3, 1000)


#: Limited-range luma (16-235) to full-range grey (0-255): what OpenCV's BGR-to-grey gives for a frame that
#: OpenCV converted from the same YUV (the chroma terms cancel in 0.299 R + 0.587 G + 0.114 B).
LUMA_TO_GREY = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


class GridFrame:
    """One frame on the 25 fps analysis grid: index k sits at ``k / 25`` s after the first video frame.

    It holds what the decoder gave (its own I420 frame, or a BGR array for odd sizes and rotated video) and
    converts on demand: the colour picture (:attr:`image`) only for the frames that need one (face
    detection, stills, SyncNet crops: an eighth of them for the weight-free engine); the grey picture by a
    table lookup on just the pixels kept from the luma plane (:meth:`luma`: mouth crops, scene-cut
    thumbnails). FFmpeg's own conversion of every frame to BGR cost as much CPU as decoding the video, and
    a fresh array per frame another second of page faults per minute.
    """

    __slots__ = ("index", "_frame", "_bgr", "_grey")

    def __init__(self, index: int, image: np.ndarray | None = None, frame: av.VideoFrame | None = None):
        if (image is None) == (frame is None):
            raise ValueError("a grid frame holds either a BGR image or a yuv420p frame")
        self.index = index
        self._bgr = image
        self._frame = frame
        self._grey: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the picture."""
        if self._bgr is not None:
            return self._bgr.shape[:2]
        return self._frame.height, self._frame.width

    def _plane(self, i: int) -> np.ndarray:
        """Plane ``i`` of the I420 frame as a view (rows may be padded: a strided view, no copy)."""
        plane = self._frame.planes[i]
        return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: plane.height, : plane.width]

    @property
    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 BGR, upright (OpenCV's BT.601 conversion of the planes, made once)."""
        if self._bgr is None:
            self._bgr = self[:, :]
        return self._bgr

    def __getitem__(self, window: tuple[slice, slice]) -> np.ndarray:
        """``frame[y0:y1, x0:x1]``: that region of :attr:`image`, converting only the region when the picture
        has not been made (bit-identical: OpenCV's I420 conversion reads each 2x2 block's own chroma)."""
        return self.region(*window)

    def region(self, rows: slice, cols: slice, *, transient: bool = False) -> np.ndarray:
        """``frame[rows, cols]``; ``transient``: converted into this thread's scratch buffer
        (:func:`pipeline.heap.scratch`), so the result is valid only until this thread's next transient
        region: for a picture that is reduced at once (a SyncNet crop, the detector's input)."""
        h, w = self.shape
        y0, y1, _ = rows.indices(h)
        x0, x1, _ = cols.indices(w)
        if self._bgr is not None:
            return self._bgr[y0:y1, x0:x1]
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        import cv2

        ey0, ex0 = y0 - y0 % 2, x0 - x0 % 2  # the enclosing even-aligned region
        ey1, ex1 = min(h, y1 + y1 % 2), min(w, x1 + x1 % 2)
        rh, rw = ey1 - ey0, ex1 - ex0
        i420 = scratch("i420", (rh * 3 // 2, rw))  # assembled and converted at once: never handed out
        i420[:rh] = self._plane(0)[ey0:ey1, ex0:ex1]
        flat = i420.reshape(-1)
        quarter = rh * rw // 4
        flat[rh * rw : rh * rw + quarter] = self._plane(1)[ey0 // 2 : ey1 // 2, ex0 // 2 : ex1 // 2].reshape(-1)
        flat[rh * rw + quarter :] = self._plane(2)[ey0 // 2 : ey1 // 2, ex0 // 2 : ex1 // 2].reshape(-1)
        if transient:
            bgr = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420, dst=scratch("bgr", (rh, rw, 3)))
        else:
            bgr = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
        return bgr[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]

    def luma(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The grey picture without converting the frame: (H, W) uint8 plane and the table that maps it to
        full-range grey (``table[plane]``; None when the plane already is full-range grey). Callers map only
        the pixels they keep (a mouth region, a thumbnail), so a frame costs no full-size conversion."""
        if self._frame is not None:
            return self._plane(0), LUMA_TO_GREY
        if self._grey is None:
            import cv2

            self._grey = cv2.cvtColor(self._bgr, cv2.COLOR_BGR2GRAY)
        return self._grey, None


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, FFmpeg's convention) to a decoded frame."""
    if rotation == 90:
        return np.ascontiguousarray(np.rot90(img, 1))
    if rotation == 180:
        return np.ascontiguousarray(img[::-1, ::-1])
    if rotation == 270:
        return np.ascontiguousarray(np.rot90(img, -1))
    return img


def iter_grid_frames(path: str | Path, rotation: int = 0, fps: int = GRID_FPS,
                     max_width: int | None = None, threads: int = 0) -> Iterator[GridFrame]:
    """Decode the first video stream once onto the ``fps`` grid by timestamp, upright.

    ``max_width`` downscales wider frames during decoding (in swscale), keeping the aspect ratio.
    Only frames that land on the grid are handed over (as the decoder's planes; see :class:`GridFrame`),
    the others are only decoded. A decoding error part-way (a truncated file) ends the stream early with a
    warning instead of failing. ``threads``: the decoder's (:func:`syncnet.media.decode_on_grid`).
    """
    for k, decoded in decode_on_grid(path, fps, "yuv420p", max_width=max_width, tolerate_errors=True,
                                     threads=threads):
        if isinstance(decoded, np.ndarray):
            yield GridFrame(k, _upright(decoded, rotation))
        elif rotation:
            yield GridFrame(k, _upright(GridFrame(k, frame=decoded).image, rotation))
        else:
            yield GridFrame(k, frame=decoded)


def prefetch(make_items: Callable[[Callable[[], int]], Iterator], depth: int = 8) -> Iterator:
    """Run the items of ``make_items(backlog)`` in a background thread, ``depth`` ahead of the consumer.

    Decoding (FFmpeg) and the consumer's work (onnxruntime, OpenCV) both release the GIL, so on two
    cores they overlap instead of adding up. ``backlog()`` tells the producer how many items wait for the
    consumer, so that it can leave shareable work to a consumer that is waiting for it (an empty queue) and
    take it on when the consumer falls behind (a full one). Errors in the producer are re-raised in the
    consumer; if the consumer stops early, the producer is told to stop and the thread ends.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in make_items(q.qsize):
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((done, exc))

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)
