"""A clip's sync judged by eye, and by the lips' openings and closings apart: a check on the engine's zero.

    .venv/bin/python benchmarks/sync_by_eye.py CLIP [CLIP ...] [--out DIR] [--lag-ms 0]

The weight-free engine reads most sources published as in sync at +50 to +120 ms, SyncNet's own example
within a few ms of SyncNet, and a few clips far beyond (README, Engines). Whether a reading is the material
or the estimator cannot be settled by the estimator itself, so this script shows the evidence a person can
judge:

* **strips** (one PNG per utterance end and start: the mouth crop of 25 frames from 0.6 s before it, the
  sound's loudness every 5 ms under each frame). Where lips and sound are in step, the sound stops as the
  lips close at the end of an utterance (it cannot go on behind closed, resting lips for 150 ms); a strip
  whose sound runs on for several frames after the lips have closed shows audio that is late. ``--lag-ms``
  draws the sound moved earlier by that much, to compare hypotheses.
* **openings vs closings**: the lag at which the mouth's opening speed (optical flow, lower lip against
  upper) best matches the loudness rising, and the lag at which its closing speed best matches it falling,
  each found on its own. Articulation that merely anticipates the sound would make the openings lead and
  leave the closings near 0.

Measured on the dev set (README, Engines): d13's sound runs on 4-5 frames after the lips close at each of
its four utterance ends (SyncNet's in-sync example: none), and openings and closings read alike on most
clips (d13 +260/+230 ms, d12 +90/+110, d14 +110/+120, d04 +110/+120, SyncNet's example -120/-110).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.media import GRID_FPS  # noqa: E402

log = logging.getLogger(__name__)

HOP_MS = 5.0  #: loudness step
SILENCE_DB = 30.0  #: a pause is this far below the clip's loud level (its 95th percentile)
MIN_PAUSE_MS = 250.0
MIN_SPEECH_MS = 400.0  #: speech on the other side of a pause, for it to count as an utterance's end or start
STRIP_FRAMES = 25
STRIP_LEAD_S = 0.6  #: the strip starts this long before the event
LAGS_MS = np.arange(-400.0, 401.0, 5.0)


@dataclass(frozen=True)
class Events:
    ends_s: list[float]  #: times where speech stops for a pause
    starts_s: list[float]  #: times where speech resumes after a pause


def loudness_db(audio: np.ndarray, rate: int, hop_ms: float = HOP_MS) -> np.ndarray:
    """RMS level in dB of 20 ms windows every ``hop_ms``."""
    x = np.asarray(audio, np.float64) / 32768.0
    hop, win = int(rate * hop_ms / 1000), int(rate * 0.02)
    n = max(0, (len(x) - win) // hop + 1)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n]
    return 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-6)


def utterance_events(db: np.ndarray, hop_ms: float = HOP_MS) -> Events:
    """Ends and starts of utterances: pauses of ``MIN_PAUSE_MS`` (``SILENCE_DB`` under the loud level) with
    ``MIN_SPEECH_MS`` of sound on the side that counts."""
    quiet = db < np.percentile(db, 95) - SILENCE_DB
    edges = np.flatnonzero(np.diff(quiet.astype(int))) + 1
    bounds = np.concatenate([[0], edges, [len(quiet)]])
    runs = [(bool(quiet[a]), int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    ends, starts = [], []
    for k, (is_quiet, a, b) in enumerate(runs):
        if not is_quiet or (b - a) * hop_ms < MIN_PAUSE_MS:
            continue
        if k > 0 and (runs[k - 1][2] - runs[k - 1][1]) * hop_ms >= MIN_SPEECH_MS:
            ends.append(a * hop_ms / 1000)
        if k + 1 < len(runs) and (runs[k + 1][2] - runs[k + 1][1]) * hop_ms >= MIN_SPEECH_MS:
            starts.append(b * hop_ms / 1000)
    return Events(ends, starts)


def strip(crops: np.ndarray, db: np.ndarray, start_frame: int, fps: float = GRID_FPS,
          lag_ms: float = 0.0) -> np.ndarray:
    """The strip image: ``STRIP_FRAMES`` mouth crops from ``start_frame`` (2x tall), the loudness below."""
    import cv2

    h, w = crops.shape[1:]
    img = np.full((2 * h + 200, STRIP_FRAMES * w), 255, np.uint8)
    for i in range(STRIP_FRAMES):
        k = start_frame + i
        if 0 <= k < len(crops):
            img[: 2 * h, i * w : (i + 1) * w] = cv2.resize(crops[k], (w, 2 * h))
        cv2.putText(img, str(k), (i * w + 3, 2 * h + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 0, 1)
        cv2.line(img, (i * w, 2 * h + 15), (i * w, 2 * h + 190), 200, 1)
    t0 = start_frame / fps * 1000 + lag_ms
    idx = np.round((t0 + np.arange(0, STRIP_FRAMES * 1000 / fps, HOP_MS)) / HOP_MS).astype(int)
    ok = (idx >= 0) & (idx < len(db))
    level = np.full(len(idx), db.min())
    level[ok] = db[idx[ok]]
    level = np.clip((level - (db.max() - 50)) / 50, 0, 1)
    base = 2 * h + 190
    for j, v in enumerate(level):
        x = int(j * HOP_MS / 1000 * fps * w)
        cv2.line(img, (x, base), (x, base - int(v * 170)), 80, 1)
    return img


def _best_lag(v: np.ndarray, t_ms: np.ndarray, rate: np.ndarray) -> tuple[float, float]:
    """(lag, correlation) maximising the correlation of ``v`` at times ``t_ms`` with ``rate`` (5 ms steps)."""
    best = (0.0, -np.inf)
    for lag in LAGS_MS:
        idx = np.round((t_ms + lag) / HOP_MS).astype(int)
        ok = (idx >= 0) & (idx < len(rate))
        a, b = v[ok] - v[ok].mean(), rate[idx[ok]] - rate[idx[ok]].mean()
        r = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))
        if r > best[1]:
            best = (float(lag), r)
    return best


def openings_and_closings(crops: np.ndarray, audio: np.ndarray, rate: int) -> dict[str, tuple[float, float]]:
    """The lag (ms, audio later > 0) and correlation of the mouth's opening speed against the loudness rising,
    of its closing speed against it falling, and of both together."""
    from pipeline.cca import band_energy
    from pipeline.lipmodel import mouth_motion

    opening = mouth_motion(crops, workers=2).flow[:, 3]  # lower lip against upper: > 0 opening
    t_ms = (np.arange(len(opening)) + 0.5) * 1000.0 / GRID_FPS - 12.5  # band_energy's rows are centred 12.5 ms late
    # Full scale 1 rather than the engine's int16 scale, on purpose: band_energy's floor (a power of 1e3) then
    # gates out all but loud speech, so only the voice's clear onsets and offsets count. At int16 scale the
    # closings follow slow decays and noise too (d14 -20 ms, d05 -300 ms against +120 and -20 here).
    energy = band_energy(np.asarray(audio, np.float64) / 32768.0, len(audio) * 1000 // rate // int(HOP_MS))[:, 0]
    rising = np.convolve(np.gradient(energy), np.ones(8) / 8, "same")  # over one frame
    return {"openings": _best_lag(np.maximum(opening, 0), t_ms, np.maximum(rising, 0)),
            "closings": _best_lag(np.minimum(opening, 0), t_ms, np.minimum(rising, 0)),
            "both": _best_lag(opening, t_ms, rising)}


def crops_from_frame_zero(track) -> np.ndarray:
    """A track's mouth crops indexed by grid frame (black before the track starts), to line up with the audio."""
    pad = np.zeros((track.start,) + track.mouth_crops.shape[1:], track.mouth_crops.dtype)
    return np.concatenate([pad, track.mouth_crops])


