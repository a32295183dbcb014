"""The analysis pass on real clips: one decode, tracks, scene cuts, several faces, bounded crops."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from media_factory import write_rotated

from pipeline.analysis import analyse, keep_plan, scorable
from syncnet.media import iter_video_frames, load_audio


def test_example_is_one_long_track(example_avi):
    a = analyse(example_avi)
    assert a.n_frames == 317 and a.scene_cuts == []
    assert len(a.tracks) == 1
    t = a.tracks[0]
    assert t.start <= 8 and t.end >= 308  # covers the clip bar a detection stride at the ends
    assert len(t.face_crops) == t.n_frames and t.mouth_crops.shape == (t.n_frames, 64, 96)
    assert scorable(t) is None
    crop = t.face_crops[100]
    # example.avi already is a reference crop: our crop of it is close to the frame itself
    frame = list(iter_video_frames(example_avi))[100]
    assert np.abs(crop.astype(int) - frame.astype(int)).mean() < 25


def test_720p_clip(fixtures_dir):
    a = analyse(fixtures_dir / "w2l_input2.mp4")
    assert a.n_frames == pytest.approx(14.08 * 25, abs=2)
    assert len(a.tracks) == 1 and a.tracks[0].face_px > 300


def _write_frames(path, frames, audio, fps=25):
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        vs.options = {"crf": "12", "preset": "ultrafast"}
        aus = out.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for f in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        for start in range(0, len(audio), 1024):
            af = av.AudioFrame.from_ndarray(audio[None, start : start + 1024], format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, start, Fraction(1, 16000)
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)


def test_scene_cut_splits_tracks(tmp_path, example_avi, fixtures_dir):
    a_frames = list(iter_video_frames(example_avi))[:100]
    b_src = iter_video_frames(fixtures_dir / "w2l_input3.mp4")
    b_frames = [np.ascontiguousarray(f[::2, ::2][:224, :224]) for _, f in zip(range(100), b_src)]
    b_frames = [np.pad(f, ((0, 224 - f.shape[0]), (0, 224 - f.shape[1]), (0, 0))) for f in b_frames]
    audio = load_audio(example_avi)[: 200 * 640]
    path = tmp_path / "cut.mp4"
    _write_frames(path, a_frames + b_frames, audio)
    a = analyse(path)
    assert a.scene_cuts == [100]
    assert {t.scene for t in a.tracks} == {0, 1}
    assert all(t.end < 100 for t in a.tracks if t.scene == 0)
    assert all(t.start >= 100 for t in a.tracks if t.scene == 1)


def test_two_faces_two_tracks(tmp_path, example_avi):
    frames = list(iter_video_frames(example_avi))[:120]
    still = frames[0]
    both = [np.concatenate([f, still], axis=1) for f in frames]  # speaker left, a frozen face right
    path = tmp_path / "two.mp4"
    _write_frames(path, both, load_audio(example_avi)[: 120 * 640])
    a = analyse(path)
    assert len(a.tracks) == 2
    xs = sorted(float(np.median(t.points[:, 0])) for t in a.tracks)
    assert xs[0] < 224 < xs[1]


def test_keep_plan_bounds_crops_and_prefers_speech():
    n = 10_000
    audio = np.zeros(n * 640, np.int16)
    rng = np.random.default_rng(0)
    loud = slice(4000 * 640, 4100 * 640)
    audio[loud] = rng.integers(-8000, 8000, 100 * 640)
    keep = keep_plan(audio, n, max_kept=500, segment=50)
    assert keep.sum() <= 500
    assert keep[4000:4100].sum() >= 50  # the loud stretch is in
    assert keep_plan(audio, 400, max_kept=500).all()


def test_kept_crops_of_a_long_clip_are_whole_syncnet_blocks():
    """Past 80 s only chosen segments keep SyncNet crops: each must hold a whole block (50 windows read 55
    frames), or SyncNet has nothing to score on a long clip."""
    from pipeline.analysis import MAX_KEPT_FRAMES, FaceTrack
    from pipeline.engines import SyncNetEngine
    from syncnet.constants import SAMPLES_PER_FRAME

    n = 4000  # 160 s
    rng = np.random.default_rng(1)
    talking = np.repeat(rng.random(n) > 0.3, SAMPLES_PER_FRAME)
    audio = (rng.integers(-3000, 3000, n * SAMPLES_PER_FRAME) * talking).astype(np.int16)
    keep = keep_plan(audio, n)
    assert keep.sum() <= MAX_KEPT_FRAMES
    track = FaceTrack(id=0, scene=0, start=0, points=np.zeros((n, 5)), mouth_crops=np.zeros((n, 64, 96), np.uint8),
                      face_crops={int(f): None for f in np.flatnonzero(keep)})
    analysis = type("A", (), {"audio": audio})()
    blocks = SyncNetEngine(None)._candidate_blocks(analysis, track)
    assert len(blocks) >= MAX_KEPT_FRAMES // 55 - 1  # every kept segment is a block


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied_like_ffmpeg(tmp_path, rotation):
    """Frames come out as FFmpeg's own command line displays them (autorotate is its default)."""
    import subprocess

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="the FFmpeg binary is the oracle here")
    from pipeline.media import _normalise_rotation, iter_grid_frames

    img = np.zeros((64, 96, 3), np.uint8)
    img[:16, :16] = 255
    path = write_rotated(tmp_path / f"rot{rotation}.mp4", [img] * 3, rotation)
    with av.open(str(path)) as c:
        rot = _normalise_rotation(next(c.decode(video=0)).rotation)
    ours = next(iter_grid_frames(path, rot)).image
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1", "-f",
                          "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    theirs = np.frombuffer(raw, np.uint8).reshape(ours.shape)
    assert np.abs(theirs.astype(int) - ours.astype(int)).mean() < 10


