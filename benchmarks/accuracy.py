"""Accuracy cases built from the dev set, measured by the product's own decision flow.

Every case is an :class:`~pipeline.analysis.Analysis` made in memory from a clip's cached analysis:

* ``natural``: the clip as it is (absolute truth: 0, or the anchor's known lag; none for doubtful clips);
* ``shifted``: its audio made later by ``d`` ms (sample-exact, silence-filled, same length), truth + d;
* ``sub``: a 3, 5 or 8 s window of face and sound, cut together (it must agree with the whole clip);
* ``mismatch``: the clip's video with another clip's audio, or with its own audio time-reversed (it must
  be "uncertain"); and each 3 s sub-clip window with another clip's audio;
* ``noisy``: the clip as it is or shifted, with pink noise or another clip's speech mixed into its sound at a
  given signal-to-noise ratio (a noisy room, a second talker), noise that starts and stops, a music bed
  with a beat, or played in a reverberant room. Never used to fit anything: it measures how the
  calibration fitted on the clean cases carries over.

Each is run through :func:`pipeline.sync.sync_video` (iterations, decision) with the engine under test;
only the decoding and face tracking are reused from the cache, because they do not depend on the audio.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from benchmarks.devset import Clip, dev_clips, load_analyses
from pipeline.cca import CCAEngine, CCAPrepared
from pipeline.media import GRID_FPS
from syncnet.constants import SAMPLE_RATE, SAMPLES_PER_FRAME

SHIFTS_MS = (-2500.0, -1500.0, -500.0, -160.0, 90.0, 300.0, 1100.0, 1500.0, 2500.0)
SUB_SECONDS = (3, 5, 8)
SUBS_PER_LENGTH = 3  #: windows per clip and length, spread over the clip
MISMATCH_PER_CLIP = 12  #: other clips' soundtracks paired with each clip's video (plus its own reversed)
#: Each of a clip's 3 s sub-clip windows is also paired with another clip's sound (``mismatch`` with a
#: ``window``): the false-confident rate of short stretches, which the full-length pairs of mostly longer
#: clips say little about.
MISMATCH_WINDOW_SECONDS = 3
#: Noisy cases: each condition (``pink:SNR``, ``talker:SNR``, ``bursts:SNR`` or ``music:SNR``, dB against the
#: speech's active level; ``reverb:RT60``, seconds) on the clip as it is and on two shifted copies.
NOISES = ("pink:10", "pink:0", "talker:0", "reverb:0.6", "bursts:0", "music:10")
NOISY_SHIFTS_MS = (0.0, 300.0, -1100.0)
#: The speech's active level: the mean power of its 40 ms frames within this many dB of its loud level (the
#: 95th percentile), so pauses do not lower it.
ACTIVE_DB = 30.0


@dataclass
class Case:
    kind: str  #: natural | shifted | sub | mismatch
    clip: str
    project: str
    shift_ms: float = 0.0
    window: tuple[int, int] | None = None  #: grid frames [start, end) for sub-clips
    audio_from: str | None = None  #: mismatch: the other clip ("~" + own name = time-reversed)
    noise: str | None = None  #: noisy: one of :data:`NOISES`
    noise_from: str | None = None  #: noisy, talker: the clip whose speech is mixed in
    truth_ms: float | None = None  #: absolute truth (None: doubtful source or mismatch)


def sub_windows(n: int, seconds: int) -> list[tuple[int, int]]:
    """The :data:`SUBS_PER_LENGTH` windows of ``seconds`` spread over a clip of ``n`` grid frames (none when the
    clip is not at least a second longer): the sub-clips, and the stretches paired with other clips' sound."""
    length = seconds * GRID_FPS
    if n < length + GRID_FPS:
        return []
    return [(int(s), int(s) + length) for s in np.linspace(0, n - length, SUBS_PER_LENGTH).astype(int)]