def _load(name: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(label, mouth crops of the longest face track, 16 kHz audio) of a dev clip's name or a video path."""
    from benchmarks.devset import dev_clips, load_analyses

    clips = {c.name: c for c in dev_clips()}
    if name in clips:
        a = load_analyses([clips[name]], workers=1)[name]
    else:
        from pipeline.analysis import analyse

        a = analyse(Path(name), face_crops=False)
    if not a.tracks:
        raise SystemExit(f"{name}: no face track to look at")
    track = max(a.tracks, key=lambda t: len(t.mouth_crops))
    return Path(name).stem, crops_from_frame_zero(track), a.audio


def main(argv: list[str] | None = None) -> int:
    import cv2

    from syncnet.constants import SAMPLE_RATE

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="+", help="dev clip names (d13, example) or video paths")
    ap.add_argument("--out", type=Path, default=Path("sync_by_eye"), help="folder for the strips")
    ap.add_argument("--lag-ms", type=float, default=0.0, help="draw the sound moved earlier by this much")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.clips:
        label, crops, audio = _load(name)
        db = loudness_db(audio, SAMPLE_RATE)
        ev = utterance_events(db)
        lags = openings_and_closings(crops, audio, SAMPLE_RATE)
        print(f"{label}: " + "; ".join(f"{k} {lag:+.0f} ms (r {r:.2f})" for k, (lag, r) in lags.items()))
        for kind, times in (("end", ev.ends_s), ("start", ev.starts_s)):
            for t in times:
                first = max(0, int(round((t - STRIP_LEAD_S) * GRID_FPS)))
                path = args.out / f"{label}_{kind}_{t:06.2f}s.png"
                cv2.imwrite(str(path), strip(crops, db, first, lag_ms=args.lag_ms))
                print(f"  utterance {kind} at {t:6.2f} s: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
