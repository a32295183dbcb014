"""An independent reading of each dev clip's sync: the lips part exactly when a /b/ or /p/ bursts.

    .venv/bin/python benchmarks/release_sync.py [--workers 2] [--json release_sync.json]

The weight-free engine reads in-sync sources at about +90 ms (README, "What right means"): either the
material's sound is late, or a correlation of mouth motion with spectral change peaks late because
articulation leads sound. This reads the lag another way, from one event whose timing physics fixes: a
bilabial stop's release. While the lips are closed for /b/ or /p/ no sound leaves the mouth; the burst
*is* the lips parting. So the moment the lips part (the mouth's opening speed: the optical flow of the
bottom of the mouth less that of its top, :func:`pipeline.lipmodel.mouth_flow`) and the moment the phone
ends in the sound must coincide, whatever the speaker anticipates elsewhere.

Per clip: PocketSphinx (its US-English model ships in its wheel; a benchmark-only dependency,
requirements-dev.txt) recognises the words, then aligns them to the sound phone by phone; every /b/, /p/
or /m/ followed by another phone is a release. The opening speed is averaged time-locked to the releases at
offsets of -400..+400 ms; where it peaks says where the lips part relative to the sound (``release_lag_ms``,
sign as ``audio_lag_ms``: > 0 when the sound comes after the lips), with a bootstrap interval over the
releases. The closures (a bilabial's start: the lips seal as the sound before it ends) are read the same
way from the closing speed, as a second, less certain event that corroborates the first (``closure_lag_ms``;
never a truth). Beside them, the engine's own reading of the clip (``cca_lag_ms``). A clip with few releases, or
speech the recogniser cannot follow (non-English, noise), reads noisily: the interval says so.

Figures, not assertions. Not English-only in principle, but the recogniser is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger(__name__)

BILABIALS = ("B", "P", "M")
OFFSETS_MS = np.arange(-400, 401, 5)
SPHINX_FRAME_S = 0.01
BOOTSTRAP = 500
MIN_EVENTS = 5  #: fewer releases than this read too noisily to compare
#: A reading is firm with this many releases and a 68 % bootstrap interval at most this wide
FIRM_WIDTH_MS = 60.0


def align(audio: np.ndarray) -> tuple[str, list[tuple[str, int, int]]]:
    """The recognised words, and their phones aligned to the sound: ``(phone, start, frames)`` in 10 ms frames."""
    from pocketsphinx import Decoder, get_model_path

    pcm = np.asarray(audio, np.int16).tobytes()
    d = Decoder(hmm=get_model_path("en-us/en-us"), lm=get_model_path("en-us/en-us.lm.bin"),
                dict=get_model_path("en-us/cmudict-en-us.dict"), logfn=os.devnull)
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    words = d.hyp().hypstr if d.hyp() is not None else ""
    if not words:
        return "", []
    try:
        d.set_align_text(words)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
    except RuntimeError:  # the recognised words could not be aligned to the sound: no release to read
        log.warning("could not align %r to the sound", words[:60])
        return words, []
    return words, [(p.name, p.start, p.duration) for w in (d.get_alignment() or []) for p in w]


def lip_events(phones: list[tuple[str, int, int]]) -> tuple[list[float], list[float]]:
    """The times (s) of the releases and the closures in an alignment ``(phone, start frame, frames)``.

    A release: a bilabial ends and another (non-bilabial, non-silent) phone follows; the lips part as it is
    heard to end. A closure: a bilabial begins after another sounding phone; the lips seal as the sound
    before it is heard to end. The closure is the less certain event (/m/'s hum and /b/'s voicing may go on
    through the seal; on the six clips with firm release readings, closures read 0-20 ms later): it
    corroborates a release reading, it never stands as a truth.
    """
    rel, clo = [], []
    for prev, (name, start, dur), nxt in zip(["SIL"] + [p[0] for p in phones], phones,
                                             [p[0] for p in phones[1:]] + ["SIL"]):
        if name not in BILABIALS:
            continue
        if nxt not in BILABIALS and nxt != "SIL":
            rel.append((start + dur) * SPHINX_FRAME_S)
        if prev not in BILABIALS and prev != "SIL":
            clo.append(start * SPHINX_FRAME_S)
    return rel, clo


def locked_average(signal: np.ndarray, times: np.ndarray, events: np.ndarray, offsets_ms: np.ndarray) -> np.ndarray:
    """The mean of ``signal`` (sampled at ``times``) at every event time plus every offset."""
    at = events[:, None] + offsets_ms[None, :] / 1000.0
    return np.interp(at.ravel(), times, signal).reshape(at.shape).mean(axis=0)


def release_lag(signal: np.ndarray, times: np.ndarray, events: np.ndarray, rng: np.random.Generator
                ) -> tuple[float, float, float]:
    """The lag (ms, > 0: sound after lips) at which the lips part on the releases, and a 68 % bootstrap interval.

    The opening speed peaks at offset -lag from a release in the sound (the lips parted ``lag`` earlier)."""
    def one(ev: np.ndarray) -> float:
        return -float(OFFSETS_MS[int(np.argmax(locked_average(signal, times, ev, OFFSETS_MS)))])

    boots = [one(rng.choice(events, len(events))) for _ in range(BOOTSTRAP)]
    return one(events), float(np.percentile(boots, 16)), float(np.percentile(boots, 84))


def read_clip(name: str) -> dict:
    from benchmarks.devset import dev_clips, load_analyses
    from pipeline.cca import CCAEngine
    from pipeline.lipmodel import mouth_motion
    from pipeline.sync import SyncOptions, run_to_result, sync_video

    clip = next(c for c in dev_clips() if c.name == name)
    a = load_analyses([clip], 1)[name]
    r = run_to_result(sync_video("", CCAEngine(), SyncOptions(segment_s=0), analysis=a))
    out = {"clip": name, "project": clip.project, "trusted": clip.true_lag_ms is not None,
           "published_lag_ms": clip.true_lag_ms, "cca_lag_ms": r.measured_lag_ms, "cca_decision": r.decision}
    if not a.tracks:
        return {**out, "events": 0}
    track = max(a.tracks, key=lambda t: len(t.points))
    flow = mouth_motion(track.mouth_crops).flow
    opening = flow[:, 3]  # bottom of the mouth less its top: > 0 while the lips part
    opening = (opening - opening.mean()) / (opening.std() + 1e-9)
    times = (track.start + np.arange(len(opening)) + 0.5) / 25.0  # a flow row sits between its two frames
    words, phones = align(a.audio)
    rel, clo = (np.array([e for e in ev if times[0] + 0.45 < e < times[-1] - 0.45]) for ev in lip_events(phones))
    out.update(words=words, events=int(len(rel)), closures=int(len(clo)))
    if len(clo):  # the lips seal: the closing speed (the opening speed's negative) peaks there
        lag, lo, hi = release_lag(-opening, times, clo, np.random.default_rng(0))
        out.update(closure_lag_ms=lag, closure_interval_ms=[lo, hi])
    if len(rel) == 0:
        return out
    lag, lo, hi = release_lag(opening, times, rel, np.random.default_rng(0))
    return {**out, "release_lag_ms": lag, "interval_ms": [lo, hi]}


def firm(r: dict) -> bool:
    """A release reading narrow enough to stand as a clip's truth."""
    iv = r.get("interval_ms")
    return r["events"] >= MIN_EVENTS and iv is not None and iv[1] - iv[0] <= FIRM_WIDTH_MS


