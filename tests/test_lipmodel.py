"""The learned lip model: shipped and small, fitted by a CCA that finds a planted relation, read exactly at
every lag, and a witness that backs a real peak and not a chance one."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analysis import Analysis, analyse
from pipeline.cca import CCAEngine, audio_features
from pipeline.lagcorr import STEPS_PER_FRAME, frame_window_means, lag_moments, scored_lags
from pipeline.lipmodel import (
    AUDIO_CONTEXT,
    MODEL_FILE,
    VISUAL_CONTEXT,
    LipModel,
    PooledMoments,
    audio_inputs,
    fit_lip_model,
    load_lip_model,
    mouth_flow,
    mouth_motion,
    mouth_shape,
    mouth_shape_velocity,
    paired_rows,
    projected_curve,
    visual_inputs,
    with_context,
)


def test_the_shipped_model_is_small_and_fits_the_inputs():
    m = load_lip_model()
    assert MODEL_FILE.stat().st_size < 64 * 1024
    crops = np.random.default_rng(0).integers(0, 255, (30, 64, 96), dtype=np.uint8)
    width = mouth_shape(crops).shape[1] + mouth_flow(crops).shape[1]  # shape velocity and optical flow
    assert visual_inputs(crops).shape == (29, width * len(VISUAL_CONTEXT))
    motion = mouth_motion(crops)
    assert np.array_equal(visual_inputs(crops, motion, mouth_shape_velocity(motion.crops)), visual_inputs(crops))
    assert m.visual.shape[0] == visual_inputs(crops).shape[1]
    assert m.audio.shape[0] == audio_features(np.zeros(16000)).shape[1] * len(AUDIO_CONTEXT)
    assert m.visual.shape[1] == m.audio.shape[1] == len(m.rho)
    assert np.all(np.diff(m.rho) <= 1e-6) and 0.2 < m.rho[0] < 1.0  # sorted, and a real pooled correlation


def test_with_context_puts_neighbours_side_by_side():
    x = np.arange(10.0)[:, None]
    out = with_context(x, (-1, 0, 2))
    assert out[5].tolist() == [4.0, 5.0, 7.0]
    assert out[0].tolist() == [0.0, 0.0, 2.0] and out[9].tolist() == [8.0, 9.0, 0.0]


def test_the_fit_finds_a_planted_relation_and_ignores_noise():
    rng = np.random.default_rng(5)
    m = PooledMoments(4, 3)
    for _ in range(3):  # three "tracks", each with its own level (centred away)
        x = rng.standard_normal((400, 4)) + rng.standard_normal(4) * 5
        y = rng.standard_normal((400, 3))
        y[:, 2] += 2.0 * (x[:, 1] - x[:, 1].mean())
        m.add(x, y)
    model = fit_lip_model(m, pairs=2, ridge=0.01)
    assert model.rho[0] > 0.8 and model.rho[1] < 0.2
    assert np.argmax(np.abs(model.visual[:, 0])) == 1 and np.argmax(np.abs(model.audio[:, 0])) == 2
    # removing a part is the inverse of adding it
    part = PooledMoments(4, 3).add(rng.standard_normal((50, 4)), rng.standard_normal((50, 3)))
    back = m.combined(part).combined(part, -1.0)
    assert back.n == m.n and np.allclose(back.xy, m.xy)


def test_projected_curve_equals_direct_signed_correlations_at_every_lag():
    """The moments' curve is the weighted Pearson r of each pair, computed lag by lag on the overlap."""
    rng = np.random.default_rng(7)
    n, start, k = 120, 5, 3
    u = rng.standard_normal((n, k))
    feats = rng.standard_normal((STEPS_PER_FRAME * (n + start) + 30, k))
    feats[:, 0] -= np.repeat(np.concatenate([np.zeros(start), u[:, 0], np.zeros(5)]), STEPS_PER_FRAME)[: len(feats)]
    model = LipModel(np.eye(k), np.eye(k), np.array([0.5, 0.3, 0.2]))
    steps = np.array([-200, -9, 0, 3, 40])
    mom = lag_moments(u, start, feats, steps)
    ok = scored_lags(mom.cnt, n, 0.1)
    curve = projected_curve(model, mom, ok)
    means, valid = frame_window_means(feats)
    for i, lag in enumerate(steps[ok]):
        j = STEPS_PER_FRAME * start + 2 + STEPS_PER_FRAME * np.arange(n) + lag
        sel = (j >= 0) & (j < len(feats))
        sel[sel] &= valid[j[sel]]
        r = [np.corrcoef(u[sel, c], means[j[sel], c])[0, 1] for c in range(k)]
        assert curve[i] == pytest.approx(float(np.dot(r, model.rho / model.rho.sum())), abs=1e-9)
    assert curve[2] < -0.2  # signed: the planted anti-correlation counts against lag 0


