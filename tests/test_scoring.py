"""Offset scoring: the reference's rules on distances, our sign, sub-frame refinement and the edge flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from syncnet.scoring import distance_matrix, refine_minimum, score_distances, score_embeddings


def _reference_calc_pdist(feat1: torch.Tensor, feat2: torch.Tensor, vshift: int) -> np.ndarray:
    """The reference's calc_pdist, written from the spec (section 2.8) with torch's pairwise_distance."""
    win = vshift * 2 + 1
    feat2p = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
    rows = [torch.nn.functional.pairwise_distance(feat1[[i], :].repeat(win, 1), feat2p[i : i + win, :])
            for i in range(len(feat1))]
    return torch.stack(rows).numpy()


@pytest.mark.parametrize("vshift", [3, 15])
def test_distance_matrix_matches_reference_formula(vshift):
    rng = np.random.default_rng(vshift)
    v = rng.standard_normal((40, 1024)).astype(np.float32)
    a = rng.standard_normal((40, 1024)).astype(np.float32)
    ref = _reference_calc_pdist(torch.from_numpy(v), torch.from_numpy(a), vshift)
    np.testing.assert_allclose(distance_matrix(v, a, vshift), ref, rtol=1e-5)


@pytest.mark.parametrize("stem", ["example_model_level", "synced_example_model_level"])
def test_rules_on_golden_distances(golden, stem):
    g = golden(stem)
    s = score_distances(g["dists"], 15)
    np.testing.assert_allclose(s.mean_dists, g["mdist"], rtol=1e-6)
    assert s.offset_frames == int(g["offset"])
    assert s.min_dist == pytest.approx(float(g["min_dist"]), abs=1e-5)
    assert s.confidence == pytest.approx(float(g["confidence"]), abs=1e-5)


@pytest.mark.parametrize("true_shift", [-7, -2, 0, 3, 9])
def test_sign_convention_on_shifted_embeddings(true_shift):
    """Audio embedding of window i placed at i+s (the sound comes s frames late) -> audio_lag_ms = 40 s."""
    rng = np.random.default_rng(5)
    n = 200
    content = rng.standard_normal((n + 40, 64))
    video = content[20 : 20 + n]
    audio = content[20 - true_shift : 20 - true_shift + n]  # audio[i + s] == video[i]
    s = score_embeddings(video, audio, 15)
    assert s.offset_frames == -true_shift  # reference sign: positive = audio early
    assert s.audio_lag_ms == pytest.approx(40.0 * true_shift, abs=1.0)  # neighbours differ by noise only
    assert s.confidence > 1.0 and not s.edge
    assert s.lags_ms[s.best_index] == pytest.approx(40.0 * true_shift)


def test_edge_flag_when_minimum_at_end_of_range():
    falling = np.tile(np.linspace(10.0, 5.0, 31), (6, 1))  # still falling at +15: the minimum may lie beyond
    s = score_distances(falling, 15)
    assert s.edge and s.best_index == 30 and s.audio_lag_ms == pytest.approx(600.0)
    assert not score_distances(falling[:, ::-1][:, 3:28] * 0 + np.abs(np.arange(25) - 12.0), 12).edge
    assert score_distances(falling[:, ::-1], 15).edge


def test_wider_search_finds_a_lag_beyond_the_default_range():
    rng = np.random.default_rng(2)
    content = rng.standard_normal((300, 32))
    # audio[i + 20] == video[i]: the sound is 20 frames (800 ms) late, beyond +/-15
    s = score_embeddings(content[50:250], content[30:230], 25)
    assert not s.edge and s.offset_frames == -20
    assert s.audio_lag_ms == pytest.approx(800.0, abs=1.0)


@pytest.mark.parametrize("vertex", [7.0, 7.25, 7.5, 6.8])
def test_refine_minimum_recovers_a_parabola_vertex(vertex):
    x = np.arange(15, dtype=float)
    curve = 2.0 * (x - vertex) ** 2 + 3.0
    assert refine_minimum(curve, int(np.argmin(curve))) == pytest.approx(vertex)


def test_refined_lag_between_frames():
    # mean curve whose true minimum lies 1/4 frame towards a later audio (+10 ms)
    lags = np.arange(-15, 16)
    curve = (lags - 0.25) ** 2 + 5.0
    s = score_distances(np.tile(curve, (4, 1)), 15)
    assert s.offset_frames == 0
    assert s.audio_lag_ms == pytest.approx(10.0)
    assert s.offset_frames_refined == pytest.approx(-0.25)


def test_bad_distance_shapes_raise():
    with pytest.raises(ValueError):
        score_distances(np.zeros((0, 31)))
    with pytest.raises(ValueError):
        score_distances(np.zeros((5, 30)), 15)


@pytest.mark.parametrize("n", [1, 4, 9, 10, 57])
def test_medfilt_equals_scipy(n):
    from scipy.signal import medfilt as scipy_medfilt

    from syncnet.scoring import medfilt

    x = np.random.default_rng(n).standard_normal(n)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(medfilt(x, 9), scipy_medfilt(x, 9))