def firm_truth(readings: list[dict]) -> dict[str, float]:
    """``{clip: release lag}`` of the trusted clips with a firm reading."""
    return {r["clip"]: r["release_lag_ms"] for r in readings if r["trusted"] and firm(r)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("release_sync.json"))
    ap.add_argument("--readings", type=Path, help="the readings of an earlier run (its --json) instead of reading")
    ap.add_argument("--write", action="store_true",
                    help="write the trusted clips' firm readings to benchmarks/release_readings.json, where the "
                         "accuracy benchmark's calibration fit reads them")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.readings:
        rows = json.loads(args.readings.read_text())["rows"]
    else:
        try:
            import pocketsphinx  # noqa: F401
        except ImportError:
            print("this benchmark needs pocketsphinx (requirements-dev.txt: make setup installs it)", file=sys.stderr)
            return 2
        from benchmarks.devset import dev_clips, load_analyses

        clips = dev_clips()
        load_analyses(clips, args.workers)  # analysed once into the cache; the workers read it
        with ProcessPoolExecutor(max(1, args.workers)) as pool:
            rows = list(pool.map(read_clip, [c.name for c in clips]))
    print(f"{'clip':15s} {'project':24s} {'trusted':>7s} {'releases':>8s} {'release lag':>12s} {'68 % interval':>15s}"
          f" {'closures':>8s} {'closure lag':>12s} {'68 % interval':>15s} {'cca lag':>8s} {'diff':>6s}")

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:+.0f}"

    def span(iv: list[float] | None) -> str:
        return "-" if iv is None else f"{iv[0]:+.0f}..{iv[1]:+.0f}"

    for r in rows:
        rl, cc = r.get("release_lag_ms"), r.get("cca_lag_ms")
        print(f"{r['clip']:15s} {r['project'][:24]:24s} {'yes' if r['trusted'] else 'no':>7s} {r['events']:8d} "
              f"{ms(rl):>12s} {span(r.get('interval_ms')):>15s} {r.get('closures', 0):8d} "
              f"{ms(r.get('closure_lag_ms')):>12s} {span(r.get('closure_interval_ms')):>15s} {ms(cc):>8s} "
              f"{'-' if rl is None or cc is None else f'{cc - rl:+.0f}':>6s}{'  firm' if firm(r) else ''}")
    firm_rows = [r for r in rows if firm(r) and r.get("cca_lag_ms") is not None]
    diffs = np.array([r["cca_lag_ms"] - r["release_lag_ms"] for r in firm_rows])
    off = np.array([r["release_lag_ms"] - r["published_lag_ms"] for r in firm_rows if r["trusted"]])
    summary = {"firm_readings": len(firm_rows),
               "median_abs_cca_minus_release_ms": float(np.median(np.abs(diffs))) if len(diffs) else None,
               "max_abs_cca_minus_release_ms": float(np.abs(diffs).max()) if len(diffs) else None,
               "firm_trusted_release_minus_published_ms": off.tolist()}
    print(f"\nfirm readings (>= {MIN_EVENTS} releases, 68 % interval <= {FIRM_WIDTH_MS:.0f} ms): {len(firm_rows)}; "
          f"the engine's reading less the releases': median |diff| {summary['median_abs_cca_minus_release_ms']} ms, "
          f"at most {summary['max_abs_cca_minus_release_ms']} ms; the releases' reading less the published sync "
          f"on the trusted ones: {', '.join(f'{x:+.0f}' for x in off)} ms")
    result = {"rows": rows, "summary": summary}
    args.json.write_text(json.dumps(result, indent=1))
    if args.write:
        from benchmarks.calibration_fit import RELEASE_READINGS

        RELEASE_READINGS.write_text(json.dumps({
            "source": "benchmarks/release_sync.py --write: where the lips part at each trusted clip's /b/, /p/ and "
                      f"/m/ releases; firm readings only (>= {MIN_EVENTS} releases, 68 % interval <= "
                      f"{FIRM_WIDTH_MS:.0f} ms)",
            "readings": firm_truth(rows)}, indent=1) + "\n")
        print(f"wrote {RELEASE_READINGS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