def make_cases(clips: list[Clip], n_frames: dict[str, int], seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    talker_rng = np.random.default_rng(seed + 1)  # its own stream: the other cases stay as they were
    window_rng = np.random.default_rng(seed + 2)  # likewise
    cases: list[Case] = []
    names = [c.name for c in clips]
    for c in clips:
        cases.append(Case("natural", c.name, c.project, truth_ms=c.true_lag_ms))
        for d in SHIFTS_MS:
            truth = None if c.true_lag_ms is None else c.true_lag_ms + d
            cases.append(Case("shifted", c.name, c.project, d, truth_ms=truth))
        n = n_frames[c.name]
        for sec in SUB_SECONDS:
            for w in sub_windows(n, sec):
                cases.append(Case("sub", c.name, c.project, window=w, truth_ms=c.true_lag_ms))
        others = [m for m in names if m != c.name and {m, c.name} != {"example", "synced_example"}]
        for m in rng.choice(others, min(MISMATCH_PER_CLIP, len(others)), replace=False):
            cases.append(Case("mismatch", c.name, c.project, audio_from=str(m)))
        cases.append(Case("mismatch", c.name, c.project, audio_from="~" + c.name))
        for w in sub_windows(n, MISMATCH_WINDOW_SECONDS):
            cases.append(Case("mismatch", c.name, c.project, window=w, audio_from=str(window_rng.choice(others))))
        talkers = [m.name for m in clips if m.project != c.project]
        for noise in NOISES:
            src = str(talker_rng.choice(talkers)) if noise.startswith("talker") and talkers else None
            for d in NOISY_SHIFTS_MS:
                truth = None if c.true_lag_ms is None else c.true_lag_ms + d
                cases.append(Case("noisy", c.name, c.project, d, truth_ms=truth, noise=noise, noise_from=src))
    return cases


def active_power(audio: np.ndarray) -> float:
    """The mean power of the 40 ms frames within :data:`ACTIVE_DB` of the loud level (0 for silence)."""
    from pipeline.analysis import frame_rms

    power = frame_rms(np.asarray(audio, np.float64), len(audio) // SAMPLES_PER_FRAME) ** 2
    if not len(power):
        return 0.0
    loud = np.percentile(power, 95)
    active = power[power >= loud * 10 ** (-ACTIVE_DB / 10)]
    return float(active.mean()) if loud > 0 else 0.0


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of pink (1/f power) noise, unit power."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-12)


def noise_bursts(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of noise that starts and stops (a fan, traffic, clatter): pink noise on for 0.3-1.5 s,
    off for 0.5-2 s, at random, with 10 ms ramps; unit power while on, silence while off."""
    gate = np.zeros(n)
    ramp = SAMPLE_RATE // 100
    t = int(rng.uniform(0.0, 1.0) * SAMPLE_RATE)
    while t < n:
        on = int(rng.uniform(0.3, 1.5) * SAMPLE_RATE)
        seg = np.ones(on)
        seg[:ramp] = seg[-ramp:][::-1] = np.linspace(0.0, 1.0, ramp)
        gate[t : t + on] = seg[: n - t]
        t += on + int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
    return pink_noise(n, rng) * gate


#: The music bed's chords (semitones above its key) and tempo: a pop progression (I V vi IV), 120 beats a
#: minute, a chord a bar.
MUSIC_CHORDS = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
MUSIC_BPM = 120.0


def music_bed(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a music bed, unit power: plucked three-note chords struck on every beat (four harmonics,
    decaying), a kick drum on beats 1 and 3, a snare on 2 and 4, and a hi-hat on every half beat, in a random
    key from a random point of the bar. Its onsets come on a fixed beat, unlike speech's, which is what a beat
    adds to a lag search: evenly spaced changes in the sound that any periodic mouth motion could match."""
    sr = SAMPLE_RATE
    beat = 60.0 / MUSIC_BPM
    out = np.zeros(n + 2 * sr)
    key_hz = 220.0 * 2 ** (rng.integers(0, 12) / 12)
    first = rng.uniform(0.0, 4 * beat)

    def add(at: float, sound: np.ndarray) -> None:
        i = int(round(at * sr))
        if 0 <= i < len(out):
            k = min(len(sound), len(out) - i)
            out[i : i + k] += sound[:k]

    t_note = np.arange(int(0.45 * sr)) / sr
    decay = np.exp(-t_note / 0.25)
    plucks = [0.5 * sum(sum(np.sin(2 * np.pi * key_hz * 2 ** (s / 12) * h * t_note) / h**1.5 for h in range(1, 5))
                        for s in chord) * decay for chord in MUSIC_CHORDS]  # each chord's sound, made once
    t_drum = np.arange(int(0.2 * sr)) / sr
    hat_len = int(0.04 * sr)
    hat_decay = np.exp(-np.arange(hat_len) / (0.01 * sr))
    # a kick: a sine whose pitch falls from 400 to 50 Hz in tens of ms (the phase of 50 + 350 exp(-t / 30 ms) Hz)
    kick = np.sin(2 * np.pi * (50 * t_drum + 350 * 0.03 * (1 - np.exp(-t_drum / 0.03)))) * np.exp(-t_drum / 0.12)
    for k in range(int((n / sr + 4 * beat) / beat) + 1):
        at = k * beat - first
        add(at, plucks[(k // 4) % len(MUSIC_CHORDS)])
        if k % 2 == 0:
            add(at, 2.0 * kick)
        else:
            add(at, 0.8 * rng.standard_normal(len(t_drum)) * np.exp(-t_drum / 0.05))
        for half in (0.0, 0.5):
            add(at + half * beat, 0.3 * np.diff(rng.standard_normal(hat_len + 1)) * hat_decay)
    x = out[:n]
    return x / (x.std() + 1e-12)


#: The synthetic interferers of :data:`NOISES` by kind: ``n`` samples, unit power, from a generator.
SYNTHETIC = {"pink": pink_noise, "bursts": noise_bursts, "music": music_bed}


def reverberate(audio: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """``audio`` as heard in a room: the direct sound plus a diffuse tail of equal energy (direct-to-reverberant
    ratio 0 dB, a talker a couple of metres away) that decays 60 dB in ``rt60_s``, from 5 ms after the direct
    sound; the same active level as the input, int16."""
    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60_s)  # -60 dB of power at rt60: amplitude 10^(-3 t/rt60)
    tail[: SAMPLE_RATE // 200] = 0.0
    ir = tail / np.sqrt((tail**2).sum())
    ir[0] = 1.0
    from scipy.signal import fftconvolve

    wet = fftconvolve(np.asarray(audio, np.float64), ir)[: len(audio)]
    wet *= np.sqrt(active_power(audio) / max(active_power(wet), 1e-12))
    return np.clip(np.round(wet), -32768, 32767).astype(audio.dtype)


def mix_at(audio: np.ndarray, interferer: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio`` with ``interferer`` (looped or cut to its length) added at ``snr_db`` below the audio's active
    level (the interferer's own active level, so a talker's pauses do not make it louder); int16 like the
    input, clipped."""
    other = np.resize(np.asarray(interferer, np.float64), len(audio))
    gain = np.sqrt(active_power(audio) / max(active_power(other), 1e-12) * 10 ** (-snr_db / 10))
    out = np.asarray(audio, np.float64) + gain * other
    return np.clip(np.round(out), -32768, 32767).astype(audio.dtype)


def case_analysis(case: Case, analyses: dict):
    """The in-memory Analysis of one case."""
    from pipeline.analysis import Analysis

    a = analyses[case.clip]
    audio = a.audio
    if case.kind == "mismatch":
        other = analyses[case.audio_from.lstrip("~")].audio
        other = other[::-1] if case.audio_from.startswith("~") else other
        audio = np.resize(other, len(a.audio)) if len(other) else other  # loop a shorter soundtrack
    elif case.shift_ms:
        d = int(round(case.shift_ms * SAMPLE_RATE / 1000))
        out = np.zeros_like(audio)
        if d > 0:
            out[d:] = audio[: len(audio) - d]
        else:
            out[: len(audio) + d] = audio[-d:]
        audio = out
    if case.noise:
        kind, value = case.noise.split(":")
        rng = np.random.default_rng(sum(map(ord, case.clip + case.noise)))
        if kind == "reverb":
            audio = reverberate(audio, float(value), rng)
        else:
            interferer = analyses[case.noise_from].audio if kind == "talker" else SYNTHETIC[kind](len(audio), rng)
            audio = mix_at(audio, interferer, float(value))
    tracks, n = a.tracks, a.n_frames
    if case.window:
        f0, f1 = case.window
        audio = audio[f0 * SAMPLES_PER_FRAME : f1 * SAMPLES_PER_FRAME]
        tracks = []
        for t in a.tracks:
            lo, hi = max(t.start, f0), min(t.end + 1, f1)
            if hi - lo < 2:
                continue
            k = slice(lo - t.start, hi - t.start)
            tracks.append(dataclasses.replace(t, start=lo - f0, points=t.points[k], mouth_crops=t.mouth_crops[k],
                                              face_crops={}))
        n = f1 - f0
    return Analysis(info=a.info, audio=np.ascontiguousarray(audio), n_frames=n, tracks=tracks, scene_cuts=[],
                    timings={})


class _ReusingCCA(CCAEngine):
    """The product's CCA engine, with the mouth features of a face track computed once per track.

    Natural, shifted and mismatched cases share their video, so their mouth features are identical; only
    ``prepare`` is memoised (keyed by the crops' memory and shape), measuring and deciding are untouched.
    ``lip_model``: the learned witness fitted without the project being measured.
    """

    def __init__(self, lip_model=None) -> None:
        super().__init__(lip_model=lip_model)
        self._memo: dict = {}

    def prepare(self, analysis, track) -> CCAPrepared:
        crops = track.mouth_crops
        key = (crops.__array_interface__["data"][0], crops.shape)
        if key not in self._memo:
            p = super().prepare(analysis, track)
            self._memo[key] = (p.features, p.model_features)
        features, model_features = self._memo[key]
        return CCAPrepared(track=track, audio=analysis.audio, features=features, model_features=model_features)


#: The benchmark measures with the decision threshold off (every first estimate "confident", so the flow
#: iterates as it would when confident), and applies a calibration afterwards (:func:`apply_calibration`).
#: One run then serves the shipped calibration and every cross-validation fold alike.
ALWAYS = -1e9


def run_case(case: Case, analyses: dict, engine, search_ms: float | None = None) -> dict:
    from pipeline.sync import DEFAULT_SEARCH_MS, SyncOptions, run_to_result, sync_video

    # the whole-clip estimate is what is scored: no timeline (it would only add time)
    opts = SyncOptions(engine=engine.name, min_confidence=ALWAYS, search_ms=search_ms or DEFAULT_SEARCH_MS,
                       segment_s=0)
    r = run_to_result(sync_video("", engine, opts, analysis=case_analysis(case, analyses)))
    est = r.iterations[0].estimate if r.iterations else None
    return {**dataclasses.asdict(case), "decision": r.decision, "reason": r.reason,
            "audio_lag_ms": r.audio_lag_ms, "measured_lag_ms": r.measured_lag_ms,
            "first_lag_ms": None if est is None else est.audio_lag_ms,
            "z": None if est is None else est.extra.get("z"),
            "z_halves": None if est is None else est.extra.get("z_halves"),
            "z_model": None if est is None else est.extra.get("z_model"),
            "frames": None if est is None else est.windows,
            "overlap": None if est is None else est.extra.get("overlap_frames"),
            "edge": None if est is None else bool(est.edge), "search_ms": None if est is None else est.search_ms}


_analyses: dict = {}
_models: dict = {}


def _init(models: dict | None) -> None:
    global _analyses, _models
    _analyses = load_analyses(dev_clips(), workers=1)
    _models = models or {}


def _run_chunk(args: tuple[list[Case], float | None]) -> list[dict]:
    cases, search_ms = args
    engines: dict = {}
    out = []
    for c in cases:
        if c.project not in engines:
            engines[c.project] = _ReusingCCA(_models.get(c.project))
        out.append(run_case(c, _analyses, engines[c.project], search_ms))
    return out


def run_all(cases: list[Case], workers: int = 2, search_ms: float | None = None, progress=None,
            models: dict | None = None) -> list[dict]:
    """Every case, ``workers`` processes; consecutive cases share a clip, so chunks reuse its mouth features.

    ``models``: ``{project: LipModel}``, the learned witness each project's cases are measured with (fitted
    without that project: :func:`benchmarks.lipmodel_fit.fold_models`); the shipped one where absent.
    """
    chunks = [(cases[i : i + 16], search_ms) for i in range(0, len(cases), 16)]
    rows: list[dict] = []
    with ProcessPoolExecutor(max(1, workers), initializer=_init, initargs=(models,)) as pool:
        for part in pool.map(_run_chunk, chunks):
            rows.extend(part)
            if progress:
                progress(len(part))
    return rows
