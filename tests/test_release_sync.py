"""The release reading of benchmarks/release_sync.py: where the lips part relative to the bursts heard.

The recogniser itself is a benchmark-only dependency; the arithmetic that turns releases and the mouth's
opening speed into a lag is checked here on signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.release_sync import firm, lip_events, locked_average, release_lag

FPS = 25.0


def _opening(times: np.ndarray, parts: np.ndarray, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """An opening speed that peaks (a 30 ms wide bump) where the lips part, plus noise."""
    sig = np.zeros_like(times)
    for t in parts:
        sig += np.exp(-0.5 * ((times - t) / 0.03) ** 2)
    return sig + rng.normal(0, noise, len(times))


@pytest.mark.parametrize("lag_ms", [-120.0, 0.0, 90.0, 240.0])
def test_the_lips_parting_before_the_bursts_reads_as_late_sound(lag_ms):
    rng = np.random.default_rng(1)
    times = (np.arange(500) + 0.5) / FPS  # 20 s of flow rows, between frames
    bursts = np.sort(rng.uniform(1.0, 19.0, 25))  # the releases heard in the sound
    opening = _opening(times, bursts - lag_ms / 1000.0, rng)  # the lips part lag_ms before each is heard
    lag, lo, hi = release_lag(opening, times, bursts, np.random.default_rng(0))
    assert lag == pytest.approx(lag_ms, abs=10.0)
    assert lo <= lag <= hi and hi - lo <= 40.0


def test_releases_heard_at_random_read_no_firm_lag():
    rng = np.random.default_rng(2)
    times = (np.arange(500) + 0.5) / FPS
    opening = _opening(times, np.sort(rng.uniform(1.0, 19.0, 25)), rng)
    unrelated = np.sort(rng.uniform(1.0, 19.0, 8))
    lag, lo, hi = release_lag(opening, times, unrelated, np.random.default_rng(0))
    assert not firm({"events": len(unrelated), "interval_ms": [lo, hi]})


def test_locked_average_reads_the_signal_at_each_event_plus_offset():
    times = np.arange(100) / 10.0
    signal = times.copy()  # a ramp: the average at offset o is the mean event time plus o
    events = np.array([2.0, 4.0, 6.0])
    avg = locked_average(signal, times, events, np.array([-500, 0, 500]))
    assert np.allclose(avg, [3.5, 4.0, 4.5])


def test_lip_events_are_the_bilabials_ends_and_starts_between_sounding_phones():
    """M after silence: a release, no closure; B and P between vowels: both; M P before silence: the seal at
    M's start only (the lips stay shut through P, and nothing sounds after it)."""
    phones = [("SIL", 0, 10), ("M", 10, 6), ("EY", 16, 12), ("B", 28, 5), ("IY", 33, 9), ("AH", 42, 4),
              ("P", 46, 6), ("AH", 52, 8), ("M", 60, 5), ("P", 65, 4), ("SIL", 69, 20)]
    rel, clo = lip_events(phones)
    assert rel == pytest.approx([0.16, 0.33, 0.52])
    assert clo == pytest.approx([0.28, 0.46, 0.60])
