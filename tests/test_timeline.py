"""The lag along the clip (``timeline``) and its drift: the fit on its own, then real clips with a clock drift,
a step at an edit and a constant offset, through the product's own flow and the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline.sync import SyncOptions, run_to_result, sync_video
from pipeline.timeline import Segment, fit_drift, segment_spans, split_time

RATE = 16000


# ------------------------------------------------------------------------------------------- the maths

def test_segments_overlap_and_cover_the_track():
    spans = segment_spans(100, 100 + 60 * 25 - 1, 10.0)
    assert spans[0] == (100, 350) and spans[-1][1] == 100 + 60 * 25
    assert all(b[0] - a[0] == 125 for a, b in zip(spans, spans[1:-1]))  # 5 s hop: half overlap
    assert segment_spans(0, 12 * 25, 10.0) == [(0, 12 * 25 + 1)]  # too short for two: the whole track


def _segments(lags: list[float | None], hop_s: float = 5.0) -> list[Segment]:
    return [Segment(i * hop_s, i * hop_s + 10, lag, 8.0, 0.99, lag) for i, lag in enumerate(lags)]


def test_fit_prefers_a_constant_and_ignores_outliers():
    rng = np.random.default_rng(1)
    lags = list(100 + rng.normal(0, 8, 20))
    lags[5], lags[13] = 600.0, -400.0  # two segments locked onto wrong peaks
    d = fit_drift(_segments(lags))
    assert d.kind == "none" and abs(d.start_lag_ms - 100) < 10 and "constant" in d.reason


def test_fit_finds_a_line_and_a_step():
    rng = np.random.default_rng(2)
    t = np.arange(30) * 5.0 + 5.0
    line = fit_drift(_segments(list(20 + 60 * t / 60 + rng.normal(0, 6, 30)) + [None]))
    assert line.kind == "linear" and abs(line.ms_per_minute - 60) < 5 and line.segments_used == 30
    steps = [100.0 + rng.normal(0, 6) if x < 80 else 350.0 + rng.normal(0, 6) for x in t]
    step = fit_drift(_segments(steps))
    assert step.kind == "steps" and len(step.steps) == 1
    assert abs(step.steps[0].at_s - 80) <= 5 and abs(step.steps[0].after_ms - step.steps[0].before_ms - 250) < 15
    # the segments either side bound it: it lies between their middles
    assert step.steps[0].earliest_s < 80 <= step.steps[0].latest_s
    assert step.steps[0].latest_s - step.steps[0].earliest_s == 5.0


def test_a_step_goes_where_the_probes_change_their_mind():
    centres = np.arange(20.0, 40.0, 0.5)
    rng = np.random.default_rng(4)
    leaning = np.where(centres < 31.0, -1.0, 1.0) + rng.normal(0, 0.6, len(centres))
    k = split_time(centres, leaning)
    assert abs((centres[k - 1] + centres[k]) / 2 - 31.0) <= 1.0
    assert split_time(centres[:1], leaning[:1]) is None
    # all leaning one way: the split sits at the edge that side is not on
    assert split_time(centres, np.ones(len(centres))) == 1


def test_too_few_segments_is_none_with_the_reason():
    assert "too short" in fit_drift(_segments([100.0, 101.0])).reason
    few = fit_drift(_segments([100.0, None, None, 400.0, None, None]))
    assert few.kind == "none" and "only 2 of 6" in few.reason


# ------------------------------------------------------------------------------------------- real clips

@pytest.fixture(scope="module")
def d12(dev_dir):
    """A real 60 s talking head, analysed once; its own reading is the reference (its sync is the source's)."""
    from pipeline.analysis import analyse

    path = dev_dir / "d12.mp4"
    analysis = analyse(path)
    base = run_to_result(sync_video(path, opts=SyncOptions(engine="cca"), analysis=analysis))
    assert base.decision != "uncertain" and base.drift.kind == "none", base.drift
    return path, analysis, base.audio_lag_ms


def _drifted(audio: np.ndarray, ratio: float) -> np.ndarray:
    """The audio as a clock ``ratio`` slower would have recorded it: what was said at t is heard at t * ratio."""
    t = np.arange(len(audio)) / ratio
    return np.interp(t, np.arange(len(audio)), audio.astype(np.float64)).astype(np.int16)


def _stepped(audio: np.ndarray, at_s: float, step_ms: float) -> np.ndarray:
    """``step_ms`` of silence inserted at ``at_s`` (an edit): the sound after it comes that much later."""
    k, d = int(at_s * RATE), int(step_ms * RATE / 1000)
    return np.concatenate([audio[:k], np.zeros(d, audio.dtype), audio[k:]])[: len(audio)]


def _timeline(path, analysis, audio):
    result = run_to_result(sync_video(path, opts=SyncOptions(engine="cca"),
                                      analysis=dataclasses.replace(analysis, audio=audio)))
    return result.to_report(curves=False)


@pytest.mark.parametrize("ratio", [1.002, 0.9975, 1.0025])
def test_clock_drift_is_found_with_its_slope(d12, ratio):
    path, analysis, base = d12
    report = _timeline(path, analysis, _drifted(analysis.audio, ratio))
    drift = report["drift"]
    want = (ratio - 1) * 60_000  # ms per minute
    assert drift["kind"] == "linear", drift
    assert abs(drift["ms_per_minute"] - want) <= 25, (drift, want)
    first = report["timeline"][0]
    assert abs(drift["start_lag_ms"] - (base + want * (first["start_s"] + first["end_s"]) / 2 / 60)) <= 40


def test_a_slow_drift_on_a_two_minute_clip(d12):
    """0.1 % (60 ms a minute) is below the claim threshold on one minute, so the clip is looped to two."""
    path, analysis, base = d12
    (t,) = analysis.tracks
    looped_track = dataclasses.replace(t, points=np.concatenate([t.points, t.points]),
                                       mouth_crops=np.concatenate([t.mouth_crops, t.mouth_crops]), face_crops={})
    n = analysis.n_frames
    audio = np.concatenate([analysis.audio[: n * 640], analysis.audio[: n * 640]])
    looped = dataclasses.replace(analysis, audio=_drifted(audio, 1.001), n_frames=2 * n, tracks=[looped_track])
    result = run_to_result(sync_video(path, opts=SyncOptions(engine="cca"), analysis=looped))
    drift = result.to_report(curves=False)["drift"]
    assert drift["kind"] == "linear" and abs(drift["ms_per_minute"] - 60) <= 25, drift
    assert len(result.timeline) >= 20


def test_a_step_at_an_edit_is_found_where_it_is(d12):
    path, analysis, base = d12
    report = _timeline(path, analysis, _stepped(analysis.audio, 30.0, 250.0))
    drift = report["drift"]
    assert drift["kind"] == "steps", drift
    (step,) = drift["steps"]
    # the segments (10 s, every 5 s) leave it a 5 s interval; short probes across it place it
    assert abs(step["at_s"] - 30.0) <= 1.0 and step["earliest_s"] <= step["at_s"] <= step["latest_s"]
    assert "short readings" in drift["reason"]
    assert abs(step["before_ms"] - base) <= 40 and abs(step["after_ms"] - (base + 250)) <= 40


def test_a_constant_offset_stays_none(d12):
    path, analysis, base = d12
    report = _timeline(path, analysis, np.concatenate([np.zeros(int(0.3 * RATE), np.int16), analysis.audio])
                       [: len(analysis.audio)])
    assert report["drift"]["kind"] == "none", report["drift"]
    assert abs(report["audio_lag_ms"] - (base + 300)) <= 40
    lags = [s["audio_lag_ms"] for s in report["timeline"] if s["audio_lag_ms"] is not None]
    assert len(lags) >= 4 and max(lags) - min(lags) <= 80  # the parts of the clip agree with each other


def test_detect_reports_the_timeline_of_a_drifting_file(d12, tmp_path, capsys):
    """End to end on a written file: the command's JSON carries ``timeline`` and ``drift``; --segment-s
    changes the segments, 0 turns the timeline off, a bad value is one clear error."""
    from media_factory import with_audio

    from pipeline.cli import main

    path, analysis, _ = d12
    drifted = with_audio(path, tmp_path / "drifted.mkv", _drifted(analysis.audio, 1.002))
    assert main(["detect", str(drifted), "--engine", "cca", "--json", "--no-curves", "--segment-s", "15"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["drift"]["kind"] == "linear" and abs(report["drift"]["ms_per_minute"] - 120) <= 25
    seg = report["timeline"][0]
    assert set(seg) >= {"start_s", "end_s", "audio_lag_ms", "confidence", "p_correct"}
    assert seg["end_s"] - seg["start_s"] == pytest.approx(15.0)
    assert main(["detect", str(example := drifted), "--engine", "cca", "--json", "--no-curves",
                 "--segment-s", "0"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["timeline"] == [] and off["drift"]["kind"] == "none"
    assert main(["detect", str(example), "--segment-s", "2"]) == 2
    assert "--segment-s must be 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the correction

def test_warp_pieces_cut_insert_and_find_the_quiet():
    from pipeline.warp import cut, insert_silence, quietest

    x = np.ones((2, 1000), np.int16) * 1000
    x[:, 600:700] = 0  # a pause
    assert quietest(x, 300, 900, 50, 10) in range(610, 641)  # the cut (50 + fades) fits inside the pause
    assert cut(x, 620, 50, 10).shape == (2, 950)
    y = insert_silence(x, 300, 80, 10)
    assert y.shape == (2, 1080) and not y[:, 300:380].any() and y[0, 0] == 1000


def test_warp_stage_streams_as_one_piece_and_cuts_in_the_pause():
    """Noise with one pause, through a 2 ms/s drift and a +100 ms step at 2.5 s: the stage resamples exactly as
    libsoxr does on the whole signal, removes the 100 ms inside the pause (the quietest moment within a second),
    and gives the same samples chunked or whole."""
    import soxr

    from pipeline.warp import AudioWarp, WarpStage, WarpStep

    rate = 8000
    x = np.random.default_rng(3).normal(0, 1000, (1, 6 * rate)).astype(np.float32)
    x[:, int(2.6 * rate) : int(2.9 * rate)] = 0  # the pause
    warp = AudioWarp(0.0, 120.0, (WarpStep(2.5, 100.0),))
    whole = WarpStage(warp, rate, 1, np.float32, 0).push(x, last=True)
    stage = WarpStage(warp, rate, 1, np.float32, 0)
    chunked = np.concatenate([stage.push(x[:, i : i + 1000], last=i + 1000 >= x.shape[1])
                              for i in range(0, x.shape[1], 1000)], axis=1)
    assert chunked.shape == whole.shape and np.allclose(chunked, whole, atol=1e-2)
    resampled = soxr.resample(x.T, rate * warp.ratio, rate, quality="VHQ").T
    n = int(0.1 * rate)
    assert whole.shape[1] == resampled.shape[1] - n
    cut_at = int(stage.applied[0][0] * rate)
    pause = (int(2.6 * rate / warp.ratio), int(2.9 * rate / warp.ratio))
    assert pause[0] <= cut_at <= pause[1] - n and stage.applied[0][1] == 100.0
    assert np.allclose(whole[:, : pause[0]], resampled[:, : pause[0]], atol=1e-2)  # before: untouched
    assert np.allclose(whole[:, pause[1] :], resampled[:, pause[1] + n :], atol=1e-2)  # after: 100 ms earlier



def test_a_steps_edit_is_looked_for_over_its_whole_interval():
    """A step the timeline places between 1.5 and 5.5 s, best guess 2.5 s, with the only pause at 4.6 s: the
    edit goes into that pause, chunked as whole; with no interval (+/-1 s) it cannot reach it."""
    from pipeline.warp import AudioWarp, WarpStage, WarpStep

    rate = 8000
    x = np.random.default_rng(5).normal(0, 1000, (1, 8 * rate)).astype(np.float32)
    x[:, int(4.6 * rate) : int(4.9 * rate)] = 0  # the pause
    within = AudioWarp(0.0, 0.0, (WarpStep(2.5, 100.0, 1.5, 5.5),))
    stage = WarpStage(within, rate, 1, np.float32, 0)
    chunked = np.concatenate([stage.push(x[:, i : i + 1000], last=i + 1000 >= x.shape[1])
                              for i in range(0, x.shape[1], 1000)], axis=1)
    whole_stage = WarpStage(within, rate, 1, np.float32, 0)
    assert np.array_equal(chunked, whole_stage.push(x, last=True))
    assert 4.6 <= stage.applied[0][0] <= 4.8
    near = WarpStage(AudioWarp(0.0, 0.0, (WarpStep(2.5, 100.0),)), rate, 1, np.float32, 0)
    near.push(x, last=True)
    assert 1.5 <= near.applied[0][0] <= 3.5


def _fix(tmp_path, capsys, src, *extra):
    from pipeline.cli import main

    out = tmp_path / f"{src.stem}.fixed.mkv"
    assert main(["fix", str(src), "-o", str(out), "--engine", "cca", "--json", "--no-curves", *extra]) == 0
    return out, json.loads(capsys.readouterr().out)


def _against_original(tmp_path, d12, fixed) -> list[float]:
    from media_factory import with_audio

    from pipeline.verify import shifts_along

    path, analysis, _ = d12
    original = with_audio(path, tmp_path / "original.mkv", analysis.audio)
    return [ms for _, ms in shifts_along(original, fixed)]


@pytest.mark.parametrize("kind", ["drift", "step", "both"])
def test_fix_removes_a_changing_lag_window_by_window(d12, tmp_path, capsys, kind):
    """The corrected file against the undrifted original: one constant lag in every window (spread <= 20 ms),
    the plan verified window by window, and the written file's own timeline read again from the lips."""
    from media_factory import with_audio

    path, analysis, base = d12
    make = {"drift": lambda a: _drifted(a, 1.002), "step": lambda a: _stepped(a, 30.0, 250.0),
            "both": lambda a: _stepped(_drifted(a, 0.9975), 30.0, 250.0)}[kind]
    src = with_audio(path, tmp_path / f"{kind}.mkv", make(analysis.audio))
    fixed, report = _fix(tmp_path, capsys, src)
    assert report["decision"] == "shift" and report["drift"]["kind"] == ("linear" if kind == "drift" else "steps")
    if kind == "both":
        assert abs(report["drift"]["ms_per_minute"] - (-150)) <= 25
        assert abs(report["drift"]["steps"][0]["at_s"] - 30) <= 3
    assert report["applied_drift"] is not None and report["verified_drift"]["max_error_ms"] <= 5
    shifts = _against_original(tmp_path, d12, fixed)
    assert len(shifts) >= 5 and max(shifts) - min(shifts) <= 20, shifts
    assert abs(np.median(shifts) - base) <= 40  # the constant left is what the clip itself reads
    verified = [s for s in report["verified_timeline"] if s["audio_lag_ms"] is not None]
    assert len(verified) >= 4 and all(abs(s["audio_lag_ms"]) <= 40 for s in verified)
    assert "segments of the written file" in report["reason"]


def test_a_known_drift_is_removed_without_measuring_and_no_drift_keeps_one_constant(d12, tmp_path, capsys):
    from media_factory import with_audio

    path, analysis, base = d12
    src = with_audio(path, tmp_path / "drift.mkv", _drifted(analysis.audio, 1.002))
    fixed, manual = _fix(tmp_path, capsys, src, "--apply-ms", f"{base:.1f}", "--drift-ms-per-min", "120")
    assert manual["engine"] == "manual" and manual["applied_drift"]["ms_per_minute"] == 120.0
    shifts = _against_original(tmp_path, d12, fixed)
    assert max(shifts) - min(shifts) <= 10 and abs(np.median(shifts) - base) <= 5, shifts
    _, constant = _fix(tmp_path, capsys, src, "--no-drift")
    assert constant["drift"]["kind"] == "linear" and constant["applied_drift"] is None  # reported, not acted on
    from pipeline.cli import main

    assert main(["fix", str(src), "--drift-ms-per-min", "120"]) == 2
    assert "needs --apply-ms" in capsys.readouterr().err


def test_the_batch_report_carries_the_drift(d12, tmp_path):
    from media_factory import with_audio

    from pipeline import batch_fix

    path, analysis, _ = d12
    (tmp_path / "in").mkdir()
    with_audio(path, tmp_path / "in" / "drift.mkv", _drifted(analysis.audio, 1.002))
    summary = batch_fix([tmp_path / "in"], tmp_path / "out", workers=1, engine="cca")
    (line,) = [json.loads(x) for x in (tmp_path / "out" / "report.jsonl").read_text().splitlines()]
    assert summary.counts["shift"] == 1 and line["drift_kind"] == "linear"
    assert abs(line["drift_ms_per_minute"] - 120) <= 25 and line["drift_steps"] == 0
    assert (tmp_path / "out" / "drift.mkv").is_file()


# ------------------------------------------------------------------------------------------- shown

def test_the_drift_in_words():
    from pipeline.timeline import describe_drift

    line = {"kind": "linear", "start_lag_ms": -20.0, "end_lag_ms": 130.0, "start_s": 5.0, "end_s": 545.0,
            "ms_per_minute": 16.7, "steps": []}
    assert describe_drift(line, True) == ("The sound drifts from 20 ms early to 130 ms late over 9 minutes "
                                          "(+17 ms per minute); corrected by resampling the audio by the clock ratio.")
    assert "only the constant part" in describe_drift(line, False)
    step = {"kind": "steps", "ms_per_minute": 0.0, "steps": [{"at_s": 75.0, "before_ms": 95.0, "after_ms": 345.0}]}
    assert describe_drift(step, None) == "The lag jumps from 95 ms late to 345 ms late at 1:15.0."
    assert describe_drift({"kind": "none"}) == "" and describe_drift(None) == ""


def test_the_timeline_panel_draws_segments_the_fit_and_the_corrected_readings():
    from pipeline.plots import draw_timeline, sync_figure

    segs = [{"start_s": 5.0 * i, "end_s": 5.0 * i + 10, "audio_lag_ms": 100.0 + (250 if i >= 6 else 0),
             "measured_lag_ms": 100.0, "confidence": 8.0, "p_correct": 0.99} for i in range(11)]
    segs[3]["audio_lag_ms"] = None  # one weak segment: drawn hollow
    report = {"timeline": segs, "audio_lag_ms": 100.0,
              "drift": {"kind": "steps", "ms_per_minute": 0.0, "start_s": 5.0, "end_s": 55.0,
                        "steps": [{"at_s": 32.5, "before_ms": 100.0, "after_ms": 350.0}]},
              "verified_timeline": [dict(s, audio_lag_ms=2.0) for s in segs]}
    fig = sync_figure([], report=report)
    ax = fig.axes[1]
    assert draw_timeline(ax, report) and ax.get_title() == "lag along the clip: steps"
    fitted = [ln for ln in ax.get_lines() if ln.get_label() == "fitted steps"][0]
    assert list(fitted.get_xdata()) == [0.0, 32.5, 32.5, 60.0]
    assert list(fitted.get_ydata()) == [100.0, 100.0, 350.0, 350.0]
    after = [ln for ln in ax.get_lines() if ln.get_label() == "after correction"][0]
    assert len(after.get_xdata()) == 11 and set(after.get_ydata()) == {2.0}
    weak = [ln for ln in ax.get_lines() if ln.get_label() == "segments (not confident)"][0]
    assert list(weak.get_xdata()) == [20.0]
    assert not draw_timeline(ax, {"timeline": segs[:1]}) and len(sync_figure([]).axes) == 2


def test_the_app_shows_the_timeline_and_says_what_it_found(d12, tmp_path):
    """The app's own /sync handler on a drifting file: the status names the drift and its correction, and
    the plot gains the timeline panel."""
    from media_factory import with_audio

    import app

    path, analysis, _ = d12
    src = with_audio(path, tmp_path / "drifted.mkv", _drifted(analysis.audio, 1.002))
    report = None
    for out in app.sync(str(src), engine="cca", search_ms=600, max_iterations=3, min_confidence=None,
                        tolerance_ms=20, manual_ms=None):
        status, _, fig, _, corrected, report_path = out
        if isinstance(report_path, str):  # the last update; its job folder goes when the handler ends
            report = json.loads(open(report_path).read())
    assert report["drift"]["kind"] == "linear" and corrected is not None
    assert "The sound drifts from" in status and "corrected by resampling" in status
    assert f"{report['drift']['ms_per_minute']:+.0f} ms per minute" in status
    assert f"moved {report['applied_drift']['lag_ms']:.1f} ms earlier" in status and "window by window" in status
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and "lag along the clip: linear" in titles  # cca: no confidence-over-time panel
    panel = fig.axes[titles.index("lag along the clip: linear")]
    assert any(ln.get_label() == "after correction" for ln in panel.get_lines())


def test_syncnet_reads_a_timeline_from_its_own_blocks(example_avi, random_weights):
    """SyncNet's segments come from the blocks it already embedded; with random weights nothing is confident,
    so every segment is reported as measured but not confident, and the drift stays none with that reason."""
    from pipeline.engines import make_engine

    choice = make_engine("syncnet", weights=str(random_weights), device="cpu")
    result = run_to_result(sync_video(example_avi, choice, SyncOptions(engine="syncnet", segment_s=4.0)))
    report = result.to_report(curves=False)
    segs = report["timeline"]
    assert len(segs) >= 4 and segs[0]["start_s"] == 0.0 and segs[-1]["end_s"] == pytest.approx(12.68, abs=0.05)
    measured = [s for s in segs if s["measured_lag_ms"] is not None]
    assert len(measured) >= 3 and all(np.isfinite(s["measured_lag_ms"]) for s in measured)
    assert all(s["p_correct"] is None and s["audio_lag_ms"] is None for s in segs)  # no calibration, no claim
    assert report["drift"]["kind"] == "none" and "confident" in report["drift"]["reason"]


def test_an_unconfident_reading_does_not_move_the_segments_search(example_avi, random_weights):
    """With random weights the whole clip reads -2000 ms, at the edge and not confident: that is no evidence
    of where the lag lies, so the segments search around no shift (within +/-2 s of 0), not around -2 s."""
    from pipeline.engines import make_engine

    choice = make_engine("syncnet", weights=str(random_weights), device="cpu")
    report = run_to_result(sync_video(example_avi, choice, SyncOptions(engine="syncnet", segment_s=4.0))).to_report(
        curves=False)
    first = report["iterations"][0]["estimate"]
    assert not first["confident"] and abs(report["measured_lag_ms"]) > first["search_ms"] / 2  # the old rule moved
    measured = [s["measured_lag_ms"] for s in report["timeline"] if s["measured_lag_ms"] is not None]
    assert measured and all(abs(m) <= first["search_ms"] + 1e-6 for m in measured)
    assert any(m > 0 for m in measured)  # a search centred on -2 s could not read a positive lag


def test_a_window_across_an_edit_is_held_to_the_side_it_reads():
    """The correlation of a window that holds an edit peaks at the side with more weight, not at the average
    of the two sides' shifts; a drift within a window is averaged."""
    from pipeline.verify import WindowShift

    times = np.arange(0.0, 10.0, 0.01)
    step = lambda t: 30.0 + (257.0 if t >= 8.0 else 0.0)  # noqa: E731
    even = WindowShift(5.0, 0.0, times, np.ones(len(times)))
    assert even.expected(step) == pytest.approx(30.0)  # 8 s before the edit outweigh 2 s after
    late = WindowShift(5.0, 0.0, times, np.where(times >= 8.0, 10.0, 1.0))
    assert late.expected(step) == pytest.approx(287.0)  # the 2 s after, louder, are what it reads
    drift = lambda t: 30.0 + 2.5 * t  # noqa: E731  (150 ms per minute)
    assert even.expected(drift) == pytest.approx(30.0 + 2.5 * times.mean())
