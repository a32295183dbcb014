"""Proof of parity: whole clips through our own decoding reproduce the reference's model-level results.

The golden files were made by the reference code on frames decoded straight to BGR; matching them
array for array (all 312 x 31 distances) is what shows the official weights will behave here as there.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from syncnet.score import score_video

CASES = [("example.avi", "example_model_level"), ("synced_example.avi", "synced_example_model_level")]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def scored(request, fixtures_dir, golden, embedder):
    clip, stem = request.param
    return score_video(fixtures_dir / clip, embedder), golden(stem)


def test_whole_clip_distances_match(scored):
    result, g = scored
    assert result.score.dists.shape == g["dists"].shape == (312, 31)
    np.testing.assert_allclose(result.score.dists, g["dists"], rtol=1e-4, atol=0)
    np.testing.assert_allclose(result.score.mean_dists, g["mdist"], rtol=1e-4, atol=0)


def test_whole_clip_statistics_match(scored):
    result, g = scored
    s = result.score
    assert s.offset_frames == int(g["offset"])
    assert s.min_dist == pytest.approx(float(g["min_dist"]), abs=1e-4)
    assert s.confidence == pytest.approx(float(g["confidence"]), abs=1e-4)
    assert s.windows == 312 and result.frames == 317


def test_embeddings_are_not_degenerate(scored):
    """Guard against a parity that holds by accident (e.g. everything constant)."""
    result, _ = scored
    d = result.score.dists
    assert d.std(axis=0).min() > 1e-3
    assert len(np.unique(np.round(d, 4))) > 1000


def test_cli_json(fixtures_dir, random_weights, golden):
    clip = fixtures_dir / "synced_example.avi"
    out = subprocess.run(
        [sys.executable, "-m", "syncnet", "score", str(clip), "--weights", str(random_weights), "--dists", "--json",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    data = json.loads(out.stdout)
    for field in ("offset_frames", "min_dist", "confidence", "audio_lag_ms", "edge", "windows", "dists"):
        assert field in data, field
    g = golden("synced_example_model_level")
    assert isinstance(data["offset_frames"], int) and data["offset_frames"] == int(g["offset"])
    assert data["windows"] == 312
    assert isinstance(data["edge"], bool)
    np.testing.assert_allclose(np.array(data["dists"]), g["dists"], rtol=1e-4)
    # the random weights put the minimum at the edge: AV offset 15 = audio 600 ms early
    assert data["edge"] is True and data["audio_lag_ms"] == pytest.approx(-600.0)


def test_cli_without_dists_omits_them(fixtures_dir, random_weights):
    out = subprocess.run(
        [sys.executable, "-m", "syncnet", "score", str(fixtures_dir / "example.avi"), "--weights",
         str(random_weights), "--json", "--vshift", "5"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    data = json.loads(out.stdout)
    assert "dists" not in data and data["vshift"] == 5 and len(data["mean_dists"]) == 11