def test_portrait_phone_video_faces_found_upright(tmp_path, example_avi):
    """Stored sideways with a 90 degree display matrix, as phones do: the face must still be found."""
    frames = [np.ascontiguousarray(np.rot90(f, -1)) for f in list(iter_video_frames(example_avi))[:80]]
    path = write_rotated(tmp_path / "phone.mp4", frames, 90)
    # probe refuses audio-less clips, so run the analysis decoder and the detector directly
    from pipeline.faces import FaceDetector
    from pipeline.media import _normalise_rotation, iter_grid_frames

    det = FaceDetector()
    with av.open(str(path)) as c:
        rotation = _normalise_rotation(next(c.decode(video=0)).rotation)
    assert rotation in (90, 270)
    found = [len(det(gf.image)) for gf in iter_grid_frames(path, rotation) if gf.index % 10 == 0]
    # and without applying the rotation the sideways face is missed: the test can fail
    sideways = [len(det(gf.image)) for gf in iter_grid_frames(path, 0) if gf.index % 10 == 0]
    assert sum(sideways) < len(sideways)
    assert found and all(n == 1 for n in found)


def test_grid_frames_come_as_planes_and_convert_like_ffmpeg(fixtures_dir):
    """The analysis decoder hands over FFmpeg's own I420 planes; the colour picture made from them on demand
    is FFmpeg's BGR within rounding, and the grey read off the luma plane is OpenCV's grey of that picture."""
    import cv2

    from pipeline.media import iter_grid_frames
    from syncnet.media import decode_on_grid

    path = fixtures_dir / "w2l_input2.mp4"
    ours = iter_grid_frames(path)
    theirs = decode_on_grid(path, 25, "bgr24")
    for _ in range(3):
        gf, (k, bgr) = next(ours), next(theirs)
        assert gf.index == k and gf.shape == bgr.shape[:2] == (720, 1280)
        plane, table = gf.luma()
        assert table is not None and plane.shape == (720, 1280)  # planes, not a converted picture
        assert np.abs(gf.image.astype(int) - bgr.astype(int)).mean() < 2.0
        grey = table[plane].astype(int)
        assert np.abs(grey - cv2.cvtColor(gf.image, cv2.COLOR_BGR2GRAY)).mean() < 0.5
        assert np.abs(grey - cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).mean() < 2.0


def test_odd_sized_video_decodes_as_bgr(tmp_path):
    """I420 needs even sizes: an odd-sized video comes as a BGR picture, and the grey is OpenCV's."""
    import cv2

    from pipeline.media import iter_grid_frames

    img = np.zeros((63, 95, 3), np.uint8)
    img[10:30, 20:50] = (40, 180, 220)
    path = tmp_path / "odd.mkv"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = 95, 63, "bgr0"
        for _ in range(3):
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    gf = next(iter_grid_frames(path))
    plane, table = gf.luma()
    assert gf.shape == (63, 95) and table is None
    assert np.array_equal(gf.image, img)  # lossless: the very pixels
    assert np.array_equal(plane, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))


def test_a_region_converts_exactly_as_the_whole_picture(fixtures_dir):
    """SyncNet crops read only their region of a frame: converting just that region (odd edges, one pixel,
    past the frame's edge) gives the very pixels of the whole converted picture, and the same crop."""
    from pipeline.media import iter_grid_frames
    from pipeline.tracking import cut_face_crop

    windows = [(101, 421, 299, 701), (1, 2, 3, 4), (700, 900, 1270, 1400), (0, 720, 0, 1280)]
    gf = next(iter_grid_frames(fixtures_dir / "w2l_input2.mp4"))
    parts = [gf[y0:y1, x0:x1] for y0, y1, x0, x1 in windows]
    crop = cut_face_crop(gf, 640, 300, 150)
    assert gf._bgr is None  # nothing but the regions was converted
    picture = gf.image
    for part, (y0, y1, x0, x1) in zip(parts, windows):
        assert part.shape == picture[y0:y1, x0:x1].shape and np.array_equal(part, picture[y0:y1, x0:x1])
    assert np.array_equal(crop, cut_face_crop(picture, 640, 300, 150))
