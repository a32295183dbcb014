"""The accuracy benchmark's noisy cases (benchmarks/accuracy.py): noise mixed in at the SNR it claims.

The figures for noisy rooms and second talkers are only as honest as the mixing: the SNR is against the
speech's active level (its pauses do not count), the pink noise really falls 3 dB per octave, and the
mixed sound stays int16 like the product's own audio."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.accuracy import MUSIC_BPM, active_power, mix_at, music_bed, noise_bursts, pink_noise, reverberate
from syncnet.constants import SAMPLE_RATE


def _speech_with_pauses(rng: np.random.Generator, amplitude: float = 3000.0) -> np.ndarray:
    """4 s: a 200 Hz tone burst (1 s), silence (1 s), again; int16."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    burst = amplitude * np.sin(2 * np.pi * 200 * t)
    quiet = rng.normal(0, 3.0, SAMPLE_RATE)
    return np.concatenate([burst, quiet, burst, quiet]).astype(np.int16)


def test_active_power_is_the_speechs_not_the_pauses():
    speech = _speech_with_pauses(np.random.default_rng(0))
    tone_power = 3000.0**2 / 2
    assert active_power(speech) == pytest.approx(tone_power, rel=0.02)  # the pauses would halve a plain mean
    assert active_power(np.zeros(SAMPLE_RATE, np.int16)) == 0.0


@pytest.mark.parametrize("snr_db", [10.0, 0.0])
def test_noise_is_mixed_at_the_snr_asked_for(snr_db):
    rng = np.random.default_rng(1)
    speech = _speech_with_pauses(rng)
    noise = pink_noise(len(speech), rng)
    mixed = mix_at(speech, noise, snr_db)
    assert mixed.dtype == np.int16 and len(mixed) == len(speech)
    added = mixed.astype(np.float64) - speech
    measured = 10 * np.log10(active_power(speech) / np.mean(added**2))
    assert measured == pytest.approx(snr_db, abs=0.2)


def test_a_talker_is_scaled_by_its_own_active_level_and_looped():
    rng = np.random.default_rng(2)
    speech = _speech_with_pauses(rng)
    talker = _speech_with_pauses(rng, amplitude=300.0)[: len(speech) // 2]  # quieter and shorter
    mixed = mix_at(speech, talker, 0.0)
    added = mixed.astype(np.float64) - speech
    assert active_power(added) == pytest.approx(active_power(speech), rel=0.05)
    half = len(speech) // 2
    assert np.allclose(added[:half], added[half : 2 * half], atol=1.0)  # looped to the length


def test_pink_noise_falls_three_db_per_octave():
    x = pink_noise(SAMPLE_RATE * 8, np.random.default_rng(3))
    assert x.std() == pytest.approx(1.0, rel=1e-6)
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)

    def band(lo: float) -> float:
        return float(spec[(freqs >= lo) & (freqs < 2 * lo)].sum())

    for lo in (100.0, 400.0, 1600.0):  # the same power in every octave: -3 dB per octave per Hz
        assert 10 * np.log10(band(2 * lo) / band(lo)) == pytest.approx(0.0, abs=0.5)


def test_a_reverberant_room_keeps_the_level_and_decays_sixty_db_in_rt60():
    rng = np.random.default_rng(4)
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    x = np.concatenate([4000 * np.sin(2 * np.pi * 300 * t), np.zeros(SAMPLE_RATE)]).astype(np.int16)
    y = reverberate(x, 0.6, rng)
    assert y.dtype == np.int16 and len(y) == len(x)
    assert active_power(y) == pytest.approx(active_power(x), rel=0.1)

    def power(a: float, b: float) -> float:  # seconds after the tone stops
        return float(np.mean(y[int((0.5 + a) * SAMPLE_RATE) : int((0.5 + b) * SAMPLE_RATE)].astype(float) ** 2))

    decay_db = 10 * np.log10(power(0.05, 0.10) / power(0.35, 0.40))
    assert decay_db == pytest.approx(30.0, abs=4.0)  # 0.3 s of a 0.6 s RT60
    # the direct sound is there: what is heard during the tone follows the tone
    assert np.corrcoef(x[: SAMPLE_RATE // 2], y[: SAMPLE_RATE // 2])[0, 1] > 0.5


def test_noise_bursts_start_and_stop_and_are_mixed_at_their_level_while_on():
    rng = np.random.default_rng(5)
    x = noise_bursts(SAMPLE_RATE * 60, rng)
    on = x != 0.0
    assert 0.2 < on.mean() < 0.65  # on 0.3-1.5 s, off 0.5-2 s
    edges = np.flatnonzero(np.diff(on.astype(int)))
    stretches = np.diff(edges) / SAMPLE_RATE
    assert stretches.min() >= 0.29 and stretches.max() <= 2.01
    assert x[on].std() == pytest.approx(1.0, rel=0.05)  # unit power while on
    speech = _speech_with_pauses(rng)
    burst = noise_bursts(len(speech), np.random.default_rng(6))
    added = mix_at(speech, burst, 0.0).astype(np.float64) - speech
    loud = added[burst != 0]
    assert 10 * np.log10(active_power(speech) / np.mean(loud**2)) == pytest.approx(0.0, abs=0.5)


def test_a_music_bed_has_its_onsets_on_the_beat():
    x = music_bed(SAMPLE_RATE * 30, np.random.default_rng(7))
    assert x.std() == pytest.approx(1.0, rel=1e-6)
    hop = SAMPLE_RATE // 100  # a 10 ms envelope
    env = np.sqrt(np.convolve(x**2, np.ones(hop) / hop, "same"))[::hop]
    onset = np.diff(np.log(env + 1e-3)).clip(0)
    onset -= onset.mean()
    ac = np.correlate(onset, onset, "full")[len(onset) - 1 :]
    ac /= ac[0]
    beat = int(round(100 * 60 / MUSIC_BPM))
    assert ac[beat] > 0.8 and ac[2 * beat] > 0.8  # every beat struck
    assert abs(ac[beat // 2 + beat // 4]) < 0.2  # and nothing between the beat and the half beat
