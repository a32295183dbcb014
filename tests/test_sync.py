"""The iterate-shift-verify generator and the decision rules."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analysis import analyse
from pipeline.engines import Estimate, SyncNetEngine, make_engine, shift_audio
from pipeline.sync import IterationEvent, SyncOptions, SyncResult, decide, run_to_result, sync_video
from syncnet.scoring import refine_minimum


class GridEngine:
    """A deterministic engine for the loop: SyncNet-like 40 ms grid + parabola, around a known true lag.

    It measures the shift it is given for real (residual = true lag - shift, read off a sampled curve),
    so what is under test, the iteration, widening and decision logic, sees realistic behaviour: a
    minimum at the edge when the lag is out of range, and sub-frame residuals.
    """

    name = "grid"

    def __init__(self, true_lag_ms: float, confidence: float = 8.0, per_track: dict[int, float] | None = None):
        self.true_lag_ms, self.conf, self.per_track = true_lag_ms, confidence, per_track or {}
        self.min_confidence = 3.0
        self.calls: list[tuple[float, float]] = []

    def prepare(self, analysis, track):
        return track.id

    def extend(self, prepared, estimate=None) -> bool:
        return False

    def measure(self, prepared, shift_ms: float, search_ms: float) -> Estimate:
        self.calls.append((shift_ms, search_ms))
        k = int(round(search_ms / 40))
        lags = (np.arange(2 * k + 1) - k) * 40.0
        residual = self.true_lag_ms - shift_ms
        curve = np.abs(lags - residual) ** 1.5 + 10.0
        best = int(np.argmin(curve))
        refined = (refine_minimum(curve, best) - k) * 40.0
        conf = self.per_track.get(prepared, self.conf)
        return Estimate(self.name, refined, conf, conf >= self.min_confidence, best in (0, 2 * k), k * 40.0,
                        lags, curve, "distance", True, 100)


@pytest.fixture(scope="module")
def example_analysis(example_avi):
    return analyse(example_avi)


def _run(engine, analysis, **opts):
    events = list(sync_video(analysis.info.path, engine, SyncOptions(**opts), analysis=analysis))
    assert isinstance(events[-1], SyncResult)
    assert all(isinstance(e, IterationEvent) for e in events[:-1])
    return events[:-1], events[-1]


@pytest.mark.parametrize("lag", [137.0, -213.5, 17.0])
def test_iterations_converge_on_a_sub_frame_lag(example_analysis, lag):
    engine = GridEngine(lag)
    its, result = _run(engine, example_analysis)
    assert its[0].shift_ms == 0.0
    assert [e.iteration for e in its] == list(range(1, len(its) + 1))
    assert abs(its[-1].residual_ms) <= 5.0, "the shifted audio must re-measure as ~0"
    assert result.audio_lag_ms == pytest.approx(lag, abs=5.0)
    assert result.decision == ("in_sync" if abs(lag) < 20 else "shift")
    assert len(its) <= 3


def test_search_widens_at_the_edge(example_analysis):
    engine = GridEngine(1500.0)
    its, result = _run(engine, example_analysis)
    searches = [s for shift, s in engine.calls if shift == 0.0]
    assert searches[0] == 600.0 and searches[-1] >= 1520.0
    assert result.decision == "shift" and result.audio_lag_ms == pytest.approx(1500.0, abs=5.0)


def test_beyond_two_seconds_is_uncertain(example_analysis):
    _, result = _run(GridEngine(2600.0), example_analysis)
    assert result.decision == "uncertain" and "edge" in result.reason and result.audio_lag_ms is None


class WideGridEngine(GridEngine):
    """A second engine that, like cca, always searches at least +/-3 s."""

    name = "wide"

    def measure(self, prepared, shift_ms: float, search_ms: float) -> Estimate:
        return super().measure(prepared, shift_ms, max(3000.0, search_ms))


def test_a_confident_second_engine_beyond_the_window_tells_the_first_where_to_look(example_analysis):
    first, second = GridEngine(2500.0), WideGridEngine(2500.0)
    events = list(sync_video(example_analysis.info.path, first, SyncOptions(), cross_check=second,
                             analysis=example_analysis))
    result = events[-1]
    assert result.engine == "grid" and result.decision == "shift"
    assert result.audio_lag_ms == pytest.approx(2500.0, abs=5.0)
    assert result.cross_check["seeded_ms"] == pytest.approx(2500.0, abs=5.0) and result.cross_check["agree"]
    assert result.iterations[0].shift_ms == pytest.approx(2500.0, abs=5.0)  # the first engine measured there
    assert any(abs(shift - 2500.0) < 5.0 and search <= 2000.0 for shift, search in first.calls)


def test_without_a_second_engine_beyond_two_seconds_stays_uncertain(example_analysis):
    _, result = _run(GridEngine(2500.0), example_analysis)
    assert result.decision == "uncertain" and "edge" in result.reason


def test_not_confident_is_uncertain_and_not_iterated(example_analysis):
    engine = GridEngine(200.0, confidence=1.0)
    its, result = _run(engine, example_analysis)
    assert len(its) == 1 and result.decision == "uncertain" and result.audio_lag_ms is None
    assert "not confident" in result.reason
    assert result.measured_lag_ms == pytest.approx(200.0, abs=10)  # what --force would apply


def test_the_best_scoring_face_is_chosen(tmp_path, example_avi):
    from test_analysis import _write_frames

    from syncnet.media import iter_video_frames, load_audio

    frames = list(iter_video_frames(example_avi))[:120]
    both = [np.concatenate([f, frames[0]], axis=1) for f in frames]
    path = tmp_path / "two.mp4"
    _write_frames(path, both, load_audio(example_avi)[: 120 * 640])
    a = analyse(path)
    left = min(a.tracks, key=lambda t: np.median(t.points[:, 0])).id
    right = max(a.tracks, key=lambda t: np.median(t.points[:, 0])).id
    engine = GridEngine(100.0, per_track={left: 9.0, right: 2.0})
    _, result = _run(engine, a)
    assert result.track_id == left
    assert len(result.tracks) == 2 and all("estimate" in t for t in result.tracks)


def test_no_face_and_silence_are_uncertain_with_reasons(tmp_path, fixtures_dir, example_avi):
    from test_analysis import _write_frames

    from syncnet.media import iter_video_frames, load_audio

    blue = np.zeros((120, 160, 3), np.uint8)
    blue[..., 0] = 200
    path = tmp_path / "noface.mp4"
    _write_frames(path, [blue] * 100, load_audio(example_avi)[: 100 * 640])
    _, result = _run(GridEngine(0.0), analyse(path))
    assert result.decision == "uncertain" and result.reason == "no face found in the video"

    silent = tmp_path / "silent.mp4"
    _write_frames(silent, list(iter_video_frames(example_avi))[:100], np.zeros(100 * 640, np.int16))
    _, result = _run(GridEngine(0.0), analyse(silent))
    assert result.decision == "uncertain" and "silent" in result.reason


def test_short_face_is_uncertain(tmp_path, example_avi):
    from test_analysis import _write_frames

    from syncnet.media import iter_video_frames, load_audio

    path = tmp_path / "short.mp4"
    _write_frames(path, list(iter_video_frames(example_avi))[:30], load_audio(example_avi)[: 30 * 640])
    _, result = _run(GridEngine(0.0), analyse(path))
    assert result.decision == "uncertain" and "too little" in result.reason


@pytest.mark.parametrize("lag,conf,edge,search,expected", [
    (10.0, 5.0, False, 600, "in_sync"), (-19.9, 5.0, False, 600, "in_sync"), (25.0, 5.0, False, 600, "shift"),
    (-300.0, 5.0, False, 600, "shift"), (300.0, 1.0, False, 600, "uncertain"), (2000.0, 5.0, True, 2000, "uncertain"),
])
def test_decide(lag, conf, edge, search, expected):
    est = Estimate("x", lag, conf, conf >= 3.0, edge, search, np.zeros(3), np.zeros(3), "d", True, 10)
    decision, reason = decide(est, lag, 20.0, 2000.0)
    assert decision == expected and reason
    assert decide(None, None, 20.0, 2000.0)[0] == "uncertain"


def _unsure(windows: int, **extra) -> Estimate:
    return Estimate("cca", 180.0, 3.0, False, False, 3000.0, np.zeros(3), np.zeros(3), "c", False, windows,
                    extra=extra, p_correct=0.4)


@pytest.mark.parametrize("estimate,cause", [
    (_unsure(80, z=3.0, z_halves=2.0, overlap_frames=80, p_threshold=0.65), "only 3.2 s of talking face"),
    (_unsure(250, z=3.0, z_halves=2.0, overlap_frames=100, p_threshold=0.65), "only 4.0 s of the face meets"),
    (_unsure(250, z=3.0, z_halves=0.2, overlap_frames=250, p_threshold=0.65), "two halves of the clip do not agree"),
    (_unsure(250, z=2.0, z_halves=1.5, overlap_frames=250, p_threshold=0.65), "no lag stands out"),
    (Estimate("syncnet", 180.0, 1.5, False, False, 600.0, np.zeros(3), np.zeros(3), "d", True, 40), "flat score curve"),
])
def test_an_unconfident_reading_says_what_it_found_and_why_it_is_not_acted_on(estimate, cause):
    decision, reason = decide(estimate, 180.0, 20.0, 2000.0)
    assert decision == "uncertain" and reason.startswith("not confident: ")
    assert "best match +180 ms, not acted on" in reason and cause in reason
    if estimate.engine == "cca":
        assert "p_correct 0.40, is below the threshold 0.65" in reason


def test_shift_audio_is_sample_exact():
    a = np.arange(1, 1001, dtype=np.int16)
    early = shift_audio(a, 10.0)  # 160 samples earlier
    assert early[0] == 161 and early[-160:].sum() == 0 and len(early) == 1000
    late = shift_audio(a, -10.0)
    assert late[160] == 1 and late[:160].sum() == 0


def test_syncnet_engine_end_to_end_with_random_weights(example_analysis, random_weights):
    """The real engine runs the whole loop; random weights give a flat curve, so: uncertain, honestly."""
    choice = make_engine("syncnet", str(random_weights), "cpu")
    engine, why = choice.primary, choice.reason
    assert isinstance(engine, SyncNetEngine) and why == "requested" and choice.cross_check is None
    result = run_to_result(sync_video(example_analysis.info.path, engine, SyncOptions(), analysis=example_analysis))
    assert result.decision == "uncertain" and result.audio_lag_ms is None
    it = result.iterations[0]
    assert it.estimate.windows >= 100 and len(it.estimate.curve) == len(it.estimate.lags_ms) >= 31
    assert result.confidence is not None and result.confidence < 1.0


def test_make_engine_decides_as_detect_cross_check_included(example_analysis, random_weights):
    """``sync_video(path, make_engine(name))`` is the command line's choice, not the deciding engine alone:
    with ``both`` the cca cross-check runs and, SyncNet's random weights being unsure, decides."""
    path = example_analysis.info.path
    choice = make_engine("both", str(random_weights), "cpu")
    assert isinstance(choice.primary, SyncNetEngine) and choice.cross_check is not None
    ours = run_to_result(sync_video(path, choice, SyncOptions(), analysis=example_analysis)).to_report(curves=False)
    opts = SyncOptions(engine="both", weights=str(random_weights), device="cpu")
    cli_way = run_to_result(sync_video(path, opts=opts, analysis=example_analysis)).to_report(curves=False)
    assert ours["cross_check"] is not None
    for key in ("decision", "audio_lag_ms", "engine", "engine_reason", "cross_check"):
        assert ours[key] == cli_way[key], key
