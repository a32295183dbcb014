"""MFCC front end: identical to python_speech_features' defaults on int16-scale audio."""

from __future__ import annotations

import numpy as np
import pytest

from syncnet.audio import audio_windows, mfcc, n_mfcc_frames


@pytest.mark.parametrize("n", [1, 399, 400, 401, 560, 16000, 48_123])
def test_matches_python_speech_features(n):
    psf = pytest.importorskip("python_speech_features", reason="dev dependency (requirements-dev.txt)")
    rng = np.random.default_rng(n)
    sig = (rng.standard_normal(n) * 3000).astype(np.int16)
    ours = mfcc(sig)
    ref = psf.mfcc(sig, 16000).T
    assert ours.shape == ref.shape == (13, n_mfcc_frames(n))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_silence_uses_eps_not_minus_infinity():
    out = mfcc(np.zeros(3200, np.int16))
    assert np.isfinite(out).all()


def test_golden_mfcc_whole_clip(golden, example_avi):
    from syncnet.media import load_audio

    ref = golden("example_model_level")["mfcc"]
    ours = mfcc(load_audio(example_avi))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_audio_windows_layout():
    feat = np.arange(13 * 60, dtype=np.float32).reshape(13, 60)
    win = audio_windows(feat, 2, 3)
    assert win.shape == (3, 1, 13, 20)
    for i, v in enumerate(range(2, 5)):
        np.testing.assert_array_equal(win[i, 0], feat[:, 4 * v : 4 * v + 20])


def test_dct_matrix_equals_scipy():
    from scipy.fft import dct

    from syncnet.audio import dct_matrix

    x = np.random.default_rng(0).standard_normal((7, 26))
    np.testing.assert_allclose(x @ dct_matrix(), dct(x, type=2, axis=1, norm="ortho")[:, :13], rtol=1e-12, atol=1e-12)


def test_hann_window_and_5ms_hop_match_python_speech_features():
    psf = pytest.importorskip("python_speech_features", reason="dev dependency (requirements-dev.txt)")
    sig = (np.random.default_rng(3).standard_normal(9000) * 2000).astype(np.int16)
    ours = mfcc(sig, hop_length=80, window=np.hanning(400))
    ref = psf.mfcc(sig, 16000, winstep=0.005, winfunc=np.hanning).T
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