def test_training_pairs_meet_at_the_given_lag():
    feats = np.zeros((STEPS_PER_FRAME * 40, 1))
    feats[STEPS_PER_FRAME * 20 : STEPS_PER_FRAME * 21] = 1.0  # a burst of sound in frame 20
    vis = np.arange(30.0)[:, None]
    x, y = paired_rows(vis, 0, feats, 0)
    assert x[np.argmax(y[:, 0]), 0] in (19.0, 20.0)  # the midpoint rows around frame 20
    x, y = paired_rows(vis, 0, feats, 5 * STEPS_PER_FRAME)  # audio 200 ms later: frame 15 meets the burst
    assert x[np.argmax(y[:, 0]), 0] in (14.0, 15.0)


@pytest.fixture(scope="module")
def example(fixtures_dir):
    return analyse(fixtures_dir / "example.avi", face_crops=False)


def test_the_witness_backs_a_real_peak_and_not_another_clips_speech(example, fixtures_dir):
    other = analyse(fixtures_dir / "w2l_input2.mp4", face_crops=False).audio
    eng = CCAEngine()
    prep = eng.prepare(example, example.tracks[0])
    real = eng.measure(prep, 0.0, 3000)
    assert prep.model_features.shape == (len(prep.features), len(eng.lip_model.rho))
    assert real.extra["z_model"] > 4.0 and real.p_correct > 0.9
    mismatched = Analysis(info=example.info, audio=np.resize(other, len(example.audio)), n_frames=example.n_frames,
                          tracks=example.tracks, scene_cuts=[], timings={})
    wrong = eng.measure(eng.prepare(mismatched, example.tracks[0]), 0.0, 3000)
    assert wrong.extra["z_model"] < real.extra["z_model"] - 2.0 and not wrong.confident


def test_audio_inputs_stack_one_frame_apart():
    feats = np.arange(100.0)[:, None]
    out = audio_inputs(feats)
    row = out[50]
    assert row.tolist() == [50.0 + STEPS_PER_FRAME * o for o in AUDIO_CONTEXT]


def test_projecting_speech_equals_projecting_its_context_matrix():
    rng = np.random.default_rng(11)
    feats = rng.standard_normal((500, 19))
    m = load_lip_model()
    assert np.allclose(m.project_speech(feats), m.project_audio(audio_inputs(feats)), atol=1e-10)


