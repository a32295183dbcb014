"""Which face was measured: the stills kept by the analysis pass, the boxes, the picture and the table."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle
from media_factory import write_two_faces

from pipeline.analysis import Still, keep_still, make_still
from pipeline.facepicture import (
    CHOSEN_COLOUR,
    OTHER_COLOUR,
    choose_stills,
    draw_faces,
    face_boxes,
    face_rows,
    faces_picture,
)
from pipeline.fix import measure_events
from pipeline.sync import SyncOptions, SyncResult


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory, example_avi):
    """The whole measurement of a clip with a speaking face (left) and a frozen one (right)."""
    path = write_two_faces(example_avi, tmp_path_factory.mktemp("faces") / "two.mp4")
    result = [e for e in measure_events(path, SyncOptions(engine="cca")) if isinstance(e, SyncResult)][-1]
    return result.analysis, result.to_report(curves=False), path


def test_make_still_is_small_rgb_and_averaged():
    bgr = np.zeros((720, 1280, 3), np.uint8)
    bgr[:, :, 0] = 200  # blue in BGR
    bgr[0, 0] = (0, 0, 255)  # one red pixel: averaged into its 2x2 block, not kept whole
    st = make_still(bgr, frame=7, scene=1)
    assert st.image.shape == (360, 640, 3) and st.image.dtype == np.uint8 and st.scale == 0.5
    assert tuple(st.image[5, 5]) == (0, 0, 200)  # RGB now
    assert tuple(st.image[0, 0]) == (64, 0, 150)


def test_a_still_is_kept_for_every_new_face_and_replaced_by_a_fuller_one():
    img = np.zeros((100, 200, 3), np.uint8)
    kept: list[tuple[set[int], Still]] = []
    keep_still(kept, {0}, img, 0, scene=0)
    keep_still(kept, {0}, img, 8, scene=0)  # nothing new: nothing kept
    assert [st.frame for _, st in kept] == [0]
    keep_still(kept, {0, 1}, img, 16, scene=0)  # a second face joins: this frame shows both, it replaces
    assert [(ids, st.frame) for ids, st in kept] == [({0, 1}, 16)]
    keep_still(kept, {2}, img, 40, scene=1)  # a new scene's face: a second still
    keep_still(kept, {3}, img, 48, scene=1, max_stills=2)  # no room, and {2} is not within {3}
    assert [(ids, st.scene) for ids, st in kept] == [({0, 1}, 0), ({2}, 1)]


def test_two_faces_are_boxed_and_the_measured_one_is_marked(two_faces):
    analysis, report, _ = two_faces
    assert len(analysis.tracks) == 2 and analysis.stills
    left = min(analysis.tracks, key=lambda t: float(np.median(t.points[:, 0])))
    assert report["track"] == left.id  # the speaker, not the frozen face
    stills = choose_stills(analysis, report["track"])
    assert len(stills) == 1  # one frame shows both faces
    boxes = dict(face_boxes(analysis, stills[0]))
    assert set(boxes) == {t.id for t in analysis.tracks}
    x0, y0, x1, y1 = boxes[left.id]
    width = stills[0].image.shape[1]
    assert 0 <= x0 < x1 <= width / 2 + 10 and y1 > y0  # the left half of the picture
    fig = draw_faces(stills, analysis, report)
    rects = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    colours = {tuple(np.round(r.get_edgecolor()[:3], 3)): r.get_x() for r in rects}
    assert colours[tuple(np.round(to_rgb(CHOSEN_COLOUR), 3))] == pytest.approx(x0)
    assert tuple(np.round(to_rgb(OTHER_COLOUR), 3)) in colours
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith(f"face {left.id} (measured)") for t in labels)
    picture = faces_picture(analysis, report)
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8
    green = np.all(np.abs(picture.astype(int) - np.array(to_rgb(CHOSEN_COLOUR)) * 255) < 30, axis=2)
    assert green.sum() > 500  # the green box is really drawn


def test_the_table_has_a_row_per_face_with_its_own_reading(two_faces):
    analysis, report, _ = two_faces
    rows = face_rows(report)
    assert [r[0] for r in rows] == [t["id"] for t in report["tracks"]]
    chosen = next(r for r in rows if r[0] == report["track"])
    other = next(r for r in rows if r[0] != report["track"])
    assert chosen[-1].startswith("measured") and other[-1] != chosen[-1]
    assert chosen[3] == pytest.approx(12.7, abs=0.1)  # seconds visible
    est = next(t for t in report["tracks"] if t["id"] == report["track"])["estimate"]
    assert chosen[5] == pytest.approx(est["audio_lag_ms"], abs=0.05) and chosen[6] == pytest.approx(
        est["confidence"], abs=0.005)
    assert abs(chosen[5] - report["audio_lag_ms"]) < 20  # its first reading is the clip's lag


def test_nothing_to_show_without_faces():
    assert faces_picture(None, {"tracks": []}) is None
    assert face_rows({"tracks": []}) == []


def test_faces_of_several_scenes_get_a_panel_each():
    """Two scenes, one face each, the second measured: its still comes first, both are boxed."""
    from pipeline.analysis import Analysis, FaceTrack

    def track(tid: int, scene: int, start: int, x: float) -> FaceTrack:
        pts = np.tile([x, 100.0, 40.0, x, 120.0], (50, 1))
        return FaceTrack(id=tid, scene=scene, start=start, points=pts, mouth_crops=np.zeros((50, 64, 96), np.uint8))

    tracks = [track(0, 0, 0, 100.0), track(1, 1, 60, 300.0)]
    stills = tuple(make_still(np.full((240, 400, 3), 90, np.uint8), frame, scene) for frame, scene in
                   [(0, 0), (60, 1)])
    analysis = Analysis(info=None, audio=np.zeros(0, np.int16), n_frames=110, tracks=tracks, scene_cuts=[60],
                        timings={}, stills=stills)
    report = {"track": 1, "tracks": [t.summary() for t in tracks]}
    chosen = choose_stills(analysis, 1)
    assert [st.scene for st in chosen] == [1, 0]
    fig = draw_faces(chosen, analysis, report)
    boxed = [[p.get_x() for p in ax.patches] for ax in fig.axes[: len(chosen)]]
    assert boxed == [[260.0], [60.0]]  # x - s on each scene's own still
    assert fig.get_suptitle() == "2 faces tracked; face 1 (green) was measured"
    assert face_rows(report)[1][-1].startswith("measured") and face_rows(report)[0][-1] == "not read"


def test_the_command_line_lists_the_faces_and_writes_the_picture(two_faces, tmp_path, capsys):
    """``detect --faces-png``: the app's picture as a file; the human output names every face when there
    are several, and the report says where the picture went."""
    import matplotlib.image

    from pipeline.cli import main

    _, report, path = two_faces
    png = tmp_path / "faces.png"
    assert main(["detect", str(path), "--engine", "cca", "--faces-png", str(png)]) == 0
    out = capsys.readouterr().out
    measured = [line for line in out.splitlines() if line.startswith("face ") and line.endswith("speaking face)")]
    assert len(measured) == 1 and measured[0].startswith(f"face {report['track']} (scene 0, 0.0-12.7 s")
    assert "read once, scored lower" in out and f"faces: {png}" in out
    picture = matplotlib.image.imread(png)
    assert picture.shape[0] > 200 and picture.shape[1] > 400
    assert main(["detect", str(path), "--engine", "cca", "--faces-png", str(tmp_path / "faces.jpg")]) == 2
    assert "give a .png name" in capsys.readouterr().err