def _flow_frame_by_frame(crops: np.ndarray) -> np.ndarray:
    """The flow summary written plainly, one pair of frames at a time (what ``mouth_flow`` computes in blocks):
    the flow less the median flow of its top third rows (the head's own motion)."""
    import cv2

    from pipeline.lipmodel import FLOW_PARAMS, FLOW_SIZE, HEAD_ROWS

    small = [cv2.GaussianBlur(cv2.resize(c, FLOW_SIZE, interpolation=cv2.INTER_AREA), (3, 3), 0) for c in crops]
    w, h = FLOW_SIZE
    out = np.zeros((len(crops) - 1, 7))
    for i in range(len(out)):
        f = cv2.calcOpticalFlowFarneback(small[i], small[i + 1], None, *FLOW_PARAMS)
        f = f - np.median(f[: int(h * HEAD_ROWS)].reshape(-1, 2), axis=0)
        centre = f[h // 8 : 7 * h // 8, w // 4 : 3 * w // 4]
        third = len(centre) // 3
        top, mid, bottom = (centre[a : a + third, :, 1].mean() for a in (0, third, 2 * third))
        band = f[h // 4 : 3 * h // 4, :, 0]
        out[i] = (top, mid, bottom, bottom - top, band[:, w // 2 :].mean() - band[:, : w // 2].mean(),
                  np.abs(centre).mean(), np.hypot(centre[..., 0], centre[..., 1]).std())
    return out


def test_the_flow_in_blocks_and_on_threads_equals_the_frame_by_frame_flow(example):
    """Blocks of flow fields summarised together, and runs of frames read on threads, give exactly the rows
    of the plain per-frame loop (a real mouth, long enough for several blocks and a split)."""
    from pipeline.lipmodel import FLOW_BLOCK

    crops = example.tracks[0].mouth_crops
    crops = np.concatenate([crops] * (2 * FLOW_BLOCK // len(crops) + 2))[: 2 * FLOW_BLOCK + 37]
    plain = _flow_frame_by_frame(crops)
    assert np.abs(plain[:, 5]).mean() > 0.05  # the mouth moves: the flows are not all zero
    assert np.array_equal(mouth_flow(crops), plain)
    for workers in (2, 3):
        assert np.array_equal(mouth_flow(crops, workers=workers), plain)
    assert mouth_flow(crops[:1], workers=2).shape == (0, 7) and np.array_equal(mouth_flow(crops[:2], 2), plain[:1])


def test_openings_and_closings_each_read_the_lag_and_follow_a_shift(example):
    """The by-eye check's two readings (benchmarks/sync_by_eye.py) on SyncNet's example (published -120 ms):
    openings and closings each near it, and both moved by a 200 ms delay of the sound."""
    from benchmarks.sync_by_eye import crops_from_frame_zero, openings_and_closings
    from syncnet.constants import SAMPLE_RATE

    crops = crops_from_frame_zero(example.tracks[0])
    base = openings_and_closings(crops, example.audio, SAMPLE_RATE)
    late = np.concatenate([np.zeros(SAMPLE_RATE // 5, example.audio.dtype), example.audio])[: len(example.audio)]
    moved = openings_and_closings(crops, late, SAMPLE_RATE)
    for key in ("openings", "closings", "both"):
        assert abs(base[key][0] + 120) <= 40, (key, base[key])
        assert abs(moved[key][0] - base[key][0] - 200) <= 20, (key, base[key], moved[key])
        assert base[key][1] > 0.2


def test_utterance_events_find_the_pauses_between_bursts():
    """Ends and starts of speech around pauses of 300 ms or more; a 100 ms dip is not a pause."""
    from benchmarks.sync_by_eye import loudness_db, utterance_events

    rate = 16000
    rng = np.random.default_rng(0)
    loud = {(0.5, 1.4), (1.5, 2.5), (3.0, 4.0)}  # a 100 ms dip at 1.4 s, a 500 ms pause at 2.5 s
    audio = rng.normal(0, 30, 5 * rate)
    for a, b in loud:
        audio[int(a * rate) : int(b * rate)] = rng.normal(0, 5000, int(b * rate) - int(a * rate))
    ev = utterance_events(loudness_db(audio, rate))
    assert len(ev.ends_s) == 2 and abs(ev.ends_s[0] - 2.5) < 0.03 and abs(ev.ends_s[1] - 4.0) < 0.03, ev
    assert len(ev.starts_s) == 2 and abs(ev.starts_s[0] - 0.5) < 0.03 and abs(ev.starts_s[1] - 3.0) < 0.03, ev
